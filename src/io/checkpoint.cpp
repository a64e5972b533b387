// Model checkpoints: GPT <-> safetensors with SPEC §4 names.
#include "mhc/checkpoint.h"
#include "sys/file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <stdexcept>

namespace mhc {

namespace {
std::string site_prefix(int k) {
    return "transformer.h." + std::to_string(k / 2) + (k % 2 ? ".hc_mlp." : ".hc_attn.");
}
}  // namespace

SafeTensors checkpoint_tensors(const GPT<float>& m, const std::map<std::string, std::string>& extra) {
    SafeTensors st;
    st.metadata = extra;
    st.metadata["config"] = model_config_to_json(m.cfg).dump();
    st.metadata["format"] = "mhc-checkpoint-1";
    for (const auto& t : m.params) {
        std::vector<float> v(m.param.begin() + t.offset, m.param.begin() + t.offset + t.size);
        st.tensors[t.name] = st_from_floats(v, std::vector<int64_t>(t.shape.begin(), t.shape.end()));
    }
    if (variant_info(m.variant).stores_perms)
        for (int k = 0; k < 2 * m.L; k++) {
            const ConnSite& s = m.sites[k];
            st.tensors[site_prefix(k) + "perms"] =
                st_from_int64(std::vector<int64_t>(s.perms.begin(), s.perms.end()), {s.K, s.n});
        }
    st.metadata["checksum"] = tensors_checksum(st);
    return st;
}

std::string tensors_checksum(const SafeTensors& st) {
    sys::Crc32 crc;
    for (const auto& [name, t] : st.tensors) {
        crc.add(name.data(), name.size() + 1);  // with its terminating NUL: names cannot run together
        const int dt = (int)t.dtype;
        crc.add(&dt, sizeof dt);
        for (int64_t d : t.shape) crc.add(&d, sizeof d);
        crc.add(t.data.data(), t.data.size());
    }
    return crc.name();
}

void checksum_verify(const SafeTensors& st) {
    auto it = st.metadata.find("checksum");
    if (it == st.metadata.end()) return;
    const std::string got = tensors_checksum(st);
    if (got != it->second)
        throw std::runtime_error(st.path + ": checksum mismatch (stored " + it->second + ", data gives " + got +
                                 "): the file is corrupt");
}

void checkpoint_save(const std::string& path, const GPT<float>& m,
                     const std::map<std::string, std::string>& extra) {
    safetensors_write(path, checkpoint_tensors(m, extra));
}

void checkpoint_load(const SafeTensors& st, GPT<float>& m) {
    auto bad = [&](const std::string& what) { throw std::runtime_error(st.path + ": " + what); };
    checksum_verify(st);
    auto it = st.metadata.find("config");
    if (it == st.metadata.end()) bad("not an mhc checkpoint (no 'config' in the metadata)");
    ModelConfig cfg;
    try {
        cfg = model_config_from_json(nlohmann::json::parse(it->second));
    } catch (const std::exception& e) {
        bad(std::string("bad model config in the metadata: ") + e.what());
    }
    // Before building anything, the config must fit the file: embeddings plus 12 C^2 per layer
    // is a lower bound on the parameters, and the file must hold at least that many values. A
    // tiny file can otherwise describe a model of any size (fuzz finding F6: 1.2 GB from 186 bytes),
    // and absurd sizes would overflow the layout's int shapes (F5).
    double values = 0;
    for (const auto& [name, t] : st.tensors) values += (double)t.numel();
    const double C = cfg.n_embd;
    const double lower = ((double)cfg.vocab_size + cfg.block_size) * C + (double)cfg.n_layer * 12.0 * C * C;
    if (cfg.n_layer > 0 && cfg.n_embd > 0 && lower > values)
        bad("its config describes a model of at least " + std::to_string((long long)lower) +
            " parameters, but the file holds " + std::to_string((long long)values) + " values");
    std::vector<std::vector<int>> perms;
    const bool lite = variant_info(cfg.hyper_conn_type).stores_perms;
    if (lite)
        for (int k = 0; k < 2 * cfg.n_layer; k++) {
            const StTensor& p = st.at(site_prefix(k) + "perms");
            if (p.shape.size() != 2 || p.shape[1] != cfg.hyper_conn_n)
                bad("tensor '" + site_prefix(k) + "perms' must have shape (K, " +
                    std::to_string(cfg.hyper_conn_n) + ")");
            std::vector<int> v;
            for (double x : p.to_double()) {  // checked before the cast (fuzz finding F2)
                if (!(x >= 0 && x < cfg.hyper_conn_n && x == std::floor(x)))
                    bad("tensor '" + site_prefix(k) + "perms' holds " + std::to_string(x) +
                        ", not a stream index below " + std::to_string(cfg.hyper_conn_n));
                v.push_back((int)x);
            }
            perms.push_back(v);
        }
    try {
        gpt_build(m, cfg, lite ? &perms : nullptr);
    } catch (const std::exception& e) {
        bad(std::string("its config does not build a model: ") + e.what());
    }
    std::set<std::string> expected = {"lm_head.weight"};
    if (lite)
        for (int k = 0; k < 2 * m.L; k++) expected.insert(site_prefix(k) + "perms");
    for (const auto& t : m.params) {
        expected.insert(t.name);
        std::string name = t.name;
        if (!st.has(name) && name == "transformer.wte.weight" && st.has("lm_head.weight")) name = "lm_head.weight";
        const StTensor& src = st.at(name);
        const std::vector<int64_t> want(t.shape.begin(), t.shape.end());
        if (src.shape != want) {
            std::string a, b;
            for (auto d : src.shape) a += (a.empty() ? "" : ", ") + std::to_string(d);
            for (auto d : want) b += (b.empty() ? "" : ", ") + std::to_string(d);
            bad("tensor '" + name + "' has shape (" + a + "), the model needs (" + b + ")");
        }
        if (src.dtype != DType::F32 && src.dtype != DType::F64 && src.dtype != DType::BF16 && src.dtype != DType::F16)
            bad("tensor '" + name + "' has dtype " + dtype_name(src.dtype) + ", expected a float type");
        const std::vector<float> v = src.to_float();
        std::copy(v.begin(), v.end(), m.param.begin() + t.offset);
    }
    if (st.has("lm_head.weight") && st.has("transformer.wte.weight") &&
        st.at("lm_head.weight").to_float() != st.at("transformer.wte.weight").to_float())
        bad("lm_head.weight differs from transformer.wte.weight, but the head is tied");
    for (const auto& [name, t] : st.tensors)
        if (!expected.count(name)) bad("unexpected tensor '" + name + "' for this model");
}

void checkpoint_load(const std::string& path, GPT<float>& m, SafeTensors* raw) {
    SafeTensors st = safetensors_read(path);
    checkpoint_load(st, m);
    if (raw) *raw = std::move(st);
}

}  // namespace mhc
