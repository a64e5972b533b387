// dtype bf16 on the GPU (model/gpt_cuda.h): the linear layers multiply bf16 copies of their weights
// and inputs with fp32 sums, the attention's products are bf16 on the tensor cores, and the stream
// states and their gradients, the logits, c_fc's output, the GELU's and the branch outputs are
// stored in bf16; the rest stays fp32. The whole model against its fp32 twin on the GPU, per variant: the loss, the logits
// and every gradient within bf16's tolerance, and not equal (the bf16 path is the one that ran).
// Then the engine: the weights' bf16 copy follows every update, a bf16 run is deterministic, and it
// learns as the fp32 run does.
//
// Tolerance: what bf16 rounding does to a result depends on the result (a scalar gradient that is
// a sum with cancellation moves far more than the logits), so its basis is measured, as the fp32
// tests measure theirs (cuda_util.h): the fp32 model with its weights rounded to bf16 is a change
// of the same size, and its distance to the fp32 model is the result's own sensitivity to bf16
// rounding. A bf16 result may be 3 (logits) or 10 (gradients; 30 for tensors of a few values, as in
// the fp32 tests) times that from the fp32 one, a gradient never less than a floor. Measured on
// these models (2 blocks, C = 40, B·T = 18; MHC_TEST_ERRORS=1 prints each): the logits' error is
// 1.21 to 1.54 times its basis, the gradients' of more than 64 values at most 2.5 times theirs and
// 2.1e-2; a few-valued one's up to 18 times (under the floor), and 7.8 times for one scalar whose
// basis is already 5% (ohc's second pre_branch_scale: its gradient is a sum with heavy
// cancellation, and rounding the streams at every site moves each term). The loss is one scalar, a
// mean over 18 tokens, and its relative error ranged from 3.5e-5 (none) to 1.1e-3 (jpmhc); its
// bound is 5e-3, the logits and gradients being the sharp checks. Over 20 training steps the bf16
// losses stayed within 1.3e-3 of fp32's (mhc_lite; none 2.4e-4); the bound is 1%.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "cuda_util.h"
#include "gpt_util.h"
#include "mhc/optim.h"
#include "model/gpt_cuda.h"
#include "train/engine.h"
#include "train/engine_cuda.h"

using namespace mhc;

namespace {

constexpr double kLossTol = 5e-3, kGradFloor = 3e-2, kFewGradFloor = 5e-2;

ModelConfig bf16_test_config(const std::string& type, int n, bool bias) {
    return test::sized_config(type, n, 40, 4, 67, 9, bias);
}

class CudaBf16Model : public test::CudaTest {};

// One forward and backward of the bf16 model and of the fp32 model from the same weights.
TEST_F(CudaBf16Model, ModelStaysWithinBf16OfFp32) {
    for (const auto& [type, n, bias] : std::vector<std::tuple<std::string, int, bool>>{
             {"none", 1, false}, {"none", 1, true}, {"hc", 3, false}, {"mhc", 4, false}, {"mhc_lite", 4, true},
             {"kromhc", 4, false}, {"jpmhc", 4, false}, {"ohc", 4, false}}) {
        const std::string name = type + (bias ? "_bias" : "");
        GPT<float> m;
        test::make_perturbed(m, bf16_test_config(type, n, bias), 13);
        GPT<float> mr = m;  // its weights rounded to bf16: how much bf16-sized changes move each result
        for (float& w : mr.param) w = __bfloat162float(__float2bfloat16(w));
        GptCuda f, h, r;
        gpt_cuda_build(f, m);
        gpt_cuda_build(h, m, true);
        gpt_cuda_build(r, mr);
        const int B = 2, Tn = 9, N = B * Tn;
        std::vector<int32_t> in(N), tg(N);
        for (int i = 0; i < N; i++) in[i] = (i * 11 + 2) % 67, tg[i] = (i * 5 + 7) % 67;
        // Without targets: the logits.
        gpt_cuda_forward(f, in.data(), nullptr, B, Tn);
        gpt_cuda_forward(h, in.data(), nullptr, B, Tn);
        gpt_cuda_forward(r, in.data(), nullptr, B, Tn);
        const std::vector<float> lf = gpt_cuda_logits(f), lh = gpt_cuda_logits(h), lr = gpt_cuda_logits(r);
        const double lerr =
            check_basis(name + " logits", lh, lf, test::rel_err(lr, lf), 0, 3, " (basis: bf16 weights)");
        EXPECT_GT(lerr, 0.0) << name << ": the bf16 model gave the fp32 model's logits (did it round?)";
        // With targets: the loss and the gradients.
        const double loss_f = gpt_cuda_forward(f, in.data(), tg.data(), B, Tn);
        const double loss_h = gpt_cuda_forward(h, in.data(), tg.data(), B, Tn);
        gpt_cuda_forward(r, in.data(), tg.data(), B, Tn);
        gpt_cuda_backward(r);
        std::vector<float> gr(m.param.size());
        gpt_cuda_download_grads(r, gr.data());
        if (std::getenv("MHC_TEST_ERRORS"))  // calibration, as check_basis's
            std::printf("ERRCHECK %.3e loss %s\n", std::fabs(loss_h - loss_f) / std::fabs(loss_f), name.c_str());
        EXPECT_LE(std::fabs(loss_h - loss_f), kLossTol * std::fabs(loss_f)) << name << " loss";
        gpt_cuda_backward(f), gpt_cuda_backward(h);
        std::vector<float> gf(m.param.size()), gh(m.param.size());
        gpt_cuda_download_grads(f, gf.data());
        gpt_cuda_download_grads(h, gh.data());
        double worst = 0;
        for (const ParamTensor& t : m.params) {
            const std::vector<float> a(gh.begin() + t.offset, gh.begin() + t.offset + t.size),
                b(gf.begin() + t.offset, gf.begin() + t.offset + t.size);
            const std::vector<float> c(gr.begin() + t.offset, gr.begin() + t.offset + t.size);
            const bool few = t.size <= (long)test::kFewValues;
            const double err = check_basis(name + " gradient " + t.name, a, b, test::rel_err(c, b),
                                           few ? kFewGradFloor : kGradFloor, few ? 30 : 10, " (basis: bf16 weights)");
            worst = std::max(worst, err);
        }
        EXPECT_GT(worst, 0.0) << name << ": bf16 gradients equal to fp32's";
    }
}

// What dtype bf16 changes in the GPU's buffers, against what it changes in gpt_memory_estimate:
// fewer fp32 activations (the linear layers' inputs share one buffer) and the bf16 copies, each
// within 2% (the GPU rounds every piece up to 256 bytes); every bf16 weight and input copy starts
// on a 256-byte boundary; and the whole fp32 activations, given the GPU's connection scratch.
TEST_F(CudaBf16Model, MemoryEstimateKnowsTheBf16Plan) {
    for (const std::string type : {"none", "mhc_lite"}) {
        ModelConfig c = bf16_test_config(type, type == "none" ? 1 : 4, false);
        const int B = 2, Tn = 64;
        c.block_size = Tn;
        GPT<float> m;
        gpt_build(m, c);
        gpt_init(m, 1);
        std::vector<int32_t> in(B * Tn, 5);
        double act[2], copies[2];
        for (const bool bf16 : {false, true}) {
            GptCuda g;
            gpt_cuda_build(g, m, bf16);
            gpt_cuda_forward(g, in.data(), in.data(), B, Tn);
            act[bf16] = (double)(g.act.size() + g.gact.size());
            for (const auto& l : g.lin16)  // where the tensor-core products want them
                EXPECT_TRUE((uintptr_t)l.w16 % 256 == 0 && (uintptr_t)l.in16 % 256 == 0) << type;
            EXPECT_EQ(g.lin16.size(), (size_t)(bf16 ? 4 * g.host.L + 1 : 0)) << type;
            copies[bf16] = (double)(g.act16.size() + g.param16.size());
        }
        const double scratch = (double)cuda::conn_scratch_size_cuda(m.sites[0], B * Tn);
        const GptMemory f = gpt_memory_estimate(c, B, Tn, true, false, false, scratch),
                        h = gpt_memory_estimate(c, B, Tn, true, false, true, scratch);
        const double saved = f.activations - h.activations;
        EXPECT_GT(saved, 0.0) << type;
        EXPECT_NEAR(act[0] - act[1], saved, 0.02 * saved) << type << ": fp32 activations saved";
        EXPECT_EQ(copies[0], 0.0) << type;
        EXPECT_EQ(f.bf16, 0.0) << type;
        EXPECT_NEAR(copies[1], h.bf16, 0.02 * h.bf16) << type << ": bf16 copies";
        for (const bool bf16 : {false, true})
            EXPECT_NEAR(act[bf16], (bf16 ? h : f).activations, 0.02 * act[bf16]) << type << " bf16 " << bf16;
    }
}

// bf16 with recompute: the same bits as bf16 without (the loss, every gradient, the diagnostics,
// which make the missing states again), in less activation memory.
TEST_F(CudaBf16Model, RecomputeGivesTheSameBits) {
    for (const auto& [type, n] : std::vector<std::pair<std::string, int>>{{"none", 1}, {"mhc_lite", 4}}) {
        GPT<float> m;
        test::make_perturbed(m, bf16_test_config(type, n, true), 7);
        GptCuda keep, again;
        gpt_cuda_build(keep, m, true);
        m.recompute = true;
        gpt_cuda_build(again, m, true);
        const int B = 2, Tn = 9, N = B * Tn;
        std::vector<int32_t> in(N), tg(N);
        for (int i = 0; i < N; i++) in[i] = (i * 7 + 3) % 67, tg[i] = (i * 5 + 1) % 67;
        for (GptCuda* g : {&keep, &again}) {
            gpt_cuda_zero_grad(*g);
            gpt_cuda_forward(*g, in.data(), tg.data(), B, Tn);
            gpt_cuda_backward(*g, 0.5);
        }
        EXPECT_EQ(keep.loss, again.loss) << type;
        std::vector<float> gk(m.param.size()), ga(m.param.size());
        gpt_cuda_download_grads(keep, gk.data());
        gpt_cuda_download_grads(again, ga.data());
        EXPECT_EQ(gk, ga) << type;
        EXPECT_EQ(gpt_cuda_diagnostics(keep), gpt_cuda_diagnostics(again)) << type;
        // (the saving: the states inside the blocks, bf16, and the sites' u, fp32, but a residual
        // site's u is its stream)
        const auto bytes = [](const GptCuda& g) { return g.act.size() * 4 + g.act16.size() * 2; };
        EXPECT_LT(bytes(again), bytes(keep)) << type;
    }
}

// nsteps engine steps on the GPU from gpt_init's weights, in bf16 or fp32, on a learnable token stream.
struct EngineRun {
    TrainConfig tc;
    TokenData data;
    GPT<float> m;
    AdamW<float> adam;
    std::unique_ptr<Engine> e;
    std::vector<StepStats> steps;

    EngineRun(const std::string& type, int n, bool bf16, int nsteps) {
        cuda_engine_register();
        tc.model = bf16_test_config(type, n, false);
        tc.batch_size = 2, tc.learning_rate = 3e-3, tc.warmup_iters = 2, tc.max_iters = nsteps;
        tc.lr_decay_iters = nsteps;
        data.vocab_size = tc.model.vocab_size;
        std::mt19937_64 rng(17);
        // A learnable stream: a cycle of 13 tokens, one step in eight off by one.
        std::vector<uint32_t> ids;
        for (int i = 0; i < 4000; i++) ids.push_back((uint32_t)((i * 7 + (rng() % 8 == 0)) % 13));
        data.tokens = Tokens(std::move(ids));
        gpt_build(m, tc.model);
        gpt_init(m, 5);
        e = engine_make("cuda", m, adam, {bf16});
        Batcher b(data, tc.batch_size, tc.model.block_size, Order::random, 3);
        std::vector<int32_t> in((size_t)tc.batch_size * tc.model.block_size), tg(in.size());
        for (int s = 0; s < nsteps; s++)
            steps.push_back(e->step(b, tc, mhc::lr_at(tc, s), in.data(), tg.data(), false));
        e->to_host();
    }
};

// After the updates, the engine's bf16 model computes what a bf16 model freshly built from its
// weights computes, to the bit: the bf16 copy was refreshed after each update (a stale copy would
// give the first weights' loss).
TEST_F(CudaBf16Model, WeightsCopyFollowsEveryUpdate) {
    EngineRun r("mhc_lite", 4, true, 3);
    const int B = 2, Tn = 9, N = B * Tn;
    std::vector<int32_t> in(N), tg(N);
    for (int i = 0; i < N; i++) in[i] = (i * 3 + 1) % 67, tg[i] = (i * 13 + 4) % 67;
    const double engine_loss = r.e->forward(in.data(), tg.data(), B, Tn);
    GptCuda fresh;
    gpt_cuda_build(fresh, r.m, true);
    EXPECT_EQ(engine_loss, gpt_cuda_forward(fresh, in.data(), tg.data(), B, Tn));
    GPT<float> first;
    gpt_build(first, r.tc.model);
    gpt_init(first, 5);
    GptCuda old;
    gpt_cuda_build(old, first, true);
    EXPECT_NE(engine_loss, gpt_cuda_forward(old, in.data(), tg.data(), B, Tn)) << "the weights did not move";
}

// Two bf16 runs: the same bits in every loss and norm, and in the weights.
TEST_F(CudaBf16Model, RunsAreDeterministic) {
    EngineRun a("mhc_lite", 4, true, 4), b("mhc_lite", 4, true, 4);
    for (size_t s = 0; s < a.steps.size(); s++) {
        EXPECT_EQ(std::memcmp(&a.steps[s].loss, &b.steps[s].loss, sizeof(double)), 0) << "loss, step " << s;
        EXPECT_EQ(std::memcmp(&a.steps[s].grad_norm, &b.steps[s].grad_norm, sizeof(double)), 0) << "norm " << s;
    }
    EXPECT_EQ(std::memcmp(a.m.param.data(), b.m.param.data(), a.m.param.size() * sizeof(float)), 0) << "weights";
}

// Twenty steps in bf16 beside twenty in fp32 from the same start on the same batches: both learn,
// and the bf16 losses stay within 1% of the fp32 ones.
TEST_F(CudaBf16Model, TrainsLikeFp32) {
    for (const auto& [type, n] : std::vector<std::pair<std::string, int>>{{"none", 1}, {"mhc_lite", 4}}) {
        EngineRun f(type, n, false, 20), h(type, n, true, 20);
        double worst = 0;
        for (size_t s = 0; s < f.steps.size(); s++) {
            ASSERT_TRUE(h.steps[s].finite) << type << " step " << s;
            EXPECT_LE(std::fabs(h.steps[s].loss - f.steps[s].loss), 0.01 * f.steps[s].loss) << type << " step " << s;
            worst = std::max(worst, std::fabs(h.steps[s].loss - f.steps[s].loss) / f.steps[s].loss);
        }
        if (std::getenv("MHC_TEST_ERRORS")) std::printf("ERRCHECK %.3e loss over 20 steps %s\n", worst, type.c_str());
        EXPECT_LT(h.steps.back().loss, h.steps.front().loss - 0.3) << type << ": the bf16 model did not learn";
    }
}

}  // namespace
