#include "sys/signals.h"

namespace mhc::sys {

ScopedSignals::ScopedSignals(std::initializer_list<int> sigs, void (*handler)(int))
    : sigs_(sigs), old_(sigs.size()) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sigs_.size(); i++) sigaction(sigs_[i], &sa, &old_[i]);
}

ScopedSignals::~ScopedSignals() {
    for (size_t i = 0; i < sigs_.size(); i++) sigaction(sigs_[i], &old_[i], nullptr);
}

}  // namespace mhc::sys
