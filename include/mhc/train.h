// mhc/train.h — training runs: the loop, evaluation, and the run directory.
//
// A run directory holds config.toml (the resolved config), metrics.jsonl (one JSON object per
// logged step), ckpt_NNNNNN.safetensors (the model, SPEC §4), ckpt_NNNNNN.optim.safetensors (what
// resuming needs besides the weights: AdamW moments, step, data positions), `latest`, which
// names the newest complete checkpoint, data.json (the data's identity) and, while a trainer
// runs, `lock` (one writer per directory). Every file is written atomically.
#pragma once
#include <functional>
#include <string>

#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"

namespace mhc {

struct TrainOptions {
    std::string data, val_data, out_dir;
    std::string tokenizer;  // --tokenizer: a file or "bytes"; default: the data's own (its meta.json)
    DataFormat format = DataFormat::automatic;
    bool resume = false;
    bool resume_from_intact = false;  // with resume: when the newest checkpoint is corrupt, take the newest intact one
    std::string init_from;  // --init-from: a checkpoint (or run directory) whose weights start a new run
    bool progress = true;   // a live progress line (else plain log lines), chosen by the CLI
    bool quiet = false;     // no per-step output at all
};

struct TrainResult {
    long steps = 0;           // optimizer steps completed in total
    double final_loss = 0;    // training loss of the last step
    double final_val_loss = NAN;
    double tokens_per_s = 0;  // median over the steps of this invocation
    std::string checkpoint;   // path of the last checkpoint written
    long skipped_steps = 0;   // steps whose update was skipped for a non-finite loss or gradient
    bool interrupted = false; // stopped early by SIGINT / SIGTERM (after writing a checkpoint)
    int world_size = 1;       // ranks of a data-parallel run (mpirun -np N), 1 in a single process
    long optimizer_bytes = 0; // AdamW moments held by the fullest rank (sharded: ~1/world_size)
};

// Runs (or, with opt.resume, continues) a training run; throws std::runtime_error /
// std::invalid_argument with a one-line message on bad input.
TrainResult train_run(TrainConfig cfg, const TrainOptions& opt);

// One optimizer step, the same in `mhc train` and `mhc bench`: zero the gradients, forward and
// backward over gradient_accumulation_steps micro-batches from `batches` (in, tg: B*T token
// buffers), the global gradient norm, then, if the loss and the norm are finite, clipping and AdamW
// at lr_at(cfg, step), unless that update would make a weight or moment non-finite
// (adamw_step_is_finite); otherwise weights and optimizer state are left as they were.
// force_nonfinite makes the step non-finite (a test hook of train_run).
struct StepStats {
    double loss = 0, grad_norm = 0, lr = 0;
    double optimizer_s = 0;  // seconds from the end of the backward to the end of the update
    bool finite = true;     // the update was applied
    const char* nonfinite = "";  // else what was not finite: "loss", "gradient norm" or "update"
};
StepStats train_step(GPT<float>& m, AdamW<float>& adam, Batcher& batches, const TrainConfig& cfg, long step,
                     int32_t* in, int32_t* tg, bool force_nonfinite = false);

// Mean loss of a model over `batches` batches drawn from a batcher (no gradients).
double evaluate(GPT<float>& m, Batcher& b, int batches);

// Path of the newest complete checkpoint of a run directory, or "" if there is none.
std::string run_latest_checkpoint(const std::string& out_dir);

}  // namespace mhc
