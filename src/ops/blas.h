// Row-major GEMM for float and double through OpenBLAS: C = alpha * op(A) * op(B) + beta * C,
// op(A) m x k, op(B) k x n. Transposes are BLAS's own (no copies here). Internal to the library.
#pragma once
#include <cblas.h>

namespace mhc::detail {

inline void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, alpha, A, lda, B, ldb, beta, C, ldc);
}
// alpha = 1
template <typename T>
inline void gemm(bool ta, bool tb, int m, int n, int k, const T* A, int lda, const T* B, int ldb,
                 T beta, T* C, int ldc) {
    gemm(ta, tb, m, n, k, T(1), A, lda, B, ldb, beta, C, ldc);
}

}  // namespace mhc::detail
