// kromhc (SPEC §2): H_res = U_1 ⊗ … ⊗ U_K, n = 2^K, each U_k = [[p, 1−p], [1−p, p]] with
// (p, 1−p) = softmax of its two logits (identity, swap); U_1 acts on the most significant bit.
#include <stdexcept>

#include "mixer.h"

namespace mhc {

namespace {

void layout(ConnSite& s) {
    const int n = s.n;
    int K = 0;
    while ((1 << K) < n) K++;
    if ((1 << K) != n)
        throw std::invalid_argument("kromhc needs n to be a power of two (1, 2, 4, 8), got n = " + std::to_string(n));
    s.K = K;
    s.res_col.clear();
    for (int k = 0; k < 2 * K; k++) s.res_col.push_back(n + k);  // f_k identity, f_k swap
    s.n_extra = K;  // the factors' logit gaps d_k = l_identity − l_swap
}

double init(const ConnSite&, int k) { return k % 2 ? -8.0 : 0.0; }

// p_k = σ(d_k), q_k = σ(−d_k) = 1 − p_k without cancellation.
void factors(const ConnSite& s, const double* d, double* p, double* q) {
    for (int k = 0; k < s.K; k++) p[k] = detail::sigm(d[k]), q[k] = detail::sigm(-d[k]);
}

void forward(const ConnSite& s, const double* l, double* H, double* extra, double (*store)(double)) {
    const int n = s.n;
    double p[3], q[3];
    for (int k = 0; k < s.K; k++) extra[k] = store(l[2 * k] - l[2 * k + 1]);
    factors(s, extra, p, q);
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

void backward(const ConnSite& s, const double* extra, const double* dH, double* dl) {
    const int n = s.n;
    double p[3], q[3];
    factors(s, extra, p, q);
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
                dp += dH[i * n + j] * (same_k ? prod : -prod);
            }
        const double dd = dp * p[k] * q[k];  // d = l_id - l_swap, p = sigmoid(d)
        dl[2 * k] = dd;
        dl[2 * k + 1] = -dd;
    }
}

}  // namespace

const detail::Mixer detail::kMixKron = {layout, init, forward, backward};

}  // namespace mhc
