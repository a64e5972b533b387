// The CUDA backend's runtime (cuda/cuda.h): the device check (which needs no GPU), errors, device
// buffers, CUDA graphs, row-major GEMMs through cuBLAS against the CPU's BLAS.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>

#include "cuda/graph.h"
#include "cuda_util.h"
#include "ops/blas.h"

using namespace mhc;
using test::CudaTest;

namespace {

// Runs everywhere: with no usable GPU the answer is false with a one-line reason, not a crash.
TEST(CudaRuntime, AvailableAnswersWithoutCrashing) {
    std::string why1, why2;
    const bool a = cuda_available(&why1), b = cuda_available(&why2);
    EXPECT_EQ(a, b);
    EXPECT_EQ(why1, why2);
    EXPECT_EQ(cuda_available(), a);
    if (a) {
        EXPECT_TRUE(why1.empty()) << why1;
    } else {
        EXPECT_EQ(why1.rfind("no CUDA device: ", 0), 0u) << why1;
        EXPECT_GT(why1.size(), std::string("no CUDA device: ").size());
        EXPECT_EQ(why1.find('\n'), std::string::npos) << why1;
        std::printf("cuda_available: %s\n", why1.c_str());
    }
}

class CudaRuntimeGpu : public CudaTest {};

TEST_F(CudaRuntimeGpu, ErrorsAreOneLineNamingTheCall) {
    try {
        cuda::DeviceBuffer<float> huge((size_t)1 << 50);  // 4 PiB
        FAIL() << "a 4 PiB allocation succeeded";
    } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("cudaMalloc"), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        // out of memory: the sizes that say why, the request's and the device's
        EXPECT_NE(what.find("out of memory on the GPU"), std::string::npos) << what;
        EXPECT_NE(what.find("4.19e+06 GiB more were asked for"), std::string::npos) << what;
        size_t free = 0, total = 0;
        ASSERT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
        char of[64];
        std::snprintf(of, sizeof of, " of %.3g GiB, ", total / (1024.0 * 1024 * 1024));
        EXPECT_NE(what.find(of), std::string::npos) << what << " (the device's total, " << of << ")";
    }
    std::string why;
    EXPECT_TRUE(cuda_available(&why)) << "a failed call must not poison later ones";
    cuda::DeviceBuffer<float> ok(16);  // and the device still works
    ok.fill_bytes(0);
    EXPECT_EQ(ok.download(), std::vector<float>(16, 0.0f));
}

// The stack frames' reserve (cuda.h) is taken from the free memory when asked, not at a later
// launch; a request beyond the device is one line and leaves it working. The limit is put back.
TEST_F(CudaRuntimeGpu, StackReserveIsTakenAtOnceOrRefusedInOneLine) {
    const size_t before = cuda::stack_limit();
    size_t free0 = 0, free1 = 0, total = 0;
    ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
    cuda::reserve_stack(before / 2);  // never lowers it
    EXPECT_EQ(cuda::stack_limit(), before);
    cuda::reserve_stack(before + 4096);
    const size_t now = cuda::stack_limit();
    EXPECT_GE(now, before + 4096);
    ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
    const double grown = cuda::stack_reserve_bytes(now) - cuda::stack_reserve_bytes(before);
    EXPECT_GE((double)free0 - (double)free1, 0.9 * grown) << "free " << free0 << " -> " << free1;
    try {
        cuda::reserve_stack((size_t)(2.0 * free1 / cuda::stack_reserve_bytes(1)) + 1);
        FAIL() << "a stack reserve of twice the free memory succeeded";
    } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("stack frames cannot be reserved"), std::string::npos) << what;
        EXPECT_NE(what.find("cudaDeviceSetLimit"), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
    EXPECT_EQ(cuda::stack_limit(), now);
    ASSERT_EQ(cudaDeviceSetLimit(cudaLimitStackSize, before), cudaSuccess);
    cuda::DeviceBuffer<float> ok(16);  // the device still works
    ok.fill_bytes(0);
    EXPECT_EQ(ok.download(), std::vector<float>(16, 0.0f));
}

TEST_F(CudaRuntimeGpu, DeviceBufferRoundTripAndMove) {
    std::vector<float> v = {1, 2, 3, 4, 5};
    cuda::DeviceBuffer<float> a = test::to_dev(v);
    EXPECT_EQ(a.size(), 5u);
    EXPECT_EQ(a.download(), v);
    cuda::DeviceBuffer<float> b = std::move(a);
    EXPECT_TRUE(a.empty());
    EXPECT_EQ(b.download(), v);
    float two[2];
    b.download(two, 2, 3);
    EXPECT_EQ(two[0], 4.0f);
    EXPECT_EQ(two[1], 5.0f);
    EXPECT_THROW(b.download(two, 2, 4), std::runtime_error);
    EXPECT_THROW(b.upload(two, 2, 4), std::runtime_error);
}

// A CUDA graph (cuda/graph.h) replays what it captured, reading the device memory of each launch
// (the copy's source changed between launches), and is captured again when its key changes or a
// buffer is freed; work that waits for the device or copies from the host cannot be captured:
// run() says why, queues nothing, and leaves no error behind.
TEST_F(CudaRuntimeGpu, GraphsReplayAndRecaptureAndRefuseWhatCannotBeCaptured) {
    cuda::DeviceBuffer<float> a = test::to_dev(std::vector<float>{1, 2, 3, 4}), b(4);
    int captures = 0;
    const auto work = [&] {
        captures++;
        cuda::fill_bytes(b.data(), 0, 4 * sizeof(float));
        cuda::copy_on_device(b.data() + 1, a.data(), 3 * sizeof(float));
    };
    cuda::Graph g;
    std::string why;
    ASSERT_TRUE(g.run({1, 2}, work, &why)) << why;
    EXPECT_EQ(b.download(), (std::vector<float>{0, 1, 2, 3}));
    a.upload(std::vector<float>{5, 6, 7, 8});
    ASSERT_TRUE(g.run({1, 2}, work, &why)) << why;
    EXPECT_EQ(captures, 1) << "the same key replays";
    EXPECT_EQ(b.download(), (std::vector<float>{0, 5, 6, 7}));
    ASSERT_TRUE(g.run({1, 3}, work, &why)) << why;
    EXPECT_EQ(captures, 2) << "another key captures again";
    { cuda::DeviceBuffer<float> freed(8); }
    ASSERT_TRUE(g.run({1, 3}, work, &why)) << why;
    EXPECT_EQ(captures, 3) << "a freed buffer captures again";
    ASSERT_TRUE(g.run({1, 3}, work, &why)) << why;
    EXPECT_EQ(captures, 3);

    cuda::Graph refused;
    std::vector<float> host(4, -1.0f);
    EXPECT_FALSE(refused.run({1}, [&] { b.download(host.data(), 4); }, &why));
    EXPECT_FALSE(why.empty());
    EXPECT_EQ(why.find('\n'), std::string::npos) << why;
    EXPECT_EQ(host, std::vector<float>(4, -1.0f)) << "nothing ran";
    // A copy from the host neither (a graph would read the host memory again at each replay).
    EXPECT_FALSE(refused.run({1}, [&] { b.upload(host.data(), 4); }, &why));
    EXPECT_NE(why.find("copy_to_device"), std::string::npos) << why;
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    cuda::copy_on_device(b.data(), a.data(), 4 * sizeof(float));  // the stream works as before
    EXPECT_EQ(b.download(), (std::vector<float>{5, 6, 7, 8}));
}

// Every transposition, awkward sizes, a leading dimension larger than the width, beta 0 over NaN
// (C not read) and beta 1 (accumulated), and the strided batch: against OpenBLAS in double.
TEST_F(CudaRuntimeGpu, GemmRowMajorMatchesCpu) {
    std::mt19937_64 rng(11);
    for (const bool ta : {false, true})
        for (const bool tb : {false, true})
            for (const auto& [m, n, k] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {3, 5, 7}, {65, 13, 40}}) {
                const int lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 3, ldc = n + 1, batch = 3;
                const long sA = (long)(ta ? k : m) * lda + 5, sB = (long)(tb ? n : k) * ldb + 7, sC = (long)m * ldc + 1;
                std::vector<float> A = test::normal_vec<float>(sA * batch, rng), B = test::normal_vec<float>(sB * batch, rng);
                std::vector<float> C0 = test::normal_vec<float>(sC * batch, rng);
                for (const float beta : {0.0f, 1.0f}) {
                    std::vector<double> ref = test::to_double(C0);
                    std::vector<float> cpu = C0;
                    for (int b = 0; b < batch; b++) {
                        std::vector<double> Ad = test::to_double(A), Bd = test::to_double(B);
                        detail::gemm(ta, tb, m, n, k, 0.5, Ad.data() + b * sA, lda, Bd.data() + b * sB, ldb,
                                     (double)beta, ref.data() + b * sC, ldc);
                        detail::gemm(ta, tb, m, n, k, 0.5f, A.data() + b * sA, lda, B.data() + b * sB, ldb, beta,
                                     cpu.data() + b * sC, ldc);
                    }
                    auto dA = test::to_dev(A), dB = test::to_dev(B);
                    auto dC = test::to_dev(C0);
                    if (beta == 0.0f) {  // C must not be read: poison what the product overwrites
                        std::vector<float> poisoned = C0;
                        for (int b = 0; b < batch; b++)
                            for (int i = 0; i < m; i++)
                                for (int j = 0; j < n; j++) poisoned[b * sC + (long)i * ldc + j] = NAN;
                        dC.upload(poisoned);
                    }
                    cuda::gemm_batched(ta, tb, m, n, k, 0.5f, dA.data(), lda, sA, dB.data(), ldb, sB, beta,
                                       dC.data(), ldc, sC, batch);
                    const std::string what = std::string("batched ta=") + (ta ? "T" : "N") + " tb=" + (tb ? "T" : "N") +
                                             " " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                                             std::to_string(k) + " beta=" + std::to_string(beta);
                    check(what, dC.download(), cpu, ref);
                    auto dC1 = test::to_dev(C0);
                    cuda::gemm(ta, tb, m, n, k, 0.5f, dA.data(), lda, dB.data(), ldb, beta, dC1.data(), ldc);
                    std::vector<float> one_cpu = C0;
                    std::vector<double> one_ref = test::to_double(C0);
                    std::copy(cpu.begin(), cpu.begin() + sC, one_cpu.begin());
                    std::copy(ref.begin(), ref.begin() + sC, one_ref.begin());
                    check("single " + what, dC1.download(), one_cpu, one_ref);
                }
            }
}

// bfloat16 rounding (host side, the device's conversion): to nearest, ties to even, NaN stays NaN,
// overflow to infinity; going back is exact.
TEST(CudaBf16, RoundsToNearestEven) {
    auto bits = [](float f) { return __bfloat162float(__float2bfloat16(f)); };
    EXPECT_EQ(bits(1.0f), 1.0f);
    EXPECT_EQ(bits(1.0f + 1.0f / 256), 1.0f);              // a tie: to the even neighbour, 1
    EXPECT_EQ(bits(1.0f + 3.0f / 256), 1.0f + 4.0f / 256);  // a tie: to the even neighbour, up
    EXPECT_EQ(bits(1.0f + 1.0f / 256 + 1.0f / 65536), 1.0f + 2.0f / 256);  // past the tie: up
    EXPECT_EQ(bits(-3.0f), -3.0f);
    EXPECT_TRUE(std::isnan(bits(NAN)));
    EXPECT_EQ(bits(INFINITY), INFINITY);
    EXPECT_EQ(bits(3.4e38f), INFINITY);                     // past bf16's largest finite value
    std::mt19937_64 rng(5);
    for (float x : test::normal_vec<float>(1000, rng, 100.0)) {
        const float r = bits(x);
        EXPECT_LE(std::fabs(r - x), std::fabs(x) / 256) << x;  // half a unit in the last of 8 bits
        EXPECT_EQ(bits(r), r);                               // a bf16 value is its own rounding
    }
}

// gemm_bf16: bf16 operands, fp32 sums, against the fp32 GEMM of the same (rounded) values in
// double. Each product is exact in fp32, so only the sums' rounding differs.
TEST_F(CudaRuntimeGpu, GemmBf16MatchesTheRoundedFp32Product) {
    std::mt19937_64 rng(12);
    for (const bool ta : {false, true})
        for (const bool tb : {false, true})
            for (const auto& [m, n, k] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {3, 5, 7}, {65, 13, 40}}) {
                const int lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 3, ldc = n + 1;
                const long nA = (long)(ta ? k : m) * lda, nB = (long)(tb ? n : k) * ldb, nC = (long)m * ldc;
                std::vector<float> A = test::normal_vec<float>(nA, rng), B = test::normal_vec<float>(nB, rng);
                std::vector<cuda::bf16> A16, B16;
                for (float& a : A) A16.push_back(__float2bfloat16(a)), a = __bfloat162float(A16.back());
                for (float& b : B) B16.push_back(__float2bfloat16(b)), b = __bfloat162float(B16.back());
                const std::vector<float> C0 = test::normal_vec<float>(nC, rng);
                for (const float beta : {0.0f, 1.0f}) {
                    std::vector<double> ref = test::to_double(C0), Ad = test::to_double(A), Bd = test::to_double(B);
                    std::vector<float> cpu = C0;
                    detail::gemm(ta, tb, m, n, k, 0.5, Ad.data(), lda, Bd.data(), ldb, (double)beta, ref.data(), ldc);
                    detail::gemm(ta, tb, m, n, k, 0.5f, A.data(), lda, B.data(), ldb, beta, cpu.data(), ldc);
                    cuda::DeviceBuffer<cuda::bf16> dA, dB;
                    dA.upload(A16);
                    dB.upload(B16);
                    std::vector<float> start = C0;
                    if (beta == 0.0f)  // C must not be read
                        for (int i = 0; i < m; i++)
                            for (int j = 0; j < n; j++) start[(long)i * ldc + j] = NAN;
                    auto dC = test::to_dev(start);
                    cuda::gemm_bf16(ta, tb, m, n, k, 0.5f, dA.data(), lda, dB.data(), ldb, beta, dC.data(), ldc);
                    check(std::string("bf16 ta=") + (ta ? "T" : "N") + " tb=" + (tb ? "T" : "N") + " " +
                              std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                              " beta=" + std::to_string(beta),
                          dC.download(), cpu, ref);
                }
            }
}

}  // namespace
