// The transformer's ops (SPEC §3) on the GPU: the CPU ops of ops/ops.h with the same names,
// signatures and semantics, fp32 only, every pointer a device pointer (cuda/cuda.h). They are the
// CUDA backend's launchers: each queues its kernels and cuBLAS calls on the default stream and
// returns (crossentropy_forward waits, for its mean). In every backward the comment says which
// outputs are overwritten (=) and which accumulate (+=), as on the CPU.
#pragma once
#include <cstdint>

#include "cuda/cuda.h"
#include "mhc/config.h"

namespace mhc::cuda {

// Embedding copied into all n streams: X[b,t,s,:] = wte[idx[b,t]] + wpe[t].   X [B*T, n, C]
void encoder_forward(float* X, const int32_t* idx, const float* wte, const float* wpe, int B, int Tn, int C, int n);
// The same into bf16 streams (dtype bf16): the fp32 sum, rounded.
void encoder_forward(bf16* X, const int32_t* idx, const float* wte, const float* wpe, int B, int Tn, int C, int n);

// The positions of a batch grouped by token id, built on the host from the inputs (the one
// difference from the CPU op's signature): the backward's scatter-add then sums each wte row over
// its positions in increasing order, as the CPU does, without atomics.
struct EncoderIndex {
    int ntok = 0;                    // distinct token ids in the batch
    DeviceBuffer<int32_t> tok;       // [N] the ids, increasing (ntok of them, then zeros)
    DeviceBuffer<int32_t> start;     // [N + 1] where each id's positions begin in pos (then N: empty)
    DeviceBuffer<int32_t> pos;       // [N] positions b*T + t, grouped by id, increasing within an id
};
void encoder_index_build(EncoderIndex& ix, const int32_t* idx_host, int N);
// dwte += , dwpe += (sum over the streams of dX)
void encoder_backward(float* dwte, float* dwpe, const float* dX, const EncoderIndex& ix, int B, int Tn, int C, int n);
// The same from dtype bf16's stream gradient in bf16 (the sums fp32).
void encoder_backward(float* dwte, float* dwpe, const bf16* dX, const EncoderIndex& ix, int B, int Tn, int C, int n);

// LayerNorm over the last dim, eps 1e-5. in, out [N, C]; mean, rstd [N]; bias may be null.
void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* w, const float* b, int N,
                       int C);
// din = (overwritten), dw += , db += (db may be null)
void layernorm_backward(float* din, float* dw, float* db, const float* dout, const float* in, const float* w,
                        const float* mean, const float* rstd, int N, int C);
// The same from an input stored in bf16 (dtype bf16's streams, before ln_f), read as its fp32 values;
// the backward writes din in bf16 (the streams' gradient, stored as the streams), rounded once.
void layernorm_forward(float* out, float* mean, float* rstd, const bf16* in, const float* w, const float* b, int N,
                       int C);
void layernorm_backward(bf16* din, float* dw, float* db, const float* dout, const bf16* in, const float* w,
                        const float* mean, const float* rstd, int N, int C);
// From bf16 input to an fp32 din (a residual site's LayerNorm reading the bf16 stream itself).
void layernorm_backward(float* din, float* dw, float* db, const float* dout, const bf16* in, const float* w,
                        const float* mean, const float* rstd, int N, int C);
// The forward into bf16 (dtype bf16: the next linear layer's bf16 input): each value the fp32
// one rounded once, so the same bits as the fp32 output rounded afterwards.
void layernorm_forward(bf16* out, float* mean, float* rstd, const float* in, const float* w, const float* b, int N,
                       int C);
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* in, const float* w, const float* b, int N,
                       int C);

// Linear layer, weights stored (out, in): out [N, OC] = in [N, IC] · Wᵀ + bias (cuBLAS).
void matmul_forward(float* out, const float* in, const float* W, const float* bias, int N, int IC, int OC);
// din = , dW += , dbias += (dbias may be null)
void matmul_backward(float* din, float* dW, float* dbias, const float* dout, const float* in, const float* W, int N,
                     int IC, int OC);

// bf16 rounding of n values: dst [n] (=) = src [n] rounded to nearest even.
void to_bf16(bf16* dst, const float* src, long n);
// The linear layer with bf16 products and fp32 sums (mixed precision): W16 is the weights' bf16 copy
// [OC, IC]; in16 [N, IC] (=) receives the input's, which the backward can take again. out, the
// bias, and the gradients stay fp32.
void matmul_forward_bf16(float* out, bf16* in16, const float* in, const bf16* W16, const float* bias, int N, int IC,
                         int OC);
// din = , dW += , dbias += (dbias may be null). in16: the forward's bf16 input; dout16 [N, OC] (=)
// scratch for the output gradient's bf16 copy. dbias sums dout in fp32 (double), as the fp32 op.
void matmul_backward_bf16(float* din, float* dW, float* dbias, bf16* dout16, const float* dout, const bf16* in16,
                          const bf16* W16, int N, int IC, int OC);
// The same layer with its output in bf16 (dtype bf16's logits and c_fc): out16 [N, OC] (=), the
// bias (if any) rounded to bf16 on the way; and a backward from an output gradient already in bf16
// (the logits'): din = , dW += . In both forwards a null `in` means in16 holds the input already.
void matmul_forward_to16(bf16* out16, bf16* in16, const float* in, const bf16* W16, const float* bias, int N, int IC,
                         int OC);
void matmul_backward_from16(float* din, float* dW, const bf16* dout16, const bf16* in16, const bf16* W16, int N,
                            int IC, int OC);

// Exact GELU: x · Φ(x), Φ from erfc in double.   in, out [N]
void gelu_forward(float* out, const float* in, long N);
// din =
void gelu_backward(float* din, const float* in, const float* dout, long N);
// The same from and to bf16 (dtype bf16's MLP): out16 (=) from in16; din (=) from in16 and dout.
void gelu_forward_bf16(bf16* out16, const bf16* in16, long N);
void gelu_backward_from16(float* din, const bf16* in16, const float* dout, long N);
// The same into bf16 (the next linear layer's output gradient, dtype bf16 without biases).
void gelu_backward_from16(bf16* din16, const bf16* in16, const float* dout, long N);

// Causal multi-head self-attention core: qkv [B, T, 3C], out [B, T, C] (=), as the CPU op, but the
// T x T probabilities are never stored (flash style, attention.cu). att is the record the backward
// needs, [attention_record_size] (=): the log-sum-exp of each query's scaled scores [B, H, T], then
// a copy of out [B, T, C]. Head sizes C / H up to kMaxHead (else std::invalid_argument).
constexpr int kMaxHead = kCudaMaxHeadSize;
void attention_forward(float* out, float* att, const float* qkv, int B, int Tn, int C, int H);
long attention_record_size(int B, int Tn, int C, int H);
// dqkv = ; datt: scratch [attention_scratch_size]; att: the forward's record.
void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att, int B,
                        int Tn, int C, int H);
long attention_scratch_size(int B, int Tn, int H);
// dtype bf16's attention (attention_bf16.cu): the same contract, the same record, with the products
// on the tensor cores (bf16 operands, fp32 sums); the softmax and its statistics stay fp32. heads16
// [attention_heads16_size] (=): the forward's bf16 copy of q, k and v, which its backward reads in
// place of qkv (so qkv need not outlive the forward); dout16 [attention_dout16_size]: scratch.
void attention_forward_bf16(float* out, float* att, bf16* heads16, const float* qkv, int B, int Tn, int C, int H);
// The same with out in bf16 (the next linear layer's bf16 input; the record keeps the fp32 output
// for the backward either way): each value the fp32 one rounded once.
void attention_forward_bf16(bf16* out, float* att, bf16* heads16, const float* qkv, int B, int Tn, int C, int H);
void attention_backward_bf16(float* dqkv, float* datt, bf16* dout16, const float* dout, const bf16* heads16,
                             const float* att, int B, int Tn, int C, int H);
// The same with dqkv in bf16 (c_attn's output gradient, dtype bf16 without biases): each value the
// fp32 one rounded once.
void attention_backward_bf16(bf16* dqkv, float* datt, bf16* dout16, const float* dout, const bf16* heads16,
                             const float* att, int B, int Tn, int C, int H);
long attention_heads16_size(int B, int Tn, int C, int H);
long attention_dout16_size(int B, int Tn, int C, int H);
// D [B, H, T] (=): each row's Σ_c dout · o over its head's channels (out, o [B, T, C]), in double.
void attention_rowdot(float* D, const float* dout, const float* o, int B, int Tn, int C, int H);
// Throws std::invalid_argument (one line) unless C / H is a head size the GPU's attention takes.
void require_head_size(int C, int H);
// One new position over a KV cache (sampling), as the CPU op: its key and value (from qkv [3C]) into
// Kc, Vc [Tmax, C] at row pos, then out [C] (overwritten) attends over rows 0..pos; att [H, Tmax]
// holds the probabilities in its first pos + 1 columns.
void attention_cached_forward(float* out, float* att, const float* qkv, float* Kc, float* Vc, int pos, int C, int H,
                              int Tmax);

// Sum of the n streams: out[t,:] = Σ_s X[t,s,:] in stream order.   X [N, n, C], out [N, C]
void stream_sum_forward(float* out, const float* X, int N, int n, int C);
// dX[t,s,:] = dout[t,:] for every stream (overwritten)
void stream_sum_backward(float* dX, const float* dout, int N, int n, int C);

// Softmax cross-entropy, fused: logits [N, V] replaced by the probabilities; losses [N]; targets
// (device) in [0, V). Returns the mean loss, reduced on the device in a fixed order (waits for it).
double crossentropy_forward(float* probs_inout, float* losses, const int32_t* targets, int N, int V);
// The classifier of a training step, fused: *loss_acc (device) += mean loss / div without waiting
// (the loss stays on the device until the step's end, train/engine_cuda.cpp), and the logits are
// replaced by their gradient at once, crossentropy_backward's (probs - onehot) · grad_scale, in
// the same pass: no second pass over the fp32 logits.
void crossentropy_forward_into(float* logits_inout, float* losses, const int32_t* targets, int N, int V,
                               double* loss_acc, double div, double grad_scale);
// dlogits = (probs - onehot) · scale, written over the probabilities (scale: 1/N for a mean loss).
void crossentropy_backward(float* probs_inout, const int32_t* targets, int N, int V, double scale);
// The three on logits in bf16 (dtype bf16's LM head): the softmax and the loss in fp32 and double
// as above, each probability or gradient rounded to bf16 as it is written over its logit.
double crossentropy_forward_bf16(bf16* probs_inout, float* losses, const int32_t* targets, int N, int V);
void crossentropy_forward_into_bf16(bf16* logits_inout, float* losses, const int32_t* targets, int N, int V,
                                    double* loss_acc, double div, double grad_scale);
void crossentropy_backward_bf16(bf16* probs_inout, const int32_t* targets, int N, int V, double scale);

}  // namespace mhc::cuda
