// Hyper-connection sites on the GPU: the four functions of mhc/conn.h with the same signatures and
// semantics (what is overwritten, what accumulates), device pointers, and the CPU's per-token
// cache layout (ConnSite::c_*), so diagnostics and tests read a downloaded cache as the CPU's.
// The streams X and the branch output y are stored in fp32 or (dtype bf16) in bf16: TX, TY. Every
// computation is fp32 or double whatever the storage (SPEC §5); a bf16 value is read as its fp32
// value, and an output stream is rounded to bf16 once, as it is stored.
// Every variant of the CPU (residual, hc, mhc, mhc-lite with any permutation list, kromhc, jpmhc with
// the fixed point or the exact transform, ohc), n 1..8.
//   projections x̂·[W1|W2] and the parameter-gradient sums over tokens: cuBLAS GEMMs (from bf16
//   streams still fp32 products: the fp32 factor split in three bf16 parts, conn.cu);
//   per-token coefficient maths (SPEC §2): one thread per token, in double, as conn/coef.cpp;
//   dot products and sums over tokens: fixed-order reductions in double (no atomics).
#pragma once
#include "cuda/cuda.h"
#include "mhc/conn.h"

namespace mhc::cuda {

// What the kernels need of a site, passed by value: sizes, cache offsets, the device copies of its
// tables. Field meanings as in ConnSite.
struct SiteDev {
    int variant;  // (int)Variant
    int n, C, rpt, Dp, M1, M2, prow, W, stride, K, n_extra, iters, nres;
    int c_hpre, c_hres, c_hpost, c_logit, c_rs, c_extra, c_dhres, c_dhpost;
    long o_gamma, o_W1, o_W2;
    const long* col_scale;   // [W] offset of each pre-activation's scale parameter
    const long* col_static;  // [W] and of its static value
    const int* pre_col;      // [n]
    const int* res_col;      // [nres]
    const int* perms;        // [K * n] mhc-lite, else null
};

// A site's device twin, built once from a ConnSite (which must outlive it).
struct ConnSiteCuda {
    const ConnSite* site = nullptr;
    SiteDev dev{};
    DeviceBuffer<long> col_scale, col_static;
    DeviceBuffer<int> pre_col, res_col, perms;
};
ConnSiteCuda conn_site_cuda(const ConnSite& site);

// Floats of device scratch conn_pre_forward / conn_pre_backward need for N tokens (the GPU works on
// all tokens at once, so unlike conn_scratch_size it grows with N). 0 for residual.
long conn_scratch_size_cuda(const ConnSite& site, int N);
// The largest stack frame (localSizeBytes, bytes a thread) of the kernels the site launches, which
// the driver reserves for every thread the device holds (cuda.h: reserve_stack). Only the
// one-thread-per-token coefficient kernels have frames past the first 1 KB the driver reserves
// (scripts/kernel_resources.sh fails should another kernel grow one).
size_t conn_stack_bytes_cuda(const ConnSite& site);

// TX, TY: float or bf16 (every combination).
// X [N,n,C] -> u [N,C] (overwritten); cache [N,stride] (overwritten); scratch: conn_scratch_size_cuda.
// residual (n = 1): u may be X's own storage (the caller then reads u as X is stored, as the GPU
// model does), and only the cache is written.
// ss [N,n], when given: the sum of squares of each stream of X per token (conn_post_forward's, for
// the site before), from which the norms come instead of another read of X.
template <typename TX>
void conn_pre_forward(const ConnSiteCuda& s, const float* params, const TX* X, float* u, float* cache,
                      float* scratch, int N, const double* ss = nullptr);
// X [N,n,C], y [N,C] -> Xout [N,n,C] (overwritten; must not alias X). Reads the cache of pre. One
// pass per token; with ss [N,n] (overwritten) it also sums the squares of each stream of Xout as
// stored (in double), which the next site's conn_pre_forward takes for its norms.
template <typename TX, typename TY>
void conn_post_forward(const ConnSiteCuda& s, const float* cache, const TX* X, const TY* y, TX* Xout, int N,
                       double* ss = nullptr);
// dXout [N,n,C] -> dX [N,n,C] OVERWRITTEN with the post's share, dy [N,C] OVERWRITTEN; writes dH_res,
// dH_post into the cache for conn_pre_backward. Call it first in backward. The streams' gradients
// dXout and dX are stored as the streams are (bf16: rounded once, as written); dy is fp32, or
// (TD bf16: the branch's last linear layer's output gradient, dtype bf16) rounded once.
// dX null: the post's share is left to conn_pre_backward (its dXout), which makes it in its own pass.
template <typename TX, typename TY, typename TD>
void conn_post_backward(const ConnSiteCuda& s, float* cache, const TX* X, const TY* y, const TX* dXout, TX* dX,
                        TD* dy, int N);
// du [N,C] -> dX [N,n,C] ACCUMULATED (+=), dparams ACCUMULATED (+=) for every parameter.
// dXout given (the post's backward ran with dX null): dX [N,n,C] OVERWRITTEN with the post's share
// from dXout (conn_post_backward's sums, in its order) plus the pre's, rounded once; one write and
// one read of dX fewer. dXout must not alias dX.
template <typename TX>
void conn_pre_backward(const ConnSiteCuda& s, const float* params, const float* cache, const TX* X,
                       const float* du, TX* dX, float* dparams, float* scratch, int N,
                       const TX* dXout = nullptr);

// mhc/conn.h's stream_gram on the device: X [N,n,C] -> G [N,n,n] (overwritten), each product in
// double (the lanes' strided shares added in a fixed tree: the same bits every run, not the CPU's
// order). conn/diag.cu.
template <typename TX> void stream_gram(const TX* X, int N, int n, int C, double* G);

namespace detail {

// The pieces of a site's scratch for N tokens (each 256-byte aligned when base is). Returns the
// floats used; with base null it only counts.
struct ConnScratch {
    float* Wf;      // [Dp, prow]  diag(1 + gamma) [W1 | W2]
    float* PZ;      // [N*rpt, prow] projections (forward), their gradients dZ (backward)
    float* G;       // [N, W]  dL/d pre-activation
    float* E;       // [N*rpt, Dp]  dZ · Wfᵀ (hc; null for the others)
    float* Dsum;    // [Dp, prow]  Xᵀ dZ
    double* dhpre;  // [N, n]
    double* sums;   // [2W]  sums over tokens of G and G·f
    float* split;   // [max(N*rpt, Dp), parts_ld(prow)] bf16 streams: the products of a factor's three
                    // bf16 parts
    bf16* parts;    // [max(N*rpt, Dp), parts_ld(prow)] those parts (Wf's forward, dZ's backward)
    double* trace;  // token index fastest: mhc [2·iters·n², N] the Sinkhorn half steps; jpmhc
                    // [iters·n², N] the fixed point's iterates (none when exact)
};
long conn_scratch_layout(const SiteDev& s, int N, float* base, ConnScratch* out);
// A row of three parts of m values, padded to a multiple of 8 (16 bytes of bf16: the tensor
// cores' products want such leading dimensions).
__host__ __device__ inline int parts_ld(int m) { return (3 * m + 7) / 8 * 8; }

// The raw projections of the tokens' rows (not yet scaled by their rs), as the product left them:
// P [N*rpt, prow] fp32, or (parts) the products of the three parts [N*rpt, parts_ld(prow)], added
// where they are read (conn/parts.cuh).
struct Proj {
    const float* P;
    bool parts;
};
// The per-token coefficient kernels (conn/coef.cu).
// P -> the cache rows' f, H_pre, H_res, H_post and extra values; with ss [N,n] (conn_pre_forward's)
// the rows' rs too (else they are in the cache already).
void coef_forward(const SiteDev& s, const float* params, Proj P, const double* ss, float* cache, int N);
// From the cache (with dH_res, dH_post) and dhpre [N, n] -> G [N, W] and the projections' gradients
// dZ [N*rpt, prow] (overwritten); parts given: dZ's three parts [N*rpt, parts_ld(prow)] too.
void coef_backward(const SiteDev& s, const float* params, const float* cache, const double* dhpre, float* G,
                   float* dZ, bf16* parts, double* trace, int N);
// The largest stack frame of the kernels those two launch for s (conn_stack_bytes_cuda).
size_t coef_stack_bytes(const SiteDev& s);

}  // namespace detail

}  // namespace mhc::cuda
