// One description of the model of SPEC §3, read by every pass that runs it: the training forward
// and backward (gpt.cpp) and the KV-cache step (sample.cpp) call the same ops in the same order
// from here. Templated on the ops (model/cpu_ops.h; a GPU backend has the same members) and on the
// model's layout (blocks, sites, C); the weights P and gradients G are flat buffers.
//
//   X ─ conn_pre ─ u ─ LayerNorm ─ c_attn ─ attention ─ c_proj ─ y ─ conn_post ─ Xmid   (site 2i)
//   Xmid ─ conn_pre ─ u ─ LayerNorm ─ c_fc ─ GELU ─ c_proj ─ y ─ conn_post ─ Xout         (site 2i+1)
#pragma once
#include <utility>

#include "mhc/gpt.h"

namespace mhc::detail {

template <typename T> const T* opt(const T* base, long off) { return off < 0 ? nullptr : base + off; }
template <typename T> T* opt(T* base, long off) { return off < 0 ? nullptr : base + off; }

// Block i over N tokens: X -> Xmid -> Xout [N, n, C] (Xout must not alias Xmid). `a`, `sa`, `sm`:
// where the block's and its two sites' activations go. attend(qkv, atty, att) is the attention
// core between c_attn and c_proj: causal over the batch in training, over a KV cache in inference.
template <typename T, typename Ops, typename Model, typename Attend>
void block_forward(const Ops& ops, const Model& m, int i, const T* P, const T* X, T* Xmid, T* Xout,
                   const typename GPT<T>::Block& a, const typename GPT<T>::Site& sa,
                   const typename GPT<T>::Site& sm, T* scratch, int N, Attend&& attend) {
    const GptBlock& w = m.blocks[i];
    const int C = m.C;
    ops.conn_pre_forward(m.sites[2 * i], P + w.conn[0], X, sa.u, sa.cache, scratch, N);
    ops.layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, sa.u, P + w.ln1_w, opt(P, w.ln1_b), N, C);
    ops.matmul_forward(a.qkv, a.ln1, P + w.attn_w, opt(P, w.attn_b), N, C, 3 * C);
    attend(a.qkv, a.atty, a.att);
    ops.matmul_forward(sa.y, a.atty, P + w.aproj_w, opt(P, w.aproj_b), N, C, C);
    ops.conn_post_forward(m.sites[2 * i], sa.cache, X, sa.y, Xmid, N);

    ops.conn_pre_forward(m.sites[2 * i + 1], P + w.conn[1], Xmid, sm.u, sm.cache, scratch, N);
    ops.layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, sm.u, P + w.ln2_w, opt(P, w.ln2_b), N, C);
    ops.matmul_forward(a.fch, a.ln2, P + w.fc_w, opt(P, w.fc_b), N, C, 4 * C);
    ops.gelu_forward(a.fcg, a.fch, 4L * N * C);
    ops.matmul_forward(sm.y, a.fcg, P + w.mproj_w, opt(P, w.mproj_b), N, 4 * C, C);
    ops.conn_post_forward(m.sites[2 * i + 1], sm.cache, Xmid, sm.y, Xout, N);
}

// After the last block: ln_f on each stream separately, the streams summed, the tied LM head.
// X [N, n, C] -> lnf [N, n, C], hsum [N, C], logits [N, V].
template <typename T, typename Ops, typename Model>
void head_forward(const Ops& ops, const Model& m, const T* P, const T* X, T* lnf, T* lnf_mean, T* lnf_rstd,
                  T* hsum, T* logits, int N) {
    ops.layernorm_forward(lnf, lnf_mean, lnf_rstd, X, P + m.lnf_w, opt(P, m.lnf_b), N * m.n, m.C);
    ops.stream_sum_forward(hsum, lnf, N, m.n, m.C);
    ops.matmul_forward(logits, hsum, P + m.wte, (const T*)nullptr, N, m.C, m.V);
}

// The backward of block_forward. dnext [N, n, C] holds dL/dXout on entry; on return dnext holds
// dL/dX (the two buffers swap roles once per site; dcur is scratch). Parameter gradients G
// accumulate (+=); g holds the block's activation-gradient scratch.
// With m.recompute the forward kept only the block's input X, the branch outputs y and the sites'
// coefficient caches: Xmid and both sites' u are shared buffers, which this makes again here (Xmid
// from X and y, each u by its site's forward, which rewrites its cache with the same values).
template <typename T, typename Ops, typename Model>
void block_backward(const Ops& ops, const Model& m, int i, const T* P, T* G, const T* X, T* Xmid,
                    const typename GPT<T>::Block& a, const typename GPT<T>::Site& sa,
                    const typename GPT<T>::Site& sm, const typename GPT<T>::BlockGrad& g, T*& dnext, T*& dcur,
                    T* scratch, int B, int Tn) {
    const GptBlock& w = m.blocks[i];
    const int N = B * Tn, C = m.C;
    const ConnSite &site_a = m.sites[2 * i], &site_m = m.sites[2 * i + 1];
    if (m.recompute) {
        ops.conn_post_forward(site_a, sa.cache, X, sa.y, Xmid, N);
        ops.conn_pre_forward(site_m, P + w.conn[1], Xmid, sm.u, sm.cache, scratch, N);
    }
    ops.conn_post_backward(site_m, sm.cache, Xmid, sm.y, dnext, dcur, g.dy, N);
    ops.matmul_backward(g.dfcg, G + w.mproj_w, opt(G, w.mproj_b), g.dy, a.fcg, P + w.mproj_w,
                        N, 4 * C, C);
    ops.gelu_backward(g.dfch, a.fch, g.dfcg, 4L * N * C);
    ops.matmul_backward(g.dln, G + w.fc_w, opt(G, w.fc_b), g.dfch, a.ln2, P + w.fc_w, N, C,
                        4 * C);
    ops.layernorm_backward(g.du, G + w.ln2_w, opt(G, w.ln2_b), g.dln, sm.u, P + w.ln2_w,
                           a.ln2_mean, a.ln2_rstd, N, C);
    ops.conn_pre_backward(site_m, P + w.conn[1], sm.cache, Xmid, g.du, dcur, G + w.conn[1],
                          scratch, N);
    std::swap(dnext, dcur);

    if (m.recompute) ops.conn_pre_forward(site_a, P + w.conn[0], X, sa.u, sa.cache, scratch, N);
    ops.conn_post_backward(site_a, sa.cache, X, sa.y, dnext, dcur, g.dy, N);
    ops.matmul_backward(g.datty, G + w.aproj_w, opt(G, w.aproj_b), g.dy, a.atty,
                        P + w.aproj_w, N, C, C);
    ops.attention_backward(g.dqkv, g.datt, g.datty, a.qkv, a.att, B, Tn, C, m.H);
    ops.matmul_backward(g.dln, G + w.attn_w, opt(G, w.attn_b), g.dqkv, a.ln1, P + w.attn_w,
                        N, C, 3 * C);
    ops.layernorm_backward(g.du, G + w.ln1_w, opt(G, w.ln1_b), g.dln, sa.u, P + w.ln1_w,
                           a.ln1_mean, a.ln1_rstd, N, C);
    ops.conn_pre_backward(site_a, P + w.conn[0], sa.cache, X, g.du, dcur, G + w.conn[0],
                          scratch, N);
    std::swap(dnext, dcur);
}

// The backward of head_forward up to the last block's streams: dlogits [N, V] (the loss backward
// has run) -> dX [N, n, C] (overwritten); dhsum, dlnf: scratch. G accumulates.
template <typename T, typename Ops, typename Model>
void head_backward(const Ops& ops, const Model& m, const T* P, T* G, const T* X, const T* lnf_mean,
                   const T* lnf_rstd, const T* hsum, const T* dlogits, T* dhsum, T* dlnf, T* dX, int N) {
    ops.matmul_backward(dhsum, G + m.wte, (T*)nullptr, dlogits, hsum, P + m.wte, N, m.C, m.V);
    ops.stream_sum_backward(dlnf, dhsum, N, m.n, m.C);
    ops.layernorm_backward(dX, G + m.lnf_w, opt(G, m.lnf_b), dlnf, X, P + m.lnf_w, lnf_mean, lnf_rstd,
                           N * m.n, m.C);
}

}  // namespace mhc::detail
