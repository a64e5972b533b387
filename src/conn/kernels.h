// Small dense kernels for the connection projections, whose output is narrow (prow = M1 + M2 is
// 6..40 for n <= 4): BLAS packs the whole wide input for such shapes, which costs as much as the
// product itself, so these read the inputs in place. Register blocks of 8 x 16 values, which
// GCC vectorises (-O3 -march=native). Internal to the library.
#pragma once
#include <algorithm>

namespace mhc::detail {

constexpr int kColBlock = 16;  // columns per register block; narrow widths are padded to this
inline int pad_cols(int m) { return (m + kColBlock - 1) / kColBlock * kColBlock; }

// out[r][0..m) = sum_i A[r][i] * B[i][0..m) for NR rows. B [K, mp] with columns m..mp zero.
template <int NR, typename TA, typename R>
inline void narrow_nn_rows(const TA* A, long lda, int K, const R* B, int mp, int m, R* out, int ldo) {
    for (int j0 = 0; j0 < mp; j0 += kColBlock) {
        R acc[NR][kColBlock] = {};
        for (int i = 0; i < K; i++) {
            const R* b = B + (long)i * mp + j0;
            for (int r = 0; r < NR; r++) {
                const R a = R(A[r * lda + i]);
#pragma omp simd
                for (int j = 0; j < kColBlock; j++) acc[r][j] += a * b[j];
            }
        }
        const int w = std::min(kColBlock, m - j0);
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < w; j++) out[(long)r * ldo + j0 + j] = acc[r][j];
    }
}
// out [rows, ldo] (first m columns overwritten) = A [rows, K] · B [K, mp].
template <typename TA, typename R>
inline void narrow_nn(const TA* A, long lda, int rows, int K, const R* B, int mp, int m, R* out, int ldo) {
    int r = 0;  // 8 rows: 8 independent FMA chains hide the FMA latency
    for (; r + 8 <= rows; r += 8) narrow_nn_rows<8>(A + r * lda, lda, K, B, mp, m, out + (long)r * ldo, ldo);
    for (; r + 4 <= rows; r += 4) narrow_nn_rows<4>(A + r * lda, lda, K, B, mp, m, out + (long)r * ldo, ldo);
    for (; r < rows; r++) narrow_nn_rows<1>(A + r * lda, lda, K, B, mp, m, out + (long)r * ldo, ldo);
}

// E [rows, K] (overwritten) = G [rows, m] · Bᵀ where BT [m, K] holds B transposed. By column
// chunks of 64, each reused by 4 rows at a time from L1 (BT is too large to stream per row).
template <int NR, typename R>
inline void narrow_nt_rows(const R* G, int ldg, int m, const R* BT, int K, int i0, R* E) {
    constexpr int kW = 4 * kColBlock;
    R acc[NR][kW] = {};
    for (int j = 0; j < m; j++) {
        const R* b = BT + (long)j * K + i0;
        for (int r = 0; r < NR; r++) {
            const R gj = G[(long)r * ldg + j];
#pragma omp simd
            for (int i = 0; i < kW; i++) acc[r][i] += gj * b[i];
        }
    }
    for (int r = 0; r < NR; r++) std::copy(acc[r], acc[r] + kW, E + (long)r * K + i0);
}
template <typename R>
inline void narrow_nt(const R* G, int ldg, int rows, int m, const R* BT, int K, R* E) {
    constexpr int kW = 4 * kColBlock;
    int i0 = 0;
    for (; i0 + kW <= K; i0 += kW) {
        int r = 0;
        for (; r + 4 <= rows; r += 4) narrow_nt_rows<4>(G + (long)r * ldg, ldg, m, BT, K, i0, E + (long)r * K);
        for (; r < rows; r++) narrow_nt_rows<1>(G + (long)r * ldg, ldg, m, BT, K, i0, E + (long)r * K);
    }
    for (int r = 0; r < rows; r++)  // the last K % 64 columns
        for (int i = i0; i < K; i++) {
            R acc = 0;
            for (int j = 0; j < m; j++) acc += G[(long)r * ldg + j] * BT[(long)j * K + i];
            E[(long)r * K + i] = acc;
        }
}

// D [K, mp] += Aᵀ · G for A [rows, K] (lda), G [rows, mp] (columns past the real width zero).
template <int NI, typename TA, typename R>
inline void narrow_tn_cols(const TA* A, long lda, int rows, const R* G, int mp, R* D) {
    for (int j0 = 0; j0 < mp; j0 += kColBlock) {
        R acc[NI][kColBlock];
        for (int ii = 0; ii < NI; ii++)
            for (int j = 0; j < kColBlock; j++) acc[ii][j] = D[(long)ii * mp + j0 + j];
        for (int r = 0; r < rows; r++) {
            const R* g = G + (long)r * mp + j0;
            for (int ii = 0; ii < NI; ii++) {
                const R a = R(A[r * lda + ii]);
#pragma omp simd
                for (int j = 0; j < kColBlock; j++) acc[ii][j] += a * g[j];
            }
        }
        for (int ii = 0; ii < NI; ii++)
            for (int j = 0; j < kColBlock; j++) D[(long)ii * mp + j0 + j] = acc[ii][j];
    }
}
template <typename TA, typename R>
inline void narrow_tn(const TA* A, long lda, int rows, int K, const R* G, int mp, R* D) {
    int i = 0;
    for (; i + 8 <= K; i += 8) narrow_tn_cols<8>(A + i, lda, rows, G, mp, D + (long)i * mp);
    for (; i + 4 <= K; i += 4) narrow_tn_cols<4>(A + i, lda, rows, G, mp, D + (long)i * mp);
    for (; i < K; i++) narrow_tn_cols<1>(A + i, lda, rows, G, mp, D + (long)i * mp);
}

}  // namespace mhc::detail
