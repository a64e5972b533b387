// Device-side building blocks shared by the kernels (.cu files only): the checked launch, warp and
// block sums in a fixed order, elementwise launches, and deterministic sums over rows per column.
// No float atomics anywhere: every sum has one fixed order, so a run repeats bit for bit.
#pragma once
#include "cuda/cuda.h"
#if MHC_CUDA_EMU
#include "cuda/emu_wmma.h"
#else
#include <mma.h>  // warp matrix products (nvcuda::wmma) on the tensor cores
#endif

#if MHC_CUDA_EMU
#define MHC_LAUNCH(kernel, grid, block, ...)                                                   \
    do {                                                                                       \
        ::mhc::emu::launch(#kernel, (grid), (block), ::mhc::cuda::stream(), kernel, __VA_ARGS__); \
        ::mhc::cuda::check(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__);      \
    } while (0)
#else
#define MHC_LAUNCH(kernel, grid, block, ...)                                                   \
    do {                                                                                       \
        kernel<<<(grid), (block), 0, ::mhc::cuda::stream()>>>(__VA_ARGS__);                    \
        ::mhc::cuda::check(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__);      \
    } while (0)
#endif

#define MHC_DEV __device__ __forceinline__

namespace mhc::cuda {

constexpr int kThreads = 256;   // threads per block of the elementwise and row kernels
constexpr int kRowChunk = 64;   // rows per partial sum of colsum()

MHC_DEV int imin(int a, int b) { return a < b ? a : b; }

// A stored value as fp32, and an fp32 value stored (rounded to nearest even into bf16): for kernels
// templated on their storage type.
MHC_DEV float as_float(float x) { return x; }
MHC_DEV float as_float(bf16 x) { return __bfloat162float(x); }
MHC_DEV void put(float& dst, float v) { dst = v; }
MHC_DEV void put(bf16& dst, float v) { dst = __float2bfloat16(v); }
MHC_DEV long lmin(long a, long b) { return a < b ? a : b; }

// The sizeof(T) bytes at p (aligned for T) as one access of T: 16 bf16 bytes as a uint4, a pair of
// bf16 as a uint32_t. (The emulation copies: a host compiler may assume a T* never aliases the bf16
// it points at. It refuses an address that is not a multiple of sizeof(T), as the GPU does.)
#if MHC_CUDA_EMU
inline void check_aligned(const void* p, size_t bytes) {
    if ((uintptr_t)p % bytes) ::mhc::emu::fault("a vector load or store at an address not aligned to its size");
}
#endif
template <typename T> MHC_DEV T load_as(const void* p) {
#if MHC_CUDA_EMU
    check_aligned(p, sizeof(T));
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
#else
    return *static_cast<const T*>(p);
#endif
}
template <typename T> MHC_DEV void store_as(void* p, const T& v) {
#if MHC_CUDA_EMU
    check_aligned(p, sizeof(T));
    std::memcpy(p, &v, sizeof v);
#else
    *static_cast<T*>(p) = v;
#endif
}

// Blocks for `count` items at `threads` per block (the grid-stride loops cover any excess).
inline unsigned nblocks(long count, int threads = kThreads) {
    const long b = (count + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > (1L << 20) ? (1L << 20) : b);
}

// A grid of nx × ny blocks launched as one row of nx · ny (a grid's y takes 65,535 blocks, its x
// 2^31 − 1: B · H heads or N / 64 row chunks pass 65,535 at batches a GPU holds), in the 2-D
// grid's order: block (x, y) is number y · nx + x, found again by block_x and block_y.
inline unsigned flat_grid(long nx, long ny, const char* op) {
    if (nx * ny > 2147483647L) fail(op, "more blocks than one grid takes (2^31 - 1)", __FILE__, __LINE__);
    return (unsigned)(nx * ny);
}
MHC_DEV int block_x(int nx) { return (int)(blockIdx.x % (unsigned)nx); }
MHC_DEV int block_y(int nx) { return (int)(blockIdx.x / (unsigned)nx); }

// Sum over the 32 lanes of a warp, the same tree on every lane (so every lane gets the same bits).
MHC_DEV double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
MHC_DEV float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, every thread calls it): warps, then the warps'
// sums in warp order; every thread returns the same value. sh: __shared__ double[32].
MHC_DEV double block_sum(double v, double* sh) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();  // sh may still be read by a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_sum(lane < nw ? sh[lane] : 0.0);
}
MHC_DEV float block_max(float v, float* sh) {
    v = warp_max(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_max(lane < nw ? sh[lane] : sh[0]);
}

// f(i) for every i in [0, count): f is a functor with a __device__ operator()(long).
template <typename F> __global__ void k_each(long count, F f) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < count; i += (long)gridDim.x * blockDim.x) f(i);
}
template <typename F> void each(long count, const F& f) {
    if (count > 0) MHC_LAUNCH(k_each<F>, nblocks(count), kThreads, count, f);
}

// Sums over rows per column, deterministic: rows in chunks of kRowChunk, each chunk's rows added in
// order, then the chunks in order (all in double). f(row, col) -> double gives the terms;
// done(col, sum) receives each column's sum.
template <typename F> __global__ void k_colsum_part(F f, int rows, int cols, double* part) {
    const int nx = (cols + blockDim.x - 1) / blockDim.x;  // a flat_grid of column blocks × chunks
    const int col = block_x(nx) * blockDim.x + threadIdx.x, chunk = block_y(nx);
    if (col >= cols) return;
    const int r1 = imin(rows, (chunk + 1) * kRowChunk);
    double acc = 0;
    for (int r = chunk * kRowChunk; r < r1; r++) acc += f(r, col);
    part[(long)chunk * cols + col] = acc;
}
template <typename G> __global__ void k_colsum_done(G done, int cols, int nchunks, const double* part) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    double s = 0;
    for (int c = 0; c < nchunks; c++) s += part[(long)c * cols + col];
    done(col, s);
}
// colsum's second stage on chunk sums a kernel made itself (part [nchunks, cols], each chunk's
// kRowChunk rows added in order, as k_colsum_part does).
template <typename G> void colsum_done(int cols, int nchunks, const double* part, const G& done) {
    if (cols > 0 && nchunks > 0) MHC_LAUNCH(k_colsum_done<G>, nblocks(cols, 128), 128, done, cols, nchunks, part);
}
template <typename F, typename G> void colsum(int rows, int cols, const F& f, const G& done) {
    if (rows <= 0 || cols <= 0) return;
    const int nch = (rows + kRowChunk - 1) / kRowChunk;
    double* part = workspace((size_t)nch * cols);
    MHC_LAUNCH(k_colsum_part<F>, flat_grid((cols + 127) / 128, nch, "colsum"), 128, f, rows, cols, part);
    MHC_LAUNCH(k_colsum_done<G>, nblocks(cols, 128), 128, done, cols, nch, part);
}

}  // namespace mhc::cuda
