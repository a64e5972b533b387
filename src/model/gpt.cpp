// GPT forward and backward (SPEC §3): plain loops over blocks, each block two connection sites
// wrapping attention and MLP branches. Activations are planned once per (B, T).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>

#include "mhc/gpt.h"
#include "ops/ops.h"

namespace mhc {

namespace {

// Lays out every activation of a (B, T) pass in one buffer and every activation gradient in another.
template <typename T> void plan(GPT<T>& m, int B, int Tn) {
    if (m.B == B && m.Tn == Tn) return;
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
        m.X.assign(2 * L + 1, nullptr);
        for (auto& x : m.X) x = take(S);
        m.s_act.assign(2 * L, {});
        for (int k = 0; k < 2 * L; k++)
            m.s_act[k] = {take(N * conn_cache_stride(m.sites[k])), take(N * C), take(N * C)};
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
        m.dXa = take(S), m.dXb = take(S), m.du = take(N * C), m.dy = take(N * C), m.dln = take(N * C);
        m.dqkv = take(3 * N * C), m.datt = take(att), m.datty = take(N * C), m.dfch = take(4 * N * C);
        m.dfcg = take(4 * N * C), m.dhsum = take(N * C), m.dlnf = take(S);
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
    m.B = B, m.Tn = Tn;
}

// Charges the time since the previous lap to a phase; free when no PhaseTimes is attached.
struct Lap {
    PhaseTimes* p;
    std::chrono::steady_clock::time_point t = p ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    void operator()(Phase ph) {
        if (!p) return;
        const auto now = std::chrono::steady_clock::now();
        p->s[ph] += std::chrono::duration<double>(now - t).count();
        t = now;
    }
};

template <typename T> const T* opt(const GPT<T>& m, long off) {
    return off < 0 ? nullptr : m.param.data() + off;
}
template <typename T> T* gopt(GPT<T>& m, long off) { return off < 0 ? nullptr : m.grad.data() + off; }

}  // namespace

template <typename T>
double gpt_forward(GPT<T>& m, const int32_t* inputs, const int32_t* targets, int B, int Tn) {
    if (B < 1 || Tn < 1 || Tn > m.Tmax)
        throw std::invalid_argument("batch " + std::to_string(B) + " x " + std::to_string(Tn) +
                                    " does not fit block_size " + std::to_string(m.Tmax));
    const int N = B * Tn;
    for (int i = 0; i < N; i++)
        if (inputs[i] < 0 || inputs[i] >= m.V || (targets && (targets[i] < 0 || targets[i] >= m.V)))
            throw std::invalid_argument("token id out of range 0.." + std::to_string(m.V - 1));
    plan(m, B, Tn);
    std::copy(inputs, inputs + N, m.inputs.begin());
    m.have_targets = targets != nullptr;
    if (targets) std::copy(targets, targets + N, m.targets.begin());
    const int C = m.C, n = m.n;
    const T* P = m.param.data();
    Lap lap{m.phases};
    encoder_forward(m.X[0], m.inputs.data(), P + m.wte, P + m.wpe, B, Tn, C, n), lap(kPhaseOther);
    for (int i = 0; i < m.L; i++) {
        const GptBlock& w = m.blocks[i];
        auto& a = m.b_act[i];
        auto& sa = m.s_act[2 * i];
        conn_pre_forward(m.sites[2 * i], P + w.conn[0], m.X[2 * i], sa.u, sa.cache, m.scratch, N), lap(kPhaseConn);
        layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, sa.u, P + w.ln1_w, opt(m, w.ln1_b), N, C), lap(kPhaseOther);
        matmul_forward(a.qkv, a.ln1, P + w.attn_w, opt(m, w.attn_b), N, C, 3 * C), lap(kPhaseMatmul);
        attention_forward(a.atty, a.att, a.qkv, B, Tn, C, m.H), lap(kPhaseAttention);
        matmul_forward(sa.y, a.atty, P + w.aproj_w, opt(m, w.aproj_b), N, C, C), lap(kPhaseMatmul);
        conn_post_forward(m.sites[2 * i], sa.cache, m.X[2 * i], sa.y, m.X[2 * i + 1], N), lap(kPhaseConn);

        auto& sm = m.s_act[2 * i + 1];
        conn_pre_forward(m.sites[2 * i + 1], P + w.conn[1], m.X[2 * i + 1], sm.u, sm.cache, m.scratch, N), lap(kPhaseConn);
        layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, sm.u, P + w.ln2_w, opt(m, w.ln2_b), N, C), lap(kPhaseOther);
        matmul_forward(a.fch, a.ln2, P + w.fc_w, opt(m, w.fc_b), N, C, 4 * C), lap(kPhaseMatmul);
        gelu_forward(a.fcg, a.fch, 4L * N * C), lap(kPhaseOther);
        matmul_forward(sm.y, a.fcg, P + w.mproj_w, opt(m, w.mproj_b), N, 4 * C, C), lap(kPhaseMatmul);
        conn_post_forward(m.sites[2 * i + 1], sm.cache, m.X[2 * i + 1], sm.y, m.X[2 * i + 2], N), lap(kPhaseConn);
    }
    // ln_f on each stream separately, then the streams are summed, then the tied LM head.
    layernorm_forward(m.lnf, m.lnf_mean, m.lnf_rstd, m.X[2 * m.L], P + m.lnf_w, opt(m, m.lnf_b), N * n, C);
#pragma omp parallel for schedule(static) if ((long)N * n * C >= 65536)
    for (int t = 0; t < N; t++)
        for (int c = 0; c < C; c++) {
            T acc = 0;
            for (int s = 0; s < n; s++) acc += m.lnf[((long)t * n + s) * C + c];
            m.hsum[(long)t * C + c] = acc;
        }
    lap(kPhaseOther);
    matmul_forward(m.logits, m.hsum, P + m.wte, (const T*)nullptr, N, C, m.V), lap(kPhaseMatmul);
    if (!targets) return m.loss = std::numeric_limits<double>::quiet_NaN();
    m.loss = crossentropy_forward(m.logits, m.losses, m.targets.data(), N, m.V), lap(kPhaseOther);
    return m.loss;
}

template <typename T> void gpt_backward(GPT<T>& m, double scale) {
    if (!m.have_targets) throw std::logic_error("gpt_backward needs a forward with targets");
    const int B = m.B, Tn = m.Tn, N = B * Tn, C = m.C, n = m.n;
    const T* P = m.param.data();
    T* G = m.grad.data();
    Lap lap{m.phases};
    crossentropy_backward(m.logits, m.targets.data(), N, m.V, scale / N), lap(kPhaseOther);  // logits := dlogits
    matmul_backward(m.dhsum, G + m.wte, (T*)nullptr, m.logits, m.hsum, P + m.wte, N, C, m.V), lap(kPhaseMatmul);
#pragma omp parallel for schedule(static) if ((long)N * n * C >= 65536)
    for (int t = 0; t < N; t++)  // the sum over streams hands every stream the same gradient
        for (int s = 0; s < n; s++)
            std::copy(m.dhsum + (long)t * C, m.dhsum + (long)(t + 1) * C, m.dlnf + ((long)t * n + s) * C);
    layernorm_backward(m.dXa, G + m.lnf_w, gopt(m, m.lnf_b), m.dlnf, m.X[2 * m.L], P + m.lnf_w,
                       m.lnf_mean, m.lnf_rstd, N * n, C);
    lap(kPhaseOther);
    T *dnext = m.dXa, *dcur = m.dXb;  // gradient of the streams after / before the current site
    for (int i = m.L - 1; i >= 0; i--) {
        const GptBlock& w = m.blocks[i];
        auto& a = m.b_act[i];
        const int km = 2 * i + 1, ka = 2 * i;
        auto& sm = m.s_act[km];
        conn_post_backward(m.sites[km], sm.cache, m.X[km], sm.y, dnext, dcur, m.dy, N), lap(kPhaseConn);
        matmul_backward(m.dfcg, G + w.mproj_w, gopt(m, w.mproj_b), m.dy, a.fcg, P + w.mproj_w, N, 4 * C, C),
            lap(kPhaseMatmul);
        gelu_backward(m.dfch, a.fch, m.dfcg, 4L * N * C), lap(kPhaseOther);
        matmul_backward(m.dln, G + w.fc_w, gopt(m, w.fc_b), m.dfch, a.ln2, P + w.fc_w, N, C, 4 * C),
            lap(kPhaseMatmul);
        layernorm_backward(m.du, G + w.ln2_w, gopt(m, w.ln2_b), m.dln, sm.u, P + w.ln2_w, a.ln2_mean,
                           a.ln2_rstd, N, C), lap(kPhaseOther);
        conn_pre_backward(m.sites[km], P + w.conn[1], sm.cache, m.X[km], m.du, dcur, G + w.conn[1],
                          m.scratch, N), lap(kPhaseConn);
        std::swap(dnext, dcur);

        auto& sa = m.s_act[ka];
        conn_post_backward(m.sites[ka], sa.cache, m.X[ka], sa.y, dnext, dcur, m.dy, N), lap(kPhaseConn);
        matmul_backward(m.datty, G + w.aproj_w, gopt(m, w.aproj_b), m.dy, a.atty, P + w.aproj_w, N, C, C),
            lap(kPhaseMatmul);
        attention_backward(m.dqkv, m.datt, m.datty, a.qkv, a.att, B, Tn, C, m.H), lap(kPhaseAttention);
        matmul_backward(m.dln, G + w.attn_w, gopt(m, w.attn_b), m.dqkv, a.ln1, P + w.attn_w, N, C, 3 * C),
            lap(kPhaseMatmul);
        layernorm_backward(m.du, G + w.ln1_w, gopt(m, w.ln1_b), m.dln, sa.u, P + w.ln1_w, a.ln1_mean,
                           a.ln1_rstd, N, C), lap(kPhaseOther);
        conn_pre_backward(m.sites[ka], P + w.conn[0], sa.cache, m.X[ka], m.du, dcur, G + w.conn[0],
                          m.scratch, N), lap(kPhaseConn);
        std::swap(dnext, dcur);
    }
    encoder_backward(G + m.wte, G + m.wpe, dnext, m.inputs.data(), B, Tn, C, n), lap(kPhaseOther);
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
