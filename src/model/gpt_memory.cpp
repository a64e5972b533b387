// What training a model takes in memory, from its config alone (gpt.h: gpt_memory_estimate). The
// sizes follow gpt_build's parameter layout and gpt.cpp's plan() of the activations; the test
// GptMemory.EstimateMatchesTheBuffers keeps them in step.
#include <cmath>

#include "mhc/gpt.h"

namespace mhc {

GptMemory gpt_memory_estimate(const ModelConfig& cfg, int B, int T, bool gpu, bool recompute,
                              bool bf16, double conn_scratch) {
    GptMemory g;
    const ConnConfig cc = gpt_site_config(cfg, 0);  // every site has the same sizes
    const double n = cc.n;
    const ConnSite site = conn_site_make(cc);  // small: its parameter layout, not its parameters
    // In double: an absurd config must give an absurd number, not an overflowed one.
    const double C = cfg.n_embd, L = cfg.n_layer, V = cfg.vocab_size, bias = cfg.bias ? 1 : 0;
    const double block = C + 3 * C * C + C * C + C + 4 * C * C + 4 * C * C + bias * (C + 3 * C + C + C + 4 * C + C);
    g.params = V * C + (double)cfg.block_size * C + L * (block + 2.0 * (double)site.nparams) + C + bias * C;

    const double N = (double)B * T, S = N * n * C;
    // The attention's record and scratch: the probabilities [B, H, T, T] on the CPU; on the GPU the
    // log-sum-exp [B, H, T] and a copy of its output, and [B, H, T] (ops/ops_cuda.h).
    const double att = gpu ? (double)B * cfg.n_head * T + N * C : (double)B * cfg.n_head * T * T;
    const double datt = gpu ? (double)B * cfg.n_head * T : att;
    // The linear layers' fp32 inputs (ln1, atty, ln2, fcg and hsum): per block and at the head; with
    // bf16 each is its layer's bf16 copy (ln1, atty, ln2 and fcg written so) but hsum, which has one
    // buffer of N C beside its copy. qkv likewise:
    // per block, or with bf16 one buffer beside each block's bf16 heads. fch [4 N C] per block, in
    // fp32 or in bf16.
    const double inputs = L * 7 * N * C + N * C;
    const double per_block = 2 * N + (bf16 ? 0 : 3 * N * C) + att + 2 * N + (bf16 ? 0 : 4 * N * C);
    // The stream states and the sites' cache, u and y (the states and y in bf16 with bf16); with
    // recompute, the states inside the blocks share one buffer, and the sites' u another.
    const double states = recompute ? (L + 2) * S : (2 * L + 1) * S;
    // (on the GPU a residual site's u is its stream)
    const double u = gpu && cc.variant == Variant::residual ? 0 : recompute ? N * C : 2 * L * N * C;
    const double act = (bf16 ? 0 : states) + 2 * L * (N * conn_cache_stride(site) + (bf16 ? 0 : N * C)) + u + L * per_block + S +
                       2 * N * n + (bf16 ? N * C + 3 * N * C : inputs) + (bf16 ? 0 : N * V) + N +
                       (conn_scratch >= 0 ? conn_scratch : (double)conn_scratch_size(site, (int)std::fmin(N, 1e9)));
    // The backward's: the streams' gradient (two buffers; bf16 with bf16), then the blocks' (du, dy,
    // dln, dqkv, datt, datty, dfch, dfcg, dhsum, dlnf; with bf16 and no biases dy, dqkv and dfch
    // are bf16, below).
    const bool grads16 = bf16 && !cfg.bias;
    const double gact = (bf16 ? 0 : 2 * S) + N * C * 3 + 3 * N * C + datt + N * C + 8 * N * C + N * C + S -
                        (grads16 ? 8 * N * C : 0);
    g.activations = act + gact;
    // The bf16 values: the linear layers' weights (attention qkv and proj, MLP fc and proj, the tied
    // LM head) and inputs, the stream states and their gradients, the logits, each block's fch, each
    // site's y, dy, dqkv and dfch (grads16: 8 N C) or else a copy of the widest output gradient
    // (c_fc's, 4 N C), and the attention's heads: each block's
    // q, k, v and one dO, T padded to 64 rows and the head size to 32, 64 or 128 channels
    // (ops/ops_cuda.h).
    const double hs = C / cfg.n_head, hs16 = hs <= 32 ? 32 : hs <= 64 ? 64 : 128;
    const double heads16 = (3 * L + 1) * B * cfg.n_head * std::ceil(T / 64.0) * 64 * hs16;
    if (bf16)
        g.bf16 = L * 12 * C * C + V * C + inputs + states + 2 * S + N * V + L * 4 * N * C + 2 * L * N * C +
                 (grads16 ? 8 : 4) * N * C + heads16;
    return g;
}

}  // namespace mhc
