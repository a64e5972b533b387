// Causal attention on the tensor cores (dtype bf16): the flash scheme of attention.cu with the two
// products of each tile (scores Q·Kᵀ and P·V, and the backward's) as warp matrix products of bf16
// operands with fp32 sums (mma.sync.m16n8k16 through its documented layout, cuda/mma.cuh), whose
// results the lanes compute on in registers. The softmax, its running max and sum, the
// log-sum-exp and the outputs stay fp32; P and dS are rounded to bf16 to enter the products.
// Q, K, V and dO are first packed as bf16, one [Tp, HS] matrix per (batch row, head): T rounded up
// to 64 rows and the head size to HS in {32, 64, 128} with zeros, so that every tile is whole and
// aligned (zero channels add nothing to a dot product; zero rows are masked or never written). The
// forward's packed Q, K, V are the backward's: the caller keeps them, not the fp32 qkv.
// Every warp owns 16 rows; the block's 4 warps share the other side's tiles (keys, or queries),
// staged once in shared memory. Each gradient is a sum in one fixed order, without atomics, so a run
// repeats bit for bit.
#include <cmath>

#include "cuda/device.cuh"
#include "cuda/mma.cuh"
#include "ops/attention.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

constexpr int kWarps = 4;           // warps per block, 16 rows each
constexpr int kRows = 16 * kWarps;  // rows per block; T is padded to a multiple of it
constexpr int kTile = 32;           // rows of the other side (keys, or queries) staged per step
// Staged rows are HS + kPad apart, so that the lanes' 32-bit fragment loads (8 rows, 4 lanes each)
// fall in distinct banks (unpadded, 8 rows of 64 or 128 bf16 share their banks).
constexpr int kPad = 8;

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

// Two packed heads' rows j0 .. j0 + kTile - 1 (K and V, or Q and dO) on their way to shared
// memory: every thread of the block loads its share into registers (16 bytes at a time), then
// stores it into rows HS + kPad apart. A block's warps share each tile instead of each reading it
// from global memory alone. With kAhead, the next tile's loads are issued before the current
// tile's products, so that they are in flight meanwhile; not at HS = 128, where the registers they
// hold would crowd the accumulators. Tiles start at rows <= last.
template <int HS> struct TilePair {
    static constexpr bool kAhead = HS <= 64;
    static constexpr int kVec = HS / 8, kPer = kTile * kVec / (kWarps * 32);
    const bf16 *x, *y;
    int last;
    uint4 vx[kPer], vy[kPer];
    MHC_DEV TilePair(const bf16* x_, const bf16* y_, int first, int last_) : x(x_), y(y_), last(last_) {
        if (kAhead) load(first);
    }
    MHC_DEV void load(int j0) {
        for (int k = 0; k < kPer; k++) {
            const int e = threadIdx.x + k * kWarps * 32;
            const long at = (long)(j0 + e / kVec) * HS + 8 * (e % kVec);
            vx[k] = load_as<uint4>(x + at), vy[k] = load_as<uint4>(y + at);
        }
    }
    // The tile from row j0 into xs and ys, between two barriers (before: every warp is done with
    // the previous tile; after: every share is stored); also() stages more of the tile's per-row
    // values before the second.
    template <typename F> MHC_DEV void stage(bf16* xs, bf16* ys, int j0, F also) {
        __syncthreads();
        if (!kAhead) load(j0);
        for (int k = 0; k < kPer; k++) {
            const int e = threadIdx.x + k * kWarps * 32, at = (e / kVec) * (HS + kPad) + 8 * (e % kVec);
            store_as<uint4>(xs + at, vx[k]), store_as<uint4>(ys + at, vy[k]);
        }
        also();
        __syncthreads();
        if (kAhead && j0 + kTile <= last) load(j0 + kTile);
    }
};

// The warp's 16 rows of a packed head (from row r0, HS channels) as A fragments.
template <int HS> MHC_DEV void load_rows(uint32_t (&a)[HS / 16][4], const bf16* rows, int g, int t) {
    for (int kk = 0; kk < HS / 16; kk++) load_a(a[kk], rows + 16 * kk, HS, g, t);
}
// s[nt] = A · (rows 8nt .. 8nt + 7 of the staged X)ᵀ over the HS channels, for nt < NT.
template <int HS, int NT>
MHC_DEV void scores(float (&s)[NT][4], const uint32_t (&a)[HS / 16][4], const bf16* X, int g, int t) {
    for (int nt = 0; nt < NT; nt++) {
        for (int e = 0; e < 4; e++) s[nt][e] = 0;
        for (int kk = 0; kk < HS / 16; kk++) {
            uint32_t b[2];
            load_b_rows(b, X + 8 * nt * (HS + kPad) + 16 * kk, HS + kPad, g, t);
            mma16816(s[nt], a[kk], b);
        }
    }
}
// acc[nc] += A · (16 staged rows of X, channels 8nc .. 8nc + 7) for every nc < HS / 8.
template <int HS> MHC_DEV void accumulate(float (&acc)[HS / 8][4], const uint32_t (&a)[4], const bf16* X, int g, int t) {
    for (int nc = 0; nc < HS / 8; nc++) {
        uint32_t b[2];
        load_b(b, X + 8 * nc, HS + kPad, g, t);
        mma16816(acc[nc], a, b);
    }
}
// Rows r0 + g and r0 + g + 8 (those < Tn) of an accumulator [16 x HS] times `scale` into dst: row r
// at dst + r·stride, channels < hs.
template <int HS, typename TO>
MHC_DEV void write_rows(TO* dst, long stride, const float (&acc)[HS / 8][4], int r0, int Tn, int hs, float scale,
                        int g, int t) {
    for (int h = 0; h < 2; h++) {
        const int r = r0 + g + 8 * h;
        if (r >= Tn) continue;
        for (int nc = 0; nc < HS / 8; nc++)
            for (int e = 0; e < 2; e++) {
                const int c = 8 * nc + 2 * t + e;
                if (c < hs) put(dst[(long)r * stride + c], acc[nc][2 * h + e] * scale);
            }
    }
}
// The max and the sum over the 4 lanes of a row (the same tree on each, so they agree).
MHC_DEV float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
MHC_DEV float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Block (x: rows 64x .., the longest first; y: batch row and head); warp w owns queries
// q0 .. q0 + 15, lane 4g + t the queries q0 + g and q0 + g + 8 (the mma layout: keys and channels
// 2t, 2t + 1 of each 8). The block stages K and V kTile keys at a time; a warp skips the tiles past
// its last query (a warp past T every tile) but joins every barrier. The scores, the softmax and
// the output stay in registers.
template <int HS, typename TO>
__global__ void __launch_bounds__(kWarps * 32)
    k_attn16_forward(TO* out, float* lse, float* ocopy, Pack16 pk, float scale) {
    constexpr int KK = HS / 16, NC = HS / 8, NT = kTile / 8, LD = HS + kPad;
    alignas(16) __shared__ bf16 Ks[kTile][LD], Vs[kTile][LD];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nq = pk.Tp / kRows, bh = block_y(nq), Tn = pk.Tn;  // a flat_grid of nq × B·H
    const int qb = (nq - 1 - block_x(nq)) * kRows, q0 = qb + 16 * w;
    const bool active = q0 < Tn;  // the whole warp
    const long head = (long)bh * pk.Tp * HS;
    const bf16 *K = pk.k + head, *V = pk.v + head;
    uint32_t qa[KK][4];
    if (active) load_rows<HS>(qa, pk.q + head + (long)q0 * HS, g, t);
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0}, o[NC][4];
    for (int nc = 0; nc < NC; nc++)
        for (int e = 0; e < 4; e++) o[nc][e] = 0;
    // every tile below holds a key each row sees (j0 <= q0), so m is finite after the first
    const int last = imin(q0 + 15, Tn - 1), block_last = imin(qb + kRows - 1, Tn - 1);
    TilePair<HS> kv(K, V, 0, block_last);
    for (int j0 = 0; j0 <= block_last; j0 += kTile) {
        kv.stage(&Ks[0][0], &Vs[0][0], j0, [] {});
        if (!active || j0 > last) continue;
        float s[NT][4], mt[2] = {-INFINITY, -INFINITY};
        scores<HS, NT>(s, qa, &Ks[0][0], g, t);
        for (int nt = 0; nt < NT; nt++)
            for (int e = 0; e < 4; e++) {
                const int i = q0 + g + 8 * (e >> 1), j = j0 + 8 * nt + 2 * t + (e & 1);
                s[nt][e] = j <= i && j < Tn ? s[nt][e] * scale : -INFINITY;
                mt[e >> 1] = fmaxf(mt[e >> 1], s[nt][e]);
            }
        float mn[2], alpha[2], psum[2] = {0, 0};
        for (int h = 0; h < 2; h++) mn[h] = fmaxf(m[h], quad_max(mt[h])), alpha[h] = expf(m[h] - mn[h]);
        for (int nt = 0; nt < NT; nt++)
            for (int e = 0; e < 4; e++) {
                s[nt][e] = expf(s[nt][e] - mn[e >> 1]);  // P, in place
                psum[e >> 1] += s[nt][e];
            }
        for (int h = 0; h < 2; h++) l[h] = l[h] * alpha[h] + quad_sum(psum[h]), m[h] = mn[h];
        for (int nc = 0; nc < NC; nc++)
            for (int e = 0; e < 4; e++) o[nc][e] *= alpha[e >> 1];
        for (int kb = 0; kb < NT / 2; kb++) {  // O += P · V, 16 keys at a time
            uint32_t pa[4];
            a_from_d(pa, s[2 * kb], s[2 * kb + 1]);
            accumulate<HS>(o, pa, &Vs[16 * kb][0], g, t);
        }
    }
    const int b = bh / pk.H, h = bh % pk.H;
    for (int r = 0; r < 2; r++) {
        const int i = q0 + g + 8 * r;
        if (i >= Tn) continue;
        const long at = ((long)b * Tn + i) * pk.C + (long)h * pk.hs;
        const float inv = 1.0f / l[r];
        for (int nc = 0; nc < NC; nc++)
            for (int e = 0; e < 2; e++) {
                const int ch = 8 * nc + 2 * t + e;
                if (ch < pk.hs) put(out[at + ch], ocopy[at + ch] = o[nc][2 * r + e] * inv);
            }
        if (t == 0) lse[(long)bh * Tn + i] = m[r] + logf(l[r]);
    }
}

// dK and dV. Block (x: keys 64x .., y: batch row and head); warp w owns keys k0 .. k0 + 15 (lane
// 4g + t: keys k0 + g, k0 + g + 8) and takes the queries i >= k0 in tiles of 16, in increasing
// order. The block stages Q, dO and the queries' log-sum-exp and D kTile queries at a time, from its
// first key on. Sᵀ, dPᵀ, P and dS stay in registers.
template <int HS, typename TO>
__global__ void __launch_bounds__(kWarps * 32)
    k_attn16_backward_kv(TO* dqkv, const float* lse, const float* D, Pack16 pk, float scale) {
    constexpr int KK = HS / 16, NC = HS / 8, LD = HS + kPad;
    alignas(16) __shared__ bf16 Qs[kTile][LD], Gs[kTile][LD];  // Q and dO
    __shared__ float Ls[kTile], Dl[kTile];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nk = pk.Tp / kRows, bh = block_y(nk), Tn = pk.Tn;  // a flat_grid of nk × B·H
    const int kb = block_x(nk) * kRows, k0 = kb + 16 * w;
    const bool active = k0 < Tn;  // the whole warp
    const long head = (long)bh * pk.Tp * HS;
    const bf16 *Q = pk.q + head, *dO = pk.dout + head;
    uint32_t ka[KK][4], va[KK][4];
    if (active) load_rows<HS>(ka, pk.k + head + (long)k0 * HS, g, t), load_rows<HS>(va, pk.v + head + (long)k0 * HS, g, t);
    float dk[NC][4], dv[NC][4];
    for (int nc = 0; nc < NC; nc++)
        for (int e = 0; e < 4; e++) dk[nc][e] = dv[nc][e] = 0;
    TilePair<HS> qg(Q, dO, kb, Tn - 1);
    for (int i0 = kb; i0 < Tn; i0 += kTile) {
        qg.stage(&Qs[0][0], &Gs[0][0], i0, [&] {
            if (threadIdx.x < kTile) {
                const int i = i0 + threadIdx.x;
                Ls[threadIdx.x] = i < Tn ? lse[(long)bh * Tn + i] : 0.0f;
                Dl[threadIdx.x] = i < Tn ? D[(long)bh * Tn + i] : 0.0f;
            }
        });
        if (!active) continue;
        for (int sub = 0; sub < kTile / 16; sub++) {
            const int i1 = i0 + 16 * sub;
            if (i1 < k0 || i1 >= Tn) continue;
            float st[2][4], dpt[2][4];
            scores<HS, 2>(st, ka, &Qs[16 * sub][0], g, t);   // Sᵀ: keys x queries
            scores<HS, 2>(dpt, va, &Gs[16 * sub][0], g, t);  // dPᵀ = V·dOᵀ
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++) {
                    const int j = k0 + g + 8 * (e >> 1), c = 16 * sub + 8 * nt + 2 * t + (e & 1), i = i0 + c;
                    float p = 0, ds = 0;
                    if (i < Tn && i >= j) {
                        p = expf(st[nt][e] * scale - Ls[c]);
                        ds = p * (dpt[nt][e] - Dl[c]);
                    }
                    st[nt][e] = p, dpt[nt][e] = ds;
                }
            uint32_t pa[4], dsa[4];
            a_from_d(pa, st[0], st[1]);
            a_from_d(dsa, dpt[0], dpt[1]);
            accumulate<HS>(dv, pa, &Gs[16 * sub][0], g, t);   // dV += Pᵀ·dO
            accumulate<HS>(dk, dsa, &Qs[16 * sub][0], g, t);  // dK += dSᵀ·Q (times scale below)
        }
    }
    if (!active) return;
    const int b = bh / pk.H, h = bh % pk.H;
    TO* dst = dqkv + ((long)b * Tn) * 3 * pk.C + (long)h * pk.hs;
    write_rows<HS>(dst + pk.C, 3L * pk.C, dk, k0, Tn, pk.hs, scale, g, t);
    write_rows<HS>(dst + 2 * pk.C, 3L * pk.C, dv, k0, Tn, pk.hs, 1.0f, g, t);
}

// dQ. Block (x: queries 64x .., the longest first; y: batch row and head); warp w owns queries
// q0 .. q0 + 15 and takes the keys j <= q0 + 15 in tiles of 16, in increasing order. The block
// stages K and V kTile keys at a time. S, dP and dS stay in registers.
template <int HS, typename TO>
__global__ void __launch_bounds__(kWarps * 32)
    k_attn16_backward_q(TO* dqkv, const float* lse, const float* D, Pack16 pk, float scale) {
    constexpr int KK = HS / 16, NC = HS / 8, LD = HS + kPad;
    alignas(16) __shared__ bf16 Ks[kTile][LD], Vs[kTile][LD];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nq = pk.Tp / kRows, bh = block_y(nq), Tn = pk.Tn;  // a flat_grid of nq × B·H
    const int qb = (nq - 1 - block_x(nq)) * kRows, q0 = qb + 16 * w;
    const bool active = q0 < Tn;  // the whole warp
    const long head = (long)bh * pk.Tp * HS;
    const bf16 *K = pk.k + head, *V = pk.v + head;
    uint32_t qa[KK][4], doa[KK][4];
    if (active) load_rows<HS>(qa, pk.q + head + (long)q0 * HS, g, t), load_rows<HS>(doa, pk.dout + head + (long)q0 * HS, g, t);
    float L[2], Dr[2];
    for (int r = 0; r < 2; r++) {
        const int i = q0 + g + 8 * r;
        L[r] = i < Tn ? lse[(long)bh * Tn + i] : 0.0f, Dr[r] = i < Tn ? D[(long)bh * Tn + i] : 0.0f;
    }
    float dq[NC][4];
    for (int nc = 0; nc < NC; nc++)
        for (int e = 0; e < 4; e++) dq[nc][e] = 0;
    const int last = imin(q0 + 15, Tn - 1), block_last = imin(qb + kRows - 1, Tn - 1);
    TilePair<HS> kv(K, V, 0, block_last);
    for (int j0 = 0; j0 <= block_last; j0 += kTile) {
        kv.stage(&Ks[0][0], &Vs[0][0], j0, [] {});
        if (!active) continue;
        for (int sub = 0; sub < kTile / 16; sub++) {
            const int j1 = j0 + 16 * sub;
            if (j1 > last) break;
            float s[2][4], dp[2][4];
            scores<HS, 2>(s, qa, &Ks[16 * sub][0], g, t);
            scores<HS, 2>(dp, doa, &Vs[16 * sub][0], g, t);  // dP = dO·Vᵀ
            for (int nt = 0; nt < 2; nt++)
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, i = q0 + g + 8 * r, j = j1 + 8 * nt + 2 * t + (e & 1);
                    s[nt][e] = i < Tn && j <= i ? expf(s[nt][e] * scale - L[r]) * (dp[nt][e] - Dr[r]) : 0.0f;
                }
            uint32_t dsa[4];
            a_from_d(dsa, s[0], s[1]);
            accumulate<HS>(dq, dsa, &Ks[16 * sub][0], g, t);  // dQ += dS·K (times scale below)
        }
    }
    if (!active) return;
    const int b = bh / pk.H, h = bh % pk.H;
    write_rows<HS>(dqkv + ((long)b * Tn) * 3 * pk.C + (long)h * pk.hs, 3L * pk.C, dq, q0, Tn, pk.hs, scale, g, t);
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
    const unsigned grid = flat_grid(pk.Tp / kRows, (long)B * H, "attention");
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
    const unsigned grid = flat_grid(pk.Tp / kRows, (long)B * H, "attention");
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
