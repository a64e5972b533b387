// Where a model runs: the device of `--device` (config key `device`). One interface for the CPU
// (the GPT and AdamW themselves) and for a GPU (model/gpt_cuda.h, registered by the CUDA backend:
// train/engine_cuda.h), so that train, eval, info, sample and bench are one code path whatever the
// device. The host model and AdamW state stay the run's record: checkpoints are written from them
// after to_host(), and an engine starts from them, so a run moves between devices through its
// checkpoints. Internal.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mhc/bench.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"
#include "mhc/sample.h"
#include "mhc/train.h"

namespace mhc {

class Engine {
public:
    virtual ~Engine() = default;
    // gpt_forward, gpt_backward, gpt_zero_grad on the device's copy of the model.
    virtual double forward(const int32_t* inputs, const int32_t* targets, int B, int Tn) = 0;
    virtual void backward(double scale) = 0;
    virtual void zero_grad() = 0;
    // mhc/optim.h's functions on the device's gradients, weights and AdamW state.
    virtual double grad_norm() = 0;
    virtual void clip_grad(double norm, double max_norm) = 0;
    virtual bool adamw_step_is_finite(double lr, double beta1, double beta2, double weight_decay) = 0;
    virtual void adamw_step(double lr, double beta1, double beta2, double weight_decay) = 0;
    // One training step, train_step's (mhc/train.h) whole rule: zero the gradients, forward and
    // backward each micro-batch, the norm, the NaN guard's checks, clipping, AdamW. This default
    // runs the calls above in order, each decision on the host; an engine may keep the whole step
    // on its device and wait only at the end (the GPU's does), with the same results.
    virtual StepStats step(Batcher& batches, const TrainConfig& cfg, double lr, int32_t* in, int32_t* tg,
                           bool force_nonfinite);
    // Test hook (train_run's forced non-finite steps): the first gradient becomes NaN.
    virtual void poison_grad() = 0;
    // Waits until the queued work is done (a GPU runs asynchronously), for timing.
    virtual void finish() {}
    // The last forward's logits [B*T, V] (a forward without targets), on the host.
    virtual const float* logits() = 0;
    // SPEC §6 diagnostics of the last forward (mhc/diag.h).
    virtual nlohmann::json diagnostics() = 0;
    // The host model's parameters and the host AdamW state become the device's.
    virtual void to_host() = 0;
    // The most device memory the engine has held at once, in bytes (mhc bench); -1: not measured
    // (the CPU, whose process peak RSS bench reports instead).
    virtual double device_peak_bytes() { return -1; }
    // Device memory in use now, the whole device's (total less free): besides the engine's buffers,
    // the CUDA context, cuBLAS's workspace and the local memory the driver reserves for the kernels'
    // stack frames (and any other process's); -1 on the CPU.
    virtual double device_used_bytes() { return -1; }
    // Phase timers for mhc bench (GPT::phases); a device without them leaves everything in "other".
    virtual void set_phases(PhaseTimes*) {}
    // How many CUDA graph launches the training steps have made (cuda_graphs); 0 elsewhere.
    virtual long graph_replays() const { return 0; }
    // generate() of mhc/sample.h on the device (its own KV cache).
    virtual std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int max_new_tokens, const Sampling& s,
                                          const std::function<void(int32_t)>& on_token) = 0;
};

// How an engine computes: the config keys that change its arithmetic but not the model.
struct EngineOptions {
    bool bf16 = false;  // dtype bf16: the linear layers' products in bf16 with fp32 sums (a GPU only)
    bool cuda_graphs = false;  // Engine::step's device work captured as CUDA graphs and replayed (a GPU only)
};
EngineOptions engine_options(const TrainConfig& cfg);

// What a device can give a model's buffers: its free memory once the device's own costs for that
// model are met (CUDA: the local memory for the kernels' stack frames, which it reserves then, and
// the workspaces of the cuBLAS handles not made yet). free < 0: unknown.
struct DeviceRoom {
    double free = -1;
    double stack = 0;  // bytes reserved for the stack frames, beyond what was before
    double blas = 0;   // bytes set aside for cuBLAS
};

// A device besides the CPU, as its backend registers it.
struct EngineBackend {
    std::string device;                     // its --device name
    std::string (*unusable)();              // "" when it can run here, else one line saying why not
    std::unique_ptr<Engine> (*make)(GPT<float>& m, AdamW<float>& adam, const EngineOptions& opt);
    SgemmPeak (*sgemm_peak)(const std::vector<std::vector<int>>& shapes);  // for mhc bench's MFU
    SgemmPeak (*bf16_peak)(const std::vector<std::vector<int>>& shapes);   // bf16 products, fp32 sums
    DeviceRoom (*room)(const ModelConfig& model, bool bf16);  // engine_room's
    double (*conn_scratch)(const ModelConfig& model, long tokens);  // engine_conn_scratch's
};
void engine_register(const EngineBackend& backend);

// The devices --device accepts, "cpu" first.
std::vector<std::string> engine_devices();
// Throws std::runtime_error (one line) unless `device` can run here: an unknown name, a device this
// program was built without, or one its backend finds unusable (no GPU, an old driver, ...).
void engine_require(const std::string& device);
// An engine on `device` for the built model m (and adam, its optimizer state: moments and step),
// which it reads now and writes back in to_host(); both must outlive it. The CPU refuses bf16
// (std::invalid_argument, one line).
std::unique_ptr<Engine> engine_make(const std::string& device, GPT<float>& m, AdamW<float>& adam,
                                    const EngineOptions& opt = {});
// The fp32 matrix-product peak of the device (bench.h's sgemm_peak on the CPU).
SgemmPeak engine_sgemm_peak(const std::string& device, const std::vector<std::vector<int>>& shapes);
// The bf16 matrix-product peak of the device (bf16 operands, fp32 accumulation): the yardstick of
// mixed-precision training. {} (0 GFLOP/s) for the CPU, which has none worth the name.
SgemmPeak engine_bf16_peak(const std::string& device, const std::vector<std::vector<int>>& shapes);
// The device memory the buffers of a model (a finalized config) may take on `device`, its fixed
// costs met first (DeviceRoom); free -1 for the CPU, whose process limit is checked instead.
DeviceRoom engine_room(const std::string& device, const ModelConfig& model, bool bf16);
// The floats of connection scratch the device's plan takes for a pass over `tokens` tokens, for
// gpt_memory_estimate; -1 for the CPU (its own, which does not grow with the tokens).
double engine_conn_scratch(const std::string& device, const ModelConfig& model, long tokens);

// The NaN guard's verdict on a step whose loss and gradient norm are in st (every engine's step):
// whether the loss and the norm are finite, and with update_finite (whether the update came out
// finite, which is only asked when they are), st.finite and st.nonfinite, the first of "loss",
// "gradient norm" and "update" that was not.
bool step_sums_finite(const StepStats& st);
void step_verdict(StepStats& st, bool update_finite);

// mhc/train.h's train_step and evaluate on an engine (their GPT versions run these on the CPU).
StepStats train_step(Engine& e, Batcher& batches, const TrainConfig& cfg, long step, int32_t* in, int32_t* tg,
                     bool force_nonfinite = false);
double evaluate(Engine& e, Batcher& b, int batches);

}  // namespace mhc
