// The CUDA backend's runtime helpers (host side): error checks, the device check, device buffers,
// the cuBLAS handle and row-major GEMMs through it, a scratch workspace. Everything is fp32 on the
// device with TF32 off, on one stream (the default one), without atomics, so that a run is
// bit-identical when repeated and equal to the CPU's to fp32 rounding (docs/GPU.md).
// MHC_CUDA_EMU builds use the CPU emulation of cuda/emu.h instead of the CUDA toolkit.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#if MHC_CUDA_EMU
#include "cuda/emu.h"
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

namespace mhc {

// Whether a usable CUDA device is there. If not, *reason (when given) gets one line starting
// "no CUDA device: " (e.g. "no CUDA device: CUDA driver version is insufficient for CUDA runtime
// version"). Never throws; asks once per process.
bool cuda_available(std::string* reason = nullptr);

}  // namespace mhc

namespace mhc::cuda {

// Throws std::runtime_error("<call> failed: <what> (<file>:<line>)"), one line.
[[noreturn]] void fail(const char* call, const char* what, const char* file, int line);
inline void check(cudaError_t e, const char* call, const char* file, int line) {
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  // the runtime keeps a failed call's error for the next check: clear it
        fail(call, cudaGetErrorString(e), file, line);
    }
}
const char* cublas_status_string(cublasStatus_t s);
inline void check(cublasStatus_t s, const char* call, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) fail(call, cublas_status_string(s), file, line);
}
#define MHC_CUDA_CHECK(call) ::mhc::cuda::check((call), #call, __FILE__, __LINE__)

// The process's cuBLAS handle: CUBLAS_PEDANTIC_MATH (fp32 products, never TF32), host pointer
// mode, atomics not allowed (deterministic results). cuBLAS is opened (dlopen) when first needed,
// not linked: its libraries (cuBLAS and cuBLASLt, some 700 MB) would otherwise be mapped and
// relocated at every start of mhc, GPU or not (measured: 0.45 s and 226 MB for `mhc --version`).
cublasHandle_t cublas();
// "" when cuBLAS can be opened here, else one line saying why (cuda_available() reports it).
std::string cublas_unavailable();

// Row-major GEMM on device pointers with detail::gemm's meaning (ops/blas.h):
// C [m, n] = alpha · op(A) · op(B) + beta · C, op(A) m x k, op(B) k x n. beta 0: C is not read.
void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc);
// bfloat16 on the device (cuda_bf16.h; the emulation's in cuda/emu.h).
using bf16 = __nv_bfloat16;
// gemm's meaning with bf16 operands and an fp32 result: each product exact in fp32, the sums in
// fp32 (cublasGemmEx, compute 32F). On its own handle, which lets cuBLAS use the tensor cores
// (the fp32 one's pedantic mode is for fp32's exactness); atomics off there too.
void gemm_bf16(bool ta, bool tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B, int ldb,
               float beta, float* C, int ldc);
// C = op(A) · op(B) + beta · C rounded to bf16 (the sums in fp32; beta 0: C is not read).
void gemm_bf16_to16(bool ta, bool tb, int m, int n, int k, const bf16* A, int lda, const bf16* B, int ldb, float beta,
                    bf16* C, int ldc);
// `batch` of them, matrix b at A + b·sA, B + b·sB, C + b·sC.
void gemm_batched(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, long sA,
                  const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int batch);

// The stream every kernel, copy, fill, product and event of the engine is queued on: the calling
// thread's default stream, which (unlike the legacy one) can be captured into a CUDA graph, and
// which still waits for and is waited for by anything on the legacy stream.
inline cudaStream_t stream() { return cudaStreamPerThread; }

// `count` doubles of device scratch for the reductions' partial sums, valid until the next call.
// Launches are ordered on the one stream, so consecutive users may share it; it only grows (after
// a device synchronisation, so no kernel still reads the old one).
double* workspace(size_t count);

// Copies between host and device (count elements), checked, on stream(): to the device queued
// (small ones through a ring of page-locked memory, so that they need not wait for the stream; the
// engine's CUDA work comes from one thread), to the host waited for. Host copies refuse a stream
// capture (a graph would replay them from wherever the source was).
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_on_device(void* dst, const void* src, size_t bytes);
void fill_bytes(void* dst, int byte, size_t bytes);
void synchronize();

// Bytes of device memory the process holds in DeviceBuffers (every allocation of the engine): now,
// and the most at any moment since the start (mhc bench's peak GPU memory). cuBLAS's own
// workspace and the CUDA context are not in it.
size_t device_bytes_now();
size_t device_bytes_peak();
// How many DeviceBuffers have been freed since the start (each reallocation frees): a CUDA graph
// captured before the count last changed may name freed memory and must be captured again.
long device_frees();

// Local memory for the kernels' stack frames, outside the DeviceBuffers: the driver reserves
// cudaLimitStackSize bytes for every thread the device can hold at once (threads per
// multiprocessor × multiprocessors), and raises the limit for good when a kernel with a larger
// frame is first launched (ptxas's frames: scripts/kernel_resources.sh).
size_t stack_limit();                           // bytes a thread now
double stack_reserve_bytes(size_t per_thread);  // the reserve at that limit
// Raises the limit to `per_thread` now if it is below, so that the reserve is taken before the
// engine allocates (and out of the free memory a check then reads), never in the middle of a step,
// where it would wait for the device. One line (std::runtime_error) when the device lacks the memory.
void reserve_stack(size_t per_thread);
// Device memory the cuBLAS handles not made yet will allocate for their workspaces (32 MiB each):
// the fp32 handle, and with bf16 the tensor-core one.
size_t blas_workspace_to_come(bool bf16);
namespace detail {
void note_device_bytes(long long delta);  // DeviceBuffer's allocations (+) and frees (-)
// A failed cudaMalloc of `bytes` (a DeviceBuffer's, a cuBLAS workspace), one line: out of memory
// with the sizes that say why (the device's free and total memory, what the engine's buffers
// hold), else the runtime's error.
[[noreturn]] void allocation_failed(size_t bytes, cudaError_t e, const char* file, int line);
}

// A device allocation of `size()` elements; move-only, freed on destruction.
template <typename T> class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t n) { resize(n); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) release(), p_ = o.p_, n_ = o.n_, o.p_ = nullptr, o.n_ = 0;
        return *this;
    }
    ~DeviceBuffer() { release(); }

    // Reallocates (contents lost) unless the size is already n.
    void resize(size_t n) {
        if (n == n_) return;
        release();
        if (!n) return;
        void* p = nullptr;
        if (const cudaError_t e = cudaMalloc(&p, n * sizeof(T)))
            detail::allocation_failed(n * sizeof(T), e, __FILE__, __LINE__);
        p_ = (T*)p, n_ = n;
        detail::note_device_bytes((long long)(n * sizeof(T)));
    }
    T* data() { return p_; }
    const T* data() const { return p_; }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }

    void upload(const T* host, size_t count, size_t at = 0) {
        if (at + count > n_) fail("DeviceBuffer::upload", "past the end of the buffer", __FILE__, __LINE__);
        copy_to_device(p_ + at, host, count * sizeof(T));
    }
    void download(T* host, size_t count, size_t at = 0) const {
        if (at + count > n_) fail("DeviceBuffer::download", "past the end of the buffer", __FILE__, __LINE__);
        copy_to_host(host, p_ + at, count * sizeof(T));
    }
    void upload(const std::vector<T>& v) {
        resize(v.size());
        upload(v.data(), v.size());
    }
    std::vector<T> download() const {
        std::vector<T> v(n_);
        download(v.data(), n_);
        return v;
    }
    void fill_bytes(int byte) { cuda::fill_bytes(p_, byte, n_ * sizeof(T)); }

private:
    void release() noexcept {
        if (p_) detail::note_device_bytes(-(long long)(n_ * sizeof(T)));
        if (p_ && cudaFree(p_) != cudaSuccess) (void)cudaGetLastError();  // a destructor must not throw
        p_ = nullptr, n_ = 0;
    }
    T* p_ = nullptr;
    size_t n_ = 0;
};

namespace detail {
cudaError_t probe_kernel();  // launches a one-thread kernel and waits for it (cuda/probe.cu)
}

// The tensor-core fragment layout the attention kernels assume (cuda/mma.cuh), as products: from
// A [16, 16], B [16, 8], its transpose Bt [8, 16] and B2 [16, 8] (bf16, row-major, on the device),
// one warp writes out [3][16][8]: A·B with B loaded as rows (load_b); A·B from Bt (load_b_rows);
// [A·B | A·B2] rounded into an A fragment (a_from_d), times B.
void mma_layout_products(float* out, const bf16* A, const bf16* B, const bf16* Bt, const bf16* B2);

}  // namespace mhc::cuda
