// What the per-token coefficient kernels share (included by conn/coef.cu and conn/coef_warp.cu,
// device code only): the sigmoid and the fp32 store in double, the raw projections' reader, and the
// warp kernels' entry points.
#pragma once
#include "conn/conn_cuda.h"
#include "conn/parts.cuh"
#include "cuda/device.cuh"

namespace mhc::cuda::detail {

MHC_DEV double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
MHC_DEV double store(double x) { return (double)(float)x; }  // what the fp32 cache holds of x

// Raw projection j of token tok (row j / prow of the token's rpt): as stored, or the sum of its
// three parts' products.
MHC_DEV float proj(const SiteDev& s, const Proj& P, long tok, int j) {
    return P.parts ? parts_sum(P.P, tok * s.rpt + j / s.prow, j % s.prow, s.prow) : P.P[tok * s.W + j];
}

// conn/coef_warp.cu: mhc-lite and mhc with a warp per token, where their sizes allow (coef_by_warps);
// coef_forward and coef_backward's contracts.
bool coef_by_warps(const SiteDev& s);
void coef_forward_warps(const SiteDev& s, const float* params, Proj P, const double* ss, float* cache, int N);
void coef_backward_warps(const SiteDev& s, const float* params, const float* cache, const double* dhpre, float* G,
                         float* dZ, bf16* parts, double* trace, int N);

}  // namespace mhc::cuda::detail
