// The CPU emulation of cuBLAS (cuda/emu.h): a handle's settings, and the GEMMs as plain loops in
// fp32 (fp32 or bf16 operands) with the library's argument checks, run in stream order.
#include <algorithm>
#include <cmath>

#include "cuda/emu.h"

using mhc::emu::is_device;

struct cublasContext {
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
    cudaStream_t stream = nullptr;  // the legacy default stream until cublasSetStream
    void* workspace = nullptr;      // cublasSetWorkspace's, held as the library holds it
};

cublasStatus_t cublasCreate(cublasHandle_t* h) {
    *h = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    return mode == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasSetAtomicsMode(cublasHandle_t h, cublasAtomicsMode_t) {
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t stream) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void* workspace, size_t bytes) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && !is_device(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
    h->workspace = workspace;
    return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
        case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unknown error";
}

namespace {

// cuBLAS's checks of a GEMM's arguments (column-major: op(A) m x k, op(B) k x n, C m x n).
bool gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc) {
    if (m < 0 || n < 0 || k < 0) return false;
    if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k)) return false;
    if (ldb < std::max(1, tb == CUBLAS_OP_N ? k : n)) return false;
    return ldc >= std::max(1, m);
}

// The extent in elements of a column-major operand: rows x cols with leading dimension ld.
size_t extent(int rows, int cols, int ld) { return rows && cols ? (size_t)ld * (cols - 1) + rows : 0; }

// Element i of an fp32 or bf16 operand, as a float.
struct Operand {
    const void* p;
    bool bf16;
    float operator[](size_t i) const {
        return bf16 ? __bfloat162float(((const __nv_bfloat16*)p)[i]) : ((const float*)p)[i];
    }
};

void gemm1(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, Operand A, int lda,
           Operand B, int ldb, float beta, void* C, bool c_bf16, int ldc) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0;  // fp32 accumulation, like the library's SGEMM
            for (int l = 0; l < k; l++) {
                const float a = ta == CUBLAS_OP_N ? A[i + (size_t)l * lda] : A[l + (size_t)i * lda];
                const float b = tb == CUBLAS_OP_N ? B[l + (size_t)j * ldb] : B[j + (size_t)l * ldb];
                acc = std::fma(a, b, acc);
            }
            const size_t at = i + (size_t)j * ldc;
            const float old = beta == 0.0f ? 0.0f : Operand{C, c_bf16}[at];  // beta 0: C is not read (may be NaN)
            const float c = beta == 0.0f ? alpha * acc : alpha * acc + beta * old;
            if (c_bf16) ((__nv_bfloat16*)C)[at] = __float2bfloat16(c);
            else ((float*)C)[at] = c;
        }
}

}  // namespace

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long strideA,
                                         const float* B, int ldb, long long strideB, const float* beta, float* C,
                                         int ldc, long long strideC, int batchCount) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc) || batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (is_device(alpha, 4) || is_device(beta, 4))
        mhc::emu::fault("cublas: alpha/beta must be host pointers (pointer mode host)");
    for (int b = 0; b < batchCount; b++) {
        const float* Ab = A + b * strideA;
        const float* Bb = B + b * strideB;
        float* Cb = C + b * strideC;
        const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
        const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
        if ((m && n && k && (!is_device(Ab, 4 * extent(ar, ac, lda)) || !is_device(Bb, 4 * extent(br, bc, ldb)))) ||
            (m && n && !is_device(Cb, 4 * extent(m, n, ldc))))
            mhc::emu::fault("cublas: a matrix outside device memory (host pointer, or ld/stride past the allocation)");
        const float al = *alpha, be = *beta;  // read at the call (pointer mode host), as the library
        if (!mhc::emu::enqueue(h->stream, [=] {
                gemm1(ta, tb, m, n, k, al, {Ab, false}, lda, {Bb, false}, ldb, be, Cb, false, ldc);
            }))
            return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    auto known = [](cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; };
    if (!known(Atype) || !known(Btype) || !known(Ctype) || Atype != Btype || compute != CUBLAS_COMPUTE_32F ||
        algo != CUBLAS_GEMM_DEFAULT)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (is_device(alpha, 4) || is_device(beta, 4))
        mhc::emu::fault("cublas: alpha/beta must be host pointers (pointer mode host)");
    const size_t ea = Atype == CUDA_R_16BF ? 2 : 4, ec = Ctype == CUDA_R_16BF ? 2 : 4;
    const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    if ((m && n && k && (!is_device(A, ea * extent(ar, ac, lda)) || !is_device(B, ea * extent(br, bc, ldb)))) ||
        (m && n && !is_device(C, ec * extent(m, n, ldc))))
        mhc::emu::fault("cublas: a matrix outside device memory (host pointer, or ld past the allocation)");
    const float al = *(const float*)alpha, be = *(const float*)beta;
    const Operand a{A, Atype == CUDA_R_16BF}, b{B, Btype == CUDA_R_16BF};
    const bool c16 = Ctype == CUDA_R_16BF;
    if (!mhc::emu::enqueue(h->stream, [=] { gemm1(ta, tb, m, n, k, al, a, lda, b, ldb, be, C, c16, ldc); }))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
