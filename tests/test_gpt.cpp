// The whole GPT: finite differences in double over every parameter, for every variant; layout,
// decay set and initialisation per SPEC §3–§5.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "gpt_util.h"
#include "mhc/diag.h"
#include "mhc/gpt.h"

using namespace mhc;

namespace {

ModelConfig tiny(const std::string& type, bool bias = false) { return test::tiny_config(type, bias); }

class GptFiniteDiff : public testing::TestWithParam<std::pair<std::string, bool>> {};

TEST_P(GptFiniteDiff, EveryParameter) {
    const auto [type, bias] = GetParam();
    GPT<double> m;
    test::make_perturbed(m, tiny(type, bias), 5);  // away from init: every path matters
    const int B = 2, Tn = 4;
    std::vector<int32_t> in(B * Tn), tg(B * Tn);
    for (int i = 0; i < B * Tn; i++) in[i] = (i * 7 + 3) % 11, tg[i] = (i * 5 + 1) % 11;
    gpt_zero_grad(m);
    gpt_forward(m, in.data(), tg.data(), B, Tn);
    gpt_backward(m, 0.5);  // the scale multiplies every gradient
    const std::vector<double> an = m.grad;
    const double h = 1e-6;
    double worst = 0;
    std::string where;
    for (const auto& t : m.params)
        for (long i = 0; i < t.size; i++) {
            double& x = m.param[t.offset + i];
            const double x0 = x;
            x = x0 + h;
            const double lp = gpt_forward(m, in.data(), tg.data(), B, Tn);
            x = x0 - h;
            const double lm = gpt_forward(m, in.data(), tg.data(), B, Tn);
            x = x0;
            const double fd = 0.5 * (lp - lm) / (2 * h);
            const double err = std::fabs(fd - an[t.offset + i]) / std::max(1.0, std::fabs(fd));
            if (err > worst) worst = err, where = t.name + "[" + std::to_string(i) + "]";
        }
    EXPECT_LT(worst, 1e-6) << "worst at " << where;
}

INSTANTIATE_TEST_SUITE_P(Gpt, GptFiniteDiff, testing::ValuesIn(test::all_model_variants()),
                         [](const auto& info) { return test::model_variant_name(info); });

TEST(GptLayout, NamesShapesDecayAndInit) {
    GPT<float> m;
    ModelConfig c = tiny("mhc_lite");
    c.n_layer = 6;
    c.n_embd = 64;
    c.vocab_size = 256;
    c.block_size = 32;
    gpt_build(m, c);
    gpt_init(m, 1);
    std::set<std::string> names;
    for (const auto& t : m.params) names.insert(t.name);
    for (const char* want : {"transformer.wte.weight", "transformer.wpe.weight",
                             "transformer.h.0.branch_attn.0.weight",
                             "transformer.h.0.branch_attn.1.c_attn.weight",
                             "transformer.h.5.branch_mlp.1.c_proj.weight",
                             "transformer.h.3.hc_attn.dynamic_alpha_fn", "transformer.h.3.hc_mlp.h_post_scale",
                             "transformer.ln_f.weight"})
        EXPECT_TRUE(names.count(want)) << want;
    EXPECT_FALSE(names.count("lm_head.weight"));  // tied to wte
    EXPECT_FALSE(names.count("transformer.ln_f.bias"));
    for (const auto& t : m.params) {
        const bool matrix = t.name.find("c_attn.weight") != std::string::npos ||
                            t.name.find("c_proj.weight") != std::string::npos ||
                            t.name.find("c_fc.weight") != std::string::npos ||
                            t.name.find("wte") != std::string::npos || t.name.find("wpe") != std::string::npos ||
                            t.name.find("dynamic_alpha_fn") != std::string::npos ||
                            t.name.find("dynamic_beta_fn") != std::string::npos;
        EXPECT_EQ(t.decay, matrix) << t.name;  // SPEC §5: nothing else decays
        auto stats = [&] {
            double s = 0, s2 = 0;
            for (long i = 0; i < t.size; i++) s += m.param[t.offset + i], s2 += (double)m.param[t.offset + i] * m.param[t.offset + i];
            return std::pair{s / t.size, std::sqrt(s2 / t.size)};
        };
        if (t.name.find("c_proj.weight") != std::string::npos) {
            EXPECT_NEAR(stats().second, 0.02 / std::sqrt(12.0), 0.0015) << t.name;
        } else if (t.name.find("c_fc.weight") != std::string::npos || t.name.find("wte") != std::string::npos) {
            EXPECT_NEAR(stats().second, 0.02, 0.001) << t.name;
        } else if (t.name.find("branch_attn.0.weight") != std::string::npos) {
            EXPECT_EQ(stats().first, 1.0) << t.name;
        }
    }
    // the connection parameters start at SPEC §2's values: site 2i+1's primary stream is (2i+1) mod n
    const ParamTensor* sb = nullptr;
    for (const auto& t : m.params)
        if (t.name == "transformer.h.1.hc_mlp.static_beta") sb = &t;
    ASSERT_NE(sb, nullptr);
    for (int s = 0; s < 4; s++) EXPECT_EQ(m.param[sb->offset + s], s == 3 ? 1.0f : -1.0f);
}

TEST(GptLayout, BadShapesAndTokensAreErrors) {
    GPT<float> m;
    ModelConfig c = tiny("mhc_lite");
    c.n_embd = 10;
    c.n_head = 3;
    EXPECT_THROW(gpt_build(m, c), std::invalid_argument);
    c = tiny("kromhc");
    c.hyper_conn_n = 3;
    EXPECT_THROW(gpt_build(m, c), std::invalid_argument);
    c = tiny("ohc");
    c.hyper_conn_n = 3;  // ohc rotates exactly 4 streams
    EXPECT_THROW(gpt_build(m, c), std::invalid_argument);
    c = tiny("jpmhc");
    c.cayley_iters = -1;
    EXPECT_THROW(gpt_build(m, c), std::invalid_argument);
    gpt_build(m, tiny("mhc_lite"));
    std::vector<int32_t> in(8, 3), bad(8, 11);
    EXPECT_THROW(gpt_forward(m, bad.data(), nullptr, 2, 4), std::invalid_argument);  // id >= V
    EXPECT_THROW(gpt_forward(m, in.data(), nullptr, 1, 8), std::invalid_argument);   // T > block
    EXPECT_TRUE(std::isnan(gpt_forward(m, in.data(), nullptr, 2, 4)));              // no targets
    EXPECT_THROW(gpt_backward(m), std::logic_error);
}

}  // namespace

// Activation recompute (GPT::recompute) changes where intermediates live, not what is computed:
// the same loss, the same gradient bits and the same diagnostics, over two steps of the same model,
// in the buffers the memory estimate predicts (one stream state per block fewer, one u for all).
TEST(GptRecompute, SameBitsInLessMemory) {
    for (const auto& [type, bias] : test::all_model_variants()) {
        const ModelConfig c = test::tiny_config(type, bias, 6);
        GPT<float> keep, again;
        test::make_perturbed(keep, c, 3);
        test::make_perturbed(again, c, 3);
        again.recompute = true;
        const int B = 2, Tn = 6, N = B * Tn;
        std::vector<int32_t> in(N), tg(N);
        for (int step = 0; step < 2; step++) {
            for (int i = 0; i < N; i++) in[i] = (i * 7 + 3 + step) % 11, tg[i] = (i * 5 + 1 + step) % 11;
            for (GPT<float>* m : {&keep, &again}) {
                gpt_zero_grad(*m);
                gpt_forward(*m, in.data(), tg.data(), B, Tn);
                gpt_backward(*m, 0.5);
            }
            EXPECT_EQ(keep.loss, again.loss) << type;
            EXPECT_EQ(keep.grad, again.grad) << type << " step " << step;
            EXPECT_EQ(gpt_diagnostics(keep), gpt_diagnostics(again)) << type;
        }
        EXPECT_EQ((double)(again.act.size() + again.gact.size()),
                  gpt_memory_estimate(c, B, Tn, false, true).activations) << type;
        const long S = (long)N * keep.n * keep.C, L = keep.L;
        EXPECT_EQ((long)keep.act.size() - (long)again.act.size(), (L - 1) * S + (2 * L - 1) * (long)N * keep.C) << type;
    }
}
