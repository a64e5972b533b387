// Finite-difference gradient checks in double precision: every input (X, y) and every parameter of
// every variant, against the closed-form backward. Also checks the overwrite/accumulate contract.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "conn_util.h"

using namespace mhc;
using namespace mhc::test;

namespace {

struct FdCase {
    Variant v;
    int n, C, iters, subset, site;
    int cayley = 2;  // jpmhc's cayley_iters (0: the exact transform)
};

std::string case_name(const testing::TestParamInfo<FdCase>& info) {
    const FdCase& c = info.param;
    std::string s = variant_name(c.v);
    std::replace(s.begin(), s.end(), '-', '_');
    s += "_n" + std::to_string(c.n) + "_C" + std::to_string(c.C);
    if (c.v == Variant::mhc) s += "_it" + std::to_string(c.iters);
    if (c.v == Variant::jpmhc) s += "_cay" + std::to_string(c.cayley);
    if (c.subset) s += "_K" + std::to_string(c.subset);
    return s + "_site" + std::to_string(c.site);
}

class FiniteDiff : public testing::TestWithParam<FdCase> {};

// How gtest prints a case (instead of its bytes).
void PrintTo(const FdCase& c, std::ostream* os) {
    *os << variant_name(c.v) << " n=" << c.n << " C=" << c.C << " iters=" << c.iters
        << " subset=" << c.subset << " site=" << c.site << " cayley_iters=" << c.cayley;
}

// Central difference of the loss in one coordinate, the coordinate restored afterwards.
template <typename F> double central(double& x, F&& loss) {
    const double h = 1e-6, x0 = x;
    x = x0 + h;
    const double lp = loss();
    x = x0 - h;
    const double lm = loss();
    x = x0;
    return (lp - lm) / (2 * h);
}

TEST_P(FiniteDiff, EveryInputAndParameter) {
    const FdCase c = GetParam();
    ConnConfig cfg;
    cfg.variant = c.v;
    cfg.n = c.n;
    cfg.C = c.C;
    cfg.sinkhorn_iters = c.iters;
    cfg.cayley_iters = c.cayley;
    cfg.perm_subset = c.subset;
    cfg.perm_seed = 7;
    cfg.site_index = c.site;
    const ConnSite s = conn_site_make(cfg);
    const int N = 3;
    std::mt19937_64 rng(1234 + c.n * 17 + (int)c.v);
    auto p = random_params<double>(s, rng);
    auto X = randn<double>((size_t)N * c.n * c.C, rng);
    auto y = randn<double>((size_t)N * c.C, rng);
    auto gu = randn<double>(y.size(), rng);
    auto gX = randn<double>(X.size(), rng);

    SiteRun<double, double> run(s, N);
    run.forward(p, X, y);
    // Contract: post_backward overwrites dX and dy; pre_backward accumulates into dX and dparams.
    std::fill(run.dX.begin(), run.dX.end(), 1e30);
    std::fill(run.dy.begin(), run.dy.end(), 1e30);
    std::fill(run.dparams.begin(), run.dparams.end(), 0.5);
    run.backward(p, X, y, gu, gX);
    for (auto& d : run.dparams) d -= 0.5;

    SiteRun<double, double> probe(s, N);
    auto loss = [&] {
        probe.forward(p, X, y);
        return probe.loss(gu, gX);
    };
    auto expect_close = [&](double fd, double an, const std::string& what) {
        EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::fabs(fd))) << what;
    };
    for (size_t i = 0; i < X.size(); i++)
        expect_close(central(X[i], loss), run.dX[i], "dX[" + std::to_string(i) + "]");
    for (size_t i = 0; i < y.size(); i++)
        expect_close(central(y[i], loss), run.dy[i], "dy[" + std::to_string(i) + "]");
    for (const auto& t : s.params)
        for (long i = 0; i < t.size; i++)
            expect_close(central(p[t.offset + i], loss), run.dparams[t.offset + i],
                         t.name + "[" + std::to_string(i) + "]");
    // The test is meaningful only if the gradients are not trivially zero.
    double gmax = 0;
    for (double d : run.dparams) gmax = std::max(gmax, std::fabs(d));
    if (c.v != Variant::residual) {
        EXPECT_GT(gmax, 1e-3);
    }
}

const FdCase kCases[] = {
    {Variant::residual, 1, 6, 20, 0, 0},
    {Variant::hc, 1, 5, 20, 0, 0},       {Variant::hc, 2, 5, 20, 0, 1},
    {Variant::hc, 3, 5, 20, 0, 2},       {Variant::hc, 4, 5, 20, 0, 0},
    {Variant::hc, 8, 3, 20, 0, 5},
    {Variant::mhc, 1, 5, 20, 0, 0},      {Variant::mhc, 2, 5, 20, 0, 1},
    {Variant::mhc, 3, 5, 20, 0, 2},      {Variant::mhc, 4, 5, 20, 0, 3},
    {Variant::mhc, 3, 4, 3, 0, 0},       {Variant::mhc, 8, 2, 20, 0, 6},
    {Variant::mhc_lite, 1, 5, 20, 0, 0}, {Variant::mhc_lite, 2, 5, 20, 0, 1},
    {Variant::mhc_lite, 3, 5, 20, 0, 0}, {Variant::mhc_lite, 4, 5, 20, 0, 2},
    {Variant::mhc_lite, 5, 2, 20, 0, 4}, {Variant::mhc_lite, 6, 1, 20, 0, 1},
    {Variant::mhc_lite, 4, 5, 20, 7, 1}, {Variant::mhc_lite, 8, 2, 20, 12, 3},
    {Variant::kromhc, 1, 5, 20, 0, 0},   {Variant::kromhc, 2, 5, 20, 0, 1},
    {Variant::kromhc, 4, 5, 20, 0, 2},   {Variant::kromhc, 8, 3, 20, 0, 5},
    // jpmhc: the exact transform (0), the paper's 2 iterations, and 1 and 3.
    {Variant::jpmhc, 1, 5, 20, 0, 0, 0}, {Variant::jpmhc, 2, 5, 20, 0, 1, 0},
    {Variant::jpmhc, 3, 5, 20, 0, 2, 0}, {Variant::jpmhc, 4, 5, 20, 0, 3, 0},
    {Variant::jpmhc, 5, 3, 20, 0, 4, 0}, {Variant::jpmhc, 6, 2, 20, 0, 1, 0},
    {Variant::jpmhc, 7, 2, 20, 0, 2, 0}, {Variant::jpmhc, 8, 2, 20, 0, 5, 0},
    {Variant::jpmhc, 2, 5, 20, 0, 0, 2}, {Variant::jpmhc, 3, 5, 20, 0, 1, 2},
    {Variant::jpmhc, 4, 5, 20, 0, 2, 2}, {Variant::jpmhc, 5, 3, 20, 0, 3, 2},
    {Variant::jpmhc, 6, 2, 20, 0, 4, 2}, {Variant::jpmhc, 7, 2, 20, 0, 0, 2},
    {Variant::jpmhc, 8, 2, 20, 0, 6, 2}, {Variant::jpmhc, 4, 5, 20, 0, 1, 1},
    {Variant::jpmhc, 4, 5, 20, 0, 1, 3},
    {Variant::ohc, 4, 5, 20, 0, 0},      {Variant::ohc, 4, 3, 20, 0, 1},
    {Variant::ohc, 4, 2, 20, 0, 6},
};
INSTANTIATE_TEST_SUITE_P(Conn, FiniteDiff, testing::ValuesIn(kCases), case_name);

}  // namespace
