// Hyper-connection site forward and backward over N tokens on the GPU (conn/conn_cuda.h): the
// stream sums, the norm of each row, the projections and the parameter-gradient sums over tokens.
// The CPU's conn/conn.cpp computes the same quantities in the same precisions (dot products and
// per-token coefficient maths in double, stream sums and products in fp32).
#include <type_traits>

#include "conn/coef.cuh"
#include "conn/conn_cuda.h"
#include "conn/parts.cuh"
#include "cuda/device.cuh"

namespace mhc::cuda {

using detail::ConnScratch;
using detail::parts_sum;
using detail::split3;
using detail::split_parts;

namespace {

constexpr int kWarps = kThreads / 32;  // warp-per-item kernels: items per block
unsigned warp_blocks(long items) { return (unsigned)((items + kWarps - 1) / kWarps); }

MHC_DEV const float* crow(const SiteDev& s, const float* cache, long tok) { return cache + tok * s.stride; }

// ---- stream sums (fp32, in stream order as the CPU) ---------------------------------------------
struct ResidualCache {  // residual: H_pre = H_res = H_post = 1
    SiteDev s;
    float* cache;
    MHC_DEV void operator()(long tok) const {
        float* c = cache + tok * s.stride;
        c[s.c_hpre] = c[s.c_hres] = c[s.c_hpost] = 1.0f;
    }
};

template <typename TX> struct WeightedInput {  // u[tok, c] = Σ_s H_pre[s] X[tok, s, c]
    SiteDev s;
    const float* cache;
    const TX* X;
    float* u;
    MHC_DEV void operator()(long i) const {
        const long tok = i / s.C, c = i % s.C;
        const float* h = crow(s, cache, tok) + s.c_hpre;
        float acc = 0.0f;
        for (int st = 0; st < s.n; st++) acc += h[st] * as_float(X[(tok * s.n + st) * s.C + c]);
        u[i] = acc;
    }
};

template <typename TX> struct Widen {  // residual: u = X (n = 1)
    float* u;
    const TX* X;
    MHC_DEV void operator()(long i) const { u[i] = as_float(X[i]); }
};

// Warp tok, lane l over channels c = l, l + 32, ...: X'[tok, t, c] = H_post[t] y[tok, c] +
// Σ_s H_res[s][t] X[tok, s, c] (fp32, in s order), each X value read once; with ss, also
// ss[tok, t] = Σ_c X'[tok, t, c]² of the stored X' (double: each lane's channels in order, then the
// warp's tree). TX, TY: the streams' and the branch output's storage, fp32 or (dtype bf16) bf16.
template <int NS, typename TX, typename TY>
__global__ void k_post_forward(SiteDev s, const float* cache, const TX* X, const TY* y, TX* Xout, double* ss,
                               int N) {
    const long tok = (long)blockIdx.x * kWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, C = s.C;
    if (tok >= N) return;  // the whole warp
    const float* cr = crow(s, cache, tok);
    const float* hpost = cr + s.c_hpost;
    const float* hres = cr + s.c_hres;
    const TX* xt = X + tok * NS * C;
    TX* ot = Xout + tok * NS * C;
    double sq[NS];
    for (int t = 0; t < NS; t++) sq[t] = 0;
    for (int c = lane; c < C; c += 32) {
        float xv[NS];
        for (int st = 0; st < NS; st++) xv[st] = as_float(xt[st * C + c]);
        const float yc = as_float(y[tok * C + c]);
        for (int t = 0; t < NS; t++) {
            float acc = hpost[t] * yc;
            for (int st = 0; st < NS; st++) acc += hres[st * NS + t] * xv[st];
            TX o;
            put(o, acc);
            ot[t * C + c] = o;
            const double v = as_float(o);
            sq[t] += v * v;
        }
    }
    if (!ss) return;
    for (int t = 0; t < NS; t++) {
        const double v = warp_sum(sq[t]);
        if (lane == 0) ss[tok * NS + t] = v;
    }
}


template <typename TX> struct AddInto {  // residual: dX += du, or with dXout (the post's share deferred) dX = dXout + du
    TX* dX;
    const TX* dXout;
    const float* du;
    MHC_DEV void operator()(long i) const { put(dX[i], as_float(dXout ? dXout[i] : dX[i]) + du[i]); }
};

// The post side's share of dX at stream st, channel c of token tok: Σ_t H_res[st][t] dX'[tok, t, c],
// in t order: k_post_backward's sum, for the pre side's pass when the post's was deferred.
template <typename TX>
MHC_DEV float post_share(const SiteDev& s, const float* cr, const TX* dXout, long tok, int st, int c) {
    const float* hres = cr + s.c_hres + st * s.n;
    const TX* g = dXout + tok * s.n * s.C + c;
    float acc = 0.0f;
    for (int t = 0; t < s.n; t++) acc += hres[t] * as_float(g[(long)t * s.C]);
    return acc;
}

// ---- the post side's backward in one pass over a token's streams -------------------------------
// Warp tok, lane l over channels c = l, l + 32, ...: reads dX'[tok, t, c], X[tok, s, c] and y[tok, c]
// once and writes
//   dy[c]     = Σ_t H_post[t] dX'_t[c]                          (fp32, in t order; TD: its storage)
//   dX_s[c]   = Σ_t H_res[s][t] dX'_t[c]   (overwritten)        (fp32, in t order)
// and, with dh, into the cache: dH_post[t] = <dX'_t, y>, dH_res[s][t] = <dX'_t, X_s> (double: each
// lane's channels in order, then the warp's fixed tree). NS: the stream count n, so that the n
// values of each channel and the n + n² sums sit in registers.
template <int NS, typename TX, typename TY, typename TD>
__global__ void k_post_backward(SiteDev s, float* cache, const TX* X, const TY* y, const TX* g, TX* dX, TD* dy,
                                int N, bool dh) {
    const long tok = (long)blockIdx.x * kWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, C = s.C;
    if (tok >= N) return;  // the whole warp
    float* cr = cache + tok * s.stride;
    const float* hpost = cr + s.c_hpost;
    const float* hres = cr + s.c_hres;
    const TX* gt = g + tok * NS * C;
    const TX* xt = X + tok * NS * C;
    TX* dxt = dX ? dX + tok * NS * C : nullptr;
    double apost[NS], ares[NS * NS];
    for (int t = 0; t < NS; t++) apost[t] = 0;
    for (int i = 0; i < NS * NS; i++) ares[i] = 0;
    for (int c = lane; c < C; c += 32) {
        float gv[NS];
        for (int t = 0; t < NS; t++) gv[t] = as_float(gt[t * C + c]);
        float d = 0.0f;
        for (int t = 0; t < NS; t++) d += hpost[t] * gv[t];
        put(dy[tok * C + c], d);
        for (int st = 0; st < NS && dX; st++) {
            float acc = 0.0f;
            for (int t = 0; t < NS; t++) acc += hres[st * NS + t] * gv[t];
            put(dxt[st * C + c], acc);
        }
        if (!dh) continue;  // residual: X and y are not read at all
        float xv[NS];
        for (int t = 0; t < NS; t++) xv[t] = as_float(xt[t * C + c]);
        const float yc = as_float(y[tok * C + c]);
        for (int t = 0; t < NS; t++) {
            const double gd = gv[t];
            apost[t] += gd * (double)yc;
            for (int st = 0; st < NS; st++) ares[st * NS + t] += gd * (double)xv[st];
        }
    }
    if (!dh) return;
    for (int t = 0; t < NS; t++) {
        const double v = warp_sum(apost[t]);
        if (lane == 0) cr[s.c_dhpost + t] = (float)v;
    }
    for (int i = 0; i < NS * NS; i++) {
        const double v = warp_sum(ares[i]);
        if (lane == 0) cr[s.c_dhres + i] = (float)v;
    }
}

// Warp tok: dH_pre[s] = <du, X_s> for every stream.
template <typename TX> __global__ void k_pre_dhpre(SiteDev s, const TX* X, const float* du, double* dhpre, int N) {
    const long tok = (long)blockIdx.x * kWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, n = s.n, C = s.C;
    if (tok >= N) return;
    const TX* x = X + tok * n * C;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int c = lane; c < C; c += 32) {
        const double gc = du[tok * C + c];
        for (int st = 0; st < n; st++) acc[st] += gc * (double)as_float(x[st * C + c]);
    }
    for (int st = 0; st < n; st++) {
        const double d = warp_sum(acc[st]);
        if (lane == 0) dhpre[tok * n + st] = d;
    }
}

// ---- the norm of each row (Dp values; rpt rows per token) ---------------------------------------
// rs = sqrt(Dp) / max(||row||, 1e-12), into the row's cache slot.
template <typename TX> __global__ void k_row_rs(SiteDev s, const TX* X, float* cache, long rows) {
    const long r = (long)blockIdx.x * kWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const TX* v = X + r * s.Dp;
    double ss = 0;
    for (int i = lane; i < s.Dp; i += 32) {
        const double x = as_float(v[i]);
        ss += x * x;
    }
    ss = warp_sum(ss);
    if (lane == 0) cache[(r / s.rpt) * s.stride + s.c_rs + r % s.rpt] = detail::row_rs(s, ss);
}

// The pre side's share of dX, per row, in one pass: dv += H_pre[s] du[tok, c] (the weighted sum's
// backward) + e - v <v, e> / ||v||^2 (the norm's; just e where the norm was clamped). A row is Dp
// consecutive values of its token's [n, C] streams. With dXout, the post's share is made here from
// it (post_share) instead of read from dv.
template <typename TX>
__global__ void k_pre_backward_x(SiteDev s, const float* cache, const TX* X, const float* du, const float* E,
                                 TX* dX, const TX* dXout, long rows) {
    const long r = (long)blockIdx.x * kWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const long tok = r / s.rpt, nC = (long)s.n * s.C;
    const float* cr = crow(s, cache, tok);
    const float* hpre = cr + s.c_hpre;
    const TX* v = X + r * s.Dp;
    const float* e = E + r * s.Dp;
    TX* dv = dX + r * s.Dp;
    double ss = 0, ve = 0;
    for (int i = lane; i < s.Dp; i += 32) {
        const double x = as_float(v[i]);
        ss += x * x;
        ve += x * (double)e[i];
    }
    ss = warp_sum(ss);
    ve = warp_sum(ve);
    const float k = sqrt(ss) > 1e-12 ? (float)(ve / ss) : 0.0f;
    for (int i = lane; i < s.Dp; i += 32) {
        const long at = r * s.Dp + i - tok * nC;  // the value's place in its token's [n, C]
        const int st = (int)(at / s.C), c = (int)(at % s.C);
        const float post = dXout ? post_share(s, cr, dXout, tok, st, c) : as_float(dv[i]);
        const float with_u = post + hpre[st] * du[tok * s.C + c];
        put(dv[i], with_u + e[i] - as_float(v[i]) * k);
    }
}

// The same pass with E = dZ · Wfᵀ made in place instead of read (every variant but hc, whose rows
// are single streams and whose f = tanh(...) does not give back v · Wf), so that E [N, n·C] is
// never written. Block: kTileRows tokens × kTileCols values; each thread finishes 8 of them, with
// E's values from dz_wf_cores (fp32 streams) or dz_wf_tensor (bf16 streams). The norm's term needs <v, e>
// for the whole row, which no block sees; but
// <v, e> = Σ_j dZ_j (v · Wf)_j = Σ_j dZ_j f_j / rs (the cache's projections f = rs (v · Wf)), and
// ||v||² = Dp / rs², so k = <v, e> / ||v||² = rs Σ_j dZ_j f_j / Dp per token, in double; 0 where the
// norm was clamped (rs at its ceiling), as k_pre_backward_x.
constexpr int kTileRows = 32, kTileCols = 64, kTileJ = 32;
constexpr int kStep = kThreads / kTileCols, kPer = kTileRows / kStep;  // a thread's rows: r0, r0 + kStep, ..

// E = dZ · Wfᵀ for the block's kTileRows tokens × kTileCols values, the thread's kPer of them into e,
// on the CUDA cores: fp32 multiply-adds in j order, dZ and Wf staged in shared memory kTileJ
// columns at a time (the fp32 streams' path, whose results the tests hold to the CPU's fp32 ones).
MHC_DEV void dz_wf_cores(const SiteDev& s, const float* dZ, const float* Wf, long tok0, long i0, int N, int r0,
                         int col, float (&e)[kPer]) {
    __shared__ float zs[kTileRows][kTileJ + 1];  // dZ of the block's tokens (padded: no bank conflicts)
    __shared__ float ws[kTileJ][kTileCols + 1];  // Wf's rows i0.., transposed (padded likewise)
    const int tid = threadIdx.x;
    for (int k = 0; k < kPer; k++) e[k] = 0.0f;
    for (int j0 = 0; j0 < s.prow; j0 += kTileJ) {
        __syncthreads();  // the previous chunk is read
        for (int t = tid; t < kTileRows * kTileJ; t += kThreads) {
            const int rr = t / kTileJ, jj = t % kTileJ;
            const long tok = tok0 + rr;
            zs[rr][jj] = tok < N && j0 + jj < s.prow ? dZ[tok * s.prow + j0 + jj] : 0.0f;
        }
        for (int t = tid; t < kTileJ * kTileCols; t += kThreads) {  // a warp reads 32 j of one row
            const int cc = t / kTileJ, jj = t % kTileJ;
            const long i = i0 + cc;
            ws[jj][cc] = i < s.Dp && j0 + jj < s.prow ? Wf[i * s.prow + j0 + jj] : 0.0f;
        }
        __syncthreads();
        const int jn = imin(kTileJ, s.prow - j0);
        for (int jj = 0; jj < jn; jj++) {  // in j order, as the product's sum
            const float w = ws[jj][col];
            for (int k = 0; k < kPer; k++) e[k] += zs[r0 + k * kStep][jj] * w;
        }
    }
}

// The same on the tensor cores (the bf16 streams' path). On the CUDA cores the product is
// N·Dp·prow multiply-adds per site, each with a shared-memory read: about 0.8 G at GPT-2 small's
// shape (batch 8, n 4), more time than the pass's memory traffic. Here each fp32 factor is split
// into three bf16 parts (parts.cuh) as it is staged, and the nine products of parts, each exact in
// fp32, are summed in fp32 by warp matrix products (16 × 16 × 16; the small products first): an
// fp32 product of dZ and Wf, in the tensor cores' order of addition. Warp w makes the 16 × 16 tile
// at rows 16 (w / 4), columns 16 (w % 4).
MHC_DEV void dz_wf_tensor(const SiteDev& s, const float* dZ, const float* Wf, long tok0, long i0, int N, int r0,
                          int col, float (&e)[kPer]) {
    using namespace nvcuda;
    using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
    using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
    using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
    static_assert(kTileRows == 32 && kTileCols == 64 && kThreads == 256, "8 warps, one 16 x 16 tile each");
    constexpr int kLd = kTileJ + 8;  // bf16 per staged row: whole 16-byte rows, tiles on 32-byte boundaries
    constexpr int kLdE = kTileCols + 4;
    alignas(32) __shared__ bf16 zp[3][kTileRows][kLd];  // dZ's parts: [part][token][j]
    alignas(32) __shared__ bf16 wp[3][kTileCols][kLd];  // Wf's parts: [part][value][j] (Wfᵀ column-major)
    alignas(32) __shared__ float et[kTileRows][kLdE];
    const int tid = threadIdx.x, w = tid >> 5, tr = 16 * (w / 4), tc = 16 * (w % 4);
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int j0 = 0; j0 < s.prow; j0 += kTileJ) {
        __syncthreads();  // the previous chunk is read
        for (int t = tid; t < kTileRows * kTileJ; t += kThreads) {
            const int rr = t / kTileJ, jj = t % kTileJ;
            const long tok = tok0 + rr;
            split_parts(tok < N && j0 + jj < s.prow ? dZ[tok * s.prow + j0 + jj] : 0.0f, &zp[0][rr][jj],
                        (long)kTileRows * kLd);
        }
        for (int t = tid; t < kTileCols * kTileJ; t += kThreads) {  // a warp reads 32 j of one row
            const int cc = t / kTileJ, jj = t % kTileJ;
            const long i = i0 + cc;
            split_parts(i < s.Dp && j0 + jj < s.prow ? Wf[i * s.prow + j0 + jj] : 0.0f, &wp[0][cc][jj],
                        (long)kTileCols * kLd);
        }
        __syncthreads();
        const int kn = (imin(kTileJ, s.prow - j0) + 15) / 16;
        for (int kk = 0; kk < kn; kk++) {
            FragA a[3];
            FragB b[3];
            for (int p = 0; p < 3; p++) {
                wmma::load_matrix_sync(a[p], &zp[p][tr][16 * kk], kLd);
                wmma::load_matrix_sync(b[p], &wp[p][tc][16 * kk], kLd);
            }
            for (int order = 4; order >= 0; order--)  // parts pa + pb = order: lo·lo first, hi·hi last
                for (int pa = 0; pa < 3; pa++) {
                    const int pb = order - pa;
                    if (pb >= 0 && pb < 3) wmma::mma_sync(acc, a[pa], b[pb], acc);
                }
        }
    }
    wmma::store_matrix_sync(&et[tr][tc], acc, kLdE, wmma::mem_row_major);
    __syncthreads();
    for (int k = 0; k < kPer; k++) e[k] = et[r0 + k * kStep][col];
}

template <typename TX>
__global__ void k_pre_backward_fused(SiteDev s, const float* cache, const TX* X, const float* du, const float* dZ,
                                     const float* Wf, TX* dX, const TX* dXout, int N) {
    __shared__ float ks[kTileRows];
    const int tid = threadIdx.x, col = tid % kTileCols, r0 = tid / kTileCols;  // rows r0, r0 + 4, ...
    // A flat_grid of value chunks × token tiles: the blocks of a token tile run together (dXout's
    // other streams are then still in L2)
    const int nx = (s.Dp + kTileCols - 1) / kTileCols;
    const long tok0 = (long)block_y(nx) * kTileRows;
    const long i0 = (long)block_x(nx) * kTileCols;
    const int lane = tid & 31, warp = tid >> 5;
    for (int rr = warp; rr < kTileRows; rr += kThreads / 32) {  // k of each token, one warp each
        const long tok = tok0 + rr;
        double acc = 0;
        if (tok < N) {
            const float* f = crow(s, cache, tok) + s.c_logit;
            for (int j = lane; j < s.prow; j += 32) acc += (double)dZ[tok * s.prow + j] * (double)f[j];
        }
        acc = warp_sum(acc);
        if (lane == 0) {
            const double rs = tok < N ? crow(s, cache, tok)[s.c_rs] : 0.0;
            const bool clamped = rs >= (double)detail::row_rs(s, 0.0);  // rs at its ceiling
            ks[rr] = clamped ? 0.0f : (float)(rs * acc / s.Dp);
        }
    }
    float e[kPer];
    if constexpr (std::is_same_v<TX, bf16>) dz_wf_tensor(s, dZ, Wf, tok0, i0, N, r0, col, e);
    else dz_wf_cores(s, dZ, Wf, tok0, i0, N, r0, col, e);
    __syncthreads();  // ks
    const long i = i0 + col;
    if (i >= s.Dp) return;
    const int st = (int)(i / s.C), c = (int)(i % s.C);
    for (int k = 0; k < kPer; k++) {
        const int rr = r0 + k * kStep;
        const long tok = tok0 + rr;
        if (tok >= N) break;
        const long at = tok * s.Dp + i;
        const float* cr = crow(s, cache, tok);
        const float post = dXout ? post_share(s, cr, dXout, tok, st, c) : as_float(dX[at]);
        const float with_u = post + cr[s.c_hpre + st] * du[tok * s.C + c];
        put(dX[at], with_u + e[k] - as_float(X[at]) * ks[rr]);
    }
}

// ---- projections and parameter gradients --------------------------------------------------------
// Value i of Wf [Dp, prow] = diag(1 + gamma) [W1 | W2].
MHC_DEV float folded(const SiteDev& s, const float* params, long i) {
    const long row = i / s.prow;
    const int j = (int)(i % s.prow);
    const float g1 = 1.0f + params[s.o_gamma + row];
    return g1 * (j < s.M1 ? params[s.o_W1 + row * s.M1 + j] : params[s.o_W2 + row * s.M2 + (j - s.M1)]);
}
struct FoldGain {  // Wf [Dp, prow]
    SiteDev s;
    const float* params;
    float* Wf;
    MHC_DEV void operator()(long i) const { Wf[i] = folded(s, params, i); }
};

struct FoldGainSplit {  // Wf's parts [Dp, parts_ld(prow)]
    SiteDev s;
    const float* params;
    bf16* parts;
    MHC_DEV void operator()(long i) const { split3(folded(s, params, i), i, s.prow, parts); }
};
struct StaticScaleTerm {  // column j < W: G[tok, j] (-> static); W + j: G[tok, j]·f[tok, j] (-> scale)
    SiteDev s;
    const float* G;
    const float* cache;
    MHC_DEV double operator()(int tok, int col) const {
        const int j = col < s.W ? col : col - s.W;
        const double g = G[(long)tok * s.W + j];
        return col < s.W ? g : g * (double)crow(s, cache, tok)[s.c_logit + j];
    }
};
struct StoreSums {
    double* sums;
    MHC_DEV void operator()(int col, double v) const { sums[col] = v; }
};

// dW = (1 + gamma) ⊙ Dsum, dgamma_i = Σ_j [W1 | W2]_ij Dsum_ij (double), Dsum [Dp, prow] as the
// product left it (Proj); thread 0 also adds the static and scale sums, in the CPU's column order
// (several columns share a scale parameter), so they need no launch of their own.
struct WeightGrads {
    SiteDev s;
    const float* params;
    detail::Proj D;
    const double* sums;  // [2W] StaticScaleTerm's
    float* dparams;
    MHC_DEV void operator()(long i) const {
        if (i == 0)
            for (int j = 0; j < s.W; j++) {
                dparams[s.col_static[j]] += (float)sums[j];
                dparams[s.col_scale[j]] += (float)sums[s.W + j];
            }
        const auto d = [&](int j) { return D.parts ? parts_sum(D.P, i, j, s.prow) : D.P[i * s.prow + j]; };
        const float g1 = 1.0f + params[s.o_gamma + i];
        const float* W1 = params + s.o_W1 + i * s.M1;
        const float* W2 = params + s.o_W2 + i * s.M2;
        float* dW1 = dparams + s.o_W1 + i * s.M1;
        float* dW2 = dparams + s.o_W2 + i * s.M2;
        double dg = 0;
        for (int j = 0; j < s.M1; j++) {
            const float dj = d(j);
            dW1[j] += g1 * dj;
            dg += (double)W1[j] * (double)dj;
        }
        for (int j = 0; j < s.M2; j++) {
            const float dj = d(s.M1 + j);
            dW2[j] += g1 * dj;
            dg += (double)W2[j] * (double)dj;
        }
        dparams[s.o_gamma + i] += (float)dg;
    }
};

bool residual(const SiteDev& s) { return s.variant == (int)Variant::residual; }

// launch(std::integral_constant<int, n>{}) for the kernels templated on the stream count n (1 to 8),
// whose per-channel values and sums then sit in registers.
template <typename F> void with_streams(int n, const char* who, F&& launch) {
    switch (n) {
        case 1: return launch(std::integral_constant<int, 1>{});
        case 2: return launch(std::integral_constant<int, 2>{});
        case 3: return launch(std::integral_constant<int, 3>{});
        case 4: return launch(std::integral_constant<int, 4>{});
        case 5: return launch(std::integral_constant<int, 5>{});
        case 6: return launch(std::integral_constant<int, 6>{});
        case 7: return launch(std::integral_constant<int, 7>{});
        case 8: return launch(std::integral_constant<int, 8>{});
        default: fail(who, "the GPU takes 1 to 8 streams", __FILE__, __LINE__);
    }
}

// The rows' projections X rows [Nr, Dp] · Wf, as the product leaves them (Proj): an fp32 product
// into PZ, or from bf16 streams the three parts' products (split3) on the tensor cores into split,
// added where the coefficients read them.
detail::Proj project(const SiteDev& s, const ConnScratch& sc, const float* params, const float* X, long Nr) {
    each((long)s.Dp * s.prow, FoldGain{s, params, sc.Wf});
    gemm(false, false, (int)Nr, s.prow, s.Dp, 1.0f, X, s.Dp, sc.Wf, s.prow, 0.0f, sc.PZ, s.prow);
    return {sc.PZ, false};
}
detail::Proj project(const SiteDev& s, const ConnScratch& sc, const float* params, const bf16* X, long Nr) {
    const int m3 = detail::parts_ld(s.prow);
    each((long)s.Dp * s.prow, FoldGainSplit{s, params, sc.parts});
    gemm_bf16(false, false, (int)Nr, m3, s.Dp, 1.0f, X, s.Dp, sc.parts, m3, 0.0f, sc.split, m3);
    return {sc.split, true};
}
// Dsum [Dp, prow] = Xᵀ dZ over the Nr rows, dZ in PZ, as the product leaves it: into Dsum, or from
// bf16 streams by dZ's parts (coef_backward made them) into split.
detail::Proj weight_sums(const SiteDev& s, const ConnScratch& sc, const float* X, long Nr) {
    gemm(true, false, s.Dp, s.prow, (int)Nr, 1.0f, X, s.Dp, sc.PZ, s.prow, 0.0f, sc.Dsum, s.prow);
    return {sc.Dsum, false};
}
detail::Proj weight_sums(const SiteDev& s, const ConnScratch& sc, const bf16* X, long Nr) {
    const int m3 = detail::parts_ld(s.prow);
    gemm_bf16(true, false, s.Dp, m3, (int)Nr, 1.0f, X, s.Dp, sc.parts, m3, 0.0f, sc.split, m3);
    return {sc.split, true};
}

}  // namespace

template <typename TX>
void conn_pre_forward(const ConnSiteCuda& site, const float* params, const TX* X, float* u, float* cache,
                      float* scratch, int N, const double* ss) {
    const SiteDev& s = site.dev;
    if (N <= 0) return;
    if (residual(s)) {
        each(N, ResidualCache{s, cache});
        if ((const void*)u != (const void*)X) each((long)N * s.C, Widen<TX>{u, X});  // else u is X itself
        return;
    }
    ConnScratch sc;
    detail::conn_scratch_layout(s, N, scratch, &sc);
    const long Nr = (long)N * s.rpt;
    const detail::Proj P = project(s, sc, params, X, Nr);
    if (!ss) MHC_LAUNCH(k_row_rs<TX>, warp_blocks(Nr), kThreads, s, X, cache, Nr);  // else coef_forward's
    detail::coef_forward(s, params, P, ss, cache, N);
    each((long)N * s.C, WeightedInput<TX>{s, cache, X, u});
}

template <typename TX, typename TY>
void conn_post_forward(const ConnSiteCuda& site, const float* cache, const TX* X, const TY* y, TX* Xout, int N,
                       double* ss) {
    const SiteDev& s = site.dev;
    if (N <= 0) return;
    with_streams(s.n, "conn_post_forward", [&](auto ns) {
        MHC_LAUNCH((k_post_forward<decltype(ns)::value, TX, TY>), warp_blocks(N), kThreads, s, cache, X, y, Xout, ss,
                   N);
    });
}

template <typename TX, typename TY, typename TD>
void conn_post_backward(const ConnSiteCuda& site, float* cache, const TX* X, const TY* y, const TX* dXout, TX* dX,
                        TD* dy, int N) {
    const SiteDev& s = site.dev;
    if (N <= 0) return;
    const bool dh = !residual(s);  // residual: H = 1, nothing to learn
    with_streams(s.n, "conn_post_backward", [&](auto ns) {
        MHC_LAUNCH((k_post_backward<decltype(ns)::value, TX, TY, TD>), warp_blocks(N), kThreads, s, cache, X, y,
                   dXout, dX, dy, N, dh);
    });
}

template <typename TX>
void conn_pre_backward(const ConnSiteCuda& site, const float* params, const float* cache, const TX* X,
                       const float* du, TX* dX, float* dparams, float* scratch, int N, const TX* dXout) {
    const SiteDev& s = site.dev;
    if (N <= 0) return;
    if (residual(s)) {
        each((long)N * s.C, AddInto<TX>{dX, dXout, du});
        return;
    }
    ConnScratch sc;
    detail::conn_scratch_layout(s, N, scratch, &sc);
    const long Nr = (long)N * s.rpt;
    MHC_LAUNCH(k_pre_dhpre<TX>, warp_blocks(N), kThreads, s, X, du, sc.dhpre, N);
    constexpr bool bf16_streams = std::is_same_v<TX, bf16>;
    detail::coef_backward(s, params, cache, sc.dhpre, sc.G, sc.PZ, bf16_streams ? sc.parts : nullptr, sc.trace, N);
    colsum(N, 2 * s.W, StaticScaleTerm{s, sc.G, cache}, StoreSums{sc.sums});
    each((long)s.Dp * s.prow, FoldGain{s, params, sc.Wf});
    const detail::Proj D = weight_sums(s, sc, X, Nr);  // Xᵀ dZ
    if (s.variant != (int)Variant::hc) {  // dX with dZ Wfᵀ made in place
        const long chunks = (s.Dp + kTileCols - 1) / kTileCols, tiles = (N + kTileRows - 1) / kTileRows;
        MHC_LAUNCH(k_pre_backward_fused<TX>, flat_grid(chunks, tiles, "conn_pre_backward"), kThreads, s, cache, X, du, sc.PZ, sc.Wf, dX, dXout, N);
    } else {  // hc (k_pre_backward_fused)
        gemm(false, true, (int)Nr, s.Dp, s.prow, 1.0f, sc.PZ, s.prow, sc.Wf, s.prow, 0.0f, sc.E, s.Dp);  // dZ Wfᵀ
        MHC_LAUNCH(k_pre_backward_x<TX>, warp_blocks(Nr), kThreads, s, cache, X, du, sc.E, dX, dXout, Nr);
    }
    each(s.Dp, WeightGrads{s, params, D, sc.sums, dparams});
}

// The streams' storage: fp32, or bf16 (dtype bf16); the branch output's likewise.
#define MHC_CONN_STREAMS(TX)                                                                                        \
    template void conn_pre_forward<TX>(const ConnSiteCuda&, const float*, const TX*, float*, float*, float*, int,   \
                                       const double*);                                                              \
    template void conn_pre_backward<TX>(const ConnSiteCuda&, const float*, const float*, const TX*, const float*,   \
                                        TX*, float*, float*, int, const TX*);
#define MHC_CONN_POST(TX, TY)                                                                                       \
    template void conn_post_forward<TX, TY>(const ConnSiteCuda&, const float*, const TX*, const TY*, TX*, int,      \
                                            double*);                                                               \
    template void conn_post_backward<TX, TY, float>(const ConnSiteCuda&, float*, const TX*, const TY*, const TX*,  \
                                                    TX*, float*, int);                                              \
    template void conn_post_backward<TX, TY, bf16>(const ConnSiteCuda&, float*, const TX*, const TY*, const TX*,   \
                                                   TX*, bf16*, int);
MHC_CONN_STREAMS(float)
MHC_CONN_STREAMS(bf16)
MHC_CONN_POST(float, float)
MHC_CONN_POST(float, bf16)
MHC_CONN_POST(bf16, float)
MHC_CONN_POST(bf16, bf16)
#undef MHC_CONN_STREAMS
#undef MHC_CONN_POST

}  // namespace mhc::cuda
