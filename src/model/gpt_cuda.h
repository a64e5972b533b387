// The GPT of SPEC §3 on the GPU: the CPU model's layout (gpt_build: the same tensors at the same
// offsets, so a checkpoint is a plain copy of the flat parameter buffer) with its parameters,
// gradients, activations and activation gradients in device buffers laid out once, and the same
// wiring as the CPU model (model/block.h), run through the CUDA ops (model/cuda_ops.h).
#pragma once
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "conn/conn_cuda.h"
#include "cuda/cuda.h"
#include "cuda/phase_timer.h"
#include "mhc/gpt.h"
#include "ops/ops_cuda.h"

namespace mhc {

struct GptCuda {
    GPT<float> host;                          // layout only (sites, tensors, offsets); no activations
    std::vector<cuda::ConnSiteCuda> dsites;   // the device twins of host.sites
    cuda::DeviceBuffer<float> param, grad;    // [nparams], host.params' layout
    // dtype bf16: the linear layers multiply bf16 copies of their weights and inputs (fp32 sums), and
    // the stream states and the largest activations are stored in bf16 (below); the master weights,
    // the gradients and the arithmetic outside the products stay fp32.
    bool bf16 = false;
    // Each linear layer's weight (offset w_off in param, `count` values) rounded to bf16 at w16
    // (gpt_cuda_params_changed), and its input's bf16 copy at in16 (planned with the activations).
    // The copies start on 256-byte boundaries, which the tensor-core products want (the weights'
    // offsets in param are not aligned: the connections' tensors have sizes like 28 or 1).
    struct Linear16 {
        long w_off, count;
        cuda::bf16 *w16, *in16;
    };
    std::vector<Linear16> lin16;
    cuda::DeviceBuffer<cuda::bf16> param16;   // the w16 of every linear layer

    // Activations, planned for one (B, T) by gpt_cuda_forward (device pointers into act / gact).
    int B = 0, Tn = 0;
    cuda::DeviceBuffer<float> act, gact;
    cuda::DeviceBuffer<int32_t> inputs, targets;
    cuda::EncoderIndex enc;                   // the inputs grouped by token, for the embedding backward
    std::vector<float*> X;                    // 2L + 1 stream states [N, n, C]
    std::vector<GPT<float>::Site> s_act;
    std::vector<GPT<float>::Block> b_act;
    GPT<float>::BlockGrad bgrad{};
    float *lnf = nullptr, *lnf_mean = nullptr, *lnf_rstd = nullptr, *hsum = nullptr, *logits = nullptr,
          *losses = nullptr, *scratch = nullptr;
    float *dXa = nullptr, *dXb = nullptr, *dhsum = nullptr, *dlnf = nullptr;
    bool have_targets = false;
    double loss = 0;
    cuda::PhaseTimer* timer = nullptr;        // set: forward and backward time their ops (mhc bench)
    double* stream_ss = nullptr;              // [N, n] in act: the streams' sums of squares (cuda_ops.h)
    std::optional<double> logits_grad_scale;  // set: the logits hold their gradient, for this backward scale
    // With bf16: the linear layers' bf16 inputs (lin16's in16: the forward's copy, which the backward
    // takes again) and the backward's scratch for an output gradient's copy. ln1, atty, ln2 and fcg
    // are those copies themselves (written by the LayerNorm, the attention and the GELU); hsum, the
    // head's input, is made in fp32 and copied, in a buffer of its own. Likewise
    // the attention: each block's keeps its bf16 q, k, v (found by the block's attention record),
    // so the fp32 qkv is one buffer too; dout16_attn is its backward's scratch.
    // Some activations are bf16 themselves: the stream states X (and their gradients dXa, dXb, stored
    // as the streams), the logits (then their gradient),
    // c_fc's output fch, the GELU's fcg (straight into c_proj's bf16 input) and the sites' branch
    // outputs y. Their float pointers (X, dXa, dXb, logits, b_act's fch and fcg, s_act's y) are the
    // bf16 values' addresses, listed in stored16: keys by which the CUDA ops know them
    // (model/cuda_ops.h), never read as floats. The parameters' gradients stay fp32.
    cuda::DeviceBuffer<cuda::bf16> act16;
    cuda::bf16* dout16 = nullptr;
    std::vector<const float*> stored16;
    struct Heads16 {
        const float* att;
        cuda::bf16* heads;
    };
    std::vector<Heads16> heads16;
    cuda::bf16* dout16_attn = nullptr;
};

// From a built CPU model (gpt_build, then gpt_init or loaded weights): its layout and mhc-lite
// permutations, its parameters uploaded, gradients zero; bf16: dtype bf16's products.
void gpt_cuda_build(GptCuda& g, const GPT<float>& m, bool bf16 = false);

long gpt_cuda_param_count(const GptCuda& g);
void gpt_cuda_upload_params(GptCuda& g, const float* params);          // nparams values
// After anything writes g.param on the device but AdamW, which writes the copies itself when told
// of them (optim_cuda.h's adamw_copy_bf16; the engine does): the bf16 copy follows (queued, no
// wait). Nothing to do in fp32. Uploads do it themselves.
void gpt_cuda_params_changed(GptCuda& g);
void gpt_cuda_download_params(const GptCuda& g, float* params);
void gpt_cuda_download_grads(const GptCuda& g, float* grads);

// As gpt_forward: inputs and targets [B, T] on the host. With targets: the mean cross-entropy,
// keeping what the backward needs; without: logits [B*T, V] (gpt_cuda_logits), returns NaN.
double gpt_cuda_forward(GptCuda& g, const int32_t* inputs, const int32_t* targets, int B, int Tn);
// A training step's forward: with targets, without waiting for the loss (*loss_acc, on the device,
// += loss / div), and with the classifier fused (ops_cuda.h: crossentropy_forward_into): the logits
// hold their gradient for gpt_cuda_backward(backward_scale) at once, which then skips that pass
// (another scale there is a std::logic_error). gpt_cuda_logits then returns that gradient.
void gpt_cuda_forward_into(GptCuda& g, const int32_t* inputs, const int32_t* targets, int B, int Tn, double* loss_acc,
                           double div, double backward_scale);
// gpt_cuda_forward_into in its two halves: the host's (the checks, the activations planned for
// (B, T), the batch and its embedding index uploaded: queued, no wait), then the device's (kernels
// and products only, nothing read back or allocated, the same pointers and sizes every time for
// one plan), which a CUDA graph can capture and replay after each later batch's staging.
void gpt_cuda_stage(GptCuda& g, const int32_t* inputs, const int32_t* targets, int B, int Tn);
void gpt_cuda_forward_staged(GptCuda& g, double* loss_acc, double div, double backward_scale);
// After a CUDA graph replayed the device work of gpt_cuda_forward_staged then gpt_cuda_backward
// with this scale: the host's record of the pass, as they would have left it.
void gpt_cuda_mark_replayed(GptCuda& g, double backward_scale);
// As gpt_backward: grad += d(scale * loss) / d(param).
void gpt_cuda_backward(GptCuda& g, double scale = 1.0);
void gpt_cuda_zero_grad(GptCuda& g);

// The last forward's logits [B*T, V] (after a forward with targets: the probabilities, until the
// backward turns them into gradients).
std::vector<float> gpt_cuda_logits(const GptCuda& g);
// The per-token cache [N, stride] of site k from the last forward.
std::vector<float> gpt_cuda_site_cache(const GptCuda& g, int k);
// SPEC §6 diagnostics of the last forward, as gpt_diagnostics (mhc/diag.h): the caches (and the
// stream states) are downloaded into a host view of the model and read by the CPU code. With
// recompute, the states inside the blocks are made again in their shared buffer first.
nlohmann::json gpt_cuda_diagnostics(const GptCuda& g);

// Sampling on the GPU (model/sample_cuda.cpp): mhc/sample.h's KV cache and its step, on the device.
struct KVCacheCuda {
    int pos = 0;                                // positions in the cache = position of the next token
    cuda::DeviceBuffer<float> k, v, buf;        // [L, Tmax, C] each; the step's activations
    cuda::DeviceBuffer<int32_t> token;
    float *Xa = nullptr, *Xb = nullptr, *u = nullptr, *ln = nullptr, *mean = nullptr, *rstd = nullptr;
    float *qkv = nullptr, *att = nullptr, *atty = nullptr, *y = nullptr, *fch = nullptr, *fcg = nullptr;
    float *conn_cache = nullptr, *conn_scratch = nullptr, *lnf = nullptr, *lnf_mean = nullptr;
    float *lnf_rstd = nullptr, *hsum = nullptr, *logits = nullptr;
    std::vector<float> host_logits;             // [V], the last step's, downloaded
};
// Sizes the cache for the model (capacity block_size) and empties it.
void kv_cache_cuda_init(KVCacheCuda& kv, const GptCuda& g);
// As gpt_forward_token: feeds one token at position kv.pos and returns the next token's logits [V]
// on the host (valid until the next call). Same errors.
const float* gpt_cuda_forward_token(const GptCuda& g, KVCacheCuda& kv, int32_t token);

}  // namespace mhc
