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

// Where conn_post_forward leaves the per-stream sums of squares of its output, for the next site's
// conn_pre_forward (its norms without another read of the streams): ss [N, n] and the output they
// belong to. A conn_pre_forward on any other buffer computes its norms itself.
struct StreamNorms {
    double* ss = nullptr;        // [N, n] device
    const float* of = nullptr;   // the streams ss describes; null: none
};

struct CudaOps {
    const std::vector<ConnSite>* sites = nullptr;             // the model's sites (host)
    const std::vector<cuda::ConnSiteCuda>* dsites = nullptr;  // their device twins, in the same order
    cuda::PhaseTimer* timer = nullptr;                        // null: no timing
    StreamNorms* norms = nullptr;                             // null: every site reads its streams

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
    void conn_pre_forward(const ConnSite& s, const float* params, const float* X, float* u, float* cache,
                          float* scratch, int N) const {
        const cuda::PhaseScope scope(timer, kPhaseConn);
        const double* ss = norms && norms->of == X ? norms->ss : nullptr;
        cuda::conn_pre_forward(dev(s), params, X, u, cache, scratch, N, ss);
    }
    void conn_post_forward(const ConnSite& s, const float* cache, const float* X, const float* y, float* Xout,
                           int N) const {
        const cuda::PhaseScope scope(timer, kPhaseConn);
        cuda::conn_post_forward(dev(s), cache, X, y, Xout, N, norms ? norms->ss : nullptr);
        if (norms) norms->of = Xout;
    }
    MHC_CUDA_CONN_OP(conn_post_backward)
    MHC_CUDA_CONN_OP(conn_pre_backward)
#undef MHC_CUDA_OP
#undef MHC_CUDA_CONN_OP
};

}  // namespace mhc::detail
