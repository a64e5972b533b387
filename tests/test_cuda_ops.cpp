// Every transformer op on the GPU (ops/ops_cuda.h) against its CPU twin (ops/ops.h) on fresh random
// inputs with fixed seeds, forward and backward, at awkward sizes (one token, three, 65 = one past a
// block of 64, widths that are no multiple of 32, batch 1). Outputs that an op overwrites start as
// NaN on the device; outputs that accumulate start from the same random values on both sides.
// Tolerances: tests/cuda_util.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>

#include "cuda_util.h"
#include "ops/ops.h"
#include "ops/ops_cuda.h"

using namespace mhc;
using test::CudaTest;
using test::dev_nan;
using test::to_dev;
using test::to_double;
using test::to_float;

namespace {

using VecF = std::vector<float>;
using VecD = std::vector<double>;

class CudaOps : public CudaTest {};

std::string shape(std::initializer_list<std::pair<const char*, long>> dims) {
    std::string s;
    for (auto [k, v] : dims) {
        if (!s.empty()) s += ' ';
        s.append(k).append("=").append(std::to_string(v));
    }
    return s;
}

TEST_F(CudaOps, EncoderForwardBackward) {
    std::mt19937_64 rng(1);
    for (const auto& [B, Tn, C, n] : std::vector<std::tuple<int, int, int, int>>{
             {1, 1, 7, 1}, {2, 3, 40, 3}, {2, 65, 37, 8}, {1, 65, 33, 4}}) {
        const std::string at = shape({{"B", B}, {"T", Tn}, {"C", C}, {"n", n}});
        const int V = 11, N = B * Tn;
        std::vector<int32_t> idx(N);
        for (auto& i : idx) i = (int32_t)(rng() % 5) * 2;  // repeats, and ids that never occur
        const VecD wte = test::normal_vec<double>((size_t)V * C, rng), wpe = test::normal_vec<double>((size_t)Tn * C, rng);
        VecD Xd((size_t)N * n * C);
        VecF Xf(Xd.size());
        encoder_forward(Xd.data(), idx.data(), wte.data(), wpe.data(), B, Tn, C, n);
        encoder_forward(Xf.data(), idx.data(), to_float(wte).data(), to_float(wpe).data(), B, Tn, C, n);
        auto dX = dev_nan(Xf.size());
        auto didx = to_dev(idx);
        auto dwte = to_dev(to_float(wte)), dwpe = to_dev(to_float(wpe));
        cuda::encoder_forward(dX.data(), didx.data(), dwte.data(), dwpe.data(), B, Tn, C, n);
        check("encoder X " + at, dX.download(), Xf, Xd);

        const VecD G = test::normal_vec<double>(Xd.size(), rng);
        VecD gwte = test::normal_vec<double>(wte.size(), rng), gwpe = test::normal_vec<double>(wpe.size(), rng);  // += onto these
        VecF gwte_f = to_float(gwte), gwpe_f = to_float(gwpe);
        auto d_gwte = to_dev(gwte_f), d_gwpe = to_dev(gwpe_f), dG = to_dev(to_float(G));
        encoder_backward(gwte.data(), gwpe.data(), G.data(), idx.data(), B, Tn, C, n);
        encoder_backward(gwte_f.data(), gwpe_f.data(), to_float(G).data(), idx.data(), B, Tn, C, n);
        cuda::EncoderIndex ix;
        cuda::encoder_index_build(ix, idx.data(), N);
        cuda::encoder_backward(d_gwte.data(), d_gwpe.data(), dG.data(), ix, B, Tn, C, n);
        check("encoder dwte " + at, d_gwte.download(), gwte_f, gwte);
        check("encoder dwpe " + at, d_gwpe.download(), gwpe_f, gwpe);
    }
}

TEST_F(CudaOps, LayerNormForwardBackward) {
    std::mt19937_64 rng(2);
    for (const auto& [N, C, bias] : std::vector<std::tuple<int, int, bool>>{
             {1, 7, true}, {3, 37, false}, {65, 96, true}, {260, 40, false}, {5, 1, true}}) {
        const std::string at = shape({{"N", N}, {"C", C}, {"bias", bias}});
        const VecD x = test::normal_vec<double>((size_t)N * C, rng, 2.0), w = test::normal_vec<double>(C, rng),
                   b = test::normal_vec<double>(C, rng);
        VecD outd(x.size()), md(N), rd(N);
        VecF outf(x.size()), mf(N), rf(N);
        layernorm_forward(outd.data(), md.data(), rd.data(), x.data(), w.data(), bias ? b.data() : nullptr, N, C);
        layernorm_forward(outf.data(), mf.data(), rf.data(), to_float(x).data(), to_float(w).data(),
                          bias ? to_float(b).data() : nullptr, N, C);
        auto dx = to_dev(to_float(x)), dw = to_dev(to_float(w)), db = to_dev(to_float(b));
        auto dout = dev_nan(x.size()), dm = dev_nan(N), dr = dev_nan(N);
        cuda::layernorm_forward(dout.data(), dm.data(), dr.data(), dx.data(), dw.data(), bias ? db.data() : nullptr,
                                N, C);
        check("layernorm out " + at, dout.download(), outf, outd);
        check("layernorm mean " + at, dm.download(), mf, md);
        check("layernorm rstd " + at, dr.download(), rf, rd);

        const VecD G = test::normal_vec<double>(x.size(), rng);
        VecD gw = test::normal_vec<double>(C, rng), gb = test::normal_vec<double>(C, rng), gx(x.size());
        VecF gw_f = to_float(gw), gb_f = to_float(gb), gx_f(x.size());
        auto d_gw = to_dev(gw_f), d_gb = to_dev(gb_f), d_gx = dev_nan(x.size()), dG = to_dev(to_float(G));
        layernorm_backward(gx.data(), gw.data(), bias ? gb.data() : nullptr, G.data(), x.data(), w.data(), md.data(),
                           rd.data(), N, C);
        layernorm_backward(gx_f.data(), gw_f.data(), bias ? gb_f.data() : nullptr, to_float(G).data(),
                           to_float(x).data(), to_float(w).data(), mf.data(), rf.data(), N, C);
        cuda::layernorm_backward(d_gx.data(), d_gw.data(), bias ? d_gb.data() : nullptr, dG.data(), dx.data(),
                                 dw.data(), dm.data(), dr.data(), N, C);
        check("layernorm din " + at, d_gx.download(), gx_f, gx);
        check("layernorm dw " + at, d_gw.download(), gw_f, gw);
        check("layernorm db " + at, d_gb.download(), gb_f, gb);
    }
}

TEST_F(CudaOps, MatmulForwardBackward) {
    std::mt19937_64 rng(3);
    for (const auto& [N, IC, OC, bias] : std::vector<std::tuple<int, int, int, bool>>{
             {1, 7, 1, true}, {3, 40, 13, false}, {65, 37, 97, true}, {130, 96, 288, false}, {2, 1, 5, true}}) {
        const std::string at = shape({{"N", N}, {"IC", IC}, {"OC", OC}, {"bias", bias}});
        const VecD x = test::normal_vec<double>((size_t)N * IC, rng), W = test::normal_vec<double>((size_t)OC * IC, rng),
                   b = test::normal_vec<double>(OC, rng);
        VecD outd((size_t)N * OC);
        VecF outf(outd.size());
        matmul_forward(outd.data(), x.data(), W.data(), bias ? b.data() : nullptr, N, IC, OC);
        matmul_forward(outf.data(), to_float(x).data(), to_float(W).data(), bias ? to_float(b).data() : nullptr, N, IC,
                       OC);
        auto dx = to_dev(to_float(x)), dW = to_dev(to_float(W)), db = to_dev(to_float(b)), dout = dev_nan(outd.size());
        cuda::matmul_forward(dout.data(), dx.data(), dW.data(), bias ? db.data() : nullptr, N, IC, OC);
        check("matmul out " + at, dout.download(), outf, outd);

        const VecD G = test::normal_vec<double>(outd.size(), rng);
        VecD gW = test::normal_vec<double>(W.size(), rng), gb = test::normal_vec<double>(OC, rng), gx(x.size());
        VecF gW_f = to_float(gW), gb_f = to_float(gb), gx_f(x.size());
        auto d_gW = to_dev(gW_f), d_gb = to_dev(gb_f), d_gx = dev_nan(x.size()), dG = to_dev(to_float(G));
        matmul_backward(gx.data(), gW.data(), bias ? gb.data() : nullptr, G.data(), x.data(), W.data(), N, IC, OC);
        matmul_backward(gx_f.data(), gW_f.data(), bias ? gb_f.data() : nullptr, to_float(G).data(), to_float(x).data(),
                        to_float(W).data(), N, IC, OC);
        cuda::matmul_backward(d_gx.data(), d_gW.data(), bias ? d_gb.data() : nullptr, dG.data(), dx.data(), dW.data(),
                              N, IC, OC);
        check("matmul din " + at, d_gx.download(), gx_f, gx);
        check("matmul dW " + at, d_gW.download(), gW_f, gW);
        check("matmul dbias " + at, d_gb.download(), gb_f, gb);
    }
}

// The bf16 linear layer against the fp32 op on the same values rounded to bf16 (inputs, weights and
// the output gradient, as the bf16 op rounds them): then each product is exact in both, and what
// differs is only the order of the fp32 sums, so the fp32 tolerances hold. The rounding itself is
// checked apart: the bf16 copies are the nearest bf16 values.
TEST_F(CudaOps, MatmulBf16ForwardBackward) {
    std::mt19937_64 rng(13);
    auto round16 = [](VecD v) {
        for (double& x : v) x = __bfloat162float(__float2bfloat16((float)x));
        return v;
    };
    for (const auto& [N, IC, OC, bias] : std::vector<std::tuple<int, int, int, bool>>{
             {1, 7, 1, true}, {3, 40, 13, false}, {65, 37, 97, true}, {2, 1, 5, true}}) {
        const std::string at = shape({{"N", N}, {"IC", IC}, {"OC", OC}, {"bias", bias}});
        const VecD x = test::normal_vec<double>((size_t)N * IC, rng), W = test::normal_vec<double>((size_t)OC * IC, rng),
                   b = test::normal_vec<double>(OC, rng);
        const VecD x16 = round16(x), W16 = round16(W);
        VecD outd((size_t)N * OC);
        VecF outf(outd.size());
        matmul_forward(outd.data(), x16.data(), W16.data(), bias ? b.data() : nullptr, N, IC, OC);
        matmul_forward(outf.data(), to_float(x16).data(), to_float(W16).data(), bias ? to_float(b).data() : nullptr, N,
                       IC, OC);
        auto dx = to_dev(to_float(x)), dWf = to_dev(to_float(W)), db = to_dev(to_float(b)), dout = dev_nan(outd.size());
        cuda::DeviceBuffer<cuda::bf16> dW16(W.size()), dx16(x.size()), dG16(outd.size());
        cuda::to_bf16(dW16.data(), dWf.data(), (long)W.size());
        cuda::matmul_forward_bf16(dout.data(), dx16.data(), dx.data(), dW16.data(), bias ? db.data() : nullptr, N, IC, OC);
        check("matmul bf16 out " + at, dout.download(), outf, outd);
        std::vector<cuda::bf16> got16(x.size());
        dx16.download(got16.data(), got16.size());
        bool nearest = true;
        for (size_t i = 0; i < x.size(); i++) nearest = nearest && __bfloat162float(got16[i]) == (float)x16[i];
        EXPECT_TRUE(nearest) << "the input's bf16 copy is its rounding to nearest even, " << at;

        const VecD G = test::normal_vec<double>(outd.size(), rng), G16 = round16(G);
        VecD gW = test::normal_vec<double>(W.size(), rng), gb = test::normal_vec<double>(OC, rng), gx(x.size());
        VecF gW_f = to_float(gW), gb_f = to_float(gb), gx_f(x.size());
        auto d_gW = to_dev(gW_f), d_gb = to_dev(gb_f), d_gx = dev_nan(x.size()), dG = to_dev(to_float(G));
        // din and dW take the gradient's bf16 rounding; dbias sums it unrounded (its own call below).
        matmul_backward(gx.data(), gW.data(), (double*)nullptr, G16.data(), x16.data(), W16.data(), N, IC, OC);
        matmul_backward(gx_f.data(), gW_f.data(), (float*)nullptr, to_float(G16).data(), to_float(x16).data(),
                        to_float(W16).data(), N, IC, OC);
        if (bias) {  // din and dW of this call are thrown away
            VecD sink_x(x.size()), sink_W(W.size());
            VecF sink_xf(x.size()), sink_Wf(W.size());
            matmul_backward(sink_x.data(), sink_W.data(), gb.data(), G.data(), x.data(), W.data(), N, IC, OC);
            matmul_backward(sink_xf.data(), sink_Wf.data(), gb_f.data(), to_float(G).data(), to_float(x).data(),
                            to_float(W).data(), N, IC, OC);
        }
        cuda::matmul_backward_bf16(d_gx.data(), d_gW.data(), bias ? d_gb.data() : nullptr, dG16.data(), dG.data(),
                                   dx16.data(), dW16.data(), N, IC, OC);
        check("matmul bf16 din " + at, d_gx.download(), gx_f, gx);
        check("matmul bf16 dW " + at, d_gW.download(), gW_f, gW);
        check("matmul bf16 dbias " + at, d_gb.download(), gb_f, gb);
    }
}

// Exact GELU over [-12, 12] and its far tails, elementwise against erf in double.
TEST_F(CudaOps, GeluForwardBackward) {
    VecD x;
    for (int i = 0; i <= 24000; i++) x.push_back((double)(-12.0f + 1e-3f * (float)i));
    for (double v : {-1e4, -100.0, -30.0, 0.0, -0.0, 1e-30, 30.0, 100.0, 1e4}) x.push_back(v);
    const long N = (long)x.size();
    std::mt19937_64 rng(4);
    const VecD G = test::normal_vec<double>(N, rng);
    VecD outd(N), dind(N);
    VecF outf(N), dinf(N);
    gelu_forward(outd.data(), x.data(), N);
    gelu_forward(outf.data(), to_float(x).data(), N);
    gelu_backward(dind.data(), x.data(), G.data(), N);
    gelu_backward(dinf.data(), to_float(x).data(), to_float(G).data(), N);
    auto dx = to_dev(to_float(x)), dG = to_dev(to_float(G)), dout = dev_nan(N), ddin = dev_nan(N);
    cuda::gelu_forward(dout.data(), dx.data(), N);
    cuda::gelu_backward(ddin.data(), dx.data(), dG.data(), N);
    const VecF out = dout.download(), din = ddin.download();
    check("gelu out", out, outf, outd);
    check("gelu din", din, dinf, dind);
    double worst = 0;  // and elementwise: within fp32 rounding of the exact value
    for (long i = 0; i < N; i++)
        worst = std::max(worst, std::fabs(out[i] - outd[i]) / std::max(1.0, std::fabs(x[i])));
    EXPECT_LT(worst, 2e-7);
}

// The log-sum-exp of each query's scaled causal scores [B, H, T], from qkv [B, T, 3C], in T's
// arithmetic: what the GPU's attention keeps for its backward.
template <typename T> std::vector<T> causal_lse(const std::vector<T>& qkv, int B, int Tn, int C, int H) {
    const int hs = C / H;
    const T scale = (T)(1.0 / std::sqrt((double)hs));
    std::vector<T> out;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tn; i++) {
                std::vector<T> s;
                const T* q = qkv.data() + ((size_t)b * Tn + i) * 3 * C + h * hs;
                for (int j = 0; j <= i; j++) {
                    const T* k = qkv.data() + ((size_t)b * Tn + j) * 3 * C + C + h * hs;
                    T d = 0;
                    for (int c = 0; c < hs; c++) d += q[c] * k[c];
                    s.push_back(d * scale);
                }
                const T m = *std::max_element(s.begin(), s.end());
                T z = 0;
                for (T v : s) z += std::exp(v - m);
                out.push_back(m + std::log(z));
            }
    return out;
}

// The GPU's attention never stores the probabilities (flash style): its output and its gradients
// against the CPU op (which does), its record (the log-sum-exp, a copy of the output), head sizes
// from 1 to kMaxHead through each of its kernel sizes (32, 64, 128 channels a lane row), sequences
// shorter than, equal to and past a tile of 32 and a block of 8 queries.
TEST_F(CudaOps, AttentionForwardBackward) {
    std::mt19937_64 rng(5);
    for (const auto& [B, Tn, C, H] : std::vector<std::tuple<int, int, int, int>>{
             {2, 1, 12, 3}, {1, 3, 12, 3}, {2, 65, 40, 4}, {1, 130, 24, 2}, {1, 33, 37, 1}, {2, 41, 128, 2},
             {1, 70, 96, 1}, {1, 9, 128, 1}}) {
        const std::string at = shape({{"B", B}, {"T", Tn}, {"C", C}, {"H", H}});
        const size_t natt = (size_t)B * H * Tn * Tn, nrec = cuda::attention_record_size(B, Tn, C, H);
        const VecD qkv = test::normal_vec<double>((size_t)B * Tn * 3 * C, rng, 1.5);
        VecD outd((size_t)B * Tn * C), attd(natt, 0.0);
        VecF outf(outd.size()), attf(natt, 0.0f);
        attention_forward(outd.data(), attd.data(), qkv.data(), B, Tn, C, H);
        attention_forward(outf.data(), attf.data(), to_float(qkv).data(), B, Tn, C, H);
        auto dqkv_in = to_dev(to_float(qkv)), dout = dev_nan(outd.size()), drec = dev_nan(nrec);
        cuda::attention_forward(dout.data(), drec.data(), dqkv_in.data(), B, Tn, C, H);
        const VecF out_gpu = dout.download(), rec = drec.download();
        check("attention out " + at, out_gpu, outf, outd);
        const size_t nlse = (size_t)B * H * Tn;
        check("attention log-sum-exp " + at, VecF(rec.begin(), rec.begin() + nlse), causal_lse(to_float(qkv), B, Tn, C, H),
              causal_lse(qkv, B, Tn, C, H));
        EXPECT_EQ(VecF(rec.begin() + nlse, rec.end()), out_gpu) << "the record's copy of the output, " << at;

        const VecD G = test::normal_vec<double>(outd.size(), rng);
        VecD dqkvd(qkv.size()), dattd(natt, 0.0);
        VecF dqkvf(qkv.size()), dattf(natt, 0.0f);
        attention_backward(dqkvd.data(), dattd.data(), G.data(), qkv.data(), attd.data(), B, Tn, C, H);
        attention_backward(dqkvf.data(), dattf.data(), to_float(G).data(), to_float(qkv).data(), attf.data(), B, Tn, C,
                           H);
        auto dG = to_dev(to_float(G)), d_dqkv = dev_nan(qkv.size()),
             d_datt = dev_nan(cuda::attention_scratch_size(B, Tn, H));
        cuda::attention_backward(d_dqkv.data(), d_datt.data(), dG.data(), dqkv_in.data(), drec.data(), B, Tn, C, H);
        check("attention dqkv " + at, d_dqkv.download(), dqkvf, dqkvd);
    }
}

// Head sizes past the kernels' are one line, before anything runs.
TEST_F(CudaOps, AttentionRefusesLargeHeads) {
    auto buf = dev_nan(16);
    try {
        cuda::attention_forward(buf.data(), buf.data(), buf.data(), 1, 1, 2 * cuda::kMaxHead + 2, 2);
        ADD_FAILURE() << "head size " << cuda::kMaxHead + 1 << " was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("up to 128, not 258 / 2"), std::string::npos) << e.what();
    }
    EXPECT_THROW(cuda::attention_backward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), 1, 1, 300, 1),
                 std::invalid_argument);
}

// More heads in a batch (B · H = 65,536) than a grid's y takes: the kernels launch as one row of
// blocks (flat_grid, as LayerNorm's backward, colsum and the connections' fused backward do for
// their row chunks), and every head is still its own. 9 s on the emulation: left out of the
// reverse order and of the sanitized build, which run AttentionForwardBackward's kernels.
TEST_F(CudaOps, AttentionTakesMoreThan65535Heads) {
    std::mt19937_64 rng(16);
    const int B = 8192, Tn = 2, H = 8, C = 32;
    const std::string at = shape({{"B", B}, {"T", Tn}, {"C", C}, {"H", H}});
    const size_t natt = (size_t)B * H * Tn * Tn;
    const VecD qkv = test::normal_vec<double>((size_t)B * Tn * 3 * C, rng, 1.5);
    VecD outd((size_t)B * Tn * C), attd(natt, 0.0);
    VecF outf(outd.size()), attf(natt, 0.0f);
    attention_forward(outd.data(), attd.data(), qkv.data(), B, Tn, C, H);
    attention_forward(outf.data(), attf.data(), to_float(qkv).data(), B, Tn, C, H);
    auto dqkv_in = to_dev(to_float(qkv)), dout = dev_nan(outd.size()),
         drec = dev_nan(cuda::attention_record_size(B, Tn, C, H));
    cuda::attention_forward(dout.data(), drec.data(), dqkv_in.data(), B, Tn, C, H);
    check("attention out " + at, dout.download(), outf, outd);
    const VecD G = test::normal_vec<double>(outd.size(), rng);
    VecD dqkvd(qkv.size()), dattd(natt, 0.0);
    VecF dqkvf(qkv.size()), dattf(natt, 0.0f);
    attention_backward(dqkvd.data(), dattd.data(), G.data(), qkv.data(), attd.data(), B, Tn, C, H);
    attention_backward(dqkvf.data(), dattf.data(), to_float(G).data(), to_float(qkv).data(), attf.data(), B, Tn, C, H);
    auto dG = to_dev(to_float(G)), d_dqkv = dev_nan(qkv.size()), d_datt = dev_nan(cuda::attention_scratch_size(B, Tn, H));
    cuda::attention_backward(d_dqkv.data(), d_datt.data(), dG.data(), dqkv_in.data(), drec.data(), B, Tn, C, H);
    check("attention dqkv " + at, d_dqkv.download(), dqkvf, dqkvd);
}

// The KV-cache step: positions fed one by one (up to a full cache of 65, one past a block of 64),
// each new query against the cached keys; the cache rows, the output and the probabilities.
TEST_F(CudaOps, AttentionCachedForward) {
    std::mt19937_64 rng(15);
    for (const auto& [Tmax, C, H] : std::vector<std::tuple<int, int, int>>{{1, 12, 3}, {3, 40, 4}, {65, 37, 1}}) {
        const VecD qkv = test::normal_vec<double>((size_t)Tmax * 3 * C, rng, 1.5);
        VecD Kd((size_t)Tmax * C, 0.0), Vd(Kd.size(), 0.0), outd(C), attd((size_t)H * Tmax, 0.0);
        VecF Kf(Kd.size(), 0.0f), Vf(Kd.size(), 0.0f), outf(C), attf(attd.size(), 0.0f);
        const VecF qkvf = to_float(qkv);
        auto dK = dev_nan(Kd.size()), dV = dev_nan(Kd.size()), dq = dev_nan(3 * (size_t)C);
        for (int pos = 0; pos < Tmax; pos++) {
            const std::string at = shape({{"Tmax", Tmax}, {"C", C}, {"H", H}, {"pos", pos}});
            attention_cached_forward(outd.data(), attd.data(), qkv.data() + (size_t)pos * 3 * C, Kd.data(), Vd.data(),
                                     pos, C, H, Tmax);
            attention_cached_forward(outf.data(), attf.data(), qkvf.data() + (size_t)pos * 3 * C, Kf.data(), Vf.data(),
                                     pos, C, H, Tmax);
            dq.upload(qkvf.data() + (size_t)pos * 3 * C, 3 * (size_t)C);
            auto dout = dev_nan(C), datt = dev_nan(attd.size());
            cuda::attention_cached_forward(dout.data(), datt.data(), dq.data(), dK.data(), dV.data(), pos, C, H, Tmax);
            check("cached attention out " + at, dout.download(), outf, outd);
            auto first = [&](const auto& att) {  // columns 0..pos of each head's row
                std::vector<typename std::decay_t<decltype(att)>::value_type> o;
                for (int h = 0; h < H; h++)
                    for (int j = 0; j <= pos; j++) o.push_back(att[(size_t)h * Tmax + j]);
                return o;
            };
            check("cached attention probabilities " + at, first(datt.download()), first(attf), first(attd));
        }
        EXPECT_EQ(dK.download(), Kf);
        EXPECT_EQ(dV.download(), Vf);
    }
}

TEST_F(CudaOps, StreamSumForwardBackward) {
    std::mt19937_64 rng(6);
    for (const int n : {1, 2, 3, 4, 5, 6, 7, 8})
        for (const auto& [N, C] : std::vector<std::pair<int, int>>{{1, 7}, {65, 37}}) {
            const std::string at = shape({{"N", N}, {"n", n}, {"C", C}});
            const VecD X = test::normal_vec<double>((size_t)N * n * C, rng), G = test::normal_vec<double>((size_t)N * C, rng);
            VecD outd((size_t)N * C), dXd(X.size());
            VecF outf(outd.size()), dXf(X.size());
            stream_sum_forward(outd.data(), X.data(), N, n, C);
            stream_sum_forward(outf.data(), to_float(X).data(), N, n, C);
            stream_sum_backward(dXd.data(), G.data(), N, n, C);
            stream_sum_backward(dXf.data(), to_float(G).data(), N, n, C);
            auto dX = to_dev(to_float(X)), dG = to_dev(to_float(G)), dout = dev_nan(outd.size()),
                 ddX = dev_nan(X.size());
            cuda::stream_sum_forward(dout.data(), dX.data(), N, n, C);
            cuda::stream_sum_backward(ddX.data(), dG.data(), N, n, C);
            check("stream sum " + at, dout.download(), outf, outd);
            check("stream sum dX " + at, ddX.download(), dXf, dXd);
        }
}

TEST_F(CudaOps, CrossEntropyForwardBackward) {
    std::mt19937_64 rng(7);
    for (const auto& [N, V] : std::vector<std::pair<int, int>>{{1, 5}, {65, 300}, {3, 1027}, {130, 67}}) {
        const std::string at = shape({{"N", N}, {"V", V}});
        const VecD logits = test::normal_vec<double>((size_t)N * V, rng, 3.0);
        std::vector<int32_t> tg(N);
        for (auto& t : tg) t = (int32_t)(rng() % V);
        tg[0] = V - 1;
        VecD pd = logits, ld(N);
        VecF pf = to_float(logits), lf(N);
        const double Ld = crossentropy_forward(pd.data(), ld.data(), tg.data(), N, V);
        const double Lf = crossentropy_forward(pf.data(), lf.data(), tg.data(), N, V);
        auto dp = to_dev(to_float(logits)), dl = dev_nan(N);
        auto dtg = to_dev(tg);
        const double Lg = cuda::crossentropy_forward(dp.data(), dl.data(), dtg.data(), N, V);
        check("cross-entropy mean " + at, VecF{(float)Lg}, VecF{(float)Lf}, VecD{Ld});
        EXPECT_NEAR(Lg, Lf, 1e-5 * std::fabs(Lf)) << at;
        check("cross-entropy losses " + at, dl.download(), lf, ld);
        check("cross-entropy probabilities " + at, dp.download(), pf, pd);
        crossentropy_backward(pd.data(), tg.data(), N, V, 1.0 / N);
        crossentropy_backward(pf.data(), tg.data(), N, V, 1.0 / N);
        cuda::crossentropy_backward(dp.data(), dtg.data(), N, V, 1.0 / N);
        check("cross-entropy dlogits " + at, dp.download(), pf, pd);
    }
}

}  // namespace
