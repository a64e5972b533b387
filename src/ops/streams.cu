// The sum of the n streams before the LM head, on the GPU (ops/streams.cpp).
#include "cuda/device.cuh"
#include "ops/ops_cuda.h"

namespace mhc::cuda {

namespace {

struct StreamSum {  // out[t, c] = Σ_s X[t, s, c], in stream order, in fp32 as the CPU
    float* out;
    const float* X;
    int n, C;
    MHC_DEV void operator()(long i) const {
        const long t = i / C, c = i % C;
        float acc = 0.0f;
        for (int s = 0; s < n; s++) acc += X[(t * n + s) * C + c];
        out[i] = acc;
    }
};

struct StreamSumBackward {  // dX[t, s, c] = dout[t, c]
    float* dX;
    const float* dout;
    int n, C;
    MHC_DEV void operator()(long i) const { dX[i] = dout[i / ((long)n * C) * C + i % C]; }
};

}  // namespace

void stream_sum_forward(float* out, const float* X, int N, int n, int C) { each((long)N * C, StreamSum{out, X, n, C}); }

void stream_sum_backward(float* dX, const float* dout, int N, int n, int C) {
    each((long)N * n * C, StreamSumBackward{dX, dout, n, C});
}

}  // namespace mhc::cuda
