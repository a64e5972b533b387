// LayerNorm, linear layers (OpenBLAS) and exact GELU.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "ops/blas.h"
#include "ops/ops.h"
#include "ops/vmath.h"

namespace mhc {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* w, const T* b, int N, int C) {
#pragma omp parallel for schedule(static) if ((long)N * C >= 65536)
    for (int i = 0; i < N; i++) {
        const T* x = in + (long)i * C;
        double m = 0, v = 0;
#pragma omp simd reduction(+ : m)
        for (int c = 0; c < C; c++) m += (double)x[c];
        m /= C;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) v += ((double)x[c] - m) * ((double)x[c] - m);
        const T rs = T(1.0 / std::sqrt(v / C + 1e-5));
        const T mu = T(m);
        T* o = out + (long)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - mu) * rs * w[c] + (b ? b[c] : T(0));
        mean[i] = mu;
        rstd[i] = rs;
    }
}

// din = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w; dw += dout * xhat; db += dout.
template <typename T>
void layernorm_backward(T* din, T* dw, T* db, const T* dout, const T* in, const T* w, const T* mean,
                        const T* rstd, int N, int C) {
#pragma omp parallel for schedule(static) if ((long)N * C >= 65536)
    for (int i = 0; i < N; i++) {
        const T* x = in + (long)i * C;
        const T* g = dout + (long)i * C;
        double gm = 0, gx = 0;
#pragma omp simd reduction(+ : gm, gx)
        for (int c = 0; c < C; c++) {
            const double xh = ((double)x[c] - (double)mean[i]) * (double)rstd[i];
            gm += (double)g[c] * (double)w[c];
            gx += (double)g[c] * (double)w[c] * xh;
        }
        gm /= C;
        gx /= C;
        T* d = din + (long)i * C;
        for (int c = 0; c < C; c++) {
            const T xh = (x[c] - mean[i]) * rstd[i];
            d[c] = rstd[i] * (g[c] * w[c] - T(gm) - xh * T(gx));
        }
    }
    // Parameter gradients reduce over rows: parallel over channel blocks, rows in order.
    constexpr int Bk = 64;
#pragma omp parallel for schedule(static) if ((long)N * C >= 65536)
    for (int c0 = 0; c0 < C; c0 += Bk) {
        const int len = C - c0 < Bk ? C - c0 : Bk;
        double aw[Bk] = {0}, ab[Bk] = {0};
        for (int i = 0; i < N; i++) {
            const T* x = in + (long)i * C + c0;
            const T* g = dout + (long)i * C + c0;
            for (int c = 0; c < len; c++) {
                aw[c] += (double)g[c] * ((double)x[c] - (double)mean[i]) * (double)rstd[i];
                ab[c] += (double)g[c];
            }
        }
        for (int c = 0; c < len; c++) {
            dw[c0 + c] += T(aw[c]);
            if (db) db[c0 + c] += T(ab[c]);
        }
    }
}

template <typename T>
void matmul_forward(T* out, const T* in, const T* W, const T* bias, int N, int IC, int OC) {
    if (N <= 0) return;
    if (bias) {
#pragma omp parallel for schedule(static) if ((long)N * OC >= 65536)
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) out[(long)i * OC + o] = bias[o];
    }
    detail::gemm(false, true, N, OC, IC, in, IC, W, IC, bias ? T(1) : T(0), out, OC);
}

// db[o] += Σ_i dout[i, o]: parallel over column blocks, rows in order (the same bits on any
// thread count), each block's sums in registers while the rows stream by.
namespace {
template <typename T> void bias_grad(T* db, const T* dout, int N, int OC) {
    constexpr int Bk = 64;
#pragma omp parallel for schedule(static) if ((long)N * OC >= 65536)
    for (int o0 = 0; o0 < OC; o0 += Bk) {
        const int len = std::min(Bk, OC - o0);
        double acc[Bk] = {0};
        for (int i = 0; i < N; i++) {
            const T* g = dout + (long)i * OC + o0;
#pragma omp simd
            for (int c = 0; c < len; c++) acc[c] += (double)g[c];
        }
        for (int c = 0; c < len; c++) db[o0 + c] += T(acc[c]);
    }
}
}  // namespace

template <typename T>
void matmul_backward(T* din, T* dW, T* dbias, const T* dout, const T* in, const T* W, int N, int IC,
                     int OC) {
    if (N <= 0) return;
    detail::gemm(false, false, N, IC, OC, dout, OC, W, IC, T(0), din, IC);  // din = dout · W
    detail::gemm(true, false, OC, IC, N, dout, OC, in, IC, T(1), dW, IC);   // dW += doutᵀ · in
    if (dbias) bias_grad(dbias, dout, N, OC);
}

template <typename T> void gelu_forward(T* out, const T* in, long N) {
    if constexpr (std::is_same_v<T, float>) {
#pragma omp parallel for simd schedule(static) if (N >= 65536)
        for (long i = 0; i < N; i++) out[i] = in[i] * detail::normal_cdf(in[i]);
    } else {
#pragma omp parallel for schedule(static) if (N >= 65536)
        for (long i = 0; i < N; i++) out[i] = T(0.5 * in[i] * (1.0 + std::erf(in[i] * M_SQRT1_2)));
    }
}

// d/dx [x Φ(x)] = Φ(x) + x φ(x)
template <typename T> void gelu_backward(T* din, const T* in, const T* dout, long N) {
    if constexpr (std::is_same_v<T, float>) {
#pragma omp parallel for simd schedule(static) if (N >= 65536)
        for (long i = 0; i < N; i++) {
            const float x = in[i];
            const float pdf = detail::exp_fast(-0.5f * x * x) * 0.3989422804014327f;  // 1/sqrt(2π)
            din[i] = dout[i] * (detail::normal_cdf(x) + x * pdf);
        }
    } else {
#pragma omp parallel for schedule(static) if (N >= 65536)
        for (long i = 0; i < N; i++) {
            const double x = in[i];
            const double cdf = 0.5 * (1.0 + std::erf(x * M_SQRT1_2));
            const double pdf = std::exp(-0.5 * x * x) * 0.3989422804014327;
            din[i] = T(dout[i] * (cdf + x * pdf));
        }
    }
}

#define MHC_DENSE_INST(T)                                                                        \
    template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int, int);      \
    template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,     \
                                        const T*, int, int);                                     \
    template void matmul_forward<T>(T*, const T*, const T*, const T*, int, int, int);            \
    template void matmul_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int);   \
    template void gelu_forward<T>(T*, const T*, long);                                           \
    template void gelu_backward<T>(T*, const T*, const T*, long);
MHC_DENSE_INST(float)
MHC_DENSE_INST(double)

}  // namespace mhc
