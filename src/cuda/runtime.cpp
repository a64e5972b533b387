// The CUDA backend's runtime helpers (cuda/cuda.h).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/cuda.h"

namespace mhc {

bool cuda_available(std::string* reason) {
    static const std::string why = []() -> std::string {
        const std::string no = "no CUDA device: ";
        int count = 0;
        cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();  // clear it: later calls must not see this error
            return no + cudaGetErrorString(e);
        }
        if (count < 1) return no + "none found";
        if ((e = cudaSetDevice(0)) != cudaSuccess) return no + "cudaSetDevice(0): " + cudaGetErrorString(e);
        cudaDeviceProp p;
        if ((e = cudaGetDeviceProperties(&p, 0)) != cudaSuccess)
            return no + "cudaGetDeviceProperties: " + cudaGetErrorString(e);
        if (p.major < 9)
            return no + p.name + " has compute capability " + std::to_string(p.major) + "." + std::to_string(p.minor) +
                   "; this build runs on 9.0 (Hopper) or newer";
        if ((e = cuda::detail::probe_kernel()) != cudaSuccess)
            return no + "a test kernel failed on " + p.name + ": " + cudaGetErrorString(e);
        return "";
    }();
    if (reason) *reason = why;
    return why.empty();
}

}  // namespace mhc

namespace mhc::cuda {

void fail(const char* call, const char* what, const char* file, int line) {
    std::string f = file;
    const size_t src = f.rfind("/src/");
    if (src != std::string::npos) f = f.substr(src + 1);  // src/ops/dense.cu, not the build's absolute path
    throw std::runtime_error(std::string(call) + " failed: " + what + " (" + f + ":" + std::to_string(line) + ")");
}

cublasHandle_t cublas() {
    static const cublasHandle_t handle = [] {
        cublasHandle_t h = nullptr;
        MHC_CUDA_CHECK(cublasCreate(&h));
        MHC_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
        MHC_CUDA_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
        MHC_CUDA_CHECK(cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
        return h;  // never destroyed: the driver releases it at exit
    }();
    return handle;
}

// Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the same buffers, operands swapped.
void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) {
    if (m <= 0 || n <= 0) return;
    MHC_CUDA_CHECK(cublasSgemm(cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                               &alpha, B, ldb, A, lda, &beta, C, ldc));
}

void gemm_batched(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, long sA,
                  const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    MHC_CUDA_CHECK(cublasSgemmStridedBatched(cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             n, m, k, &alpha, B, ldb, sB, A, lda, sA, &beta, C, ldc, sC, batch));
}

double* workspace(size_t count) {
    static DeviceBuffer<double> ws;
    if (ws.size() < count) {
        const size_t grown = std::max(count, 2 * ws.size() + 4096);
        synchronize();  // no kernel may still use the old buffer
        ws = DeviceBuffer<double>();
        ws.resize(grown);
    }
    return ws.data();
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
    if (bytes) MHC_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
    if (bytes) MHC_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void copy_on_device(void* dst, const void* src, size_t bytes) {
    if (bytes) MHC_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}
void fill_bytes(void* dst, int byte, size_t bytes) {
    if (bytes) MHC_CUDA_CHECK(cudaMemset(dst, byte, bytes));
}
void synchronize() { MHC_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace mhc::cuda
