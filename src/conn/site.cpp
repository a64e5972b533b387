// Site construction: config validation, mhc-lite permutations, parameter and cache layout, init.
#include <algorithm>
#include <numeric>
#include <set>
#include <stdexcept>

#include "mhc/conn.h"
#include "mhc/rng.h"

namespace mhc {

Variant variant_from_string(const std::string& s) {
    if (s == "residual" || s == "none") return Variant::residual;
    if (s == "hc") return Variant::hc;
    if (s == "mhc") return Variant::mhc;
    if (s == "mhc-lite" || s == "mhc_lite") return Variant::mhc_lite;
    if (s == "kromhc") return Variant::kromhc;
    throw std::invalid_argument("unknown connection variant '" + s +
                                "' (expected residual, hc, mhc, mhc-lite or kromhc)");
}

const char* variant_name(Variant v) {
    switch (v) {
        case Variant::residual: return "residual";
        case Variant::hc: return "hc";
        case Variant::mhc: return "mhc";
        case Variant::mhc_lite: return "mhc-lite";
        case Variant::kromhc: return "kromhc";
    }
    return "?";
}

static void fail(const std::string& msg) { throw std::invalid_argument(msg); }

static long factorial(int n) {
    long f = 1;
    for (int i = 2; i <= n; i++) f *= i;
    return f;
}

// All n! permutations in lexicographic order (itertools.permutations order), row 0 = identity.
static std::vector<int> all_perms(int n) {
    std::vector<int> p(n), out;
    std::iota(p.begin(), p.end(), 0);
    do out.insert(out.end(), p.begin(), p.end());
    while (std::next_permutation(p.begin(), p.end()));
    return out;
}

// The identity plus K-1 distinct others drawn uniformly (Fisher–Yates with a seeded splitmix64),
// the others sorted lexicographically so the list does not depend on the drawing order.
static std::vector<int> subset_perms(int n, int K, uint64_t seed) {
    if (K == factorial(n)) return all_perms(n);
    std::vector<int> id(n);
    std::iota(id.begin(), id.end(), 0);
    std::set<std::vector<int>> chosen;
    SplitMix64 rng(seed);
    while ((int)chosen.size() < K - 1) {
        std::vector<int> p = id;
        for (int i = n - 1; i > 0; i--) std::swap(p[i], p[rng.next() % (uint64_t)(i + 1)]);
        if (p != id) chosen.insert(p);
    }
    std::vector<int> out = id;
    for (const auto& p : chosen) out.insert(out.end(), p.begin(), p.end());
    return out;
}

static void check_perms(const std::vector<int>& perms, int n) {
    if (perms.size() % n != 0) fail("mhc-lite permutation list has " + std::to_string(perms.size()) +
                                    " values, not a multiple of n = " + std::to_string(n));
    int K = (int)(perms.size() / n);
    if ((long)K > factorial(n)) fail("mhc-lite permutation list has more rows than n! permutations");
    std::set<std::vector<int>> seen;
    for (int k = 0; k < K; k++) {
        std::vector<int> p(perms.begin() + (long)k * n, perms.begin() + (long)(k + 1) * n);
        std::vector<int> q = p;
        std::sort(q.begin(), q.end());
        for (int i = 0; i < n; i++)
            if (q[i] != i) fail("mhc-lite permutation row " + std::to_string(k) +
                                " is not a permutation of 0.." + std::to_string(n - 1));
        if (k == 0)
            for (int i = 0; i < n; i++)
                if (p[i] != i) fail("mhc-lite permutation row 0 must be the identity");
        if (!seen.insert(p).second) fail("mhc-lite permutation row " + std::to_string(k) +
                                         " repeats an earlier row");
    }
}

ConnSite conn_site_make(const ConnConfig& cfg) {
    ConnSite s;
    s.cfg = cfg;
    const int n = cfg.n, C = cfg.C;
    if (n < 1 || n > 8) fail("number of streams n = " + std::to_string(n) + " is out of range 1..8");
    if (C < 1) fail("stream width C = " + std::to_string(C) + " must be at least 1");
    if (cfg.site_index < 0) fail("site_index must be >= 0");
    s.n = n;
    s.C = C;
    s.r = cfg.site_index % n;
    switch (cfg.variant) {
        case Variant::residual:
            if (n != 1) fail("the residual variant has one stream: n must be 1, got " + std::to_string(n));
            break;
        case Variant::hc: s.M = 1 + n; break;
        case Variant::mhc:
            if (cfg.sinkhorn_iters < 1) fail("mhc needs sinkhorn_iters >= 1, got " +
                                             std::to_string(cfg.sinkhorn_iters));
            s.M = n * (1 + n);
            break;
        case Variant::mhc_lite: {
            if (!cfg.perms.empty()) {
                check_perms(cfg.perms, n);
                s.perms = cfg.perms;
            } else if (cfg.perm_subset > 0) {
                if (cfg.perm_subset > factorial(n))
                    fail("mhc-lite permutation subset K = " + std::to_string(cfg.perm_subset) +
                         " is larger than n! = " + std::to_string(factorial(n)));
                s.perms = subset_perms(n, cfg.perm_subset, cfg.perm_seed);
            } else if (cfg.perm_subset < 0) {
                fail("mhc-lite permutation subset K must be >= 1 (or 0 for all n!)");
            } else {
                if (n > 6) fail("mhc-lite with n = " + std::to_string(n) + " would need n! = " +
                                std::to_string(factorial(n)) +
                                " permutations; set a permutation subset (e.g. K = 24)");
                s.perms = all_perms(n);
            }
            s.K = (int)(s.perms.size() / n);
            s.M = n + s.K;
            break;
        }
        case Variant::kromhc: {
            int K = 0;
            while ((1 << K) < n) K++;
            if ((1 << K) != n) fail("kromhc needs n to be a power of two (1, 2, 4, 8), got n = " +
                                    std::to_string(n));
            s.K = K;
            s.M = n + 2 * K;
            break;
        }
    }

    // Parameter layout, in SPEC §4 order.
    auto add = [&](const char* name, std::vector<int> shape, bool decay) {
        ParamTensor p;
        p.name = name;
        p.shape = shape;
        p.size = 1;
        for (int d : shape) p.size *= d;
        p.offset = s.nparams;
        p.decay = decay;
        s.nparams += p.size;
        s.params.push_back(p);
    };
    const int D = n * C;
    if (cfg.variant == Variant::hc) {
        add("norm.gamma", {C}, false);
        add("static_alpha", {n, 1 + n}, false);
        add("dynamic_alpha_fn", {C, 1 + n}, true);
        add("dynamic_alpha_scale", {}, false);
        add("static_beta", {n}, false);
        add("dynamic_beta_fn", {C}, true);
        add("dynamic_beta_scale", {}, false);
    } else if (cfg.variant != Variant::residual) {
        add("norm.gamma", {D}, false);
        if (cfg.variant == Variant::mhc) add("static_alpha", {n, 1 + n}, false);
        else add("static_alpha", {s.M}, false);
        add("dynamic_alpha_fn", {D, s.M}, true);
        add("pre_branch_scale", {1}, false);
        add("residual_scale", {1}, false);
        add("static_beta", {n}, false);
        add("dynamic_beta_fn", {D, n}, true);
        add("h_post_scale", {}, false);
    }

    // Projection geometry and the scale / static parameter of every pre-activation column.
    if (cfg.variant != Variant::residual) {
        auto off = [&](const char* name) { return conn_param_find(s, name)->offset; };
        const bool hc = cfg.variant == Variant::hc;
        s.rpt = hc ? n : 1;
        s.Dp = hc ? C : D;
        s.M1 = s.M;
        s.M2 = hc ? 1 : n;
        s.prow = s.M1 + s.M2;
        s.o_gamma = off("norm.gamma");
        s.o_W1 = off("dynamic_alpha_fn");
        s.o_W2 = off("dynamic_beta_fn");
        for (int row = 0; row < s.rpt; row++)
            for (int j = 0; j < s.prow; j++) {
                const bool beta = j >= s.M1;
                if (hc) {
                    s.col_scale.push_back(off(beta ? "dynamic_beta_scale" : "dynamic_alpha_scale"));
                    s.col_static.push_back(beta ? off("static_beta") + row
                                                : off("static_alpha") + row * (1 + n) + j);
                } else {
                    const bool pre = cfg.variant == Variant::mhc ? j % (1 + n) == 0 : j < n;
                    s.col_scale.push_back(off(beta ? "h_post_scale"
                                              : pre ? "pre_branch_scale" : "residual_scale"));
                    s.col_static.push_back(beta ? off("static_beta") + (j - s.M1)
                                                : off("static_alpha") + j);
                }
            }
    }

    // Cache layout per token.
    int o = 0;
    auto take = [&](int k) { int at = o; o += k; return at; };
    s.c_hpre = take(n);
    s.c_hres = take(n * n);
    s.c_hpost = take(n);
    if (cfg.variant != Variant::residual) {
        // f(projection) of every pre-activation column (the raw projections; tanh of them for hc)
        s.c_logit = take(s.rpt * s.prow);
        s.c_zlogit = s.c_logit + s.M1;
        s.c_rs = take(s.rpt);  // sqrt(Dp) / ||row|| of each normalised row
        if (cfg.variant == Variant::mhc) s.c_extra = take(n * n);    // pre-Sinkhorn logits L
        if (cfg.variant == Variant::mhc_lite) s.c_extra = take(s.K); // permutation weights a
        if (cfg.variant == Variant::kromhc) s.c_extra = take(s.K);   // factor logit gaps d_k
    }
    s.c_dhres = take(n * n);
    s.c_dhpost = take(n);
    s.stride = o;
    return s;
}

long conn_param_count(const ConnSite& site) { return site.nparams; }

const ParamTensor* conn_param_find(const ConnSite& site, const std::string& name) {
    for (const auto& p : site.params)
        if (p.name == name) return &p;
    return nullptr;
}

int conn_cache_stride(const ConnSite& site) { return site.stride; }

long conn_scratch_size(const ConnSite& site, int /*N: the pre functions work block by block*/) {
    if (site.cfg.variant == Variant::residual) return 0;
    const long pw = (site.prow + 15) / 16 * 16;       // detail::pad_cols
    return (long)site.Dp * (2 * pw + site.prow);      // Wf, Dsum [Dp, pw]; WfT [prow, Dp]
}

template <typename R> void conn_init_params(const ConnSite& s, R* params) {
    const int n = s.n;
    for (long i = 0; i < s.nparams; i++) params[i] = R(0);
    auto at = [&](const char* name) { return params + conn_param_find(s, name)->offset; };
    if (s.cfg.variant == Variant::residual) return;
    if (s.cfg.variant == Variant::hc) {
        R* sa = at("static_alpha");
        for (int i = 0; i < n; i++) {
            sa[i * (1 + n)] = R(i == s.r ? 1 : 0);
            for (int t = 0; t < n; t++) sa[i * (1 + n) + 1 + t] = R(i == t ? 1 : 0);
        }
        *at("dynamic_alpha_scale") = R(0.01);
        R* sb = at("static_beta");
        for (int i = 0; i < n; i++) sb[i] = R(1);
        *at("dynamic_beta_scale") = R(0.01);
        return;
    }
    R* sa = at("static_alpha");
    R* sb = at("static_beta");
    for (int i = 0; i < n; i++) sb[i] = R(i == s.r ? 1 : -1);
    *at("pre_branch_scale") = R(0.01);
    *at("residual_scale") = R(0.01);
    *at("h_post_scale") = R(0.01);
    if (s.cfg.variant == Variant::mhc) {
        for (int i = 0; i < n; i++) {
            sa[i * (1 + n)] = R(i == s.r ? 1 : -1);
            for (int t = 0; t < n; t++) sa[i * (1 + n) + 1 + t] = R(i == t ? 0 : -8);
        }
    } else {
        for (int i = 0; i < n; i++) sa[i] = R(i == s.r ? 1 : -1);
        if (s.cfg.variant == Variant::mhc_lite)
            for (int k = 0; k < s.K; k++) sa[n + k] = R(k == 0 ? 0 : -8);
        else
            for (int k = 0; k < s.K; k++) sa[n + 2 * k] = R(0), sa[n + 2 * k + 1] = R(-8);
    }
}

template void conn_init_params<float>(const ConnSite&, float*);
template void conn_init_params<double>(const ConnSite&, double*);

}  // namespace mhc
