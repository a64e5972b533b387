// Row-major GEMM for float and double through OpenBLAS: C = op(A) * op(B) + beta * C,
// op(A) m x k, op(B) k x n. Internal to the library.
#pragma once
#include <cblas.h>

namespace mhc::detail {

inline void gemm(bool ta, bool tb, int m, int n, int k, const float* A, int lda, const float* B,
                 int ldb, float beta, float* C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, const double* A, int lda, const double* B,
                 int ldb, double beta, double* C, int ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace mhc::detail
