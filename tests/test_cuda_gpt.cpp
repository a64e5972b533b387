// The whole GPT on the GPU (model/gpt_cuda.h) against the CPU model, per variant: the logits, the
// loss, every parameter's gradient, the per-token coefficient caches and the SPEC §6 diagnostics
// read from them. A model of 2 blocks, C = 40 (no multiple of 32), 4 heads of 10, V = 67, on a
// batch of 2 x 65 positions (one past a block of 64), moved away from its initial values so that
// every path matters. Tolerances: tests/cuda_util.h.
#include <gtest/gtest.h>

#include <random>

#include "cuda_util.h"
#include "gpt_util.h"
#include "mhc/diag.h"
#include "model/gpt_cuda.h"

using namespace mhc;
using test::to_double;

namespace {

struct ModelCase {
    std::string name, type;
    int n = 4;
    bool bias = false;
    int subset = 0;
    int cayley = 2;
};

std::vector<ModelCase> model_cases() {
    return {{"none", "none", 1},       {"none_bias", "none", 1, true}, {"hc_n3", "hc", 3},
            {"mhc_n4", "mhc", 4},      {"mhc_lite_n4", "mhc_lite", 4}, {"mhc_lite_n4_bias", "mhc_lite", 4, true},
            {"kromhc_n4", "kromhc", 4}, {"mhc_lite_n8_subset24", "mhc_lite", 8, false, 24},
            {"kromhc_n8", "kromhc", 8}, {"hc_n8", "hc", 8}, {"jpmhc_n4", "jpmhc", 4},
            {"jpmhc_exact_n3", "jpmhc", 3, false, 0, 0}, {"ohc_n4", "ohc", 4}};
}

ModelConfig gpu_test_config(const ModelCase& c) {
    ModelConfig m = test::sized_config(c.type, c.n, 40, 4, 67, 65, c.bias);
    m.hyper_conn_perm_subset = c.subset;
    m.cayley_iters = c.cayley;
    return m;
}

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

class CudaGpt : public test::CudaTest, public testing::WithParamInterface<ModelCase> {};

TEST_P(CudaGpt, LogitsLossGradientsAndDiagnosticsMatchCpu) {
    const ModelCase& mc = GetParam();
    const ModelConfig cfg = gpu_test_config(mc);
    GPT<float> mf;
    test::make_perturbed(mf, cfg, 21);
    GPT<double> md;
    gpt_build(md, cfg);
    md.param = to_double(mf.param);
    GptCuda g;
    gpt_cuda_build(g, mf);
    ASSERT_EQ(gpt_cuda_param_count(g), (long)mf.param.size());

    const int B = 2, Tn = 65, N = B * Tn, V = cfg.vocab_size;
    std::mt19937_64 rng(22);
    std::vector<int32_t> in(N), tg(N);
    for (int i = 0; i < N; i++) in[i] = (int32_t)(rng() % V), tg[i] = (int32_t)(rng() % V);

    // Without targets: the logits.
    EXPECT_TRUE(std::isnan(gpt_cuda_forward(g, in.data(), nullptr, B, Tn)));
    gpt_forward(mf, in.data(), nullptr, B, Tn);
    gpt_forward(md, in.data(), nullptr, B, Tn);
    const size_t NV = (size_t)N * V;
    check("logits", gpt_cuda_logits(g), std::vector<float>(mf.logits, mf.logits + NV),
          std::vector<double>(md.logits, md.logits + NV));

    // With targets: the loss and, after the backward, every gradient (scaled by 0.5, accumulated).
    gpt_zero_grad(mf);
    gpt_zero_grad(md);
    gpt_cuda_zero_grad(g);
    const double Lf = gpt_forward(mf, in.data(), tg.data(), B, Tn);
    const double Ld = gpt_forward(md, in.data(), tg.data(), B, Tn);
    const double Lg = gpt_cuda_forward(g, in.data(), tg.data(), B, Tn);
    check("loss", std::vector<float>{(float)Lg}, std::vector<float>{(float)Lf}, std::vector<double>{Ld}, 1e-6);
    EXPECT_NEAR(Lg, Lf, 1e-5) << "loss";

    // The caches of every site (the coefficients of this forward), slot by slot as the CPU's.
    for (int k = 0; k < 2 * cfg.n_layer; k++) {
        const ConnSite& s = mf.sites[k];
        const int sN = N * s.stride;
        std::vector<float> gc = gpt_cuda_site_cache(g, k);
        std::vector<float> cf(mf.s_act[k].cache, mf.s_act[k].cache + sN);
        std::vector<double> cd(md.s_act[k].cache, md.s_act[k].cache + sN);
        const int hi = s.c_dhres;  // the forward's slots (the backward writes the rest)
        auto fwd = [&](const auto& v) {
            std::vector<typename std::decay_t<decltype(v)>::value_type> out;
            for (int t = 0; t < N; t++) out.insert(out.end(), v.begin() + (long)t * s.stride, v.begin() + (long)t * s.stride + hi);
            return out;
        };
        check("cache of site " + std::to_string(k), fwd(gc), fwd(cf), fwd(cd));
    }

    gpt_backward(mf, 0.5);
    gpt_backward(md, 0.5);
    gpt_cuda_backward(g, 0.5);
    std::vector<float> gg(mf.grad.size());
    gpt_cuda_download_grads(g, gg.data());
    // A second CPU fp32 gradient: the same batch with its two rows swapped, the same sums in another
    // order (equal in exact arithmetic), a second sample of the CPU's rounding (cuda_util.h).
    GPT<float> ma;
    test::make_perturbed(ma, cfg, 21);
    ASSERT_EQ(ma.param, mf.param);
    std::vector<int32_t> in_s(N), tg_s(N);
    for (int i = 0; i < N; i++) in_s[i] = in[(i + Tn) % N], tg_s[i] = tg[(i + Tn) % N];
    gpt_zero_grad(ma);
    gpt_forward(ma, in_s.data(), tg_s.data(), B, Tn);
    gpt_backward(ma, 0.5);
    for (const ParamTensor& t : mf.params) {
        auto slice = [&](const auto& v) {
            using T = typename std::decay_t<decltype(v)>::value_type;
            return std::vector<T>(v.begin() + t.offset, v.begin() + t.offset + t.size);
        };
        const std::vector<float> alt = slice(ma.grad);
        check_grad("d " + t.name, slice(gg), slice(mf.grad), slice(md.grad), &alt);
    }
    EXPECT_THROW(gpt_cuda_backward(g), std::logic_error);  // the logits hold gradients now

    // SPEC §6 diagnostics from the downloaded caches (the backward leaves them intact).
    if (cfg.hyper_conn_type != Variant::residual) {
        const nlohmann::json dg = gpt_cuda_diagnostics(g), dc = gpt_diagnostics(mf);
        ASSERT_EQ(dg["sites"].size(), dc["sites"].size());
        EXPECT_EQ(dg["tokens"], dc["tokens"]);
        for (size_t k = 0; k < dc["sites"].size(); k++)
            for (const auto& [key, val] : dc["sites"][k].items()) {
                if (!val.is_number_float()) {
                    EXPECT_EQ(dg["sites"][k][key], val) << key;
                    continue;
                }
                const double c = val.get<double>(), gv = dg["sites"][k][key].get<double>();
                EXPECT_NEAR(gv, c, 1e-5 * std::max(1.0, std::fabs(c))) << "site " << k << " " << key;
            }
    }
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaGpt, testing::ValuesIn(model_cases()),
                         [](const testing::TestParamInfo<ModelCase>& i) { return i.param.name; });

class CudaGptApi : public test::CudaTest {};

// Parameters go up and come back as they were; bad shapes and ids are refused as on the CPU.
TEST_F(CudaGptApi, ParametersRoundTripAndBadInputIsRefused) {
    GPT<float> m;
    test::make_perturbed(m, gpu_test_config({"mhc_lite_n4", "mhc_lite", 4}), 3);
    GptCuda g;
    gpt_cuda_build(g, m);
    std::vector<float> back(m.param.size());
    gpt_cuda_download_params(g, back.data());
    EXPECT_EQ(back, m.param);
    for (auto& v : back) v *= 2;
    gpt_cuda_upload_params(g, back.data());
    std::vector<float> again(back.size());
    gpt_cuda_download_params(g, again.data());
    EXPECT_EQ(again, back);
    std::vector<int32_t> ok(130, 3), bad(130, 67);
    EXPECT_THROW(gpt_cuda_forward(g, bad.data(), nullptr, 2, 65), std::invalid_argument);
    EXPECT_THROW(gpt_cuda_forward(g, ok.data(), nullptr, 1, 66), std::invalid_argument);
    EXPECT_THROW(gpt_cuda_backward(g), std::logic_error);
    EXPECT_THROW(gpt_cuda_diagnostics(g), std::logic_error);
    // A second shape re-plans the activations; one position works.
    EXPECT_TRUE(std::isnan(gpt_cuda_forward(g, ok.data(), nullptr, 1, 1)));
    EXPECT_TRUE(std::isfinite(gpt_cuda_forward(g, ok.data(), ok.data(), 2, 65)));
    // A training step's forward leaves the logits' gradient for one backward scale; another is refused.
    cuda::DeviceBuffer<double> acc(1);
    acc.fill_bytes(0);
    gpt_cuda_forward_into(g, ok.data(), ok.data(), 2, 65, acc.data(), 2, 0.5);
    EXPECT_THROW(gpt_cuda_backward(g, 1.0), std::logic_error);
    double loss = 0;
    acc.download(&loss, 1);
    EXPECT_NEAR(loss, gpt_cuda_forward(g, ok.data(), ok.data(), 2, 65) / 2, 1e-12) << "the loss on the device, / 2";
}

// The memory check's estimate (gpt_memory_estimate with the GPU's connection scratch, as
// train/fits.cpp asks it) is the GPU's plan: its activations and their gradients within 2% (pieces
// rounded up to 256 bytes) for every variant, keeping every activation or recomputing.
TEST_F(CudaGptApi, MemoryEstimateIsThePlan) {
    const int B = 2, Tn = 65;
    for (const ModelCase& mc : model_cases()) {
        GPT<float> m;
        test::make_perturbed(m, gpu_test_config(mc), 3);
        for (const bool rc : {false, true}) {
            m.recompute = rc;
            GptCuda g;
            gpt_cuda_build(g, m);
            std::vector<int32_t> in(B * Tn, 5);
            gpt_cuda_forward(g, in.data(), in.data(), B, Tn);
            const double act = (double)(g.act.size() + g.gact.size());
            const double scratch = (double)cuda::conn_scratch_size_cuda(m.sites[0], B * Tn);
            const GptMemory e = gpt_memory_estimate(m.cfg, B, Tn, true, rc, false, scratch);
            EXPECT_NEAR(act, e.activations, 0.02 * act) << mc.name << " recompute " << rc;
        }
    }
}

// Building the model reserves its kernels' largest stack frame (cuda.h: reserve_stack), so that no
// launch inside a step has to grow the reserve. The emulation's kernels report MHC_EMU_STACK_BYTES
// as their frame: set past the current limit there, so that the build must raise it.
TEST_F(CudaGptApi, BuildReservesTheKernelsStackFrames) {
    const size_t before = cuda::stack_limit();
#if MHC_CUDA_EMU
    ASSERT_EQ(setenv("MHC_EMU_STACK_BYTES", std::to_string(before + 3000).c_str(), 1), 0);
#endif
    GPT<float> m;
    test::make_perturbed(m, gpu_test_config({"jpmhc", "jpmhc", 4}), 3);
    const size_t frame = cuda::conn_stack_bytes_cuda(m.sites[0]);
    {
        GptCuda g;
        gpt_cuda_build(g, m);
        EXPECT_GE(cuda::stack_limit(), frame);
    }
#if MHC_CUDA_EMU
    EXPECT_EQ(frame, before + 3000);
    unsetenv("MHC_EMU_STACK_BYTES");
#endif
    ASSERT_EQ(cudaDeviceSetLimit(cudaLimitStackSize, before), cudaSuccess);
}

// Activation recompute on the GPU: the same loss, gradient bits and diagnostics as keeping every
// activation, over two steps, in a smaller activation buffer.
TEST_F(CudaGptApi, RecomputeGivesTheSameBitsInLessMemory) {
    for (const ModelCase& mc : model_cases()) {
        if (mc.name != "none" && mc.name != "mhc_n4" && mc.name != "mhc_lite_n4" && mc.name != "jpmhc_n4") continue;
        GPT<float> m;
        test::make_perturbed(m, gpu_test_config(mc), 5);
        GptCuda keep, again;
        gpt_cuda_build(keep, m);
        m.recompute = true;
        gpt_cuda_build(again, m);
        const int B = 2, Tn = 9, N = B * Tn;
        std::vector<int32_t> in(N), tg(N);
        for (int step = 0; step < 2; step++) {
            for (int i = 0; i < N; i++) in[i] = (i * 7 + 3 + step) % 67, tg[i] = (i * 5 + 1 + step) % 67;
            for (GptCuda* g : {&keep, &again}) {
                gpt_cuda_zero_grad(*g);
                gpt_cuda_forward(*g, in.data(), tg.data(), B, Tn);
                gpt_cuda_backward(*g, 0.5);
            }
            EXPECT_EQ(keep.loss, again.loss) << mc.name;
            std::vector<float> gk(m.param.size()), ga(m.param.size());
            gpt_cuda_download_grads(keep, gk.data());
            gpt_cuda_download_grads(again, ga.data());
            EXPECT_EQ(gk, ga) << mc.name << " step " << step;
            EXPECT_EQ(gpt_cuda_diagnostics(keep), gpt_cuda_diagnostics(again)) << mc.name;
        }
        EXPECT_LT(again.act.size(), keep.act.size()) << mc.name;
    }
}

}  // namespace
