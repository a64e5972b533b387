// dtype bf16's own kernels against the CPU's ops in double: the classifier on bf16 logits, the
// linear layer to and from bf16 and the GELU in bf16, and the attention on the tensor cores
// (ops/attention_bf16.cu). Outputs start as NaN.

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

class CudaBf16Ops : public test::CudaTest {};

using test::bf16_rounded;
using test::from_bf16;
using test::round16;
using test::to_bf16;

// Every value within bf16's rounding (half an ulp: 2^-8 relative, 8 significant bits) of the exact
// one, plus `abs`.
void expect_rounded(const std::string& what, const VecF& got, const VecD& exact, double abs = 0) {
    ASSERT_EQ(got.size(), exact.size()) << what;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); i++)
        if (!(std::fabs(got[i] - exact[i]) <= std::ldexp(std::fabs(exact[i]), -8) * 1.001 + abs) && !bad++) first = i;
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " values off, the first [" << first << "] " << got[first] << " for "
                       << exact[first];
}

// The classifier on bf16 logits: the losses (fp32 from double sums) and their mean, the
// probabilities, and the gradient fused (forward_into) or not, each value rounded once to bf16. The
// logits are bf16 values, so the CPU's double ops on the same values are exact references. The
// kernel's exponentials are fp32 (within 2 ulp on the device): log z, so each loss, may be 2^-22
// off besides fp32's 1e-6 (lossd: the allowance).
TEST_F(CudaBf16Ops, ClassifierOnBf16Logits) {
    std::mt19937_64 rng(8);
    for (const auto& [N, V] : std::vector<std::pair<int, int>>{{1, 5}, {65, 300}, {3, 1027}, {130, 67}}) {
        const std::string at = "N=" + std::to_string(N) + " V=" + std::to_string(V);
        const VecD logits = bf16_rounded(test::normal_vec<double>((size_t)N * V, rng, 3.0));
        std::vector<int32_t> tg(N);
        for (auto& t : tg) t = (int32_t)(rng() % V);
        tg[0] = V - 1;
        VecD probs = logits, losses(N);
        const double mean = crossentropy_forward(probs.data(), losses.data(), tg.data(), N, V);
        VecD grads = probs;
        crossentropy_backward(grads.data(), tg.data(), N, V, 0.5 / N);
        auto dtg = to_dev(tg);
        cuda::DeviceBuffer<cuda::bf16> d16(logits.size());
        d16.upload(to_bf16(logits));
        auto dl = dev_nan(N);
        const double got = cuda::crossentropy_forward_bf16(d16.data(), dl.data(), dtg.data(), N, V);
        const double lossd = std::ldexp(1.0, -21);
        EXPECT_NEAR(got, mean, 1e-6 * std::fabs(mean) + lossd) << at;
        double norm = 0;
        for (const double l : losses) norm += l * l;
        check_tol("losses " + at, dl.download(), to_float(losses), 1e-6 + lossd * std::sqrt(N / norm));
        expect_rounded("probabilities " + at, from_bf16(d16), probs);
        cuda::crossentropy_backward_bf16(d16.data(), dtg.data(), N, V, 0.5 / N);
        // From rounded probabilities: two roundings.
        expect_rounded("gradient after the probabilities " + at, from_bf16(d16), grads, std::ldexp(0.5 / N, -8));
        d16.upload(to_bf16(logits));
        cuda::DeviceBuffer<double> acc(1);
        const double start = 0.25;
        acc.upload(&start, 1);
        cuda::crossentropy_forward_into_bf16(d16.data(), dl.data(), dtg.data(), N, V, acc.data(), 2.0, 0.5 / N);
        EXPECT_NEAR(acc.download()[0], start + mean / 2, 1e-6 * std::fabs(mean) + lossd) << at;
        expect_rounded("fused gradient " + at, from_bf16(d16), grads, std::ldexp(0.5 / N, -20));
    }
}

// A linear layer with its output in bf16 (dtype bf16's logits and c_fc): out16 [N, OC] = in · Wᵀ +
// bias rounded to bf16 (the bias enters rounded), the input's bf16 copy made on the way or taken as
// it is (a null input: GELU wrote it), and its backward from a bf16 output gradient: din = dout · W,
// dW += doutᵀ · in; then the GELU from and to bf16. Against the CPU's double arithmetic on the same
// bf16 values: the sums are fp32 (1e-5 relative), each bf16 result within its rounding.
TEST_F(CudaBf16Ops, ProductsAndGeluInBf16) {
    std::mt19937_64 rng(9);
    const int N = 37, IC = 40, OC = 67;
    const VecD in = test::normal_vec<double>((size_t)N * IC, rng);
    const VecD W = bf16_rounded(test::normal_vec<double>((size_t)OC * IC, rng, 0.2));
    const VecD bias = test::normal_vec<double>(OC, rng, 0.5), bias16 = bf16_rounded(bias);
    const VecD in16 = bf16_rounded(in), dout = bf16_rounded(test::normal_vec<double>((size_t)N * OC, rng));
    VecD out((size_t)N * OC), din((size_t)N * IC, 0.0), dW = test::normal_vec<double>(W.size(), rng);
    const VecD dW0 = dW;
    for (int t = 0; t < N; t++)
        for (int o = 0; o < OC; o++) {
            double acc = bias16[o];
            for (int c = 0; c < IC; c++) {
                acc += in16[(size_t)t * IC + c] * W[(size_t)o * IC + c];
                din[(size_t)t * IC + c] += dout[(size_t)t * OC + o] * W[(size_t)o * IC + c];
                dW[(size_t)o * IC + c] += dout[(size_t)t * OC + o] * in16[(size_t)t * IC + c];
            }
            out[(size_t)t * OC + o] = acc;
        }
    auto din_d = to_dev(to_float(in)), ddin = dev_nan(din.size()), ddW = to_dev(to_float(dW0));
    auto dbias = to_dev(to_float(bias));
    cuda::DeviceBuffer<cuda::bf16> W16(W.size()), in16_d(in.size()), out16(out.size()), dout16(dout.size());
    W16.upload(to_bf16(W)), dout16.upload(to_bf16(dout));
    out16.fill_bytes(0xFF), in16_d.fill_bytes(0xFF);
    cuda::matmul_forward_to16(out16.data(), in16_d.data(), din_d.data(), W16.data(), dbias.data(), N, IC, OC);
    expect_rounded("the input's bf16 copy", from_bf16(in16_d), in16);
    const VecF first = from_bf16(out16);
    expect_rounded("out16", first, out, 1e-5);
    out16.fill_bytes(0xFF);
    cuda::matmul_forward_to16(out16.data(), in16_d.data(), nullptr, W16.data(), dbias.data(), N, IC, OC);
    EXPECT_EQ(from_bf16(out16), first) << "from the bf16 input as it is";
    cuda::matmul_backward_from16(ddin.data(), ddW.data(), dout16.data(), in16_d.data(), W16.data(), N, IC, OC);
    check_tol("din", ddin.download(), to_float(din), 1e-5);
    check_tol("dW", ddW.download(), to_float(dW), 1e-5);

    // GELU: x Φ(x) from bf16 x, rounded to bf16; its backward Φ(x) + x φ(x) times dout, in fp32 (the
    // kernels' fp32 erfcf and expf are within a few ulp on the device: 4e-6), and into bf16: that
    // value rounded once.
    const VecD x = bf16_rounded(test::normal_vec<double>(1000, rng, 2.5)), g = test::normal_vec<double>(1000, rng);
    VecD y(x.size()), dx(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        const double cdf = 0.5 * std::erfc(-x[i] / std::sqrt(2.0));
        const double pdf = std::exp(-0.5 * x[i] * x[i]) / std::sqrt(2 * M_PI);
        y[i] = x[i] * cdf, dx[i] = g[i] * (cdf + x[i] * pdf);
    }
    cuda::DeviceBuffer<cuda::bf16> x16(x.size()), y16(x.size());
    x16.upload(to_bf16(x)), y16.fill_bytes(0xFF);
    cuda::gelu_forward_bf16(y16.data(), x16.data(), (long)x.size());
    expect_rounded("GELU", from_bf16(y16), y, 1e-12);
    auto dg = to_dev(to_float(g)), ddx = dev_nan(x.size());
    cuda::gelu_backward_from16(ddx.data(), x16.data(), dg.data(), (long)x.size());
    const VecF dx32 = ddx.download();
    check_tol("GELU backward", dx32, to_float(dx), 4e-6);
    cuda::DeviceBuffer<cuda::bf16> dx16(x.size());
    dx16.fill_bytes(0xFF);
    cuda::gelu_backward_from16(dx16.data(), x16.data(), dg.data(), (long)x.size());
    VecF want(dx32.size());
    for (size_t i = 0; i < want.size(); i++) want[i] = round16(dx32[i]);
    EXPECT_EQ(from_bf16(dx16), want) << "GELU backward into bf16: the fp32 values rounded";
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
    VecF out, rec, dqkv, out16, rec16, dqkv16;  // ..16: the forward and backward again into bf16
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
        cuda::DeviceBuffer<cuda::bf16> o16(G.size());
        o16.fill_bytes(0xFF), drec.fill_bytes(0xFF), dq.upload(qkv);
        cuda::attention_forward_bf16(o16.data(), drec.data(), heads.data(), dq.data(), B, Tn, C, H);
        out16 = from_bf16(o16), rec16 = drec.download();
        cuda::DeviceBuffer<cuda::bf16> d16(qkv.size());
        d16.fill_bytes(0xFF), dscratch.fill_bytes(0xFF), dout16.fill_bytes(0xFF);
        cuda::attention_backward_bf16(d16.data(), dscratch.data(), dout16.data(), dG.data(), heads.data(),
                                      drec.data(), B, Tn, C, H);
        dqkv16 = from_bf16(d16);
    }
};

// The fragment layout of cuda/mma.cuh (the PTX ISA's for mma.m16n8k16), on which the attention
// kernels compute in registers: small integers, so that every product, sum and rounding is exact
// and the products must equal the CPU's to the bit (a misplaced element gives another integer).
TEST_F(CudaBf16Ops, MmaFragmentLayout) {
    std::mt19937_64 rng(31);
    std::uniform_int_distribution<int> small(-3, 3);
    for (int rep = 0; rep < 4; rep++) {
        VecD A(16 * 16), B(16 * 8), Bt(8 * 16), B2(16 * 8);
        for (double& v : A) v = small(rng);
        for (double& v : B) v = small(rng);
        for (double& v : B2) v = small(rng);
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 8; n++) Bt[n * 16 + k] = B[k * 8 + n];
        const auto product = [](const VecD& X, const VecD& Y, int inner) {  // [16, inner] · [inner, 8]
            VecD P(16 * 8, 0.0);
            for (int r = 0; r < 16; r++)
                for (int n = 0; n < 8; n++)
                    for (int k = 0; k < inner; k++) P[r * 8 + n] += X[r * inner + k] * Y[k * 8 + n];
            return P;
        };
        const VecD AB = product(A, B, 16), AB2 = product(A, B2, 16);
        VecD S(16 * 16);  // [A·B | A·B2]: integers of at most 144 in magnitude, exact in bf16
        for (int r = 0; r < 16; r++)
            for (int n = 0; n < 8; n++) S[r * 16 + n] = AB[r * 8 + n], S[r * 16 + 8 + n] = AB2[r * 8 + n];
        const VecD SB = product(S, B, 16);
        auto dA = to_dev(to_bf16(A)), dB = to_dev(to_bf16(B)), dBt = to_dev(to_bf16(Bt)), dB2 = to_dev(to_bf16(B2));
        auto out = dev_nan(3 * 128);
        cuda::mma_layout_products(out.data(), dA.data(), dB.data(), dBt.data(), dB2.data());
        const VecF got = out.download();
        EXPECT_EQ(VecF(got.begin(), got.begin() + 128), to_float(AB)) << "A·B, B loaded as rows (load_b)";
        EXPECT_EQ(VecF(got.begin() + 128, got.begin() + 256), to_float(AB)) << "A·B, B from its transpose";
        EXPECT_EQ(VecF(got.begin() + 256, got.end()), to_float(SB)) << "[A·B | A·B2] as an A fragment, times B";
    }
}

// The attention: forward and backward, at awkward sizes: one token, three, past a tile of 16 and 32
// keys and a block of 64 rows, head sizes from 4 to 128 through each padded size (32, 64, 128),
// several heads and batch rows. The scratch starts as NaN too (every value the kernels read must be
// packed first), and the backward reads the forward's bf16 heads, not qkv (poisoned in between).
// Tolerance: the kernels round Q, K, V and dO to bf16, then P and dS. The first part is measured:
// the CPU's double attention of the bf16-rounded inputs is that far from the exact result (the
// basis). The rounding of P and dS is of the same size and adds to it, so a result may be kFactor
// times its basis from the exact one. Measured (MHC_TEST_ERRORS=1): the output's error is 0.99 to
// 1.05 times its basis, dqkv's 1.1 to 1.8 times. Except for one token: there dS = P·(dP − D) is 0
// in exact arithmetic and in the basis, but the kernel's dP comes from bf16 dO and V and its D from
// fp32 dO and O, so dS is rounding noise (4 times the basis); one to three tokens get a floor of 1e-2.
TEST_F(CudaBf16Ops, AttentionWithinBf16OfExact) {
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
        VecF rounded_out(gpu.out.size());
        for (size_t i = 0; i < rounded_out.size(); i++) rounded_out[i] = round16(gpu.out[i]);
        EXPECT_EQ(gpu.out16, rounded_out) << "the output into bf16: the fp32 output rounded, " << at;
        EXPECT_EQ(std::memcmp(gpu.rec16.data(), gpu.rec.data(), gpu.rec.size() * sizeof(float)), 0)
            << "the record with the output in bf16, " << at;
        VecF rounded_dqkv(gpu.dqkv.size());
        for (size_t i = 0; i < rounded_dqkv.size(); i++) rounded_dqkv[i] = round16(gpu.dqkv[i]);
        EXPECT_EQ(gpu.dqkv16, rounded_dqkv) << "dqkv into bf16: the fp32 dqkv rounded, " << at;
        check_basis("bf16 attention dqkv " + at, gpu.dqkv, to_float(exact.dqkv),
                    test::rel_err(rounded.dqkv, exact.dqkv), Tn <= 3 ? 1e-2 : 0, kFactor, " (basis: bf16 inputs)");
        // (the record's log-sum-exp is checked through dqkv: the backward's probabilities come from it)
    }
}

// LayerNorm into bf16 (a linear layer's bf16 input), from fp32 and from bf16 input, at awkward
// sizes, with and without bias, into NaN: each value is the fp32 output rounded once, and the
// statistics are the fp32 forward's, to the bit.
TEST_F(CudaBf16Ops, LayerNormIntoBf16IsTheFp32OutputRounded) {
    std::mt19937_64 rng(23);
    for (const auto& [N, C] : std::vector<std::pair<int, int>>{{1, 37}, {3, 768}, {65, 40}, {130, 33}})
        for (const bool bias : {false, true})
            for (const bool in16 : {false, true}) {
                const std::string at = "N=" + std::to_string(N) + " C=" + std::to_string(C) +
                                       (bias ? " bias" : "") + (in16 ? " bf16 input" : "");
                const VecD x = test::normal_vec<double>((size_t)N * C, rng, 2.0);
                auto w = to_dev(to_float(test::normal_vec<double>(C, rng))),
                     b = to_dev(to_float(test::normal_vec<double>(C, rng)));
                auto xf = to_dev(to_float(x));
                cuda::DeviceBuffer<cuda::bf16> x16 = to_dev(to_bf16(x)), o16((size_t)N * C);
                auto out = dev_nan((size_t)N * C), m = dev_nan(N), r = dev_nan(N), m16 = dev_nan(N),
                     r16 = dev_nan(N);
                o16.fill_bytes(0xFF);
                const float* bp = bias ? b.data() : nullptr;
                if (in16) {
                    cuda::layernorm_forward(out.data(), m.data(), r.data(), x16.data(), w.data(), bp, N, C);
                    cuda::layernorm_forward(o16.data(), m16.data(), r16.data(), x16.data(), w.data(), bp, N, C);
                } else {
                    cuda::layernorm_forward(out.data(), m.data(), r.data(), xf.data(), w.data(), bp, N, C);
                    cuda::layernorm_forward(o16.data(), m16.data(), r16.data(), xf.data(), w.data(), bp, N, C);
                }
                const VecF o = out.download(), got = from_bf16(o16);
                VecF want(o.size());
                for (size_t i = 0; i < o.size(); i++) want[i] = round16(o[i]);
                EXPECT_EQ(got, want) << at;
                EXPECT_EQ(m16.download(), m.download()) << "means, " << at;
                EXPECT_EQ(r16.download(), r.download()) << "rstd, " << at;
            }
}

// Two runs of the attention, the same bits: the record and dqkv (each gradient a sum in one fixed
// order, no atomics), on cases of several query and key blocks.
TEST_F(CudaBf16Ops, AttentionRunsAreBitIdentical) {
    std::mt19937_64 rng(22);
    for (const auto& [B, Tn, C, H] : std::vector<std::tuple<int, int, int, int>>{{2, 130, 64, 2}, {1, 97, 160, 2}}) {
        const VecD qkv = test::normal_vec<double>((size_t)B * Tn * 3 * C, rng, 1.5);
        const VecD G = test::normal_vec<double>((size_t)B * Tn * C, rng);
        const Gpu a(to_float(qkv), to_float(G), B, Tn, C, H), b(to_float(qkv), to_float(G), B, Tn, C, H);
        EXPECT_EQ(std::memcmp(a.rec.data(), b.rec.data(), a.rec.size() * sizeof(float)), 0) << "T=" << Tn;
        EXPECT_EQ(std::memcmp(a.dqkv.data(), b.dqkv.data(), a.dqkv.size() * sizeof(float)), 0) << "T=" << Tn;
    }
}

}  // namespace
