// Threaded execution on a realistic batch: two runs with 2 OpenMP threads are bitwise identical
// (no races: every parallel loop owns its outputs), and 1 vs 2 threads agree to fp32 rounding
// (OpenBLAS partitions the projection GEMMs differently by thread count).
#include <gtest/gtest.h>
#include <omp.h>

#include "conn_util.h"

using namespace mhc;
using namespace mhc::test;

TEST(ConnThreads, OneAndTwoThreadsAgree) {
    const int N = 512, n = 4, C = 48;
    for (const VariantInfo& info : variant_table()) {
        const Variant v = info.id;
        SCOPED_TRACE(variant_name(v));
        ConnConfig cfg;
        cfg.variant = v;
        cfg.n = v == Variant::residual ? 1 : n;
        cfg.C = C;
        const ConnSite s = conn_site_make(cfg);
        std::mt19937_64 rng(3);
        const auto p = random_params<float>(s, rng);
        const auto X = randn<float>((size_t)N * s.n * C, rng), y = randn<float>((size_t)N * C, rng);
        const auto gu = randn<float>(y.size(), rng), gX = randn<float>(X.size(), rng);
        std::vector<SiteRun<float, float>> runs;
        for (int threads : {2, 2, 1}) {
            omp_set_num_threads(threads);
            runs.emplace_back(s, N);
            runs.back().forward(p, X, y);
            runs.back().backward(p, X, y, gu, gX);
        }
        // max |x - z| / max |z|
        auto rel = [](const std::vector<float>& x, const std::vector<float>& z) {
            double d = 0, m = 0;
            for (size_t i = 0; i < x.size(); i++) {
                d = std::max(d, (double)std::fabs(x[i] - z[i]));
                m = std::max(m, (double)std::fabs(z[i]));
            }
            return m > 0 ? d / m : d;
        };
        const auto &a = runs[0], &b = runs[1], &one = runs[2];
        EXPECT_EQ(a.Xout, b.Xout);
        EXPECT_EQ(a.u, b.u);
        EXPECT_EQ(a.dX, b.dX);
        EXPECT_EQ(a.dy, b.dy);
        EXPECT_EQ(a.dparams, b.dparams);
        EXPECT_LE(rel(one.Xout, a.Xout), 1e-6);
        EXPECT_LE(rel(one.u, a.u), 1e-6);
        EXPECT_LE(rel(one.dX, a.dX), 1e-6);
        EXPECT_LE(rel(one.dy, a.dy), 1e-6);
        EXPECT_LE(rel(one.dparams, a.dparams), 1e-5);
    }
}
