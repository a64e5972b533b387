// The comparison report's statistics (src/report/metrics.cpp): spikes, mean ± spread, medians,
// run names. The report end to end is tests/cli/test_compare.py.
#include <gtest/gtest.h>

#include "report/report.h"

namespace mhc::report {

static std::vector<Record> steady(int n, double loss = 2.0, double norm = 1.0) {
    std::vector<Record> r(n);
    for (int i = 0; i < n; i++) r[i].step = i + 1, r[i].loss = loss, r[i].grad_norm = norm;
    return r;
}

TEST(Report, NoSpikesInASteadyOrFallingRun) {
    EXPECT_EQ(count_spikes(steady(40)), 0);
    std::vector<Record> falling = steady(40);
    for (int i = 0; i < 40; i++) falling[i].loss = 5.0 * std::pow(0.9, i);  // a fast fall is no spike
    EXPECT_EQ(count_spikes(falling), 0);
}

TEST(Report, LossAndGradSpikes) {
    std::vector<Record> r = steady(40);
    r[20].loss = 2.0 * (1 + kSpikeLossRise) + 1e-9;  // just above the threshold
    r[30].loss = 2.0 * (1 + kSpikeLossRise) - 1e-9;  // just below
    EXPECT_EQ(count_spikes(r), 1);
    r[25].grad_norm = 1.0 * kSpikeGradFactor * 1.01;
    EXPECT_EQ(count_spikes(r), 2);
    r[35].skipped = true, r[35].loss = NAN;  // a skipped step counts, and stays out of the history
    EXPECT_EQ(count_spikes(r), 3);
}

TEST(Report, NoSpikeTestBeforeEnoughHistory) {
    std::vector<Record> r = steady(10);
    r[kSpikeMinHistory - 1].loss = 100;  // only kSpikeMinHistory - 1 steps before it
    EXPECT_EQ(count_spikes(r), 0);
    r[kSpikeMinHistory + 1].loss = 100;  // tested: the earlier outlier is in its window, not its median
    EXPECT_EQ(count_spikes(r), 1);
}

TEST(Report, SpreadAndMedian) {
    const Spread one = spread_of({2.5});
    EXPECT_EQ(one.n, 1);
    EXPECT_DOUBLE_EQ(one.mean, 2.5);
    EXPECT_TRUE(std::isnan(one.std));
    const Spread s = spread_of({1.0, 3.0, NAN});  // NaN ignored; sample std (n - 1)
    EXPECT_EQ(s.n, 2);
    EXPECT_DOUBLE_EQ(s.mean, 2.0);
    EXPECT_DOUBLE_EQ(s.std, std::sqrt(2.0));
    EXPECT_DOUBLE_EQ(median_of({5, 1, 3}), 3);
    EXPECT_DOUBLE_EQ(median_of({4, 1, 3, 2}), 2.5);
    EXPECT_TRUE(std::isnan(median_of({})));
}

TEST(Report, SummarizeOverSeeds) {
    RunData a, b;
    a.records = steady(12), b.records = steady(12);
    a.records[5].val_loss = 2.0, a.records[11].val_loss = 2.2;  // best 2.0, final 2.2
    b.records[11].val_loss = 2.4;
    a.records[3].grad_norm = 7, b.records[2].peak_rss_mb = 50, a.records[4].peak_rss_mb = 60;
    for (auto* r : {&a, &b})
        for (auto& x : r->records) x.tokens_per_s = r == &a ? 100 : 300;
    b.max_iters = 20, b.ckpt_step = 12;  // stopped early
    const VariantRow row = summarize("mhc_lite", {&a, &b});
    EXPECT_EQ(row.runs, 2);
    EXPECT_EQ(row.incomplete, 1);
    EXPECT_DOUBLE_EQ(row.final_val.mean, 2.3);
    EXPECT_DOUBLE_EQ(row.best_val.mean, 2.2);
    EXPECT_DOUBLE_EQ(row.tokens_per_s, 200);
    EXPECT_DOUBLE_EQ(row.peak_rss_mb, 60);
    EXPECT_DOUBLE_EQ(row.max_grad_norm, 7);
}

TEST(Report, RunNames) {
    std::string v;
    uint64_t s = 0;
    EXPECT_TRUE(parse_run_name("mhc_lite-s12", v, s));
    EXPECT_EQ(v, "mhc_lite");
    EXPECT_EQ(s, 12u);
    EXPECT_EQ(run_name(v, s), "mhc_lite-s12");
    for (const char* bad : {"mhc_lite", "-s1", "hc-s", "hc-sx", "hc-s1x"}) EXPECT_FALSE(parse_run_name(bad, v, s)) << bad;
}

}  // namespace mhc::report
