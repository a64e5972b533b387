// The JSON sidecar (meta.json) that `mhc prepare` writes beside its token files: token width,
// vocabulary, tokenizer and counts. A raw .bin does not say whether it holds uint16 or uint32
// tokens; the sidecar does, so automatic detection reads it (mhc/data.h).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "mhc/data.h"

namespace mhc {

namespace {

constexpr const char* kMetaFormat = "mhc-tokens-1";

[[noreturn]] void bad_meta(const std::string& path, const std::string& what, const std::string& data_path) {
    throw std::runtime_error(path + ": " + what + " (the sidecar of " + data_path + ")");
}

nlohmann::json ref_json(const TokenizerRef& r) {
    return {{"kind", r.kind}, {"file", r.file}, {"vocab_size", r.vocab_size}, {"crc32", r.crc32}};
}

TokenizerRef ref_from(const nlohmann::json& t) {
    TokenizerRef r;
    r.kind = t.at("kind").get<std::string>();
    r.file = t.value("file", std::string());
    r.vocab_size = t.at("vocab_size").get<int>();
    r.crc32 = t.value("crc32", std::string());
    if (r.kind.empty()) throw std::runtime_error("empty tokenizer kind");
    return r;
}

}  // namespace

std::string tokenizer_ref_to_json(const TokenizerRef& r) { return ref_json(r).dump(); }

TokenizerRef tokenizer_ref_from_json(const std::string& text) {
    try {
        return ref_from(nlohmann::json::parse(text));
    } catch (const std::exception& e) {
        throw std::runtime_error(std::string("malformed tokenizer entry: ") + e.what());
    }
}

bool token_meta_find(const std::string& data_path, TokenMeta& meta) {
    namespace fs = std::filesystem;
    const fs::path p(data_path);
    const std::string path = (p.parent_path() / "meta.json").string();
    std::ifstream f(path);
    if (!f) return false;
    std::stringstream ss;
    ss << f.rdbuf();
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(ss.str());
    } catch (const std::exception&) {
        return false;  // not JSON: another program's meta.json, not a sidecar of ours
    }
    if (!j.is_object() || j.value("format", std::string()) != kMetaFormat) return false;
    try {
        const nlohmann::json& files = j.at("files");
        const std::string name = p.filename().string();
        if (!files.is_object() || !files.contains(name)) return false;
        meta = TokenMeta();
        meta.dtype = j.at("dtype").get<std::string>();
        meta.container = j.value("container", std::string("bin"));
        meta.vocab_size = j.at("vocab_size").get<int>();
        if (j.contains("tokenizer") && !j["tokenizer"].is_null()) meta.tokenizer = ref_from(j["tokenizer"]);
        for (const auto& [k, v] : files.items())
            meta.files.push_back({k, {v.at("tokens").get<int64_t>(), v.value("bytes", (int64_t)0)}});
        if (j.contains("inputs"))
            for (const auto& in : j["inputs"]) meta.inputs.push_back({in.at("path").get<std::string>(), in.at("bytes").get<int64_t>()});
    } catch (const nlohmann::json::exception& e) {
        bad_meta(path, std::string("malformed mhc token sidecar: ") + e.what(), data_path);
    } catch (const std::runtime_error& e) {
        bad_meta(path, std::string("malformed mhc token sidecar: ") + e.what(), data_path);
    }
    if (meta.dtype != "uint16" && meta.dtype != "uint32") bad_meta(path, "dtype '" + meta.dtype + "' is neither uint16 nor uint32", data_path);
    if (meta.vocab_size < 1) bad_meta(path, "vocab_size " + std::to_string(meta.vocab_size) + " is not positive", data_path);
    if (meta.dtype == "uint16" && meta.vocab_size > 65536)
        bad_meta(path, "vocab_size " + std::to_string(meta.vocab_size) + " does not fit dtype uint16", data_path);
    return true;
}

std::string token_meta_json(const TokenMeta& meta) {
    nlohmann::json j = {{"format", kMetaFormat}, {"dtype", meta.dtype}, {"container", meta.container},
                        {"vocab_size", meta.vocab_size}};
    if (!meta.tokenizer.empty()) j["tokenizer"] = ref_json(meta.tokenizer);
    nlohmann::json files = nlohmann::json::object();
    for (const auto& [name, info] : meta.files) files[name] = {{"tokens", info.tokens}, {"bytes", info.bytes}};
    j["files"] = files;
    nlohmann::json inputs = nlohmann::json::array();
    for (const auto& [path, bytes] : meta.inputs) inputs.push_back({{"path", path}, {"bytes", bytes}});
    j["inputs"] = inputs;
    return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace mhc
