// Branch-free float exp and normal CDF that GCC vectorises inside `#pragma omp simd` loops (the
// libm calls do not vectorise without -ffast-math). Internal to the ops. Double callers keep libm:
// the gradient checks and the fp64 parity run on double.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace mhc::detail {

// exp(x) for x <= 88, within 2 ulp; 0 below -87.3 (where expf would be denormal or 0).
// Cephes' expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-7 polynomial, 2^n via the exponent bits.
inline float exp_fast(float x) {
    const float xc = x < -87.3f ? -87.3f : x;
    const float k = xc * 1.44269504088896341f + 12582912.0f;  // 1.5·2^23: rounds to an integer n
    const float n = k - 12582912.0f;
    const int32_t ni = std::bit_cast<int32_t>(k) - 0x4B400000;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const float scaled = y * std::bit_cast<float>((ni + 127) << 23);
    return x < -87.3f ? 0.0f : scaled;
}

// erfc(z) for z >= 0, relative error 1.05e-7 in exact arithmetic (Numerical Recipes' erfcc, a
// Chebyshev fit; measured over [0, 10] against libm). Returns erfc(z) and, in e, exp(-z²).
inline float erfc_pos(float z) {
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * exp_fast(p - z * z);
}

// Φ(x), the standard normal CDF: 0.5·erfc(-x/√2), with the small tail computed directly so it
// keeps its relative accuracy (no 1 - (1 - tiny) cancellation).
inline float normal_cdf(float x) {
    const float z = (x < 0 ? -x : x) * 0.70710678118654752f;
    const float half_tail = 0.5f * erfc_pos(z);
    return x < 0 ? half_tail : 1.0f - half_tail;
}

// Row reductions for the softmaxes. GCC 12 does not vectorise `omp simd reduction` loops over
// these (a max, or a double sum of floats), so they are written over explicit lanes.
constexpr int kLanes = 16;

// max of x[0..n), n >= 1
inline float max_of(const float* x, int n) {
    typedef float v16 __attribute__((vector_size(64)));
    v16 acc = {};
    acc += x[0];  // broadcast
    int j = 0;
    for (; j + kLanes <= n; j += kLanes) {
        v16 v;
        __builtin_memcpy(&v, x + j, sizeof v);
        acc = v > acc ? v : acc;
    }
    float m = acc[0];
    for (int l = 1; l < kLanes; l++) m = acc[l] > m ? acc[l] : m;
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}
inline double max_of(const double* x, int n) {
    double m = x[0];
    for (int j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

// Σ x[j] (y[j]) in double, in a fixed order (the same bits on every run).
template <typename T> double sum_d(const T* x, int n) {
    double acc[kLanes] = {0};
    int j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (int l = 0; l < kLanes; l++) acc[l] += (double)x[j + l];
    double s = 0;
    for (int l = 0; l < kLanes; l++) s += acc[l];
    for (; j < n; j++) s += (double)x[j];
    return s;
}
template <typename T> double dot_d(const T* x, const T* y, int n) {
    double acc[kLanes] = {0};
    int j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (int l = 0; l < kLanes; l++) acc[l] += (double)x[j + l] * (double)y[j + l];
    double s = 0;
    for (int l = 0; l < kLanes; l++) s += acc[l];
    for (; j < n; j++) s += (double)x[j] * (double)y[j];
    return s;
}

// exp for code templated on the precision: vectorisable for float, libm's for double.
inline float exp_of(float x) { return exp_fast(x); }
inline double exp_of(double x) { return std::exp(x); }

// x[j] = exp(x[j] - m) for j < n; returns their sum in double.
template <typename T> double exp_shift_sum(T* x, int n, T m) {
#pragma omp simd
    for (int j = 0; j < n; j++) x[j] = exp_of(x[j] - m);
    return sum_d(x, n);
}

}  // namespace mhc::detail
