// Per-token coefficient maths (SPEC §2) for hc, mhc, mhc-lite and kromhc, forward and backward.
// Everything is computed in double from the stored R values, so the backward sees exactly the
// numbers the forward used, and float results are rounded once.
#include "coef.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mhc::detail {

static inline double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Pre-activation l_j = scale * f_j + static, for the stored f values of the token.
template <typename R>
static inline double preact(const ConnSite& s, const R* params, const R* f, int j) {
    return (double)params[s.col_scale[j]] * (double)f[j] + (double)params[s.col_static[j]];
}

// Subtracts from each line of L its log-sum-exp. Line a holds entries a*outer + b*inner, b < n:
// columns (over s) are outer = 1, inner = n; rows (over t) are outer = n, inner = 1.
static void lse_normalise(double* L, int n, int outer, int inner) {
    for (int a = 0; a < n; a++) {
        double* l = L + a * outer;
        double m = -INFINITY, z = 0;
        for (int b = 0; b < n; b++) m = std::max(m, l[b * inner]);
        for (int b = 0; b < n; b++) z += std::exp(l[b * inner] - m);
        const double lse = m + std::log(z);
        for (int b = 0; b < n; b++) l[b * inner] -= lse;
    }
}

void sinkhorn_log(double* L, int n, int iters, double* trace) {
    for (int it = 0; it < iters; it++) {
        lse_normalise(L, n, 1, n);  // columns
        if (trace) std::copy(L, L + n * n, trace + (2 * it) * n * n);
        lse_normalise(L, n, n, 1);  // rows
        if (trace) std::copy(L, L + n * n, trace + (2 * it + 1) * n * n);
    }
}

// l' = l - lse(l) along an axis has dl = dl' - softmax(l) * sum(dl'), and softmax(l) = exp(l').
void sinkhorn_log_backward(const double* trace, int n, int iters, double* dL) {
    for (int step = 2 * iters - 1; step >= 0; step--) {
        const double* Lo = trace + step * n * n;  // output of this half step
        const bool rows = step % 2 == 1;
        for (int a = 0; a < n; a++) {
            double sum = 0;
            for (int b = 0; b < n; b++) sum += dL[rows ? a * n + b : b * n + a];
            for (int b = 0; b < n; b++) {
                const int i = rows ? a * n + b : b * n + a;
                dL[i] -= std::exp(Lo[i]) * sum;
            }
        }
    }
}

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
    const int pre_stride = v == Variant::mhc ? 1 + n : 1;
    for (int i = 0; i < n; i++) {
        hpre[i] = R(sigm(preact(s, params, f, i * pre_stride)));
        hpost[i] = R(2.0 * sigm(preact(s, params, f, s.M1 + i)));
    }
    double H[64] = {0};
    if (v == Variant::mhc_lite) {
        thread_local std::vector<double> l;  // K logits; grows once per thread
        l.resize(s.K);
        double m = -INFINITY, z = 0;
        for (int k = 0; k < s.K; k++) m = std::max(m, l[k] = preact(s, params, f, n + k));
        for (int k = 0; k < s.K; k++) z += (l[k] = std::exp(l[k] - m));
        for (int k = 0; k < s.K; k++) {
            const double a = l[k] / z;
            c[s.c_extra + k] = R(a);
            const int* pk = &s.perms[(size_t)k * n];
            for (int i = 0; i < n; i++) H[i * n + pk[i]] += a;
        }
    } else if (v == Variant::mhc) {
        double L[64];
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) {
                const R lr = R(preact(s, params, f, a * (1 + n) + 1 + b));
                c[s.c_extra + a * n + b] = lr;
                L[a * n + b] = (double)lr;
            }
        sinkhorn_log(L, n, s.cfg.sinkhorn_iters, nullptr);
        for (int i = 0; i < n * n; i++) H[i] = std::exp(L[i]);
    } else if (v == Variant::kromhc) {
        double p[3], q[3];
        for (int k = 0; k < s.K; k++) {
            const R d = R(preact(s, params, f, n + 2 * k) - preact(s, params, f, n + 2 * k + 1));
            c[s.c_extra + k] = d;
            p[k] = sigm((double)d);
            q[k] = sigm(-(double)d);  // 1 - p without cancellation
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double h = 1;
                for (int k = 0; k < s.K; k++) {  // factor k acts on bit K-1-k (U_1 on the MSB)
                    const int bit = s.K - 1 - k;
                    h *= ((i >> bit) & 1) == ((j >> bit) & 1) ? p[k] : q[k];
                }
                H[i * n + j] = h;
            }
    }
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
    const int pre_stride = v == Variant::mhc ? 1 + n : 1;
    for (int i = 0; i < n; i++) {
        const double lp = preact(s, params, f, i * pre_stride);
        G[i * pre_stride] = R(dhpre[i] * sigm(lp) * sigm(-lp));
        const double lq = preact(s, params, f, s.M1 + i);
        G[s.M1 + i] = R((double)dhpost[i] * 2.0 * sigm(lq) * sigm(-lq));
    }
    if (v == Variant::mhc_lite) {
        // dL/da_k = sum_i dH[i][pi_k(i)], then the softmax backward.
        const R* a = c + s.c_extra;
        thread_local std::vector<double> da;
        da.resize(s.K);
        double dot = 0;
        for (int k = 0; k < s.K; k++) {
            const int* pk = &s.perms[(size_t)k * n];
            da[k] = 0;
            for (int i = 0; i < n; i++) da[k] += (double)dhres[i * n + pk[i]];
            dot += (double)a[k] * da[k];
        }
        for (int k = 0; k < s.K; k++) G[n + k] = R((double)a[k] * (da[k] - dot));
    } else if (v == Variant::mhc) {
        // Recompute the unrolled iterations from the stored logits, then go back through them.
        thread_local std::vector<double> trace;
        const int iters = s.cfg.sinkhorn_iters;
        trace.resize((size_t)2 * iters * n * n);
        double L[64], dL[64];
        for (int i = 0; i < n * n; i++) L[i] = (double)c[s.c_extra + i];
        sinkhorn_log(L, n, iters, trace.data());
        for (int i = 0; i < n * n; i++) dL[i] = (double)dhres[i] * std::exp(L[i]);
        sinkhorn_log_backward(trace.data(), n, iters, dL);
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) G[a * (1 + n) + 1 + b] = R(dL[a * n + b]);
    } else if (v == Variant::kromhc) {
        double p[3], q[3];
        for (int k = 0; k < s.K; k++) {
            const double d = (double)c[s.c_extra + k];
            p[k] = sigm(d);
            q[k] = sigm(-d);
        }
        for (int k = 0; k < s.K; k++) {
            // dH[i][j]/dp_k = ±(product of the other factors): + where bit k agrees, - where not.
            double dp = 0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    double prod = 1;
                    bool same_k = false;
                    for (int k2 = 0; k2 < s.K; k2++) {
                        const int bit = s.K - 1 - k2;
                        const bool same = ((i >> bit) & 1) == ((j >> bit) & 1);
                        if (k2 == k) same_k = same;
                        else prod *= same ? p[k2] : q[k2];
                    }
                    dp += (double)dhres[i * n + j] * (same_k ? prod : -prod);
                }
            const double dd = dp * p[k] * q[k];  // d = l_id - l_swap, p = sigmoid(d)
            G[n + 2 * k] = R(dd);
            G[n + 2 * k + 1] = R(-dd);
        }
    }
}

template void coef_forward_token<float>(const ConnSite&, const float*, const float*, float*);
template void coef_forward_token<double>(const ConnSite&, const double*, const double*, double*);
template void coef_backward_token<float>(const ConnSite&, const float*, const float*,
                                         const double*, float*);
template void coef_backward_token<double>(const ConnSite&, const double*, const double*,
                                          const double*, double*);

}  // namespace mhc::detail
