// GPT forward and backward on the GPU (model/gpt_cuda.h): model/block.h's wiring through the CUDA
// ops; activations planned once per (B, T), as gpt.cpp plans them on the CPU.
#include "model/gpt_cuda.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

#include "mhc/diag.h"
#include "model/block.h"
#include "model/cuda_ops.h"

namespace mhc {

namespace {

// The model's ops; norms: where a pass (a forward, a backward) hands the streams' norms from site to
// site (cuda_ops.h), made fresh for each pass so that none outlives it.
// deferred: where a backward defers each site's post-side dX to its pre side (cuda_ops.h).
detail::CudaOps ops_of(const GptCuda& g, detail::StreamNorms* norms = nullptr,
                       detail::DeferredPost* deferred = nullptr) {
    detail::CudaOps ops{&g.host.sites, &g.dsites, g.timer, norms, deferred, {}};
    if (g.bf16) ops.bf16 = {g.param.data(), &g.lin16, g.dout16, &g.heads16, g.dout16_attn, &g.stored16};
    return ops;
}

constexpr long kPiece16 = 128;  // bf16 values in 256 bytes
long round16(long count) { return (count + kPiece16 - 1) / kPiece16 * kPiece16; }

// dtype bf16's linear layers: (weight offset, weight values, input width) of each, in model order.
std::vector<std::array<long, 3>> linear_layers(const GPT<float>& m) {
    const long C = m.C;
    std::vector<std::array<long, 3>> out;
    for (const GptBlock& w : m.blocks)
        out.insert(out.end(), {{w.attn_w, 3 * C * C, C}, {w.aproj_w, C * C, C}, {w.fc_w, 4 * C * C, C},
                               {w.mproj_w, 4 * C * C, 4 * C}});
    out.push_back({m.wte, (long)m.V * C, C});
    return out;
}

// A bf16 activation's key: its address as the model's float pointer (gpt_cuda.h, stored16).
float* key(GptCuda& g, cuda::bf16* p) {
    float* k = reinterpret_cast<float*>(p);
    g.stored16.push_back(k);
    return k;
}

// Whether the linear layers' output gradients are bf16 (dtype bf16 without biases): dy, dfch and
// dqkv are then written in bf16 by the site's post backward, the GELU's backward and the
// attention's, each value the fp32 one rounded once, which is all their layers' backward reads of
// them (a bias's gradient would sum the fp32 values: with biases they stay fp32 and are copied).
bool grads16(const GptCuda& g) { return g.bf16 && (g.host.blocks.empty() || g.host.blocks[0].aproj_b < 0); }

// dtype bf16's activations for B·T = N tokens: the stream states (with recompute those inside the
// blocks share one buffer, as in fp32) and the backward's two buffers of their gradient, each linear layer's bf16 input, the logits (then their
// gradient), each block's c_fc output, each site's branch output y, the linear layers' output
// gradients (grads16) or else the backward's copy of one (the widest: c_fc's [N, 4C]), each
// block's attention heads and the attention backward's copy of its output gradient. The GELU's
// output is c_proj's bf16 input.
void plan_bf16(GptCuda& g, int B, int Tn) {
    const GPT<float>& m = g.host;
    const long N = (long)B * Tn;
    const std::vector<std::array<long, 3>> layers = linear_layers(m);
    const bool g16 = grads16(g);
    const long gy = round16(N * m.C), gqkv = round16(3 * N * m.C), gfch = round16(4 * N * m.C);
    const long logits = round16(N * m.V), fch = round16(N * 4L * m.C);
    const long dout = g16 ? gy + gqkv + gfch : round16(N * 4L * m.C);
    const long heads = round16(cuda::attention_heads16_size(B, Tn, m.C, m.H));
    const long dout_attn = round16(cuda::attention_dout16_size(B, Tn, m.C, m.H));
    const long y = round16(N * m.C), S = round16(N * m.n * m.C);
    const long states = m.recompute ? m.L + 2 : 2 * m.L + 1;
    long total = (states + 2) * S + logits + dout + m.L * (heads + fch + 2 * y) + dout_attn;
    for (const auto& l : layers) total += round16(N * l[2]);
    g.act16.resize(total);
    cuda::bf16* at = g.act16.data();
    g.stored16.clear();
    float* mid = nullptr;
    if (m.recompute) mid = key(g, at), at += S;
    for (size_t k = 0; k < g.X.size(); k++)
        if (k % 2 && mid) g.X[k] = mid;
        else g.X[k] = key(g, at), at += S;
    g.dXa = key(g, at), at += S;
    g.dXb = key(g, at), at += S;
    g.logits = key(g, at), at += logits;
    if (g16) {
        GPT<float>::BlockGrad& b = g.bgrad;
        b.dy = key(g, at), at += gy;
        b.dqkv = key(g, at), at += gqkv;
        b.dfch = key(g, at), at += gfch;
        g.dout16 = nullptr;
    } else {
        g.dout16 = at, at += dout;
    }
    g.dout16_attn = at, at += dout_attn;
    g.heads16.clear();
    for (auto& b : g.b_act) {
        g.heads16.push_back({b.att, at}), at += heads;
        b.fch = key(g, at), at += fch;
    }
    for (auto& s : g.s_act) s.y = key(g, at), at += y;
    for (size_t k = 0; k < layers.size(); k++) g.lin16[k].in16 = at, at += round16(N * layers[k][2]);
    // The layers' bf16 inputs are written by what makes them (linear_layers' order: c_attn, the
    // attention's c_proj, c_fc, the MLP's c_proj): ln1, the attention, ln2 and the GELU, each
    // value rounded once, with no fp32 copy between.
    for (int i = 0; i < m.L; i++) {
        GPT<float>::Block& b = g.b_act[i];
        b.ln1 = key(g, g.lin16[4 * i].in16), b.atty = key(g, g.lin16[4 * i + 1].in16);
        b.ln2 = key(g, g.lin16[4 * i + 2].in16), b.fcg = key(g, g.lin16[4 * i + 3].in16);
    }
}

// Every activation of a (B, T) pass in one device buffer and every activation gradient in another,
// in 256-byte pieces (the connections' scratch holds doubles).
void plan(GptCuda& g, int B, int Tn) {
    if (g.B == B && g.Tn == Tn && g.host.planned_recompute == g.host.recompute) return;
    const GPT<float>& m = g.host;
    const long N = (long)B * Tn, C = m.C, n = m.n, S = N * n * C;
    // The attention keeps a record of O(T) per query, never the T x T probabilities (ops_cuda.h).
    const long att = cuda::attention_record_size(B, Tn, m.C, m.H), datt = cuda::attention_scratch_size(B, Tn, m.H);
    const int L = m.L;
    long scratch = 0;
    for (const auto& s : m.sites) scratch = std::max(scratch, cuda::conn_scratch_size_cuda(s, (int)N));
    const auto residual_site = [](const ConnSite& s) { return s.cfg.variant == Variant::residual; };
    const bool all_residual = std::all_of(m.sites.begin(), m.sites.end(), residual_site);
    long used = 0;
    float* base = nullptr;
    auto take = [&](long count) {
        float* at = base ? base + used : nullptr;
        used += (count + 63) / 64 * 64;
        return at;
    };
    auto layout_act = [&] {
        // With recompute, the stream states inside the blocks share one buffer, as do the sites' u.
        // With bf16 the states are bf16 (plan_bf16). A residual site's u is its input stream itself
        // (u = X, n = 1; set below, once the states have their places).
        g.X.assign(2 * L + 1, nullptr);
        const bool shared = m.recompute;
        float* mid = shared && !g.bf16 ? take(S) : nullptr;
        float* u = shared && !all_residual ? take(N * C) : nullptr;
        for (int k = 0; k <= 2 * L && !g.bf16; k++) g.X[k] = k % 2 && shared ? mid : take(S);
        g.s_act.assign(2 * L, {});
        for (int k = 0; k < 2 * L; k++) {
            float* cache = take(N * conn_cache_stride(m.sites[k]));
            float* uk = residual_site(m.sites[k]) ? nullptr : shared ? u : take(N * C);
            g.s_act[k] = {cache, uk, g.bf16 ? nullptr : take(N * C)};  // bf16: y in plan_bf16
        }
        // With bf16 the linear layers' inputs ln1, atty, ln2 and fcg are their bf16 copies, and fch
        // and the logits bf16 only (plan_bf16); hsum stays fp32. qkv is one buffer for all blocks
        // (the attention keeps its bf16 heads).
        float* qkv = g.bf16 ? take(3 * N * C) : nullptr;
        auto fp32 = [&](long count) { return g.bf16 ? nullptr : take(count); };
        g.b_act.assign(L, {});
        for (auto& b : g.b_act) {
            b.ln1 = fp32(N * C), b.ln1_mean = take(N), b.ln1_rstd = take(N), b.qkv = g.bf16 ? qkv : take(3 * N * C);
            b.att = take(att), b.atty = fp32(N * C), b.ln2 = fp32(N * C), b.ln2_mean = take(N);
            b.ln2_rstd = take(N), b.fch = fp32(4 * N * C), b.fcg = fp32(4 * N * C);
        }
        g.lnf = take(S), g.lnf_mean = take(N * n), g.lnf_rstd = take(N * n), g.hsum = take(N * C);
        g.logits = g.bf16 ? nullptr : take(N * m.V), g.losses = take(N), g.scratch = take(scratch);
        g.stream_ss = (double*)take(2 * N * n);
    };
    auto layout_gact = [&] {
        auto& b = g.bgrad;
        // bf16: the streams' gradients dXa, dXb are bf16 too (plan_bf16)
        g.dXa = g.bf16 ? nullptr : take(S), g.dXb = g.bf16 ? nullptr : take(S);
        // bf16 without biases: dy, dqkv and dfch are bf16 (plan_bf16)
        const bool g16 = grads16(g);
        b.du = take(N * C), b.dy = g16 ? nullptr : take(N * C), b.dln = take(N * C);
        b.dqkv = g16 ? nullptr : take(3 * N * C), b.datt = take(datt), b.datty = take(N * C);
        b.dfch = g16 ? nullptr : take(4 * N * C);
        b.dfcg = take(4 * N * C), g.dhsum = take(N * C), g.dlnf = take(S);
    };
    for (auto [buf, layout] : {std::pair{&g.act, std::function<void()>(layout_act)},
                               std::pair{&g.gact, std::function<void()>(layout_gact)}}) {
        used = 0, base = nullptr;
        layout();
        buf->resize(used);
        used = 0, base = buf->data();
        layout();
    }
    if (g.bf16) plan_bf16(g, B, Tn);
    for (int k = 0; k < 2 * L; k++)
        if (residual_site(m.sites[k])) g.s_act[k].u = g.X[k];  // read as X is stored (CudaOps)
    g.inputs.resize(N);
    g.targets.resize(N);
    g.B = B, g.Tn = Tn, g.host.planned_recompute = g.host.recompute;
}

}  // namespace

void gpt_cuda_build(GptCuda& g, const GPT<float>& m, bool bf16) {
    cuda::require_head_size(m.C, m.H);
    g = GptCuda();
    // The same layout from the same config; mhc-lite's permutations as the CPU model drew them.
    std::vector<std::vector<int>> perms;
    for (const auto& s : m.sites) perms.push_back(s.cfg.variant == Variant::mhc_lite ? s.perms : std::vector<int>());
    gpt_build(g.host, m.cfg, &perms);
    if (gpt_param_count_of(g.host.params) != (long)m.param.size())
        throw std::logic_error("gpt_cuda_build: the model's layout did not reproduce");
    g.host.param.clear(), g.host.grad.clear();  // the device holds them
    g.host.param.shrink_to_fit(), g.host.grad.shrink_to_fit();
    g.host.recompute = m.recompute;
    // The driver's local memory for the kernels' stack frames, reserved now rather than at the first
    // launch of the largest, inside a step.
    size_t frame = 0;
    for (const auto& s : g.host.sites) {
        g.dsites.push_back(cuda::conn_site_cuda(s));
        frame = std::max(frame, cuda::conn_stack_bytes_cuda(s));
    }
    cuda::reserve_stack(frame);
    g.param.upload(m.param);
    g.grad.resize(m.param.size());
    g.grad.fill_bytes(0);
    g.bf16 = bf16;
    if (bf16) {
        const std::vector<std::array<long, 3>> layers = linear_layers(g.host);
        long total = 0;
        for (const auto& l : layers) total += round16(l[1]);
        g.param16.resize(total);
        cuda::bf16* at = g.param16.data();
        for (const auto& l : layers) g.lin16.push_back({l[0], l[1], at, nullptr}), at += round16(l[1]);
    }
    gpt_cuda_params_changed(g);
}

void gpt_cuda_params_changed(GptCuda& g) {
    for (const auto& l : g.lin16) cuda::to_bf16(l.w16, g.param.data() + l.w_off, l.count);
}

long gpt_cuda_param_count(const GptCuda& g) { return (long)g.param.size(); }
void gpt_cuda_upload_params(GptCuda& g, const float* params) {
    g.param.upload(params, g.param.size());
    gpt_cuda_params_changed(g);
}
void gpt_cuda_download_params(const GptCuda& g, float* params) { g.param.download(params, g.param.size()); }
void gpt_cuda_download_grads(const GptCuda& g, float* grads) { g.grad.download(grads, g.grad.size()); }
void gpt_cuda_zero_grad(GptCuda& g) { g.grad.fill_bytes(0); }

void gpt_cuda_stage(GptCuda& g, const int32_t* inputs, const int32_t* targets, int B, int Tn) {
    const GPT<float>& m = g.host;
    gpt_check_batch(m.V, m.Tmax, inputs, targets, B, Tn);
    const int N = B * Tn;
    plan(g, B, Tn);
    g.inputs.upload(inputs, N);
    cuda::encoder_index_build(g.enc, inputs, N);
    g.have_targets = targets != nullptr;
    if (targets) g.targets.upload(targets, N);
}

namespace {
// gpt_cuda_forward up to the logits, from the staged batch: kernels and products only.
void forward_logits(GptCuda& g) {
    const GPT<float>& m = g.host;
    const int B = g.B, Tn = g.Tn, N = B * Tn;
    const float* P = g.param.data();
    detail::StreamNorms norms{g.stream_ss};
    const detail::CudaOps ops = ops_of(g, &norms);
    auto attend = [&](const float* qkv, float* atty, float* att) {
        ops.attention_forward(atty, att, qkv, B, Tn, m.C, m.H);
    };
    ops.encoder_forward(g.X[0], g.inputs.data(), P + m.wte, P + m.wpe, B, Tn, m.C, m.n);
    for (int i = 0; i < m.L; i++)
        detail::block_forward(ops, m, i, P, g.X[2 * i], g.X[2 * i + 1], g.X[2 * i + 2], g.b_act[i], g.s_act[2 * i],
                              g.s_act[2 * i + 1], g.scratch, N, attend);
    detail::head_forward(ops, m, P, g.X[2 * m.L], g.lnf, g.lnf_mean, g.lnf_rstd, g.hsum, g.logits, N);
}
}  // namespace

double gpt_cuda_forward(GptCuda& g, const int32_t* inputs, const int32_t* targets, int B, int Tn) {
    gpt_cuda_stage(g, inputs, targets, B, Tn);
    forward_logits(g);
    g.logits_grad_scale.reset();
    if (!targets) return g.loss = std::numeric_limits<double>::quiet_NaN();
    return g.loss = ops_of(g).crossentropy_forward(g.logits, g.losses, g.targets.data(), B * Tn, g.host.V);
}

void gpt_cuda_forward_into(GptCuda& g, const int32_t* inputs, const int32_t* targets, int B, int Tn, double* loss_acc,
                           double div, double backward_scale) {
    if (!targets) throw std::logic_error("gpt_cuda_forward_into needs targets");
    gpt_cuda_stage(g, inputs, targets, B, Tn);
    gpt_cuda_forward_staged(g, loss_acc, div, backward_scale);
}

void gpt_cuda_forward_staged(GptCuda& g, double* loss_acc, double div, double backward_scale) {
    if (!g.have_targets) throw std::logic_error("gpt_cuda_forward_staged needs a batch staged with targets");
    const int B = g.B, Tn = g.Tn;
    forward_logits(g);
    g.loss = std::numeric_limits<double>::quiet_NaN();  // on the device, in *loss_acc
    // The logits' gradient for gpt_cuda_backward(backward_scale), as it would compute it (scale / N).
    ops_of(g).crossentropy_forward_into(g.logits, g.losses, g.targets.data(), B * Tn, g.host.V, loss_acc, div,
                                        backward_scale / (B * Tn));
    g.logits_grad_scale = backward_scale;
}

void gpt_cuda_mark_replayed(GptCuda& g, double backward_scale) {
    g.loss = std::numeric_limits<double>::quiet_NaN();
    g.logits_grad_scale = backward_scale;
    g.have_targets = false;
}

void gpt_cuda_backward(GptCuda& g, double scale) {
    if (!g.have_targets) throw std::logic_error("gpt_cuda_backward needs a forward with targets");
    const GPT<float>& m = g.host;
    const int B = g.B, Tn = g.Tn, N = B * Tn;
    const float* P = g.param.data();
    float* G = g.grad.data();
    detail::StreamNorms norms{g.stream_ss};
    detail::DeferredPost deferred;
    const detail::CudaOps ops = ops_of(g, &norms, &deferred);
    if (g.logits_grad_scale) {  // the forward left the gradient (gpt_cuda_forward_into)
        if (*g.logits_grad_scale != scale)
            throw std::logic_error("gpt_cuda_backward: scale " + std::to_string(scale) + ", but the forward made the "
                                   "logits' gradient for " + std::to_string(*g.logits_grad_scale));
    } else {
        ops.crossentropy_backward(g.logits, g.targets.data(), N, m.V, scale / N);  // logits := dlogits
    }
    float *dnext = g.dXa, *dcur = g.dXb;
    detail::head_backward(ops, m, P, G, g.X[2 * m.L], g.lnf_mean, g.lnf_rstd, g.hsum, g.logits, g.dhsum, g.dlnf,
                          dnext, N);
    for (int i = m.L - 1; i >= 0; i--)
        detail::block_backward(ops, m, i, P, G, g.X[2 * i], g.X[2 * i + 1], g.b_act[i], g.s_act[2 * i],
                               g.s_act[2 * i + 1], g.bgrad, dnext, dcur, g.scratch, B, Tn);
    if (deferred.site) throw std::logic_error("gpt_cuda_backward: a site's post-side dX was never made");
    ops.encoder_backward(G + m.wte, G + m.wpe, dnext, g.enc, B, Tn, m.C, m.n);
    g.have_targets = false;  // the logits now hold gradients: a second backward would be wrong
}

namespace {
// `count` values of an activation as floats, whether it is stored in fp32 or bf16.
std::vector<float> download_activation(const GptCuda& g, const float* p, size_t count) {
    std::vector<float> out(count);
    const cuda::bf16* p16 = ops_of(g).bf16.stored(p);
    if (!p16) {
        cuda::copy_to_host(out.data(), p, count * sizeof(float));
        return out;
    }
    std::vector<cuda::bf16> v16(count);
    cuda::copy_to_host(v16.data(), p16, count * sizeof(cuda::bf16));
    for (size_t i = 0; i < count; i++) out[i] = __bfloat162float(v16[i]);
    return out;
}
}  // namespace

std::vector<float> gpt_cuda_logits(const GptCuda& g) {
    return download_activation(g, g.logits, (size_t)g.B * g.Tn * g.host.V);
}

std::vector<float> gpt_cuda_site_cache(const GptCuda& g, int k) {
    std::vector<float> out((size_t)g.B * g.Tn * conn_cache_stride(g.host.sites.at(k)));
    cuda::copy_to_host(out.data(), g.s_act.at(k).cache, out.size() * sizeof(float));
    return out;
}

nlohmann::json gpt_cuda_diagnostics(const GptCuda& g) {
    if (g.B * g.Tn <= 0) throw std::logic_error("gpt_cuda_diagnostics: the model has not run a forward yet");
    // A CPU model with the layout and, on the host, what a forward leaves that diagnostics read: the
    // shape and every site's cache (no weights, no activations). The stream similarity after each
    // site comes from the streams' per-token products, made on the device (n² doubles a token come
    // down, not n·C stream values). With recompute the states inside the blocks are made again
    // here first, by the op that made them.
    GPT<float> view = g.host;
    view.B = g.B, view.Tn = g.Tn, view.recompute = false;
    const int N = g.B * g.Tn, n = view.n;
    std::vector<std::vector<float>> caches;
    for (int k = 0; k < (int)g.host.sites.size(); k++) caches.push_back(gpt_cuda_site_cache(g, k));
    view.s_act.assign(caches.size(), {});
    for (size_t k = 0; k < caches.size(); k++) view.s_act[k].cache = caches[k].data();
    std::vector<double> similarity(g.host.sites.size(), std::numeric_limits<double>::quiet_NaN());
    if (n > 1) {
        cuda::DeviceBuffer<double> gram((size_t)N * n * n);
        std::vector<double> host(gram.size());
        for (size_t k = 1; k < g.X.size(); k++) {  // the state after site k - 1
            if (g.host.recompute && k % 2)
                ops_of(g).conn_post_forward(g.host.sites[k - 1], g.s_act[k - 1].cache, g.X[k - 1], g.s_act[k - 1].y,
                                            g.X[k], N);
            if (const cuda::bf16* x16 = ops_of(g).bf16.stored(g.X[k])) cuda::stream_gram(x16, N, n, view.C, gram.data());
            else cuda::stream_gram(g.X[k], N, n, view.C, gram.data());
            gram.download(host.data(), host.size());
            similarity[k - 1] = stream_similarity_of_gram(host.data(), N, n);
        }
    }
    return gpt_diagnostics(view, &similarity);
}

}  // namespace mhc
