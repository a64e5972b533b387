// mhc/gpt.h — the GPT model of SPEC §3 with hyper-connections, llm.c style: parameters, gradients
// and activations in flat buffers laid out once, forward and backward as plain loops over layers.
// T is float (training) or double (gradient checks).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "mhc/config.h"
#include "mhc/conn.h"

namespace mhc {

// Offsets of one block's parameters in the flat parameter buffer (-1: absent, e.g. biases off).
struct GptBlock {
    long ln1_w = -1, ln1_b = -1, attn_w = -1, attn_b = -1, aproj_w = -1, aproj_b = -1;
    long ln2_w = -1, ln2_b = -1, fc_w = -1, fc_b = -1, mproj_w = -1, mproj_b = -1;
    long conn[2] = {-1, -1};  // start of the hc_attn / hc_mlp parameter blocks
};

// Seconds spent in each kind of op inside gpt_forward / gpt_backward, accumulated while GPT::phases
// points at one (mhc bench); taken per op call (src/model/cpu_ops.h). "other" is LayerNorm, GELU,
// embedding, loss, stream sums.
enum Phase { kPhaseMatmul, kPhaseAttention, kPhaseConn, kPhaseOther, kPhaseCount };
struct PhaseTimes {
    double s[kPhaseCount] = {};
    std::map<std::string, double> op_s;  // the same seconds per op (its name in the ops, e.g. conn_pre_forward)
};
inline const char* phase_name(int p) {
    static const char* names[kPhaseCount] = {"matmul", "attention", "connections", "other"};
    return names[p];
}

template <typename T> struct GPT {
    ModelConfig cfg;
    int L = 0, C = 0, H = 0, V = 0, Tmax = 0, n = 1;
    Variant variant = Variant::residual;
    std::vector<ConnSite> sites;       // 2L sites: block i has 2i (attention) and 2i+1 (MLP)
    std::vector<ParamTensor> params;   // every tensor under its SPEC §4 name, in buffer order
    std::vector<GptBlock> blocks;
    long wte = 0, wpe = 0, lnf_w = 0, lnf_b = -1;
    std::vector<T> param, grad;

    // Activations, planned for one (B, T) by gpt_forward; reused while the shape stays the same.
    int B = 0, Tn = 0;
    std::vector<T> act, gact;
    std::vector<int32_t> inputs, targets;
    struct Site { T *cache, *u, *y; };
    struct Block { T *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *ln2, *ln2_mean, *ln2_rstd, *fch, *fcg; };
    struct BlockGrad { T *du, *dy, *dln, *dqkv, *datt, *datty, *dfch, *dfcg; };  // one block's, reused by all
    std::vector<T*> X;                 // 2L + 1 stream states [N, n, C]
    std::vector<Site> s_act;
    std::vector<Block> b_act;
    T *lnf = nullptr, *lnf_mean = nullptr, *lnf_rstd = nullptr, *hsum = nullptr, *logits = nullptr,
      *losses = nullptr, *scratch = nullptr;
    T *dXa = nullptr, *dXb = nullptr, *dhsum = nullptr, *dlnf = nullptr;
    BlockGrad bgrad{};
    bool have_targets = false;
    double loss = 0;
    // Activation recompute (config key `recompute`): the forward keeps each block's input streams,
    // the branch outputs and the coefficient caches, and the backward makes the rest of the
    // connections' intermediates again (model/block.h). Read when the activations are planned.
    bool recompute = false;
    bool planned_recompute = false;    // the plan's (internal)
    PhaseTimes* phases = nullptr;      // if set, forward and backward add their time per phase here
    // If set, gpt_backward calls it with each range [begin, end) of the parameter buffer as soon as
    // that range's gradients are complete: ln_f, blocks L-1 .. 0, then the embeddings (wte is also
    // the LM head and the encoder, so it completes last). Data parallelism starts its exchanges here.
    std::function<void(long begin, long end)> on_grads_ready;
};

// Builds the model for a finalized config (vocab_size must be set). site_perms, if given, holds the
// mhc-lite permutation list of every site (2L lists, e.g. from a checkpoint); otherwise they are
// derived from the config. Throws std::invalid_argument for an impossible configuration.
template <typename T>
void gpt_build(GPT<T>& m, const ModelConfig& cfg, const std::vector<std::vector<int>>* site_perms = nullptr);

// Site k's connection config in a model of this config (variant, n, width, mixer settings, stream r,
// permutation seed), its permutations still to be drawn. Every site has the same sizes.
ConnConfig gpt_site_config(const ModelConfig& cfg, int k);

// SPEC §3 initialisation with a seeded, platform-independent normal generator.
template <typename T> void gpt_init(GPT<T>& m, uint64_t seed);

long gpt_param_count_of(const std::vector<ParamTensor>& params);

// The name of the first tensor of `params` whose values in `buf` (the parameters, or a buffer laid
// out like them: gradients, AdamW moments) hold NaN or inf; "" when all are finite (or buf is
// shorter than the layout, as the moments are before the first step).
std::string nonfinite_tensor(const std::vector<ParamTensor>& params, const std::vector<float>& buf);

// What training a model of this config takes, in float32 values, before anything is allocated:
// its parameters (each also has a gradient and two AdamW moments) and the activations and their
// gradients of one (B, T) forward and backward. Doubles, so an absurd config gives an absurd
// number rather than an overflow. Throws std::invalid_argument when the config's sites do not build.
// gpu: the GPU's plan (model/gpt_cuda.h): its attention keeps O(T) per query instead of the T x T
// probabilities, and a residual site's u is its input stream (no buffer of its own).
struct GptMemory {
    double params = 0, activations = 0;  // fp32 values (the parameters: weights, gradients, 2 moments)
    double bf16 = 0;                     // bf16 values: dtype bf16's weight copies and activations
    double bytes() const { return 4.0 * (4 * params + activations) + 2.0 * bf16; }  // training
    // A forward of the batch without training (eval, info; fp32): weights and gradients (both
    // allocated), no optimizer moments.
    double run_bytes() const { return 4.0 * (2 * params + activations); }
};
// recompute: GPT::recompute's plan, which keeps one stream state per block instead of two and one
// branch input for all sites. bf16: the GPU's dtype bf16 plan (model/gpt_cuda.h), whose linear
// layers keep bf16 copies of their inputs and share one fp32 input buffer, and whose stream states
// and largest activations are bf16. conn_scratch: the floats of the sites' shared scratch for the
// B x T tokens when the device's plan has its own (the GPU's grows with the tokens: its backend's
// conn_scratch_size_cuda, engine_conn_scratch); below 0, the CPU's (conn_scratch_size).
GptMemory gpt_memory_estimate(const ModelConfig& cfg, int B, int T, bool gpu = false,
                              bool recompute = false, bool bf16 = false, double conn_scratch = -1);

// Throws std::invalid_argument (one line) unless inputs (and targets, if given) [B, T] are a batch
// this model takes: 1 <= T <= block_size, B >= 1, every id in 0..vocab_size-1. Both engines' check.
void gpt_check_batch(int V, int Tmax, const int32_t* inputs, const int32_t* targets, int B, int Tn);

// Forward on inputs [B, T] (token ids < V, T <= block_size). With targets: returns the mean
// cross-entropy and keeps what the backward needs. Without: fills m.logits [B*T, V], returns NaN.
template <typename T>
double gpt_forward(GPT<T>& m, const int32_t* inputs, const int32_t* targets, int B, int Tn);

// Backward of the last forward (which had targets): grad += d(scale * loss) / d(param).
// Use scale = 1 / gradient_accumulation_steps to accumulate micro-batches.
template <typename T> void gpt_backward(GPT<T>& m, double scale = 1.0);
template <typename T> void gpt_zero_grad(GPT<T>& m);

}  // namespace mhc
