// Config keys: one table of fields, shared by the TOML reader, the overrides, JSON and the TOML writer,
// so that the set of accepted names and their types is written down exactly once.
// (Validation and derived defaults are in validate.cpp.)

// toml++ is used header-only (its default): Debian also ships it as a shared library, but the
// header-only build needs no link line and keeps the parser's code private to this file.
// (Linking CMake's tomlplusplus::tomlplusplus target defines TOML_HEADER_ONLY=0 and uses the library.)
#ifndef TOML_HEADER_ONLY
#define TOML_HEADER_ONLY 1
#endif
// toml++'s internal assertions fire on some malformed inputs (fuzz finding F4, fixed upstream after
// Debian's 3.3.0); the parser reports those inputs as syntax errors once the assertions are off.
#define TOML_ASSERT(expr) static_assert(true)
#include <toml++/toml.h>

#include "config/tomlpp_guard.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <variant>
#include <vector>

#include "mhc/config.h"

namespace mhc {

namespace {

using Ref = std::variant<int*, uint64_t*, double*, bool*, std::string*, Variant*>;

struct Field {
    const char* name;
    bool model;                   // part of ModelConfig (and of a checkpoint's `config`)
    Ref (*ref)(TrainConfig&);
};

#define MHC_MODEL(f) Field{#f, true, [](TrainConfig& c) -> Ref { return &c.model.f; }}
#define MHC_TRAIN(f) Field{#f, false, [](TrainConfig& c) -> Ref { return &c.f; }}
// In the order of the structs: the TOML writer and the messages follow it.
const Field kFields[] = {
    MHC_MODEL(n_layer), MHC_MODEL(n_head), MHC_MODEL(n_embd), MHC_MODEL(vocab_size),
    MHC_MODEL(block_size), MHC_MODEL(bias), MHC_MODEL(hyper_conn_type), MHC_MODEL(hyper_conn_n),
    MHC_MODEL(sinkhorn_iters), MHC_MODEL(cayley_iters), MHC_MODEL(hyper_conn_perm_subset), MHC_MODEL(hyper_conn_perm_seed),
    MHC_TRAIN(batch_size), MHC_TRAIN(gradient_accumulation_steps), MHC_TRAIN(learning_rate),
    MHC_TRAIN(min_lr), MHC_TRAIN(warmup_iters), MHC_TRAIN(lr_decay_iters), MHC_TRAIN(max_iters),
    MHC_TRAIN(weight_decay), MHC_TRAIN(beta1), MHC_TRAIN(beta2), MHC_TRAIN(grad_clip),
    MHC_TRAIN(eval_interval), MHC_TRAIN(eval_iters), MHC_TRAIN(log_interval),
    MHC_TRAIN(checkpoint_interval), MHC_TRAIN(diag_interval), MHC_TRAIN(sample_interval), MHC_TRAIN(sample_tokens),
    MHC_TRAIN(keep_checkpoints),
    MHC_TRAIN(max_nonfinite_steps),
    MHC_TRAIN(seed), MHC_TRAIN(data_order), MHC_TRAIN(train_split), MHC_TRAIN(device),
    MHC_TRAIN(recompute), MHC_TRAIN(dtype), MHC_TRAIN(cuda_graphs),
};
#undef MHC_MODEL
#undef MHC_TRAIN

[[noreturn]] void fail(const std::string& where, const std::string& what) {
    throw std::invalid_argument(where + what);
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++) row[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); j++) {
            const size_t up = row[j];
            const bool same = std::tolower((unsigned char)a[i - 1]) == std::tolower((unsigned char)b[j - 1]);
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

// The field called `key`, or an error naming it with the closest accepted name when one is close
// (a typo a third of the name long at most, or a name the key abbreviates: warmup -> warmup_iters).
const Field& find_field(const std::string& key, bool model_only, const std::string& where) {
    const Field* best = nullptr;
    size_t best_d = SIZE_MAX;
    for (const Field& f : kFields) {
        if (model_only && !f.model) continue;
        if (key == f.name) return f;
        const size_t d = edit_distance(key, f.name);
        if (d < best_d) best_d = d, best = &f;
    }
    std::string msg = std::string("unknown ") + (model_only ? "model " : "") + "config key '" + key + "'";
    if (best && best_d <= std::max<size_t>(2, key.size() / 3)) {
        msg += std::string(" (did you mean '") + best->name + "'?)";
    } else {
        for (const Field& f : kFields)
            if ((!model_only || f.model) && key.size() >= 4 && std::string(f.name).rfind(key, 0) == 0) {
                msg += std::string(" (did you mean '") + f.name + "'?)";
                break;
            }
    }
    fail(where, msg);
}

std::string fmt_double(double v) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    std::string s(buf, r.ptr);
    // "1" would read back as an integer; TOML floats need a fraction or an exponent.
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
    return s;
}

// A value from any source (TOML node, JSON, override), before it is checked against a field's type.
struct Other { std::string what; };  // a type no field takes: "a table", "an array", ...
using In = std::variant<int64_t, uint64_t, double, bool, std::string, Other>;

std::string describe(const In& v) {
    struct V {
        std::string operator()(int64_t x) const { return "an integer (" + std::to_string(x) + ")"; }
        std::string operator()(uint64_t x) const { return "an integer (" + std::to_string(x) + ")"; }
        std::string operator()(double x) const { return "a float (" + fmt_double(x) + ")"; }
        std::string operator()(bool x) const { return std::string("a boolean (") + (x ? "true" : "false") + ")"; }
        std::string operator()(const std::string& x) const {  // kept to one short line
            std::string s;
            for (char ch : x.substr(0, 60)) s += ch == '\n' ? std::string("\\n") : std::string(1, ch);
            return "a string ('" + s + (x.size() > 60 ? "...')" : "')");
        }
        std::string operator()(const Other& x) const { return x.what; }
    };
    return std::visit(V{}, v);
}

void set_field(TrainConfig& cfg, const Field& f, const In& v, const std::string& where) {
    const std::string key = std::string("config key '") + f.name + "'";
    auto wrong = [&](const char* expected) { fail(where, key + " must be " + expected + ", got " + describe(v)); };
    Ref ref = f.ref(cfg);
    if (auto p = std::get_if<int*>(&ref)) {
        const auto* i = std::get_if<int64_t>(&v);
        const auto* u = std::get_if<uint64_t>(&v);
        if (!i && !u) wrong("an integer");
        if (i ? (*i < INT_MIN || *i > INT_MAX) : *u > (uint64_t)INT_MAX)
            fail(where, key + " value " + (i ? std::to_string(*i) : std::to_string(*u)) + " is out of range");
        **p = i ? (int)*i : (int)*u;
        if (std::string_view(f.name) == "hyper_conn_n") cfg.model.hyper_conn_n_set = true;
    } else if (auto p = std::get_if<uint64_t*>(&ref)) {
        if (auto i = std::get_if<int64_t>(&v)) {
            if (*i < 0) wrong("a non-negative integer");
            **p = (uint64_t)*i;
        } else if (auto u = std::get_if<uint64_t>(&v)) {
            **p = *u;
        } else if (auto s = std::get_if<std::string>(&v)) {
            // Seeds above TOML's int64 range are written as decimal strings by config_to_toml.
            uint64_t x = 0;
            auto r = std::from_chars(s->data(), s->data() + s->size(), x);
            if (s->empty() || r.ec != std::errc() || r.ptr != s->data() + s->size()) wrong("a non-negative integer");
            **p = x;
        } else {
            wrong("a non-negative integer");
        }
    } else if (auto p = std::get_if<double*>(&ref)) {
        if (auto d = std::get_if<double>(&v)) **p = *d;
        else if (auto i = std::get_if<int64_t>(&v)) **p = (double)*i;
        else if (auto u = std::get_if<uint64_t>(&v)) **p = (double)*u;
        else wrong("a number");
    } else if (auto p = std::get_if<bool*>(&ref)) {
        if (auto b = std::get_if<bool>(&v)) **p = *b;
        else wrong("a boolean (true or false)");
    } else if (auto p = std::get_if<std::string*>(&ref)) {
        if (auto s = std::get_if<std::string>(&v)) **p = *s;
        else wrong("a string");
    } else if (auto p = std::get_if<Variant*>(&ref)) {
        const auto* s = std::get_if<std::string>(&v);
        if (!s) wrong("a string");
        const VariantInfo* info = variant_find(*s);
        if (!info) fail(where, std::string(f.name) + " '" + *s + "' is unknown (expected " + variant_choices() + ")");
        **p = info->id;
    }
}

In from_toml(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::integer: return *n.value<int64_t>();
        case toml::node_type::floating_point: return *n.value<double>();
        case toml::node_type::boolean: return *n.value<bool>();
        case toml::node_type::string: return *n.value<std::string>();
        case toml::node_type::table: return Other{"a table"};
        case toml::node_type::array: return Other{"an array"};
        default: return Other{"a date or time"};
    }
}

In from_json(const nlohmann::json& j) {
    if (j.is_number_unsigned()) return j.get<uint64_t>();
    if (j.is_number_integer()) return j.get<int64_t>();
    if (j.is_number_float()) return j.get<double>();
    if (j.is_boolean()) return j.get<bool>();
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object()) return Other{"an object"};
    if (j.is_array()) return Other{"an array"};
    return Other{"null"};
}

std::string location(const std::string& source, const toml::source_region& r) {
    return source + ":" + std::to_string(r.begin.line) + ": ";
}

toml::table parse_toml(const std::string& text, const std::string& source) {
    // toml++ 3.3.0 has undefined behaviour on some non-ASCII characters outside strings and
    // comments, where TOML allows none anyway (fuzz finding F3): refuse them before parsing.
    if (const size_t at = detail::tomlpp_unsafe_at(text); at != std::string_view::npos)
        throw std::invalid_argument(source + ":" + std::to_string(1 + std::count(text.begin(), text.begin() + at, '\n')) +
                                    ": TOML syntax error: a non-ASCII character outside a string or comment");
    try {
        return toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        const auto& b = e.source().begin;
        throw std::invalid_argument(source + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) +
                                    ": TOML syntax error: " + std::string(e.description()));
    }
}

// The config as written out: an unset hyper_conn_n of "none" is its effective 1, so that reading
// the output back (where it is then explicit) gives the same finalized config.
TrainConfig output_view(const TrainConfig& cfg) {
    TrainConfig c = cfg;
    const int fixed_n = variant_info(c.model.hyper_conn_type).fixed_n;
    if (fixed_n && !c.model.hyper_conn_n_set) c.model.hyper_conn_n = fixed_n;
    return c;
}

template <typename V> nlohmann::json json_value(const V& v) { return v; }
nlohmann::json json_value(Variant v) { return variant_key(v); }

nlohmann::json to_json(const TrainConfig& cfg, bool model_only) {
    TrainConfig c = output_view(cfg);
    nlohmann::json j = nlohmann::json::object();
    for (const Field& f : kFields)
        if (!model_only || f.model) std::visit([&](auto* p) { j[f.name] = json_value(*p); }, f.ref(c));
    return j;
}

void read_json(TrainConfig& cfg, const nlohmann::json& j, bool model_only) {
    const std::string where = model_only ? "model config JSON: " : "config JSON: ";
    if (!j.is_object()) fail(where, "expected an object of config keys, got " + describe(from_json(j)));
    for (const auto& [key, value] : j.items()) set_field(cfg, find_field(key, model_only, where), from_json(value), where);
}

std::string trim(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string toml_quote(const std::string& s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\', out += (char)ch;
        else if (ch < 0x20 || ch == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04X", ch);
            out += buf;
        } else out += (char)ch;
    }
    return out + "\"";
}

}  // namespace

TrainConfig config_from_toml_string(const std::string& text, const std::string& source_name, const TrainConfig& base) {
    const toml::table tbl = parse_toml(text, source_name);
    TrainConfig cfg = base;
    for (const auto& [k, node] : tbl) {
        const std::string key(k.str()), where = location(source_name, k.source());
        if (node.is_table() && !std::any_of(std::begin(kFields), std::end(kFields),
                                            [&](const Field& f) { return key == f.name; }))
            fail(where, "unknown config key '" + key + "': config keys are flat (nanoGPT style), "
                        "write them at the top level without [tables] or dotted names");
        set_field(cfg, find_field(key, false, where), from_toml(node), where);
    }
    return cfg;
}

TrainConfig config_from_toml_file(const std::string& path, const TrainConfig& base) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open config file '" + path + "'");
    std::stringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw std::runtime_error("cannot read config file '" + path + "'");
    return config_from_toml_string(ss.str(), path, base);
}

void config_apply_override(TrainConfig& cfg, const std::string& key_equals_value) {
    std::string shown;  // the override as given, on one line
    for (char ch : key_equals_value) shown += ch == '\n' ? std::string("\\n") : std::string(1, ch);
    const std::string where = "--set " + shown + ": ";
    const size_t eq = key_equals_value.find('=');
    if (eq == std::string::npos) fail(where, "expected key=value");
    const std::string key = trim(key_equals_value.substr(0, eq)), text = trim(key_equals_value.substr(eq + 1));
    if (key.empty()) fail(where, "missing the key before '='");
    const Field& f = find_field(key, false, where);
    if (text.empty()) fail(where, std::string("missing the value of config key '") + f.name + "'");

    // A TOML value when it is one; otherwise a bare word (hyper_conn_type=mhc) is a string. Values
    // that start like a TOML string, array or table but do not parse are reported, not taken as words.
    In v;
    try {
        if (detail::tomlpp_unsafe_at("v = " + text) != std::string_view::npos)  // finding F3: a word, unparsed
            throw toml::parse_error("non-ASCII character", toml::source_region{});
        const toml::table t = toml::parse("v = " + text, std::string_view("--set"));
        if (t.size() != 1 || !t.contains("v"))
            fail(where, std::string("the value of config key '") + f.name + "' is not a single TOML value");
        v = from_toml(*t.get("v"));
    } catch (const toml::parse_error& e) {
        if (std::string("\"'[{").find(text[0]) != std::string::npos)
            fail(where, std::string("the value of config key '") + f.name + "' is not valid TOML: " +
                            std::string(e.description()));
        // Numbers TOML rejects but people type (.5, 5., 1.e-3) are still numbers.
        double d;
        auto r = std::from_chars(text.data(), text.data() + text.size(), d);
        if (r.ec == std::errc() && r.ptr == text.data() + text.size()) v = d;
        else v = text;
    }
    set_field(cfg, f, v, where);
}

nlohmann::json config_to_json(const TrainConfig& cfg) { return to_json(cfg, false); }

nlohmann::json model_config_to_json(const ModelConfig& m) {
    TrainConfig c;
    c.model = m;
    return to_json(c, true);
}

TrainConfig config_from_json(const nlohmann::json& j) {
    TrainConfig cfg;
    read_json(cfg, j, false);
    return cfg;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
    TrainConfig cfg;
    read_json(cfg, j, true);
    return cfg.model;
}

std::string config_to_toml(const TrainConfig& cfg) {
    TrainConfig c = output_view(cfg);
    std::string out = "# mhc config (nanoGPT key names)\n\n# model\n";
    bool in_model = true;
    for (const Field& f : kFields) {
        if (in_model && !f.model) out += "\n# training\n", in_model = false;
        struct V {
            std::string operator()(const int* p) const { return std::to_string(*p); }
            std::string operator()(const uint64_t* p) const {
                const bool fits = *p <= (uint64_t)std::numeric_limits<int64_t>::max();
                return fits ? std::to_string(*p) : toml_quote(std::to_string(*p));
            }
            std::string operator()(const double* p) const { return fmt_double(*p); }
            std::string operator()(const bool* p) const { return *p ? "true" : "false"; }
            std::string operator()(const std::string* p) const { return toml_quote(*p); }
            std::string operator()(const Variant* p) const { return toml_quote(variant_key(*p)); }
        };
        out += std::string(f.name) + " = " + std::visit(V{}, f.ref(c)) + "\n";
    }
    return out;
}

std::string config_json_difference(const nlohmann::json& have, const nlohmann::json& want, const std::string& have_name,
                                   const std::string& want_name, int max_shown) {
    std::string diff;
    int differing = 0;
    for (auto it = want.begin(); it != want.end(); ++it) {
        const nlohmann::json other = have.contains(it.key()) ? have[it.key()] : nlohmann::json();
        if (other == it.value()) continue;
        if (differing++ < max_shown)
            diff += std::string(diff.empty() ? "" : ", ") + it.key() + " " + other.dump() + " " + have_name + ", " +
                    it.value().dump() + " " + want_name;
    }
    if (differing > max_shown) diff += ", and " + std::to_string(differing - max_shown) + " more";
    return diff;
}

std::string closest_name(const std::string& word, const std::vector<std::string>& names) {
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const std::string& n : names) {
        const size_t d = edit_distance(word, n);
        if (d < best_d) best_d = d, best = n;
    }
    return best_d <= std::max<size_t>(2, word.size() / 3) ? best : "";
}

}  // namespace mhc
