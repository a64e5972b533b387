// Per-token coefficient maths (SPEC §2): pre-activations -> H_pre, H_res, H_post, and back.
// Internal to the library; all arithmetic in double, results stored as R.
#pragma once
#include "mhc/conn.h"

namespace mhc::detail {

// P: the token's rpt*prow raw projections. Writes into the token's cache row c: f(P) (identity,
// or tanh for hc), H_pre, H_res, H_post and the variant's extra values.
template <typename R>
void coef_forward_token(const ConnSite& s, const R* params, const R* P, R* c);

// From the cache row c (including dH_res, dH_post written by conn_post_backward) and dhpre [n],
// writes G [rpt*prow]: dL/dl_j for every pre-activation l_j = scale*f(proj_j) + static.
template <typename R>
void coef_backward_token(const ConnSite& s, const R* params, const R* c, const double* dhpre, R* G);

}  // namespace mhc::detail
