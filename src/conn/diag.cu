// SPEC §6's stream similarity on the GPU (conn/conn_cuda.h): the per-token products of the streams
// that mhc/conn.h's stream_similarity_of_gram reads, so that diagnostics download n² doubles a token
// instead of the n·C stream values.
#include "conn/conn_cuda.h"
#include "cuda/device.cuh"

namespace mhc::cuda {

namespace {

constexpr int kWarps = kThreads / 32;

// A warp per (token, pair s <= t): ⟨X_s, X_t⟩ over the channels, each lane's strided share in
// channel order, then the warp's fixed tree; lane 0 writes both G[s][t] and G[t][s].
template <typename TX> __global__ void k_stream_gram(const TX* X, long N, int n, int C, double* G) {
    const int pairs = n * (n + 1) / 2, lane = threadIdx.x & 31;
    const long w = (long)blockIdx.x * kWarps + (threadIdx.x >> 5);
    if (w >= N * pairs) return;  // the whole warp
    const long tok = w / pairs;
    int p = (int)(w % pairs), s = 0;
    while (p >= n - s) p -= n - s, s++;
    const int t = s + p;
    const TX *xs = X + (tok * n + s) * C, *xt = X + (tok * n + t) * C;
    double dot = 0;
    for (int c = lane; c < C; c += 32) dot += (double)as_float(xs[c]) * (double)as_float(xt[c]);
    dot = warp_sum(dot);
    if (lane == 0) G[(tok * n + s) * n + t] = G[(tok * n + t) * n + s] = dot;
}

}  // namespace

template <typename TX> void stream_gram(const TX* X, int N, int n, int C, double* G) {
    if (N <= 0 || n <= 0) return;
    const long warps = (long)N * (n * (n + 1) / 2);
    MHC_LAUNCH(k_stream_gram<TX>, (unsigned)((warps + kWarps - 1) / kWarps), kThreads, X, (long)N, n, C, G);
}

template void stream_gram<float>(const float*, int, int, int, double*);
template void stream_gram<bf16>(const bf16*, int, int, int, double*);

}  // namespace mhc::cuda
