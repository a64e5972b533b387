// AdamW, the learning-rate schedule and gradient clipping.
#include "mhc/optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mhc {

double lr_at(const TrainConfig& c, long it) {
    if (it < c.warmup_iters) return c.learning_rate * (double)(it + 1) / (double)(c.warmup_iters + 1);
    if (it > c.lr_decay_iters) return c.min_lr;
    if (c.lr_decay_iters == c.warmup_iters) return c.learning_rate;  // no decay phase
    const double ratio = (double)(it - c.warmup_iters) / (double)(c.lr_decay_iters - c.warmup_iters);
    const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
    return c.min_lr + coeff * (c.learning_rate - c.min_lr);
}

// Deterministic whatever the threads do: fixed blocks summed in parallel, then the blocks in order.
// (An OpenMP reduction adds the threads' partial sums in the order they finish, so its last bits
// depend on timing, and through the clipping factor so would the weights: no exact resume.)
template <typename T> void grad_sumsq_blocks(const T* g, long count, long b0, long b1, double* part) {
#pragma omp parallel for schedule(static) if ((b1 - b0) * kNormBlock >= 65536)
    for (long b = b0; b < b1; b++) {
        double ss = 0;
        const long end = std::min(count, (b + 1) * kNormBlock);
#pragma omp simd reduction(+ : ss)
        for (long i = b * kNormBlock; i < end; i++) ss += (double)g[i] * (double)g[i];
        part[b - b0] = ss;
    }
}

template <typename T> double grad_norm(const T* g, long count) {
    const long nb = (count + kNormBlock - 1) / kNormBlock;
    std::vector<double> part(nb);
    grad_sumsq_blocks(g, count, 0, nb, part.data());
    double ss = 0;
    for (double p : part) ss += p;
    return std::sqrt(ss);
}

template <typename T> void clip_grad(T* g, long count, double norm, double max_norm) {
    if (max_norm <= 0) return;
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return;
#pragma omp parallel for simd schedule(static) if (count >= 65536)
    for (long i = 0; i < count; i++) g[i] = T((double)g[i] * coef);
}

template <typename T>
void adamw_step(AdamW<T>& st, T* param, const T* grad, const std::vector<ParamTensor>& tensors,
                double lr, double beta1, double beta2, double weight_decay) {
    if (tensors.empty()) return;
    const long count = tensors.back().offset + tensors.back().size;
    if ((long)st.m.size() != count) st.m.assign(count, T(0)), st.v.assign(count, T(0));
    st.step++;
    const double bc1 = 1.0 - std::pow(beta1, (double)st.step);
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, (double)st.step));
    const T step_size = T(lr / bc1), b1 = T(beta1), b2 = T(beta2);
    const T eps = T(1e-8);
    for (const auto& t : tensors) {
        const T decay = T(1.0 - (t.decay ? lr * weight_decay : 0.0));
        T* p = param + t.offset;
        const T* g = grad + t.offset;
        T* m = st.m.data() + t.offset;
        T* v = st.v.data() + t.offset;
#pragma omp parallel for simd schedule(static) if (t.size >= 65536)
        for (long i = 0; i < t.size; i++) {
            p[i] *= decay;
            m[i] = m[i] * b1 + g[i] * (T(1) - b1);
            v[i] = v[i] * b2 + g[i] * g[i] * (T(1) - b2);
            const T denom = std::sqrt(v[i]) / T(bc2_sqrt) + eps;
            p[i] -= step_size * m[i] / denom;
        }
    }
}

template <typename T>
bool adamw_step_is_finite(const AdamW<T>& st, const T* param, const T* grad, const std::vector<ParamTensor>& tensors,
                          double lr, double beta1, double beta2, double weight_decay) {
    if (tensors.empty()) return true;
    const long count = tensors.back().offset + tensors.back().size;
    const bool fresh = (long)st.m.size() != count;  // the first step starts from zero moments
    const long step = st.step + 1;
    // The same expressions as adamw_step, element by element, without storing anything.
    const double bc1 = 1.0 - std::pow(beta1, (double)step);
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, (double)step));
    const T step_size = T(lr / bc1), b1 = T(beta1), b2 = T(beta2);
    const T eps = T(1e-8);
    bool finite = true;
    for (const auto& t : tensors) {
        const T decay = T(1.0 - (t.decay ? lr * weight_decay : 0.0));
        const T* p = param + t.offset;
        const T* g = grad + t.offset;
        const T* m = fresh ? nullptr : st.m.data() + t.offset;
        const T* v = fresh ? nullptr : st.v.data() + t.offset;
        bool ok = true;
#pragma omp parallel for simd schedule(static) reduction(&& : ok) if (t.size >= 65536)
        for (long i = 0; i < t.size; i++) {
            T pi = p[i] * decay;
            const T mi = (m ? m[i] : T(0)) * b1 + g[i] * (T(1) - b1);
            const T vi = (v ? v[i] : T(0)) * b2 + g[i] * g[i] * (T(1) - b2);
            const T denom = std::sqrt(vi) / T(bc2_sqrt) + eps;
            pi -= step_size * mi / denom;
            ok = ok && std::isfinite(pi) && std::isfinite(mi) && std::isfinite(vi);
        }
        finite = finite && ok;
    }
    return finite;
}

#define MHC_OPT_INST(T)                                                                          \
    template void grad_sumsq_blocks<T>(const T*, long, long, long, double*);                     \
    template double grad_norm<T>(const T*, long);                                                \
    template void clip_grad<T>(T*, long, double, double);                                        \
    template void adamw_step<T>(AdamW<T>&, T*, const T*, const std::vector<ParamTensor>&, double, \
                                double, double, double);                                         \
    template bool adamw_step_is_finite<T>(const AdamW<T>&, const T*, const T*,                   \
                                          const std::vector<ParamTensor>&, double, double, double, double);
MHC_OPT_INST(float)
MHC_OPT_INST(double)

}  // namespace mhc
