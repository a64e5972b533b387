// Per-token coefficient maths (SPEC §2), forward and backward: hc's per-stream rows, and the shared
// pieces of the §2 family (H_pre, H_post) around each variant's mixer (mixer.h) for H_res.
// Everything is computed in double from the stored R values, so the backward sees exactly the
// numbers the forward used, and float results are rounded once.
#include "coef.h"
#include "mixer.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mhc::detail {

// Pre-activation l_j = scale * f_j + static, for the stored f values of the token.
template <typename R>
static inline double preact(const ConnSite& s, const R* params, const R* f, int j) {
    return (double)params[s.col_scale[j]] * (double)f[j] + (double)params[s.col_static[j]];
}

// What the cache of type R holds of x, back in double (the mixers' store()).
template <typename R> double store_as(double x) { return (double)R(x); }

template <typename R>
void coef_forward_token(const ConnSite& s, const R* params, const R* P, R* c) {
    const int n = s.n;
    R* f = c + s.c_logit;
    R* hpre = c + s.c_hpre;
    R* hres = c + s.c_hres;
    R* hpost = c + s.c_hpost;
    const Variant v = s.cfg.variant;
    if (v == Variant::hc) {
        for (int j = 0; j < s.rpt * s.prow; j++) f[j] = R(std::tanh((double)P[j]));
        for (int row = 0; row < n; row++) {  // alpha[row][0..n], beta[row]
            const int b = row * s.prow;
            hpre[row] = R(preact(s, params, f, b));
            for (int t = 0; t < n; t++) hres[row * n + t] = R(preact(s, params, f, b + 1 + t));
            hpost[row] = R(preact(s, params, f, b + n + 1));
        }
        return;
    }
    for (int j = 0; j < s.prow; j++) f[j] = P[j];
    for (int i = 0; i < n; i++) {
        hpre[i] = R(sigm(preact(s, params, f, s.pre_col[i])));
        hpost[i] = R(2.0 * sigm(preact(s, params, f, s.M1 + i)));
    }
    const int nres = (int)s.res_col.size();
    thread_local std::vector<double> l, extra;  // grow once per thread
    l.resize(nres);
    extra.resize(s.n_extra);
    for (int k = 0; k < nres; k++) l[k] = preact(s, params, f, s.res_col[k]);
    double H[64];
    s.mixer->forward(s, l.data(), H, extra.data(), store_as<R>);
    for (int k = 0; k < s.n_extra; k++) c[s.c_extra + k] = R(extra[k]);
    for (int i = 0; i < n * n; i++) hres[i] = R(H[i]);
}

template <typename R>
void coef_backward_token(const ConnSite& s, const R* params, const R* c, const double* dhpre, R* G) {
    const int n = s.n;
    const R* f = c + s.c_logit;
    const R* dhres = c + s.c_dhres;
    const R* dhpost = c + s.c_dhpost;
    const Variant v = s.cfg.variant;
    if (v == Variant::hc) {  // alpha and beta are the pre-activations themselves
        for (int row = 0; row < n; row++) {
            R* g = G + row * s.prow;
            g[0] = R(dhpre[row]);
            for (int t = 0; t < n; t++) g[1 + t] = dhres[row * n + t];
            g[n + 1] = dhpost[row];
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        const double lp = preact(s, params, f, s.pre_col[i]);
        G[s.pre_col[i]] = R(dhpre[i] * sigm(lp) * sigm(-lp));
        const double lq = preact(s, params, f, s.M1 + i);
        G[s.M1 + i] = R((double)dhpost[i] * 2.0 * sigm(lq) * sigm(-lq));
    }
    const int nres = (int)s.res_col.size();
    thread_local std::vector<double> extra, dl;  // grow once per thread
    extra.resize(s.n_extra);
    dl.resize(nres);
    double dH[64];
    for (int i = 0; i < n * n; i++) dH[i] = (double)dhres[i];
    for (int k = 0; k < s.n_extra; k++) extra[k] = (double)c[s.c_extra + k];
    s.mixer->backward(s, extra.data(), dH, dl.data());
    for (int k = 0; k < nres; k++) G[s.res_col[k]] = R(dl[k]);
}

template void coef_forward_token<float>(const ConnSite&, const float*, const float*, float*);
template void coef_forward_token<double>(const ConnSite&, const double*, const double*, double*);
template void coef_backward_token<float>(const ConnSite&, const float*, const float*,
                                         const double*, float*);
template void coef_backward_token<double>(const ConnSite&, const double*, const double*,
                                          const double*, double*);

}  // namespace mhc::detail
