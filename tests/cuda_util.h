// Helpers of the GPU tests (test_cuda_*.cpp): device copies, NaN-poisoned outputs, relative errors
// against the CPU oracle with tolerances taken from the CPU's own fp32 error.
//
// Tolerance: a GPU result is compared with the CPU's fp32 result by ‖gpu − cpu‖/‖cpu‖. Both are
// fp32 computations of the same quantity that differ only in the order of their sums (and FMA), so
// each is about as far from the exact value as the other: the test allows 10 times the CPU fp32
// result's own distance to the CPU's fp64 result, and never less than kRelFloor (1e-5, a few
// hundred fp32 ulps of relative error over a whole tensor).
// A gradient tensor of a few values (scalars, static logits: kFewValues or fewer) is a handful of
// samples of rounding noise, and where it is a sum with heavy cancellation (the mixing logits of a
// model's first site, whose n input streams are all equal, have a gradient of exactly 0 in exact
// arithmetic) the CPU's own error can be small by luck: check_grad allows those 30 times the CPU's
// error and at least 1e-4. One sample of that error is a poor measure of it: for the first site's
// pre_branch_scale gradient of one model, over 16 seeds, the CPU's fp32 error ranged from 3.9e-6 to
// 7.2e-3 and the GPU's from 3.6e-5 to 1.8e-2 (the flash attention's rounding; GPU/CPU from 0.14 to
// 221). So where the caller has a second CPU fp32 result of the same sums in another order
// (`cpu_alt`: the model on its batch rows swapped), the larger of the two errors is the basis.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda.h"

namespace mhc::test {

constexpr double kRelFloor = 1e-5;
constexpr size_t kFewValues = 64;

template <typename T> cuda::DeviceBuffer<T> to_dev(const std::vector<T>& v) {
    cuda::DeviceBuffer<T> d;
    d.upload(v);
    return d;
}
// n values of NaN (every byte 0xFF: NaN in fp32 and in bf16): an output the GPU does not write
// stays NaN and fails the test.
template <typename T = float> cuda::DeviceBuffer<T> dev_nan(size_t n) {
    cuda::DeviceBuffer<T> d(n);
    d.fill_bytes(0xFF);
    return d;
}

// bf16 conversions (round to nearest even): one value, a vector's values kept as doubles, a vector
// into bf16, and bf16 values (on the host or the device) back as floats.
inline float round16(double x) { return __bfloat162float(__float2bfloat16((float)x)); }
inline std::vector<double> bf16_rounded(const std::vector<double>& v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = round16(v[i]);
    return r;
}
inline std::vector<cuda::bf16> to_bf16(const std::vector<double>& v) {
    std::vector<cuda::bf16> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = __float2bfloat16((float)v[i]);
    return r;
}
inline std::vector<float> from_bf16(const std::vector<cuda::bf16>& h) {
    std::vector<float> r(h.size());
    for (size_t i = 0; i < h.size(); i++) r[i] = __bfloat162float(h[i]);
    return r;
}
inline std::vector<float> from_bf16(const cuda::DeviceBuffer<cuda::bf16>& d) { return from_bf16(d.download()); }

template <typename A, typename B> double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
    if (a.size() != b.size()) return INFINITY;
    double d = 0, r = 0;
    for (size_t i = 0; i < a.size(); i++) {
        const double x = (double)a[i], y = (double)b[i];
        if (!std::isfinite(x)) return INFINITY;
        d += (x - y) * (x - y), r += y * y;
    }
    return r > 0 ? std::sqrt(d / r) : (d > 0 ? INFINITY : 0.0);
}

template <typename T> std::vector<double> to_double(const std::vector<T>& v) { return {v.begin(), v.end()}; }
template <typename T> std::vector<float> to_float(const std::vector<T>& v) { return {v.begin(), v.end()}; }

template <typename T> std::vector<T> normal_vec(size_t count, std::mt19937_64& rng, double scale = 1.0) {
    std::normal_distribution<double> nd(0, scale);
    std::vector<T> v(count);
    for (auto& x : v) x = T(nd(rng));
    return v;
}

// The base of every GPU test: skipped, with the reason, where cuda_available() says no; keeps the
// worst relative error of the test and records it as the property max_rel_err (gpu_check.sh's table).
class CudaTest : public testing::Test {
protected:
    void SetUp() override {
        std::string why;
        if (!cuda_available(&why)) GTEST_SKIP() << why;
    }
    void TearDown() override {
        if (checks_) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.3g", worst_);
            RecordProperty("max_rel_err", buf);
        }
    }
    // Checks gpu against the CPU's fp32 result `cpu`, with the tolerance from the CPU's fp64 result
    // `exact` (see the top of this file). Returns the error.
    template <typename E>
    double check(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                 const std::vector<E>& exact, double floor = kRelFloor, double factor = 10) {
        return check_basis(what, gpu, cpu, rel_err(cpu, exact), floor, factor, "");
    }
    // A parameter gradient tensor: check(), with the allowance for tensors of a few values, whose
    // basis is the larger of the CPU's two errors when cpu_alt (the same sums in another order) is given.
    template <typename E>
    double check_grad(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                      const std::vector<E>& exact, const std::vector<float>* cpu_alt = nullptr) {
        const bool few = cpu.size() <= kFewValues;
        if (!few || !cpu_alt) return check(what, gpu, cpu, exact, few ? 1e-4 : kRelFloor, few ? 30 : 10);
        const double natural = std::max(rel_err(cpu, exact), rel_err(*cpu_alt, exact));
        return check_basis(what, gpu, cpu, natural, 1e-4, 30, " (basis: two CPU orders)");
    }
    // The tolerance max(floor, factor · natural), natural being the CPU's own fp32 error.
    double check_basis(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                       double natural, double floor, double factor, const char* basis) {
        if (std::getenv("MHC_TEST_ERRORS"))  // calibration: every check's error, its tolerance's basis, its size
            std::printf("ERRCHECK %.3e %.3e %zu %s%s\n", rel_err(gpu, cpu), natural, cpu.size(), what.c_str(), basis);
        return within(what, gpu, cpu, std::max(floor, factor * natural));
    }
    // A fixed bound tol (calibration prints the error beside it).
    double check_tol(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                     double tol) {
        if (std::getenv("MHC_TEST_ERRORS"))
            std::printf("ERRCHECK %.3e %.3e %zu %s (fixed bound)\n", rel_err(gpu, cpu), tol, cpu.size(), what.c_str());
        return within(what, gpu, cpu, tol);
    }
    double within(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu, double tol) {
        const double err = rel_err(gpu, cpu);
        EXPECT_LE(err, tol) << what << ": ‖gpu − cpu‖/‖cpu‖ = " << err << " > " << tol;
        worst_ = std::max(worst_, err);
        checks_++;
        return err;
    }
    double worst_ = 0;
    int checks_ = 0;
};

}  // namespace mhc::test
