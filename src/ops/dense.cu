// LayerNorm, linear layers (cuBLAS) and exact GELU on the GPU: the CPU ops of ops/dense.cpp with
// their order of operations (statistics and parameter-gradient sums in double, the rest in fp32).
#include <algorithm>
#include <type_traits>

#include "cuda/device.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;  // row kernels: one warp per row

// One warp per row: mean and variance in double, then the normalised row. TI: the input's storage
// (bf16: dtype bf16's streams, read as their fp32 values); TO: the output's (bf16: a linear layer's
// bf16 input, each value the fp32 one rounded once).
template <typename TO, typename TI>
__global__ void k_layernorm_forward(TO* out, float* mean, float* rstd, const TI* in, const float* w, const float* b,
                                    int N, int C) {
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;  // the whole warp
    const TI* x = in + (long)row * C;
    double m = 0, v = 0;
    for (int c = lane; c < C; c += 32) m += (double)as_float(x[c]);
    m = warp_sum(m) / C;
    for (int c = lane; c < C; c += 32) v += ((double)as_float(x[c]) - m) * ((double)as_float(x[c]) - m);
    v = warp_sum(v);
    const float rs = (float)(1.0 / sqrt(v / C + 1e-5)), mu = (float)m;
    TO* o = out + (long)row * C;
    for (int c = lane; c < C; c += 32) put(o[c], (as_float(x[c]) - mu) * rs * w[c] + (b ? b[c] : 0.0f));
    if (lane == 0) mean[row] = mu, rstd[row] = rs;
}

// colsum() terms and sinks.
struct Entry {  // a[r, c]
    const float* a;
    int C;
    MHC_DEV double operator()(int r, int c) const { return (double)a[(long)r * C + c]; }
};
struct AddTo {  // out[c] += the column's sum, rounded once
    float* out;
    MHC_DEV void operator()(int c, double s) const { out[c] += (float)s; }
};

template <typename T> struct BroadcastRows {  // out[i, o] = bias[o]
    T* out;
    const float* bias;
    int OC;
    MHC_DEV void operator()(long i) const { put(out[i], bias[i % OC]); }
};

// Φ(x) = erfc(-x/√2)/2 keeps its relative accuracy in the lower tail.
MHC_DEV double normal_cdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }

// From fp32 input the CPU's double arithmetic; from bf16 input (dtype bf16) fp32 arithmetic
// (erfcf, expf: within a few ulp, far below bf16's rounding of what is kept): in double the two
// GELUs of a step are some 30 G FP64 operations at GPT-2 small's shape (batch 8 x 1024).
MHC_DEV float normal_cdf_f(float x) { return 0.5f * erfcf(-x * 0.70710678f); }
template <typename TI, typename TO> struct GeluForward {
    TO* out;
    const TI* in;
    MHC_DEV void operator()(long i) const {
        if constexpr (std::is_same_v<TI, bf16>) {
            const float x = as_float(in[i]);
            put(out[i], x * normal_cdf_f(x));
        } else {
            const double x = as_float(in[i]);
            put(out[i], (float)(x * normal_cdf(x)));
        }
    }
};
template <typename TI, typename TD> struct GeluBackward {  // d/dx [x Φ(x)] = Φ(x) + x φ(x)
    TD* din;
    const TI* in;
    const float* dout;
    MHC_DEV void operator()(long i) const {
        if constexpr (std::is_same_v<TI, bf16>) {
            const float x = as_float(in[i]);
            put(din[i], dout[i] * (normal_cdf_f(x) + x * (expf(-0.5f * x * x) * 0.39894228f)));
        } else {
            const double x = as_float(in[i]);
            const double pdf = exp(-0.5 * x * x) * 0.3989422804014327;
            put(din[i], (float)((double)dout[i] * (normal_cdf(x) + x * pdf)));
        }
    }
};

template <typename TO, typename TI>
void layernorm_forward_of(TO* out, float* mean, float* rstd, const TI* in, const float* w, const float* b, int N,
                          int C) {
    if (N <= 0) return;
    MHC_LAUNCH((k_layernorm_forward<TO, TI>), (N + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, out, mean, rstd, in,
               w, b, N, C);
}

// LayerNorm's backward, din = rstd (g - mean(g) - xhat mean(g xhat)) with g = dout w, with the sums
// over rows of its weight's and bias's gradient terms (dout xhat in double, dout), in one pass over
// dout and the input: block (x: up to 1024 columns, y: colsum's chunk of kRowChunk rows). Its warps
// make each row's two means first (double, each lane's columns in order, then the warp's tree);
// then each thread takes a column down the chunk's rows in order: din and the chunk's two sums,
// which colsum_done adds in chunk order. Measured on the emulation when it replaced a row kernel
// and two colsum passes (2026-12-01): the same bits in every CudaOps, CudaGpt and CudaBf16Model
// check.
template <typename TD, typename TI>
__global__ void __launch_bounds__(1024) k_layernorm_backward_sums(TD* din, const float* dout, const TI* in, const float* w, const float* mean,
                                          const float* rstd, int N, int C, double* part_w, double* part_b) {
    __shared__ float gms[kRowChunk], gxs[kRowChunk];
    const int nx = (C + blockDim.x - 1) / blockDim.x, chunk = block_y(nx);  // a flat_grid
    const int r0 = chunk * kRowChunk, rows = imin(kRowChunk, N - r0);
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int rr = threadIdx.x >> 5; rr < rows; rr += warps) {
        const long row = r0 + rr;
        const TI* x = in + row * C;
        const float* g = dout + row * C;
        const double md = mean[row], rd = rstd[row];
        double gm = 0, gx = 0;
        for (int c = lane; c < C; c += 32) {
            const double xh = ((double)as_float(x[c]) - md) * rd;
            gm += (double)g[c] * (double)w[c];
            gx += (double)g[c] * (double)w[c] * xh;
        }
        const float gmf = (float)(warp_sum(gm) / C), gxf = (float)(warp_sum(gx) / C);
        if (lane == 0) gms[rr] = gmf, gxs[rr] = gxf;
    }
    __syncthreads();
    const int c = block_x(nx) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float wc = w[c];
    double aw = 0, ab = 0;
    for (int rr = 0; rr < rows; rr++) {
        const long row = r0 + rr, at = row * C + c;
        const float mu = mean[row], rs = rstd[row], g = dout[at], xv = as_float(in[at]);
        const float xh = (xv - mu) * rs;
        put(din[at], rs * (g * wc - gms[rr] - xh * gxs[rr]));
        aw += (double)g * ((double)xv - (double)mean[row]) * (double)rstd[row];
        ab += (double)g;
    }
    part_w[(long)chunk * C + c] = aw;
    if (part_b) part_b[(long)chunk * C + c] = ab;
}

template <typename TD, typename TI>
void layernorm_backward_of(TD* din, float* dw, float* db, const float* dout, const TI* in, const float* w,
                           const float* mean, const float* rstd, int N, int C) {
    if (N <= 0) return;
    const int nch = (N + kRowChunk - 1) / kRowChunk, threads = std::min(1024, (C + 31) / 32 * 32);
    double* part = workspace((size_t)2 * nch * C);
    MHC_LAUNCH((k_layernorm_backward_sums<TD, TI>), flat_grid((C + threads - 1) / threads, nch, "layernorm_backward"),
               threads, din, dout, in, w, mean, rstd, N, C, part, db ? part + (long)nch * C : nullptr);
    colsum_done(C, nch, part, AddTo{dw});
    if (db) colsum_done(C, nch, part + (long)nch * C, AddTo{db});
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* w, const float* b, int N,
                       int C) {
    layernorm_forward_of(out, mean, rstd, in, w, b, N, C);
}
void layernorm_forward(float* out, float* mean, float* rstd, const bf16* in, const float* w, const float* b, int N,
                       int C) {
    layernorm_forward_of(out, mean, rstd, in, w, b, N, C);
}
void layernorm_forward(bf16* out, float* mean, float* rstd, const float* in, const float* w, const float* b, int N,
                       int C) {
    layernorm_forward_of(out, mean, rstd, in, w, b, N, C);
}
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* in, const float* w, const float* b, int N,
                       int C) {
    layernorm_forward_of(out, mean, rstd, in, w, b, N, C);
}
void layernorm_backward(float* din, float* dw, float* db, const float* dout, const float* in, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
    layernorm_backward_of(din, dw, db, dout, in, w, mean, rstd, N, C);
}
void layernorm_backward(bf16* din, float* dw, float* db, const float* dout, const bf16* in, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
    layernorm_backward_of(din, dw, db, dout, in, w, mean, rstd, N, C);
}
void layernorm_backward(float* din, float* dw, float* db, const float* dout, const bf16* in, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
    layernorm_backward_of(din, dw, db, dout, in, w, mean, rstd, N, C);
}

void matmul_forward(float* out, const float* in, const float* W, const float* bias, int N, int IC, int OC) {
    if (N <= 0) return;
    if (bias) each((long)N * OC, BroadcastRows<float>{out, bias, OC});
    gemm(false, true, N, OC, IC, 1.0f, in, IC, W, IC, bias ? 1.0f : 0.0f, out, OC);
}

void matmul_backward(float* din, float* dW, float* dbias, const float* dout, const float* in, const float* W, int N,
                     int IC, int OC) {
    if (N <= 0) return;
    gemm(false, false, N, IC, OC, 1.0f, dout, OC, W, IC, 0.0f, din, IC);  // din = dout · W
    gemm(true, false, OC, IC, N, 1.0f, dout, OC, in, IC, 1.0f, dW, IC);   // dW += doutᵀ · in
    if (dbias) colsum(N, OC, Entry{dout, OC}, AddTo{dbias});
}

namespace {
struct ToBf16 {
    bf16* dst;
    const float* src;
    MHC_DEV void operator()(long i) const { dst[i] = __float2bfloat16(src[i]); }
};
}  // namespace

void to_bf16(bf16* dst, const float* src, long n) { each(n, ToBf16{dst, src}); }

void matmul_forward_bf16(float* out, bf16* in16, const float* in, const bf16* W16, const float* bias, int N, int IC,
                         int OC) {
    if (N <= 0) return;
    if (in) to_bf16(in16, in, (long)N * IC);
    if (bias) each((long)N * OC, BroadcastRows<float>{out, bias, OC});
    gemm_bf16(false, true, N, OC, IC, 1.0f, in16, IC, W16, IC, bias ? 1.0f : 0.0f, out, OC);
}

void matmul_forward_to16(bf16* out16, bf16* in16, const float* in, const bf16* W16, const float* bias, int N, int IC,
                         int OC) {
    if (N <= 0) return;
    if (in) to_bf16(in16, in, (long)N * IC);
    if (bias) each((long)N * OC, BroadcastRows<bf16>{out16, bias, OC});
    gemm_bf16_to16(false, true, N, OC, IC, in16, IC, W16, IC, bias ? 1.0f : 0.0f, out16, OC);
}

void matmul_backward_from16(float* din, float* dW, const bf16* dout16, const bf16* in16, const bf16* W16, int N,
                            int IC, int OC) {
    if (N <= 0) return;
    gemm_bf16(false, false, N, IC, OC, 1.0f, dout16, OC, W16, IC, 0.0f, din, IC);  // din = dout · W
    gemm_bf16(true, false, OC, IC, N, 1.0f, dout16, OC, in16, IC, 1.0f, dW, IC);   // dW += doutᵀ · in
}

void matmul_backward_bf16(float* din, float* dW, float* dbias, bf16* dout16, const float* dout, const bf16* in16,
                          const bf16* W16, int N, int IC, int OC) {
    if (N <= 0) return;
    to_bf16(dout16, dout, (long)N * OC);
    matmul_backward_from16(din, dW, dout16, in16, W16, N, IC, OC);
    if (dbias) colsum(N, OC, Entry{dout, OC}, AddTo{dbias});
}

void gelu_forward(float* out, const float* in, long N) { each(N, GeluForward<float, float>{out, in}); }
void gelu_forward_bf16(bf16* out16, const bf16* in16, long N) { each(N, GeluForward<bf16, bf16>{out16, in16}); }

void gelu_backward(float* din, const float* in, const float* dout, long N) {
    each(N, GeluBackward<float, float>{din, in, dout});
}
void gelu_backward_from16(float* din, const bf16* in16, const float* dout, long N) {
    each(N, GeluBackward<bf16, float>{din, in16, dout});
}
void gelu_backward_from16(bf16* din16, const bf16* in16, const float* dout, long N) {
    each(N, GeluBackward<bf16, bf16>{din16, in16, dout});
}

}  // namespace mhc::cuda
