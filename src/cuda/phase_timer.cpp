// CUDA events per op call, read after the step (cuda/phase_timer.h).
#include "cuda/phase_timer.h"

namespace mhc::cuda {

PhaseTimer::~PhaseTimer() {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);  // a destructor must not throw
}

cudaEvent_t PhaseTimer::event(size_t k) {
    while (events_.size() <= k) {
        cudaEvent_t e = nullptr;
        MHC_CUDA_CHECK(cudaEventCreate(&e));
        events_.push_back(e);
    }
    return events_[k];
}

void PhaseTimer::begin(Phase phase, const char* op) {
    if (used_ % 2) fail("PhaseTimer::begin", "an op's timing began inside another's", __FILE__, __LINE__);
    MHC_CUDA_CHECK(cudaEventRecord(event(used_), stream()));
    phases_.resize(used_ / 2 + 1);
    ops_.resize(used_ / 2 + 1);
    phases_[used_ / 2] = phase;
    ops_[used_ / 2] = op;
    used_++;
}

void PhaseTimer::end() {
    if (used_ % 2 == 0) fail("PhaseTimer::end", "no op's timing had begun", __FILE__, __LINE__);
    MHC_CUDA_CHECK(cudaEventRecord(event(used_), stream()));
    used_++;
}

void PhaseTimer::collect(PhaseTimes& out) {
    if (used_ % 2) fail("PhaseTimer::collect", "an op's timing has not ended", __FILE__, __LINE__);
    if (used_ == 0) return;
    MHC_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
    for (size_t k = 0; k < used_ / 2; k++) {
        float ms = 0;
        MHC_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2 * k], events_[2 * k + 1]));
        out.s[phases_[k]] += ms * 1e-3;
        out.op_s[ops_[k]] += ms * 1e-3;
    }
    used_ = 0;
}

Event::~Event() {
    if (e_) (void)cudaEventDestroy(e_);
}
void Event::create() {
    if (!e_) MHC_CUDA_CHECK(cudaEventCreate(&e_));
}
void Event::record() { MHC_CUDA_CHECK(cudaEventRecord(e_, stream())); }
double Event::seconds_to(const Event& end) const {
    MHC_CUDA_CHECK(cudaEventSynchronize(end.e_));
    float ms = 0;
    MHC_CUDA_CHECK(cudaEventElapsedTime(&ms, e_, end.e_));
    return ms * 1e-3;
}

}  // namespace mhc::cuda
