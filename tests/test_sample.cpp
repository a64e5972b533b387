// Inference: the KV-cache forward against the full forward for every variant, greedy and sampled
// generation against the full forward on the growing sequence, the context restart past
// block_size, the one-position-per-token guarantee, the sampler and the argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <tuple>

#include "gpt_util.h"
#include "mhc/sample.h"

using namespace mhc;

namespace {

ModelConfig small(const std::string& type, bool bias = false) { return test::tiny_config(type, bias, 8); }

Sampling S(double temperature, int top_k, uint64_t seed = 1, double top_p = 1) {
    Sampling s;
    s.temperature = temperature;
    s.top_k = top_k;
    s.seed = seed;
    s.top_p = top_p;
    return s;
}

template <typename T> void make(GPT<T>& m, const ModelConfig& c, uint64_t seed = 5) {
    test::make_perturbed(m, c, seed);
}

// Logits of the last position of a full forward over seq.
template <typename T> std::vector<T> full_last(GPT<T>& m, const std::vector<int32_t>& seq) {
    const int Tn = (int)seq.size();
    gpt_forward(m, seq.data(), nullptr, 1, Tn);
    return std::vector<T>(m.logits + (long)(Tn - 1) * m.V, m.logits + (long)Tn * m.V);
}

template <typename T> int32_t argmax(const std::vector<T>& v) {
    return (int32_t)(std::max_element(v.begin(), v.end()) - v.begin());  // first of equals
}

// Worst over positions of max |incremental - full| / max |full| (per position).
template <typename T> double incremental_error(const ModelConfig& c) {
    GPT<T> m;
    make(m, c);
    const int Tn = c.block_size, V = c.vocab_size;
    std::vector<int32_t> seq(Tn);
    for (int t = 0; t < Tn; t++) seq[t] = (t * 7 + 3) % V;
    gpt_forward(m, seq.data(), nullptr, 1, Tn);
    const std::vector<T> full(m.logits, m.logits + (long)Tn * V);
    KVCache<T> kv;
    kv_cache_init(kv, m);
    double worst = 0;
    for (int t = 0; t < Tn; t++) {
        const T* got = gpt_forward_token(m, kv, seq[t]);
        double diff = 0, scale = 0;
        for (int i = 0; i < V; i++) {
            diff = std::max(diff, std::fabs((double)got[i] - (double)full[(long)t * V + i]));
            scale = std::max(scale, std::fabs((double)full[(long)t * V + i]));
        }
        worst = std::max(worst, diff / scale);
    }
    return worst;
}

class SampleIncremental : public testing::TestWithParam<std::pair<std::string, bool>> {};

TEST_P(SampleIncremental, MatchesFullForwardDouble) {
    const auto [type, bias] = GetParam();
    EXPECT_LE(incremental_error<double>(small(type, bias)), 1e-10);
}

TEST_P(SampleIncremental, MatchesFullForwardFloat) {
    const auto [type, bias] = GetParam();
    EXPECT_LE(incremental_error<float>(small(type, bias)), 1e-5);
}

TEST_P(SampleIncremental, MoreHeadsFloat) {
    auto c = small(GetParam().first, GetParam().second);
    c.n_embd = 32, c.n_head = 4, c.block_size = 24, c.vocab_size = 37;
    EXPECT_LE(incremental_error<float>(c), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Sample, SampleIncremental, testing::ValuesIn(test::all_model_variants()),
                         [](const auto& info) { return test::model_variant_name(info); });

// The reference of greedy generation: the full forward on the growing window, restarting from the
// last block_size/2 tokens when the window outgrows block_size (the rule generate documents).
template <typename T>
std::vector<int32_t> greedy_reference(GPT<T>& m, std::vector<int32_t> win, int count) {
    std::vector<int32_t> out;
    for (int i = 0; i < count; i++) {
        const int32_t tok = argmax(full_last(m, win));
        out.push_back(tok);
        win.push_back(tok);
        if ((int)win.size() > m.Tmax) win.erase(win.begin(), win.end() - std::max(1, m.Tmax / 2));
    }
    return out;
}

TEST(SampleGenerate, GreedyEqualsFullForwardArgmax) {
    for (const char* type : {"none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc"}) {
        GPT<float> m;
        make(m, small(type));
        const std::vector<int32_t> prompt = {3, 1, 4};
        const auto got = generate(m, prompt, 5, S(0.0, 0, 1));
        EXPECT_EQ(got, greedy_reference(m, prompt, 5)) << type;
    }
}

TEST(SampleGenerate, GreedyPastBlockSizeRestartsFromHalfTheContext) {
    GPT<double> m;
    make(m, small("mhc_lite"));
    const std::vector<int32_t> prompt = {2, 7, 1};
    const auto got = generate(m, prompt, 30, S(0.0, 0, 1));
    ASSERT_EQ(got.size(), 30u);
    EXPECT_EQ(got, greedy_reference(m, prompt, 30));
    // A prompt longer than block_size keeps its last block_size tokens.
    std::vector<int32_t> longp(20);
    for (int i = 0; i < 20; i++) longp[i] = (i * 5 + 2) % 11;
    const std::vector<int32_t> tail(longp.end() - 8, longp.end());
    EXPECT_EQ(generate(m, longp, 12, S(0.0, 0, 1)), greedy_reference(m, tail, 12));
}

TEST(SampleGenerate, SampledPastBlockSizeWorks) {
    GPT<float> m;
    make(m, small("mhc"));
    int calls = 0;
    const auto got = generate(m, {1}, 50, S(1.0, 0, 9), [&](int32_t t) {
        EXPECT_GE(t, 0);
        EXPECT_LT(t, 11);
        calls++;
    });
    EXPECT_EQ(got.size(), 50u);
    EXPECT_EQ(calls, 50);
}

TEST(SampleGenerate, SeededAndDeterministic) {
    GPT<float> m;
    make(m, small("mhc_lite"));
    const std::vector<int32_t> prompt = {5};
    const auto a = generate(m, prompt, 24, S(2.0, 0, 42));
    EXPECT_EQ(a, generate(m, prompt, 24, S(2.0, 0, 42)));
    EXPECT_NE(a, generate(m, prompt, 24, S(2.0, 0, 43)));
    // on_token streams exactly the returned tokens, in order
    std::vector<int32_t> streamed;
    generate(m, prompt, 24, S(2.0, 0, 42), [&](int32_t t) { streamed.push_back(t); });
    EXPECT_EQ(streamed, a);
}

TEST(SampleGenerate, TopKOneIsGreedy) {
    GPT<float> m;
    make(m, small("kromhc"));
    const std::vector<int32_t> prompt = {0, 9};
    EXPECT_EQ(generate(m, prompt, 20, S(1.5, 1, 3)), generate(m, prompt, 20, S(0.0, 0, 3)));
}

TEST(SampleGenerate, TopKThreeStaysAmongTheThreeLargest) {
    GPT<float> m;
    make(m, small("hc"));
    std::vector<int32_t> seq = {4, 4};
    const auto got = generate(m, seq, 6, S(5.0, 3, 11));  // a high temperature: all 3 get drawn
    for (int32_t tok : got) {
        std::vector<float> l = full_last(m, seq);
        std::vector<float> sorted = l;
        std::sort(sorted.rbegin(), sorted.rend());
        EXPECT_GE(l[tok], sorted[2] - 1e-5f) << "token " << tok;  // 1e-5: incremental vs full rounding
        seq.push_back(tok);
    }
}

// Each generated token costs exactly one new position; a step writes only its own cache row.
TEST(SampleCache, OnePositionPerToken) {
    GPT<float> m;
    make(m, small("mhc_lite"));
    KVCache<float> kv;
    const std::vector<int32_t> prompt = {1, 2, 3};
    int i = 0;
    generate(m, kv, prompt, 5, S(1.0, 0, 7), [&](int32_t) {
        EXPECT_EQ(kv.positions_processed, 3 + i) << "token " << i;  // the prompt, then one per token
        i++;
    });
    EXPECT_EQ(kv.positions_processed, 3 + 5 - 1);  // the last token is never fed
    EXPECT_EQ(kv.pos, 7);

    const std::vector<float> k0 = kv.k, v0 = kv.v;
    const int C = m.C, pos = kv.pos;
    gpt_forward_token(m, kv, 6);
    EXPECT_EQ(kv.positions_processed, 8);
    for (int l = 0; l < m.L; l++)
        for (int t = 0; t < m.Tmax; t++) {
            const long o = ((long)l * m.Tmax + t) * C;
            const bool same = std::equal(k0.begin() + o, k0.begin() + o + C, kv.k.begin() + o) &&
                              std::equal(v0.begin() + o, v0.begin() + o + C, kv.v.begin() + o);
            EXPECT_EQ(same, t != pos) << "layer " << l << " position " << t;
        }
    // Past block_size: after the prompt, each restart re-feeds block_size/2 = 4 positions.
    generate(m, kv, prompt, 20, S(1.0, 0, 7));
    long want = 3, p = 3;
    for (int j = 1; j < 20; j++) {
        if (p < 8) want += 1, p += 1;
        else want += 4, p = 4;
    }
    EXPECT_EQ(kv.positions_processed, 8 + want);  // the counter is not reset by generate
}

TEST(SampleCache, ModelActivationsUntouched) {
    GPT<float> m;
    make(m, small("mhc"));
    const std::vector<int32_t> in = {1, 2, 3, 4}, tg = {2, 3, 4, 5};
    gpt_forward(m, in.data(), tg.data(), 1, 4);
    const std::vector<float> act = m.act;
    const double loss = m.loss;
    generate(m, {3}, 10, S(1.0, 0, 1));
    EXPECT_EQ(m.act, act);
    EXPECT_EQ(m.loss, loss);
    EXPECT_TRUE(m.have_targets);  // a backward of the training step can still follow
}

TEST(SampleCache, Errors) {
    GPT<float> m, other;
    make(m, small("mhc_lite"));
    make(other, small("none"));
    KVCache<float> kv;
    EXPECT_THROW(gpt_forward_token(m, kv, 0), std::invalid_argument);  // not initialised
    kv_cache_init(kv, other);
    EXPECT_THROW(gpt_forward_token(m, kv, 0), std::invalid_argument);  // another model's shape
    kv_cache_init(kv, m);
    EXPECT_THROW(gpt_forward_token(m, kv, 11), std::invalid_argument);
    EXPECT_THROW(gpt_forward_token(m, kv, -1), std::invalid_argument);
    for (int t = 0; t < 8; t++) gpt_forward_token(m, kv, t);
    EXPECT_THROW(gpt_forward_token(m, kv, 0), std::length_error);
    kv_cache_reset(kv);
    EXPECT_NO_THROW(gpt_forward_token(m, kv, 0));
}

TEST(SampleGenerate, InvalidArguments) {
    GPT<float> m;
    make(m, small("mhc_lite"));
    EXPECT_THROW(generate(m, {}, 3, S(1.0, 0, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {1, 11}, 3, S(1.0, 0, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {-2}, 3, S(1.0, 0, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {1}, 3, S(-0.5, 0, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {1}, 3, S(std::nan(""), 0, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {1}, 3, S(INFINITY, 0, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {1}, 3, S(1.0, -1, 1)), std::invalid_argument);
    EXPECT_THROW(generate(m, {1}, -1, S(1.0, 0, 1)), std::invalid_argument);
    try {
        generate(m, {1, 11}, 3, S(1.0, 0, 1));
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("prompt token 11 out of range 0..10"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(generate(m, {1}, 0, S(1.0, 0, 1)).empty());
    EXPECT_EQ(generate(m, {1}, 4, S(0.0, 100, 1)).size(), 4u);  // top_k >= V: no limit
}

TEST(SampleSampler, SplitMix64KnownValues) {
    SplitMix64 r(0);
    EXPECT_EQ(r.next(), 0xE220A8397B1DCDAFull);  // the published first output for seed 0
    SplitMix64 a(123), b(123);
    for (int i = 0; i < 100; i++) {
        const double u = a.uniform();
        EXPECT_GE(u, 0.0);
        EXPECT_LT(u, 1.0);
        EXPECT_EQ(u, b.uniform());
    }
}

TEST(SampleSampler, FrequenciesFollowSoftmax) {
    const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f};
    const double temp = 1.5;
    std::vector<double> p(5);
    double z = 0;
    for (int i = 0; i < 5; i++) z += p[i] = std::exp(logits[i] / temp);
    SplitMix64 rng(77);
    std::vector<int32_t> work;
    std::vector<int> count(5, 0);
    const int draws = 40000;
    for (int i = 0; i < draws; i++) count[sample_token(logits.data(), 5, S(temp, 0), rng, work)]++;
    for (int i = 0; i < 5; i++) EXPECT_NEAR((double)count[i] / draws, p[i] / z, 0.01) << "token " << i;
    // top_k = 2 renormalises over tokens 2 and 1 only
    std::fill(count.begin(), count.end(), 0);
    for (int i = 0; i < draws; i++) count[sample_token(logits.data(), 5, S(temp, 2), rng, work)]++;
    EXPECT_EQ(count[0] + count[3] + count[4], 0);
    EXPECT_NEAR((double)count[2] / draws, p[2] / (p[1] + p[2]), 0.01);
}

// Nucleus sampling, computed here from the probabilities: the fewest most likely tokens whose
// probabilities reach top_p, renormalised; alone and after top_k.
TEST(SampleSampler, TopPKeepsTheNucleus) {
    const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f};
    const double temp = 1.5;
    auto expect_draws = [&](int top_k, double top_p) {
        std::vector<int> order = {0, 1, 2, 3, 4};
        std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
        const int K = top_k > 0 ? top_k : 5;
        std::vector<double> p(5, 0.0);
        double z = 0;
        for (int i = 0; i < K; i++) z += p[order[i]] = std::exp(logits[order[i]] / temp);
        std::vector<double> want(5, 0.0);
        double kept = 0;
        for (int i = 0; i < K && kept < top_p * z; i++) kept += want[order[i]] = p[order[i]];
        for (double& w : want) w /= kept;
        SplitMix64 rng(5);
        std::vector<int32_t> work;
        std::vector<int> count(5, 0);
        const int draws = 40000;
        for (int i = 0; i < draws; i++) count[sample_token(logits.data(), 5, S(temp, top_k, 1, top_p), rng, work)]++;
        for (int i = 0; i < 5; i++) {
            if (want[i] == 0) {
                EXPECT_EQ(count[i], 0) << "token " << i << " top_k " << top_k << " top_p " << top_p;
            }
            EXPECT_NEAR((double)count[i] / draws, want[i], 0.01) << "token " << i << " top_k " << top_k << " top_p " << top_p;
        }
        return std::count_if(want.begin(), want.end(), [](double w) { return w > 0; });
    };
    EXPECT_EQ(expect_draws(0, 0.7), 3);   // 0.44 + 0.23 < 0.7 <= + 0.16: tokens 2, 1, 3
    EXPECT_EQ(expect_draws(0, 0.4), 1);   // the most likely alone reaches it: greedy
    EXPECT_EQ(expect_draws(0, 1.0), 5);
    EXPECT_EQ(expect_draws(2, 0.9), 2);   // top_k first, then the nucleus of what is left
    EXPECT_EQ(expect_draws(3, 0.6), 2);
    // Out of range.
    SplitMix64 rng(1);
    std::vector<int32_t> work;
    for (double bad : {0.0, -0.5, 1.5, (double)NAN})
        EXPECT_THROW(sample_token(logits.data(), 5, S(temp, 0, 1, bad), rng, work), std::invalid_argument) << bad;
}

TEST(SampleGenerate, StopsAfterAStopToken) {
    GPT<float> m;
    make(m, small("mhc_lite"));
    const std::vector<int32_t> prompt = {3, 1, 4};
    const auto ref = greedy_reference(m, prompt, 10);
    // The first token of the greedy run not seen before it: the run must end right after it.
    size_t j = 1;
    while (j < ref.size() && std::find(ref.begin(), ref.begin() + (long)j, ref[j]) != ref.begin() + (long)j) j++;
    ASSERT_LT(j, ref.size());
    int32_t absent = 0;  // 10 tokens cannot cover a vocabulary of 11
    while (std::find(ref.begin(), ref.end(), absent) != ref.end()) absent++;
    Sampling s = S(0.0, 0);
    s.stop = {absent, ref[j]};
    int calls = 0;
    const auto got = generate(m, prompt, 10, s, [&](int32_t) { calls++; });
    EXPECT_EQ(got, std::vector<int32_t>(ref.begin(), ref.begin() + (long)j + 1));
    EXPECT_EQ(calls, (int)j + 1);
    s.stop = {11};
    EXPECT_THROW(generate(m, prompt, 10, s), std::invalid_argument);  // outside the vocabulary
}

// Ids a tokenizer cannot decode (a padded vocabulary) are never drawn, however likely.
TEST(SampleSampler, OnlyAllowedIdsAreDrawn) {
    const std::vector<float> logits = {0.0f, 1.0f, 5.0f, 0.5f, 9.0f};
    Sampling s = S(0.0, 0);
    s.allowed = {1, 1, 0, 1, 0};
    SplitMix64 rng(3);
    std::vector<int32_t> work;
    EXPECT_EQ(sample_token(logits.data(), 5, s, rng, work), 1);  // greedy: the best allowed
    for (auto [temp, k, p] : {std::tuple{1.0, 0, 1.0}, {5.0, 2, 1.0}, {5.0, 0, 0.9}}) {
        s.temperature = temp, s.top_k = k, s.top_p = p;
        std::vector<int> count(5, 0);
        for (int i = 0; i < 3000; i++) count[sample_token(logits.data(), 5, s, rng, work)]++;
        EXPECT_EQ(count[2] + count[4], 0) << temp << " " << k << " " << p;
        EXPECT_GT(count[1], 0);
        if (k != 2) {
            EXPECT_GT(count[0] * count[3], 0);
        } else {
            EXPECT_EQ(count[0], 0);  // the top 2 of the allowed: 1 and 3
        }
    }
    s.allowed = {1, 1, 1};  // another vocabulary's
    EXPECT_THROW(sample_token(logits.data(), 5, s, rng, work), std::invalid_argument);
    s.allowed.assign(5, 0);
    EXPECT_THROW(sample_token(logits.data(), 5, s, rng, work), std::invalid_argument);
}

TEST(SampleSampler, TiesGoToTheLowerId) {
    const std::vector<double> flat(6, 0.25);
    SplitMix64 rng(1);
    std::vector<int32_t> work;
    EXPECT_EQ(sample_token(flat.data(), 6, S(0.0, 0), rng, work), 0);
    for (int i = 0; i < 200; i++) EXPECT_LT(sample_token(flat.data(), 6, S(1.0, 2), rng, work), 2);
    const std::vector<double> bad = {0.0, NAN, 1.0};
    EXPECT_THROW(sample_token(bad.data(), 3, S(1.0, 0), rng, work), std::runtime_error);
    const std::vector<double> peaked = {0.0, 3.0, 2.9};
    for (int i = 0; i < 50; i++) EXPECT_EQ(sample_token(peaked.data(), 3, S(1e-300, 0), rng, work), 1);
}

}  // namespace
