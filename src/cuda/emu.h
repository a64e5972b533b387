// A CPU emulation of the part of CUDA and cuBLAS this engine uses, so that the .cu sources compile
// with the host compiler and their tests run on a machine without a GPU (MHC_CUDA_EMU builds, the
// emu.* tests). It checks what the hardware would refuse or leave undefined instead of tolerating
// it: launch shapes, host pointers handed to cuBLAS or to a device-side copy, a warp shuffle or
// __syncthreads that not every thread of the warp / block reaches (a deadlock on the GPU, or
// undefined), misaligned vector and tile accesses, shared memory read before the block wrote it
// (NaN bytes at every block's start), device memory nothing wrote (NaN bytes from cudaMalloc) and
// local arrays (a 0xFE byte pattern, cmake/cuda.cmake), cuBLAS's argument checks, an allocation
// or a stack reserve past the device's free memory. tests/test_emu_checks.cpp plants each hazard and checks that it is
// caught. Each emulated thread is a fiber: the threads of one block run in turn on the calling
// thread, switching only at barriers, blocks one after the other.
// Not emulated: concurrency between blocks, memory ordering, speed. One host thread at a time.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

// ---- launch shapes and thread indices ----------------------------------------------------------
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time, so a function-local static is the block's shared memory. They all sit
// in one section, which the emulation fills with NaN bytes before every block (emu.cpp): on a GPU a
// block's shared memory starts undefined, so a value read before the block wrote it poisons the
// result here instead of passing with what an earlier block left.
#define __shared__ static __attribute__((section("mhc_emu_shared")))

// ---- runtime API -------------------------------------------------------------------------------
typedef int cudaError_t;
enum : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureImplicit = 906,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
typedef struct CUstream_st* cudaStream_t;
// The one stream the engine queues its work on (cuda::stream()); the emulation runs each piece of
// work when it is queued, so there is nothing else to a stream here but stream capture (below).
#define cudaStreamPerThread ((cudaStream_t)0x2)
struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount, maxThreadsPerMultiProcessor;
    size_t totalGlobalMem;
};
// The emulated device holds 2,048 threads on its one multiprocessor, and reserves local memory for
// the kernels' stack frames as a GPU's driver does: cudaLimitStackSize bytes (1 KB at first) for
// each of them, out of its free memory; raising the limit past what is free fails.
enum cudaLimit { cudaLimitStackSize = 0 };
cudaError_t cudaDeviceGetLimit(size_t* value, cudaLimit limit);
cudaError_t cudaDeviceSetLimit(cudaLimit limit, size_t value);
// A kernel's resources as ptxas assigned them. An emulated kernel is a host function, whose frame
// the emulation cannot know: every kernel reports MHC_EMU_STACK_BYTES (a test's knob, read at each
// call; 0 when unset) as its stack frame (localSizeBytes), and nothing else.
struct cudaFuncAttributes {
    size_t localSizeBytes;
};
cudaError_t emu_func_attributes(cudaFuncAttributes* attr);
template <typename F> cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* kernel) {
    return kernel ? emu_func_attributes(attr) : cudaErrorInvalidValue;
}

cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T> cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
// Page-locked host memory: plain host memory here (refused during a capture, as an allocation).
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
const char* cudaGetErrorString(cudaError_t e);
// Stream-ordered copies and fills: checked and done at once, or recorded while the stream is
// captured (a copy from or to host memory cannot be: cudaErrorStreamCaptureUnsupported).
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
// Stream capture into a graph, as CUDA's global mode: between begin and end the launches, the
// stream's async copies and fills and cuBLAS's products are recorded, not run; a call that would
// wait for the device or allocate or free (cudaMemcpy, cudaMemset, the synchronisations, an event
// record, cudaMalloc, cudaFree) or work queued on another stream fails with
// cudaErrorStreamCaptureUnsupported / Implicit and invalidates the capture, so that its end fails
// with cudaErrorStreamCaptureInvalidated. A launched graph runs what was recorded, with the
// arguments as they were then.
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1 };
typedef struct CUgraph_st* cudaGraph_t;
typedef struct CUgraphExec_st* cudaGraphExec_t;
enum cudaStreamCaptureStatus { cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1 };
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
// Events: a host clock read when recorded (the emulation runs every launch to its end at once).
typedef struct CUevent_st* cudaEvent_t;
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
// Not yet recorded: cudaErrorInvalidResourceHandle, as CUDA.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// ---- vector types (vector_types.h): the one the kernels move 16 bytes at a time with ----------
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

// ---- bfloat16 (cuda_bf16.h): the upper half of a float, rounded to nearest even ---------------
struct __nv_bfloat16 {
    unsigned short bits;
};
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
        return {(unsigned short)((u >> 16) | 0x0040u)};  // NaN stays NaN (quiet)
    u += 0x7fffu + ((u >> 16) & 1u);                       // ties to even; overflow rounds to inf
    return {(unsigned short)(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 b) {
    const uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// ---- cuBLAS (column-major, as the library) -----------------------------------------------------
typedef struct cublasContext* cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2 } cublasMath_t;
typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;
typedef enum { CUBLAS_ATOMICS_NOT_ALLOWED = 0, CUBLAS_ATOMICS_ALLOWED = 1 } cublasAtomicsMode_t;

cublasStatus_t cublasCreate(cublasHandle_t* h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode);
cublasStatus_t cublasSetAtomicsMode(cublasHandle_t h, cublasAtomicsMode_t mode);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t stream);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void* workspace, size_t bytes);
const char* cublasGetStatusString(cublasStatus_t s);
// cublasGemmEx for the types the engine uses: A and B fp32 or bf16, C fp32 or bf16, fp32 compute
// (each product exact in fp32, fp32 accumulation, C rounded to its type).
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long strideA,
                                         const float* B, int ldb, long long strideB, const float* beta, float* C,
                                         int ldc, long long strideC, int batchCount);

// ---- device side: barriers, shuffles, launches -------------------------------------------------
namespace mhc::emu {

// MHC_EMU_ORDER=reverse (read once): blocks, warps and lanes between barriers run last first.
bool reverse_order();
void syncthreads();                  // the block barrier
uint64_t warp_exchange(uint64_t bits, int src_lane);  // every lane of the warp publishes, then reads src_lane's
// Every lane of the warp publishes `words` (at most 4), then reads all 32 lanes' into all [32][words].
void warp_gather(const uint64_t* mine, int words, uint64_t* all);
// The tensor cores' mma.sync.m16n8k16 for bf16 operands (cuda/mma.cuh has the layout): d += a·b.
void mma16816(float* d, const uint32_t* a, const uint32_t* b);

// Runs body() once per thread of every block (the kernel with its arguments bound).
void run(dim3 grid, dim3 block, const std::function<void()>& body, const char* name);

// Device work queued on `stream`: run now, or recorded while the stream is captured (emu_stream.cpp);
// false (and the capture invalidated) when it is queued on another stream during a capture.
bool enqueue(cudaStream_t stream, std::function<void()> work);
// What a call that CUDA refuses while a stream is captured answers: cudaSuccess outside a capture,
// else cudaErrorStreamCaptureUnsupported (also cudaGetLastError's next), the capture invalidated.
cudaError_t outside_capture();
void set_last_error(cudaError_t e);  // what cudaGetLastError returns next

// Arguments are converted to the kernel's parameter types once, at the launch, as CUDA does (and a
// captured launch keeps them as they were then).
template <typename... P, typename... A>
void launch(const char* name, dim3 grid, dim3 block, cudaStream_t stream, void (*kernel)(P...), A&&... args) {
    std::tuple<P...> bound(std::forward<A>(args)...);
    if (!enqueue(stream, [=] { run(grid, block, [&] { std::apply(kernel, bound); }, name); }))
        set_last_error(cudaErrorStreamCaptureImplicit);
}

// Whether [p, p + bytes) lies inside one emulated device allocation.
bool is_device(const void* p, size_t bytes);

// Stops the process with "CUDA emulation: <kernel>: <what>" (what the hardware would refuse).
[[noreturn]] void fault(const char* what);

}  // namespace mhc::emu

inline void __syncthreads() { ::mhc::emu::syncthreads(); }
using std::isfinite;  // CUDA's device isfinite(float / double), a global function there
using std::isnan;

template <typename T> T __shfl_sync_bits(T v, int src_lane) {
    static_assert(sizeof(T) <= 8);
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = ::mhc::emu::warp_exchange(bits, src_lane);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
inline unsigned emu_lane() {
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % warpSize;
}
template <typename T> T __shfl_xor_sync(unsigned /*mask: always the full warp here*/, T v, int lane_mask) {
    return __shfl_sync_bits(v, (int)(emu_lane() ^ (unsigned)lane_mask));
}
template <typename T> T __shfl_sync(unsigned, T v, int src_lane) { return __shfl_sync_bits(v, src_lane); }
// The warp's barrier: every lane's earlier writes are seen by every lane after it.
inline void __syncwarp(unsigned /*mask: always the full warp here*/ = 0xffffffffu) {
    (void)::mhc::emu::warp_exchange(0, (int)emu_lane());
}

