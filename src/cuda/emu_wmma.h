// The emulation's warp matrix products (CUDA's <mma.h>, namespace nvcuda::wmma): the 16 x 16 x 16
// shape with bf16 operands and fp32 accumulators, the part the tensor-core kernels use. Each lane
// holds the whole tile (the hardware spreads it over the warp in an unspecified layout, so the
// kernels never touch a fragment's elements). It checks what the hardware requires: 32-byte aligned
// pointers and leading dimensions of whole 16-byte rows. A store writes only the lane's share of the
// tile, as on the GPU, so a lane that reads what others stored with no __syncwarp between reads
// stale values here too. The loads and products are not barriers (they are not on the GPU).
#pragma once
#include <cstdint>
#include <type_traits>

#include "cuda/emu.h"

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

namespace detail {
template <typename T> void check_operand(const T* p, unsigned ldm) {
    if ((uintptr_t)p % 32) ::mhc::emu::fault("wmma: a tile pointer not aligned to 32 bytes");
    if (ldm % (16 / sizeof(T))) ::mhc::emu::fault("wmma: a leading dimension that is not whole 16-byte rows");
}
// The offset of element (r, c) of a tile: row r at r·ldm (row major), or column c at c·ldm.
inline long at(unsigned ldm, bool row, int r, int c) { return row ? (long)r * ldm + c : (long)c * ldm + r; }
}  // namespace detail

template <typename Use, typename T, typename L> void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float x) {
    const float v = std::is_same_v<T, __nv_bfloat16> ? __bfloat162float(__float2bfloat16(x)) : x;
    for (auto& row : f.v)
        for (float& e : row) e = v;
}

template <typename Use, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, L>& f, const __nv_bfloat16* p, unsigned ldm) {
    static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>);
    detail::check_operand(p, ldm);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.v[r][c] = __bfloat162float(p[detail::at(ldm, std::is_same_v<L, row_major>, r, c)]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
    detail::check_operand(p, ldm);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.v[r][c] = p[detail::at(ldm, l == mem_row_major, r, c)];
}

// The lane's share: the elements r·16 + c ≡ lane (mod 32).
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
    detail::check_operand(p, ldm);
    for (int e = (int)emu_lane(); e < 256; e += 32) {
        const int r = e / 16, c = e % 16;
        p[detail::at(ldm, l == mem_row_major, r, c)] = f.v[r][c];
    }
}

// d = a · b + c: each product exact in fp32 (bf16 operands), the sums in fp32 in k order.
template <typename La, typename Lb>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, La>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, Lb>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[16][16];
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) {
            float s = c.v[r][n];
            for (int k = 0; k < 16; k++) s += a.v[r][k] * b.v[k][n];
            out[r][n] = s;
        }
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) d.v[r][n] = out[r][n];
}

}  // namespace nvcuda::wmma
