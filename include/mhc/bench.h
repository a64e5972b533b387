// mhc/bench.h — the engine side of `mhc bench`: timed training steps of one model variant with
// their time per phase, the model FLOPs those steps stand for, and the machine's own sgemm peak to
// set them against (model FLOP utilisation, MFU).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mhc/config.h"
#include "mhc/gpt.h"

namespace mhc {

// The bench's phases: the model's four (gpt.h Phase) followed by the optimizer step.
constexpr int kPhaseOptimizer = kPhaseCount, kBenchPhaseCount = kPhaseCount + 1;
const char* bench_phase_name(int p);  // matmul, attention, connections, other, optimizer

// What the FLOP count means; `mhc bench` puts it in its JSON (flops_note) and --help.
extern const char* const kBenchFlopsNote;

// Parameters of the linear layers: attention qkv + proj and MLP fc + proj of every block
// (12·L·C², biases excluded), plus the tied LM head (V·C).
long matmul_param_count(const ModelConfig& m);
// Model FLOPs of one training step (forward + backward) over `tokens` tokens of length block_size:
// 6·P_matmul·tokens + 6·L·C·T·tokens (causal attention: QKᵀ and AV over the lower triangle).
// The connections are not counted.
double model_flops_per_step(const ModelConfig& m, long tokens);

struct BenchResult {
    std::string variant;                     // config name: none, hc, mhc, mhc_lite, kromhc
    long params = 0, tokens_per_step = 0;
    std::vector<double> step_s;              // each timed step, seconds
    double step_s_median = 0, step_s_min = 0, step_s_mean = 0, tokens_per_s = 0;
    // Mean seconds per timed step. The model's phases come from GPT::phases (on a GPU from CUDA
    // events around each op call), the optimizer is grad_norm + clip + AdamW; what no phase timer
    // saw (zero_grad, drawing the batch) is added to "other", so the phases sum to step_s_mean.
    double phases_s[kBenchPhaseCount] = {};
    std::map<std::string, double> ops_s;     // the model's phases per op (PhaseTimes::op_s), per step
    double untimed_s = 0;                    // that part of "other": the step minus every phase timer
    double model_gflop_per_step = 0;
    double device_peak_mb = -1;              // a GPU's peak memory of the engine (MiB); -1 on the CPU
    double device_used_mb = -1;              // the GPU's memory in use after the steps, all of it (MiB)
    bool ops_timed = true;                   // bench_variant's time_ops, unless cuda_graphs ruled it out
};

// Builds and initialises cfg's model on cfg.device (cfg is finalized here; vocab_size must be set) and runs
// `warmup` untimed then `steps` timed training steps: the same work as a step of `mhc train`
// (zero_grad, forward + backward per micro-batch, gradient norm, clipping, AdamW at the schedule's
// learning rate). Batches come from the token file `data` in random order, or without one from
// seeded random tokens. time_ops: the model's ops timed per phase (on a GPU a CUDA event around
// each op; never with cuda_graphs, whose graphs cannot hold them), else only the optimizer is, the
// rest of the step is "other". Throws std::invalid_argument / std::runtime_error on bad input.
BenchResult bench_variant(TrainConfig cfg, int steps, int warmup, const std::string& data, bool time_ops = true);

// The schema's per-variant keys (docs: `mhc bench --json`), without mfu and peak_rss_mb.
nlohmann::json bench_result_to_json(const BenchResult& r);

// Row-major C[M,N] = A[M,K]·B[K,N] in fp32 through OpenBLAS at the current thread count: the best
// GFLOP/s (2·M·N·K / time) of at least `min_reps` calls per shape (more while under half a second),
// over the shapes, with the shape that gave it.
struct SgemmPeak {
    double gflops = 0;
    int M = 0, N = 0, K = 0;
};
SgemmPeak sgemm_peak(const std::vector<std::vector<int>>& shapes, int min_reps = 5);
// The timing of every such peak (the CPU's above, a GPU backend's): each shape checked ({M, N, K},
// all >= 1, else std::invalid_argument) and given to make(M, N, K), which returns one product of
// that shape on its own operands, finished when it returns; that is called once to warm up, then
// at least min_reps times (more while under half a second, at most 100), each call timed on the
// host clock. The best rate over all shapes.
using GemmMaker = std::function<std::function<void()>(int M, int N, int K)>;
SgemmPeak gemm_peak_over(const std::vector<std::vector<int>>& shapes, int min_reps, const GemmMaker& make);

// The largest GEMM of cfg's training step by FLOPs, as {M, N, K} (M = batch tokens).
std::vector<int> largest_model_gemm(const TrainConfig& cfg);

}  // namespace mhc
