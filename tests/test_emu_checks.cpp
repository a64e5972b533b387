// The CPU emulation of CUDA (src/cuda/emu.h) is the oracle's stage for every GPU test on a machine
// without a GPU, so what it promises to catch is tested here, each hazard planted on purpose: a
// missing barrier between warps or lanes (wrong values in one order of the emulation or the other),
// shared memory read before the block wrote it and device memory that nothing wrote (NaN, as a
// GPU's leftover bits may be), local arrays read where nothing wrote (a byte pattern), a block that
// reads what another block of the launch writes (the two orders disagree), what the hardware
// refuses (a barrier or shuffle not every thread reaches, misaligned vector and tile accesses,
// impossible launch shapes), and, instrumented, an access past a buffer's end. Built into
// mhc_tests_emu only: on a GPU these would be real bugs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/device.cuh"
#include "cuda_util.h"
#include "ops/ops_cuda.h"

// Defined when AddressSanitizer is linked in (scripts/test_sanitized.sh's build, whose library and
// emulated kernels are instrumented; this file itself is not).
extern "C" void __asan_init() __attribute__((weak));

using namespace mhc;
using mhc::cuda::bf16;

namespace {

using mhc::emu::reverse_order;

// Two warps: thread t writes s[t], then reads the other warp's s[63 - t]; the barrier between is
// optional.
__global__ void k_swap_warps(float* out, bool barrier) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = (float)t;
    if (barrier) __syncthreads();
    out[t] = s[63 - t];
}

// One warp: lane l writes s[l], then reads its neighbour's s[l ^ 1]; the __syncwarp between is
// optional.
__global__ void k_swap_lanes(float* out, bool sync) {
    __shared__ float s[32];
    const int l = threadIdx.x;
    s[l] = (float)l;
    if (sync) __syncwarp();
    out[l] = s[l ^ 1];
}

// Block 0 writes s[0]; every block reads it after the barrier.
__global__ void k_shared_leftover(float* out) {
    __shared__ float s[1];
    if (blockIdx.x == 0 && threadIdx.x == 0) s[0] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

// Block 1 reads what block 0 writes in the same launch (no order between blocks on a GPU).
__global__ void k_block_to_block(float* x) {
    if (threadIdx.x == 0) {
        if (blockIdx.x == 0) x[0] = 1.0f;
        else x[1] = x[0];
    }
}

__global__ void k_half_barrier(float* out) {
    if (threadIdx.x < 32) __syncthreads();
    out[threadIdx.x] = 1.0f;
}

__global__ void k_half_shuffle(float* out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

__global__ void k_load16(uint4* out, const bf16* p) {
    if (threadIdx.x == 0) out[0] = cuda::load_as<uint4>(p);
}

__global__ void k_wmma_tile(float* out, const bf16* p, unsigned ld) {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, bf16, nvcuda::wmma::row_major> a;
    nvcuda::wmma::load_matrix_sync(a, p, ld);
    out[threadIdx.x] = 0.0f;
}

// Element `at` of a local array whose first `n` elements are written (as a kernel's n x n matrix
// in an array sized for n = 8).
__global__ void k_unwritten_local(float* out, int n, int at) {
    float v[64];
    for (int i = 0; i < n; i++) v[i] = 1.0f;
    out[threadIdx.x] = v[at];
}

__global__ void k_fill(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f;
}

class CudaEmu : public test::CudaTest {};

std::vector<float> swap_warps(bool barrier) {
    auto out = test::dev_nan(64);
    MHC_LAUNCH(k_swap_warps, 1, 64, out.data(), barrier);
    return out.download();
}

TEST_F(CudaEmu, MissingBarrierBetweenWarpsGivesWrongValues) {
    const std::vector<float> with = swap_warps(true);
    for (int t = 0; t < 64; t++) EXPECT_EQ(with[t], (float)(63 - t)) << t;
    // Without the barrier, the warp that runs first (warp 0, or warp 1 in reverse order) reads the
    // other's values before they are written: the poison the block started with.
    const std::vector<float> without = swap_warps(false);
    const int first = reverse_order() ? 32 : 0;
    for (int t = 0; t < 64; t++) {
        if (t >= first && t < first + 32) EXPECT_TRUE(std::isnan(without[t])) << t << ": " << without[t];
        else EXPECT_EQ(without[t], (float)(63 - t)) << t;
    }
}

TEST_F(CudaEmu, MissingSyncwarpBetweenLanesGivesWrongValues) {
    for (bool sync : {true, false}) {
        auto out = test::dev_nan(32);
        MHC_LAUNCH(k_swap_lanes, 1, 32, out.data(), sync);
        const std::vector<float> v = out.download();
        // Lanes run one after another between warp barriers: a lane reads its neighbour's value
        // before the neighbour wrote it when the neighbour runs later (odd lanes in reverse order).
        for (int l = 0; l < 32; l++) {
            const bool reads_early = !sync && (l % 2 == 1) == reverse_order();
            if (reads_early) EXPECT_TRUE(std::isnan(v[l])) << "sync " << sync << " lane " << l << ": " << v[l];
            else EXPECT_EQ(v[l], (float)(l ^ 1)) << "sync " << sync << " lane " << l;
        }
    }
}

TEST_F(CudaEmu, SharedMemoryStartsUndefinedInEveryBlock) {
    for (int rep = 0; rep < 2; rep++) {  // the second launch finds no value of the first either
        auto out = test::dev_nan(3);
        MHC_LAUNCH(k_shared_leftover, 3, 32, out.data());
        const std::vector<float> v = out.download();
        EXPECT_EQ(v[0], 1.0f);
        EXPECT_TRUE(std::isnan(v[1])) << v[1];
        EXPECT_TRUE(std::isnan(v[2])) << v[2];
    }
}

TEST_F(CudaEmu, DeviceMemoryStartsUndefined) {
    for (size_t n : {1, 1000, 1 << 20}) {  // small and large (the host's fresh pages are zeros)
        const std::vector<float> v = cuda::DeviceBuffer<float>(n).download();
        EXPECT_TRUE(std::isnan(v.front()) && std::isnan(v.back())) << n << ": " << v.front() << " " << v.back();
    }
}

TEST_F(CudaEmu, LocalArraysStartAsAPattern) {
#if !MHC_EMU_PATTERN_INIT
    GTEST_SKIP() << "the compiler has no -ftrivial-auto-var-init=pattern (GCC 12 has)";
#endif
    auto out = test::dev_nan(32);
    MHC_LAUNCH(k_unwritten_local, 1, 32, out.data(), 16, 20);
    // Every byte 0xFE (GCC's -ftrivial-auto-var-init=pattern, cmake/cuda.cmake), not the host
    // stack's leftovers, which are often a plausible value. (Only where the value stays in memory:
    // a scalar the optimiser keeps in a register may still be folded.)
    const std::vector<float> v = out.download();
    uint32_t bits;
    std::memcpy(&bits, &v[0], 4);
    EXPECT_EQ(bits, 0xFEFEFEFEu) << v[0];
    for (int l = 1; l < 32; l++) EXPECT_EQ(std::memcmp(&v[l], &v[0], 4), 0) << l;
}

TEST_F(CudaEmu, TheTwoOrdersRunTheBlocksOppositeWays) {
    auto x = test::to_dev(std::vector<float>{0.0f, 0.0f});
    MHC_LAUNCH(k_block_to_block, 2, 32, x.data());
    // Block 1 sees block 0's write in the default order and not in the reverse one, so a dependence
    // between blocks fails in one of the two runs of the kernel suites (emu_reverse_order).
    EXPECT_EQ(x.download()[1], reverse_order() ? 0.0f : 1.0f);
}

TEST_F(CudaEmu, ImpossibleLaunchShapesAreOneLineErrors) {
    auto out = test::dev_nan(4096);
    MHC_LAUNCH(k_fill, 2, 1024, out.data(), 2048);  // the largest block
    EXPECT_EQ(out.download()[2047], 2.0f);
    const std::pair<unsigned, unsigned> shapes[] = {{1, 1025}, {0, 32}, {1, 0}};  // grid x block
    for (const auto& [grid, block] : shapes) {
        try {
            MHC_LAUNCH(k_fill, grid, block, out.data(), 1);
            ADD_FAILURE() << "grid " << grid << " x block " << block << " launched";
        } catch (const std::runtime_error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("launch of k_fill"), std::string::npos) << what;
            EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        }
        EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the error was reported once";
    }
}

using CudaEmuDeathTest = CudaEmu;

TEST_F(CudaEmuDeathTest, BarrierThatSomeThreadsNeverReachStops) {
    auto out = test::dev_nan(64);
    EXPECT_DEATH(MHC_LAUNCH(k_half_barrier, 1, 64, out.data()),
                 "CUDA emulation: k_half_barrier: __syncthreads\\(\\) that not every thread of the block reaches "
                 "\\(32 of 64\\)");
}

TEST_F(CudaEmuDeathTest, ShuffleThatSomeLanesNeverReachStops) {
    auto out = test::dev_nan(32);
    EXPECT_DEATH(MHC_LAUNCH(k_half_shuffle, 1, 32, out.data()),
                 "CUDA emulation: k_half_shuffle: a warp shuffle that some lanes of the warp never reach");
}

TEST_F(CudaEmuDeathTest, MisalignedVectorLoadStops) {
    cuda::DeviceBuffer<bf16> in(64);
    in.fill_bytes(0);
    cuda::DeviceBuffer<uint4> out(1);
    MHC_LAUNCH(k_load16, 1, 32, out.data(), in.data() + 8);  // 16 bytes in: aligned
    EXPECT_DEATH(MHC_LAUNCH(k_load16, 1, 32, out.data(), in.data() + 4),
                 "CUDA emulation: k_load16: a vector load or store at an address not aligned to its size");
}

TEST_F(CudaEmuDeathTest, MisalignedTileStops) {
    cuda::DeviceBuffer<bf16> in(16 * 32);
    in.fill_bytes(0);
    auto out = test::dev_nan(32);
    MHC_LAUNCH(k_wmma_tile, 1, 32, out.data(), in.data() + 16, 32u);  // 32 bytes in, rows of 64 bytes
    EXPECT_DEATH(MHC_LAUNCH(k_wmma_tile, 1, 32, out.data(), in.data() + 8, 32u),
                 "CUDA emulation: k_wmma_tile: wmma: a tile pointer not aligned to 32 bytes");
    EXPECT_DEATH(MHC_LAUNCH(k_wmma_tile, 1, 32, out.data(), in.data(), 20u),
                 "CUDA emulation: k_wmma_tile: wmma: a leading dimension that is not whole 16-byte rows");
}

TEST_F(CudaEmuDeathTest, AccessPastABufferIsAnAddressSanitizerReport) {
    if (!&__asan_init) GTEST_SKIP() << "needs the sanitizer build (scripts/test_sanitized.sh)";
    cuda::DeviceBuffer<float> in(100), out(101);
    in.fill_bytes(0);
    cuda::gelu_forward(out.data(), in.data(), 100);  // in bounds
    // One value past the end of `in`: inside the allocation's alignment padding, poisoned.
    EXPECT_DEATH(cuda::gelu_forward(out.data(), in.data(), 101), "AddressSanitizer: use-after-poison");
}

}  // namespace
