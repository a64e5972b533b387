// Fuzz target: TOML configs, --set overrides and config_finalize.
// Input: a TOML config, optionally followed by overrides, each after a NUL byte (TOML text cannot
// hold one): "n_layer = 2\n\0n_embd=64\0hyper_conn_type=mhc". A std::exception is the expected way
// to refuse a config; anything else is a finding: a sanitizer report, a crash, a non-std
// exception, and (checked with __builtin_trap) a broken promise of mhc/config.h about a config
// that was accepted: finalizing is idempotent, and config_to_toml and config_to_json read back
// to the same finalized config.
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "mhc/config.h"

using namespace mhc;

namespace {

void check_round_trips(const TrainConfig& cfg) {
    const std::string toml = config_to_toml(cfg);
    TrainConfig again = cfg;
    config_finalize(again);
    if (config_to_toml(again) != toml) __builtin_trap();  // not idempotent
    TrainConfig from_toml = config_from_toml_string(toml, "round-trip.toml");
    config_finalize(from_toml);
    if (config_to_toml(from_toml) != toml) __builtin_trap();
    TrainConfig from_json = config_from_json(config_to_json(cfg));
    config_finalize(from_json);
    if (config_to_toml(from_json) != toml) __builtin_trap();
    TrainConfig model_only;
    model_only.model = model_config_from_json(model_config_to_json(cfg.model));
    if (model_config_to_json(model_only.model) != model_config_to_json(cfg.model)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string all((const char*)data, size);
    std::vector<std::string> parts;
    for (size_t b = 0;;) {
        const size_t e = all.find('\0', b);
        parts.push_back(all.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (e == std::string::npos) break;
        b = e + 1;
    }
    TrainConfig cfg;
    try {
        cfg = config_from_toml_string(parts[0], "fuzz.toml");
        for (size_t i = 1; i < parts.size(); i++) config_apply_override(cfg, parts[i]);
        config_finalize(cfg);
    } catch (const std::exception&) {
        return 0;
    }
    // The round trips run on an accepted config: an exception there is a finding too.
    try {
        check_round_trips(cfg);
    } catch (const std::exception&) {
        __builtin_trap();
    }
    return 0;
}
