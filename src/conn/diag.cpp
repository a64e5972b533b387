// Diagnostics of SPEC §6: DS error, orthogonality error, gains of the map A = H_resᵀ, composite
// gain and spectrum through depth, stream similarity, and mhc's log(1/ν) statistics. All in double.
// The tokens are independent: their values are made in parallel (OpenMP), then added in token
// order, so the results are the same bits on any number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

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

template <typename R> double orth_error(const R* H, int n) {
    double e = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double g = i == j ? -1.0 : 0.0;
            for (int k = 0; k < n; k++) g += (double)H[k * n + i] * (double)H[k * n + j];
            e = std::max(e, std::fabs(g));
        }
    return e;
}

// Eigenvalues of the symmetric S [n,n] (destroyed) by cyclic Jacobi rotations, onto its diagonal.
// Each rotation zeroes one off-diagonal pair; sweeps stop when the off-diagonal mass is negligible
// against the diagonal (quadratic convergence: a handful of sweeps for n <= 8).
static void jacobi_eigenvalues(double* S, int n) {
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int p = 0; p < n; p++)
            for (int q = 0; q < n; q++) (p == q ? diag : off) += S[p * n + q] * S[p * n + q];
        if (off <= 1e-32 * diag || off == 0) return;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const double apq = S[p * n + q];
                if (apq == 0) continue;
                const double theta = (S[q * n + q] - S[p * n + p]) / (2 * apq);
                const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
                const double c = 1 / std::sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) {  // S ← S J, then Jᵀ S
                    const double kp = S[k * n + p], kq = S[k * n + q];
                    S[k * n + p] = c * kp - s * kq;
                    S[k * n + q] = s * kp + c * kq;
                }
                for (int k = 0; k < n; k++) {
                    const double pk = S[p * n + k], qk = S[q * n + k];
                    S[p * n + k] = c * pk - s * qk;
                    S[q * n + k] = s * pk + c * qk;
                }
            }
    }
}

void singular_values(const double* A, int n, double* sv) {
    double S[64];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k < n; k++) acc += A[k * n + i] * A[k * n + j];
            S[i * n + j] = acc;  // AᵀA
        }
    jacobi_eigenvalues(S, n);
    for (int i = 0; i < n; i++) sv[i] = std::sqrt(std::max(S[i * n + i], 0.0));
    std::sort(sv, sv + n, [](double a, double b) { return a > b; });
}

template <typename T> void stream_gram(const T* X, int N, int n, int C, double* G) {
#pragma omp parallel for schedule(static)
    for (int tok = 0; tok < N; tok++) {
        const T* x = X + (size_t)tok * n * C;
        double* g = G + (size_t)tok * n * n;
        for (int s = 0; s < n; s++)
            for (int t = s; t < n; t++) {
                double dot = 0;
                for (int c = 0; c < C; c++) dot += (double)x[s * C + c] * (double)x[t * C + c];
                g[s * n + t] = g[t * n + s] = dot;
            }
    }
}

double stream_similarity_of_gram(const double* G, int N, int n) {
    if (n < 2 || N < 1) return NAN;
    double total = 0;
    for (int tok = 0; tok < N; tok++) {
        const double* g = G + (size_t)tok * n * n;
        double sum = 0;
        for (int s = 0; s < n; s++)
            for (int t = s + 1; t < n; t++) {
                const double den = std::sqrt(g[s * n + s]) * std::sqrt(g[t * n + t]);
                sum += den > 0 ? g[s * n + t] / den : 0.0;
            }
        total += sum / (n * (n - 1) / 2);
    }
    return total / N;
}

template <typename T> double stream_similarity(const T* X, int N, int n, int C) {
    if (n < 2 || N < 1) return NAN;
    std::vector<double> G((size_t)N * n * n);
    stream_gram(X, N, n, C, G.data());
    return stream_similarity_of_gram(G.data(), N, n);
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
    Acc ds, orth, fwd, bwd, nu;
    long above = 0;
    const bool want_nu = variant_info(s.cfg.variant).log_inv_nu;
    std::vector<double> v((size_t)std::max(N, 0) * 5);  // per token: ds, orth, fwd, bwd, log(1/ν)
#pragma omp parallel for schedule(static)
    for (int tok = 0; tok < N; tok++) {
        const R* H = cache_hres(s, cache, tok);
        double* t = &v[(size_t)tok * 5];
        const Gain g = map_gain_of_hres(H, n);
        t[0] = ds_error(H, n).value(), t[1] = orth_error(H, n), t[2] = g.fwd, t[3] = g.bwd;
        if (want_nu) {  // the pre-Sinkhorn logits, as the mixer cached them
            const R* L = cache + (long)tok * s.stride + s.c_extra;
            const auto [lo, hi] = std::minmax_element(L, L + s.n_extra);
            t[4] = (double)*hi - (double)*lo;
        }
    }
    for (int tok = 0; tok < N; tok++) {
        const double* t = &v[(size_t)tok * 5];
        ds.add(t[0]), orth.add(t[1]), fwd.add(t[2]), bwd.add(t[3]);
        if (want_nu) nu.add(t[4]), above += t[4] > 30;
    }
    SiteDiag d;
    d.ds = ds.stat();
    d.orth = orth.stat();
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
#pragma omp parallel for schedule(static)
    for (int tok = 0; tok < N; tok++) {
        double tmp[64];
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
    std::vector<double> g((size_t)std::max(N, 0));
#pragma omp parallel for schedule(static)
    for (int tok = 0; tok < N; tok++) {
        const double* Ac = &A[(size_t)tok * n * n];
        double m = 0;
        for (int i = 0; i < n; i++) {
            double sum = 0;
            for (int j = 0; j < n; j++) sum += std::fabs(rows ? Ac[i * n + j] : Ac[j * n + i]);
            m = std::max(m, sum);
        }
        g[tok] = m;
    }
    Acc a;
    for (const double x : g) a.add(x);
    return a.stat();
}

Stat CompositeGain::fwd() const { return composite_stat(A, N, n, true); }
Stat CompositeGain::bwd() const { return composite_stat(A, N, n, false); }

CompositeGain::Spectrum CompositeGain::spectrum() const {
    std::vector<double> top((size_t)std::max(N, 0) * 2);  // per token: σ_1, σ_2
#pragma omp parallel for schedule(static)
    for (int tok = 0; tok < N; tok++) {
        double sv[8];
        singular_values(&A[(size_t)tok * n * n], n, sv);
        top[2 * (size_t)tok] = sv[0], top[2 * (size_t)tok + 1] = n > 1 ? sv[1] : 0.0;
    }
    Acc s1, s2;
    for (int tok = 0; tok < N; tok++) s1.add(top[2 * (size_t)tok]), s2.add(top[2 * (size_t)tok + 1]);
    return {s1.stat(), s2.stat()};
}

#define MHC_DIAG_INST(R)                                                          \
    template DSError ds_error<R>(const R*, int);                                  \
    template Gain map_gain_of_hres<R>(const R*, int);                             \
    template double orth_error<R>(const R*, int);                                 \
    template double stream_similarity<R>(const R*, int, int, int);                \
    template void stream_gram<R>(const R*, int, int, int, double*);               \
    template SiteDiag conn_site_diagnostics<R>(const ConnSite&, const R*, int);   \
    template void CompositeGain::push<R>(const ConnSite&, const R*);
MHC_DIAG_INST(float)
MHC_DIAG_INST(double)

}  // namespace mhc
