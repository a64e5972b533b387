// The orthogonal family (SPEC §2 jpmhc, ohc) and the spectral diagnostics (SPEC §6): H_res = I at
// init, orthogonality for large logits, the Cayley gap in both modes, ohc = q·p·r̄ by quaternion
// products, σ_1 and σ_2 through depth, the singular-value solver and the stream similarity on
// known inputs, and one-line errors for invalid configurations.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "conn_util.h"

using namespace mhc;
using namespace mhc::test;

namespace {

// Initial parameters with the res logits set by hand through static_alpha (residual_scale 0, so
// the dynamic path adds nothing): H_res is the same for every token.
template <typename R> std::vector<R> with_static_res(const ConnSite& s, const std::vector<double>& res) {
    std::vector<R> p(conn_param_count(s));
    conn_init_params(s, p.data());
    p[conn_param_find(s, "residual_scale")->offset] = R(0);
    R* sa = p.data() + conn_param_find(s, "static_alpha")->offset;
    for (size_t k = 0; k < res.size(); k++) sa[s.res_col[k]] = R(res[k]);
    return p;
}

struct Case {
    Variant v;
    int n, cayley;
};
const Case kOrthogonal[] = {{Variant::jpmhc, 2, 0}, {Variant::jpmhc, 3, 0}, {Variant::jpmhc, 4, 0},
                            {Variant::jpmhc, 5, 0}, {Variant::jpmhc, 6, 0}, {Variant::jpmhc, 7, 0},
                            {Variant::jpmhc, 8, 0}, {Variant::ohc, 4, 0}};

TEST(Orth, IdentityAtInit) {
    for (int cayley : {0, 2}) {
        for (int n = 1; n <= 8; n++) {
            SCOPED_TRACE("jpmhc n=" + std::to_string(n) + " cayley_iters=" + std::to_string(cayley));
            const ConnSite s = make_site(Variant::jpmhc, n, 6, {.site = 1, .cayley_iters = cayley});
            std::vector<float> p(conn_param_count(s));
            conn_init_params(s, p.data());
            const auto cache = run_pre(s, p, 4, 2);
            for (int tok = 0; tok < 4; tok++)
                for (int i = 0; i < n * n; i++) EXPECT_EQ(cache_hres(s, cache.data(), tok)[i], i % (n + 1) == 0 ? 1.0f : 0.0f);
        }
    }
    const ConnSite s = make_site(Variant::ohc, 4, 6, {.site = 1});
    std::vector<float> p(conn_param_count(s));
    conn_init_params(s, p.data());
    const auto cache = run_pre(s, p, 4, 2);
    std::vector<double> pd(p.begin(), p.end());
    const auto cached = run_pre(s, pd, 4, 2);
    for (int tok = 0; tok < 4; tok++)
        for (int i = 0; i < 16; i++) {
            EXPECT_EQ(cache_hres(s, cache.data(), tok)[i], i % 5 == 0 ? 1.0f : 0.0f);  // exactly, in fp32
            // in double, 1/(1 + 1e-12) on the diagonal: 1e-12 from the 1e-12 under the square root
            EXPECT_NEAR(cache_hres(s, cached.data(), tok)[i], i % 5 == 0 ? 1.0 : 0.0, 1.5e-12);
        }
    // H_pre and H_post as for the rest of the family (SPEC §2's table).
    for (int i = 0; i < 4; i++) {
        EXPECT_NEAR(cache_hpre(s, cache.data(), 0)[i], i == 1 ? 0.731059 : 0.268941, 1e-6);
        EXPECT_NEAR(cache_hpost(s, cache.data(), 0)[i], i == 1 ? 1.462117 : 0.537883, 1e-6);
    }
}

// Logits of magnitude up to 50 through the static path and through the dynamic path: exact jpmhc
// (a pivoted solve of a matrix whose singular values are >= 1) and ohc stay orthogonal, in fp32.
TEST(Orth, OrthogonalForLargeLogits) {
    std::mt19937_64 rng(5);
    for (const Case& c : kOrthogonal) {
        SCOPED_TRACE(std::string(variant_name(c.v)) + " n=" + std::to_string(c.n));
        const ConnSite s = make_site(c.v, c.n, 8, {.cayley_iters = c.cayley});
        for (int mode = 0; mode < 2; mode++) {
            const std::vector<float> p = large_logit_params(s, mode, rng);
            const auto cache = run_pre(s, p, 64, 11 + mode);
            double worst = 0;
            for (int tok = 0; tok < 64; tok++) {
                const float* H = cache_hres(s, cache.data(), tok);
                for (int i = 0; i < c.n * c.n; i++) ASSERT_TRUE(std::isfinite(H[i]));
                worst = std::max(worst, orth_error(H, c.n));
            }
            EXPECT_LE(worst, 1e-6);
        }
    }
}

// SPEC §2's Cayley gap: M[0][1] = 10. Exact: [[0.6, 0.8], [−0.8, 0.6]] ⊕ I, orthogonal; the
// paper's 2 iterations: [[0.5, 0.75], [−0.75, 0.5]] ⊕ I, HᵀH = 0.8125·I on the block.
TEST(Orth, CayleyGapExample) {
    const int n = 4;
    std::vector<double> M(n * n, 0.0);
    M[0 * n + 1] = 10;
    for (int cayley : {0, 2}) {
        const ConnSite s = make_site(Variant::jpmhc, n, 4, {.cayley_iters = cayley});
        const double a = cayley == 0 ? 0.6 : 0.5, b = cayley == 0 ? 0.8 : 0.75;
        const double want[16] = {a, b, 0, 0, -b, a, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
        const auto cd = run_pre(s, with_static_res<double>(s, M), 3, 1);
        const auto cf = run_pre(s, with_static_res<float>(s, M), 3, 1);
        for (int tok = 0; tok < 3; tok++) {
            for (int i = 0; i < 16; i++) {
                EXPECT_NEAR(cache_hres(s, cd.data(), tok)[i], want[i], 1e-14) << "cayley_iters " << cayley;
                EXPECT_NEAR(cache_hres(s, cf.data(), tok)[i], want[i], 1e-7) << "cayley_iters " << cayley;
            }
            EXPECT_NEAR(orth_error(cache_hres(s, cd.data(), tok), n), cayley == 0 ? 0.0 : 0.1875, 1e-14);
        }
    }
    // The iteration's fixed point is the exact transform: many iterations converge to it.
    std::mt19937_64 rng(3);
    auto p = random_params<double>(make_site(Variant::jpmhc, 5, 4), rng);
    const auto exact = run_pre(make_site(Variant::jpmhc, 5, 4, {.cayley_iters = 0}), p, 4, 7);
    const auto iter = run_pre(make_site(Variant::jpmhc, 5, 4, {.cayley_iters = 80}), p, 4, 7);
    const ConnSite s = make_site(Variant::jpmhc, 5, 4);
    for (int tok = 0; tok < 4; tok++)
        for (int i = 0; i < 25; i++)
            EXPECT_NEAR(cache_hres(s, iter.data(), tok)[i], cache_hres(s, exact.data(), tok)[i], 1e-12);
}

// H_res p = q·p·r̄ for every p: column j of H_res is q·e_j·r̄.
TEST(Orth, OhcIsTheQuaternionRotation) {
    const ConnSite s = make_site(Variant::ohc, 4, 5, {.site = 2});
    std::mt19937_64 rng(8);
    std::normal_distribution<double> nd(0, 1);
    for (int trial = 0; trial < 5; trial++) {
        std::vector<double> l(8);
        for (double& x : l) x = (float)(1.5 * nd(rng));  // fp32-representable, so both precisions agree
        double want[16];
        ohc_by_quaternions(l.data(), want);
        const auto cd = run_pre(s, with_static_res<double>(s, l), 2, 4);
        const auto cf = run_pre(s, with_static_res<float>(s, l), 2, 4);
        for (int i = 0; i < 16; i++) {
            EXPECT_NEAR(cache_hres(s, cd.data(), 1)[i], want[i], 1e-14);
            EXPECT_NEAR(cache_hres(s, cf.data(), 1)[i], want[i], 1e-6);
        }
    }
}

// SPEC §6: a product of orthogonal maps keeps every singular value at 1; mhc-lite at init shrinks
// σ_2 by 0.992011 per site (σ_1 = 1 on the all-ones direction): 0.8249 after 24 sites.
TEST(Orth, SpectrumThroughDepth) {
    const int n = 4, C = 16, N = 16, depth = 24;
    std::mt19937_64 rng(9);
    CompositeGain rot, lite;
    rot.reset(N, n);
    lite.reset(N, n);
    for (int l = 0; l < depth; l++) {
        const ConnSite so = make_site(Variant::ohc, n, C, {.site = l});
        rot.push(so, run_pre(so, random_params<float>(so, rng, 3.0), N, 100 + l).data());
        const ConnSite sl = make_site(Variant::mhc_lite, n, C, {.site = l});
        std::vector<float> p(conn_param_count(sl));
        conn_init_params(sl, p.data());
        lite.push(sl, run_pre(sl, p, N, 200 + l).data());
    }
    const auto r = rot.spectrum(), m = lite.spectrum();
    EXPECT_NEAR(r.s1.mean, 1.0, 1e-5);
    EXPECT_NEAR(r.s1.max, 1.0, 1e-5);
    EXPECT_NEAR(r.s2.mean, 1.0, 1e-5);
    EXPECT_NEAR(r.s2.max, 1.0, 1e-5);
    EXPECT_NEAR(m.s1.max, 1.0, 1e-5);
    // H_res = a·I + b·(J − I) has σ_2 = a − b = (1 − e⁻⁸)/(1 + 23e⁻⁸) = 0.992011 (SPEC §2's values).
    const double e8 = std::exp(-8.0);
    EXPECT_NEAR(m.s2.mean, std::pow((1 - e8) / (1 + 23 * e8), 24), 1e-5);
    EXPECT_NEAR(m.s2.max, 0.8249, 1e-4);
}

TEST(Orth, SingularValuesOfKnownMatrices) {
    double sv[8];
    const double D[9] = {3, 0, 0, 0, -2, 0, 0, 0, 1};
    singular_values(D, 3, sv);
    for (int i = 0; i < 3; i++) EXPECT_NEAR(sv[i], 3 - i, 1e-14);
    const double Sh[4] = {1, 1, 0, 1};  // the shear: σ = golden ratio and its inverse
    singular_values(Sh, 2, sv);
    const double phi = (1 + std::sqrt(5.0)) / 2;
    EXPECT_NEAR(sv[0], phi, 1e-14);
    EXPECT_NEAR(sv[1], 1 / phi, 1e-14);
    std::vector<double> ones(64, 1.0);  // rank one: σ = (8, 0, …)
    singular_values(ones.data(), 8, sv);
    EXPECT_NEAR(sv[0], 8, 1e-12);
    for (int i = 1; i < 8; i++) EXPECT_NEAR(sv[i], 0, 1e-7);
    // A rotation times diag(5, 4, 3, 2) keeps those singular values.
    const double c = std::cos(0.7), s = std::sin(0.7);
    const double R[16] = {c, -s, 0, 0, s, c, 0, 0, 0, 0, c, s, 0, 0, -s, c};
    double A[16];
    const double d[4] = {2, 5, 3, 4};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) A[i * 4 + j] = R[i * 4 + j] * d[j];
    singular_values(A, 4, sv);
    for (int i = 0; i < 4; i++) EXPECT_NEAR(sv[i], 5 - i, 1e-13);
    // Random 8x8: Σσ² = ‖A‖_F², and the values come sorted.
    std::mt19937_64 rng(2);
    const auto B = randn<double>(64, rng);
    singular_values(B.data(), 8, sv);
    double f = 0, s2 = 0;
    for (double x : B) f += x * x;
    for (int i = 0; i < 8; i++) s2 += sv[i] * sv[i];
    EXPECT_NEAR(s2, f, 1e-10 * f);
    for (int i = 1; i < 8; i++) EXPECT_GE(sv[i - 1], sv[i]);
}

TEST(Orth, OrthErrorAndStreamSimilarityByHand) {
    const double shear[4] = {1, 1, 0, 1};  // HᵀH = [[1, 1], [1, 2]]
    EXPECT_DOUBLE_EQ(orth_error(shear, 2), 1.0);
    const double scaled[4] = {0.9, 0, 0, 0.9};
    EXPECT_NEAR(orth_error(scaled, 2), 0.19, 1e-15);
    const float rot[4] = {0.6f, 0.8f, -0.8f, 0.6f};
    EXPECT_LT(orth_error(rot, 2), 1e-7);
    // Token 0: streams (1,0), (1,0), (0,2) → cosines 1, 0, 0 → 1/3. Token 1: (1,1), (−1,−1), (2,2)
    // → −1, 1, −1 → −1/3. Mean 0.
    const double X[12] = {1, 0, 1, 0, 0, 2, 1, 1, -1, -1, 2, 2};
    EXPECT_NEAR(stream_similarity(X, 1, 3, 2), 1.0 / 3, 1e-15);
    EXPECT_NEAR(stream_similarity(X + 6, 1, 3, 2), -1.0 / 3, 1e-15);
    EXPECT_NEAR(stream_similarity(X, 2, 3, 2), 0.0, 1e-15);
    const double Z[4] = {0, 0, 1, 0};  // a zero stream counts as dissimilar
    EXPECT_EQ(stream_similarity(Z, 1, 2, 2), 0.0);
    EXPECT_TRUE(std::isnan(stream_similarity(X, 2, 1, 6)));  // one stream: no pairs
}

TEST(Orth, InvalidConfigurationsRaiseOneLineErrors) {
    auto expect_error = [](ConnConfig cfg, const std::string& fragment) {
        try {
            conn_site_make(cfg);
            ADD_FAILURE() << "no error for: " << fragment;
        } catch (const std::invalid_argument& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
            EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
        }
    };
    ConnConfig c;
    c.C = 8;
    c.variant = Variant::ohc;
    for (int n : {1, 2, 3, 5, 8}) {
        c.n = n;
        expect_error(c, "n must be 4, got " + std::to_string(n));
    }
    c.variant = Variant::jpmhc;
    c.n = 4;
    c.cayley_iters = -1;
    expect_error(c, "cayley_iters >= 0");
    c.cayley_iters = 0;
    EXPECT_NO_THROW(conn_site_make(c));
    EXPECT_EQ(variant_from_string("jpmhc"), Variant::jpmhc);
    EXPECT_EQ(variant_from_string("ohc"), Variant::ohc);
    // SPEC §4 shapes: static_alpha (n + n²) and (n + 8).
    EXPECT_EQ(conn_param_find(make_site(Variant::jpmhc, 3, 8), "static_alpha")->shape, std::vector<int>{12});
    EXPECT_EQ(conn_param_find(make_site(Variant::jpmhc, 3, 8), "dynamic_alpha_fn")->shape, (std::vector<int>{24, 12}));
    EXPECT_EQ(conn_param_find(make_site(Variant::ohc, 4, 8), "static_alpha")->shape, std::vector<int>{12});
    EXPECT_EQ(conn_param_find(make_site(Variant::ohc, 4, 8), "dynamic_alpha_fn")->shape, (std::vector<int>{32, 12}));
}

}  // namespace
