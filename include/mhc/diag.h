// mhc/diag.h — SPEC §6 diagnostics of a whole model, as logged by `mhc train` (metrics.jsonl
// "diag") and printed by `mhc info`.
#pragma once
#include <vector>

#include <nlohmann/json.hpp>

#include "mhc/gpt.h"

namespace mhc {

// From the coefficient caches of the model's last forward (gpt_forward; a gpt_backward after it
// leaves them intact), over its B*T tokens:
//   {"tokens": N, "sites": [{"site": k, "block": k/2, "kind": "attn"|"mlp",
//     "ds_error_mean", "ds_error_max", "orth_error_mean", "orth_error_max",
//     "fwd_gain_mean", "fwd_gain_max", "bwd_gain_mean", "bwd_gain_max",
//     "depth_fwd_gain_mean", "depth_fwd_gain_max", "depth_bwd_gain_mean", "depth_bwd_gain_max",
//     "depth_sigma1_mean", "depth_sigma1_max",
//     n >= 2 only: "depth_sigma2_mean", "depth_sigma2_max", "stream_similarity",
//     mhc only: "log_inv_nu_mean", "log_inv_nu_max", "frac_nu_above_30"}, ... 2L sites]}
// depth_* are of the composite map A_k ⋯ A_1 up to and including site k: its gains and its two
// largest singular values σ_1, σ_2. stream_similarity is of the streams after site k (mean over
// tokens of the mean pairwise cosine similarity). Reads the model only: no parameter, activation
// or random state changes. Throws std::logic_error before a forward. similarity, when given: each
// site's stream similarity as its caller made it (the GPU, from products made on the device), and
// the stream states are not read.
template <typename T>
nlohmann::json gpt_diagnostics(const GPT<T>& m, const std::vector<double>* similarity = nullptr);

}  // namespace mhc
