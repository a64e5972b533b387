// The tensor cores' warp matrix product mma.sync.m16n8k16 with bf16 operands and fp32 accumulators,
// through its documented register layout (PTX ISA, "Matrix fragments for mma.m16n8k16"). Unlike
// wmma's fragments, whose layout is unspecified, these let a kernel compute on a product's elements
// in registers (a softmax on the scores, then the probabilities straight into the next product).
// Lane l = 4g + t holds (a pair: two bf16 in 32 bits, the lower index in the lower half)
//   A [16 x 16]:   a0 = (g, 2t..2t+1), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..)
//   B [16 x 8]:    b0 = (rows 2t..2t+1, column g), b1 = (rows 2t + 8.., column g)
//   C, D [16 x 8]: d0, d1 = (g, 2t), (g, 2t + 1); d2, d3 = (g + 8, 2t), (g + 8, 2t + 1)
// so two adjacent D tiles (columns 0-7 and 8-15), rounded to pairs, are an A fragment (a_from_d).
// The emulation (cuda/emu.cpp) rebuilds the tiles from the same layout.
#pragma once
#include <cstdint>

#include "cuda/device.cuh"

namespace mhc::cuda {

MHC_DEV uint32_t bf16_bits(bf16 x) {
#if MHC_CUDA_EMU
    return x.bits;
#else
    return __bfloat16_as_ushort(x);
#endif
}
// Two values rounded to bf16, as a pair (lo in the lower half).
MHC_DEV uint32_t pack_bf16(float lo, float hi) {
    return bf16_bits(__float2bfloat16(lo)) | bf16_bits(__float2bfloat16(hi)) << 16;
}
// The pair at p (4-byte aligned).
MHC_DEV uint32_t load_pair(const bf16* p) { return load_as<uint32_t>(p); }

// d += a · b.
MHC_DEV void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if MHC_CUDA_EMU
    ::mhc::emu::mma16816(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// A = the [16 x 16] block at M of a row-major matrix (row stride ld).
MHC_DEV void load_a(uint32_t (&a)[4], const bf16* M, int ld, int g, int t) {
    a[0] = load_pair(M + g * ld + 2 * t);
    a[1] = load_pair(M + (g + 8) * ld + 2 * t);
    a[2] = load_pair(M + g * ld + 2 * t + 8);
    a[3] = load_pair(M + (g + 8) * ld + 2 * t + 8);
}
// B [16 x 8] whose column n is row n of the row-major X at X (B = Xᵀ's block: a product with
// X's rows, as Q·Kᵀ with K's).
MHC_DEV void load_b_rows(uint32_t (&b)[2], const bf16* X, int ld, int g, int t) {
    b[0] = load_pair(X + g * ld + 2 * t);
    b[1] = load_pair(X + g * ld + 2 * t + 8);
}
// B [16 x 8] = the block at X of a row-major matrix (as P·V with V's rows as B's rows).
MHC_DEV void load_b(uint32_t (&b)[2], const bf16* X, int ld, int g, int t) {
    b[0] = bf16_bits(X[2 * t * ld + g]) | bf16_bits(X[(2 * t + 1) * ld + g]) << 16;
    b[1] = bf16_bits(X[(2 * t + 8) * ld + g]) | bf16_bits(X[(2 * t + 9) * ld + g]) << 16;
}
// The A fragment of two adjacent D tiles (columns 0-7 in d0, 8-15 in d1), each value rounded to bf16.
MHC_DEV void a_from_d(uint32_t (&a)[4], const float (&d0)[4], const float (&d1)[4]) {
    a[0] = pack_bf16(d0[0], d0[1]);
    a[1] = pack_bf16(d0[2], d0[3]);
    a[2] = pack_bf16(d1[0], d1[1]);
    a[3] = pack_bf16(d1[2], d1[3]);
}

}  // namespace mhc::cuda
