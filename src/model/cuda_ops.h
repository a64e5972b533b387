// The CUDA ops as the model calls them (model/block.h): the members of CpuOps (model/cpu_ops.h),
// same names and arguments, forwarding to the launchers of ops/ops_cuda.h and conn/conn_cuda.h on
// device pointers. A site is handed over as the model's ConnSite; its device twin is found by its
// place in the model's list of sites. With a PhaseTimer attached (mhc bench), each call is timed on
// the device by CUDA events and charged to its op's phase, the CPU ops' phases (model/cpu_ops.h).
#pragma once
#include <stdexcept>
#include <utility>
#include <vector>

#include "conn/conn_cuda.h"
#include "cuda/phase_timer.h"
#include "mhc/conn.h"
#include "ops/ops_cuda.h"

namespace mhc::detail {

struct CudaOps {
    const std::vector<ConnSite>* sites = nullptr;             // the model's sites (host)
    const std::vector<cuda::ConnSiteCuda>* dsites = nullptr;  // their device twins, in the same order
    cuda::PhaseTimer* timer = nullptr;                        // null: no timing

    const cuda::ConnSiteCuda& dev(const ConnSite& s) const {
        for (size_t k = 0; k < sites->size(); k++)
            if (&(*sites)[k] == &s) return (*dsites)[k];
        throw std::logic_error("CudaOps: a connection site that is not one of the model's");
    }

#define MHC_CUDA_OP(phase, op)                                   \
    template <typename... A> decltype(auto) op(A&&... a) const { \
        const cuda::PhaseScope scope(timer, phase);              \
        return cuda::op(std::forward<A>(a)...);                  \
    }
#define MHC_CUDA_CONN_OP(op)                                                        \
    template <typename... A> decltype(auto) op(const ConnSite& s, A&&... a) const { \
        const cuda::PhaseScope scope(timer, kPhaseConn);                            \
        return cuda::op(dev(s), std::forward<A>(a)...);                             \
    }
    MHC_CUDA_OP(kPhaseOther, encoder_forward)
    MHC_CUDA_OP(kPhaseOther, encoder_backward)
    MHC_CUDA_OP(kPhaseOther, layernorm_forward)
    MHC_CUDA_OP(kPhaseOther, layernorm_backward)
    MHC_CUDA_OP(kPhaseMatmul, matmul_forward)
    MHC_CUDA_OP(kPhaseMatmul, matmul_backward)
    MHC_CUDA_OP(kPhaseOther, gelu_forward)
    MHC_CUDA_OP(kPhaseOther, gelu_backward)
    MHC_CUDA_OP(kPhaseAttention, attention_forward)
    MHC_CUDA_OP(kPhaseAttention, attention_backward)
    MHC_CUDA_OP(kPhaseAttention, attention_cached_forward)
    MHC_CUDA_OP(kPhaseOther, stream_sum_forward)
    MHC_CUDA_OP(kPhaseOther, stream_sum_backward)
    MHC_CUDA_OP(kPhaseOther, crossentropy_forward)
    MHC_CUDA_OP(kPhaseOther, crossentropy_forward_into)
    MHC_CUDA_OP(kPhaseOther, crossentropy_backward)
    MHC_CUDA_CONN_OP(conn_pre_forward)
    MHC_CUDA_CONN_OP(conn_post_forward)
    MHC_CUDA_CONN_OP(conn_post_backward)
    MHC_CUDA_CONN_OP(conn_pre_backward)
#undef MHC_CUDA_OP
#undef MHC_CUDA_CONN_OP
};

}  // namespace mhc::detail
