// Google Benchmark of the transformer's ops, forward and backward, fp32, at the CPU-speed issue's
// target shapes: 6 heads, n_embd 384, block 256, batch 8 (N = 2048 tokens), vocab 256.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "ops/ops.h"

using namespace mhc;

namespace {

constexpr int kB = 8, kT = 256, kN = kB * kT, kC = 384, kH = 6, kV = 256;

std::vector<float> randn(size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

void BM_AttentionForward(benchmark::State& st) {
    auto qkv = randn((size_t)kN * 3 * kC, 1);
    std::vector<float> out((size_t)kN * kC), att((size_t)kB * kH * kT * kT);
    for (auto _ : st) {
        attention_forward(out.data(), att.data(), qkv.data(), kB, kT, kC, kH);
        benchmark::DoNotOptimize(out.data());
    }
}

void BM_AttentionBackward(benchmark::State& st) {
    auto qkv = randn((size_t)kN * 3 * kC, 1), dout = randn((size_t)kN * kC, 2);
    std::vector<float> out((size_t)kN * kC), att((size_t)kB * kH * kT * kT), datt(att.size()),
        dqkv(qkv.size());
    attention_forward(out.data(), att.data(), qkv.data(), kB, kT, kC, kH);
    for (auto _ : st) {
        attention_backward(dqkv.data(), datt.data(), dout.data(), qkv.data(), att.data(), kB, kT, kC, kH);
        benchmark::DoNotOptimize(dqkv.data());
    }
}

// Linear layer in -> out over N tokens; args: IC, OC, bias (0/1).
void BM_MatmulForward(benchmark::State& st) {
    const int IC = (int)st.range(0), OC = (int)st.range(1);
    auto in = randn((size_t)kN * IC, 1), W = randn((size_t)OC * IC, 2, 0.02f), b = randn(OC, 3);
    std::vector<float> out((size_t)kN * OC);
    for (auto _ : st) {
        matmul_forward(out.data(), in.data(), W.data(), st.range(2) ? b.data() : nullptr, kN, IC, OC);
        benchmark::DoNotOptimize(out.data());
    }
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * kN * IC * OC, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_MatmulBackward(benchmark::State& st) {
    const int IC = (int)st.range(0), OC = (int)st.range(1);
    auto in = randn((size_t)kN * IC, 1), W = randn((size_t)OC * IC, 2, 0.02f), dout = randn((size_t)kN * OC, 3);
    std::vector<float> din((size_t)kN * IC), dW(W.size()), db(OC);
    for (auto _ : st) {
        matmul_backward(din.data(), dW.data(), st.range(2) ? db.data() : nullptr, dout.data(), in.data(),
                        W.data(), kN, IC, OC);
        benchmark::DoNotOptimize(din.data());
    }
    st.counters["GFLOP/s"] = benchmark::Counter(4.0 * kN * IC * OC, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_LayerNormForward(benchmark::State& st) {
    auto x = randn((size_t)kN * kC, 1), w = randn(kC, 2), b = randn(kC, 3);
    std::vector<float> out(x.size()), mean(kN), rstd(kN);
    for (auto _ : st) {
        layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), kN, kC);
        benchmark::DoNotOptimize(out.data());
    }
}

void BM_LayerNormBackward(benchmark::State& st) {
    auto x = randn((size_t)kN * kC, 1), w = randn(kC, 2), b = randn(kC, 3), g = randn(x.size(), 4);
    std::vector<float> out(x.size()), mean(kN), rstd(kN), dx(x.size()), dw(kC), db(kC);
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), kN, kC);
    for (auto _ : st) {
        layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), mean.data(),
                           rstd.data(), kN, kC);
        benchmark::DoNotOptimize(dx.data());
    }
}

constexpr long kG = 4L * kN * kC;  // the MLP's hidden activations

void BM_GeluForward(benchmark::State& st) {
    auto x = randn(kG, 1);
    std::vector<float> out(kG);
    for (auto _ : st) {
        gelu_forward(out.data(), x.data(), kG);
        benchmark::DoNotOptimize(out.data());
    }
}

void BM_GeluBackward(benchmark::State& st) {
    auto x = randn(kG, 1), g = randn(kG, 2);
    std::vector<float> dx(kG);
    for (auto _ : st) {
        gelu_backward(dx.data(), x.data(), g.data(), kG);
        benchmark::DoNotOptimize(dx.data());
    }
}

std::vector<int32_t> targets() {
    std::vector<int32_t> t(kN);
    for (int i = 0; i < kN; i++) t[i] = (i * 37) % kV;
    return t;
}

// The forward overwrites logits with probabilities: each iteration restores them (timed, a copy
// of 2 MB, small next to the exp over N x V).
void BM_CrossEntropyForward(benchmark::State& st) {
    auto logits = randn((size_t)kN * kV, 1, 2.0f);
    auto tg = targets();
    std::vector<float> probs(logits.size()), losses(kN);
    for (auto _ : st) {
        probs = logits;
        benchmark::DoNotOptimize(crossentropy_forward(probs.data(), losses.data(), tg.data(), kN, kV));
    }
}

void BM_CrossEntropyBackward(benchmark::State& st) {
    auto logits = randn((size_t)kN * kV, 1, 2.0f);
    auto tg = targets();
    std::vector<float> losses(kN);
    crossentropy_forward(logits.data(), losses.data(), tg.data(), kN, kV);
    for (auto _ : st) {  // repeated in place: values drift but the work is the same
        crossentropy_backward(logits.data(), tg.data(), kN, kV, 1.0);
        benchmark::DoNotOptimize(logits.data());
    }
}

void BM_EncoderForward(benchmark::State& st) {
    auto wte = randn((size_t)kV * kC, 1), wpe = randn((size_t)kT * kC, 2);
    auto idx = targets();
    std::vector<float> X((size_t)kN * kC);
    for (auto _ : st) {
        encoder_forward(X.data(), idx.data(), wte.data(), wpe.data(), kB, kT, kC, 1);
        benchmark::DoNotOptimize(X.data());
    }
}

void BM_EncoderBackward(benchmark::State& st) {
    auto dX = randn((size_t)kN * kC, 1);
    auto idx = targets();
    std::vector<float> dwte((size_t)kV * kC), dwpe((size_t)kT * kC);
    for (auto _ : st) {
        encoder_backward(dwte.data(), dwpe.data(), dX.data(), idx.data(), kB, kT, kC, 1);
        benchmark::DoNotOptimize(dwte.data());
    }
}

}  // namespace

#define MHC_OP(fn) BENCHMARK(fn)->Unit(benchmark::kMicrosecond)->UseRealTime()
MHC_OP(BM_AttentionForward);
MHC_OP(BM_AttentionBackward);
// qkv, attn proj, fc, mlp proj, LM head (tied, no bias); then fc with bias
#define MHC_MM(fn)                                                                                \
    MHC_OP(fn)->ArgNames({"IC", "OC", "bias"})->Args({kC, 3 * kC, 0})->Args({kC, kC, 0})->Args(     \
        {kC, 4 * kC, 0})->Args({4 * kC, kC, 0})->Args({kC, kV, 0})->Args({kC, 4 * kC, 1})
MHC_MM(BM_MatmulForward);
MHC_MM(BM_MatmulBackward);
MHC_OP(BM_LayerNormForward);
MHC_OP(BM_LayerNormBackward);
MHC_OP(BM_GeluForward);
MHC_OP(BM_GeluBackward);
MHC_OP(BM_CrossEntropyForward);
MHC_OP(BM_CrossEntropyBackward);
MHC_OP(BM_EncoderForward);
MHC_OP(BM_EncoderBackward);
BENCHMARK_MAIN();
