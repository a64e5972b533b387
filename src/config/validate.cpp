// config_finalize: derived defaults, hyper_conn_type aliases, and validation. Every message names the
// key it is about, in the config's own terms, so that the user knows which line to change.
// Comparisons are written so that NaN fails them (!(x > 0) rather than x <= 0).
#include <charconv>
#include <cmath>
#include <stdexcept>

#include "mhc/config.h"

namespace mhc {

namespace {

void check(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
}

std::string num(double v) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

void at_least_1(int v, const char* key) {
    check(v >= 1, std::string(key) + " must be at least 1, got " + std::to_string(v));
}

void in_unit_interval(double v, const char* key) {  // [0, 1), the Adam betas
    check(v >= 0 && v < 1, std::string(key) + " must be in [0, 1), got " + num(v));
}

long factorial(int n) {
    long f = 1;
    for (int i = 2; i <= n; i++) f *= i;
    return f;
}

}  // namespace

void config_finalize(TrainConfig& c) {
    ModelConfig& m = c.model;

    const VariantInfo& info = variant_info(m.hyper_conn_type);
    if (info.fixed_n && !m.hyper_conn_n_set) m.hyper_conn_n = info.fixed_n;
    const bool decay_derived = c.lr_decay_iters == 0;
    if (decay_derived) c.lr_decay_iters = c.max_iters;
    if (c.checkpoint_interval == 0) c.checkpoint_interval = c.eval_interval;

    at_least_1(m.n_layer, "n_layer");
    at_least_1(m.n_head, "n_head");
    at_least_1(m.n_embd, "n_embd");
    at_least_1(m.block_size, "block_size");
    at_least_1(c.batch_size, "batch_size");
    at_least_1(c.gradient_accumulation_steps, "gradient_accumulation_steps");
    at_least_1(c.max_iters, "max_iters");
    at_least_1(c.eval_iters, "eval_iters");
    check(m.n_embd % m.n_head == 0, "n_embd " + std::to_string(m.n_embd) + " is not divisible by n_head " +
                                        std::to_string(m.n_head));

    check(c.learning_rate > 0 && std::isfinite(c.learning_rate),
          "learning_rate must be a finite number > 0, got " + num(c.learning_rate));
    check(c.min_lr >= 0, "min_lr must be >= 0, got " + num(c.min_lr));
    check(c.min_lr <= c.learning_rate,
          "min_lr " + num(c.min_lr) + " is larger than learning_rate " + num(c.learning_rate));
    check(c.warmup_iters >= 0, "warmup_iters must be >= 0, got " + std::to_string(c.warmup_iters));
    check(c.lr_decay_iters >= c.warmup_iters, "lr_decay_iters " + std::to_string(c.lr_decay_iters) +
                                                  " is smaller than warmup_iters " + std::to_string(c.warmup_iters) +
                                                  (decay_derived ? " (lr_decay_iters defaults to max_iters: "
                                                                   "lower warmup_iters too)" : ""));
    check(c.weight_decay >= 0 && std::isfinite(c.weight_decay),
          "weight_decay must be a finite number >= 0, got " + num(c.weight_decay));
    in_unit_interval(c.beta1, "beta1");
    in_unit_interval(c.beta2, "beta2");
    check(c.grad_clip >= 0, "grad_clip must be >= 0 (0: no clipping), got " + num(c.grad_clip));
    at_least_1(c.eval_interval, "eval_interval");
    // Not in nanoGPT's list of checks, but both are divisors of the iteration number in the loop.
    at_least_1(c.log_interval, "log_interval");
    at_least_1(c.checkpoint_interval, "checkpoint_interval");
    check(c.diag_interval >= 0,
          "diag_interval must be >= 0 (0: no diagnostics), got " + std::to_string(c.diag_interval));
    check(c.sample_interval >= 0,
          "sample_interval must be >= 0 (0: no samples), got " + std::to_string(c.sample_interval));
    at_least_1(c.sample_tokens, "sample_tokens");
    at_least_1(c.keep_checkpoints, "keep_checkpoints");
    at_least_1(c.max_nonfinite_steps, "max_nonfinite_steps");

    const std::string t = info.key, n_str = std::to_string(m.hyper_conn_n);
    const int n = m.hyper_conn_n;
    check(n >= 1 && n <= 8, "hyper_conn_n must be in 1..8, got " + n_str);
    check(!info.fixed_n || n == info.fixed_n,
          "hyper_conn_n must be " + std::to_string(info.fixed_n) + " for hyper_conn_type " + t + " (" + info.summary +
              "), got " + n_str);
    check(!info.n_power_of_two || (n & (n - 1)) == 0,
          "hyper_conn_n must be a power of two (1, 2, 4, 8) for hyper_conn_type " + t + ", got " + n_str);
    check(m.hyper_conn_perm_subset >= 0, "hyper_conn_perm_subset must be >= 0 (0: all n! permutations), got " +
                                             std::to_string(m.hyper_conn_perm_subset));
    if (m.hyper_conn_type == Variant::mhc_lite) {  // the options of mhc-lite's permutation list
        check(n <= 6 || m.hyper_conn_perm_subset > 0,
              "hyper_conn_type mhc_lite with hyper_conn_n " + n_str + " would mix all " +
                  std::to_string(factorial(n)) + " permutations; set hyper_conn_perm_subset (e.g. 24)");
        check(m.hyper_conn_perm_subset <= factorial(n),
              "hyper_conn_perm_subset " + std::to_string(m.hyper_conn_perm_subset) + " is larger than " + n_str +
                  "! = " + std::to_string(factorial(n)) + " (hyper_conn_n " + n_str + ")");
    }
    at_least_1(m.sinkhorn_iters, "sinkhorn_iters");
    check(m.cayley_iters >= 0,
          "cayley_iters must be >= 0 (0: the exact Cayley transform), got " + std::to_string(m.cayley_iters));
    check(m.vocab_size >= 0, "vocab_size must be >= 0 (0: from the data), got " + std::to_string(m.vocab_size));
    check(c.data_order == "random" || c.data_order == "sequential",
          "data_order '" + c.data_order + "' is unknown (expected random or sequential)");
    check(c.train_split > 0 && c.train_split < 1, "train_split must be in (0, 1), got " + num(c.train_split));
    // Whether this program and machine can run it is the run's question (train/engine.h), not the config's.
    check(c.device == "cpu" || c.device == "cuda", "device '" + c.device + "' is unknown (expected cpu or cuda)");
    check(c.device != "cuda" || m.n_embd / m.n_head <= kCudaMaxHeadSize,
          "device cuda takes head sizes (n_embd / n_head) up to " + std::to_string(kCudaMaxHeadSize) + ", got " +
              std::to_string(m.n_embd / m.n_head));
    check(c.dtype == "fp32" || c.dtype == "bf16", "dtype '" + c.dtype + "' is unknown (expected fp32 or bf16)");
    check(c.dtype == "fp32" || c.device == "cuda",
          "dtype bf16 needs device cuda (the CPU engine computes in fp32: --set dtype=fp32)");
    check(!c.cuda_graphs || c.device == "cuda", "cuda_graphs needs device cuda (--set cuda_graphs=false)");
}

}  // namespace mhc
