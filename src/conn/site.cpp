// Site construction: config validation, parameter and cache layout (the variant's own part from its
// mixer, mixer.h), initialisation.
#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "mhc/conn.h"
#include "mixer.h"

namespace mhc {

static void fail(const std::string& msg) { throw std::invalid_argument(msg); }

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
    const VariantInfo& info = variant_info(cfg.variant);
    if (info.fixed_n && n != info.fixed_n)
        fail(std::string("the ") + info.name + " variant has " +
             (info.fixed_n == 1 ? std::string("one stream") : std::to_string(info.fixed_n) + " streams") +
             ": n must be " + std::to_string(info.fixed_n) + ", got " + std::to_string(n));
    if (info.n_power_of_two && (n & (n - 1)) != 0)
        fail(std::string(info.name) + " needs n to be a power of two (1, 2, 4, 8), got n = " + std::to_string(n));
    if (cfg.variant == Variant::hc) s.M = 1 + n;
    if (info.mixer) {
        s.mixer = info.mixer;
        s.pre_col.resize(n);
        std::iota(s.pre_col.begin(), s.pre_col.end(), 0);  // [pre_0 … pre_{n−1} | res …] unless the mixer says otherwise
        info.mixer->layout(s);
        s.M = n + (int)s.res_col.size();
        if (s.alpha_shape.empty()) s.alpha_shape = {s.M};
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
    } else if (s.mixer) {
        add("norm.gamma", {D}, false);
        add("static_alpha", s.alpha_shape, false);
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
        std::vector<bool> is_pre(s.M, false);
        for (int c : s.pre_col) is_pre[c] = true;
        for (int row = 0; row < s.rpt; row++)
            for (int j = 0; j < s.prow; j++) {
                const bool beta = j >= s.M1;
                if (hc) {
                    s.col_scale.push_back(off(beta ? "dynamic_beta_scale" : "dynamic_alpha_scale"));
                    s.col_static.push_back(beta ? off("static_beta") + row
                                                : off("static_alpha") + row * (1 + n) + j);
                } else {
                    const bool pre = !beta && is_pre[j];
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
        if (s.n_extra) s.c_extra = take(s.n_extra);  // what the mixer's backward reads back
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
    for (int i = 0; i < n; i++) sa[s.pre_col[i]] = R(i == s.r ? 1 : -1);
    for (int k = 0; k < (int)s.res_col.size(); k++) sa[s.res_col[k]] = R(s.mixer->init(s, k));
}

template void conn_init_params<float>(const ConnSite&, float*);
template void conn_init_params<double>(const ConnSite&, double*);

}  // namespace mhc
