// Signal handlers held for a scope: `train` (stop after the step), `prepare` (stop at the next
// chunk) and `compare` (forward to the child) each install theirs for a while and give the old
// ones back, so a library caller's handlers survive.
#pragma once
#include <csignal>
#include <initializer_list>
#include <vector>

namespace mhc::sys {

class ScopedSignals {
public:
    // handler for each of sigs (SA_RESTART off: a blocking read sees EINTR and can look at the flag)
    ScopedSignals(std::initializer_list<int> sigs, void (*handler)(int));
    ~ScopedSignals();
    ScopedSignals(const ScopedSignals&) = delete;
    ScopedSignals& operator=(const ScopedSignals&) = delete;

private:
    std::vector<int> sigs_;
    std::vector<struct sigaction> old_;
};

}  // namespace mhc::sys
