// mhc-lite (SPEC §2): H_res = Σ_k a_k P_k, a convex combination of permutation matrices with
// a = softmax of the res logits, so H_res is doubly stochastic by construction. The permutations
// are all n! in lexicographic order, or the identity plus a seeded subset, or a given list.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <stdexcept>
#include <vector>

#include "mhc/rng.h"
#include "mixer.h"

namespace mhc {

namespace {

void fail(const std::string& msg) { throw std::invalid_argument(msg); }

long factorial(int n) {
    long f = 1;
    for (int i = 2; i <= n; i++) f *= i;
    return f;
}

// All n! permutations in lexicographic order (itertools.permutations order), row 0 = identity.
std::vector<int> all_perms(int n) {
    std::vector<int> p(n), out;
    std::iota(p.begin(), p.end(), 0);
    do out.insert(out.end(), p.begin(), p.end());
    while (std::next_permutation(p.begin(), p.end()));
    return out;
}

// The identity plus K-1 distinct others drawn uniformly (Fisher–Yates with a seeded splitmix64),
// the others sorted lexicographically so the list does not depend on the drawing order.
std::vector<int> subset_perms(int n, int K, uint64_t seed) {
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

void check_perms(const std::vector<int>& perms, int n) {
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

void layout(ConnSite& s) {
    const ConnConfig& cfg = s.cfg;
    const int n = s.n;
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
                        std::to_string(factorial(n)) + " permutations; set a permutation subset (e.g. K = 24)");
        s.perms = all_perms(n);
    }
    s.K = (int)(s.perms.size() / n);
    s.res_col.resize(s.K);
    std::iota(s.res_col.begin(), s.res_col.end(), n);
    s.n_extra = s.K;  // the permutation weights a
}

double init(const ConnSite&, int k) { return k == 0 ? 0.0 : -8.0; }

void forward(const ConnSite& s, const double* l, double* H, double* extra, double (*store)(double)) {
    const int n = s.n;
    thread_local std::vector<double> e;  // exp(l - max); grows once per thread
    e.resize(s.K);
    double m = -INFINITY, z = 0;
    for (int k = 0; k < s.K; k++) m = std::max(m, l[k]);
    for (int k = 0; k < s.K; k++) z += (e[k] = std::exp(l[k] - m));
    std::fill(H, H + n * n, 0.0);
    for (int k = 0; k < s.K; k++) {
        const double a = e[k] / z;
        extra[k] = store(a);
        const int* pk = &s.perms[(size_t)k * n];
        for (int i = 0; i < n; i++) H[i * n + pk[i]] += a;  // H[i][π_k(i)]: each entry sums (n−1)! weights
    }
}

// dL/da_k = Σ_i dH[i][π_k(i)], then the softmax backward.
void backward(const ConnSite& s, const double* a, const double* dH, double* dl) {
    const int n = s.n;
    double dot = 0;
    for (int k = 0; k < s.K; k++) {
        const int* pk = &s.perms[(size_t)k * n];
        double da = 0;
        for (int i = 0; i < n; i++) da += dH[i * n + pk[i]];
        dl[k] = da;
        dot += a[k] * da;
    }
    for (int k = 0; k < s.K; k++) dl[k] = a[k] * (dl[k] - dot);
}

}  // namespace

const detail::Mixer detail::kMixPerm = {layout, init, forward, backward};

}  // namespace mhc
