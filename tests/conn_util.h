// Test helpers: random non-initial parameters and a whole-site run (pre + post, forward + backward).
#pragma once
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "mhc/conn.h"

namespace mhc::test {

// Initial values plus noise, so every path of the coefficient maps matters: gains N(0, 0.3), the
// dynamic matrices N(0, wscale / sqrt(fan_in)), scales U(0.5, 1.5), static logits init + N(0, 0.5).
template <typename R>
std::vector<R> random_params(const ConnSite& s, std::mt19937_64& rng, double wscale = 1.0) {
    std::vector<R> p(conn_param_count(s));
    conn_init_params(s, p.data());
    std::normal_distribution<double> nd(0, 1);
    std::uniform_real_distribution<double> ud(0.5, 1.5);
    for (const auto& t : s.params) {
        R* v = p.data() + t.offset;
        for (long i = 0; i < t.size; i++) {
            if (t.name == "norm.gamma") v[i] = R(0.3 * nd(rng));
            else if (t.name.rfind("dynamic_", 0) == 0 && t.name.find("_fn") != std::string::npos)
                v[i] = R(wscale * nd(rng) / std::sqrt((double)t.shape[0]));
            else if (t.name.find("scale") != std::string::npos) v[i] = R(ud(rng));
            else v[i] = R((double)v[i] + 0.5 * nd(rng));
        }
    }
    return p;
}

// Hamilton product a·b of quaternions (w, x, y, z): ohc's H_res is p ↦ q·p·r̄ (SPEC §2).
inline void quat_mul(const double* a, const double* b, double* out) {
    out[0] = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    out[1] = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    out[2] = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    out[3] = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
}

// ohc's H_res [4,4] (H[i][j]) by quaternion products, from its 8 res logits (SPEC §2): q and r are
// the unit quaternions of ν_q = (1 + l_0, l_1, l_2, l_3), ν_r = (1 + l_4, l_5, l_6, l_7); column j
// is q·e_j·r̄.
inline void ohc_by_quaternions(const double* l, double* H) {
    double q[4] = {1 + l[0], l[1], l[2], l[3]}, rbar[4] = {1 + l[4], -l[5], -l[6], -l[7]};
    const double nq = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3] + 1e-12);
    const double nr = std::sqrt(rbar[0] * rbar[0] + rbar[1] * rbar[1] + rbar[2] * rbar[2] + rbar[3] * rbar[3] + 1e-12);
    for (int i = 0; i < 4; i++) q[i] /= nq, rbar[i] /= nr;
    for (int j = 0; j < 4; j++) {
        double e[4] = {0, 0, 0, 0}, qe[4], col[4];
        e[j] = 1;
        quat_mul(q, e, qe);
        quat_mul(qe, rbar, col);
        for (int i = 0; i < 4; i++) H[i * 4 + j] = col[i];
    }
}

template <typename T> std::vector<T> randn(size_t count, std::mt19937_64& rng) {
    std::normal_distribution<double> nd(0, 1);
    std::vector<T> v(count);
    for (auto& x : v) x = T(nd(rng));
    return v;
}

// Buffers and one full pass of a site on N tokens.
template <typename T, typename R> struct SiteRun {
    const ConnSite& s;
    int N;
    std::vector<R> cache, scratch, dparams;
    std::vector<T> u, Xout, dX, dy;
    SiteRun(const ConnSite& site, int N_)
        : s(site), N(N_), cache((size_t)N_ * conn_cache_stride(site)),
          scratch(conn_scratch_size(site, N_)), dparams(conn_param_count(site)),
          u((size_t)N_ * site.C), Xout((size_t)N_ * site.n * site.C), dX(Xout.size()), dy(u.size()) {}
    void forward(const std::vector<R>& p, const std::vector<T>& X, const std::vector<T>& y) {
        conn_pre_forward(s, p.data(), X.data(), u.data(), cache.data(), scratch.data(), N);
        conn_post_forward(s, cache.data(), X.data(), y.data(), Xout.data(), N);
    }
    // loss = <u, gu> + <X', gX>
    double loss(const std::vector<T>& gu, const std::vector<T>& gX) const {
        double l = 0;
        for (size_t i = 0; i < u.size(); i++) l += (double)u[i] * (double)gu[i];
        for (size_t i = 0; i < Xout.size(); i++) l += (double)Xout[i] * (double)gX[i];
        return l;
    }
    void backward(const std::vector<R>& p, const std::vector<T>& X, const std::vector<T>& y,
                  const std::vector<T>& gu, const std::vector<T>& gX) {
        conn_post_backward(s, cache.data(), X.data(), y.data(), gX.data(), dX.data(), dy.data(), N);
        conn_pre_backward(s, p.data(), cache.data(), X.data(), gu.data(), dX.data(), dparams.data(),
                          scratch.data(), N);
    }
};

// A site of variant v, n streams of width C; the options the tests vary, the rest as ConnConfig's
// defaults (perm_seed 42, so permutation subsets are the same in every run).
struct SiteOpts {
    int site = 0, perm_subset = 0, cayley_iters = 2;
};
inline ConnSite make_site(Variant v, int n, int C, SiteOpts o = {}) {
    ConnConfig cfg;
    cfg.variant = v;
    cfg.n = n;
    cfg.C = C;
    cfg.site_index = o.site;
    cfg.perm_subset = o.perm_subset;
    cfg.perm_seed = 42;
    cfg.cayley_iters = o.cayley_iters;
    return conn_site_make(cfg);
}

// pre forward on random streams (seeded); returns the cache.
template <typename R> std::vector<R> run_pre(const ConnSite& s, const std::vector<R>& p, int N, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto X = randn<R>((size_t)N * s.n * s.C, rng);
    SiteRun<R, R> run(s, N);
    conn_pre_forward(s, p.data(), X.data(), run.u.data(), run.cache.data(), run.scratch.data(), N);
    return run.cache;
}

// Initial parameters with res logits of magnitude up to 50 (uniform in ±50): mode 0 through the
// static path (static_alpha's res columns), mode 1 through the dynamic path (x̂ has RMS ~1 over nC
// entries, so weights of 50/sqrt(nC) give logits of a few × 50). residual_scale 1 in both.
inline std::vector<float> large_logit_params(const ConnSite& s, int mode, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> ud(-50, 50);
    std::vector<float> p(conn_param_count(s));
    conn_init_params(s, p.data());
    p[conn_param_find(s, "residual_scale")->offset] = 1.0f;
    const ParamTensor* sa = conn_param_find(s, "static_alpha");
    const ParamTensor* W = conn_param_find(s, "dynamic_alpha_fn");
    if (mode == 0) {
        for (long i = s.n; i < sa->size; i++) p[sa->offset + i] = (float)ud(rng);
    } else {
        for (long i = 0; i < W->size; i++)
            if (i % s.M >= s.n) p[W->offset + i] = (float)(ud(rng) / std::sqrt((double)s.Dp));
    }
    return p;
}

}  // namespace mhc::test
