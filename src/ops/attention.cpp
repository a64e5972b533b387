// Causal multi-head self-attention core, one (batch, head) pair per task, products through BLAS
// (OpenBLAS runs single-threaded inside our parallel region).
#include <algorithm>
#include <cmath>

#include "ops/blas.h"
#include "ops/ops.h"

namespace mhc {

using detail::gemm;

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int H) {
    const int hs = C / H, C3 = 3 * C;
    const T scale = T(1.0 / std::sqrt((double)hs));
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const T* q = qkv + (long)b * Tn * C3 + h * hs;
        T* P = att + (long)bh * Tn * Tn;
        gemm(false, true, Tn, Tn, hs, q, C3, q + C, C3, T(0), P, Tn);  // S = Q Kᵀ
        for (int t = 0; t < Tn; t++) {  // causal softmax of row t over j <= t
            T* row = P + (long)t * Tn;
            T m = row[0] * scale;
            for (int j = 1; j <= t; j++) m = std::max(m, row[j] * scale);
            double z = 0;
            for (int j = 0; j <= t; j++) z += (double)(row[j] = std::exp(row[j] * scale - m));
            const T inv = T(1.0 / z);
            for (int j = 0; j <= t; j++) row[j] *= inv;
            for (int j = t + 1; j < Tn; j++) row[j] = T(0);
        }
        gemm(false, false, Tn, hs, Tn, P, Tn, q + 2 * C, C3, T(0), out + (long)b * Tn * C + h * hs, C);
    }
}

template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, int B, int Tn,
                        int C, int H) {
    const int hs = C / H, C3 = 3 * C;
    const T scale = T(1.0 / std::sqrt((double)hs));
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const T* q = qkv + (long)b * Tn * C3 + h * hs;
        T* dq = dqkv + (long)b * Tn * C3 + h * hs;
        const T* P = att + (long)bh * Tn * Tn;
        T* dP = datt + (long)bh * Tn * Tn;
        const T* dO = dout + (long)b * Tn * C + h * hs;
        gemm(false, true, Tn, Tn, hs, dO, C, q + 2 * C, C3, T(0), dP, Tn);      // dP = dO Vᵀ
        gemm(true, false, Tn, hs, Tn, P, Tn, dO, C, T(0), dq + 2 * C, C3);      // dV = Pᵀ dO
        for (int t = 0; t < Tn; t++) {  // dS = P ⊙ (dP - <dP, P>_row) · scale
            T* d = dP + (long)t * Tn;
            const T* p = P + (long)t * Tn;
            double dot = 0;
            for (int j = 0; j <= t; j++) dot += (double)d[j] * (double)p[j];
            for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - T(dot)) * scale;
            for (int j = t + 1; j < Tn; j++) d[j] = T(0);
        }
        gemm(false, false, Tn, hs, Tn, dP, Tn, q + C, C3, T(0), dq, C3);        // dQ = dS K
        gemm(true, false, Tn, hs, Tn, dP, Tn, q, C3, T(0), dq + C, C3);         // dK = dSᵀ Q
    }
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*,
                                        int, int, int, int);
template void attention_backward<double>(double*, double*, const double*, const double*,
                                         const double*, int, int, int, int);

}  // namespace mhc
