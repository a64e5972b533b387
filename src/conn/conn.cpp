// Hyper-connection site forward and backward over N tokens: the stream loops, the RMS-style norm,
// the projections (BLAS) and the reductions of parameter gradients over tokens.
#include <algorithm>
#include <cmath>

#include "coef.h"
#include "ops/blas.h"
#include "mhc/conn.h"

namespace mhc {

namespace {

using detail::gemm;

// Threads only pay off with enough work per parallel region (a few tokens of a wide site do not).
inline bool parallel_worth(long N, const ConnSite& s) { return N * s.n * s.C >= 16384; }

// <a, b> accumulated in double (coefficient gradients are sums over a whole stream).
template <typename A, typename B> double dot(const A* a, const B* b, int len) {
    double acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int i = 0; i < len; i++) acc += (double)a[i] * (double)b[i];
    return acc;
}

// Normalised row: xh = v * rs * (1 + gamma), rs = sqrt(D) / max(||v||, 1e-12). Returns rs.
template <typename T, typename R>
R norm_row(const T* v, const R* gamma, int D, R* xh) {
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < D; i++) ss += (double)v[i] * (double)v[i];
    const R rs = R(std::sqrt((double)D) / std::max(std::sqrt(ss), 1e-12));
    for (int i = 0; i < D; i++) xh[i] = R(v[i]) * rs * (R(1) + gamma[i]);
    return rs;
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

template <typename R> void sinkhorn_forward(const R* L, int n, int iters, R* H) {
    double l[64];
    for (int i = 0; i < n * n; i++) l[i] = (double)L[i];
    detail::sinkhorn_log(l, n, iters, nullptr);
    for (int i = 0; i < n * n; i++) H[i] = R(std::exp(l[i]));
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
    const long rows = (long)N * s.rpt;
    const int Dp = s.Dp;
    R* xh = scratch;             // [rows, Dp] normalised rows
    R* P = scratch + rows * Dp;  // [rows, prow] projections
    const R* gamma = params + s.o_gamma;
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (long row = 0; row < rows; row++)
        *rs_slot(s, cache, row) = norm_row(X + row * Dp, gamma, Dp, xh + row * Dp);
    gemm(false, false, (int)rows, s.M1, Dp, xh, Dp, params + s.o_W1, s.M1, R(0), P, s.prow);
    gemm(false, false, (int)rows, s.M2, Dp, xh, Dp, params + s.o_W2, s.M2, R(0), P + s.M1, s.prow);
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int tok = 0; tok < N; tok++) {
        R* c = cache + (long)tok * s.stride;
        detail::coef_forward_token(s, params, P + (long)tok * s.rpt * s.prow, c);
        weighted_sum(c + s.c_hpre, X + (long)tok * n * C, n, C, u + (long)tok * C);
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
        for (int t = 0; t < n && !residual; t++) {
            c[s.c_dhpost + t] = R(dot(g + t * C, yt, C));
            for (int st = 0; st < n; st++) c[s.c_dhres + st * n + t] = R(dot(g + t * C, x + st * C, C));
        }
        for (int st = 0; st < n; st++) weighted_sum(H + st * n, g, n, C, dx + st * C);  // dX_s
    }
}

template <typename T, typename R>
void conn_pre_backward(const ConnSite& s, const R* params, const R* cache, const T* X, const T* du,
                       T* dX, R* dparams, R* scratch, int N) {
    if (N <= 0) return;
    const int n = s.n, C = s.C;
    const bool residual = s.cfg.variant == Variant::residual;
    const long rows = (long)N * s.rpt;
    const int Dp = s.Dp, prow = s.prow;
    R* xh = scratch;             // [rows, Dp]: normalised rows, then their gradient
    R* G = scratch + rows * Dp;  // [rows, prow]: gradient of the pre-activations, then projections
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int tok = 0; tok < N; tok++) {
        const R* c = cache + (long)tok * s.stride;
        const R* hpre = c + s.c_hpre;
        const T* x = X + (long)tok * n * C;
        const T* g = du + (long)tok * C;
        T* dx = dX + (long)tok * n * C;
        double dhpre[8];
        for (int st = 0; st < n; st++) {  // dH_pre[s] = <du, X_s>, dX_s += H_pre[s] du
            dhpre[st] = residual ? 0.0 : dot(g, x + st * C, C);
            for (int i = 0; i < C; i++) dx[st * C + i] = T(R(dx[st * C + i]) + hpre[st] * R(g[i]));
        }
        if (!residual) detail::coef_backward_token(s, params, c, dhpre, G + (long)tok * s.rpt * prow);
    }
    if (residual) return;

    // Static biases and scales: l_j = scale * f_j + static. Reduced serially in double (tiny).
    const int W = s.rpt * prow;
    for (int j = 0; j < W; j++) {
        double ds = 0, db = 0;
        for (int tok = 0; tok < N; tok++) {
            const double gj = (double)G[(long)tok * W + j];
            db += gj;
            ds += gj * (double)cache[(long)tok * s.stride + s.c_logit + j];
        }
        dparams[s.col_static[j]] += R(db);
        dparams[s.col_scale[j]] += R(ds);
    }
    // Gradient of the projections: scale * f'(proj) * dl (f' = 1, or 1 - tanh^2 for hc).
    const bool hc = s.cfg.variant == Variant::hc;
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int tok = 0; tok < N; tok++) {
        const R* f = cache + (long)tok * s.stride + s.c_logit;
        R* g = G + (long)tok * W;
        for (int j = 0; j < W; j++) {
            const R d = hc ? R(1) - f[j] * f[j] : R(1);
            g[j] *= params[s.col_scale[j]] * d;
        }
    }
    const R* gamma = params + s.o_gamma;
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (long row = 0; row < rows; row++) {  // recompute the normalised rows
        const R rs = *rs_slot(s, cache, row);
        const T* v = X + row * Dp;
        R* o = xh + row * Dp;
        for (int i = 0; i < Dp; i++) o[i] = R(v[i]) * rs * (R(1) + gamma[i]);
    }
    gemm(true, false, Dp, s.M1, (int)rows, xh, Dp, G, prow, R(1), dparams + s.o_W1, s.M1);
    gemm(true, false, Dp, s.M2, (int)rows, xh, Dp, G + s.M1, prow, R(1), dparams + s.o_W2, s.M2);
    gemm(false, true, (int)rows, Dp, s.M1, G, prow, params + s.o_W1, s.M1, R(0), xh, Dp);
    gemm(false, true, (int)rows, Dp, s.M2, G + s.M1, prow, params + s.o_W2, s.M2, R(1), xh, Dp);
    // xh now holds dL/dxh. dgamma[i] = sum_rows dxh[i] * v[i] * rs, by column blocks.
    R* dgamma = dparams + s.o_gamma;
    constexpr int B = 64;
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (int i0 = 0; i0 < Dp; i0 += B) {
        const int len = std::min(B, Dp - i0);
        double acc[B] = {0};
        for (long row = 0; row < rows; row++) {
            const double rs = (double)*rs_slot(s, cache, row);
            const R* d = xh + row * Dp + i0;
            const T* v = X + row * Dp + i0;
            for (int i = 0; i < len; i++) acc[i] += (double)d[i] * (double)v[i] * rs;
        }
        for (int i = 0; i < len; i++) dgamma[i0 + i] += R(acc[i]);
    }
    // Norm backward: dv = rs*g*dxh - v * rs/||v||^2 * <g*dxh, v>  (second term gone if clamped).
#pragma omp parallel for schedule(static) if (parallel_worth(N, s))
    for (long row = 0; row < rows; row++) {
        const R rs = *rs_slot(s, cache, row);
        const T* v = X + row * Dp;
        R* d = xh + row * Dp;
        T* dv = dX + row * Dp;
        for (int i = 0; i < Dp; i++) d[i] *= (R(1) + gamma[i]);
        const double ss = dot(v, v, Dp), dv_dot = dot(d, v, Dp);
        const R k = std::sqrt(ss) > 1e-12 ? R((double)rs * dv_dot / ss) : R(0);
        for (int i = 0; i < Dp; i++) dv[i] = T(R(dv[i]) + rs * d[i] - R(v[i]) * k);
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
    template const R* cache_hpost<R>(const ConnSite&, const R*, int);                 \
    template void sinkhorn_forward<R>(const R*, int, int, R*);
MHC_R_INST(float)
MHC_R_INST(double)

}  // namespace mhc
