// What the per-token coefficient kernels share (included by conn/coef.cu and conn/coef_warp.cu, and
// by conn/conn.cu for the norms; device code only): the sigmoid and the fp32 store in double, a
// row's rs, the raw projections' reader, the projections' gradients, and the warp kernels' entry
// points.
#pragma once
#include "conn/conn_cuda.h"
#include "conn/parts.cuh"
#include "cuda/device.cuh"

namespace mhc::cuda::detail {

MHC_DEV double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
MHC_DEV double store(double x) { return (double)(float)x; }  // what the fp32 cache holds of x

// A row's rs = sqrt(Dp) / max(||row||, 1e-12) from its sum of squares (0: the ceiling, where the
// norm is clamped).
MHC_DEV float row_rs(const SiteDev& s, double sumsq) {
    const double nrm = sqrt(sumsq);
    return (float)(sqrt((double)s.Dp) / (nrm > 1e-12 ? nrm : 1e-12));
}
// rs of row q of token tok from the streams' sums of squares ss [N, n]: a row is all n streams
// (rpt 1) or one (hc).
MHC_DEV float row_rs_from_ss(const SiteDev& s, const double* ss, long tok, int q) {
    double sum = 0;
    if (s.rpt == 1)
        for (int t = 0; t < s.n; t++) sum += ss[tok * s.n + t];
    else
        sum = ss[tok * s.n + q];
    return row_rs(s, sum);
}

// Raw projection j of token tok (row j / prow of the token's rpt): as stored, or the sum of its
// three parts' products.
MHC_DEV float proj(const SiteDev& s, const Proj& P, long tok, int j) {
    return P.parts ? parts_sum(P.P, tok * s.rpt + j / s.prow, j % s.prow, s.prow) : P.P[tok * s.W + j];
}

// The gradient of token tok's projection j, dZ = G · scale · f' · rs (f' = 1 - f² for hc's tanh,
// else 1), from the token's cache row c and its stored G row; parts given: also its three parts.
MHC_DEV void proj_grad(const SiteDev& s, const float* params, const float* c, const float* G, long tok, int j,
                       float* dZ, bf16* parts) {
    const float f = c[s.c_logit + j];
    const float d = s.variant == (int)Variant::hc ? 1.0f - f * f : 1.0f;
    const long at = tok * s.W + j;
    dZ[at] = G[j] * params[s.col_scale[j]] * d * c[s.c_rs + j / s.prow];
    if (parts) split3(dZ[at], at, s.prow, parts);
}

// conn/coef_warp.cu: mhc-lite and mhc with a warp per token, where their sizes allow (coef_by_warps);
// coef_forward and coef_backward's contracts.
bool coef_by_warps(const SiteDev& s);
void coef_forward_warps(const SiteDev& s, const float* params, Proj P, const double* ss, float* cache, int N);
void coef_backward_warps(const SiteDev& s, const float* params, const float* cache, const double* dhpre, float* G,
                         float* dZ, bf16* parts, double* trace, int N);
size_t coef_stack_bytes_warps();  // the larger stack frame of those two kernels

}  // namespace mhc::cuda::detail
