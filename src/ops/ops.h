// The transformer's ops (SPEC §3), each a forward/backward pair of plain functions over flat
// row-major buffers. T is float (training) or double (gradient checks). In every backward the
// comment says which outputs are overwritten (=) and which accumulate (+=).
#pragma once
#include <cstdint>

namespace mhc {

// Embedding copied into all n streams: X[b,t,s,:] = wte[idx[b,t]] + wpe[t].   X [B*T, n, C]
template <typename T>
void encoder_forward(T* X, const int32_t* idx, const T* wte, const T* wpe, int B, int Tn, int C, int n);
// dwte += , dwpe += (sum over the streams of dX)
template <typename T>
void encoder_backward(T* dwte, T* dwpe, const T* dX, const int32_t* idx, int B, int Tn, int C, int n);

// LayerNorm over the last dim, eps 1e-5. in, out [N, C]; mean, rstd [N]; bias may be null.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* w, const T* b, int N, int C);
// din = (overwritten), dw += , db += (db may be null)
template <typename T>
void layernorm_backward(T* din, T* dw, T* db, const T* dout, const T* in, const T* w, const T* mean,
                        const T* rstd, int N, int C);

// Linear layer, weights stored (out, in) as PyTorch does: out [N, OC] = in [N, IC] · Wᵀ + bias.
template <typename T>
void matmul_forward(T* out, const T* in, const T* W, const T* bias, int N, int IC, int OC);
// din = , dW += , dbias += (dbias may be null)
template <typename T>
void matmul_backward(T* din, T* dW, T* dbias, const T* dout, const T* in, const T* W, int N, int IC,
                     int OC);

// Exact GELU: x · Φ(x).   in, out [N]. Double: libm's erf; float: a vectorised Φ (ops/vmath.h) within
// 3e-7·max(1, |x|) of it (tests/test_ops.cpp, OpsFloat).
template <typename T> void gelu_forward(T* out, const T* in, long N);
// din =
template <typename T> void gelu_backward(T* din, const T* in, const T* dout, long N);

// Causal multi-head self-attention core (before c_proj). qkv [B, T, 3C] holds q | k | v, heads as
// contiguous chunks of C/H; out [B, T, C] (heads concatenated); att [B, H, T, T] keeps the
// probabilities for the backward. Computed in query blocks of kAttBlock rows, each against its keys
// [0, block end) only: in row t, entries above the diagonal are written 0 up to the end of t's
// block and never touched beyond it (they stay as the caller left them; nothing reads them).
inline constexpr int kAttBlock = 64;
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int C, int H);
// dqkv = ; datt is scratch [B, H, T, T] (written in the same blocks as att)
template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, int B, int Tn,
                        int C, int H);

// The attention core of one new position over a KV cache (inference): writes its key and value
// (qkv [3C], q | k | v) into row pos of Kc, Vc [Tmax, C], then attends its query over rows 0..pos in
// attention_forward's order of operations (scores, scale, max-shifted exp, 1/z), so the two agree to
// rounding. out [C], heads concatenated; att [H, Tmax] scratch (the probabilities).
template <typename T>
void attention_cached_forward(T* out, T* att, const T* qkv, T* Kc, T* Vc, int pos, int C, int H, int Tmax);

// Sum of the n streams: out[t,:] = Σ_s X[t,s,:] in stream order.   X [N, n, C], out [N, C]
template <typename T> void stream_sum_forward(T* out, const T* X, int N, int n, int C);
// dX[t,s,:] = dout[t,:] for every stream (overwritten)
template <typename T> void stream_sum_backward(T* dX, const T* dout, int N, int n, int C);

// Softmax cross-entropy, fused. logits [N, V] are replaced by the probabilities; losses [N].
// Returns the mean loss. Targets must be in [0, V).
template <typename T>
double crossentropy_forward(T* probs_inout, T* losses, const int32_t* targets, int N, int V);
// dlogits = (probs - onehot) · scale, written over the probabilities (scale: 1/N for a mean loss).
template <typename T>
void crossentropy_backward(T* probs_inout, const int32_t* targets, int N, int V, double scale);

}  // namespace mhc
