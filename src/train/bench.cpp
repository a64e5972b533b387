// `mhc bench`'s engine: timed training steps with per-phase times, model FLOPs, the sgemm peak.
#include "mhc/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <stdexcept>

#include "mhc/data.h"
#include "mhc/optim.h"
#include "mhc/rng.h"
#include "mhc/train.h"
#include "ops/blas.h"
#include "train/engine.h"
#include "train/fits.h"

namespace mhc {

namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Seeded random tokens standing in for a data file: enough windows that batches differ.
TokenData random_tokens(int vocab, long count, uint64_t seed) {
    TokenData d;
    d.path = "random tokens";
    d.vocab_size = vocab;
    std::vector<uint32_t> ids((size_t)count);
    SplitMix64 rng(seed);
    for (auto& t : ids) t = (uint32_t)(rng.next() % (uint64_t)vocab);
    d.tokens = Tokens(std::move(ids));
    return d;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t k = v.size() / 2;
    return v.size() % 2 ? v[k] : 0.5 * (v[k - 1] + v[k]);
}

}  // namespace

const char* bench_phase_name(int p) { return p == kPhaseOptimizer ? "optimizer" : phase_name(p); }

const char* const kBenchFlopsNote =
    "model FLOPs = 6*P_matmul*tokens + 6*L*C*T*tokens (causal attention); P_matmul = attention qkv+proj "
    "and MLP fc+proj weights of all layers + the tied LM head V*C; connections not counted; "
    "MFU = model FLOPs / median step time / sgemm peak";

long matmul_param_count(const ModelConfig& m) {
    const long L = m.n_layer, C = m.n_embd, V = m.vocab_size;
    return L * (3 * C * C + C * C + 4 * C * C + 4 * C * C) + V * C;
}

double model_flops_per_step(const ModelConfig& m, long tokens) {
    return 6.0 * (double)matmul_param_count(m) * tokens +
           6.0 * m.n_layer * (double)m.n_embd * m.block_size * tokens;
}

BenchResult bench_variant(TrainConfig cfg, int steps, int warmup, const std::string& data, bool time_ops) {
    config_finalize(cfg);
    if (steps < 1) throw std::invalid_argument("steps must be >= 1, got " + std::to_string(steps));
    if (warmup < 0) throw std::invalid_argument("warmup must be >= 0, got " + std::to_string(warmup));
    if (cfg.model.vocab_size <= 0) throw std::invalid_argument("vocab_size is not set");
    // Its steps are training's: the same check, so that a model too big for the device is the
    // estimate's one line before anything is allocated, not an allocation failing midway.
    require_memory_for(cfg);
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    const TokenData tokens = data.empty() ? random_tokens(cfg.model.vocab_size, 16L * B * (T + 1), cfg.seed)
                                          : load_tokens(data, DataFormat::automatic, cfg.model.vocab_size);
    Batcher batches(tokens, B, T, Order::random, cfg.seed);
    GPT<float> m;
    gpt_build(m, cfg.model);
    gpt_init(m, cfg.seed);
    m.recompute = cfg.recompute;
    AdamW<float> adam;
    const std::unique_ptr<Engine> e = engine_make(cfg.device, m, adam, engine_options(cfg));
    std::vector<int32_t> in((size_t)B * T), tg(in.size());

    BenchResult r;
    r.variant = variant_key(cfg.model.hyper_conn_type);
    r.params = (long)m.param.size();
    r.tokens_per_step = (long)B * T * accum;
    r.model_gflop_per_step = model_flops_per_step(cfg.model, r.tokens_per_step) * 1e-9;
    PhaseTimes model_phases;
    double optimizer_s = 0;
    r.ops_timed = time_ops && !cfg.cuda_graphs;  // a graph cannot hold the ops' CUDA events
    for (int step = 0; step < warmup + steps; step++) {
        const bool timed = step >= warmup;
        e->set_phases(timed && r.ops_timed ? &model_phases : nullptr);
        // One step of train_run's loop, without its logging and checkpoints (it ends when the
        // device has finished its work).
        const auto t0 = Clock::now();
        const StepStats st = train_step(*e, batches, cfg, step, in.data(), tg.data());
        const auto t1 = Clock::now();
        if (timed) {
            r.step_s.push_back(secs(t0, t1));
            optimizer_s += st.optimizer_s;
        }
    }
    e->set_phases(nullptr);
    const double peak = e->device_peak_bytes();
    r.device_peak_mb = peak < 0 ? -1 : peak / (1024.0 * 1024.0);
    const double used = e->device_used_bytes();  // after the steps, every buffer still held
    r.device_used_mb = used < 0 ? -1 : used / (1024.0 * 1024.0);

    double total = 0, timed_sum = 0;
    for (double s : r.step_s) total += s;
    r.step_s_mean = total / steps;
    r.step_s_median = median(r.step_s);
    r.step_s_min = *std::min_element(r.step_s.begin(), r.step_s.end());
    r.tokens_per_s = r.tokens_per_step / r.step_s_median;
    for (int p = 0; p < kPhaseCount; p++) r.phases_s[p] = model_phases.s[p] / steps;
    for (const auto& [op, s] : model_phases.op_s) r.ops_s[op] = s / steps;
    r.phases_s[kPhaseOptimizer] = optimizer_s / steps;
    for (double s : r.phases_s) timed_sum += s;
    r.untimed_s = std::max(0.0, r.step_s_mean - timed_sum);
    r.phases_s[kPhaseOther] += r.untimed_s;
    return r;
}

nlohmann::json bench_result_to_json(const BenchResult& r) {
    nlohmann::json phases = nlohmann::json::object();
    for (int p = 0; p < kBenchPhaseCount; p++) phases[bench_phase_name(p)] = r.phases_s[p];
    return {{"variant", r.variant}, {"params", r.params}, {"tokens_per_step", r.tokens_per_step},
            {"step_s_median", r.step_s_median}, {"step_s_min", r.step_s_min}, {"step_s_mean", r.step_s_mean},
            {"step_s", r.step_s}, {"tokens_per_s", r.tokens_per_s}, {"phases_s", phases}, {"ops_s", r.ops_s},
            {"untimed_s", r.untimed_s}, {"ops_timed", r.ops_timed},
            {"model_gflop_per_step", r.model_gflop_per_step},
            {"device_peak_mb", r.device_peak_mb < 0 ? nlohmann::json() : nlohmann::json(r.device_peak_mb)},
            {"device_used_mb", r.device_used_mb < 0 ? nlohmann::json() : nlohmann::json(r.device_used_mb)}};
}

SgemmPeak gemm_peak_over(const std::vector<std::vector<int>>& shapes, int min_reps, const GemmMaker& make) {
    SgemmPeak best;
    for (const auto& s : shapes) {
        if (s.size() != 3 || s[0] < 1 || s[1] < 1 || s[2] < 1) throw std::invalid_argument("bad sgemm shape");
        const int M = s[0], N = s[1], K = s[2];
        const std::function<void()> product = make(M, N, K);
        const double flop = 2.0 * M * N * K;
        product();  // warm-up
        double spent = 0;
        for (int rep = 0; rep < 100 && (rep < min_reps || spent < 0.5); rep++) {
            const auto t0 = Clock::now();
            product();
            const double dt = secs(t0, Clock::now());
            spent += dt;
            if (flop / dt * 1e-9 > best.gflops) best = {flop / dt * 1e-9, M, N, K};
        }
    }
    return best;
}

SgemmPeak sgemm_peak(const std::vector<std::vector<int>>& shapes, int min_reps) {
    return gemm_peak_over(shapes, min_reps, [](int M, int N, int K) -> std::function<void()> {
        // Small values of both signs: no overflow, no denormals.
        using Buf = std::vector<float>;
        auto A = std::make_shared<Buf>((size_t)M * K), B = std::make_shared<Buf>((size_t)K * N),
             C = std::make_shared<Buf>((size_t)M * N);
        for (size_t i = 0; i < A->size(); i++) (*A)[i] = (float)((int)(i % 17) - 8) * 0.01f;
        for (size_t i = 0; i < B->size(); i++) (*B)[i] = (float)((int)(i % 13) - 6) * 0.01f;
        return [=] { detail::gemm(false, false, M, N, K, A->data(), K, B->data(), N, 0.0f, C->data(), N); };
    });
}

std::vector<int> largest_model_gemm(const TrainConfig& cfg) {
    const int M = cfg.batch_size * cfg.model.block_size, C = cfg.model.n_embd, V = cfg.model.vocab_size;
    // Forward shapes (the backward's are the same products transposed): qkv, proj, fc, mlp proj, LM head.
    const std::vector<std::vector<int>> all = {{M, 3 * C, C}, {M, C, C}, {M, 4 * C, C}, {M, C, 4 * C}, {M, V, C}};
    return *std::max_element(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return (double)a[0] * a[1] * a[2] < (double)b[0] * b[1] * b[2];
    });
}

}  // namespace mhc
