// Ops over the model's n residual streams outside the connection sites: their sum before the LM
// head (SPEC §3: ln_f on each stream, then the streams are summed).
#include <algorithm>

#include "ops/ops.h"

namespace mhc {

template <typename T> void stream_sum_forward(T* out, const T* X, int N, int n, int C) {
#pragma omp parallel for schedule(static) if ((long)N * n * C >= 65536)
    for (int t = 0; t < N; t++)
        for (int c = 0; c < C; c++) {
            T acc = 0;
            for (int s = 0; s < n; s++) acc += X[((long)t * n + s) * C + c];
            out[(long)t * C + c] = acc;
        }
}

// The sum hands every stream the same gradient.
template <typename T> void stream_sum_backward(T* dX, const T* dout, int N, int n, int C) {
#pragma omp parallel for schedule(static) if ((long)N * n * C >= 65536)
    for (int t = 0; t < N; t++)
        for (int s = 0; s < n; s++)
            std::copy(dout + (long)t * C, dout + (long)(t + 1) * C, dX + ((long)t * n + s) * C);
}

#define MHC_STREAMS_INST(T)                                                 \
    template void stream_sum_forward<T>(T*, const T*, int, int, int);       \
    template void stream_sum_backward<T>(T*, const T*, int, int, int);
MHC_STREAMS_INST(float)
MHC_STREAMS_INST(double)

}  // namespace mhc
