// Causal multi-head self-attention core, one (batch, head) pair per task, products through BLAS
// (OpenBLAS runs single-threaded inside our parallel region). Blocked causally: query rows go in
// blocks of kAttBlock, and block [r0, r1) meets only keys [0, r1), so the products above the
// diagonal blocks are never computed: (nb+1)/(2nb) of the full T×T work for nb blocks (5/8 at
// T = 256). The softmax scale rides in the GEMMs' alpha. Also its one-position twin over a KV
// cache, for inference.
#include <algorithm>
#include <cmath>

#include "ops/blas.h"
#include "ops/ops.h"
#include "ops/vmath.h"

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
        T* o = out + (long)b * Tn * C + h * hs;
        for (int r0 = 0; r0 < Tn; r0 += kAttBlock) {
            const int r1 = std::min(Tn, r0 + kAttBlock), rows = r1 - r0;
            T* Pr = P + (long)r0 * Tn;
            gemm(false, true, rows, r1, hs, scale, q + (long)r0 * C3, C3, q + C, C3, T(0), Pr, Tn);  // S = scale·Q Kᵀ
            for (int t = r0; t < r1; t++) {  // causal softmax of row t over j <= t
                T* row = P + (long)t * Tn;
                const double z = detail::exp_shift_sum(row, t + 1, detail::max_of(row, t + 1));
                const T inv = T(1.0 / z);
#pragma omp simd
                for (int j = 0; j <= t; j++) row[j] *= inv;
                std::fill(row + t + 1, row + r1, T(0));  // the diagonal block's upper part: read by P V
            }
            gemm(false, false, rows, hs, r1, T(1), Pr, Tn, q + 2 * C, C3, T(0), o + (long)r0 * C, C);  // O = P V
        }
    }
}

// Row blocks from last to first: the last one meets every key, so its dV and dK products
// overwrite (beta 0) and the earlier, shorter ones accumulate.
template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, int B, int Tn,
                        int C, int H) {
    const int hs = C / H, C3 = 3 * C;
    const T scale = T(1.0 / std::sqrt((double)hs));
    const int last = (Tn - 1) / kAttBlock * kAttBlock;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const T* q = qkv + (long)b * Tn * C3 + h * hs;
        T* dq = dqkv + (long)b * Tn * C3 + h * hs;
        const T* P = att + (long)bh * Tn * Tn;
        T* dP = datt + (long)bh * Tn * Tn;
        const T* dO = dout + (long)b * Tn * C + h * hs;
        for (int r0 = last; r0 >= 0; r0 -= kAttBlock) {
            const int r1 = std::min(Tn, r0 + kAttBlock), rows = r1 - r0;
            const T beta = r0 == last ? T(0) : T(1);
            const T* Pr = P + (long)r0 * Tn;
            T* dPr = dP + (long)r0 * Tn;
            const T* dOr = dO + (long)r0 * C;
            gemm(false, true, rows, r1, hs, T(1), dOr, C, q + 2 * C, C3, T(0), dPr, Tn);   // dP = dO Vᵀ
            gemm(true, false, r1, hs, rows, T(1), Pr, Tn, dOr, C, beta, dq + 2 * C, C3);  // dV (+)= Pᵀ dO
            // dS = P ⊙ (dP - <dP, P>_row), over the whole block row: P is 0 above the diagonal.
            for (int t = r0; t < r1; t++) {
                T* d = dP + (long)t * Tn;
                const T* p = P + (long)t * Tn;
                const T dt = T(detail::dot_d(d, p, t + 1));
#pragma omp simd
                for (int j = 0; j < r1; j++) d[j] = p[j] * (d[j] - dt);
            }
            gemm(false, false, rows, hs, r1, scale, dPr, Tn, q + C, C3, T(0), dq + (long)r0 * C3, C3);  // dQ = scale·dS K
            gemm(true, false, r1, hs, rows, scale, dPr, Tn, q + (long)r0 * C3, C3, beta, dq + C, C3);   // dK (+)= scale·dSᵀ Q
        }
    }
}

template <typename T>
void attention_cached_forward(T* out, T* att, const T* qkv, T* Kc, T* Vc, int pos, int C, int H, int Tmax) {
    std::copy(qkv + C, qkv + 2 * C, Kc + (long)pos * C);
    std::copy(qkv + 2 * C, qkv + 3 * C, Vc + (long)pos * C);
    const int hs = C / H;
    const T scale = T(1.0 / std::sqrt((double)hs));
#pragma omp parallel for schedule(static) if ((long)(pos + 1) * C >= 65536)
    for (int h = 0; h < H; h++) {
        const T* qh = qkv + h * hs;
        T* p = att + (long)h * Tmax;
        T mx = 0;
        for (int j = 0; j <= pos; j++) {
            const T* kj = Kc + (long)j * C + h * hs;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int c = 0; c < hs; c++) s += qh[c] * kj[c];
            p[j] = s;
            mx = j == 0 ? s * scale : std::max(mx, s * scale);
        }
        double z = 0;
        for (int j = 0; j <= pos; j++) z += (double)(p[j] = std::exp(p[j] * scale - mx));
        const T inv = T(1.0 / z);
        T* o = out + h * hs;
        std::fill(o, o + hs, T(0));
        for (int j = 0; j <= pos; j++) {
            const T pj = p[j] * inv;
            const T* vj = Vc + (long)j * C + h * hs;
#pragma omp simd
            for (int c = 0; c < hs; c++) o[c] += pj * vj[c];
        }
    }
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*,
                                        int, int, int, int);
template void attention_backward<double>(double*, double*, const double*, const double*,
                                         const double*, int, int, int, int);
template void attention_cached_forward<float>(float*, float*, const float*, float*, float*, int, int, int, int);
template void attention_cached_forward<double>(double*, double*, const double*, double*, double*, int, int, int,
                                               int);

}  // namespace mhc
