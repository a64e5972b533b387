// mhc/config.h — the configuration of a training run: the model, the optimiser and the schedule.
//
// Keys use nanoGPT's names and are flat: a TOML config is a list of `key = value` lines at the top
// level (model keys too), and `mhc train --set key=value` overrides one key. The same flat names
// are used in JSON (a checkpoint's metadata holds model_config_to_json under `config`).
//
// Life of a config: parse (config_from_toml_file / _string / config_from_json), apply overrides
// (config_apply_override), then config_finalize, which fills the derived defaults and validates.
// Derived defaults are filled only at the end so that an override of max_iters also moves an
// unset lr_decay_iters. Problems throw std::invalid_argument with a one-line message that names
// the key (and, for files, the file and line); a file that cannot be read throws std::runtime_error.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "mhc/variant.h"

namespace mhc {

// The largest head size (n_embd / n_head) the GPU's attention takes: its kernels keep a head's
// channels in registers, 32 lanes by up to 4 (ops/attention.cu).
constexpr int kCudaMaxHeadSize = 128;

struct ModelConfig {
    int n_layer = 4, n_head = 4, n_embd = 128, vocab_size = 0 /* 0: from the data's format */, block_size = 128;
    bool bias = false;
    Variant hyper_conn_type = Variant::mhc_lite;  // written as its key (mhc/variant.h): none, hc, mhc, mhc_lite, ...
    int hyper_conn_n = 4;                       // a variant with a fixed n (none: 1) forces an unset n to it
    int sinkhorn_iters = 20;                    // mhc only
    int cayley_iters = 2;                       // jpmhc only: the paper's fixed-point iterations; 0 = exact Cayley
    int hyper_conn_perm_subset = 0;             // mhc_lite: 0 = all n! permutations, K = identity + K-1 seeded
    uint64_t hyper_conn_perm_seed = 0;
    // Bookkeeping, not a config key: whether hyper_conn_n was given explicitly (by a config file,
    // an override or JSON). A variant with a fixed n ("none": 1) forces an unset hyper_conn_n to it but
    // rejects an explicit other n, so that `--set hyper_conn_type=none` works on a config that leaves
    // hyper_conn_n at its default.
    bool hyper_conn_n_set = false;
};

struct TrainConfig {
    ModelConfig model;
    int batch_size = 16, gradient_accumulation_steps = 1;
    double learning_rate = 1e-3, min_lr = 1e-4;
    int warmup_iters = 100, lr_decay_iters = 0 /* 0: = max_iters */, max_iters = 2000;
    double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, grad_clip = 1.0 /* 0: no clipping */;
    int eval_interval = 250, eval_iters = 20, log_interval = 10, checkpoint_interval = 0 /* 0: = eval_interval */;
    int diag_interval = 10;        // steps between SPEC §6 connection diagnostics in metrics.jsonl (0: never)
    int sample_interval = 0;       // steps between samples of the model printed and logged (0: never)
    int sample_tokens = 64;        // tokens in each of those samples, at most
    int keep_checkpoints = 3;      // checkpoints kept in the run directory (the newest ones)
    int max_nonfinite_steps = 5;   // consecutive steps with a non-finite loss or gradient before the run stops
    uint64_t seed = 1337;
    std::string data_order = "random";          // random, sequential
    double train_split = 0.9;                   // when no separate validation file is given
    std::string device = "cpu";                 // where the model runs: cpu, cuda (a build with CUDA, a GPU)
    bool recompute = false;                     // keep fewer activations, make the connections' again in the backward
    std::string dtype = "fp32";                 // the linear layers' products: fp32, or bf16 (fp32 sums; device cuda)
    bool cuda_graphs = false;                   // replay each training step's GPU work as CUDA graphs (device cuda)
};

// Parses a TOML config. Every key must be one of the field names above, at the top level.
// Errors: unknown key (with a suggestion when one is close: "unknown config key 'n_embed' (did you
// mean 'n_embd'?)"), wrong type (integers are accepted where a number is expected), TOML syntax
// error; each message starts with "<file>:<line>:". The result is not finalized. The keys the
// file leaves out keep base's values (the built-in defaults, or e.g. a checkpoint's model).
TrainConfig config_from_toml_file(const std::string& path, const TrainConfig& base = TrainConfig());
TrainConfig config_from_toml_string(const std::string& text, const std::string& source_name,
                                    const TrainConfig& base = TrainConfig());

// Applies one `key=value` override. The value is read as a TOML value, so strings may be bare or
// quoted (hyper_conn_type=mhc, hyper_conn_type="mhc"), booleans are true/false. Same errors as above.
// hyper_conn_type takes a variant's key, name or alias (mhc/variant.h: mhc-lite, residual, ...).
void config_apply_override(TrainConfig& cfg, const std::string& key_equals_value);

// Fills derived defaults (lr_decay_iters 0 -> max_iters, checkpoint_interval 0 -> eval_interval,
// hyper_conn_n 1 for none) and validates. Throws std::invalid_argument naming the first problem.
// Idempotent: finalizing a finalized config changes nothing.
void config_finalize(TrainConfig& cfg);

// JSON: one flat object with the same names. config_from_json is as strict as the TOML reader
// (unknown keys and wrong types are errors); missing keys keep their defaults.
nlohmann::json config_to_json(const TrainConfig& cfg);
TrainConfig config_from_json(const nlohmann::json& j);
// Only the model keys (a checkpoint's `config`): n_layer, n_head, n_embd, vocab_size, block_size,
// bias, hyper_conn_type, hyper_conn_n, sinkhorn_iters, cayley_iters, hyper_conn_perm_subset,
// hyper_conn_perm_seed.
nlohmann::json model_config_to_json(const ModelConfig& m);
ModelConfig model_config_from_json(const nlohmann::json& j);  // exactly the model keys; missing -> default

// Each key whose value differs between two config objects (config_to_json or model_config_to_json),
// in the objects' key order, as "n_embd 32 in the checkpoint, 64 in the config" (have, then want,
// each followed by its name); at most max_shown keys, then "and N more". "" when none differ.
std::string config_json_difference(const nlohmann::json& have, const nlohmann::json& want, const std::string& have_name,
                                   const std::string& want_name, int max_shown = 100);

// The name in `names` closest to `word` (a typo at most a third of its length, at least 2 edits),
// or "" when none is: for "did you mean" hints.
std::string closest_name(const std::string& word, const std::vector<std::string>& names);

// The config as TOML text, every key in the order above, re-readable by config_from_toml_string.
// (A seed above 2^63-1, beyond TOML's integers, is written as a decimal string, which the reader
// accepts for the two seed keys.)
std::string config_to_toml(const TrainConfig& cfg);

}  // namespace mhc
