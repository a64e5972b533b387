// mhc/conn.h — one hyper-connection site (SPEC.md §1–2, §4, §6): the public API.
//
// A site wraps one branch F (attention or MLP) of a residual network carrying n streams per token:
//   pre:  streams X [N, n, C]            -> branch input u = Σ_s H_pre[s]·X_s          [N, C]
//   post: streams X, branch output y     -> X'_t = Σ_s H_res[s][t]·X_s + H_post[t]·y   [N, n, C]
// Variants: residual, hc, mhc (Sinkhorn), mhc-lite (permutation mixture), kromhc (Kronecker),
// jpmhc (Cayley transform), ohc (quaternion rotations); the table of them is mhc/variant.h.
//
// Usage (see README): build a ConnSite once from a ConnConfig, lay out its parameters in a flat buffer
// of conn_param_count() values, size a per-token cache and a scratch buffer, then call
//   forward:  conn_pre_forward -> (your branch) -> conn_post_forward
//   backward: conn_post_backward -> (your branch backward) -> conn_pre_backward
// Template parameters: T is the storage type of the streams (float, double; later bf16 on the GPU),
// R the type of parameters and coefficients (float in training: SPEC §5; double for gradient checks).
// Coefficient arithmetic is accumulated in double internally whatever R is (it is a tiny cost).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mhc/variant.h"

namespace mhc {

struct ConnConfig {
    Variant variant = Variant::mhc_lite;
    int n = 4;                 // number of streams, 1..8 (residual: 1; kromhc: a power of two; ohc: 4)
    int C = 0;                 // width of one stream
    int site_index = 0;        // primary stream r = site_index mod n (SPEC §2)
    int sinkhorn_iters = 20;   // mhc only, >= 1
    int cayley_iters = 2;      // jpmhc only, >= 0: fixed-point iterations (the paper's 2), 0 = exact transform
    // mhc-lite permutations. Empty `perms` and perm_subset == 0: all n! (allowed for n <= 6).
    // perm_subset = K > 0: the identity plus K-1 other permutations drawn with perm_seed.
    // Non-empty `perms` (K*n values, row k = π_k): use exactly these (e.g. read from a checkpoint);
    // row 0 must be the identity.
    int perm_subset = 0;
    uint64_t perm_seed = 0;
    std::vector<int> perms;
};

// One named parameter tensor inside a site's flat parameter buffer.
struct ParamTensor {
    std::string name;          // SPEC §4 name, e.g. "dynamic_alpha_fn"
    std::vector<int> shape;    // SPEC §4 shape ({} for a scalar)
    long offset = 0;           // into the flat buffer
    long size = 0;             // number of values
    bool decay = false;        // AdamW weight decay applies (dynamic_*_fn only, SPEC §5)
};

// A validated site: the config plus everything derived from it. Built once, read-only after.
struct ConnSite {
    ConnConfig cfg;
    int n = 1, C = 0, r = 0;
    int K = 0;                 // mhc-lite: number of permutations; kromhc: number of 2x2 factors
    int M = 0;                 // columns of dynamic_alpha_fn (hc: 1+n)
    std::vector<int> perms;    // mhc-lite: K*n, row k = π_k (row 0 = identity)
    // The SPEC §2 family: the variant's H_res maths, and where its logits sit among the M columns
    // of dynamic_alpha_fn / static_alpha: H_pre[i] from column pre_col[i], res logit k from res_col[k].
    const detail::Mixer* mixer = nullptr;
    std::vector<int> pre_col, res_col, alpha_shape;  // alpha_shape: static_alpha's SPEC §4 shape
    int n_extra = 0;           // values per token the mixer caches for its backward
    std::vector<ParamTensor> params;
    long nparams = 0;
    // The projections: each token has `rpt` rows (1; hc: n, one per stream) of width Dp (nC; hc: C),
    // normalised and multiplied by W1 (Dp x M1, dynamic_alpha_fn) and W2 (Dp x M2, dynamic_beta_fn)
    // into a row of prow = M1 + M2 pre-activations. Each column j of a token's rpt*prow values is
    // l_j = scale * f(proj_j) + static, f = identity (tanh for hc); the offsets of that scale and
    // static value in the parameter buffer are col_scale[j] and col_static[j].
    int rpt = 1, Dp = 0, M1 = 0, M2 = 0, prow = 0;
    long o_gamma = 0, o_W1 = 0, o_W2 = 0;
    std::vector<long> col_scale, col_static;
    // Per-token cache layout (values of type R), see conn_cache_stride().
    int c_hpre = 0, c_hres = 0, c_hpost = 0, c_logit = 0, c_zlogit = 0, c_rs = 0, c_extra = 0;
    int c_dhres = 0, c_dhpost = 0, stride = 0;
};

// Validates cfg and derives the site. Throws std::invalid_argument with a one-line message naming
// the problem (n out of range, kromhc n not a power of two, ohc n != 4, mhc-lite n! too large
// without a subset, subset larger than n!, bad explicit permutations, C < 1, sinkhorn_iters < 1,
// cayley_iters < 0, ...).
ConnSite conn_site_make(const ConnConfig& cfg);

long conn_param_count(const ConnSite& site);
const ParamTensor* conn_param_find(const ConnSite& site, const std::string& name);  // or nullptr
// Values per token in the cache (coefficients for backward and diagnostics, and the gradients of
// H_res / H_post that conn_post_backward hands to conn_pre_backward).
int conn_cache_stride(const ConnSite& site);
// Values of scratch needed by conn_pre_forward / conn_pre_backward for N tokens.
long conn_scratch_size(const ConnSite& site, int N);

// Writes the initial values of SPEC §2 into params[0 .. conn_param_count).
template <typename R> void conn_init_params(const ConnSite& site, R* params);

// ---- forward / backward -------------------------------------------------------------------------
// X [N,n,C] -> u [N,C] (overwritten); cache [N,stride] (overwritten); scratch: conn_scratch_size.
template <typename T, typename R>
void conn_pre_forward(const ConnSite& site, const R* params, const T* X, T* u, R* cache,
                      R* scratch, int N);

// X [N,n,C], y [N,C] -> Xout [N,n,C] (overwritten; must not alias X). Reads the cache of pre.
template <typename T, typename R>
void conn_post_forward(const ConnSite& site, const R* cache, const T* X, const T* y, T* Xout, int N);

// dXout [N,n,C] -> dX [N,n,C] OVERWRITTEN with the post's share, dy [N,C] OVERWRITTEN.
// Also writes dH_res, dH_post into the cache for conn_pre_backward. Call it first in backward.
template <typename T, typename R>
void conn_post_backward(const ConnSite& site, R* cache, const T* X, const T* y, const T* dXout,
                        T* dX, T* dy, int N);

// du [N,C] -> dX [N,n,C] ACCUMULATED (+=), dparams ACCUMULATED (+=) for every parameter.
// Needs the cache as left by conn_post_backward.
template <typename T, typename R>
void conn_pre_backward(const ConnSite& site, const R* params, const R* cache, const T* X,
                       const T* du, T* dX, R* dparams, R* scratch, int N);

// ---- pieces exposed for tests and diagnostics ---------------------------------------------------
// Log-domain Sinkhorn–Knopp (SPEC §2, mhc): L [n,n] logits -> H [n,n] = exp(L after `iters`
// column-then-row normalisations).
template <typename R> void sinkhorn_forward(const R* L, int n, int iters, R* H);

// Coefficients of token t from the cache: H_pre [n], H_res [n,n] (H_res[s][t]), H_post [n].
template <typename R> const R* cache_hpre(const ConnSite& s, const R* cache, int tok);
template <typename R> const R* cache_hres(const ConnSite& s, const R* cache, int tok);
template <typename R> const R* cache_hpost(const ConnSite& s, const R* cache, int tok);

// ---- diagnostics (SPEC §6) ----------------------------------------------------------------------
struct DSError {
    double sum_err = 0;    // max |row sum - 1|, |col sum - 1| over rows and columns
    double min_entry = 0;  // most negative entry (the smallest entry)
    double value() const { return sum_err > -min_entry ? sum_err : -min_entry; }  // both in one
};
template <typename R> DSError ds_error(const R* H, int n);

struct Gain { double fwd = 0, bwd = 0; };  // max abs row sum / max abs column sum of A
// Gains of the map A = H_resᵀ a site applies (H given as H[s][t]).
template <typename R> Gain map_gain_of_hres(const R* H, int n);

// Orthogonality error of H [n,n]: max |(HᵀH − I)[i][j]|.
template <typename R> double orth_error(const R* H, int n);
// Singular values of A [n,n], n <= 8, largest first, into sv [n] (cyclic Jacobi on AᵀA, double).
void singular_values(const double* A, int n, double* sv);
// Stream similarity of X [N,n,C]: the mean over the N tokens of the mean pairwise cosine similarity
// of the n stream vectors X_s (a zero vector's similarity is 0). NaN for n < 2 (no pairs) or N = 0.
// It is stream_similarity_of_gram of stream_gram's products (the GPU makes those on the device).
template <typename T> double stream_similarity(const T* X, int N, int n, int C);
// X [N,n,C] -> G [N,n,n] (overwritten): each token's ⟨X_s, X_t⟩, in double, c in order.
template <typename T> void stream_gram(const T* X, int N, int n, int C, double* G);
double stream_similarity_of_gram(const double* G, int N, int n);

struct Stat { double mean = 0, max = 0; };

// Per-site statistics over the N tokens of a forward pass (from the cache).
struct SiteDiag {
    Stat ds;                // DS error of H_res (value())
    Stat orth;              // orthogonality error of H_res
    Stat fwd, bwd;          // gains of A = H_resᵀ
    bool has_nu = false;    // mhc only: log(1/ν) = max - min of the pre-Sinkhorn logits
    Stat log_inv_nu;
    double frac_nu_above_30 = 0;
};
template <typename R> SiteDiag conn_site_diagnostics(const ConnSite& site, const R* cache, int N);

// Composite map through depth, per token: A_l ⋯ A_1 (double precision).
struct CompositeGain {
    int n = 1, N = 0;
    std::vector<double> A;  // [N, n, n]
    void reset(int N_, int n_);                      // identity per token
    template <typename R>
    void push(const ConnSite& site, const R* cache); // left-multiply by this site's A = H_resᵀ
    Stat fwd() const;                                // over tokens
    Stat bwd() const;
    struct Spectrum { Stat s1, s2; };                // σ_1, σ_2 of each token's composite map
    Spectrum spectrum() const;                       // over tokens; s2 is zero for n = 1
};

}  // namespace mhc
