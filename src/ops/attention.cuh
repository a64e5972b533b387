// What the two attention kernel families (attention.cu in fp32, attention_bf16.cu on the tensor
// cores) share: they are built for head sizes of 32, 64 and 128 channels, and a head of C / H
// channels runs in the smallest that holds it (the rest padded or idle).
#pragma once
#include "cuda/device.cuh"

namespace mhc::cuda {

inline int head_tile(int hs) { return hs <= 32 ? 32 : hs <= 64 ? 64 : 128; }

// kernel<head_tile(hs)> on (grid, threads).
#define MHC_HEAD_DISPATCH(kernel, hs, grid, threads, ...)                            \
    do {                                                                             \
        switch (::mhc::cuda::head_tile(hs)) {                                        \
            case 32: MHC_LAUNCH(kernel<32>, grid, threads, __VA_ARGS__); break;      \
            case 64: MHC_LAUNCH(kernel<64>, grid, threads, __VA_ARGS__); break;      \
            default: MHC_LAUNCH(kernel<128>, grid, threads, __VA_ARGS__); break;     \
        }                                                                            \
    } while (0)

// The same for kernels templated on their output's storage too: kernel<head_tile(hs), TO>.
#define MHC_HEAD_DISPATCH_TO(kernel, TO, hs, grid, threads, ...)                      \
    do {                                                                             \
        switch (::mhc::cuda::head_tile(hs)) {                                        \
            case 32: MHC_LAUNCH((kernel<32, TO>), grid, threads, __VA_ARGS__); break; \
            case 64: MHC_LAUNCH((kernel<64, TO>), grid, threads, __VA_ARGS__); break; \
            default: MHC_LAUNCH((kernel<128, TO>), grid, threads, __VA_ARGS__); break; \
        }                                                                            \
    } while (0)

}  // namespace mhc::cuda
