// Token + position embedding into the streams, and the fused softmax cross-entropy.
#include <algorithm>
#include <cmath>

#include "ops/ops.h"
#include "ops/vmath.h"

namespace mhc {

template <typename T>
void encoder_forward(T* X, const int32_t* idx, const T* wte, const T* wpe, int B, int Tn, int C, int n) {
#pragma omp parallel for schedule(static) if ((long)B * Tn * C * n >= 65536)
    for (int bt = 0; bt < B * Tn; bt++) {
        const T* e = wte + (long)idx[bt] * C;
        const T* p = wpe + (long)(bt % Tn) * C;
        T* x = X + (long)bt * n * C;
        for (int c = 0; c < C; c++) x[c] = e[c] + p[c];
        for (int s = 1; s < n; s++) std::copy(x, x + C, x + (long)s * C);
    }
}

// Several tokens may share a row of wte (a scatter-add): parallel over channel blocks instead, each
// thread summing its channels over all tokens in order (the same bits on any thread count).
template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dX, const int32_t* idx, int B, int Tn, int C, int n) {
    constexpr int Bk = 64;
#pragma omp parallel for schedule(static) if ((long)B * Tn * C * n >= 65536)
    for (int c0 = 0; c0 < C; c0 += Bk) {
        const int len = std::min(Bk, C - c0);
        T acc[Bk];  // the token's gradient summed over the streams; loops of one array each vectorise
        for (int bt = 0; bt < B * Tn; bt++) {
            const T* g = dX + (long)bt * n * C + c0;
            for (int c = 0; c < len; c++) acc[c] = g[c];
            for (int s = 1; s < n; s++)
                for (int c = 0; c < len; c++) acc[c] += g[(long)s * C + c];
            T* de = dwte + (long)idx[bt] * C + c0;
            for (int c = 0; c < len; c++) de[c] += acc[c];
            T* dp = dwpe + (long)(bt % Tn) * C + c0;
            for (int c = 0; c < len; c++) dp[c] += acc[c];
        }
    }
}

template <typename T>
double crossentropy_forward(T* probs, T* losses, const int32_t* targets, int N, int V) {
#pragma omp parallel for schedule(static) if ((long)N * V >= 65536)
    for (int i = 0; i < N; i++) {
        T* row = probs + (long)i * V;
        const T m = detail::max_of(row, V);
        // loss = log z - (logit_target - m), from the logit itself so it stays finite for tiny probs
        const double lt = (double)row[targets[i]] - (double)m;
        const double z = detail::exp_shift_sum(row, V, m);
        const double logz = std::log(z), inv = 1.0 / z;
#pragma omp simd
        for (int v = 0; v < V; v++) row[v] = T((double)row[v] * inv);
        losses[i] = T(logz - lt);
    }
    double total = 0;  // summed in order, not by an OpenMP reduction: the same bits every run
    for (int i = 0; i < N; i++) total += (double)losses[i];
    return N ? total / N : 0.0;
}

template <typename T>
void crossentropy_backward(T* probs, const int32_t* targets, int N, int V, double scale) {
#pragma omp parallel for schedule(static) if ((long)N * V >= 65536)
    for (int i = 0; i < N; i++) {
        T* row = probs + (long)i * V;
#pragma omp simd
        for (int v = 0; v < V; v++) row[v] = T((double)row[v] * scale);
        row[targets[i]] -= T(scale);
    }
}

#define MHC_EL_INST(T)                                                                            \
    template void encoder_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int, int);  \
    template void encoder_backward<T>(T*, T*, const T*, const int32_t*, int, int, int, int);       \
    template double crossentropy_forward<T>(T*, T*, const int32_t*, int, int);                     \
    template void crossentropy_backward<T>(T*, const int32_t*, int, int, double);
MHC_EL_INST(float)
MHC_EL_INST(double)

}  // namespace mhc
