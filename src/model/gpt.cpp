// GPT forward and backward (SPEC §3): plain loops over blocks (model/block.h), each block two
// connection sites wrapping attention and MLP branches. Activations are planned once per (B, T).
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>

#include "mhc/gpt.h"
#include "model/block.h"
#include "model/cpu_ops.h"

namespace mhc {

namespace {

// Lays out every activation of a (B, T) pass in one buffer and every activation gradient in another.
template <typename T> void plan(GPT<T>& m, int B, int Tn) {
    if (m.B == B && m.Tn == Tn && m.planned_recompute == m.recompute) return;
    const long N = (long)B * Tn, C = m.C, n = m.n, S = N * n * C, att = (long)B * m.H * Tn * Tn;
    const int L = m.L;
    long scratch = 0;
    for (const auto& s : m.sites) scratch = std::max(scratch, conn_scratch_size(s, (int)N));
    // Run the layout twice over each buffer: once to count (base null), once to hand out pointers.
    long used = 0;
    T* base = nullptr;
    auto take = [&](long count) {
        T* at = base ? base + used : nullptr;
        used += count;
        return at;
    };
    auto layout_act = [&] {
        // With recompute, the stream states inside the blocks share one buffer, as do the sites' u.
        m.X.assign(2 * L + 1, nullptr);
        const bool shared = m.recompute;
        T* mid = shared ? take(S) : nullptr;
        T* u = shared ? take(N * C) : nullptr;
        for (int k = 0; k <= 2 * L; k++) m.X[k] = k % 2 && shared ? mid : take(S);
        m.s_act.assign(2 * L, {});
        for (int k = 0; k < 2 * L; k++) {
            T* cache = take(N * conn_cache_stride(m.sites[k]));
            m.s_act[k] = {cache, shared ? u : take(N * C), take(N * C)};
        }
        m.b_act.assign(L, {});
        for (auto& b : m.b_act) {
            b.ln1 = take(N * C), b.ln1_mean = take(N), b.ln1_rstd = take(N), b.qkv = take(3 * N * C);
            b.att = take(att), b.atty = take(N * C), b.ln2 = take(N * C), b.ln2_mean = take(N);
            b.ln2_rstd = take(N), b.fch = take(4 * N * C), b.fcg = take(4 * N * C);
        }
        m.lnf = take(S), m.lnf_mean = take(N * n), m.lnf_rstd = take(N * n), m.hsum = take(N * C);
        m.logits = take(N * m.V), m.losses = take(N), m.scratch = take(scratch);
    };
    auto layout_gact = [&] {
        auto& g = m.bgrad;
        m.dXa = take(S), m.dXb = take(S), g.du = take(N * C), g.dy = take(N * C), g.dln = take(N * C);
        g.dqkv = take(3 * N * C), g.datt = take(att), g.datty = take(N * C), g.dfch = take(4 * N * C);
        g.dfcg = take(4 * N * C), m.dhsum = take(N * C), m.dlnf = take(S);
    };
    for (auto [buf, layout] : {std::pair{&m.act, std::function<void()>(layout_act)},
                               std::pair{&m.gact, std::function<void()>(layout_gact)}}) {
        used = 0, base = nullptr;
        layout();
        buf->assign(used, T(0));
        used = 0, base = buf->data();
        layout();
    }
    m.inputs.assign(N, 0);
    m.targets.assign(N, 0);
    m.B = B, m.Tn = Tn, m.planned_recompute = m.recompute;
}

}  // namespace

void gpt_check_batch(int V, int Tmax, const int32_t* inputs, const int32_t* targets, int B, int Tn) {
    if (B < 1 || Tn < 1 || Tn > Tmax)
        throw std::invalid_argument("batch " + std::to_string(B) + " x " + std::to_string(Tn) +
                                    " does not fit block_size " + std::to_string(Tmax));
    const long N = (long)B * Tn;
    for (long i = 0; i < N; i++)
        if (inputs[i] < 0 || inputs[i] >= V || (targets && (targets[i] < 0 || targets[i] >= V)))
            throw std::invalid_argument("token id out of range 0.." + std::to_string(V - 1));
}

template <typename T>
double gpt_forward(GPT<T>& m, const int32_t* inputs, const int32_t* targets, int B, int Tn) {
    gpt_check_batch(m.V, m.Tmax, inputs, targets, B, Tn);
    const int N = B * Tn;
    plan(m, B, Tn);
    std::copy(inputs, inputs + N, m.inputs.begin());
    m.have_targets = targets != nullptr;
    if (targets) std::copy(targets, targets + N, m.targets.begin());
    const T* P = m.param.data();
    const detail::CpuOps ops{m.phases};
    auto attend = [&](const T* qkv, T* atty, T* att) { ops.attention_forward(atty, att, qkv, B, Tn, m.C, m.H); };
    ops.encoder_forward(m.X[0], m.inputs.data(), P + m.wte, P + m.wpe, B, Tn, m.C, m.n);
    for (int i = 0; i < m.L; i++)
        detail::block_forward(ops, m, i, P, m.X[2 * i], m.X[2 * i + 1], m.X[2 * i + 2], m.b_act[i], m.s_act[2 * i],
                              m.s_act[2 * i + 1], m.scratch, N, attend);
    detail::head_forward(ops, m, P, m.X[2 * m.L], m.lnf, m.lnf_mean, m.lnf_rstd, m.hsum, m.logits, N);
    if (!targets) return m.loss = std::numeric_limits<double>::quiet_NaN();
    return m.loss = ops.crossentropy_forward(m.logits, m.losses, m.targets.data(), N, m.V);
}

template <typename T> void gpt_backward(GPT<T>& m, double scale) {
    if (!m.have_targets) throw std::logic_error("gpt_backward needs a forward with targets");
    const int B = m.B, Tn = m.Tn, N = B * Tn;
    const T* P = m.param.data();
    T* G = m.grad.data();
    const detail::CpuOps ops{m.phases};
    ops.crossentropy_backward(m.logits, m.targets.data(), N, m.V, scale / N);  // logits := dlogits
    T *dnext = m.dXa, *dcur = m.dXb;  // gradient of the streams after / before the current site
    // The layout (gpt_build): wte, wpe, block 0 .. L-1 (each contiguous, from its ln1_w), ln_f last.
    auto ready = [&](long begin, long end) {
        if (m.on_grads_ready) m.on_grads_ready(begin, end);
    };
    detail::head_backward(ops, m, P, G, m.X[2 * m.L], m.lnf_mean, m.lnf_rstd, m.hsum, m.logits, m.dhsum, m.dlnf,
                          dnext, N);
    ready(m.lnf_w, (long)m.grad.size());
    for (int i = m.L - 1; i >= 0; i--) {
        detail::block_backward(ops, m, i, P, G, m.X[2 * i], m.X[2 * i + 1], m.b_act[i], m.s_act[2 * i],
                               m.s_act[2 * i + 1], m.bgrad, dnext, dcur, m.scratch, B, Tn);
        ready(m.blocks[i].ln1_w, i + 1 < m.L ? m.blocks[i + 1].ln1_w : m.lnf_w);
    }
    ops.encoder_backward(G + m.wte, G + m.wpe, dnext, m.inputs.data(), B, Tn, m.C, m.n);
    ready(0, m.blocks[0].ln1_w);
    m.have_targets = false;  // the logits now hold gradients: a second backward would be wrong
}

template <typename T> void gpt_zero_grad(GPT<T>& m) { std::fill(m.grad.begin(), m.grad.end(), T(0)); }

#define MHC_GPT_INST(T)                                                                   \
    template double gpt_forward<T>(GPT<T>&, const int32_t*, const int32_t*, int, int);    \
    template void gpt_backward<T>(GPT<T>&, double);                                       \
    template void gpt_zero_grad<T>(GPT<T>&);
MHC_GPT_INST(float)
MHC_GPT_INST(double)

}  // namespace mhc
