// mhc/variant.h — the connection variants, in one table (SPEC §1).
//
// Everything that lists, names or constrains the variants derives it from this table: config
// parsing and validation, `--help` texts, `mhc compare`'s default list and plot colours, checkpoint
// loading, the tests. Adding a variant of the SPEC §2 family is one row here (src/conn/variant.cpp)
// plus its coefficient file (src/conn/mix_*.cpp, see src/conn/mixer.h).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace mhc {

enum class Variant { residual, hc, mhc, mhc_lite, kromhc, jpmhc, ohc };

// What H_res guarantees (SPEC §1's table).
enum class Mixing {
    identity,        // residual: n = 1, H_res = 1
    unconstrained,   // hc
    approx_ds,       // mhc: doubly stochastic only up to the finite Sinkhorn run
    exact_ds,        // mhc-lite, kromhc: doubly stochastic by construction
    cayley,          // jpmhc: orthogonal exactly with cayley_iters = 0, only approximately with the
                     // paper's fixed-point iterations (> 0); the orthogonality error measures which
    orthogonal,      // ohc: orthogonal by construction
};

namespace detail { struct Mixer; }  // a variant's H_res maths (src/conn/mixer.h)

struct VariantInfo {
    Variant id;
    const char* key;      // hyper_conn_type value, JSON/TOML, run directory names: none, mhc_lite, ...
    const char* name;     // as the library and its tables print it: residual, mhc-lite, ...
    const char* aliases;  // accepted spellings besides key and name, comma-separated ("" if none)
    const char* summary;  // one line: how H_res is made
    const char* colour;   // its line colour in `mhc compare`'s plots
    int fixed_n;          // the only stream count it takes (residual: 1, ohc: 4), or 0 for any n in 1..8
    bool n_power_of_two;  // n must be a power of two (kromhc)
    Mixing mixing;
    bool stores_perms;    // its sites' permutation lists are checkpoint tensors (`….perms`, mhc-lite)
    bool log_inv_nu;      // SPEC §6's log(1/ν) statistics of its pre-Sinkhorn logits (mhc)
    const detail::Mixer* mixer;  // H_res from the site's logits (the SPEC §2 family); null for residual, hc
};

// Every variant, in the order tables, plots and default lists use.
const std::vector<VariantInfo>& variant_table();
const VariantInfo& variant_info(Variant v);
// By key, name or alias ("none", "residual", "mhc_lite", "mhc-lite", ...); nullptr if unknown.
const VariantInfo* variant_find(std::string_view spelling);

// Names as used in configs and checkpoints: "residual" (alias "none"), "hc", "mhc",
// "mhc-lite" (alias "mhc_lite"), "kromhc", "jpmhc", "ohc". Throws std::invalid_argument on an
// unknown name.
Variant variant_from_string(const std::string& s);
const char* variant_name(Variant v);  // the library's spelling: residual, hc, mhc, mhc-lite, kromhc, ...
const char* variant_key(Variant v);   // the config's spelling: none, hc, mhc, mhc_lite, kromhc, ...

// "none, hc, mhc, mhc_lite, kromhc, jpmhc or ohc" (keys; with names = true: "residual, hc, ... or ohc").
std::string variant_choices(bool names = false, const char* sep = ", ", const char* last_sep = " or ");
// "none,hc,mhc,mhc_lite,kromhc,jpmhc,ohc": every key, comma-separated (the default --variants list).
std::string variant_keys_csv();
// "residual, mhc-lite": the other accepted spellings (names that differ from keys, aliases).
std::string variant_other_spellings();
bool is_doubly_stochastic(Mixing m);
// The orthogonal family (jpmhc, ohc): the orthogonality error (SPEC §6) is their guarantee, as the
// DS error is of the doubly stochastic ones.
bool is_orthogonal(Mixing m);

}  // namespace mhc
