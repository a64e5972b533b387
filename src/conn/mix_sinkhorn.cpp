// mhc (SPEC §2): H_res = exp(L) after `sinkhorn_iters` log-domain Sinkhorn–Knopp iterations of the
// logits L [n,n]; columns grouped per stream, [pre_s, res_{s,0} … res_{s,n−1}]. The backward is
// the exact gradient of the unrolled iterations, recomputed from the stored logits.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "mixer.h"

namespace mhc {

namespace {

// Subtracts from each line of L its log-sum-exp. Line a holds entries a*outer + b*inner, b < n:
// columns (over s) are outer = 1, inner = n; rows (over t) are outer = n, inner = 1.
void lse_normalise(double* L, int n, int outer, int inner) {
    for (int a = 0; a < n; a++) {
        double* l = L + a * outer;
        double m = -INFINITY, z = 0;
        for (int b = 0; b < n; b++) m = std::max(m, l[b * inner]);
        for (int b = 0; b < n; b++) z += std::exp(l[b * inner] - m);
        const double lse = m + std::log(z);
        for (int b = 0; b < n; b++) l[b * inner] -= lse;
    }
}

// L [n,n] in place, `iters` column-then-row normalisations (rows are exact after each). If trace
// is non-null it receives L after each half step (2*iters*n*n).
void sinkhorn_log(double* L, int n, int iters, double* trace) {
    for (int it = 0; it < iters; it++) {
        lse_normalise(L, n, 1, n);  // columns
        if (trace) std::copy(L, L + n * n, trace + (2 * it) * n * n);
        lse_normalise(L, n, n, 1);  // rows
        if (trace) std::copy(L, L + n * n, trace + (2 * it + 1) * n * n);
    }
}

// Backward through sinkhorn_log given its trace: dL [n,n] in/out (dL/dL_final -> dL/dL_initial).
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

void layout(ConnSite& s) {
    const int n = s.n;
    if (s.cfg.sinkhorn_iters < 1)
        throw std::invalid_argument("mhc needs sinkhorn_iters >= 1, got " + std::to_string(s.cfg.sinkhorn_iters));
    s.alpha_shape = {n, 1 + n};
    s.pre_col.clear();
    s.res_col.clear();
    for (int a = 0; a < n; a++) {
        s.pre_col.push_back(a * (1 + n));
        for (int b = 0; b < n; b++) s.res_col.push_back(a * (1 + n) + 1 + b);
    }
    s.n_extra = n * n;  // the pre-Sinkhorn logits L
}

double init(const ConnSite& s, int k) { return k / s.n == k % s.n ? 0.0 : -8.0; }

void forward(const ConnSite& s, const double* l, double* H, double* extra, double (*store)(double)) {
    const int n = s.n;
    double L[64];
    for (int i = 0; i < n * n; i++) L[i] = extra[i] = store(l[i]);
    sinkhorn_log(L, n, s.cfg.sinkhorn_iters, nullptr);
    for (int i = 0; i < n * n; i++) H[i] = std::exp(L[i]);
}

void backward(const ConnSite& s, const double* extra, const double* dH, double* dl) {
    const int n = s.n, iters = s.cfg.sinkhorn_iters;
    thread_local std::vector<double> trace;  // grows once per thread
    trace.resize((size_t)2 * iters * n * n);
    double L[64];
    std::copy(extra, extra + n * n, L);
    sinkhorn_log(L, n, iters, trace.data());
    for (int i = 0; i < n * n; i++) dl[i] = dH[i] * std::exp(L[i]);
    sinkhorn_log_backward(trace.data(), n, iters, dl);
}

}  // namespace

const detail::Mixer detail::kMixSinkhorn = {layout, init, forward, backward};

template <typename R> void sinkhorn_forward(const R* L, int n, int iters, R* H) {
    double l[64];
    for (int i = 0; i < n * n; i++) l[i] = (double)L[i];
    sinkhorn_log(l, n, iters, nullptr);
    for (int i = 0; i < n * n; i++) H[i] = R(std::exp(l[i]));
}

template void sinkhorn_forward<float>(const float*, int, int, float*);
template void sinkhorn_forward<double>(const double*, int, int, double*);

}  // namespace mhc
