// The table of connection variants (mhc/variant.h): one row each.
#include "mhc/variant.h"

#include <stdexcept>

#include "mixer.h"

namespace mhc {

const std::vector<VariantInfo>& variant_table() {
    using detail::kMixCayley, detail::kMixKron, detail::kMixPerm, detail::kMixQuat, detail::kMixSinkhorn;
    // id, key, name, aliases, summary, colour, fixed_n, n_power_of_two, mixing, stores_perms, log_inv_nu, mixer
    static const std::vector<VariantInfo> table = {
        {Variant::residual, "none", "residual", "", "plain residual, a single stream", "#555555", 1,
         false, Mixing::identity, false, false, nullptr},
        {Variant::hc, "hc", "hc", "", "static + 0.01·tanh(dynamic): unconstrained", "#ff7f0e", 0, false,
         Mixing::unconstrained, false, false, nullptr},
        {Variant::mhc, "mhc", "mhc", "", "Sinkhorn–Knopp of exp(logits): approximately doubly stochastic", "#d62728", 0,
         false, Mixing::approx_ds, false, true, &kMixSinkhorn},
        {Variant::mhc_lite, "mhc_lite", "mhc-lite", "",
         "convex combination of permutation matrices: exactly doubly stochastic", "#1f77b4", 0, false,
         Mixing::exact_ds, true, false, &kMixPerm},
        {Variant::kromhc, "kromhc", "kromhc", "", "Kronecker product of 2x2 doubly stochastic factors (n a power of two)",
         "#2ca02c", 0, true, Mixing::exact_ds, false, false, &kMixKron},
        {Variant::jpmhc, "jpmhc", "jpmhc", "",
         "Cayley transform of a skew-symmetric matrix: orthogonal (exactly with cayley_iters = 0)", "#e377c2", 0,
         false, Mixing::cayley, false, false, &kMixCayley},
        {Variant::ohc, "ohc", "ohc", "", "rotation of SO(4) from two unit quaternions (n = 4): exactly orthogonal",
         "#8c564b", 4, false, Mixing::orthogonal, false, false, &kMixQuat},
    };
    return table;
}

const VariantInfo& variant_info(Variant v) {
    for (const VariantInfo& i : variant_table())
        if (i.id == v) return i;
    throw std::logic_error("variant_info: a variant missing from the table");
}

const VariantInfo* variant_find(std::string_view s) {
    for (const VariantInfo& i : variant_table()) {
        if (s == i.key || s == i.name) return &i;
        std::string_view a = i.aliases;
        while (!a.empty()) {
            const size_t comma = a.find(',');
            if (a.substr(0, comma) == s) return &i;
            a = comma == std::string_view::npos ? std::string_view() : a.substr(comma + 1);
        }
    }
    return nullptr;
}

Variant variant_from_string(const std::string& s) {
    if (const VariantInfo* i = variant_find(s)) return i->id;
    throw std::invalid_argument("unknown connection variant '" + s + "' (expected " + variant_choices(true) + ")");
}

const char* variant_name(Variant v) { return variant_info(v).name; }
const char* variant_key(Variant v) { return variant_info(v).key; }

std::string variant_choices(bool names, const char* sep, const char* last_sep) {
    const auto& t = variant_table();
    std::string out;
    for (size_t k = 0; k < t.size(); k++) {
        if (k) out += k + 1 == t.size() ? last_sep : sep;
        out += names ? t[k].name : t[k].key;
    }
    return out;
}

std::string variant_keys_csv() { return variant_choices(false, ",", ","); }

std::string variant_other_spellings() {
    std::vector<std::string> more;
    for (const VariantInfo& i : variant_table()) {
        if (std::string_view(i.name) != i.key) more.push_back(i.name);
        if (*i.aliases) more.push_back(i.aliases);
    }
    std::string out;
    for (const std::string& m : more) out += (out.empty() ? "" : ", ") + m;
    return out;
}

bool is_doubly_stochastic(Mixing m) { return m == Mixing::approx_ds || m == Mixing::exact_ds; }
bool is_orthogonal(Mixing m) { return m == Mixing::cayley || m == Mixing::orthogonal; }

}  // namespace mhc
