// What data-parallel training builds on, in one process: the backward's gradient-ready ranges (the
// hook the exchange is posted from), the per-block sums of squares behind the global norm, the
// single-process communicator, and data parallelism over one rank being today's step exactly.
// Several ranks under mpirun: tests/cli/test_mpi.py.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "gpt_util.h"
#include "mhc/optim.h"
#include "mhc/train.h"
#include "train/comm.h"
#include "train/data_parallel.h"
#include "train/guard.h"

namespace mhc {
namespace {

std::vector<int32_t> tokens(int count, int V, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> t(count);
    for (auto& x : t) x = (int32_t)(rng() % (uint64_t)V);
    return t;
}

class GradsReady : public ::testing::TestWithParam<std::pair<std::string, bool>> {};

// ln_f first, blocks L-1 .. 0, the embeddings last; together every parameter once; and each range's
// gradient is final when it is reported (the micro-batch's backward adds nothing to it after).
TEST_P(GradsReady, RangesCoverTheParametersOnceEachCompleteWhenReported) {
    GPT<float> m;
    test::make_perturbed(m, test::tiny_config(GetParam().first, GetParam().second), 7);
    const long P = (long)m.param.size();
    const auto in = tokens(2 * 4, m.V, 1), tg = tokens(2 * 4, m.V, 2);
    std::vector<std::pair<long, long>> ranges;
    std::vector<std::vector<float>> at_report;
    m.on_grads_ready = [&](long a, long b) {
        ranges.push_back({a, b});
        at_report.emplace_back(m.grad.begin() + a, m.grad.begin() + b);
    };
    gpt_zero_grad(m);
    gpt_forward(m, in.data(), tg.data(), 2, 4);
    gpt_backward(m);
    ASSERT_EQ((int)ranges.size(), m.L + 2);
    EXPECT_EQ(ranges.front(), std::make_pair(m.lnf_w, P));
    EXPECT_EQ(ranges.back(), std::make_pair(0L, m.blocks[0].ln1_w));
    std::vector<int> seen(P, 0);
    for (size_t k = 0; k < ranges.size(); k++) {
        for (long i = ranges[k].first; i < ranges[k].second; i++) seen[i]++;
        if (k >= 1 && k <= (size_t)m.L) {
            EXPECT_EQ(ranges[k].first, m.blocks[m.L - (int)k].ln1_w);
        }
        EXPECT_EQ(0, std::memcmp(at_report[k].data(), m.grad.data() + ranges[k].first,
                                 at_report[k].size() * sizeof(float)))
            << "range " << k << " changed after it was reported";
    }
    for (long i = 0; i < P; i++) ASSERT_EQ(seen[i], 1) << "parameter " << i;
}

INSTANTIATE_TEST_SUITE_P(Variants, GradsReady, ::testing::ValuesIn(test::all_model_variants()),
                         [](const auto& info) { return test::model_variant_name(info); });

TEST(GradNormBlocks, BlockSumsInOrderAreTheNormBitForBit) {
    for (long count : {1L, 100L, kNormBlock, kNormBlock + 1, 5 * kNormBlock + 123}) {
        std::mt19937_64 rng(count);
        std::normal_distribution<float> nd(0, 1);
        std::vector<float> g(count);
        for (auto& x : g) x = nd(rng);
        const long nb = (count + kNormBlock - 1) / kNormBlock;
        std::vector<double> part(nb);
        // Two halves computed apart, as two shards would, then added in block order.
        grad_sumsq_blocks(g.data(), count, 0, nb / 2, part.data());
        grad_sumsq_blocks(g.data(), count, nb / 2, nb, part.data() + nb / 2);
        double ss = 0;
        for (double p : part) ss += p;
        EXPECT_EQ(std::sqrt(ss), grad_norm(g.data(), count)) << count;
    }
}

TEST(CommSingle, OneRankCollectivesKeepTheData) {
    std::unique_ptr<Comm> c = comm_single_open();
    EXPECT_EQ(c->rank, 0);
    EXPECT_EQ(c->size, 1);
    EXPECT_STREQ(c->backend(), "single");
    EXPECT_TRUE(comm_any(*c, true));
    EXPECT_FALSE(comm_any(*c, false));
    EXPECT_EQ(comm_max(*c, 42), 42);
    EXPECT_EQ(comm_first_message(*c, "weight 'wte' holds NaN or inf"), "weight 'wte' holds NaN or inf");
    EXPECT_EQ(comm_first_message(*c, ""), "");
    double x[2] = {1.5, -2};
    c->allreduce_sum(x, 2);
    EXPECT_EQ(x[0], 1.5);
    EXPECT_EQ(x[1], -2);
    float v[3] = {1, 2, 3}, all[3] = {};
    c->gatherv(v, all, {3}, 0);
    EXPECT_EQ(all[2], 3);
    c->allgatherv(v, {3});
    EXPECT_EQ(v[1], 2);
    EXPECT_THROW(c->send(1, v, 1), std::logic_error);
    EXPECT_TRUE(c->report_failure());
}

// MPI's int counts: the shards' parts go in units of up to 2^14 values, so a model of billions of
// parameters gathers (with int counts of values it failed at about 2.3e9 parameters on 16 ranks).
TEST(CommGatherUnits, WholeBlocksInUnitsTheLastPartsRemainderApart) {
    const long B = 16384;
    GatherUnits g = comm_gather_units({3 * B, 5 * B, 2 * B + 7});
    EXPECT_EQ(g.unit, B);
    EXPECT_EQ(g.counts, (std::vector<int>{3, 5, 2}));
    EXPECT_EQ(g.displs, (std::vector<int>{0, 3, 8}));
    EXPECT_EQ(g.tail, 7);
    g = comm_gather_units({0, 0, 100});  // a model smaller than a block: the last rank owns it all
    EXPECT_EQ(g.unit, B);
    EXPECT_EQ(g.counts, (std::vector<int>{0, 0, 0}));
    EXPECT_EQ(g.tail, 100);
    g = comm_gather_units({6, 10, 7});  // parts of any size: the largest power of two dividing them
    EXPECT_EQ(g.unit, 2);
    EXPECT_EQ(g.counts, (std::vector<int>{3, 5, 3}));
    EXPECT_EQ(g.displs, (std::vector<int>{0, 3, 8}));
    EXPECT_EQ(g.tail, 1);
    // 3 billion parameters on 8 ranks (their shards as data_parallel.cpp bounds them).
    const long P = 3'000'000'000L, nb = (P + B - 1) / B;
    std::vector<long> counts;
    for (int q = 0; q < 8; q++) counts.push_back(std::min(P, (q + 1) * nb / 8 * B) - std::min(P, q * nb / 8 * B));
    g = comm_gather_units(counts);
    EXPECT_EQ(g.unit, B);
    long values = g.tail;
    for (int c : g.counts) values += c * g.unit;
    EXPECT_EQ(values, P);
    EXPECT_EQ(g.displs.back() * g.unit, P - counts.back());
    try {
        comm_gather_units({(1L << 31) + 1, 1});
        ADD_FAILURE() << "2^31 + 1 single values were accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "a gather of parts of 2147483649 values in units of 1: more than MPI's 2^31 - 1 units");
    }
}

TEST(CommSingle, NoLauncherNoMpi) {
    if (comm_launched_by_mpi()) GTEST_SKIP() << "running under an MPI launcher";
    EXPECT_STREQ(comm_world().backend(), "single");
}

// One rank: dp_train_step is train_step on the optimizer state itself, dp_evaluate is evaluate,
// dp_val_set_loss val_set_loss, dp_unsound_state the NaN guard's unsound_state, and the
// checkpoint's optimizer is that state.
TEST(DataParallelOneRank, IsTodaysStepExactly) {
    TrainConfig cfg;
    cfg.model = test::tiny_config("mhc_lite");
    cfg.batch_size = 2;
    cfg.gradient_accumulation_steps = 2;
    cfg.warmup_iters = 1;
    cfg.max_iters = 4;
    config_finalize(cfg);
    TokenData data;
    data.vocab_size = cfg.model.vocab_size;
    std::vector<uint16_t> ids;
    for (int32_t t : tokens(400, data.vocab_size, 3)) ids.push_back((uint16_t)t);
    data.tokens = Tokens(std::move(ids));
    GPT<float> a, b;
    gpt_build(a, cfg.model);
    gpt_init(a, 5);
    b = a;
    AdamW<float> adam_a, adam_b;
    Batcher ba(data, 2, cfg.model.block_size, Order::random, 9), bb(data, 2, cfg.model.block_size, Order::random, 9);
    std::unique_ptr<Comm> one = comm_single_open();
    const std::unique_ptr<Engine> ea = engine_make("cpu", a, adam_a), eb = engine_make("cpu", b, adam_b);
    DataParallel dp = dp_start(*one, b, adam_b, *eb);
    std::vector<int32_t> in(2 * cfg.model.block_size), tg(in.size());
    for (long step = 0; step < 3; step++) {
        const StepStats sa = train_step(a, adam_a, ba, cfg, step, in.data(), tg.data());
        const StepStats sb = dp_train_step(dp, b, bb, cfg, step, in.data(), tg.data(), false);
        EXPECT_EQ(sa.loss, sb.loss);
        EXPECT_EQ(sa.grad_norm, sb.grad_norm);
    }
    EXPECT_EQ(a.param, b.param);
    EXPECT_EQ(evaluate(a, ba, 2), dp_evaluate(dp, b, bb, 2));
    const ValSet vs = val_set_make(data, cfg);
    EXPECT_EQ(val_set_loss(*ea, vs), dp_val_set_loss(dp, b, vs));
    EXPECT_EQ(unsound_state(*ea, a, adam_a, ba, cfg), "");
    EXPECT_EQ(dp_unsound_state(dp, b, bb, cfg), "");
    b.param[0] = NAN;
    EXPECT_EQ(dp_unsound_state(dp, b, bb, cfg).rfind("weight '", 0), 0u);
    b.param[0] = a.param[0];
    AdamW<float> unused;
    const AdamW<float>& whole = dp_whole_optimizer(dp, unused);
    EXPECT_EQ(&whole, &adam_b);
    EXPECT_EQ(whole.m, adam_a.m);
    EXPECT_EQ(dp_optimizer_bytes(dp), (long)(2 * a.param.size() * sizeof(float)));
}

TEST(DataParallelOneRank, AnyAccumulationSplitsOverOneRank) {
    TrainConfig cfg;
    cfg.gradient_accumulation_steps = 3;
    std::unique_ptr<Comm> one = comm_single_open();
    EXPECT_NO_THROW(dp_check_run(*one, cfg, TrainOptions{}, TrainData{}));
}

}  // namespace
}  // namespace mhc
