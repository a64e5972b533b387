// The CUDA ops as the model calls them (model/block.h): the members of CpuOps (model/cpu_ops.h),
// same names and arguments, forwarding to the launchers of ops/ops_cuda.h and conn/conn_cuda.h on
// device pointers. A site is handed over as the model's ConnSite; its device twin is found by its
// place in the model's list of sites. With a PhaseTimer attached (mhc bench), each call is timed on
// the device by CUDA events and charged to its op's phase, the CPU ops' phases (model/cpu_ops.h).
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "conn/conn_cuda.h"
#include "cuda/phase_timer.h"
#include "mhc/conn.h"
#include "model/gpt_cuda.h"
#include "ops/ops_cuda.h"

namespace mhc::detail {

// Where conn_post_forward leaves the per-stream sums of squares of its output, for the next site's
// conn_pre_forward (its norms without another read of the streams): ss [N, n] and the output they
// belong to. A conn_pre_forward on any other buffer computes its norms itself.
struct StreamNorms {
    double* ss = nullptr;        // [N, n] device
    const float* of = nullptr;   // the streams ss describes; null: none
};

// The post side's dX deferred to the pre side within a site's backward: block.h calls a site's
// conn_post_backward, then its branch's backward, then its conn_pre_backward on the same dX, with dX'
// untouched in between. So the post's backward skips dX, and the pre's makes the post's share from
// dX' in its own pass (conn_cuda.h): the same sums, with one write and one read of the streams'
// gradient [N, n, C] fewer per site. What is pending between the two calls:
struct DeferredPost {
    const ConnSite* site = nullptr;  // null: nothing pending
    const float* dXout = nullptr;
    float* dX = nullptr;
};

// dtype bf16's products (model/gpt_cuda.h): the weights, each linear layer's bf16 weight and input
// by its weight's offset, the backward's scratch for an output gradient's copy, each attention's
// bf16 heads by its record, the attention backward's scratch, and the activations stored in bf16
// (the logits, c_fc's output, the GELU's, the branch outputs y, the stream states and their
// gradients), whose float pointers in the model are only keys.
struct Bf16Products {
    const float* P = nullptr;                                 // null: fp32 products
    const std::vector<GptCuda::Linear16>* lin16 = nullptr;
    cuda::bf16* dout16 = nullptr;
    const std::vector<GptCuda::Heads16>* heads16 = nullptr;
    cuda::bf16* dout16_attn = nullptr;
    const std::vector<const float*>* stored16 = nullptr;

    // The bf16 values behind an activation's pointer if it is one stored in bf16, else null.
    cuda::bf16* stored(const float* p) const {
        if (stored16)
            for (const float* k : *stored16)
                if (k == p) return reinterpret_cast<cuda::bf16*>(const_cast<float*>(p));
        return nullptr;
    }

    const GptCuda::Linear16& of(const float* W) const {
        for (const auto& l : *lin16)
            if (P + l.w_off == W) return l;
        throw std::logic_error("CudaOps: a linear layer whose weight has no bf16 copy");
    }
    cuda::bf16* heads_of(const float* att) const {
        for (const auto& h : *heads16)
            if (h.att == att) return h.heads;
        throw std::logic_error("CudaOps: an attention whose record has no bf16 heads");
    }
    // f(p) with p as stored: its bf16 values where it is one of the keys, else the floats.
    template <typename F> void as_stored(const float* p, F&& f) const {
        if (const cuda::bf16* p16 = stored(p)) f(p16);
        else f(p);
    }
    template <typename F> void as_stored(float* p, F&& f) const {  // an output
        if (cuda::bf16* p16 = stored(p)) f(p16);
        else f(p);
    }
    // The bf16 values of p, which must be stored as `like` is (both bf16 or neither; p may be null).
    cuda::bf16* stored_like(const float* p, const float* like, const char* what) const {
        cuda::bf16* p16 = stored(p);
        if (p && !p16 != !stored(like))
            throw std::logic_error(std::string("CudaOps: ") + what + " stored unlike the streams");
        return p16;
    }
};

struct CudaOps {
    const std::vector<ConnSite>* sites = nullptr;             // the model's sites (host)
    const std::vector<cuda::ConnSiteCuda>* dsites = nullptr;  // their device twins, in the same order
    cuda::PhaseTimer* timer = nullptr;                        // null: no timing
    StreamNorms* norms = nullptr;                             // null: every site reads its streams
    DeferredPost* deferred = nullptr;                         // null: the post's backward writes dX
    Bf16Products bf16;                                        // unset: fp32 products

    const cuda::ConnSiteCuda& dev(const ConnSite& s) const {
        for (size_t k = 0; k < sites->size(); k++)
            if (&(*sites)[k] == &s) return (*dsites)[k];
        throw std::logic_error("CudaOps: a connection site that is not one of the model's");
    }

#define MHC_CUDA_OP(phase, op)                                   \
    template <typename... A> decltype(auto) op(A&&... a) const { \
        const cuda::PhaseScope scope(timer, phase, #op);         \
        return cuda::op(std::forward<A>(a)...);                  \
    }
    // The streams (X) and their gradients may be stored in bf16: the encoder writes them, ln_f reads
    // them; ln_f's backward writes their gradient, the encoder's reads it.
    void encoder_forward(float* X, const int32_t* idx, const float* wte, const float* wpe, int B, int Tn, int C,
                         int n) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "encoder_forward");
        if (cuda::bf16* X16 = bf16.stored(X)) return cuda::encoder_forward(X16, idx, wte, wpe, B, Tn, C, n);
        cuda::encoder_forward(X, idx, wte, wpe, B, Tn, C, n);
    }
    void encoder_backward(float* dwte, float* dwpe, const float* dX, const cuda::EncoderIndex& ix, int B, int Tn,
                          int C, int n) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "encoder_backward");
        bf16.as_stored(dX, [&](auto* g) { cuda::encoder_backward(dwte, dwpe, g, ix, B, Tn, C, n); });
    }
    void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* w, const float* b,
                           int N, int C) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "layernorm_forward");
        cuda::bf16* out16 = bf16.stored(out);  // a linear layer's bf16 input
        bf16.as_stored(in, [&](auto* x) {
            if (out16) cuda::layernorm_forward(out16, mean, rstd, x, w, b, N, C);
            else cuda::layernorm_forward(out, mean, rstd, x, w, b, N, C);
        });
    }
    void layernorm_backward(float* din, float* dw, float* db, const float* dout, const float* in, const float* w,
                            const float* mean, const float* rstd, int N, int C) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "layernorm_backward");
        // ln_f's: from bf16 streams, to their gradient in bf16; a residual site's: from the bf16 stream
        // (its u is the stream itself, gpt_cuda.cpp) to an fp32 du
        cuda::bf16 *din16 = bf16.stored(din), *in16 = bf16.stored(in);
        if (din16 && !in16) throw std::logic_error("CudaOps: a LayerNorm's bf16 input gradient from an fp32 input");
        if (din16) return cuda::layernorm_backward(din16, dw, db, dout, in16, w, mean, rstd, N, C);
        if (in16) return cuda::layernorm_backward(din, dw, db, dout, in16, w, mean, rstd, N, C);
        cuda::layernorm_backward(din, dw, db, dout, in, w, mean, rstd, N, C);
    }
    // bf16: an input stored in bf16 is the layer's bf16 input itself (the GELU wrote it there).
    void matmul_forward(float* out, const float* in, const float* W, const float* bias, int N, int IC, int OC) const {
        const cuda::PhaseScope scope(timer, kPhaseMatmul, "matmul_forward");
        if (!bf16.P) return cuda::matmul_forward(out, in, W, bias, N, IC, OC);
        const auto& l = bf16.of(W);
        const cuda::bf16* in16 = bf16.stored(in);
        if (in16 && in16 != l.in16) throw std::logic_error("CudaOps: a bf16 input that is not its layer's copy");
        const float* in32 = in16 ? nullptr : in;
        if (cuda::bf16* out16 = bf16.stored(out))
            return cuda::matmul_forward_to16(out16, l.in16, in32, l.w16, bias, N, IC, OC);
        cuda::matmul_forward_bf16(out, l.in16, in32, l.w16, bias, N, IC, OC);
    }
    // bf16: the input's copy is the forward's (the fp32 input may since have been overwritten).
    void matmul_backward(float* din, float* dW, float* dbias, const float* dout, const float* in, const float* W,
                         int N, int IC, int OC) const {
        const cuda::PhaseScope scope(timer, kPhaseMatmul, "matmul_backward");
        if (!bf16.P) return cuda::matmul_backward(din, dW, dbias, dout, in, W, N, IC, OC);
        const auto& l = bf16.of(W);
        // An output gradient stored in bf16: the logits', and without biases dy, dfch and dqkv, written
        // so by what makes them (model/gpt_cuda.h).
        if (const cuda::bf16* dout16 = bf16.stored(dout)) {
            if (dbias) throw std::logic_error("CudaOps: a bias gradient from a bf16 output gradient");
            return cuda::matmul_backward_from16(din, dW, dout16, l.in16, l.w16, N, IC, OC);
        }
        cuda::matmul_backward_bf16(din, dW, dbias, bf16.dout16, dout, l.in16, l.w16, N, IC, OC);
    }
    void gelu_forward(float* out, const float* in, long N) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "gelu_forward");
        cuda::bf16 *in16 = bf16.stored(in), *out16 = bf16.stored(out);
        if (!in16 && !out16) return cuda::gelu_forward(out, in, N);
        if (!in16 || !out16) throw std::logic_error("CudaOps: a GELU from or to bf16, not both");
        cuda::gelu_forward_bf16(out16, in16, N);
    }
    void gelu_backward(float* din, const float* in, const float* dout, long N) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "gelu_backward");
        if (const cuda::bf16* in16 = bf16.stored(in)) {
            if (cuda::bf16* din16 = bf16.stored(din)) return cuda::gelu_backward_from16(din16, in16, dout, N);
            return cuda::gelu_backward_from16(din, in16, dout, N);
        }
        cuda::gelu_backward(din, in, dout, N);
    }
    void attention_forward(float* out, float* att, const float* qkv, int B, int Tn, int C, int H) const {
        const cuda::PhaseScope scope(timer, kPhaseAttention, "attention_forward");
        if (!bf16.P) return cuda::attention_forward(out, att, qkv, B, Tn, C, H);
        if (cuda::bf16* out16 = bf16.stored(out))  // c_proj's bf16 input
            return cuda::attention_forward_bf16(out16, att, bf16.heads_of(att), qkv, B, Tn, C, H);
        cuda::attention_forward_bf16(out, att, bf16.heads_of(att), qkv, B, Tn, C, H);
    }
    // bf16: the heads are the forward's bf16 copy (the fp32 qkv may since have been overwritten).
    void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att, int B,
                            int Tn, int C, int H) const {
        const cuda::PhaseScope scope(timer, kPhaseAttention, "attention_backward");
        if (!bf16.P) return cuda::attention_backward(dqkv, datt, dout, qkv, att, B, Tn, C, H);
        bf16.as_stored(dqkv, [&](auto* d) {  // bf16: c_attn's output gradient
            cuda::attention_backward_bf16(d, datt, bf16.dout16_attn, dout, bf16.heads_of(att), att, B, Tn, C, H);
        });
    }
    MHC_CUDA_OP(kPhaseAttention, attention_cached_forward)
    MHC_CUDA_OP(kPhaseOther, stream_sum_forward)
    MHC_CUDA_OP(kPhaseOther, stream_sum_backward)
    double crossentropy_forward(float* logits, float* losses, const int32_t* targets, int N, int V) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "crossentropy_forward");
        if (cuda::bf16* l16 = bf16.stored(logits)) return cuda::crossentropy_forward_bf16(l16, losses, targets, N, V);
        return cuda::crossentropy_forward(logits, losses, targets, N, V);
    }
    void crossentropy_forward_into(float* logits, float* losses, const int32_t* targets, int N, int V,
                                   double* loss_acc, double div, double grad_scale) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "crossentropy_forward_into");
        if (cuda::bf16* l16 = bf16.stored(logits))
            return cuda::crossentropy_forward_into_bf16(l16, losses, targets, N, V, loss_acc, div, grad_scale);
        cuda::crossentropy_forward_into(logits, losses, targets, N, V, loss_acc, div, grad_scale);
    }
    void crossentropy_backward(float* logits, const int32_t* targets, int N, int V, double scale) const {
        const cuda::PhaseScope scope(timer, kPhaseOther, "crossentropy_backward");
        if (cuda::bf16* l16 = bf16.stored(logits)) return cuda::crossentropy_backward_bf16(l16, targets, N, V, scale);
        cuda::crossentropy_backward(logits, targets, N, V, scale);
    }
    // The sites: the streams X (and Xout) and the branch output y each as stored.
    void conn_pre_forward(const ConnSite& s, const float* params, const float* X, float* u, float* cache,
                          float* scratch, int N) const {
        const cuda::PhaseScope scope(timer, kPhaseConn, "conn_pre_forward");
        const double* ss = norms && norms->of == X ? norms->ss : nullptr;
        bf16.as_stored(X, [&](auto* x) { cuda::conn_pre_forward(dev(s), params, x, u, cache, scratch, N, ss); });
    }
    void conn_post_forward(const ConnSite& s, const float* cache, const float* X, const float* y, float* Xout,
                           int N) const {
        const cuda::PhaseScope scope(timer, kPhaseConn, "conn_post_forward");
        double* ss = norms ? norms->ss : nullptr;
        cuda::bf16 *X16 = bf16.stored(X), *Xout16 = bf16.stored_like(Xout, X, "a site's output streams");
        bf16.as_stored(y, [&](auto* yv) {
            if (X16) cuda::conn_post_forward(dev(s), cache, (const cuda::bf16*)X16, yv, Xout16, N, ss);
            else cuda::conn_post_forward(dev(s), cache, X, yv, Xout, N, ss);
        });
        if (norms) norms->of = Xout;
    }
    void conn_post_backward(const ConnSite& s, float* cache, const float* X, const float* y, const float* dXout,
                            float* dX, float* dy, int N) const {
        const cuda::PhaseScope scope(timer, kPhaseConn, "conn_post_backward");
        if (deferred && deferred->site)
            throw std::logic_error("CudaOps: a site's post backward while another's dX is still deferred");
        float* dX_now = deferred ? nullptr : dX;
        cuda::bf16 *dXout16 = bf16.stored_like(dXout, X, "a site's output gradient"),
                   *dX16 = bf16.stored_like(dX_now, X, "a site's input gradient");
        bf16.as_stored(y, [&](auto* yv) {
            bf16.as_stored(dy, [&](auto* dyv) {  // bf16: the branch's c_proj's output gradient
                if (dXout16) cuda::conn_post_backward(dev(s), cache, (const cuda::bf16*)bf16.stored(X), yv,
                                                      (const cuda::bf16*)dXout16, dX16, dyv, N);
                else cuda::conn_post_backward(dev(s), cache, X, yv, dXout, dX_now, dyv, N);
            });
        });
        if (deferred) *deferred = {&s, dXout, dX};
    }
    void conn_pre_backward(const ConnSite& s, const float* params, const float* cache, const float* X,
                           const float* du, float* dX, float* dparams, float* scratch, int N) const {
        const cuda::PhaseScope scope(timer, kPhaseConn, "conn_pre_backward");
        const float* dXout = nullptr;
        if (deferred && deferred->site) {
            if (deferred->site != &s || deferred->dX != dX)
                throw std::logic_error("CudaOps: a site's pre backward on another site's deferred dX");
            dXout = deferred->dXout;
            *deferred = {};
        }
        cuda::bf16 *dX16 = bf16.stored_like(dX, X, "a site's input gradient"),
                   *dXout16 = bf16.stored_like(dXout, X, "a site's output gradient");
        if (dX16)
            cuda::conn_pre_backward(dev(s), params, cache, (const cuda::bf16*)bf16.stored(X), du, dX16, dparams,
                                    scratch, N, (const cuda::bf16*)dXout16);
        else cuda::conn_pre_backward(dev(s), params, cache, X, du, dX, dparams, scratch, N, dXout);
    }
#undef MHC_CUDA_OP
};

}  // namespace mhc::detail
