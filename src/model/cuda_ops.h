// The CUDA ops as the model calls them (model/block.h): the members of CpuOps (model/cpu_ops.h),
// same names and arguments, forwarding to the launchers of ops/ops_cuda.h and conn/conn_cuda.h on
// device pointers. A site is handed over as the model's ConnSite; its device twin is found by its
// place in the model's list of sites. Not timed: no PhaseTimes on the GPU yet.
#pragma once
#include <stdexcept>
#include <utility>
#include <vector>

#include "conn/conn_cuda.h"
#include "mhc/conn.h"
#include "ops/ops_cuda.h"

namespace mhc::detail {

struct CudaOps {
    const std::vector<ConnSite>* sites = nullptr;             // the model's sites (host)
    const std::vector<cuda::ConnSiteCuda>* dsites = nullptr;  // their device twins, in the same order

    const cuda::ConnSiteCuda& dev(const ConnSite& s) const {
        for (size_t k = 0; k < sites->size(); k++)
            if (&(*sites)[k] == &s) return (*dsites)[k];
        throw std::logic_error("CudaOps: a connection site that is not one of the model's");
    }

#define MHC_CUDA_OP(op) \
    template <typename... A> decltype(auto) op(A&&... a) const { return cuda::op(std::forward<A>(a)...); }
#define MHC_CUDA_CONN_OP(op)                                                    \
    template <typename... A> decltype(auto) op(const ConnSite& s, A&&... a) const { \
        return cuda::op(dev(s), std::forward<A>(a)...);                         \
    }
    MHC_CUDA_OP(encoder_forward)
    MHC_CUDA_OP(encoder_backward)
    MHC_CUDA_OP(layernorm_forward)
    MHC_CUDA_OP(layernorm_backward)
    MHC_CUDA_OP(matmul_forward)
    MHC_CUDA_OP(matmul_backward)
    MHC_CUDA_OP(gelu_forward)
    MHC_CUDA_OP(gelu_backward)
    MHC_CUDA_OP(attention_forward)
    MHC_CUDA_OP(attention_backward)
    MHC_CUDA_OP(attention_cached_forward)
    MHC_CUDA_OP(stream_sum_forward)
    MHC_CUDA_OP(stream_sum_backward)
    MHC_CUDA_OP(crossentropy_forward)
    MHC_CUDA_OP(crossentropy_backward)
    MHC_CUDA_CONN_OP(conn_pre_forward)
    MHC_CUDA_CONN_OP(conn_post_forward)
    MHC_CUDA_CONN_OP(conn_post_backward)
    MHC_CUDA_CONN_OP(conn_pre_backward)
#undef MHC_CUDA_OP
#undef MHC_CUDA_CONN_OP
};

}  // namespace mhc::detail
