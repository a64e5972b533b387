// The three-part split of an fp32 factor for the connections' products from bf16 streams (included
// by conn/conn.cu and conn/coef.cu, device code only).
// With bf16 streams the projections still multiply in fp32 (SPEC §5: the coefficients are fp32
// whatever the streams' storage), on the tensor cores: an fp32 factor w is split into three bf16
// parts, hi = bf16(w), mid = bf16(w - hi), lo = bf16(w - hi - mid), whose sum is w exactly (24
// significant bits in three of 8, each rounding to nearest: each remainder is exact in fp32). A
// bf16 stream value times a bf16 part is exact in fp32, so X · [hi | mid | lo] with fp32 sums,
// added back as (lo + mid) + hi, is an fp32 product of X and w.
#pragma once
#include "conn/conn_cuda.h"
#include "cuda/device.cuh"

namespace mhc::cuda::detail {

// w = hi + mid + lo exactly: *hi = bf16(w), *mid = bf16(w - hi), *lo = bf16(w - hi - mid); the
// three are `stride` apart.
MHC_DEV void split_parts(float w, bf16* hi, long stride) {
    const bf16 h = __float2bfloat16(w);
    const float r = w - __bfloat162float(h);
    const bf16 mid = __float2bfloat16(r);
    hi[0] = h, hi[stride] = mid, hi[2 * stride] = __float2bfloat16(r - __bfloat162float(mid));
}

// Value i of an [rows, m] matrix into its row of parts [rows, parts_ld(m)]: hi, then mid, then lo,
// then zeros up to the row's end (the tensor cores want rows of a multiple of 8 values).
MHC_DEV void split3(float w, long i, int m, bf16* parts) {
    const int ld = parts_ld(m), j = (int)(i % m);
    bf16* at = parts + (i / m) * ld + j;
    split_parts(w, at, m);
    for (int p = 3 * m; p < ld - j; p += m) at[p] = __float2bfloat16(0.0f);
}

// Value (row, j) of an [rows, m] product from the products of the three parts, prod [rows,
// parts_ld(m)]: (lo + mid) + hi, the small ones first.
MHC_DEV float parts_sum(const float* prod, long row, int j, int m) {
    const float* p = prod + row * parts_ld(m) + j;
    return (p[2 * m] + p[m]) + p[0];
}

}  // namespace mhc::cuda::detail
