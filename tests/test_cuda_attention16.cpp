// dtype bf16's attention on the tensor cores (ops/attention_bf16.cu) against the CPU's attention in
// double, forward and backward, at awkward sizes: one token, three, past a tile of 16 and 32 keys
// and a block of 64 rows, head sizes from 4 to 128 through each padded size (32, 64, 128), several
// heads and batch rows. Outputs start as NaN, and so does the scratch (every value the kernels read
// must be packed first).
//
// Tolerance: the kernels round Q, K, V and dO to bf16, then P and dS. The first part is measured: the
// CPU's double attention of the bf16-rounded inputs is that far from the exact result (the basis).
// The rounding of P and dS is of the same size and adds to it, so a result may be kFactor times its
// basis from the exact one. Measured (MHC_TEST_ERRORS=1): the output's error is 0.99 to 1.05 times
// its basis, dqkv's 1.1 to 1.8 times. Except for one token: there dS = P·(dP − D) is 0 in exact
// arithmetic and in the basis, but the kernel's dP comes from bf16 dO and V and its D from fp32 dO
// and O, so dS is rounding noise (4 times the basis); one to three tokens get a floor of 1e-2.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <tuple>

#include "cuda_util.h"
#include "ops/ops.h"
#include "ops/ops_cuda.h"

using namespace mhc;
using test::dev_nan;
using test::to_dev;
using test::to_float;

namespace {

using VecD = std::vector<double>;
using VecF = std::vector<float>;

constexpr double kFactor = 3;

class CudaBf16Attention : public test::CudaTest {};

VecD bf16_rounded(const VecD& v) {
    VecD r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = __bfloat162float(__float2bfloat16((float)v[i]));
    return r;
}

// The CPU's attention in double: out [B, T, C] and, from the output gradient G, dqkv [B, T, 3C].
struct Exact {
    VecD out, dqkv;
    Exact(const VecD& qkv, const VecD& G, int B, int Tn, int C, int H)
        : out((size_t)B * Tn * C), dqkv(qkv.size()) {
        VecD att((size_t)B * H * Tn * Tn, 0.0), datt(att.size(), 0.0);
        attention_forward(out.data(), att.data(), qkv.data(), B, Tn, C, H);
        attention_backward(dqkv.data(), datt.data(), G.data(), qkv.data(), att.data(), B, Tn, C, H);
    }
};

// One forward and backward on the GPU from fresh NaN buffers: the output, the record, dqkv.
struct Gpu {
    VecF out, rec, dqkv;
    Gpu(const VecF& qkv, const VecF& G, int B, int Tn, int C, int H) {
        auto dq = to_dev(qkv), dG = to_dev(G);
        auto dout = dev_nan(G.size()), drec = dev_nan(cuda::attention_record_size(B, Tn, C, H));
        auto ddqkv = dev_nan(qkv.size()), dscratch = dev_nan(cuda::attention_scratch_size(B, Tn, H));
        cuda::DeviceBuffer<cuda::bf16> heads(cuda::attention_heads16_size(B, Tn, C, H)),
            dout16(cuda::attention_dout16_size(B, Tn, C, H));
        heads.fill_bytes(0xFF), dout16.fill_bytes(0xFF);  // bf16 NaN
        cuda::attention_forward_bf16(dout.data(), drec.data(), heads.data(), dq.data(), B, Tn, C, H);
        dq.fill_bytes(0xFF);  // the backward reads the forward's bf16 heads, not qkv
        cuda::attention_backward_bf16(ddqkv.data(), dscratch.data(), dout16.data(), dG.data(), heads.data(),
                                      drec.data(), B, Tn, C, H);
        out = dout.download(), rec = drec.download(), dqkv = ddqkv.download();
    }
};

TEST_F(CudaBf16Attention, WithinBf16OfExact) {
    std::mt19937_64 rng(21);
    for (const auto& [B, Tn, C, H] : std::vector<std::tuple<int, int, int, int>>{
             {2, 1, 12, 3}, {1, 3, 12, 3}, {2, 65, 40, 4}, {1, 130, 24, 2}, {1, 33, 37, 1}, {2, 41, 128, 2},
             {1, 70, 96, 1}, {1, 9, 128, 1}, {2, 64, 32, 2}, {1, 97, 160, 2}, {1, 150, 64, 1}}) {
        const std::string at = "B=" + std::to_string(B) + " T=" + std::to_string(Tn) + " C=" + std::to_string(C) +
                               " H=" + std::to_string(H);
        const VecD qkv = test::normal_vec<double>((size_t)B * Tn * 3 * C, rng, 1.5);
        const VecD G = test::normal_vec<double>((size_t)B * Tn * C, rng);
        const Exact exact(qkv, G, B, Tn, C, H), rounded(bf16_rounded(qkv), bf16_rounded(G), B, Tn, C, H);
        const Gpu gpu(to_float(qkv), to_float(G), B, Tn, C, H);
        const double out_err = check_basis("bf16 attention out " + at, gpu.out, to_float(exact.out),
                                           test::rel_err(rounded.out, exact.out), 0, kFactor, " (basis: bf16 inputs)");
        EXPECT_GT(out_err, 0.0) << at << ": the exact output (did the products round?)";
        const size_t nlse = (size_t)B * H * Tn;
        EXPECT_EQ(VecF(gpu.rec.begin() + nlse, gpu.rec.end()), gpu.out) << "the record's copy of the output, " << at;
        check_basis("bf16 attention dqkv " + at, gpu.dqkv, to_float(exact.dqkv),
                    test::rel_err(rounded.dqkv, exact.dqkv), Tn <= 3 ? 1e-2 : 0, kFactor, " (basis: bf16 inputs)");
        // (the record's log-sum-exp is checked through dqkv: the backward's probabilities come from it)
        const Gpu again(to_float(qkv), to_float(G), B, Tn, C, H);
        EXPECT_EQ(std::memcmp(gpu.rec.data(), again.rec.data(), gpu.rec.size() * sizeof(float)), 0)
            << "two runs, two records: " << at;
        EXPECT_EQ(std::memcmp(gpu.dqkv.data(), again.dqkv.data(), gpu.dqkv.size() * sizeof(float)), 0)
            << "two runs, two dqkv: " << at;
    }
}

}  // namespace
