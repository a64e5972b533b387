// Causal multi-head self-attention core on the GPU, as ops/attention.cpp computes it: the full
// T x T scores by cuBLAS (strided over the heads, one call per batch row), the causal softmax in a
// kernel (max-shifted exp, the sum in double, one 1/z), P·V by cuBLAS. The products above the
// diagonal are computed and then zeroed (the CPU skips them); every entry of att is written.
#include <cmath>

#include "cuda/device.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row of scores

// Row r of [B*H*T, T] is query t = r % T: softmax over j <= t, zeros beyond.
__global__ void k_causal_softmax(float* att, long rows, int Tn) {
    const long r = (long)blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;  // the whole warp
    const int t = (int)(r % Tn);
    float* p = att + r * Tn;
    float m = -INFINITY;
    for (int j = lane; j <= t; j += 32) m = p[j] > m ? p[j] : m;
    m = warp_max(m);
    double z = 0;
    for (int j = lane; j <= t; j += 32) {
        const float e = (float)exp((double)(p[j] - m));
        p[j] = e;
        z += e;
    }
    const float inv = (float)(1.0 / warp_sum(z));
    for (int j = lane; j <= t; j += 32) p[j] *= inv;
    for (int j = t + 1 + lane; j < Tn; j += 32) p[j] = 0.0f;
}

// dS = P ⊙ (dP - <dP, P>_row) in place over dP; 0 above the diagonal, where P is 0.
__global__ void k_causal_softmax_backward(float* datt, const float* att, long rows, int Tn) {
    const long r = (long)blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int t = (int)(r % Tn);
    float* d = datt + r * Tn;
    const float* p = att + r * Tn;
    double dt = 0;
    for (int j = lane; j <= t; j += 32) dt += (double)d[j] * (double)p[j];
    const float dtf = (float)warp_sum(dt);
    for (int j = lane; j < Tn; j += 32) d[j] = p[j] * (d[j] - dtf);
}

unsigned row_blocks(long rows) { return (unsigned)((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

// One warp per head h (block h): the new query against the cached keys 0..pos, as the CPU's
// attention_cached_forward (scores in fp32, max of the scaled scores, exp, z in double, one 1/z).
__global__ void k_cached_attention(float* out, float* att, const float* qkv, const float* Kc, const float* Vc,
                                   int pos, int C, int H, int Tmax, float scale) {
    const int h = blockIdx.x, lane = threadIdx.x, hs = C / H;
    const float* qh = qkv + h * hs;
    float* p = att + (long)h * Tmax;
    float m = -INFINITY;
    for (int j = lane; j <= pos; j += 32) {
        const float* kj = Kc + (long)j * C + h * hs;
        float s = 0;
        for (int c = 0; c < hs; c++) s += qh[c] * kj[c];
        p[j] = s;
        m = s * scale > m ? s * scale : m;
    }
    m = warp_max(m);
    double z = 0;
    for (int j = lane; j <= pos; j += 32) z += (double)(p[j] = (float)exp((double)(p[j] * scale - m)));
    const float inv = (float)(1.0 / warp_sum(z));
    __syncthreads();  // (the block is one warp) every lane's p[j] written before any lane reads them all
    for (int c = lane; c < hs; c += 32) {
        float o = 0;
        for (int j = 0; j <= pos; j++) o += p[j] * inv * Vc[(long)j * C + h * hs + c];
        out[h * hs + c] = o;
    }
}

}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int B, int Tn, int C, int H) {
    if (B <= 0 || Tn <= 0) return;
    const int hs = C / H, C3 = 3 * C;
    const float scale = (float)(1.0 / std::sqrt((double)hs));
    const long TT = (long)Tn * Tn;
    for (int b = 0; b < B; b++) {  // S = scale·Q Kᵀ, heads strided by hs in qkv
        const float* q = qkv + (long)b * Tn * C3;
        gemm_batched(false, true, Tn, Tn, hs, scale, q, C3, hs, q + C, C3, hs, 0.0f, att + b * H * TT, Tn, TT, H);
    }
    const long rows = (long)B * H * Tn;
    MHC_LAUNCH(k_causal_softmax, row_blocks(rows), kThreads, att, rows, Tn);
    for (int b = 0; b < B; b++) {  // O = P V
        const float* q = qkv + (long)b * Tn * C3;
        gemm_batched(false, false, Tn, hs, Tn, 1.0f, att + b * H * TT, Tn, TT, q + 2 * C, C3, hs, 0.0f,
                     out + (long)b * Tn * C, C, hs, H);
    }
}

void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att, int B,
                        int Tn, int C, int H) {
    if (B <= 0 || Tn <= 0) return;
    const int hs = C / H, C3 = 3 * C;
    const float scale = (float)(1.0 / std::sqrt((double)hs));
    const long TT = (long)Tn * Tn;
    for (int b = 0; b < B; b++) {
        const float* q = qkv + (long)b * Tn * C3;
        float* dq = dqkv + (long)b * Tn * C3;
        const float* dO = dout + (long)b * Tn * C;
        gemm_batched(false, true, Tn, Tn, hs, 1.0f, dO, C, hs, q + 2 * C, C3, hs, 0.0f, datt + b * H * TT, Tn, TT,
                     H);  // dP = dO Vᵀ
        gemm_batched(true, false, Tn, hs, Tn, 1.0f, att + b * H * TT, Tn, TT, dO, C, hs, 0.0f, dq + 2 * C, C3, hs,
                     H);  // dV = Pᵀ dO
    }
    const long rows = (long)B * H * Tn;
    MHC_LAUNCH(k_causal_softmax_backward, row_blocks(rows), kThreads, datt, att, rows, Tn);
    for (int b = 0; b < B; b++) {
        const float* q = qkv + (long)b * Tn * C3;
        float* dq = dqkv + (long)b * Tn * C3;
        gemm_batched(false, false, Tn, hs, Tn, scale, datt + b * H * TT, Tn, TT, q + C, C3, hs, 0.0f, dq, C3, hs,
                     H);  // dQ = scale·dS K
        gemm_batched(true, false, Tn, hs, Tn, scale, datt + b * H * TT, Tn, TT, q, C3, hs, 0.0f, dq + C, C3, hs,
                     H);  // dK = scale·dSᵀ Q
    }
}

void attention_cached_forward(float* out, float* att, const float* qkv, float* Kc, float* Vc, int pos, int C, int H,
                              int Tmax) {
    copy_on_device(Kc + (long)pos * C, qkv + C, C * sizeof(float));
    copy_on_device(Vc + (long)pos * C, qkv + 2 * C, C * sizeof(float));
    const float scale = (float)(1.0 / std::sqrt((double)(C / H)));
    MHC_LAUNCH(k_cached_attention, H, 32, out, att, qkv, Kc, Vc, pos, C, H, Tmax, scale);
}

}  // namespace mhc::cuda
