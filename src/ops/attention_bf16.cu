// Causal attention on the tensor cores (dtype bf16): the flash scheme of attention.cu with the two
// products of each tile (scores Q·Kᵀ and P·V, and the backward's four) as warp matrix products of
// bf16 operands with fp32 sums (wmma, 16 x 16 x 16 tiles). The softmax, its running max and sum,
// the log-sum-exp and the outputs stay fp32; P and dS are rounded to bf16 to enter the products.
// Q, K, V and dO are first packed as bf16, one [Tp, HS] matrix per (batch row, head): T rounded up
// to 64 rows and the head size to HS in {32, 64, 128} with zeros, so that every tile is whole and
// aligned (zero channels add nothing to a dot product; zero rows are masked or never written). The
// forward's packed Q, K, V are the backward's: the caller keeps them, not the fp32 qkv.
// Every warp owns 16 rows; the block's 4 warps share the other side's tiles (keys, or queries),
// staged once in shared memory. Each gradient is a sum in one fixed order, without atomics, so a run
// repeats bit for bit.
#include <cmath>

#include "cuda/device.cuh"
#include "ops/attention.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

using namespace nvcuda;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAt = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;  // from a column-major tile
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;  // rows of a [.., ld] as columns
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

constexpr int kWarps = 4;           // warps per block, 16 rows each
constexpr int kRows = 16 * kWarps;  // rows per block; T is padded to a multiple of it
constexpr int kTile = 32;           // rows of the other side (keys, or queries) staged per step
// Shared-memory row strides, padded so that the 8 rows a tensor-core load reads at once, and the 16
// rows a column of the lanes' reads spans, fall in distinct banks (unpadded: 8- to 16-way conflicts).
constexpr int kPad = 8;   // bf16 after each staged row of HS
constexpr int kLdP = 24;  // bf16 per column of a [16 x 16] or [16 x 32] column-major P or dS tile

long padded_rows(int Tn) { return (long)(Tn + kRows - 1) / kRows * kRows; }

// The packed heads: q, k, v, dO, each [B·H, Tp, HS] bf16.
struct Pack16 {
    const bf16 *q, *k, *v;
    bf16* dout;
    int Tn, Tp, C, H, hs;
};

// dst [B·H, Tp, HS] (=) from columns part·C + h·hs + c of src [B, T, width].
struct PackHeads {
    bf16* dst;
    const float* src;
    int width, part, Tn, Tp, C, H, hs, HS;
    MHC_DEV void operator()(long e) const {
        const int c = (int)(e % HS), t = (int)(e / HS % Tp);
        const long bh = e / HS / Tp;
        const int b = (int)(bh / H), h = (int)(bh % H);
        const float x = t < Tn && c < hs ? src[((long)b * Tn + t) * width + (long)part * C + (long)h * hs + c] : 0.0f;
        dst[e] = __float2bfloat16(x);
    }
};

// kTile rows of a packed head on their way to shared memory: every thread of the block loads its
// share into registers (16 bytes at a time), then stores it into rows HS + kPad apart. A block's
// warps share each tile instead of each reading it from global memory alone. With kAhead, the next
// tile's loads are issued before the current tile's products, so that they are in flight meanwhile;
// not at HS = 128, where the registers it holds would push the kernels past 255 (spills, or half
// the blocks per SM).
template <int HS> struct TileLoad {
    static constexpr bool kAhead = HS <= 64;
    static constexpr int kVec = HS / 8, kPer = kTile * kVec / (kWarps * 32);
    uint4 v[kPer];
    MHC_DEV void load(const bf16* src) {
        for (int k = 0; k < kPer; k++) {
            const int e = threadIdx.x + k * kWarps * 32;
            v[k] = load16(src + (long)(e / kVec) * HS + 8 * (e % kVec));
        }
    }
    MHC_DEV void store(bf16* dst) const {
        for (int k = 0; k < kPer; k++) {
            const int e = threadIdx.x + k * kWarps * 32;
            store16(dst + (e / kVec) * (HS + kPad) + 8 * (e % kVec), v[k]);
        }
    }
};

// S [ncols][16] (fp32, column-major: column c at S + 16c) = A · (rows 0 .. ncols - 1 of X)ᵀ over the
// HS channels: A is 16 rows already loaded (of Q, K, V or dO), X a staged tile (row stride ldx).
// Column-major, so that the lanes' reads down a column (lane l: row l / 2) hit distinct banks.
template <int HS>
MHC_DEV void scores(float* S, const FragA (&af)[HS / 16], const bf16* X, int ldx, int ncols) {
    for (int n = 0; n < ncols / 16; n++) {
        FragC s;
        wmma::fill_fragment(s, 0.0f);
        for (int kk = 0; kk < HS / 16; kk++) {
            FragBt xf;
            wmma::load_matrix_sync(xf, X + 16 * n * ldx + 16 * kk, ldx);
            wmma::mma_sync(s, af[kk], xf, s);
        }
        wmma::store_matrix_sync(S + 16 * 16 * n, s, 16, wmma::mem_col_major);
    }
}

template <int HS> MHC_DEV void load_rows(FragA (&f)[HS / 16], const bf16* rows) {
    for (int kk = 0; kk < HS / 16; kk++) wmma::load_matrix_sync(f[kk], rows + 16 * kk, HS);
}

// Writes an accumulator (rows r0.., channels 16n..) times `scale` into dst: row t at dst + t·stride,
// rows < Tn and channels < hs only. tile: the warp's [16, 16] fp32 scratch.
template <typename TO>
MHC_DEV void write_tile(TO* dst, long stride, const FragC& f, float* tile, int r0, int n, int Tn, int hs, float scale,
                        int lane) {
    __syncwarp();  // the tile's previous contents are read
    wmma::store_matrix_sync(tile, f, 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
        const int r = e / 16, c = 16 * n + e % 16;
        if (r0 + r < Tn && c < hs) put(dst[(long)(r0 + r) * stride + c], tile[e] * scale);
    }
}

// Block (x: rows 64x .., the longest first; y: batch row and head); warp w owns queries q0 .. q0 + 15,
// lane l the query q0 + l / 2, half l % 2 of its keys (scores) and channels 16n + 8 (l % 2) .. + 7
// of each 16 (output). The block stages K and V kTile keys at a time; a warp skips the tiles past
// its last query (and a warp past T every tile) but joins every barrier.
template <int HS, typename TO>
__global__ void __launch_bounds__(kWarps * 32)
    k_attn16_forward(TO* out, float* lse, float* ocopy, Pack16 pk, float scale) {
    constexpr int KK = HS / 16, LD = HS + kPad;
    alignas(32) __shared__ bf16 Ks[kTile][LD], Vs[kTile][LD];
    alignas(32) __shared__ float Ss[kWarps][kTile][16];   // scores, column-major: [key][query]
    alignas(32) __shared__ bf16 Ps[kWarps][kTile][kLdP];  // probabilities, column-major
    alignas(32) __shared__ float Os[kWarps][16][16];      // P·V's 16 channels n, column-major
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, bh = blockIdx.y, Tn = pk.Tn;
    const int qb = (int)(gridDim.x - 1 - blockIdx.x) * kRows, q0 = qb + 16 * w;
    const int r = lane >> 1, half = lane & 1, i = q0 + r;
    const bool active = q0 < Tn;  // the whole warp
    const long head = (long)bh * pk.Tp * HS;
    const bf16 *K = pk.k + head, *V = pk.v + head;
    FragA qf[KK];
    if (active) load_rows<HS>(qf, pk.q + head + (long)q0 * HS);
    float m = -INFINITY, l = 0, o[KK][8];
    for (int n = 0; n < KK; n++)
        for (int c = 0; c < 8; c++) o[n][c] = 0;
    // every tile below holds a key each row sees (j0 <= q0)
    const int last = imin(q0 + 15, Tn - 1), block_last = imin(qb + kRows - 1, Tn - 1);
    TileLoad<HS> kt, vt;
    if (kt.kAhead) kt.load(K), vt.load(V);
    for (int j0 = 0; j0 <= block_last; j0 += kTile) {
        __syncthreads();  // every warp is done with the previous tile
        if (!kt.kAhead) kt.load(K + (long)j0 * HS), vt.load(V + (long)j0 * HS);
        kt.store(&Ks[0][0]), vt.store(&Vs[0][0]);
        __syncthreads();
        if (kt.kAhead && j0 + kTile <= block_last)
            kt.load(K + (long)(j0 + kTile) * HS), vt.load(V + (long)(j0 + kTile) * HS);
        if (!active || j0 > last) continue;
        scores<HS>(&Ss[w][0][0], qf, &Ks[0][0], LD, kTile);
        __syncwarp();
        float s[16], mt = -INFINITY;
        for (int c = 0; c < 16; c++) {
            const int j = j0 + 16 * half + c;
            s[c] = j <= i && j < Tn ? Ss[w][16 * half + c][r] * scale : -INFINITY;
            mt = fmaxf(mt, s[c]);
        }
        const float mn = fmaxf(m, fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1)));
        float psum = 0;
        for (int c = 0; c < 16; c++) {
            const float p = expf(s[c] - mn);
            Ps[w][16 * half + c][r] = __float2bfloat16(p);
            psum += p;
        }
        const float alpha = expf(m - mn);
        l = l * alpha + (psum + __shfl_xor_sync(0xffffffffu, psum, 1));  // the same sum on both lanes
        m = mn;
        __syncwarp();
        FragAt pf[kTile / 16];
        for (int kk = 0; kk < kTile / 16; kk++) wmma::load_matrix_sync(pf[kk], &Ps[w][16 * kk][0], kLdP);
        for (int n = 0; n < KK; n++) {
            FragC pv;
            wmma::fill_fragment(pv, 0.0f);
            for (int kk = 0; kk < kTile / 16; kk++) {
                FragB vf;
                wmma::load_matrix_sync(vf, &Vs[16 * kk][16 * n], LD);
                wmma::mma_sync(pv, pf[kk], vf, pv);
            }
            wmma::store_matrix_sync(&Os[w][0][0], pv, 16, wmma::mem_col_major);
            __syncwarp();
            for (int c = 0; c < 8; c++) o[n][c] = o[n][c] * alpha + Os[w][8 * half + c][r];
            __syncwarp();  // Os is read before the next n overwrites it
        }
    }
    if (i >= Tn) return;
    const int b = bh / pk.H, h = bh % pk.H;
    const long at = ((long)b * Tn + i) * pk.C + (long)h * pk.hs;
    const float inv = 1.0f / l;
    for (int n = 0; n < KK; n++)
        for (int c = 0; c < 8; c++) {
            const int ch = 16 * n + 8 * half + c;
            if (ch < pk.hs) put(out[at + ch], ocopy[at + ch] = o[n][c] * inv);
        }
    if (half == 0) lse[(long)bh * Tn + i] = m + logf(l);
}

// dK and dV. Block (x: keys 64x .., y: batch row and head); warp w owns keys k0 .. k0 + 15 and
// takes the queries i >= k0 in tiles of 16, in increasing order. Lane l handles key k0 + l / 2 and
// queries 8 (l % 2) .. + 7 of each tile's probabilities. The block stages Q, dO and the queries'
// log-sum-exp and D kTile queries at a time, from its first key on.
template <int HS, typename TO>
__global__ void __launch_bounds__(kWarps * 32)
    k_attn16_backward_kv(TO* dqkv, const float* lse, const float* D, Pack16 pk, float scale) {
    constexpr int KK = HS / 16, LD = HS + kPad;
    alignas(32) __shared__ bf16 Qs[kTile][LD], Gs[kTile][LD];  // Q and dO
    alignas(32) __shared__ float Ls[kTile], Dl[kTile];
    alignas(32) __shared__ float St[kWarps][16][16], dPt[kWarps][16][16];  // Sᵀ, dPᵀ column-major: [query][key]
    alignas(32) __shared__ bf16 Pt[kWarps][16][kLdP], dSt[kWarps][16][kLdP];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, bh = blockIdx.y, Tn = pk.Tn;
    const int kb = blockIdx.x * kRows, k0 = kb + 16 * w, r = lane >> 1, c0 = 8 * (lane & 1), j = k0 + r;
    const bool active = k0 < Tn;  // the whole warp
    const long head = (long)bh * pk.Tp * HS;
    const bf16 *Q = pk.q + head, *dO = pk.dout + head;
    FragA kf[KK], vf[KK];
    if (active) load_rows<HS>(kf, pk.k + head + (long)k0 * HS), load_rows<HS>(vf, pk.v + head + (long)k0 * HS);
    FragC dk[KK], dv[KK];
    for (int n = 0; n < KK; n++) wmma::fill_fragment(dk[n], 0.0f), wmma::fill_fragment(dv[n], 0.0f);
    TileLoad<HS> qt, gt;
    if (qt.kAhead) qt.load(Q + (long)kb * HS), gt.load(dO + (long)kb * HS);
    for (int i0 = kb; i0 < Tn; i0 += kTile) {
        __syncthreads();
        if (!qt.kAhead) qt.load(Q + (long)i0 * HS), gt.load(dO + (long)i0 * HS);
        qt.store(&Qs[0][0]), gt.store(&Gs[0][0]);
        if (threadIdx.x < kTile) {
            const int i = i0 + threadIdx.x;
            Ls[threadIdx.x] = i < Tn ? lse[(long)bh * Tn + i] : 0.0f;
            Dl[threadIdx.x] = i < Tn ? D[(long)bh * Tn + i] : 0.0f;
        }
        __syncthreads();
        if (qt.kAhead && i0 + kTile < Tn) qt.load(Q + (long)(i0 + kTile) * HS), gt.load(dO + (long)(i0 + kTile) * HS);
        if (!active) continue;
        for (int sub = 0; sub < kTile / 16; sub++) {
            const int i1 = i0 + 16 * sub;
            if (i1 < k0 || i1 >= Tn) continue;
            scores<HS>(&St[w][0][0], kf, &Qs[16 * sub][0], LD, 16);  // Sᵀ: keys x queries
            scores<HS>(&dPt[w][0][0], vf, &Gs[16 * sub][0], LD, 16);  // dPᵀ = V·dOᵀ
            __syncwarp();
            for (int c = c0; c < c0 + 8; c++) {
                const int i = i1 + c;
                float p = 0, ds = 0;
                if (i < Tn && i >= j) {
                    p = expf(St[w][c][r] * scale - Ls[16 * sub + c]);
                    ds = p * (dPt[w][c][r] - Dl[16 * sub + c]);
                }
                Pt[w][c][r] = __float2bfloat16(p);
                dSt[w][c][r] = __float2bfloat16(ds);
            }
            __syncwarp();
            FragAt pf, dsf;
            wmma::load_matrix_sync(pf, &Pt[w][0][0], kLdP);
            wmma::load_matrix_sync(dsf, &dSt[w][0][0], kLdP);
            for (int n = 0; n < KK; n++) {
                FragB xf;
                wmma::load_matrix_sync(xf, &Gs[16 * sub][16 * n], LD);
                wmma::mma_sync(dv[n], pf, xf, dv[n]);  // dV += Pᵀ·dO
                wmma::load_matrix_sync(xf, &Qs[16 * sub][16 * n], LD);
                wmma::mma_sync(dk[n], dsf, xf, dk[n]);  // dK += dSᵀ·Q (times scale below)
            }
        }
    }
    if (!active) return;
    const int b = bh / pk.H, h = bh % pk.H;
    TO* dst = dqkv + ((long)b * Tn) * 3 * pk.C + (long)h * pk.hs;
    for (int n = 0; n < KK; n++) {
        write_tile(dst + pk.C, 3L * pk.C, dk[n], &St[w][0][0], k0, n, Tn, pk.hs, scale, lane);
        write_tile(dst + 2 * pk.C, 3L * pk.C, dv[n], &St[w][0][0], k0, n, Tn, pk.hs, 1.0f, lane);
    }
}

// dQ. Block (x: queries 64x .., the longest first; y: batch row and head); warp w owns queries
// q0 .. q0 + 15 and takes the keys j <= q0 + 15 in tiles of 16, in increasing order. The block
// stages K and V kTile keys at a time.
template <int HS, typename TO>
__global__ void __launch_bounds__(kWarps * 32)
    k_attn16_backward_q(TO* dqkv, const float* lse, const float* D, Pack16 pk, float scale) {
    constexpr int KK = HS / 16, LD = HS + kPad;
    alignas(32) __shared__ bf16 Ks[kTile][LD], Vs[kTile][LD];
    alignas(32) __shared__ float Sq[kWarps][16][16], dPq[kWarps][16][16];  // column-major: [key][query]
    alignas(32) __shared__ bf16 dSq[kWarps][16][kLdP];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, bh = blockIdx.y, Tn = pk.Tn;
    const int qb = (int)(gridDim.x - 1 - blockIdx.x) * kRows, q0 = qb + 16 * w;
    const int r = lane >> 1, c0 = 8 * (lane & 1), i = q0 + r;
    const bool active = q0 < Tn;  // the whole warp
    const long head = (long)bh * pk.Tp * HS;
    const bf16 *K = pk.k + head, *V = pk.v + head;
    FragA qf[KK], dof[KK];
    if (active) load_rows<HS>(qf, pk.q + head + (long)q0 * HS), load_rows<HS>(dof, pk.dout + head + (long)q0 * HS);
    const float Li = i < Tn ? lse[(long)bh * Tn + i] : 0.0f, Di = i < Tn ? D[(long)bh * Tn + i] : 0.0f;
    FragC dq[KK];
    for (int n = 0; n < KK; n++) wmma::fill_fragment(dq[n], 0.0f);
    const int last = imin(q0 + 15, Tn - 1), block_last = imin(qb + kRows - 1, Tn - 1);
    TileLoad<HS> kt, vt;
    if (kt.kAhead) kt.load(K), vt.load(V);
    for (int j0 = 0; j0 <= block_last; j0 += kTile) {
        __syncthreads();
        if (!kt.kAhead) kt.load(K + (long)j0 * HS), vt.load(V + (long)j0 * HS);
        kt.store(&Ks[0][0]), vt.store(&Vs[0][0]);
        __syncthreads();
        if (kt.kAhead && j0 + kTile <= block_last)
            kt.load(K + (long)(j0 + kTile) * HS), vt.load(V + (long)(j0 + kTile) * HS);
        if (!active) continue;
        for (int sub = 0; sub < kTile / 16; sub++) {
            const int j1 = j0 + 16 * sub;
            if (j1 > last) break;
            scores<HS>(&Sq[w][0][0], qf, &Ks[16 * sub][0], LD, 16);
            scores<HS>(&dPq[w][0][0], dof, &Vs[16 * sub][0], LD, 16);  // dP = dO·Vᵀ
            __syncwarp();
            for (int c = c0; c < c0 + 8; c++) {
                const int jj = j1 + c;
                float ds = 0;
                if (i < Tn && jj <= i) ds = expf(Sq[w][c][r] * scale - Li) * (dPq[w][c][r] - Di);
                dSq[w][c][r] = __float2bfloat16(ds);
            }
            __syncwarp();
            FragAt dsf;
            wmma::load_matrix_sync(dsf, &dSq[w][0][0], kLdP);
            for (int n = 0; n < KK; n++) {
                FragB kf;
                wmma::load_matrix_sync(kf, &Ks[16 * sub][16 * n], LD);
                wmma::mma_sync(dq[n], dsf, kf, dq[n]);  // dQ += dS·K (times scale below)
            }
        }
    }
    if (!active) return;
    const int b = bh / pk.H, h = bh % pk.H;
    TO* dst = dqkv + ((long)b * Tn) * 3 * pk.C + (long)h * pk.hs;
    for (int n = 0; n < KK; n++) write_tile(dst, 3L * pk.C, dq[n], &Sq[w][0][0], q0, n, Tn, pk.hs, scale, lane);
}

// One head's pack [B·H, Tp, HS] for each of q, k, v (in heads) and dO (null in the forward).
long pack_size(int B, int Tn, int C, int H) { return (long)B * H * padded_rows(Tn) * head_tile(C / H); }
Pack16 packs(const bf16* heads, bf16* dout, int B, int Tn, int C, int H) {
    const long one = pack_size(B, Tn, C, H);
    return {heads, heads + one, heads + 2 * one, dout, Tn, (int)padded_rows(Tn), C, H, C / H};
}

void pack_heads(bf16* dst, const float* src, int width, int part, const Pack16& pk, int B) {
    const int HS = head_tile(pk.hs);
    each((long)B * pk.H * pk.Tp * HS, PackHeads{dst, src, width, part, pk.Tn, pk.Tp, pk.C, pk.H, pk.hs, HS});
}

}  // namespace

long attention_heads16_size(int B, int Tn, int C, int H) { return 3 * pack_size(B, Tn, C, H); }
long attention_dout16_size(int B, int Tn, int C, int H) { return pack_size(B, Tn, C, H); }

namespace {
template <typename TO>
void attn16_forward(TO* out, float* att, bf16* heads16, const float* qkv, int B, int Tn, int C, int H) {
    require_head_size(C, H);
    if (B <= 0 || Tn <= 0) return;
    const Pack16 pk = packs(heads16, nullptr, B, Tn, C, H);
    for (int part = 0; part < 3; part++) pack_heads(heads16 + part * pack_size(B, Tn, C, H), qkv, 3 * C, part, pk, B);
    const float scale = (float)(1.0 / std::sqrt((double)pk.hs));
    const dim3 grid((unsigned)(pk.Tp / kRows), B * H);
    float *lse = att, *ocopy = att + (long)B * H * Tn;
    MHC_HEAD_DISPATCH_TO(k_attn16_forward, TO, pk.hs, grid, kWarps * 32, out, lse, ocopy, pk, scale);
}

template <typename TO>
void attn16_backward(TO* dqkv, float* datt, bf16* dout16, const float* dout, const bf16* heads16, const float* att,
                     int B, int Tn, int C, int H) {
    require_head_size(C, H);
    if (B <= 0 || Tn <= 0) return;
    const Pack16 pk = packs(heads16, dout16, B, Tn, C, H);
    pack_heads(pk.dout, dout, C, 0, pk, B);
    const float* lse = att;
    attention_rowdot(datt, dout, att + (long)B * H * Tn, B, Tn, C, H);
    const float scale = (float)(1.0 / std::sqrt((double)pk.hs));
    const dim3 grid((unsigned)(pk.Tp / kRows), B * H);
    MHC_HEAD_DISPATCH_TO(k_attn16_backward_kv, TO, pk.hs, grid, kWarps * 32, dqkv, lse, datt, pk, scale);
    MHC_HEAD_DISPATCH_TO(k_attn16_backward_q, TO, pk.hs, grid, kWarps * 32, dqkv, lse, datt, pk, scale);
}
}  // namespace

void attention_forward_bf16(float* out, float* att, bf16* heads16, const float* qkv, int B, int Tn, int C, int H) {
    attn16_forward(out, att, heads16, qkv, B, Tn, C, H);
}
void attention_forward_bf16(bf16* out, float* att, bf16* heads16, const float* qkv, int B, int Tn, int C, int H) {
    attn16_forward(out, att, heads16, qkv, B, Tn, C, H);
}

void attention_backward_bf16(float* dqkv, float* datt, bf16* dout16, const float* dout, const bf16* heads16,
                             const float* att, int B, int Tn, int C, int H) {
    attn16_backward(dqkv, datt, dout16, dout, heads16, att, B, Tn, C, H);
}
void attention_backward_bf16(bf16* dqkv, float* datt, bf16* dout16, const float* dout, const bf16* heads16,
                             const float* att, int B, int Tn, int C, int H) {
    attn16_backward(dqkv, datt, dout16, dout, heads16, att, B, Tn, C, H);
}

}  // namespace mhc::cuda
