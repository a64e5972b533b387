// Per-token coefficient maths (SPEC §2) on the GPU, one thread per token, in double from the stored
// fp32 values: the device twin of conn/coef.cpp and the mixers (mix_perm.cpp, mix_kron.cpp here;
// mix_cayley.cpp and mix_quat.cpp in conn/mix_orth.cuh; mhc's mix_sinkhorn.cpp, and mhc-lite up to
// 64 permutations, with a warp per token in conn/coef_warp.cu), with their order of operations, so
// H_pre, H_res, H_post and the gradients of the pre-activations agree with the CPU's to the last
// fp32 bit but for rare roundings.
// A new variant of the family adds its H_res maths beside the others (forward and backward).
#include <algorithm>

#include "conn/coef.cuh"
#include "conn/conn_cuda.h"
#include "conn/mix_orth.cuh"
#include "conn/parts.cuh"
#include "cuda/device.cuh"

namespace mhc::cuda::detail {

namespace {

constexpr int kTok = 128;  // tokens (threads) per block

// l_j = scale * f_j + static for the token's stored f values.
MHC_DEV double preact(const SiteDev& s, const float* params, const float* f, int j) {
    return (double)params[s.col_scale[j]] * (double)f[j] + (double)params[s.col_static[j]];
}

// ---- kromhc: Kronecker factors -----------------------------------------------------------------
// H[i][j] = Π_k (bit k of i and j agree ? p_k : q_k), factor k on bit K-1-k (U_1 on the MSB).
MHC_DEV double kron_entry(int K, const double* p, const double* q, int i, int j, int skip, bool* same_skip) {
    double h = 1;
    for (int k = 0; k < K; k++) {
        const int bit = K - 1 - k;
        const bool same = ((i >> bit) & 1) == ((j >> bit) & 1);
        if (k == skip) *same_skip = same;
        else h *= same ? p[k] : q[k];
    }
    return h;
}

// Each kernel comes twice: with the orthogonal mixers (jpmhc, ohc) and without. Their n × n double
// matrices (the Cayley transform's elimination and its unrolled backward) make a stack frame of
// some KB per thread, for which the driver reserves local memory for every thread the device can
// hold (docs/GPU.md, "Kernel resources"): the other variants should not pay for it.
bool orthogonal(const SiteDev& s) { return s.variant == (int)Variant::jpmhc || s.variant == (int)Variant::ohc; }

// With ss, the token's rs first: rs = sqrt(Dp) / max(||row||, 1e-12), ||row||² the sum of the row's
// streams' sums of squares (a row is all n streams, or one for hc).
template <bool kOrth>
__global__ void k_coef_forward(SiteDev s, const float* params, Proj P, const double* ss, float* cache, int N) {
    const int tok = blockIdx.x * kTok + threadIdx.x;
    if (tok >= N) return;
    const int n = s.n;
    float* c = cache + (long)tok * s.stride;
    if (ss)
        for (int q = 0; q < s.rpt; q++) c[s.c_rs + q] = row_rs_from_ss(s, ss, tok, q);
    float* f = c + s.c_logit;
    float* hpre = c + s.c_hpre;
    float* hres = c + s.c_hres;
    float* hpost = c + s.c_hpost;
    if (s.variant == (int)Variant::hc) {
        for (int j = 0; j < s.W; j++) f[j] = (float)tanh((double)(proj(s, P, tok, j) * c[s.c_rs + j / s.prow]));
        for (int row = 0; row < n; row++) {  // alpha[row][0..n], beta[row]
            const int b = row * s.prow;
            hpre[row] = (float)preact(s, params, f, b);
            for (int t = 0; t < n; t++) hres[row * n + t] = (float)preact(s, params, f, b + 1 + t);
            hpost[row] = (float)preact(s, params, f, b + n + 1);
        }
        return;
    }
    const float rs = c[s.c_rs];
    for (int j = 0; j < s.prow; j++) f[j] = proj(s, P, tok, j) * rs;
    for (int i = 0; i < n; i++) {
        hpre[i] = (float)sigm(preact(s, params, f, s.pre_col[i]));
        hpost[i] = (float)(2.0 * sigm(preact(s, params, f, s.M1 + i)));
    }
    float* extra = c + s.c_extra;
    double H[64];
    for (int i = 0; i < n * n; i++) H[i] = 0;
    if (s.variant == (int)Variant::mhc_lite) {
        // a = softmax(l); H[i][π_k(i)] += a_k. exp(l_k - m) is recomputed where the CPU keeps it: the same bits.
        double m = -INFINITY, z = 0;
        for (int k = 0; k < s.K; k++) {
            const double l = preact(s, params, f, s.res_col[k]);
            m = l > m ? l : m;
        }
        for (int k = 0; k < s.K; k++) z += exp(preact(s, params, f, s.res_col[k]) - m);
        for (int k = 0; k < s.K; k++) {
            const double a = exp(preact(s, params, f, s.res_col[k]) - m) / z;
            extra[k] = (float)a;
            const int* pk = s.perms + (long)k * n;
            for (int i = 0; i < n; i++) H[i * n + pk[i]] += a;
        }
    } else if constexpr (!kOrth) {  // kromhc (jpmhc and ohc run the other instantiation)
        double d[3], p2[3], q2[3];
        for (int k = 0; k < s.K; k++) {
            d[k] = store(preact(s, params, f, s.res_col[2 * k]) - preact(s, params, f, s.res_col[2 * k + 1]));
            extra[k] = (float)d[k];
            p2[k] = sigm(d[k]), q2[k] = sigm(-d[k]);
        }
        bool unused;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) H[i * n + j] = kron_entry(s.K, p2, q2, i, j, -1, &unused);
    } else if (s.variant == (int)Variant::jpmhc) {  // extra: w_ij = M[i][j] − M[j][i], i < j
        double w[28];
        int k = 0;
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++, k++) {
                w[k] = store(preact(s, params, f, s.res_col[i * n + j]) - preact(s, params, f, s.res_col[j * n + i]));
                extra[k] = (float)w[k];
            }
        cayley_forward(w, n, s.iters, H);
    } else if (s.variant == (int)Variant::ohc) {  // extra: the 8 logits
        double l[8];
        for (int k = 0; k < 8; k++) {
            l[k] = store(preact(s, params, f, s.res_col[k]));
            extra[k] = (float)l[k];
        }
        quat_forward(l, H);
    }
    for (int i = 0; i < n * n; i++) hres[i] = (float)H[i];
}

// G of token tok (a device function so that its variants may return early).
template <bool kOrth>
MHC_DEV void coef_backward_token(const SiteDev& s, const float* params, const float* cache, const double* dhpre_all,
                                 float* Gall, double* trace, int tok, int N) {
    const int n = s.n;
    const float* c = cache + (long)tok * s.stride;
    const float* f = c + s.c_logit;
    const float* dhres = c + s.c_dhres;
    const float* dhpost = c + s.c_dhpost;
    const double* dhpre = dhpre_all + (long)tok * n;
    float* G = Gall + (long)tok * s.W;
    if (s.variant == (int)Variant::hc) {  // alpha and beta are the pre-activations themselves
        for (int row = 0; row < n; row++) {
            float* g = G + row * s.prow;
            g[0] = (float)dhpre[row];
            for (int t = 0; t < n; t++) g[1 + t] = dhres[row * n + t];
            g[n + 1] = dhpost[row];
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        const double lp = preact(s, params, f, s.pre_col[i]);
        G[s.pre_col[i]] = (float)(dhpre[i] * sigm(lp) * sigm(-lp));
        const double lq = preact(s, params, f, s.M1 + i);
        G[s.M1 + i] = (float)((double)dhpost[i] * 2.0 * sigm(lq) * sigm(-lq));
    }
    const float* extra = c + s.c_extra;
    if (s.variant == (int)Variant::mhc_lite) {
        // dL/da_k = Σ_i dH[i][π_k(i)], then the softmax backward (da_k recomputed: the same bits).
        double dot = 0;
        for (int k = 0; k < s.K; k++) {
            const int* pk = s.perms + (long)k * n;
            double da = 0;
            for (int i = 0; i < n; i++) da += (double)dhres[i * n + pk[i]];
            dot += (double)extra[k] * da;
        }
        for (int k = 0; k < s.K; k++) {
            const int* pk = s.perms + (long)k * n;
            double da = 0;
            for (int i = 0; i < n; i++) da += (double)dhres[i * n + pk[i]];
            G[s.res_col[k]] = (float)((double)extra[k] * (da - dot));
        }
    } else if constexpr (kOrth) {  // jpmhc, ohc
        double x[28], dH[64], dl[64];
        for (int k = 0; k < s.n_extra; k++) x[k] = (double)extra[k];
        for (int i = 0; i < n * n; i++) dH[i] = (double)dhres[i];
        if (s.variant == (int)Variant::jpmhc) cayley_backward(x, n, s.iters, dH, dl, trace ? trace + tok : nullptr, N);
        else quat_backward(x, dH, dl);
        for (int k = 0; k < s.nres; k++) G[s.res_col[k]] = (float)dl[k];
    } else {  // kromhc
        double d[3], p2[3], q2[3];
        for (int k = 0; k < s.K; k++) d[k] = (double)extra[k], p2[k] = sigm(d[k]), q2[k] = sigm(-d[k]);
        for (int k = 0; k < s.K; k++) {
            // dH[i][j]/dp_k = ±(product of the other factors): + where bit k agrees, - where not.
            double dp = 0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    bool same = false;
                    const double prod = kron_entry(s.K, p2, q2, i, j, k, &same);
                    dp += (double)dhres[i * n + j] * (same ? prod : -prod);
                }
            const double dd = dp * p2[k] * q2[k];  // d = l_id - l_swap, p = sigmoid(d)
            G[s.res_col[2 * k]] = (float)dd;
            G[s.res_col[2 * k + 1]] = (float)-dd;
        }
    }
}

// G, then the projections' gradients dZ = G · scale · f' · rs (f' = 1 - f² for hc's tanh, else 1)
// from the stored G, and with parts their three-part split.
template <bool kOrth>
__global__ void k_coef_backward(SiteDev s, const float* params, const float* cache, const double* dhpre,
                                float* Gall, float* dZ, bf16* parts, double* trace, int N) {
    const int tok = blockIdx.x * kTok + threadIdx.x;
    if (tok >= N) return;
    coef_backward_token<kOrth>(s, params, cache, dhpre, Gall, trace, tok, N);
    const float* c = cache + (long)tok * s.stride;
    const float* G = Gall + (long)tok * s.W;
    for (int j = 0; j < s.W; j++) proj_grad(s, params, c, G, tok, j, dZ, parts);
}

}  // namespace

void coef_forward(const SiteDev& s, const float* params, Proj P, const double* ss, float* cache, int N) {
    if (N <= 0) return;
    if (coef_by_warps(s)) return coef_forward_warps(s, params, P, ss, cache, N);
    if (s.variant == (int)Variant::mhc) fail("coef_forward", "mhc's Sinkhorn needs n <= 8", __FILE__, __LINE__);
    const unsigned blocks = (N + kTok - 1) / kTok;
    if (orthogonal(s)) MHC_LAUNCH(k_coef_forward<true>, blocks, kTok, s, params, P, ss, cache, N);
    else MHC_LAUNCH(k_coef_forward<false>, blocks, kTok, s, params, P, ss, cache, N);
}

void coef_backward(const SiteDev& s, const float* params, const float* cache, const double* dhpre, float* G,
                   float* dZ, bf16* parts, double* trace, int N) {
    if (N <= 0) return;
    if (coef_by_warps(s)) return coef_backward_warps(s, params, cache, dhpre, G, dZ, parts, trace, N);
    if (s.variant == (int)Variant::mhc) fail("coef_backward", "mhc's Sinkhorn needs n <= 8", __FILE__, __LINE__);
    const unsigned blocks = (N + kTok - 1) / kTok;
    if (orthogonal(s)) MHC_LAUNCH(k_coef_backward<true>, blocks, kTok, s, params, cache, dhpre, G, dZ, parts, trace, N);
    else MHC_LAUNCH(k_coef_backward<false>, blocks, kTok, s, params, cache, dhpre, G, dZ, parts, trace, N);
}

size_t coef_stack_bytes(const SiteDev& s) {
    if (s.variant == (int)Variant::residual) return 0;
    if (coef_by_warps(s)) return coef_stack_bytes_warps();
    cudaFuncAttributes a{}, b{};
    if (orthogonal(s)) {
        MHC_CUDA_CHECK(cudaFuncGetAttributes(&a, k_coef_forward<true>));
        MHC_CUDA_CHECK(cudaFuncGetAttributes(&b, k_coef_backward<true>));
    } else {
        MHC_CUDA_CHECK(cudaFuncGetAttributes(&a, k_coef_forward<false>));
        MHC_CUDA_CHECK(cudaFuncGetAttributes(&b, k_coef_backward<false>));
    }
    return std::max(a.localSizeBytes, b.localSizeBytes);
}

}  // namespace mhc::cuda::detail
