// Diagnostics of SPEC §6: DS error, gains of the map A = H_resᵀ, composite gain through depth,
// and mhc's log(1/ν) statistics. All in double.
#include <algorithm>
#include <cmath>

#include "mhc/conn.h"

namespace mhc {

template <typename R> DSError ds_error(const R* H, int n) {
    DSError e;
    e.min_entry = (double)H[0];
    for (int a = 0; a < n; a++) {
        double row = 0, col = 0;
        for (int b = 0; b < n; b++) {
            row += (double)H[a * n + b];
            col += (double)H[b * n + a];
            e.min_entry = std::min(e.min_entry, (double)H[a * n + b]);
        }
        e.sum_err = std::max({e.sum_err, std::fabs(row - 1), std::fabs(col - 1)});
    }
    return e;
}

// A = Hᵀ: A's rows are H's columns. Forward gain = max abs row sum of A, backward = max abs column.
template <typename R> Gain map_gain_of_hres(const R* H, int n) {
    Gain g;
    for (int a = 0; a < n; a++) {
        double arow = 0, acol = 0;
        for (int b = 0; b < n; b++) {
            arow += std::fabs((double)H[b * n + a]);
            acol += std::fabs((double)H[a * n + b]);
        }
        g.fwd = std::max(g.fwd, arow);
        g.bwd = std::max(g.bwd, acol);
    }
    return g;
}

namespace {
struct Acc {
    double sum = 0, max = -INFINITY;
    long count = 0;
    void add(double v) { sum += v, max = std::max(max, v), count++; }
    Stat stat() const { return count ? Stat{sum / count, max} : Stat{}; }
};
}  // namespace

template <typename R> SiteDiag conn_site_diagnostics(const ConnSite& s, const R* cache, int N) {
    const int n = s.n;
    Acc ds, fwd, bwd, nu;
    long above = 0;
    const bool want_nu = variant_info(s.cfg.variant).log_inv_nu;
    for (int tok = 0; tok < N; tok++) {
        const R* H = cache_hres(s, cache, tok);
        ds.add(ds_error(H, n).value());
        const Gain g = map_gain_of_hres(H, n);
        fwd.add(g.fwd);
        bwd.add(g.bwd);
        if (want_nu) {  // the pre-Sinkhorn logits, as the mixer cached them
            const R* L = cache + (long)tok * s.stride + s.c_extra;
            const auto [lo, hi] = std::minmax_element(L, L + s.n_extra);
            const double v = (double)*hi - (double)*lo;
            nu.add(v);
            above += v > 30;
        }
    }
    SiteDiag d;
    d.ds = ds.stat();
    d.fwd = fwd.stat();
    d.bwd = bwd.stat();
    if (want_nu) {
        d.has_nu = true;
        d.log_inv_nu = nu.stat();
        d.frac_nu_above_30 = N ? (double)above / N : 0;
    }
    return d;
}

void CompositeGain::reset(int N_, int n_) {
    N = N_;
    n = n_;
    A.assign((size_t)N * n * n, 0.0);
    for (int tok = 0; tok < N; tok++)
        for (int i = 0; i < n; i++) A[((size_t)tok * n + i) * n + i] = 1.0;
}

template <typename R> void CompositeGain::push(const ConnSite& s, const R* cache) {
    double tmp[64];
    for (int tok = 0; tok < N; tok++) {
        const R* H = cache_hres(s, cache, tok);
        double* Ac = &A[(size_t)tok * n * n];
        // new = Hᵀ · A_prev: new[i][j] = sum_k H[k][i] A_prev[k][j]
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0;
                for (int k = 0; k < n; k++) acc += (double)H[k * n + i] * Ac[k * n + j];
                tmp[i * n + j] = acc;
            }
        std::copy(tmp, tmp + n * n, Ac);
    }
}

// Over tokens: max abs row sum (rows = true) or max abs column sum of each composite map.
static Stat composite_stat(const std::vector<double>& A, int N, int n, bool rows) {
    Acc a;
    for (int tok = 0; tok < N; tok++) {
        const double* Ac = &A[(size_t)tok * n * n];
        double g = 0;
        for (int i = 0; i < n; i++) {
            double sum = 0;
            for (int j = 0; j < n; j++) sum += std::fabs(rows ? Ac[i * n + j] : Ac[j * n + i]);
            g = std::max(g, sum);
        }
        a.add(g);
    }
    return a.stat();
}

Stat CompositeGain::fwd() const { return composite_stat(A, N, n, true); }
Stat CompositeGain::bwd() const { return composite_stat(A, N, n, false); }

#define MHC_DIAG_INST(R)                                                          \
    template DSError ds_error<R>(const R*, int);                                  \
    template Gain map_gain_of_hres<R>(const R*, int);                             \
    template SiteDiag conn_site_diagnostics<R>(const ConnSite&, const R*, int);   \
    template void CompositeGain::push<R>(const ConnSite&, const R*);
MHC_DIAG_INST(float)
MHC_DIAG_INST(double)

}  // namespace mhc
