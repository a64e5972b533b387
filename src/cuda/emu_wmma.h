// The emulation's warp matrix products (CUDA's <mma.h>, namespace nvcuda::wmma): the 16 x 16 x 16
// shape with bf16 operands and fp32 accumulators, the part the tensor-core kernels use. Each lane
// holds the whole tile (the hardware spreads it over the warp in an unspecified layout, so the
// kernels never touch a fragment's elements). It checks what the hardware requires: 32-byte aligned
// pointers and leading dimensions of whole 16-byte rows. A store writes only the lane's share of the
// tile, as on the GPU, so a lane that reads what others stored with no __syncwarp between reads
// stale values here too. The loads and products are not barriers (they are not on the GPU).
#pragma once
#include <type_traits>

#include "cuda/emu.h"

namespace mhc::emu {
// A 16 x 16 tile from p (row r at p + r·ldm when row, else column c at p + c·ldm), checked as the
// hardware checks a tile pointer (32-byte aligned) and its leading dimension (whole 16-byte rows).
void wmma_load(float (*v)[16], const __nv_bfloat16* p, unsigned ldm, bool row);
void wmma_load(float (*v)[16], const float* p, unsigned ldm, bool row);
void wmma_store(float* p, const float (*v)[16], unsigned ldm, bool row);  // the calling lane's share
void wmma_mma(float (*d)[16], const float (*a)[16], const float (*b)[16], const float (*c)[16]);  // d = a·b + c
}  // namespace mhc::emu

namespace nvcuda::wmma {

struct matrix_a;
struct matrix_b;
struct accumulator;
struct row_major;
struct col_major;
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulation has the m16n16k16 shape only");
    float v[16][16];  // the logical tile, row by row (an operand's values are bf16's)
};

template <typename Use, typename T, typename L> void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float x) {
    const float v = std::is_same_v<T, __nv_bfloat16> ? __bfloat162float(__float2bfloat16(x)) : x;
    for (auto& row : f.v)
        for (float& e : row) e = v;
}

// The work is done once, out of line, in cuda/emu.cpp (mhc::emu::wmma_*): these only forward.
template <typename Use, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, L>& f, const __nv_bfloat16* p, unsigned ldm) {
    static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>);
    ::mhc::emu::wmma_load(f.v, p, ldm, std::is_same_v<L, row_major>);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
    ::mhc::emu::wmma_load(f.v, p, ldm, l == mem_row_major);
}
// Writes the lane's share only: the elements r·16 + c ≡ lane (mod 32).
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
    ::mhc::emu::wmma_store(p, f.v, ldm, l == mem_row_major);
}
// d = a · b + c: each product exact in fp32 (bf16 operands), the sums in fp32 in k order.
template <typename La, typename Lb>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, La>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, Lb>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
    ::mhc::emu::wmma_mma(d.v, a.v, b.v, c.v);
}

}  // namespace nvcuda::wmma
