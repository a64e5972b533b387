// Test helpers for whole-model tests: a tiny config of every variant, and a model moved away from
// its initial values so that every path matters.
#pragma once
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "mhc/gpt.h"

namespace mhc::test {

// 2 layers, 2 heads, C = 8, V = 11; n = 1 (none), 3 (hc) or 4 (the others).
inline ModelConfig tiny_config(const std::string& type, bool bias = false, int block_size = 4) {
    ModelConfig c;
    c.n_layer = 2;
    c.n_head = 2;
    c.n_embd = 8;
    c.vocab_size = 11;
    c.block_size = block_size;
    c.bias = bias;
    c.hyper_conn_type = variant_from_string(type);
    c.hyper_conn_n = type == "none" ? 1 : (type == "hc" ? 3 : 4);
    c.sinkhorn_iters = 20;
    return c;
}

// tiny_config at another size: C wide in H heads, vocabulary V, n streams, blocks of block_size.
inline ModelConfig sized_config(const std::string& type, int n, int C, int H, int V, int block_size,
                                bool bias = false) {
    ModelConfig c = tiny_config(type, bias, block_size);
    c.n_embd = C;
    c.n_head = H;
    c.vocab_size = V;
    c.hyper_conn_n = n;
    return c;
}

// gpt_build + gpt_init, then every parameter moved by N(0, 0.1).
template <typename T> void make_perturbed(GPT<T>& m, const ModelConfig& c, uint64_t seed) {
    gpt_build(m, c);
    gpt_init(m, seed);
    std::mt19937_64 rng(seed + 2);
    std::normal_distribution<double> nd(0, 1);
    for (auto& p : m.param) p += T(0.1 * nd(rng));
}

// Every model variant, with and without biases where that adds a path: (hyper_conn_type, bias).
inline std::vector<std::pair<std::string, bool>> all_model_variants() {
    return {{"none", false}, {"none", true},     {"hc", false},    {"mhc", false},
            {"mhc_lite", false}, {"mhc_lite", true}, {"kromhc", false}, {"jpmhc", false}, {"ohc", false}};
}

// gtest case name of one of them, e.g. "mhc_lite_bias".
template <typename Info> std::string model_variant_name(const Info& info) {
    return info.param.first + (info.param.second ? "_bias" : "");
}

}  // namespace mhc::test
