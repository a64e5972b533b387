// Hyper-connection site forward and backward over N tokens: the stream loops, the RMS-style norm,
// the projections and the reductions of parameter gradients over tokens. The pre functions work
// on blocks of tokens so that each block's streams are read from memory once.
#include <algorithm>
#include <cmath>

#include <omp.h>

#include <vector>

#include "coef.h"
#include "kernels.h"
#include "mhc/conn.h"

namespace mhc {

namespace {

using detail::narrow_nn;
using detail::pad_cols;

constexpr int kTokBlock = 32;  // tokens per block: a block's streams (32 x n x C) stay in L2

// Threads only pay off with enough work per parallel region (a few tokens of a wide site do not).
inline bool parallel_worth(long N, const ConnSite& s) { return N * s.n * s.C >= 16384; }

// <a, b> accumulated in double (coefficient gradients are sums over a whole stream), in four
// independent vector accumulators so that the FMA latency does not bound it; fixed order.
template <typename A, typename B> double dot(const A* a, const B* b, int len) {
    double acc[4][8] = {};
    int i = 0;
    for (; i + 32 <= len; i += 32)
        for (int q = 0; q < 4; q++)
#pragma omp simd
            for (int l = 0; l < 8; l++) acc[q][l] += (double)a[i + 8 * q + l] * (double)b[i + 8 * q + l];
    double sum = 0;
    for (; i < len; i++) sum += (double)a[i] * (double)b[i];
    for (int l = 0; l < 8; l++) sum += (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    return sum;
}

// out[k] = <g, v[k]> for NV vectors in one pass, in double: g is read and converted once for all.
template <int NV, typename T> void multi_dot_n(const T* g, const T* const* v, int len, double* out) {
    double acc[NV][8] = {};
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        double gd[8];
        for (int l = 0; l < 8; l++) gd[l] = (double)g[i + l];
        for (int k = 0; k < NV; k++)
#pragma omp simd
            for (int l = 0; l < 8; l++) acc[k][l] += gd[l] * (double)v[k][i + l];
    }
    for (int k = 0; k < NV; k++) {
        double sum = 0;
        for (int j = i; j < len; j++) sum += (double)g[j] * (double)v[k][j];
        for (int l = 0; l < 8; l++) sum += acc[k][l];
        out[k] = sum;
    }
}
template <typename T> void multi_dot(const T* g, const T* const* v, int nv, int len, double* out) {
    switch (nv) {  // a compile-time count keeps the accumulators in registers
        case 1: return multi_dot_n<1>(g, v, len, out);
        case 2: return multi_dot_n<2>(g, v, len, out);
        case 3: return multi_dot_n<3>(g, v, len, out);
        case 4: return multi_dot_n<4>(g, v, len, out);
        case 5: return multi_dot_n<5>(g, v, len, out);
        case 6: return multi_dot_n<6>(g, v, len, out);
        case 7: return multi_dot_n<7>(g, v, len, out);
        case 8: return multi_dot_n<8>(g, v, len, out);
        default: return multi_dot_n<9>(g, v, len, out);  // n + 1 <= 9 (n <= 8)
    }
}

// u = sum_s h[s] X_s for one token, by channel blocks (accumulate in R, one store per output).
// Also the backward's dy = sum_t H_post[t] dX'_t and dX_s = sum_t H_res[s][t] dX'_t.
template <typename T, typename R> void weighted_sum(const R* h, const T* x, int n, int C, T* u) {
    constexpr int B = 32;
    for (int c0 = 0; c0 < C; c0 += B) {
        const int len = std::min(B, C - c0);
        R acc[B] = {};
        for (int st = 0; st < n; st++)
            for (int i = 0; i < len; i++) acc[i] += h[st] * R(x[st * C + c0 + i]);
        for (int i = 0; i < len; i++) u[c0 + i] = T(acc[i]);
    }
}

// (1 + gamma) folded into the projections, so they read X in place: proj = rs * (v · Wf) with
// Wf = diag(1 + gamma) [W1 | W2], [Dp, pw] with zero padding; WfT [prow, Dp] if asked for.
template <typename R> void fold_gain(const ConnSite& s, const R* params, R* Wf, R* WfT) {
    const int Dp = s.Dp, prow = s.prow, pw = detail::pad_cols(prow);
    const R* gamma = params + s.o_gamma;
    const R *W1 = params + s.o_W1, *W2 = params + s.o_W2;
    for (int i = 0; i < Dp; i++) {
        const R g1 = R(1) + gamma[i];
        R* w = Wf + (long)i * pw;
        for (int j = 0; j < s.M1; j++) w[j] = g1 * W1[(long)i * s.M1 + j];
        for (int j = 0; j < s.M2; j++) w[s.M1 + j] = g1 * W2[(long)i * s.M2 + j];
        for (int j = prow; j < pw; j++) w[j] = R(0);
    }
    if (!WfT) return;
    for (int i0 = 0; i0 < Dp; i0 += 16)  // by blocks of rows: stores go along WfT's rows
        for (int j = 0; j < prow; j++)
            for (int i = i0; i < std::min(Dp, i0 + 16); i++) WfT[(long)j * Dp + i] = Wf[(long)i * pw + j];
}

template <typename P> P* rs_slot(const ConnSite& s, P* cache, long row) {
    return cache + (row / s.rpt) * s.stride + s.c_rs + row % s.rpt;
}

}  // namespace

template <typename R> const R* cache_hpre(const ConnSite& s, const R* cache, int tok) {
    return cache + (long)tok * s.stride + s.c_hpre;
}
template <typename R> const R* cache_hres(const ConnSite& s, const R* cache, int tok) {
    return cache + (long)tok * s.stride + s.c_hres;
}
template <typename R> const R* cache_hpost(const ConnSite& s, const R* cache, int tok) {
    return cache + (long)tok * s.stride + s.c_hpost;
}

template <typename T, typename R>
void conn_pre_forward(const ConnSite& s, const R* params, const T* X, T* u, R* cache, R* scratch,
                      int N) {
    const int n = s.n, C = s.C;
    if (s.cfg.variant == Variant::residual) {
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
        for (int tok = 0; tok < N; tok++) {
            R* c = cache + (long)tok * s.stride;
            c[s.c_hpre] = c[s.c_hres] = c[s.c_hpost] = R(1);
            std::copy(X + (long)tok * C, X + (long)(tok + 1) * C, u + (long)tok * C);
        }
        return;
    }
    const int Dp = s.Dp, prow = s.prow, pw = pad_cols(prow), rpt = s.rpt;
    R* Wf = scratch;  // [Dp, pw]
    fold_gain(s, params, Wf, (R*)nullptr);
    const int nblk = (N + kTokBlock - 1) / kTokBlock;
    // One pass over X per block of tokens, while the block is in cache: row norms, projections,
    // coefficients and the branch input.
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int blk = 0; blk < nblk; blk++) {
        const int t0 = blk * kTokBlock, nt = std::min(kTokBlock, N - t0), nr = nt * rpt;
        const T* Xb = X + (long)t0 * n * C;  // rows of Dp values, rpt per token
        thread_local std::vector<R> Pb;
        Pb.resize((size_t)kTokBlock * rpt * prow);
        narrow_nn(Xb, Dp, nr, Dp, Wf, pw, prow, Pb.data(), prow);
        for (int r = 0; r < nr; r++) {
            const long row = (long)t0 * rpt + r;
            const R rs = R(std::sqrt((double)Dp) / std::max(std::sqrt(dot(Xb + (long)r * Dp, Xb + (long)r * Dp, Dp)), 1e-12));
            *rs_slot(s, cache, row) = rs;
            for (int j = 0; j < prow; j++) Pb[(size_t)r * prow + j] *= rs;
        }
        for (int k = 0; k < nt; k++) {
            const int tok = t0 + k;
            R* c = cache + (long)tok * s.stride;
            detail::coef_forward_token(s, params, Pb.data() + (long)k * rpt * prow, c);
            weighted_sum(c + s.c_hpre, X + (long)tok * n * C, n, C, u + (long)tok * C);
        }
    }
}

template <typename T, typename R>
void conn_post_forward(const ConnSite& s, const R* cache, const T* X, const T* y, T* Xout, int N) {
    const int n = s.n, C = s.C;
    constexpr int B = 32;  // channel block: accumulate in R registers, one store per output
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int tok = 0; tok < N; tok++) {
        const R* c = cache + (long)tok * s.stride;
        const R* H = c + s.c_hres;
        const R* hpost = c + s.c_hpost;
        const T* x = X + (long)tok * n * C;
        const T* yt = y + (long)tok * C;
        T* o = Xout + (long)tok * n * C;
        for (int t = 0; t < n; t++)
            for (int c0 = 0; c0 < C; c0 += B) {
                const int len = std::min(B, C - c0);
                R acc[B];
                for (int i = 0; i < len; i++) acc[i] = hpost[t] * R(yt[c0 + i]);
                for (int st = 0; st < n; st++) {
                    const R h = H[st * n + t];
                    const T* xs = x + st * C + c0;
                    for (int i = 0; i < len; i++) acc[i] += h * R(xs[i]);
                }
                for (int i = 0; i < len; i++) o[t * C + c0 + i] = T(acc[i]);
            }
    }
}

template <typename T, typename R>
void conn_post_backward(const ConnSite& s, R* cache, const T* X, const T* y, const T* dXout, T* dX,
                        T* dy, int N) {
    const int n = s.n, C = s.C;
    const bool residual = s.cfg.variant == Variant::residual;
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int tok = 0; tok < N; tok++) {
        R* c = cache + (long)tok * s.stride;
        const R* H = c + s.c_hres;
        const R* hpost = c + s.c_hpost;
        const T* x = X + (long)tok * n * C;
        const T* yt = y + (long)tok * C;
        const T* g = dXout + (long)tok * n * C;
        T* dx = dX + (long)tok * n * C;
        T* dyt = dy + (long)tok * C;
        weighted_sum(hpost, g, n, C, dyt);  // dy = sum_t H_post[t] dX'_t
        // dH_post[t] = <dX'_t, y>, dH_res[s][t] = <dX'_t, X_s> (residual has no coefficients)
        const T* v[9] = {yt};
        for (int st = 0; st < n; st++) v[1 + st] = x + st * C;
        for (int t = 0; t < n && !residual; t++) {
            double d[9];
            multi_dot(g + t * C, v, n + 1, C, d);
            c[s.c_dhpost + t] = R(d[0]);
            for (int st = 0; st < n; st++) c[s.c_dhres + st * n + t] = R(d[1 + st]);
        }
        for (int st = 0; st < n; st++) weighted_sum(H + st * n, g, n, C, dx + st * C);  // dX_s
    }
}

template <typename T, typename R>
void conn_pre_backward(const ConnSite& s, const R* params, const R* cache, const T* X, const T* du,
                       T* dX, R* dparams, R* scratch, int N) {
    if (N <= 0) return;
    const int n = s.n, C = s.C;
    if (s.cfg.variant == Variant::residual) {  // dX += du
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
        for (long i = 0; i < (long)N * C; i++) dX[i] = T(R(dX[i]) + R(du[i]));
        return;
    }
    const int Dp = s.Dp, prow = s.prow, pw = pad_cols(prow), rpt = s.rpt, W = rpt * prow;
    R* Wf = scratch;                      // [Dp, pw]  (1 + gamma) folded into [W1 | W2]
    R* WfT = Wf + (long)Dp * pw;          // [prow, Dp] its transpose
    R* Dsum = WfT + (long)prow * Dp;      // [Dp, pw]  sum over tokens of X_rowᵀ dZ_row
    fold_gain(s, params, Wf, WfT);
    const bool hc = s.cfg.variant == Variant::hc;
    const int nblk = (N + kTokBlock - 1) / kTokBlock;
    constexpr int kMaxThreads = 256;
    R* parts[kMaxThreads];
    double* sums[kMaxThreads];
    int nth = 1;
#pragma omp parallel if (parallel_worth(N, s)) num_threads(std::min(omp_get_max_threads(), kMaxThreads))
    {
        const int tid = omp_get_thread_num();
#pragma omp single
        nth = omp_get_num_threads();
        // Per thread: its share of Dsum and of the static/scale sums, and one block's buffers.
        thread_local std::vector<R> Dpart, Gb, dZ, E;
        thread_local std::vector<double> ssum;
        Dpart.assign((size_t)Dp * pw, R(0));
        ssum.assign(2 * (size_t)W, 0.0);
        Gb.resize((size_t)kTokBlock * W);
        dZ.assign((size_t)kTokBlock * rpt * pw, R(0));
        E.resize((size_t)kTokBlock * rpt * Dp);
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            const int t0 = blk * kTokBlock, nt = std::min(kTokBlock, N - t0), nr = nt * rpt;
            const T* Xb = X + (long)t0 * n * C;
            for (int k = 0; k < nt; k++) {
                const int tok = t0 + k;
                const R* c = cache + (long)tok * s.stride;
                const R* hpre = c + s.c_hpre;
                const T* x = X + (long)tok * n * C;
                const T* g = du + (long)tok * C;
                T* dx = dX + (long)tok * n * C;
                double dhpre[8];  // dH_pre[s] = <du, X_s>, dX_s += H_pre[s] du
                const T* xs[8];
                for (int st = 0; st < n; st++) xs[st] = x + st * C;
                multi_dot(g, xs, n, C, dhpre);
                for (int st = 0; st < n; st++) {
                    const R h = hpre[st];
                    T* d = dx + st * C;
#pragma omp simd
                    for (int i = 0; i < C; i++) d[i] = T(R(d[i]) + h * R(g[i]));
                }
                R* G = Gb.data() + (long)k * W;  // dL/dl_j of the pre-activations l = scale*f + static
                detail::coef_backward_token(s, params, c, dhpre, G);
                const R* f = c + s.c_logit;
                for (int j = 0; j < W; j++) {
                    ssum[j] += (double)G[j];                       // -> static
                    ssum[W + j] += (double)G[j] * (double)f[j];    // -> scale
                }
                // Through l = scale * f(proj) and proj = rs * (v · Wf): dZ = rs * scale * f' * G.
                for (int q = 0; q < rpt; q++) {
                    const R rs = *rs_slot(s, cache, (long)tok * rpt + q);
                    R* z = dZ.data() + ((long)k * rpt + q) * pw;
                    for (int j = 0; j < prow; j++) {
                        const int jj = q * prow + j;
                        const R d = hc ? R(1) - f[jj] * f[jj] : R(1);
                        z[j] = G[jj] * params[s.col_scale[jj]] * d * rs;
                    }
                }
            }
            detail::narrow_tn(Xb, Dp, nr, Dp, dZ.data(), pw, Dpart.data());
            detail::narrow_nt(dZ.data(), pw, nr, prow, WfT, Dp, E.data());
            // Norm backward: dv = e - v <v, e> / ||v||^2 (just e where the norm was clamped).
            for (int r = 0; r < nr; r++) {
                const T* v = Xb + (long)r * Dp;
                const R* e = E.data() + (long)r * Dp;
                T* dv = dX + ((long)t0 * rpt + r) * Dp;
                const double ss = dot(v, v, Dp);
                const R k = std::sqrt(ss) > 1e-12 ? R(dot(v, e, Dp) / ss) : R(0);
#pragma omp simd
                for (int i = 0; i < Dp; i++) dv[i] = T(R(dv[i]) + e[i] - R(v[i]) * k);
            }
        }
        parts[tid] = Dpart.data();
        sums[tid] = ssum.data();
    }
    // Thread partials summed in thread order: bitwise reproducible for a given thread count.
    std::fill(Dsum, Dsum + (long)Dp * pw, R(0));
    for (int t = 0; t < nth; t++)
        for (long i = 0; i < (long)Dp * pw; i++) Dsum[i] += parts[t][i];
    for (int j = 0; j < W; j++) {
        double db = 0, ds = 0;
        for (int t = 0; t < nth; t++) db += sums[t][j], ds += sums[t][W + j];
        dparams[s.col_static[j]] += R(db);
        dparams[s.col_scale[j]] += R(ds);
    }
    // Wf = diag(1 + gamma) [W1 | W2]: dW = (1 + gamma) ⊙ Dsum, dgamma_i = sum_j [W1 | W2]_ij Dsum_ij.
    const R* gamma = params + s.o_gamma;
    const R *W1 = params + s.o_W1, *W2 = params + s.o_W2;
    R *dW1 = dparams + s.o_W1, *dW2 = dparams + s.o_W2, *dgamma = dparams + s.o_gamma;
    for (int i = 0; i < Dp; i++) {
        const R* d = Dsum + (long)i * pw;
        const R g1 = R(1) + gamma[i];
        double dg = 0;
        for (int j = 0; j < s.M1; j++) {
            dW1[(long)i * s.M1 + j] += g1 * d[j];
            dg += (double)W1[(long)i * s.M1 + j] * (double)d[j];
        }
        for (int j = 0; j < s.M2; j++) {
            dW2[(long)i * s.M2 + j] += g1 * d[s.M1 + j];
            dg += (double)W2[(long)i * s.M2 + j] * (double)d[s.M1 + j];
        }
        dgamma[i] += R(dg);
    }
}

#define MHC_CONN_INST(T, R)                                                                      \
    template void conn_pre_forward<T, R>(const ConnSite&, const R*, const T*, T*, R*, R*, int); \
    template void conn_post_forward<T, R>(const ConnSite&, const R*, const T*, const T*, T*, int); \
    template void conn_post_backward<T, R>(const ConnSite&, R*, const T*, const T*, const T*, T*, \
                                           T*, int);                                             \
    template void conn_pre_backward<T, R>(const ConnSite&, const R*, const R*, const T*, const T*, \
                                          T*, R*, R*, int);
MHC_CONN_INST(float, float)
MHC_CONN_INST(double, double)

#define MHC_R_INST(R)                                                                  \
    template const R* cache_hpre<R>(const ConnSite&, const R*, int);                  \
    template const R* cache_hres<R>(const ConnSite&, const R*, int);                  \
    template const R* cache_hpost<R>(const ConnSite&, const R*, int);
MHC_R_INST(float)
MHC_R_INST(double)

}  // namespace mhc
