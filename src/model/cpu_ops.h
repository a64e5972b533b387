// The CPU ops as the model calls them (model/block.h, gpt.cpp, sample.cpp): every op of ops/ and
// conn/ behind a member of the same name. When a PhaseTimes is attached (mhc bench), each call is
// timed and charged to its op's phase here, at the op-call boundary, so the model's code stays a
// plain list of op calls. A second backend provides the same members.
#pragma once
#include <chrono>
#include <utility>

#include "mhc/conn.h"
#include "mhc/gpt.h"
#include "ops/ops.h"

namespace mhc::detail {

struct CpuOps {
    PhaseTimes* phases = nullptr;  // null: no timing (one branch per op call)

    // Adds the time of one op call to its phase and to the op's own total.
    struct Timer {
        PhaseTimes* p;
        Phase ph;
        const char* op;
        std::chrono::steady_clock::time_point t0 = p ? std::chrono::steady_clock::now()
                                                     : std::chrono::steady_clock::time_point{};
        ~Timer() {
            if (!p) return;
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            p->s[ph] += dt;
            p->op_s[op] += dt;
        }
    };

#define MHC_CPU_OP(phase, op)                                         \
    template <typename... A> decltype(auto) op(A&&... a) const {      \
        const Timer timer{phases, phase, #op};                        \
        return mhc::op(std::forward<A>(a)...);                        \
    }
    MHC_CPU_OP(kPhaseOther, encoder_forward)
    MHC_CPU_OP(kPhaseOther, encoder_backward)
    MHC_CPU_OP(kPhaseOther, layernorm_forward)
    MHC_CPU_OP(kPhaseOther, layernorm_backward)
    MHC_CPU_OP(kPhaseMatmul, matmul_forward)
    MHC_CPU_OP(kPhaseMatmul, matmul_backward)
    MHC_CPU_OP(kPhaseOther, gelu_forward)
    MHC_CPU_OP(kPhaseOther, gelu_backward)
    MHC_CPU_OP(kPhaseAttention, attention_forward)
    MHC_CPU_OP(kPhaseAttention, attention_backward)
    MHC_CPU_OP(kPhaseAttention, attention_cached_forward)
    MHC_CPU_OP(kPhaseOther, stream_sum_forward)
    MHC_CPU_OP(kPhaseOther, stream_sum_backward)
    MHC_CPU_OP(kPhaseOther, crossentropy_forward)
    MHC_CPU_OP(kPhaseOther, crossentropy_backward)
    MHC_CPU_OP(kPhaseConn, conn_pre_forward)
    MHC_CPU_OP(kPhaseConn, conn_post_forward)
    MHC_CPU_OP(kPhaseConn, conn_post_backward)
    MHC_CPU_OP(kPhaseConn, conn_pre_backward)
#undef MHC_CPU_OP
};

}  // namespace mhc::detail
