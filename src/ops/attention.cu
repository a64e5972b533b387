// Causal multi-head self-attention core on the GPU, flash style: the T x T scores never exist in
// memory. Each query's scores are made tile by tile (32 keys, one per lane) with a running max and
// sum (the online softmax), and the backward makes them again from the forward's log-sum-exp: one
// kernel per key block for dK and dV, another per query block for dQ, so every gradient is a sum
// in one fixed order, without atomics (the same bits on every run). fp32 throughout; it equals the
// CPU's attention (which keeps the probabilities) to fp32 rounding. Head sizes up to kMaxHead.
#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda/device.cuh"
#include "ops/attention.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row
constexpr int kWarps = 8;                     // rows (queries or keys) per flash block, one warp each
constexpr int kTile = 32;                     // keys (or queries) per tile: one per lane

// Rows t = 0 .. Tn - 1 of one head's slice of a [B, T, width] tensor: row t starts at base + t·stride.
struct Rows {
    const float* base;
    long stride;
    int Tn, hs;
    // Row t into dst[0 .. hs) by the lanes of one warp (zeros past Tn).
    MHC_DEV void load_row(float* dst, int t, int lane) const {
        for (int c = lane; c < hs; c += 32) dst[c] = t < Tn ? base[t * stride + c] : 0.0f;
    }
};

// The heads of qkv [B, T, 3C]: part 0 (q), 1 (k), 2 (v) of head h in batch row b.
struct Heads {
    const float* qkv;
    int Tn, C, H, hs;
    MHC_DEV Rows rows(int b, int h, int part) const {
        return {qkv + (long)b * Tn * 3 * C + (long)part * C + (long)h * hs, 3L * C, Tn, hs};
    }
    // The same head's rows of a [B, T, C] tensor (the output's gradient).
    MHC_DEV Rows rows_of(const float* out, int b, int h) const {
        return {out + (long)b * Tn * C + (long)h * hs, (long)C, Tn, hs};
    }
};

// Loads rows t0 .. t0 + kTile - 1 (zeros past Tn) into a tile [kTile][HS + 1] with the whole block
// (the +1 puts each lane's row in its own bank when every lane reads its own row).
template <int HS> MHC_DEV void load_tile(float (*tile)[HS + 1], const Rows& src, int t0) {
    for (int e = threadIdx.x; e < kTile * src.hs; e += blockDim.x) {
        const int r = e / src.hs, c = e % src.hs, t = t0 + r;
        tile[r][c] = t < src.Tn ? src.base[t * src.stride + c] : 0.0f;
    }
}

MHC_DEV float dot(const float* a, const float* b, int hs) {
    float s = 0;
    for (int c = 0; c < hs; c++) s += a[c] * b[c];
    return s;
}

// Block (x: queries 8x .. 8x + 7, y: batch row and head). Warp w owns query i; lane l scores key
// j0 + l of each tile; the output's channels c = lane + 32k sit in o[k].
template <int HS>
__global__ void __launch_bounds__(kWarps * 32)
    k_flash_forward(float* out, float* lse, float* ocopy, Heads q, float scale) {
    constexpr int PER = HS / 32;
    __shared__ float Ks[kTile][HS + 1], Vs[kTile][HS + 1], Qw[kWarps][HS];
    const int nq = (q.Tn + kWarps - 1) / kWarps, bh = block_y(nq);  // a flat_grid of nq × B·H
    const int b = bh / q.H, h = bh % q.H, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ib = block_x(nq) * kWarps, i = ib + w, hs = q.hs;
    const Rows Q = q.rows(b, h, 0), K = q.rows(b, h, 1), V = q.rows(b, h, 2);
    Q.load_row(Qw[w], i, lane);
    float m = -INFINITY, l = 0, o[PER];
    for (int k = 0; k < PER; k++) o[k] = 0;
    const int last = imin(ib + kWarps, q.Tn) - 1;  // the block's last query sees keys 0..last
    for (int j0 = 0; j0 <= last; j0 += kTile) {
        __syncthreads();  // the previous tile is read (and, the first time, Qw written)
        load_tile<HS>(Ks, K, j0);
        load_tile<HS>(Vs, V, j0);
        __syncthreads();
        if (i >= q.Tn || j0 > i) continue;  // the whole warp: nothing of this tile is visible to i
        const int j = j0 + lane;
        const float s = j <= i ? dot(Qw[w], Ks[lane], hs) * scale : -INFINITY;
        const float mt = warp_max(s), mn = m > mt ? m : mt;
        const float alpha = expf(m - mn), p = j <= i ? expf(s - mn) : 0.0f;
        l = l * alpha + (float)warp_sum(p);
        m = mn;
        for (int k = 0; k < PER; k++) o[k] *= alpha;
        const int rmax = imin(kTile, i - j0 + 1);
        for (int r = 0; r < rmax; r++) {
            const float pr = __shfl_sync(0xffffffffu, p, r);
            for (int k = 0; k < PER; k++) {
                const int c = lane + 32 * k;
                if (c < hs) o[k] += pr * Vs[r][c];
            }
        }
    }
    if (i >= q.Tn) return;
    const float inv = 1.0f / l;
    float* dst = out + ((long)b * q.Tn + i) * q.C + (long)h * hs;
    float* cp = ocopy + ((long)b * q.Tn + i) * q.C + (long)h * hs;
    for (int k = 0; k < PER; k++) {
        const int c = lane + 32 * k;
        if (c < hs) dst[c] = cp[c] = o[k] * inv;
    }
    if (lane == 0) lse[(long)bh * q.Tn + i] = m + logf(l);
}

// D[b,h,i] = Σ_c dO[b,i,h,c] · O[b,i,h,c], one warp per row (b, h, i).
__global__ void k_flash_rowdot(float* D, const float* dout, const float* o, int B, int Tn, int C, int H) {
    const long r = (long)blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), rows = (long)B * H * Tn;
    const int lane = threadIdx.x & 31, hs = C / H;
    if (r >= rows) return;
    const int i = (int)(r % Tn), h = (int)(r / Tn % H), b = (int)(r / Tn / H);
    const long at = ((long)b * Tn + i) * C + (long)h * hs;
    double s = 0;
    for (int c = lane; c < hs; c += 32) s += (double)dout[at + c] * o[at + c];
    s = warp_sum(s);
    if (lane == 0) D[r] = (float)s;
}

// dK and dV. Block (x: keys 8x .. 8x + 7, y: batch row and head); warp w owns key j; lane l takes
// query i0 + l of each tile of queries i >= the block's first key. Sums over queries in increasing
// order.
template <int HS>
__global__ void __launch_bounds__(kWarps * 32)
    k_flash_backward_kv(float* dqkv, const float* dout, const float* lse, const float* D, Heads q, float scale) {
    constexpr int PER = HS / 32;
    __shared__ float Qs[kTile][HS + 1], dOs[kTile][HS + 1], Kw[kWarps][HS], Vw[kWarps][HS];
    __shared__ float Ls[kTile], Ds[kTile];
    const int nk = (q.Tn + kWarps - 1) / kWarps, bh = block_y(nk);  // a flat_grid of nk × B·H
    const int b = bh / q.H, h = bh % q.H, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int jb = block_x(nk) * kWarps, j = jb + w, hs = q.hs;
    const Rows Q = q.rows(b, h, 0), dO = q.rows_of(dout, b, h);
    q.rows(b, h, 1).load_row(Kw[w], j, lane);
    q.rows(b, h, 2).load_row(Vw[w], j, lane);
    float dk[PER], dv[PER];
    for (int k = 0; k < PER; k++) dk[k] = dv[k] = 0;
    for (int i0 = jb; i0 < q.Tn; i0 += kTile) {
        __syncthreads();
        load_tile<HS>(Qs, Q, i0);
        load_tile<HS>(dOs, dO, i0);
        if (threadIdx.x < kTile) {
            const int t = i0 + threadIdx.x;
            Ls[threadIdx.x] = t < q.Tn ? lse[(long)bh * q.Tn + t] : 0.0f;
            Ds[threadIdx.x] = t < q.Tn ? D[(long)bh * q.Tn + t] : 0.0f;
        }
        __syncthreads();
        if (j >= q.Tn) continue;  // the whole warp
        const int i = i0 + lane;
        float p = 0, ds = 0;
        if (i < q.Tn && i >= j) {
            p = expf(dot(Qs[lane], Kw[w], hs) * scale - Ls[lane]);
            ds = p * (dot(dOs[lane], Vw[w], hs) - Ds[lane]);
        }
        const int rmax = imin(kTile, q.Tn - i0);
        for (int r = 0; r < rmax; r++) {
            const float pr = __shfl_sync(0xffffffffu, p, r), dsr = __shfl_sync(0xffffffffu, ds, r);
            for (int k = 0; k < PER; k++) {
                const int c = lane + 32 * k;
                if (c < hs) dv[k] += pr * dOs[r][c], dk[k] += dsr * Qs[r][c];
            }
        }
    }
    if (j >= q.Tn) return;
    float* dst = dqkv + ((long)b * q.Tn + j) * 3 * q.C + (long)h * hs;
    for (int k = 0; k < PER; k++) {
        const int c = lane + 32 * k;
        if (c < hs) dst[q.C + c] = dk[k] * scale, dst[2 * q.C + c] = dv[k];
    }
}

// dQ. Block (x: queries 8x .. 8x + 7, y: batch row and head); warp w owns query i; lane l takes
// key j0 + l of each tile of keys j <= the block's last query. Sums over keys in increasing order.
template <int HS>
__global__ void __launch_bounds__(kWarps * 32)
    k_flash_backward_q(float* dqkv, const float* dout, const float* lse, const float* D, Heads q, float scale) {
    constexpr int PER = HS / 32;
    __shared__ float Ks[kTile][HS + 1], Vs[kTile][HS + 1], Qw[kWarps][HS], dOw[kWarps][HS];
    const int nq = (q.Tn + kWarps - 1) / kWarps, bh = block_y(nq);  // a flat_grid of nq × B·H
    const int b = bh / q.H, h = bh % q.H, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ib = block_x(nq) * kWarps, i = ib + w, hs = q.hs;
    const Rows K = q.rows(b, h, 1), V = q.rows(b, h, 2);
    q.rows(b, h, 0).load_row(Qw[w], i, lane);
    q.rows_of(dout, b, h).load_row(dOw[w], i, lane);
    const float Li = i < q.Tn ? lse[(long)bh * q.Tn + i] : 0.0f;
    const float Di = i < q.Tn ? D[(long)bh * q.Tn + i] : 0.0f;
    float dq[PER];
    for (int k = 0; k < PER; k++) dq[k] = 0;
    const int last = imin(ib + kWarps, q.Tn) - 1;
    for (int j0 = 0; j0 <= last; j0 += kTile) {
        __syncthreads();
        load_tile<HS>(Ks, K, j0);
        load_tile<HS>(Vs, V, j0);
        __syncthreads();
        if (i >= q.Tn || j0 > i) continue;
        const int j = j0 + lane;
        float ds = 0;
        if (j <= i) {
            const float p = expf(dot(Qw[w], Ks[lane], hs) * scale - Li);
            ds = p * (dot(dOw[w], Vs[lane], hs) - Di);
        }
        const int rmax = imin(kTile, i - j0 + 1);
        for (int r = 0; r < rmax; r++) {
            const float dsr = __shfl_sync(0xffffffffu, ds, r);
            for (int k = 0; k < PER; k++) {
                const int c = lane + 32 * k;
                if (c < hs) dq[k] += dsr * Ks[r][c];
            }
        }
    }
    if (i >= q.Tn) return;
    float* dst = dqkv + ((long)b * q.Tn + i) * 3 * q.C + (long)h * hs;
    for (int k = 0; k < PER; k++) {
        const int c = lane + 32 * k;
        if (c < hs) dst[c] = dq[k] * scale;
    }
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

void require_head_size(int C, int H) {
    if (H < 1 || C % H != 0 || C / H > kMaxHead)
        throw std::invalid_argument("the GPU's attention takes head sizes (n_embd / n_head) up to " +
                                    std::to_string(kMaxHead) + ", not " + std::to_string(C) + " / " +
                                    std::to_string(H));
}

long attention_record_size(int B, int Tn, int C, int H) { return (long)B * H * Tn + (long)B * Tn * C; }
long attention_scratch_size(int B, int Tn, int H) { return (long)B * H * Tn; }

void attention_forward(float* out, float* att, const float* qkv, int B, int Tn, int C, int H) {
    require_head_size(C, H);
    if (B <= 0 || Tn <= 0) return;
    const int hs = C / H;
    const float scale = (float)(1.0 / std::sqrt((double)hs));
    const unsigned grid = flat_grid((Tn + kWarps - 1) / kWarps, (long)B * H, "attention");
    float *lse = att, *ocopy = att + (long)B * H * Tn;
    MHC_HEAD_DISPATCH(k_flash_forward, hs, grid, kWarps * 32, out, lse, ocopy, Heads{qkv, Tn, C, H, hs}, scale);
}

void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att, int B,
                        int Tn, int C, int H) {
    require_head_size(C, H);
    if (B <= 0 || Tn <= 0) return;
    const int hs = C / H;
    const float scale = (float)(1.0 / std::sqrt((double)hs));
    const float *lse = att, *ocopy = att + (long)B * H * Tn;
    float* D = datt;
    attention_rowdot(D, dout, ocopy, B, Tn, C, H);
    const unsigned grid = flat_grid((Tn + kWarps - 1) / kWarps, (long)B * H, "attention");
    const Heads heads{qkv, Tn, C, H, hs};
    MHC_HEAD_DISPATCH(k_flash_backward_kv, hs, grid, kWarps * 32, dqkv, dout, lse, D, heads, scale);
    MHC_HEAD_DISPATCH(k_flash_backward_q, hs, grid, kWarps * 32, dqkv, dout, lse, D, heads, scale);
}

void attention_rowdot(float* D, const float* dout, const float* o, int B, int Tn, int C, int H) {
    MHC_LAUNCH(k_flash_rowdot, row_blocks((long)B * H * Tn), kThreads, D, dout, o, B, Tn, C, H);
}

void attention_cached_forward(float* out, float* att, const float* qkv, float* Kc, float* Vc, int pos, int C, int H,
                              int Tmax) {
    copy_on_device(Kc + (long)pos * C, qkv + C, C * sizeof(float));
    copy_on_device(Vc + (long)pos * C, qkv + 2 * C, C * sizeof(float));
    const float scale = (float)(1.0 / std::sqrt((double)(C / H)));
    MHC_LAUNCH(k_cached_attention, H, 32, out, att, qkv, Kc, Vc, pos, C, H, Tmax, scale);
}

}  // namespace mhc::cuda
