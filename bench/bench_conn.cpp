// Google Benchmark of one connection site, pre + post, forward and backward, per variant.
// Default shape N = 2048 tokens, C = 384, n = 4 (residual: n = 1). Reports the time per token.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "mhc/conn.h"

using namespace mhc;

namespace {

constexpr int kN = 2048, kC = 384, kn = 4;

struct Bench {
    ConnSite s;
    std::vector<float> p, dp, cache, scratch, X, y, u, Xout, dX, dy, dXout;
    explicit Bench(Variant v) {
        ConnConfig cfg;
        cfg.variant = v;
        cfg.n = v == Variant::residual ? 1 : kn;
        cfg.C = kC;
        s = conn_site_make(cfg);
        std::mt19937_64 rng(1);
        std::normal_distribution<float> nd(0, 1);
        p.resize(conn_param_count(s));
        conn_init_params(s, p.data());
        for (auto& w : p) w += 0.01f * nd(rng);
        dp.assign(p.size(), 0);
        cache.resize((size_t)kN * conn_cache_stride(s));
        scratch.resize(conn_scratch_size(s, kN));
        const size_t S = (size_t)kN * s.n * kC;
        X.resize(S), Xout.resize(S), dX.resize(S), dXout.resize(S);
        y.resize((size_t)kN * kC), u.resize(y.size()), dy.resize(y.size());
        for (auto* v2 : {&X, &y, &dXout})
            for (auto& x : *v2) x = nd(rng);
    }
    void forward() {
        conn_pre_forward(s, p.data(), X.data(), u.data(), cache.data(), scratch.data(), kN);
        conn_post_forward(s, cache.data(), X.data(), y.data(), Xout.data(), kN);
    }
    void backward() {
        conn_post_backward(s, cache.data(), X.data(), y.data(), dXout.data(), dX.data(), dy.data(), kN);
        conn_pre_backward(s, p.data(), cache.data(), X.data(), dy.data(), dX.data(), dp.data(),
                          scratch.data(), kN);
    }
};

void per_token(benchmark::State& st) {
    // seconds per token, printed with an SI prefix (e.g. "150n" = 150 ns per token)
    st.counters["per_token"] = benchmark::Counter(
        kN, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_Forward(benchmark::State& st, Variant v) {
    Bench b(v);
    for (auto _ : st) {
        b.forward();
        benchmark::DoNotOptimize(b.Xout.data());
    }
    per_token(st);
}

void BM_Backward(benchmark::State& st, Variant v) {
    Bench b(v);
    b.forward();
    for (auto _ : st) {
        b.backward();
        benchmark::DoNotOptimize(b.dX.data());
    }
    per_token(st);
}

}  // namespace

#define MHC_BENCH(name, v)                                                              \
    BENCHMARK_CAPTURE(BM_Forward, name, v)->Unit(benchmark::kMicrosecond)->UseRealTime(); \
    BENCHMARK_CAPTURE(BM_Backward, name, v)->Unit(benchmark::kMicrosecond)->UseRealTime();
MHC_BENCH(residual, Variant::residual)
MHC_BENCH(hc, Variant::hc)
MHC_BENCH(mhc, Variant::mhc)
MHC_BENCH(mhc_lite, Variant::mhc_lite)
MHC_BENCH(kromhc, Variant::kromhc)
MHC_BENCH(jpmhc, Variant::jpmhc)
MHC_BENCH(ohc, Variant::ohc)

BENCHMARK_MAIN();
