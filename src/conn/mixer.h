// The H_res maths of one variant of the SPEC §2 family (mhc, mhc-lite, kromhc, jpmhc, ohc): everything
// that differs between them once the shared pieces (norm, projections, H_pre, H_post) are done.
// Each variant fills one Mixer in its own file (mix_*.cpp) and names it in its row of the variant
// table (variant.cpp). Internal to the library; all arithmetic in double.
#pragma once
#include <cmath>

#include "mhc/conn.h"

namespace mhc::detail {

struct Mixer {
    // Checks the variant's own options and n (std::invalid_argument, one line), then sets s.K (its
    // count: permutations, factors), s.res_col (the dynamic_alpha_fn column of each res logit),
    // and, where they differ from the plain layout [pre_0 … pre_{n−1} | res …], s.pre_col and
    // s.alpha_shape; s.n_extra, the values per token its backward reads back from the cache.
    void (*layout)(ConnSite& s);
    // Initial static logits b_res[k] of res column k (SPEC §2).
    double (*init)(const ConnSite& s, int k);
    // H [n*n] (H[s][t]) from the res logits l [res_col.size()] = s_res·w_res + b_res. Its extra
    // values go through store(), which rounds to the cache's type and returns what was stored, so
    // that where H depends on them it depends on exactly what the backward will read.
    void (*forward)(const ConnSite& s, const double* l, double* H, double* extra, double (*store)(double));
    // dl [res_col.size()] from dH [n*n] = ∂L/∂H_res and the extra values as stored.
    void (*backward)(const ConnSite& s, const double* extra, const double* dH, double* dl);
};

extern const Mixer kMixSinkhorn;  // mhc      (mix_sinkhorn.cpp)
extern const Mixer kMixPerm;      // mhc-lite (mix_perm.cpp)
extern const Mixer kMixKron;      // kromhc   (mix_kron.cpp)
extern const Mixer kMixCayley;    // jpmhc    (mix_cayley.cpp)
extern const Mixer kMixQuat;      // ohc      (mix_quat.cpp)

inline double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace mhc::detail
