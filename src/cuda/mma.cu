// The fragment layout of cuda/mma.cuh, checked where it runs (test CudaBf16Ops.MmaFragmentLayout):
// the kernels compute on a product's elements in registers by that layout, so a wrong assumption
// about it would show as wrong attention; this names it directly.
#include "cuda/mma.cuh"

namespace mhc::cuda {

namespace {
// One warp: out [3][16][8] (see mma_layout_products).
__global__ void k_mma_layout(float* out, const bf16* A, const bf16* B, const bf16* Bt, const bf16* B2) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    uint32_t a[4], b[2], b2[2];
    load_a(a, A, 16, g, t);
    float d[4][4] = {};
    load_b(b, B, 8, g, t);
    mma16816(d[0], a, b);
    load_b_rows(b, Bt, 16, g, t);
    mma16816(d[1], a, b);
    load_b(b2, B2, 8, g, t);
    mma16816(d[2], a, b2);
    uint32_t p[4];
    a_from_d(p, d[0], d[2]);  // [A·B | A·B2], rounded, as an A fragment
    load_b(b, B, 8, g, t);
    mma16816(d[3], p, b);
    for (int k = 0; k < 3; k++) {
        const float* dk = d[k == 2 ? 3 : k];
        for (int e = 0; e < 4; e++) out[k * 128 + (g + 8 * (e >> 1)) * 8 + 2 * t + (e & 1)] = dk[e];
    }
}
}  // namespace

void mma_layout_products(float* out, const bf16* A, const bf16* B, const bf16* Bt, const bf16* B2) {
    MHC_LAUNCH(k_mma_layout, 1, 32, out, A, B, Bt, B2);
}

}  // namespace mhc::cuda
