// The CUDA backend's runtime helpers (cuda/cuda.h).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/cuda.h"
#include "sys/process.h"

#if !MHC_CUDA_EMU
#include <dlfcn.h>
#endif

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
        const std::string blas = cuda::cublas_unavailable();
        if (!blas.empty()) return no + blas;
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

namespace {

// The cuBLAS functions the engine calls, from the library opened at first use (the emulation's
// own functions in MHC_CUDA_EMU builds).
struct Blas {
    std::string error;  // why the library could not be opened; "" when it was
    decltype(&cublasCreate) create = nullptr;
    decltype(&cublasSetMathMode) set_math_mode = nullptr;
    decltype(&cublasSetPointerMode) set_pointer_mode = nullptr;
    decltype(&cublasSetAtomicsMode) set_atomics_mode = nullptr;
    decltype(&cublasSetStream) set_stream = nullptr;
    decltype(&cublasSetWorkspace) set_workspace = nullptr;
    decltype(&cublasGetStatusString) status_string = nullptr;
    decltype(&cublasSgemm) sgemm = nullptr;
    decltype(&cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
    // cublas_v2.h overloads cublasGemmEx (an inline C++ wrapper): the exported one's type, spelled out.
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                              const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

const Blas& blas() {
    static const Blas b = [] {
        Blas t;
#if MHC_CUDA_EMU
        t.create = cublasCreate, t.set_math_mode = cublasSetMathMode, t.set_pointer_mode = cublasSetPointerMode;
        t.set_atomics_mode = cublasSetAtomicsMode, t.status_string = cublasGetStatusString;
        t.set_stream = cublasSetStream, t.set_workspace = cublasSetWorkspace;
        t.sgemm = cublasSgemm, t.sgemm_strided_batched = cublasSgemmStridedBatched, t.gemm_ex = cublasGemmEx;
#else
        // The major version this was compiled against: the calls' ABI (the library's soname).
        const std::string name = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
        void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* why = dlerror();
            t.error = "cuBLAS (" + name + ") could not be loaded: " + (why ? why : "unknown reason");
            return t;
        }
        // cublas_v2.h maps the names (cublasCreate is cublasCreate_v2): # gives the exported symbol.
#define MHC_BLAS_SYM(field, fn)                                                 \
        t.field = reinterpret_cast<decltype(t.field)>(dlsym(h, MHC_BLAS_STR(fn))); \
        if (!t.field) t.error = name + " lacks " MHC_BLAS_STR(fn);
#define MHC_BLAS_STR(x) MHC_BLAS_STR2(x)
#define MHC_BLAS_STR2(x) #x
        MHC_BLAS_SYM(create, cublasCreate)
        MHC_BLAS_SYM(set_math_mode, cublasSetMathMode)
        MHC_BLAS_SYM(set_pointer_mode, cublasSetPointerMode)
        MHC_BLAS_SYM(set_atomics_mode, cublasSetAtomicsMode)
        MHC_BLAS_SYM(set_stream, cublasSetStream)
        MHC_BLAS_SYM(set_workspace, cublasSetWorkspace)
        MHC_BLAS_SYM(status_string, cublasGetStatusString)
        MHC_BLAS_SYM(sgemm, cublasSgemm)
        MHC_BLAS_SYM(sgemm_strided_batched, cublasSgemmStridedBatched)
        MHC_BLAS_SYM(gemm_ex, cublasGemmEx)
#undef MHC_BLAS_SYM
#undef MHC_BLAS_STR
#undef MHC_BLAS_STR2
#endif
        return t;
    }();
    if (!b.error.empty()) throw std::runtime_error(b.error);
    return b;
}

}  // namespace

std::string cublas_unavailable() {
    try {
        blas();
        return "";
    } catch (const std::runtime_error& e) {
        return e.what();
    }
}

const char* cublas_status_string(cublasStatus_t s) {
    const Blas& b = blas();
    return b.status_string ? b.status_string(s) : "cuBLAS error";
}

namespace {
constexpr size_t kWorkspace = (size_t)32 << 20;  // each handle's
std::atomic<bool> made_fp32{false}, made_bf16{false};

cublasHandle_t make_handle(cublasMath_t math) {
    const Blas& b = blas();
    cublasHandle_t h = nullptr;
    MHC_CUDA_CHECK(b.create(&h));
    MHC_CUDA_CHECK(b.set_math_mode(h, math));
    MHC_CUDA_CHECK(b.set_pointer_mode(h, CUBLAS_POINTER_MODE_HOST));
    MHC_CUDA_CHECK(b.set_atomics_mode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
    // On the engine's stream, with a workspace of its own: cuBLAS then never allocates inside a
    // product, which a captured step (CUDA graphs) needs. 32 MiB, NVIDIA's advice for Hopper.
    // Allocated apart from DeviceBuffer, like the handle's own memory (device_bytes_peak).
    MHC_CUDA_CHECK(b.set_stream(h, stream()));
    void* ws = nullptr;
    if (const cudaError_t e = cudaMalloc(&ws, kWorkspace)) detail::allocation_failed(kWorkspace, e, __FILE__, __LINE__);
    MHC_CUDA_CHECK(b.set_workspace(h, ws, kWorkspace));
    (math == CUBLAS_PEDANTIC_MATH ? made_fp32 : made_bf16) = true;
    return h;  // never destroyed (nor its workspace): the driver releases them at exit
}
}  // namespace

cublasHandle_t cublas() {
    static const cublasHandle_t handle = make_handle(CUBLAS_PEDANTIC_MATH);
    return handle;
}

// Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the same buffers, operands swapped.
void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) {
    if (m <= 0 || n <= 0) return;
    MHC_CUDA_CHECK(blas().sgemm(cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                &alpha, B, ldb, A, lda, &beta, C, ldc));
}

namespace {
void gemm_ex_bf16(bool ta, bool tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B, int ldb,
                  float beta, void* C, cudaDataType ctype, int ldc) {
    static const cublasHandle_t handle = make_handle(CUBLAS_DEFAULT_MATH);
    if (m <= 0 || n <= 0) return;
    MHC_CUDA_CHECK(blas().gemm_ex(handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                  &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, ctype, ldc,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
}  // namespace

void gemm_bf16(bool ta, bool tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B, int ldb,
               float beta, float* C, int ldc) {
    gemm_ex_bf16(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, CUDA_R_32F, ldc);
}
void gemm_bf16_to16(bool ta, bool tb, int m, int n, int k, const bf16* A, int lda, const bf16* B, int ldb, float beta,
                    bf16* C, int ldc) {
    gemm_ex_bf16(ta, tb, m, n, k, 1.0f, A, lda, B, ldb, beta, C, CUDA_R_16BF, ldc);
}

void gemm_batched(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, long sA,
                  const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    MHC_CUDA_CHECK(blas().sgemm_strided_batched(cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B, ldb, sB, A, lda,
                                                sA, &beta, C, ldc, sC, batch));
}

namespace {
std::atomic<long long> bytes_now{0}, bytes_peak{0};
std::atomic<long> frees{0};
}  // namespace

void detail::note_device_bytes(long long delta) {
    if (delta < 0) frees++;
    const long long now = bytes_now += delta;
    long long peak = bytes_peak.load();
    while (now > peak && !bytes_peak.compare_exchange_weak(peak, now)) {}
}
void detail::allocation_failed(size_t bytes, cudaError_t e, const char* file, int line) {
    (void)cudaGetLastError();  // not sticky: the device goes on working
    size_t free = 0, total = 0;
    if (e != cudaErrorMemoryAllocation || cudaMemGetInfo(&free, &total) != cudaSuccess)
        fail("cudaMalloc", cudaGetErrorString(e), file, line);
    throw std::runtime_error("out of memory on the GPU (cudaMalloc): " + sys::fmt_bytes((double)bytes) +
                             " more were asked for, " + sys::fmt_bytes((double)free) + " free of " +
                             sys::fmt_bytes((double)total) + ", " + sys::fmt_bytes((double)bytes_now.load()) +
                             " held by the engine's buffers (a smaller model or batch needs less)");
}
size_t device_bytes_now() { return (size_t)bytes_now.load(); }
size_t device_bytes_peak() { return (size_t)bytes_peak.load(); }
long device_frees() { return frees.load(); }

size_t blas_workspace_to_come(bool bf16) { return (made_fp32 ? 0 : kWorkspace) + (bf16 && !made_bf16 ? kWorkspace : 0); }

size_t stack_limit() {
    size_t v = 0;
    MHC_CUDA_CHECK(cudaDeviceGetLimit(&v, cudaLimitStackSize));
    return v;
}
double stack_reserve_bytes(size_t per_thread) {
    static const double threads = [] {
        cudaDeviceProp p;
        MHC_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
        return (double)p.maxThreadsPerMultiProcessor * p.multiProcessorCount;
    }();
    return (double)per_thread * threads;
}
void reserve_stack(size_t per_thread) {
    if (per_thread <= stack_limit()) return;
    const cudaError_t e = cudaDeviceSetLimit(cudaLimitStackSize, per_thread);
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
    throw std::runtime_error("the kernels' stack frames cannot be reserved on the GPU: " + std::to_string(per_thread) +
                             " bytes for each thread it holds, " + sys::fmt_bytes(stack_reserve_bytes(per_thread)) +
                             " (cudaDeviceSetLimit: " + cudaGetErrorString(e) + ")");
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

namespace {
// Small host-to-device copies (a batch, its embedding index, AdamW's numbers) go through page-locked
// memory, from which CUDA copies without waiting for the stream (from pageable memory it may wait).
// Each takes the next piece of the ring; a piece is used again only after the stream has been
// waited for, by a download or a synchronisation, or here when the ring is full.
struct Staging {
    static constexpr size_t kBytes = (size_t)4 << 20, kLargest = kBytes / 4;
    std::mutex mu;
    char* base = nullptr;
    bool tried = false;
    size_t head = 0;
};
Staging& staging() {
    static Staging s;
    return s;
}
void staging_drained() {
    Staging& s = staging();
    std::lock_guard<std::mutex> lock(s.mu);
    s.head = 0;
}
}  // namespace

// Host to device: queued on the stream (the source may change once the call returns); device to
// host: waits for the stream. Neither can be part of a CUDA graph: a copy from page-locked memory
// would be captured reading that memory at every replay, so copies refuse a capture outright.
void copy_to_device(void* dst, const void* src, size_t bytes) {
    if (!bytes) return;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    MHC_CUDA_CHECK(cudaStreamIsCapturing(stream(), &capturing));
    if (capturing != cudaStreamCaptureStatusNone)
        fail("copy_to_device", "a copy from the host cannot be captured into a CUDA graph", __FILE__, __LINE__);
    Staging& s = staging();
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.tried) {
        s.tried = true;
        if (cudaMallocHost((void**)&s.base, Staging::kBytes) != cudaSuccess) s.base = nullptr, (void)cudaGetLastError();
    }
    if (!s.base || bytes > Staging::kLargest) {
        MHC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
        return;
    }
    if (s.head + bytes > Staging::kBytes) {
        MHC_CUDA_CHECK(cudaDeviceSynchronize());  // every earlier piece has been copied
        s.head = 0;
    }
    char* at = s.base + s.head;
    std::memcpy(at, src, bytes);
    s.head += (bytes + 255) / 256 * 256;
    MHC_CUDA_CHECK(cudaMemcpyAsync(dst, at, bytes, cudaMemcpyHostToDevice, stream()));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
    if (!bytes) return;
    MHC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
    MHC_CUDA_CHECK(cudaStreamSynchronize(stream()));
    staging_drained();
}
void copy_on_device(void* dst, const void* src, size_t bytes) {
    if (bytes) MHC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}
void fill_bytes(void* dst, int byte, size_t bytes) {
    if (bytes) MHC_CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, stream()));
}
void synchronize() {
    MHC_CUDA_CHECK(cudaDeviceSynchronize());
    staging_drained();
}

}  // namespace mhc::cuda
