// Training on the GPU: the optimizer ops (model/optim_cuda.h) against the CPU's, 20 AdamW steps of
// the GPU model beside the CPU model on the same batches (losses within 1e-4 at every step), and
// determinism (two GPU runs give bit-identical losses, gradients and weights).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "cuda_util.h"
#include "gpt_util.h"
#include "mhc/optim.h"
#include "model/gpt_cuda.h"
#include "model/optim_cuda.h"
#include "train/engine.h"
#include "train/engine_cuda.h"

using namespace mhc;
using test::to_dev;

namespace {

class CudaOptim : public test::CudaTest {};

// Tensors of awkward sizes, decayed and not, over several norm blocks of 16384 values.
TEST_F(CudaOptim, NormClipAndAdamWMatchCpu) {
    std::vector<ParamTensor> ts;
    long off = 0;
    int k = 0;
    for (const auto& [size, decay] : std::vector<std::pair<long, bool>>{{1, false}, {40000, true}, {333, false},
                                                                       {16384, true}, {7, true}, {5, false}}) {
        ParamTensor t;
        t.name = std::to_string(k++);
        t.shape = {(int)size};
        t.offset = off, t.size = size, t.decay = decay;
        off += size;
        ts.push_back(t);
    }
    std::mt19937_64 rng(31);
    std::vector<float> p = test::normal_vec<float>(off, rng), pc = p;
    auto dp = to_dev(p);
    AdamW<float> cpu;
    cuda::AdamWCuda gpu;
    for (int step = 0; step < 3; step++) {
        std::vector<float> gr = test::normal_vec<float>(off, rng, step == 1 ? 0.001 : 10.0);  // step 1: no clipping
        auto dg = to_dev(gr);
        const double nc = grad_norm(gr.data(), off), ng = cuda::grad_norm(dg.data(), off);
        EXPECT_NEAR(ng, nc, 1e-12 * nc) << "step " << step;
        clip_grad(gr.data(), off, nc, 1.0);
        cuda::clip_grad(dg.data(), off, ng, 1.0);
        check("clipped gradients, step " + std::to_string(step), dg.download(), gr, gr);
        adamw_step(cpu, pc.data(), gr.data(), ts, 1e-2, 0.9, 0.95, 0.1);
        cuda::adamw_step(gpu, dp.data(), dg.data(), ts, 1e-2, 0.9, 0.95, 0.1);
        check("weights, step " + std::to_string(step), dp.download(), pc, pc);
        check("first moments, step " + std::to_string(step), gpu.m.download(), cpu.m, cpu.m);
        check("second moments, step " + std::to_string(step), gpu.v.download(), cpu.v, cpu.v);
    }
    EXPECT_EQ(gpu.step, cpu.step);
    EXPECT_EQ(cuda::grad_norm(dp.data(), 0), 0.0);
    // The state round-trips through the CPU's AdamW (checkpoints) and the next step still agrees.
    AdamW<float> down;
    cuda::adamw_download(gpu, down);
    EXPECT_EQ(down.m, gpu.m.download());
    EXPECT_EQ(down.step, cpu.step);
    cuda::AdamWCuda again;
    cuda::adamw_upload(again, cpu);
    EXPECT_EQ(again.v.download(), cpu.v);
    std::vector<float> gr = test::normal_vec<float>(off, rng);
    auto dg = to_dev(gr);
    dp.upload(pc);
    adamw_step(cpu, pc.data(), gr.data(), ts, 1e-2, 0.9, 0.95, 0.1);
    cuda::adamw_step(again, dp.data(), dg.data(), ts, 1e-2, 0.9, 0.95, 0.1);
    check("weights after a step from uploaded state", dp.download(), pc, pc);
    EXPECT_EQ(again.step, cpu.step);

    // Whether a step would stay finite, as the CPU decides it: yes for ordinary gradients, from fresh
    // and from used moments; no for a gradient whose square overflows v, a weight in a decayed or an
    // undecayed tensor that the step would make infinite, or a NaN already there.
    cuda::AdamWCuda fresh;
    AdamW<float> cpu_fresh;
    auto same = [&](const std::string& what, cuda::AdamWCuda& g, const AdamW<float>& c, const std::vector<float>& pw,
                    const std::vector<float>& gw, double lr, bool want) {
        auto d_p = to_dev(pw), d_g = to_dev(gw);
        const bool on_cpu = adamw_step_is_finite(c, pw.data(), gw.data(), ts, lr, 0.9, 0.95, 0.1);
        EXPECT_EQ(on_cpu, want) << what;
        EXPECT_EQ(cuda::adamw_step_is_finite(g, d_p.data(), d_g.data(), ts, lr, 0.9, 0.95, 0.1), on_cpu) << what;
    };
    same("ordinary, fresh moments", fresh, cpu_fresh, pc, gr, 1e-2, true);
    same("ordinary, used moments", again, cpu, pc, gr, 1e-2, true);
    for (const long at : {0L, 20000L, off - 1}) {
        std::vector<float> big = gr;
        big[at] = 1e30f;  // g² overflows
        same("overflowing gradient at " + std::to_string(at), again, cpu, pc, big, 1e-2, false);
        std::vector<float> nanp = pc;
        nanp[at] = NAN;
        same("NaN weight at " + std::to_string(at), fresh, cpu_fresh, nanp, gr, 1e-2, false);
    }
    same("a learning rate that overflows the weights", fresh, cpu_fresh, pc, gr, 1e38, false);
    EXPECT_TRUE(fresh.m.empty()) << "the check stores nothing";
    EXPECT_EQ(again.step, cpu.step);
}

// The step as the engine runs it: the check and the update read the gradients as clipping would
// leave them (without writing them), and the update writes bf16 copies of chosen weights: one
// inside a tensor, one across two tensors of different decay, one a whole tensor. The weights and
// moments are those of clip_grad then adamw_step, to the bit; each copy is its weights rounded to
// bf16, and nothing else changes; a step whose check is not clean writes nothing.
TEST_F(CudaOptim, CheckedStepClipsInlineAndWritesTheBf16Copies) {
    std::vector<ParamTensor> ts;
    long off = 0;
    for (const auto& [size, decay] : std::vector<std::pair<long, bool>>{{40000, true}, {333, false}, {777, true},
                                                                       {5, false}}) {
        ParamTensor t;
        t.name = std::to_string(ts.size());
        t.shape = {(int)size};
        t.offset = off, t.size = size, t.decay = decay;
        off += size;
        ts.push_back(t);
    }
    const long lead = 3;  // copy values before the first copy, which stay as they were
    const std::vector<std::pair<long, long>> ranges = {{100, 5000}, {40200, 500}, {41110, 5}};  // offset, count
    cuda::DeviceBuffer<cuda::bf16> copy(lead + 5000 + 500 + 5);
    copy.fill_bytes(0xff);  // NaN: what the update does not write stays NaN
    std::vector<cuda::AdamWCuda::Copy> copies;
    long at = lead;
    for (const auto& [o, c] : ranges) copies.push_back({o, c, copy.data() + at}), at += c;
    std::mt19937_64 rng(37);
    const std::vector<float> p0 = test::normal_vec<float>(off, rng);
    auto dp = to_dev(p0), dq = to_dev(p0);
    cuda::AdamWCuda ref, fused;
    cuda::adamw_copy_bf16(fused, copies);
    cuda::DeviceBuffer<cuda::StepCheck> chk(1);
    for (int step = 0; step < 3; step++) {
        const std::vector<float> gr = test::normal_vec<float>(off, rng, step == 1 ? 0.001 : 10.0);  // 1: unclipped
        auto dg = to_dev(gr), dh = to_dev(gr);
        const double norm = cuda::grad_norm(dg.data(), off);
        cuda::clip_grad(dg.data(), off, norm, 1.0);
        cuda::adamw_step(ref, dp.data(), dg.data(), ts, 1e-2, 0.9, 0.95, 0.1);
        chk.fill_bytes(0);
        cuda::grad_sumsq_into(dh.data(), off, chk.data());
        cuda::adamw_prepare(fused, ts, 1e-2, 0.9, 0.95, 0.1, 1.0);
        cuda::adamw_nonfinite_into(fused, dq.data(), dh.data(), chk.data());
        cuda::adamw_step_checked(fused, dq.data(), dh.data(), chk.data());
        fused.step++;
        const std::string when = ", step " + std::to_string(step);
        EXPECT_EQ(chk.download()[0].bad, 0.0) << when;
        EXPECT_EQ(dh.download(), gr) << "the gradients were written" << when;
        EXPECT_EQ(dq.download(), dp.download()) << "weights" << when;
        EXPECT_EQ(fused.m.download(), ref.m.download()) << "first moments" << when;
        EXPECT_EQ(fused.v.download(), ref.v.download()) << "second moments" << when;
        const std::vector<float> w = dq.download(), c = test::from_bf16(copy);
        for (long i = 0; i < lead; i++) EXPECT_TRUE(std::isnan(c[i])) << "before the copies: " << i << when;
        long k = lead;
        for (const auto& [o, n] : ranges)
            for (long i = 0; i < n; i++, k++)
                ASSERT_EQ(c[k], test::round16(w[o + i])) << "copy of weight " << o + i << when;
    }
    // A step whose loss is not finite: nothing is written, not even the copies.
    const std::vector<float> w = dq.download(), c = test::from_bf16(copy), m = fused.m.download();
    const std::vector<float> gr = test::normal_vec<float>(off, rng);
    auto dh = to_dev(gr);
    cuda::StepCheck bad;
    bad.loss = NAN;
    chk.upload(&bad, 1);
    cuda::grad_sumsq_into(dh.data(), off, chk.data());
    cuda::adamw_prepare(fused, ts, 1e-2, 0.9, 0.95, 0.1, 1.0);
    cuda::adamw_step_checked(fused, dq.data(), dh.data(), chk.data());
    EXPECT_EQ(dq.download(), w);
    EXPECT_EQ(fused.m.download(), m);
    EXPECT_EQ(std::memcmp(test::from_bf16(copy).data(), c.data(), c.size() * sizeof(float)), 0) << "copies";
    // The check trusts the bound that the last update left: a NaN written behind its back is not
    // seen (which shows that the check read nothing), and is once the bound is forgotten. A bound
    // that proves nothing (an overflowing learning rate; unclipped gradients whose squares
    // overflow) leaves the check to read every value.
    auto check_bad = [&](const std::vector<float>& g, double lr, double max_norm) {
        auto d = to_dev(g);
        chk.fill_bytes(0);
        cuda::grad_sumsq_into(d.data(), off, chk.data());
        cuda::adamw_prepare(fused, ts, lr, 0.9, 0.95, 0.1, max_norm);
        cuda::adamw_nonfinite_into(fused, dq.data(), d.data(), chk.data());
        return chk.download()[0].bad;
    };
    std::vector<float> nanw = w;
    nanw[off / 2] = NAN;
    dq.upload(nanw);
    EXPECT_EQ(check_bad(gr, 1e-2, 1.0), 0.0) << "the check read the weights although the bound proves the step";
    EXPECT_GT(check_bad(gr, 1e39, 1.0), 0.0) << "an overflowing learning rate";
    std::vector<float> huge = gr;
    huge[7] = 1e20f;  // finite, but its square overflows v without clipping
    EXPECT_GT(check_bad(huge, 1e-2, 0.0), 0.0) << "an overflowing square";
    cuda::adamw_forget_bound(fused);
    EXPECT_EQ(check_bad(gr, 1e-2, 1.0), 1.0) << "the NaN weight, once the bound is forgotten";
    dq.upload(w);
    EXPECT_EQ(check_bad(huge, 1e-2, 1.0), 0.0) << "clipped, the same gradients are finite";
    cuda::adamw_step_checked(fused, dq.data(), dh.data(), chk.data());  // bound again (prepared as the last check)
    dq.upload(nanw);
    EXPECT_EQ(check_bad(gr, 1e-2, 1.0), 0.0) << "an update makes the bound hold again";
    // Copies that overlap, or reach past the parameters, are refused.
    cuda::AdamWCuda overlap, past;
    EXPECT_THROW(cuda::adamw_copy_bf16(overlap, {{25, 5, copy.data() + 20}, {10, 20, copy.data()}}),
                 std::invalid_argument);
    cuda::adamw_copy_bf16(past, {{off - 2, 5, copy.data()}});
    EXPECT_THROW(cuda::adamw_step(past, dq.data(), dh.data(), ts, 1e-2, 0.9, 0.95, 0.1), std::invalid_argument);
    EXPECT_EQ(past.step, 0) << "a refused step is not counted";
}

// A learnable stream of tokens (each token mostly followed by a fixed successor) and fixed batches.
struct Batches {
    std::vector<int32_t> data;
    std::mt19937_64 rng{41};
    explicit Batches(int V) {
        std::mt19937_64 r(40);
        int32_t t = 0;
        for (int i = 0; i < 20000; i++) data.push_back(t = (r() % 4 == 0) ? (int32_t)(r() % V) : (t * 7 + 3) % V);
    }
    void next(int B, int Tn, std::vector<int32_t>& in, std::vector<int32_t>& tg) {
        in.resize(B * Tn), tg.resize(B * Tn);
        for (int b = 0; b < B; b++) {
            const size_t at = rng() % (data.size() - Tn - 1);
            for (int t = 0; t < Tn; t++) in[b * Tn + t] = data[at + t], tg[b * Tn + t] = data[at + t + 1];
        }
    }
};

TrainConfig train_config() {
    TrainConfig c;
    c.learning_rate = 3e-3;
    c.min_lr = 3e-4;
    c.warmup_iters = 5;
    c.lr_decay_iters = 20;
    c.grad_clip = 1.0;
    c.weight_decay = 0.1;
    c.beta1 = 0.9;
    c.beta2 = 0.95;
    return c;
}

ModelConfig model_config(const std::string& type, int n) { return test::sized_config(type, n, 24, 3, 29, 33); }

struct Step {
    double loss, norm;
};

// `steps` training steps of the GPU model, train_step's order: zero, forward, backward, norm,
// clip, AdamW at lr_at.
std::vector<Step> gpu_run(const GPT<float>& init, int steps, int B, int Tn, std::vector<float>* params_out,
                          std::vector<float>* grads_out) {
    const TrainConfig tc = train_config();
    GptCuda g;
    gpt_cuda_build(g, init);
    cuda::AdamWCuda adam;
    Batches data(init.V);
    std::vector<int32_t> in, tg;
    std::vector<Step> out;
    const long count = gpt_cuda_param_count(g);
    for (int s = 0; s < steps; s++) {
        data.next(B, Tn, in, tg);
        gpt_cuda_zero_grad(g);
        const double loss = gpt_cuda_forward(g, in.data(), tg.data(), B, Tn);
        gpt_cuda_backward(g);
        const double norm = cuda::grad_norm(g.grad.data(), count);
        if (grads_out) grads_out->resize(count), gpt_cuda_download_grads(g, grads_out->data());
        cuda::clip_grad(g.grad.data(), count, norm, tc.grad_clip);
        cuda::adamw_step(adam, g.param.data(), g.grad.data(), g.host.params, lr_at(tc, s), tc.beta1, tc.beta2,
                         tc.weight_decay);
        out.push_back({loss, norm});
    }
    if (params_out) params_out->resize(count), gpt_cuda_download_params(g, params_out->data());
    return out;
}

class CudaTrain : public test::CudaTest, public testing::WithParamInterface<std::pair<std::string, int>> {};

TEST_P(CudaTrain, TwentyStepsTrackTheCpu) {
    const auto& [type, n] = GetParam();
    GPT<float> m;
    gpt_build(m, model_config(type, n));
    gpt_init(m, 7);
    const int B = 2, Tn = 33, steps = 20;
    std::vector<float> gparams;
    const std::vector<Step> gpu = gpu_run(m, steps, B, Tn, &gparams, nullptr);

    const TrainConfig tc = train_config();
    AdamW<float> adam;
    Batches data(m.V);
    std::vector<int32_t> in, tg;
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        data.next(B, Tn, in, tg);
        gpt_zero_grad(m);
        const double loss = gpt_forward(m, in.data(), tg.data(), B, Tn);
        gpt_backward(m);
        const double norm = grad_norm(m.grad.data(), (long)m.grad.size());
        clip_grad(m.grad.data(), (long)m.grad.size(), norm, tc.grad_clip);
        adamw_step(adam, m.param.data(), m.grad.data(), m.params, lr_at(tc, s), tc.beta1, tc.beta2, tc.weight_decay);
        EXPECT_NEAR(gpu[s].loss, loss, 1e-4) << "step " << s;
        EXPECT_NEAR(gpu[s].norm, norm, 1e-3 * norm) << "step " << s;
        worst = std::max(worst, std::fabs(gpu[s].loss - loss));
    }
    EXPECT_LT(gpu.back().loss, gpu.front().loss - 0.1) << "the model did not learn";
    // Adam's normalised steps let fp32 noise in near-zero gradients move weights by up to lr, so the
    // weights are held to a looser bound than the losses.
    const double werr = test::rel_err(gparams, m.param);
    EXPECT_LT(werr, 1e-3) << "weights after " << steps << " steps";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3g", worst);
    RecordProperty("max_loss_diff", buf);
    std::snprintf(buf, sizeof buf, "%.3g", werr);
    RecordProperty("max_rel_err", buf);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaTrain,
                         testing::Values(std::pair<std::string, int>{"none", 1}, std::pair<std::string, int>{"hc", 3},
                                         std::pair<std::string, int>{"mhc", 4},
                                         std::pair<std::string, int>{"mhc_lite", 4},
                                         std::pair<std::string, int>{"kromhc", 4},
                                         std::pair<std::string, int>{"jpmhc", 4},
                                         std::pair<std::string, int>{"ohc", 4}),
                         [](const auto& i) { return i.param.first + "_n" + std::to_string(i.param.second); });

class CudaDeterminism : public test::CudaTest {};

// Two runs from the same start: the same bits in every loss, norm, gradient and weight.
TEST_F(CudaDeterminism, TwoRunsAreBitIdentical) {
    for (const auto& [type, n] :
         std::vector<std::pair<std::string, int>>{{"mhc_lite", 4}, {"mhc", 4}, {"hc", 3}, {"jpmhc", 4}, {"ohc", 4}}) {
        GPT<float> m;
        gpt_build(m, model_config(type, n));
        gpt_init(m, 9);
        std::vector<float> p1, p2, g1, g2;
        const std::vector<Step> a = gpu_run(m, 5, 3, 33, &p1, &g1), b = gpu_run(m, 5, 3, 33, &p2, &g2);
        for (size_t s = 0; s < a.size(); s++) {
            EXPECT_EQ(std::memcmp(&a[s].loss, &b[s].loss, sizeof(double)), 0) << type << " loss, step " << s;
            EXPECT_EQ(std::memcmp(&a[s].norm, &b[s].norm, sizeof(double)), 0) << type << " norm, step " << s;
        }
        ASSERT_EQ(g1.size(), g2.size());
        EXPECT_EQ(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)), 0) << type << " gradients";
        EXPECT_EQ(std::memcmp(p1.data(), p2.data(), p1.size() * sizeof(float)), 0) << type << " weights";
    }
}

class CudaEngineStep : public test::CudaTest {};

// Two copies of one small mhc_lite model and their optimizers, a config of two micro-batches and
// random tokens: two ways of stepping, side by side.
struct Twins {
    TrainConfig tc = train_config();
    TokenData data;
    GPT<float> m1, m2;
    AdamW<float> a1, a2;
    Twins(uint64_t data_seed, uint64_t init_seed) {
        tc.batch_size = 2, tc.gradient_accumulation_steps = 2;
        tc.model = model_config("mhc_lite", 4);
        tc.model.block_size = 17;
        data.vocab_size = tc.model.vocab_size;
        std::mt19937_64 rng(data_seed);
        std::vector<uint32_t> ids;
        for (int i = 0; i < 2000; i++) ids.push_back((uint32_t)(rng() % data.vocab_size));
        data.tokens = Tokens(std::move(ids));
        gpt_build(m1, tc.model), gpt_build(m2, tc.model);
        gpt_init(m1, init_seed), gpt_init(m2, init_seed);
    }
};

// The GPU engine's step (every decision on the device, one wait) against Engine::step's default
// (the same calls, each decision on the host), from the same model on the same batches: the same
// bits in every loss, norm and weight, and the same skipped steps: a forced non-finite gradient
// (the NaN guard's test hook) and a learning rate that overflows the update. Two micro-batches.
TEST_F(CudaEngineStep, DeviceDecisionsEqualTheHostsBitForBit) {
    cuda_engine_register();
    Twins t(41, 5);
    const TrainConfig& tc = t.tc;
    const TokenData& data = t.data;
    GPT<float>&m1 = t.m1, &m2 = t.m2;
    AdamW<float>&a1 = t.a1, &a2 = t.a2;
    auto dev = engine_make("cuda", m1, a1), host = engine_make("cuda", m2, a2);
    Batcher b1(data, tc.batch_size, tc.model.block_size, Order::random, 3),
        b2(data, tc.batch_size, tc.model.block_size, Order::random, 3);
    std::vector<int32_t> in((size_t)tc.batch_size * tc.model.block_size), tg(in.size());
    const std::vector<std::string> expect = {"", "", "loss", "", "update", ""};
    for (int s = 0; s < (int)expect.size(); s++) {
        const double lr = s == 4 ? 1e39 : lr_at(tc, s);  // lr / bias correction overflows fp32
        const bool force = s == 2;
        const StepStats d = dev->step(b1, tc, lr, in.data(), tg.data(), force);
        const StepStats h = host->Engine::step(b2, tc, lr, in.data(), tg.data(), force);
        EXPECT_EQ(std::string(d.nonfinite), expect[s]) << "step " << s;
        EXPECT_EQ(std::string(h.nonfinite), expect[s]) << "step " << s;
        EXPECT_EQ(d.finite, expect[s].empty()) << "step " << s;
        EXPECT_EQ(d.finite, h.finite) << "step " << s;
        EXPECT_EQ(std::memcmp(&d.loss, &h.loss, sizeof(double)), 0) << "loss, step " << s << ": " << d.loss << " " << h.loss;
        if (!force) {  // the poisoned norm is NaN on both sides
            EXPECT_EQ(std::memcmp(&d.grad_norm, &h.grad_norm, sizeof(double)), 0) << "norm, step " << s;
        }
        EXPECT_GE(d.optimizer_s, 0.0);
    }
    dev->to_host(), host->to_host();
    EXPECT_EQ(a1.step, 4);  // six steps, two skipped
    EXPECT_EQ(a2.step, 4);
    ASSERT_EQ(m1.param.size(), m2.param.size());
    EXPECT_EQ(std::memcmp(m1.param.data(), m2.param.data(), m1.param.size() * sizeof(float)), 0) << "weights";
    EXPECT_EQ(a1.m, a2.m);
    EXPECT_EQ(a1.v, a2.v);
}

// cuda_graphs (cuda/graph.h): the engine's step replayed from graphs against the same engine
// without them, from the same model on the same batches, fp32 and bf16: the same bits in every
// loss, norm, weight and moment, through a changing learning rate, two micro-batches, a forced
// non-finite gradient, an update that overflows, and evaluations between steps, one of them of
// another batch shape (its activations are planned anew, so the graphs are captured again), and
// the graphs did run: every step after the first is three launches (two micro-batches, the update).
// Two tests, so that the sanitized suite can leave out the bf16 one (scripts/test_sanitized.sh).
void graphs_give_the_same_bits(bool bf16) {
    cuda_engine_register();
    Twins t(43, 6);
    const TrainConfig& tc = t.tc;
    const TokenData& data = t.data;
    GPT<float>&m1 = t.m1, &m2 = t.m2;
    AdamW<float>&a1 = t.a1, &a2 = t.a2;
    EngineOptions direct, graphs;
    direct.bf16 = graphs.bf16 = bf16;
    graphs.cuda_graphs = true;
    auto plain = engine_make("cuda", m1, a1, direct), replayed = engine_make("cuda", m2, a2, graphs);
    Batcher b1(data, tc.batch_size, tc.model.block_size, Order::random, 3),
        b2(data, tc.batch_size, tc.model.block_size, Order::random, 3);
    std::vector<int32_t> in((size_t)tc.batch_size * tc.model.block_size), tg(in.size());
    const std::string what = bf16 ? "bf16" : "fp32";
    testing::internal::CaptureStderr();
    for (int s = 0; s < 8; s++) {
        const double lr = s == 4 ? 1e39 : lr_at(tc, s);
        const bool force = s == 2;
        const StepStats p = plain->step(b1, tc, lr, in.data(), tg.data(), force);
        const StepStats r = replayed->step(b2, tc, lr, in.data(), tg.data(), force);
        EXPECT_EQ(p.finite, s != 2 && s != 4) << what << ", step " << s;
        EXPECT_EQ(std::string(p.nonfinite), std::string(r.nonfinite)) << what << ", step " << s;
        EXPECT_EQ(std::memcmp(&p.loss, &r.loss, sizeof(double)), 0) << what << " loss, step " << s;
        if (!force) {
            EXPECT_EQ(std::memcmp(&p.grad_norm, &r.grad_norm, sizeof(double)), 0) << what << " norm, step " << s;
        }
        if (s == 3 || s == 5) {  // an evaluation: the training shape, then a shape of its own
            const int B = s == 3 ? tc.batch_size : 1, T = s == 3 ? tc.model.block_size : 5;
            const double e1 = plain->forward(in.data(), tg.data(), B, T), e2 = replayed->forward(in.data(), tg.data(), B, T);
            EXPECT_EQ(std::memcmp(&e1, &e2, sizeof(double)), 0) << what << " evaluation after step " << s;
        }
    }
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(err, "") << what;
    EXPECT_EQ(plain->graph_replays(), 0);
    EXPECT_EQ(replayed->graph_replays(), 3 * 7) << what;
    plain->to_host(), replayed->to_host();
    EXPECT_EQ(a1.step, 6) << what;  // eight steps, two skipped
    EXPECT_EQ(a2.step, 6) << what;
    EXPECT_EQ(std::memcmp(m1.param.data(), m2.param.data(), m1.param.size() * sizeof(float)), 0) << what << " weights";
    EXPECT_EQ(a1.m, a2.m) << what;
    EXPECT_EQ(a1.v, a2.v) << what;
}
TEST_F(CudaEngineStep, GraphsGiveTheSameBits) { graphs_give_the_same_bits(false); }
TEST_F(CudaEngineStep, GraphsGiveTheSameBitsInBf16) { graphs_give_the_same_bits(true); }

// A capture that CUDA refuses (the test hook puts a wait in it): one line on stderr, graphs off for
// the rest of the run, every step run directly, so the same bits as an engine without graphs.
TEST_F(CudaEngineStep, RefusedCaptureRunsWithoutGraphs) {
    cuda_engine_register();
    Twins t(47, 7);
    EngineOptions graphs;
    graphs.cuda_graphs = true;
    auto plain = engine_make("cuda", t.m1, t.a1), refused = engine_make("cuda", t.m2, t.a2, graphs);
    Batcher b1(t.data, t.tc.batch_size, t.tc.model.block_size, Order::random, 3),
        b2(t.data, t.tc.batch_size, t.tc.model.block_size, Order::random, 3);
    std::vector<int32_t> in((size_t)t.tc.batch_size * t.tc.model.block_size), tg(in.size());
    setenv("MHC_TEST_REFUSE_CAPTURE", "1", 1);
    testing::internal::CaptureStderr();
    for (int s = 0; s < 4; s++) {
        const StepStats p = plain->step(b1, t.tc, lr_at(t.tc, s), in.data(), tg.data(), false);
        const StepStats r = refused->step(b2, t.tc, lr_at(t.tc, s), in.data(), tg.data(), false);
        EXPECT_EQ(std::memcmp(&p.loss, &r.loss, sizeof(double)), 0) << "loss, step " << s;
        EXPECT_EQ(std::memcmp(&p.grad_norm, &r.grad_norm, sizeof(double)), 0) << "norm, step " << s;
    }
    const std::string err = testing::internal::GetCapturedStderr();
    unsetenv("MHC_TEST_REFUSE_CAPTURE");
    EXPECT_EQ(err.rfind("mhc: cuda_graphs off for this run: ", 0), 0u) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_EQ(refused->graph_replays(), 0);
    plain->to_host(), refused->to_host();
    EXPECT_EQ(std::memcmp(t.m1.param.data(), t.m2.param.data(), t.m1.param.size() * sizeof(float)), 0) << "weights";
}

}  // namespace
