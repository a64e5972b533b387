// Properties of the connection layers: SPEC §2's initial values, the Sinkhorn gap, exact double
// stochasticity of mhc-lite / kromhc, composite gain through depth, diagnostics on hand-computed
// matrices, permutation subsets, and clear errors for invalid configurations.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "conn_util.h"

using namespace mhc;
using namespace mhc::test;

namespace {

TEST(Props, InitialValuesOfSpecTable) {
    const int n = 4, C = 16, N = 5;
    for (Variant v : {Variant::hc, Variant::mhc, Variant::mhc_lite, Variant::kromhc, Variant::jpmhc, Variant::ohc}) {
        SCOPED_TRACE(variant_name(v));
        for (int site = 0; site < 3; site++) {
            const ConnSite s = make_site(v, n, C, {.site = site});
            std::vector<float> p(conn_param_count(s));
            conn_init_params(s, p.data());
            const auto cache = run_pre(s, p, N, 3 + site);
            for (int tok = 0; tok < N; tok++) {
                const float* hpre = cache_hpre(s, cache.data(), tok);
                const float* H = cache_hres(s, cache.data(), tok);
                const float* hpost = cache_hpost(s, cache.data(), tok);
                for (int i = 0; i < n; i++) {
                    const bool r = i == site % n;
                    if (v == Variant::hc) {
                        EXPECT_EQ(hpre[i], r ? 1.0f : 0.0f);
                        EXPECT_EQ(hpost[i], 1.0f);
                    } else {
                        EXPECT_NEAR(hpre[i], r ? 0.731059 : 0.268941, 1e-6);
                        EXPECT_NEAR(hpost[i], r ? 1.462117 : 0.537883, 1e-6);
                    }
                    for (int j = 0; j < n; j++) {
                        const double h = H[i * n + j];
                        switch (v) {
                            case Variant::hc: EXPECT_EQ(h, i == j ? 1.0 : 0.0); break;
                            case Variant::mhc: EXPECT_NEAR(h, i == j ? 0.998995 : 0.000335, 1e-6); break;
                            case Variant::mhc_lite: EXPECT_NEAR(h, i == j ? 0.994008 : 0.001997, 1e-6); break;
                            case Variant::jpmhc:
                            case Variant::ohc: EXPECT_EQ(h, i == j ? 1.0 : 0.0); break;  // H_res = I exactly
                            default:
                                if (i == j) {
                                    EXPECT_NEAR(h, 0.999329, 1e-6);
                                }
                        }
                    }
                }
                if (v == Variant::mhc_lite) {
                    const float* a = cache.data() + (long)tok * s.stride + s.c_extra;
                    EXPECT_NEAR(a[0], 0.992343, 1e-6);
                    for (int k = 1; k < s.K; k++) EXPECT_NEAR(a[k], 3.3e-4, 0.05e-4);
                }
            }
        }
    }
}

TEST(Props, SinkhornGapExample) {
    const double a = 1e-13;
    const double M[9] = {0.5, a, a, 0.5, a, a, a, 1, 1};
    for (int prec = 0; prec < 2; prec++) {
        double L[9], H[9];
        float Lf[9], Hf[9];
        for (int i = 0; i < 9; i++) L[i] = std::log(M[i]), Lf[i] = (float)L[i];
        if (prec == 0) sinkhorn_forward(L, 3, 20, H);
        else {
            sinkhorn_forward(Lf, 3, 20, Hf);
            for (int i = 0; i < 9; i++) H[i] = Hf[i];
        }
        const double want[3] = {1.8197, 0.5901, 0.5901};
        for (int t = 0; t < 3; t++) {
            const double col = H[t] + H[3 + t] + H[6 + t];
            const double row = H[3 * t] + H[3 * t + 1] + H[3 * t + 2];
            EXPECT_NEAR(col, want[t], 1e-4) << "column " << t;
            EXPECT_NEAR(row, 1.0, prec == 0 ? 1e-12 : 1e-6) << "row " << t;
        }
        EXPECT_GT(ds_error(H, 3).value(), 0.8);  // the diagnostic sees the gap
    }
    // With enough iterations the same matrix does converge (double).
    double L[9], H[9];
    for (int i = 0; i < 9; i++) L[i] = std::log(M[i]);
    sinkhorn_forward(L, 3, 40, H);
    EXPECT_LT(ds_error(H, 3).value(), 1e-8);
}

// Logits of magnitude up to 50 through the static path and through the dynamic path.
TEST(Props, ExactlyDoublyStochasticForLargeLogits) {
    struct C { Variant v; int n, subset; };
    const C cases[] = {{Variant::mhc_lite, 2, 0}, {Variant::mhc_lite, 3, 0}, {Variant::mhc_lite, 4, 0},
                       {Variant::mhc_lite, 5, 0}, {Variant::mhc_lite, 6, 0}, {Variant::mhc_lite, 8, 24},
                       {Variant::kromhc, 2, 0},   {Variant::kromhc, 4, 0},   {Variant::kromhc, 8, 0}};
    std::mt19937_64 rng(5);
    for (const auto& c : cases) {
        SCOPED_TRACE(std::string(variant_name(c.v)) + " n=" + std::to_string(c.n));
        const ConnSite s = make_site(c.v, c.n, 8, {.perm_subset = c.subset});
        for (int mode = 0; mode < 2; mode++) {
            const std::vector<float> p = large_logit_params(s, mode, rng);
            const auto cache = run_pre(s, p, 64, 11 + mode);
            double worst = 0, lo = 1;
            for (int tok = 0; tok < 64; tok++) {
                const DSError e = ds_error(cache_hres(s, cache.data(), tok), c.n);
                worst = std::max(worst, e.sum_err);
                lo = std::min(lo, e.min_entry);
            }
            EXPECT_LE(worst, 1e-6);
            EXPECT_GE(lo, 0.0);
        }
    }
}

TEST(Props, CompositeGainExactForMhcLiteDriftsForHc) {
    const int n = 4, C = 32, N = 16, depth = 24;
    std::mt19937_64 rng(9);
    for (Variant v : {Variant::mhc_lite, Variant::hc}) {
        CompositeGain cg;
        cg.reset(N, n);
        for (int l = 0; l < depth; l++) {
            const ConnSite s = make_site(v, n, C, {.site = l});
            auto p = random_params<float>(s, rng, 3.0);
            const auto cache = run_pre(s, p, N, 100 + l);
            cg.push(s, cache.data());
        }
        if (v == Variant::mhc_lite) {
            EXPECT_NEAR(cg.fwd().mean, 1.0, 1e-5);
            EXPECT_NEAR(cg.fwd().max, 1.0, 1e-5);
            EXPECT_NEAR(cg.bwd().mean, 1.0, 1e-5);
            EXPECT_NEAR(cg.bwd().max, 1.0, 1e-5);
        } else {
            EXPECT_GT(cg.fwd().max, 2.0);  // unconstrained mixing compounds through depth
            EXPECT_GT(cg.bwd().max, 2.0);
        }
    }
}

TEST(Props, DiagnosticsOnHandComputedMatrices) {
    const double I[4] = {1, 0, 0, 1};
    EXPECT_EQ(ds_error(I, 2).value(), 0.0);
    EXPECT_EQ(map_gain_of_hres(I, 2).fwd, 1.0);
    // H = [[0.5, 1.0], [-0.25, 0.5]]: rows 1.5, 0.25; cols 0.25, 1.5; min -0.25.
    const double H[4] = {0.5, 1.0, -0.25, 0.5};
    const DSError e = ds_error(H, 2);
    EXPECT_DOUBLE_EQ(e.sum_err, 0.75);
    EXPECT_DOUBLE_EQ(e.min_entry, -0.25);
    // A = Hᵀ = [[0.5, -0.25], [1.0, 0.5]]: abs row sums 0.75, 1.5; abs col sums 1.5, 0.75.
    const Gain g = map_gain_of_hres(H, 2);
    EXPECT_DOUBLE_EQ(g.fwd, 1.5);
    EXPECT_DOUBLE_EQ(g.bwd, 1.5);
    const double H2[4] = {2.0, 0.0, 1.0, 1.0};  // A = [[2, 1], [0, 1]]: rows 3, 1; cols 2, 2
    EXPECT_DOUBLE_EQ(map_gain_of_hres(H2, 2).fwd, 3.0);
    EXPECT_DOUBLE_EQ(map_gain_of_hres(H2, 2).bwd, 2.0);
}

TEST(Props, MhcNuStatistics) {
    const ConnSite s = make_site(Variant::mhc, 3, 8);
    std::vector<float> p(conn_param_count(s));
    conn_init_params(s, p.data());
    const auto cache = run_pre(s, p, 4, 1);
    const SiteDiag d = conn_site_diagnostics(s, cache.data(), 4);
    ASSERT_TRUE(d.has_nu);
    EXPECT_NEAR(d.log_inv_nu.mean, 8.0, 1e-5);  // logits 0 on the diagonal, -8 elsewhere, at init
    EXPECT_EQ(d.frac_nu_above_30, 0.0);
    const SiteDiag d2 = conn_site_diagnostics(make_site(Variant::mhc_lite, 3, 8),
                                              run_pre(make_site(Variant::mhc_lite, 3, 8), [] {
                                                  const ConnSite s2 = make_site(Variant::mhc_lite, 3, 8);
                                                  std::vector<float> q(conn_param_count(s2));
                                                  conn_init_params(s2, q.data());
                                                  return q;
                                              }(), 4, 1).data(), 4);
    EXPECT_FALSE(d2.has_nu);
    EXPECT_LT(d2.ds.max, 1e-6);
}

TEST(Props, PermutationsLexicographicAndSubsets) {
    const ConnSite s3 = make_site(Variant::mhc_lite, 3, 4);
    const std::vector<int> want = {0, 1, 2, 0, 2, 1, 1, 0, 2, 1, 2, 0, 2, 0, 1, 2, 1, 0};
    EXPECT_EQ(s3.perms, want);  // itertools.permutations(range(3)) order

    const ConnSite a = make_site(Variant::mhc_lite, 8, 4, {.perm_subset = 24});
    const ConnSite b = make_site(Variant::mhc_lite, 8, 4, {.perm_subset = 24});
    EXPECT_EQ(a.perms, b.perms);  // deterministic for a seed
    EXPECT_EQ(a.K, 24);
    EXPECT_EQ(conn_param_find(a, "static_alpha")->size, 8 + 24);
    std::set<std::vector<int>> rows;
    for (int k = 0; k < a.K; k++) rows.insert({a.perms.begin() + k * 8, a.perms.begin() + (k + 1) * 8});
    EXPECT_EQ((int)rows.size(), 24);
    for (int i = 0; i < 8; i++) EXPECT_EQ(a.perms[i], i);  // identity first
    ConnConfig cfg = a.cfg;
    cfg.perm_seed = 43;
    EXPECT_NE(conn_site_make(cfg).perms, a.perms);
    // A site rebuilt from its stored permutations is the same site (checkpoint round trip).
    ConnConfig again;
    again.variant = Variant::mhc_lite;
    again.n = 8;
    again.C = 4;
    again.perms = a.perms;
    EXPECT_EQ(conn_site_make(again).perms, a.perms);
    EXPECT_EQ(make_site(Variant::mhc_lite, 3, 4, {.perm_subset = 6}).perms, want);  // K = n!: all of them
}

TEST(Props, InvalidConfigurationsRaiseClearErrors) {
    auto expect_error = [](ConnConfig cfg, const std::string& fragment) {
        try {
            conn_site_make(cfg);
            ADD_FAILURE() << "no error for: " << fragment;
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
        }
    };
    ConnConfig c;
    c.C = 8;
    c.n = 0;
    expect_error(c, "out of range 1..8");
    c.n = 9;
    expect_error(c, "out of range 1..8");
    c.n = 4;
    c.C = 0;
    expect_error(c, "stream width");
    c.C = 8;
    c.variant = Variant::kromhc;
    c.n = 3;
    expect_error(c, "power of two");
    c.n = 6;
    expect_error(c, "power of two");
    c.variant = Variant::mhc_lite;
    c.n = 7;
    expect_error(c, "permutation subset");
    c.n = 3;
    c.perm_subset = 7;
    expect_error(c, "larger than n! = 6");
    c.perm_subset = 0;
    c.perms = {1, 0, 2};
    expect_error(c, "row 0 must be the identity");
    c.perms = {0, 1, 2, 0, 1, 2};
    expect_error(c, "repeats");
    c.perms = {0, 1, 2, 0, 0, 2};
    expect_error(c, "not a permutation");
    c.perms.clear();
    c.variant = Variant::residual;
    expect_error(c, "n must be 1");
    c.variant = Variant::mhc;
    c.sinkhorn_iters = 0;
    expect_error(c, "sinkhorn_iters");
    EXPECT_THROW(variant_from_string("mhc-heavy"), std::invalid_argument);
    EXPECT_EQ(variant_from_string("none"), Variant::residual);
    EXPECT_EQ(variant_from_string("mhc_lite"), Variant::mhc_lite);
}

TEST(Props, ZeroTokensIsANoOp) {
    for (const VariantInfo& info : variant_table()) {
        const Variant v = info.id;
        const ConnSite s = make_site(v, v == Variant::residual ? 1 : 4, 8);
        std::vector<float> p(conn_param_count(s)), g(p.size(), 0.0f);
        conn_init_params(s, p.data());
        SiteRun<float, float> run(s, 0);
        std::vector<float> none;
        run.forward(p, none, none);
        run.backward(p, none, none, none, none);
        for (float x : run.dparams) EXPECT_EQ(x, 0.0f);
    }
}

TEST(Props, ParameterLayoutMatchesSpecNames) {
    const ConnSite s = make_site(Variant::mhc_lite, 4, 8);
    const char* names[] = {"norm.gamma", "static_alpha", "dynamic_alpha_fn", "pre_branch_scale",
                           "residual_scale", "static_beta", "dynamic_beta_fn", "h_post_scale"};
    ASSERT_EQ(s.params.size(), 8u);
    for (size_t i = 0; i < 8; i++) EXPECT_EQ(s.params[i].name, names[i]);
    EXPECT_EQ(conn_param_find(s, "dynamic_alpha_fn")->shape, (std::vector<int>{32, 28}));
    EXPECT_EQ(conn_param_find(s, "h_post_scale")->shape, std::vector<int>{});
    EXPECT_EQ(conn_param_find(make_site(Variant::mhc, 4, 8), "static_alpha")->shape, (std::vector<int>{4, 5}));
    EXPECT_EQ(conn_param_find(make_site(Variant::kromhc, 8, 8), "static_alpha")->shape, std::vector<int>{14});
    EXPECT_EQ(conn_param_find(make_site(Variant::hc, 4, 8), "dynamic_alpha_fn")->shape, (std::vector<int>{8, 5}));
    for (const auto& t : s.params) EXPECT_EQ(t.decay, t.name.find("_fn") != std::string::npos) << t.name;
    EXPECT_EQ(conn_param_count(make_site(Variant::residual, 1, 8)), 0);
}

}  // namespace
