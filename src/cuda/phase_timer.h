// Time per phase on the GPU (mhc bench --device cuda): each timed op call is bracketed by two CUDA
// events on the one stream, and the pairs are read only when the step has ended (collect), so the
// timing adds no host synchronisation inside a step. The GPU's twin of the CPU ops' Timer
// (model/cpu_ops.h): the times are the device's, op by op, not the host's.
#pragma once
#include <cstddef>
#include <vector>

#include "cuda/cuda.h"
#include "mhc/gpt.h"

namespace mhc::cuda {

class PhaseTimer {
public:
    PhaseTimer() = default;
    PhaseTimer(const PhaseTimer&) = delete;
    PhaseTimer& operator=(const PhaseTimer&) = delete;
    ~PhaseTimer();
    void begin(Phase phase, const char* op);  // before an op's launches (op: its name, a literal)
    void end();                               // after them
    // Waits for the last event, adds each pair's time to its phase and its op in `out`, and starts
    // afresh.
    void collect(PhaseTimes& out);

private:
    cudaEvent_t event(size_t k);  // the k-th event of the pool, created when first needed
    std::vector<cudaEvent_t> events_;
    std::vector<Phase> phases_;   // pair k: events 2k, 2k + 1
    std::vector<const char*> ops_;
    size_t used_ = 0;             // events recorded since the last collect
};

// One CUDA event (created by create(), destroyed with the object), for timing a span on the stream.
class Event {
public:
    Event() = default;
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    ~Event();
    void create();
    void record();
    // Seconds from this event to `end`, both recorded; waits for `end`.
    double seconds_to(const Event& end) const;

private:
    cudaEvent_t e_ = nullptr;
};

// Times one op call when a timer is attached (a null timer costs one branch).
struct PhaseScope {
    PhaseTimer* t;
    PhaseScope(PhaseTimer* timer, Phase p, const char* op) : t(timer) {
        if (t) t->begin(p, op);
    }
    ~PhaseScope() {
        if (t) t->end();
    }
    PhaseScope(const PhaseScope&) = delete;
    PhaseScope& operator=(const PhaseScope&) = delete;
};

}  // namespace mhc::cuda
