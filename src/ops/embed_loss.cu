// Token + position embedding into the streams and the fused softmax cross-entropy on the GPU
// (ops/embed_loss.cpp). The embedding's backward is a scatter-add over repeated tokens: each wte
// row is summed by one thread per channel over its positions in increasing order (EncoderIndex),
// the CPU's order, so the sums are the CPU's bit for bit and need no atomics.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "cuda/device.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

template <typename TX> struct EncoderForward {  // X[bt, s, c] = wte[idx[bt], c] + wpe[bt % T, c]
    TX* X;
    const int32_t* idx;
    const float *wte, *wpe;
    int Tn, C, n;
    MHC_DEV void operator()(long i) const {
        const long c = i % C, bt = i / ((long)n * C);
        put(X[i], wte[(long)idx[bt] * C + c] + wpe[(bt % Tn) * C + c]);
    }
};

// The token's gradient summed over its streams, in stream order.
template <typename TG> MHC_DEV float stream_total(const TG* dX, long bt, int n, int C, int c) {
    const TG* g = dX + bt * n * C + c;
    float acc = as_float(g[0]);
    for (int s = 1; s < n; s++) acc += as_float(g[(long)s * C]);
    return acc;
}

// grid (the index's N, channel blocks): block u, for the batch's u-th distinct id, dwte[id, c] += each of its
// positions' gradient, in order; nothing past the last id (its range empty). The grid does not
// depend on the batch's ids, so that a captured step (CUDA graphs) serves every batch.
template <typename TG>
__global__ void k_encoder_backward_wte(float* dwte, const TG* dX, const int32_t* tok, const int32_t* start,
                                       const int32_t* pos, int n, int C) {
    const int u = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C || start[u] == start[u + 1]) return;
    float* de = dwte + (long)tok[u] * C + c;
    float acc = *de;
    for (int k = start[u]; k < start[u + 1]; k++) acc += stream_total(dX, pos[k], n, C, c);
    *de = acc;
}

// grid (positions t, channel blocks): dwpe[t, c] += the gradient at (b, t) for b in order.
template <typename TG>
__global__ void k_encoder_backward_wpe(float* dwpe, const TG* dX, int B, int Tn, int n, int C) {
    const int t = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float* dp = dwpe + (long)t * C + c;
    float acc = *dp;
    for (int b = 0; b < B; b++) acc += stream_total(dX, (long)b * Tn + t, n, C, c);
    *dp = acc;
}

constexpr int kChan = 128;  // channels per block of the embedding backward

// One logit's gradient from its probability p: (p - [target]) · scale, the same arithmetic in the
// fused forward and in the backward (the same bits either way).
MHC_DEV float ce_grad(float p, bool target, double scale) {
    float r = (float)((double)p * scale);
    if (target) r -= (float)scale;
    return r;
}

// One block per row: max, exp and their sum in double, the probabilities, the row's loss. With
// to_grad, the row then holds its gradient, (probs - onehot) · grad_scale, written in the same
// pass with the backward's arithmetic (ce_grad: the same bits as the two passes).
__global__ void k_crossentropy_forward(float* probs, float* losses, const int32_t* targets, int V, bool to_grad,
                                       double grad_scale) {
    __shared__ double shd[32];
    __shared__ float shf[32];
    const int row = blockIdx.x;
    float* x = probs + (long)row * V;
    const float xt = x[targets[row]];  // read before any thread overwrites the row
    float m = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) m = x[v] > m ? x[v] : m;
    m = block_max(m, shf);
    double z = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const float e = (float)exp((double)(x[v] - m));
        x[v] = e;
        z += e;
    }
    z = block_sum(z, shd);
    const double inv = 1.0 / z;
    const int tgt = targets[row];
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const float p = (float)((double)x[v] * inv);
        x[v] = to_grad ? ce_grad(p, v == tgt, grad_scale) : p;
    }
    // loss = log z - (logit_target - m), from the logit itself so it stays finite for tiny probs
    if (threadIdx.x == 0) losses[row] = (float)(log(z) - ((double)xt - (double)m));
}

// dtype bf16's classifier: the same, on logits in bf16. They are read three times (the max, the sum
// of exp, then each probability made again from its logit), so that no rounded exp is read back;
// the probability (or gradient) is rounded to bf16 once, as it is written over its logit. The
// exponentials are fp32 (expf, within 2 ulp: 2^-22 relative, far below the bf16 rounding of what
// is written; the sums stay double): a double exp is about a dozen FP64 operations, and at GPT-2's
// vocabulary the classifier makes two per logit, 1.6 G a step at batch 8 x 1024.
__global__ void k_crossentropy_forward16(bf16* probs, float* losses, const int32_t* targets, int V, bool to_grad,
                                         double grad_scale) {
    __shared__ double shd[32];
    __shared__ float shf[32];
    const int row = blockIdx.x, tgt = targets[row];
    bf16* x = probs + (long)row * V;
    const float xt = __bfloat162float(x[tgt]);  // read before any thread overwrites the row
    float m = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, __bfloat162float(x[v]));
    m = block_max(m, shf);
    double z = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) z += (double)expf(__bfloat162float(x[v]) - m);
    z = block_sum(z, shd);  // (its barrier: every thread's reads above come before any write below)
    const double inv = 1.0 / z;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const float p = (float)((double)expf(__bfloat162float(x[v]) - m) * inv);
        x[v] = __float2bfloat16(to_grad ? ce_grad(p, v == tgt, grad_scale) : p);
    }
    if (threadIdx.x == 0) losses[row] = (float)(log(z) - ((double)xt - (double)m));
}

struct LossTerm {
    const float* losses;
    MHC_DEV double operator()(int r, int) const { return (double)losses[r]; }
};
struct StoreSum {
    double* out;
    MHC_DEV void operator()(int, double s) const { *out = s; }
};
// *acc += (s / N) / div: a training step's mean over micro-batches, in train_step's order.
struct AddMean {
    double* acc;
    int N;
    double div;
    MHC_DEV void operator()(int, double s) const { *acc += s / N / div; }
};

template <typename T> struct CrossEntropyBackward {  // (probs - onehot) · scale
    T* probs;
    const int32_t* targets;
    int V;
    double scale;
    MHC_DEV void operator()(long i) const {
        put(probs[i], ce_grad(as_float(probs[i]), i % V == targets[i / V], scale));
    }
};

// The mean of losses [N], reduced on the device in a fixed order; waits for it.
double mean_loss(const float* losses, int N) {
    static DeviceBuffer<double> total(1);
    colsum(N, 1, LossTerm{losses}, StoreSum{total.data()});
    double t = 0;
    total.download(&t, 1);
    return t / N;
}

}  // namespace

void encoder_forward(float* X, const int32_t* idx, const float* wte, const float* wpe, int B, int Tn, int C, int n) {
    each((long)B * Tn * n * C, EncoderForward<float>{X, idx, wte, wpe, Tn, C, n});
}
void encoder_forward(bf16* X, const int32_t* idx, const float* wte, const float* wpe, int B, int Tn, int C, int n) {
    each((long)B * Tn * n * C, EncoderForward<bf16>{X, idx, wte, wpe, Tn, C, n});
}

void encoder_index_build(EncoderIndex& ix, const int32_t* idx, int N) {
    std::vector<int32_t> pos(N), tok, start;
    std::iota(pos.begin(), pos.end(), 0);
    std::stable_sort(pos.begin(), pos.end(), [&](int32_t a, int32_t b) { return idx[a] < idx[b]; });
    for (int k = 0; k < N; k++)
        if (k == 0 || idx[pos[k]] != idx[pos[k - 1]]) tok.push_back(idx[pos[k]]), start.push_back(k);
    ix.ntok = (int)tok.size();
    start.resize(N + 1, N);  // the ranges past the last id are empty
    tok.resize(N, 0);
    if ((int)ix.pos.size() != N) ix.tok.resize(N), ix.start.resize(N + 1), ix.pos.resize(N);  // once per batch size
    ix.tok.upload(tok.data(), tok.size());
    ix.start.upload(start.data(), start.size());
    ix.pos.upload(pos.data(), pos.size());
}

namespace {
template <typename TG>
void encoder_backward_of(float* dwte, float* dwpe, const TG* dX, const EncoderIndex& ix, int B, int Tn, int C, int n) {
    if (B <= 0 || Tn <= 0 || ix.ntok == 0) return;
    const unsigned cb = (unsigned)((C + kChan - 1) / kChan);
    MHC_LAUNCH(k_encoder_backward_wte<TG>, dim3((unsigned)ix.pos.size(), cb), kChan, dwte, dX, ix.tok.data(), ix.start.data(),
               ix.pos.data(), n, C);
    MHC_LAUNCH(k_encoder_backward_wpe<TG>, dim3(Tn, cb), kChan, dwpe, dX, B, Tn, n, C);
}
}  // namespace

void encoder_backward(float* dwte, float* dwpe, const float* dX, const EncoderIndex& ix, int B, int Tn, int C, int n) {
    encoder_backward_of(dwte, dwpe, dX, ix, B, Tn, C, n);
}
void encoder_backward(float* dwte, float* dwpe, const bf16* dX, const EncoderIndex& ix, int B, int Tn, int C, int n) {
    encoder_backward_of(dwte, dwpe, dX, ix, B, Tn, C, n);
}

double crossentropy_forward(float* probs, float* losses, const int32_t* targets, int N, int V) {
    if (N <= 0) return 0.0;
    MHC_LAUNCH(k_crossentropy_forward, N, kThreads, probs, losses, targets, V, false, 0.0);
    return mean_loss(losses, N);
}
double crossentropy_forward_bf16(bf16* probs, float* losses, const int32_t* targets, int N, int V) {
    if (N <= 0) return 0.0;
    MHC_LAUNCH(k_crossentropy_forward16, N, kThreads, probs, losses, targets, V, false, 0.0);
    return mean_loss(losses, N);
}

void crossentropy_forward_into(float* probs, float* losses, const int32_t* targets, int N, int V, double* loss_acc,
                               double div, double grad_scale) {
    if (N <= 0) return;
    MHC_LAUNCH(k_crossentropy_forward, N, kThreads, probs, losses, targets, V, true, grad_scale);
    colsum(N, 1, LossTerm{losses}, AddMean{loss_acc, N, div});
}
void crossentropy_forward_into_bf16(bf16* probs, float* losses, const int32_t* targets, int N, int V,
                                    double* loss_acc, double div, double grad_scale) {
    if (N <= 0) return;
    MHC_LAUNCH(k_crossentropy_forward16, N, kThreads, probs, losses, targets, V, true, grad_scale);
    colsum(N, 1, LossTerm{losses}, AddMean{loss_acc, N, div});
}

void crossentropy_backward(float* probs, const int32_t* targets, int N, int V, double scale) {
    each((long)N * V, CrossEntropyBackward<float>{probs, targets, V, scale});
}
void crossentropy_backward_bf16(bf16* probs, const int32_t* targets, int N, int V, double scale) {
    each((long)N * V, CrossEntropyBackward<bf16>{probs, targets, V, scale});
}

}  // namespace mhc::cuda
