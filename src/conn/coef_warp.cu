// mhc-lite's and mhc's per-token coefficients with a warp per token (conn/coef.cuh). One thread per
// token (as conn/coef.cu does for the other variants) would leave a token's work in one long chain
// of dependent double operations: for mhc-lite at n = 4 about 60 exponentials, for mhc's 20
// Sinkhorn iterations some 800, each a few hundred cycles, so 10 to 100 µs a site whatever N, on
// few warps. Here the work spreads over the lanes: a lane per column for f, H_pre, H_post and
// mhc-lite's permutation weights, a lane per entry of the n × n matrices. Every sum the CPU makes in
// order (the softmax's z, the backward's dot, H_res's entries, each Sinkhorn line's Σ exp) stays
// serial in that order, its terms read across the warp by shuffles, so the values are the
// one-thread kernels' and the CPU's.
#include "conn/coef.cuh"

namespace mhc::cuda::detail {

namespace {

constexpr int kCols = 96;  // columns (2n + K or 2n + n²) up to this
constexpr int kWarpsPerBlock = 8;
constexpr unsigned kAll = 0xffffffffu;

// Each column's scale and static value (double) into shared memory, for the block's tokens.
MHC_DEV void tables(const SiteDev& s, const float* params, double* sc, double* st) {
    for (int j = threadIdx.x; j < s.W; j += blockDim.x)
        sc[j] = (double)params[s.col_scale[j]], st[j] = (double)params[s.col_static[j]];
    __syncthreads();
}

// Value e (< 64) of a warp-spread vector: lane e % 32 holds it in v[e / 32]. Every lane calls it
// with the same `count` (the vector's length); e may differ per lane.
MHC_DEV double get(const double (&v)[2], int e, int count) {
    const double lo = __shfl_sync(kAll, v[0], e & 31);
    if (count <= 32) return lo;
    const double hi = __shfl_sync(kAll, v[1], e & 31);
    return e < 32 ? lo : hi;
}

// f(q, i) for the lane's items i = lane + 32 q below count (q = 0, 1): unrolled, so that the
// two-slot arrays the items index stay in registers.
template <typename F> MHC_DEV void for_slots(int lane, int count, F&& f) {
#pragma unroll
    for (int q = 0; q < 2; q++)
        if (lane + 32 * q < count) f(q, lane + 32 * q);
}

// Σ_k v_k for k < count, in k order (every lane returns it).
MHC_DEV double sum_in_order(const double (&v)[2], int count) {
    double acc = 0;
    for (int k = 0; k < count; k++) acc += get(v, k, count);
    return acc;
}

// Entry e of line a of an n × n matrix: columns (a = e % n) or rows (a = e / n).
MHC_DEV int line_entry(bool rows, int n, int a, int b) { return rows ? a * n + b : b * n + a; }

// One log-sum-exp normalisation of every line of L (lanes over entries): lse_normalise's arithmetic
// (the line's max, Σ_b exp(l_b - m) in b order, m + log z), each exp made by its entry's lane.
MHC_DEV void lse_lines(double (&L)[2], int n, bool rows, int lane) {
    const int nn = n * n;
    double m[2] = {-INFINITY, -INFINITY}, e[2] = {0, 0};
#pragma unroll
    for (int q = 0; q < 2; q++) {  // (the slots past n² hold garbage, read by no lane that keeps it)
        if (q && nn <= 32) break;
        const int i = lane + 32 * q, a = (rows ? i / n : i % n) % n;
        for (int b = 0; b < n; b++) {
            const double v = get(L, line_entry(rows, n, a, b), nn);
            m[q] = v > m[q] ? v : m[q];
        }
        e[q] = exp(L[q] - m[q]);
    }
#pragma unroll
    for (int q = 0; q < 2; q++) {
        if (q && nn <= 32) break;
        const int i = lane + 32 * q, a = (rows ? i / n : i % n) % n;
        double z = 0;
        for (int b = 0; b < n; b++) z += get(e, line_entry(rows, n, a, b), nn);
        L[q] -= m[q] + log(z);
    }
}

// sinkhorn_log over the warp: `iters` column-then-row normalisations; with a trace, L after each
// half step (value i of step k at tr[(k·n² + i)·ts]).
MHC_DEV void sinkhorn_warp(double (&L)[2], int n, int iters, double* tr, long ts, int lane) {
    const int nn = n * n;
    for (int it = 0; it < iters; it++)
        for (int half = 0; half < 2; half++) {
            lse_lines(L, n, half == 1, lane);
            if (tr) for_slots(lane, nn, [&](int q, int i) { tr[((long)(2 * it + half) * nn + i) * ts] = L[q]; });
        }
}

// sinkhorn_log_backward over the warp: dL from dL/dL_final to dL/dL_initial.
MHC_DEV void sinkhorn_warp_backward(const double* tr, long ts, int n, int iters, double (&dL)[2], int lane) {
    const int nn = n * n;
    for (int step = 2 * iters - 1; step >= 0; step--) {
        const bool rows = step % 2 == 1;
        double sum[2] = {0, 0};
#pragma unroll
        for (int q = 0; q < 2; q++) {
            if (q && nn <= 32) break;
            const int i = lane + 32 * q, a = (rows ? i / n : i % n) % n;
            for (int b = 0; b < n; b++) sum[q] += get(dL, line_entry(rows, n, a, b), nn);
        }
        for_slots(lane, nn, [&](int q, int i) { dL[q] -= exp(tr[((long)step * nn + i) * ts]) * sum[q]; });
    }
}

__global__ void k_coef_forward_warps(SiteDev s, const float* params, Proj P, const double* ss, float* cache, int N) {
    __shared__ double sc[kCols], st[kCols];
    __shared__ float fs[kWarpsPerBlock][kCols];
    tables(s, params, sc, st);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, n = s.n, nn = n * n;
    const long tok = (long)blockIdx.x * kWarpsPerBlock + w;
    if (tok >= N) return;  // the whole warp
    float* c = cache + tok * s.stride;
    if (ss && lane == 0) c[s.c_rs] = row_rs_from_ss(s, ss, tok, 0);
    __syncwarp();
    const float rs = c[s.c_rs];
    for (int j = lane; j < s.prow; j += 32) c[s.c_logit + j] = fs[w][j] = proj(s, P, tok, j) * rs;
    __syncwarp();
    const auto pre = [&](int j) { return sc[j] * (double)fs[w][j] + st[j]; };  // preact's value
    if (lane < n) c[s.c_hpre + lane] = (float)sigm(pre(s.pre_col[lane]));
    else if (lane < 2 * n) c[s.c_hpost + lane - n] = (float)(2.0 * sigm(pre(s.M1 + lane - n)));
    float* extra = c + s.c_extra;
    double h[2] = {0, 0};  // H_res, lane t over entries t and t + 32
    if (s.variant == (int)Variant::mhc) {
        double L[2] = {0, 0};
        for_slots(lane, nn, [&](int q, int i) { L[q] = store(pre(s.res_col[i])), extra[i] = (float)L[q]; });
        sinkhorn_warp(L, n, s.iters, nullptr, 0, lane);
        for_slots(lane, nn, [&](int q, int) { h[q] = exp(L[q]); });
    } else {  // mhc-lite: a = softmax(l) over the K permutations, H[i][π_k(i)] += a_k in k order
        double l[2] = {-INFINITY, -INFINITY}, e[2] = {0, 0}, a[2] = {0, 0}, m = -INFINITY;
        for_slots(lane, s.K, [&](int q, int k) { l[q] = pre(s.res_col[k]), m = l[q] > m ? l[q] : m; });
        for (int o = 16; o > 0; o >>= 1) {
            const double v = __shfl_xor_sync(kAll, m, o);
            m = v > m ? v : m;
        }
        for_slots(lane, s.K, [&](int q, int) { e[q] = exp(l[q] - m); });
        const double z = sum_in_order(e, s.K);
        for_slots(lane, s.K, [&](int q, int k) { a[q] = exp(l[q] - m) / z, extra[k] = (float)a[q]; });
        for (int k = 0; k < s.K; k++) {
            const double ak = get(a, k, s.K);
            const int* pk = s.perms + (long)k * n;
            for_slots(lane, nn, [&](int q, int t) {
                if (pk[t / n] == t % n) h[q] += ak;
            });
        }
    }
    for_slots(lane, nn, [&](int q, int t) { c[s.c_hres + t] = (float)h[q]; });
}

__global__ void k_coef_backward_warps(SiteDev s, const float* params, const float* cache, const double* dhpre_all,
                                      float* Gall, float* dZ, bf16* parts, double* trace, int N) {
    __shared__ double sc[kCols], st[kCols];
    tables(s, params, sc, st);
    const int lane = threadIdx.x & 31, n = s.n, nn = n * n;
    const long tok = (long)blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
    if (tok >= N) return;  // the whole warp
    const float* c = cache + tok * s.stride;
    const float* f = c + s.c_logit;
    const float* dhres = c + s.c_dhres;
    const float* extra = c + s.c_extra;
    float* G = Gall + tok * s.W;
    const auto pre = [&](int j) { return sc[j] * (double)f[j] + st[j]; };
    if (lane < n) {
        const double lp = pre(s.pre_col[lane]);
        G[s.pre_col[lane]] = (float)(dhpre_all[tok * n + lane] * sigm(lp) * sigm(-lp));
    } else if (lane < 2 * n) {
        const int i = lane - n;
        const double lq = pre(s.M1 + i);
        G[s.M1 + i] = (float)((double)c[s.c_dhpost + i] * 2.0 * sigm(lq) * sigm(-lq));
    }
    if (s.variant == (int)Variant::mhc) {  // the exact gradient of the unrolled iterations
        double L[2] = {0, 0}, dl[2] = {0, 0};
        for_slots(lane, nn, [&](int q, int i) { L[q] = (double)extra[i]; });
        sinkhorn_warp(L, n, s.iters, trace + tok, N, lane);
        for_slots(lane, nn, [&](int q, int i) { dl[q] = (double)dhres[i] * exp(L[q]); });
        sinkhorn_warp_backward(trace + tok, N, n, s.iters, dl, lane);
        for_slots(lane, nn, [&](int q, int i) { G[s.res_col[i]] = (float)dl[q]; });
    } else {  // mhc-lite: dL/da_k = Σ_i dH[i][π_k(i)] (i order), then the softmax backward, dot in k order
        double da[2] = {0, 0}, ad[2] = {0, 0};
        for_slots(lane, s.K, [&](int q, int k) {
            const int* pk = s.perms + (long)k * n;
            for (int i = 0; i < n; i++) da[q] += (double)dhres[i * n + pk[i]];
            ad[q] = (double)extra[k] * da[q];
        });
        const double dot = sum_in_order(ad, s.K);
        for_slots(lane, s.K, [&](int q, int k) { G[s.res_col[k]] = (float)((double)extra[k] * (da[q] - dot)); });
    }
    __syncwarp();  // G is the warp's, written above
    for (int j = lane; j < s.W; j += 32) proj_grad(s, params, c, G, tok, j, dZ, parts);
}

unsigned blocks(int N) { return (unsigned)((N + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

bool coef_by_warps(const SiteDev& s) {
    if (s.W > kCols || s.rpt != 1) return false;
    if (s.variant == (int)Variant::mhc_lite) return s.K <= 64 && s.n * s.n <= 64;
    return s.variant == (int)Variant::mhc && s.n * s.n <= 64;
}

void coef_forward_warps(const SiteDev& s, const float* params, Proj P, const double* ss, float* cache, int N) {
    MHC_LAUNCH(k_coef_forward_warps, blocks(N), 32 * kWarpsPerBlock, s, params, P, ss, cache, N);
}

void coef_backward_warps(const SiteDev& s, const float* params, const float* cache, const double* dhpre, float* G,
                         float* dZ, bf16* parts, double* trace, int N) {
    MHC_LAUNCH(k_coef_backward_warps, blocks(N), 32 * kWarpsPerBlock, s, params, cache, dhpre, G, dZ, parts, trace,
               N);
}

size_t coef_stack_bytes_warps() {
    cudaFuncAttributes a{}, b{};
    MHC_CUDA_CHECK(cudaFuncGetAttributes(&a, k_coef_forward_warps));
    MHC_CUDA_CHECK(cudaFuncGetAttributes(&b, k_coef_backward_warps));
    return a.localSizeBytes > b.localSizeBytes ? a.localSizeBytes : b.localSizeBytes;
}

}  // namespace mhc::cuda::detail
