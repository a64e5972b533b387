// The run directory (see mhc/train.h), the one place that names its files, writes them and reads
// them back, for the trainer, `mhc compare` and the report. Internal.
//
//   config.toml                    the resolved config
//   metrics.jsonl                  one JSON object per logged step, appended as training goes
//   ckpt_NNNNNN.safetensors        the model at step NNNNNN (SPEC §4)
//   ckpt_NNNNNN.optim.safetensors  what resuming needs besides it: AdamW moments, step, data positions
//   latest                         "ckpt_NNNNNN\n", the newest complete checkpoint, written last
#pragma once
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"

namespace mhc::run_dir {

std::string config_path(const std::string& dir);   // DIR/config.toml
std::string metrics_path(const std::string& dir);  // DIR/metrics.jsonl

// ---- config.toml ----
void write_config(const std::string& dir, const TrainConfig& cfg);
TrainConfig read_config(const std::string& dir);  // throws as config_from_toml_file

// ---- latest ----
std::string checkpoint_name(long step);  // "ckpt_000042"
void write_latest(const std::string& dir, long step);
// The first line of `latest` (a checkpoint's name), or "" when there is none.
std::string read_latest(const std::string& dir);
// DIR/<latest>.safetensors, or "" when there is no `latest`.
std::string latest_checkpoint(const std::string& dir);
// The step of the checkpoint `latest` names (ckpt_NNNNNN), or -1.
long latest_step(const std::string& dir);

// ---- metrics.jsonl ----
void start_metrics(const std::string& dir);  // an empty file: a new run
// Keeps only the records of steps <= step (a resumed run rewrites what came after its checkpoint),
// and nothing from the first line that is not JSON on (a torn last line from a crash).
void truncate_metrics(const std::string& dir, long step);

// Appends records, one line each, flushed at once: a crash loses at most a torn last line.
struct MetricsLog {
    std::ofstream f;
    explicit MetricsLog(const std::string& dir);  // throws if the file cannot be opened
    void append(const nlohmann::json& rec);
};

// One line of metrics.jsonl as written, and its JSON (discarded when the line is not JSON).
struct MetricsLine {
    std::string text;
    nlohmann::json rec;
};
// Every line, in order (blank ones too). False if the file cannot be read.
bool read_metrics(const std::string& dir, std::vector<MetricsLine>& lines);

// ---- checkpoints ----
struct ResumeState {
    long step = 0;
    BatcherState train, val;
};

// Writes ckpt_<step>.safetensors and ckpt_<step>.optim.safetensors, then points `latest` at them.
// Returns the checkpoint's path. A failure leaves the previous checkpoint and `latest` intact.
std::string save_checkpoint(const std::string& dir, const GPT<float>& m, const AdamW<float>& opt,
                            const ResumeState& rs, const std::string& train_config_json);
// Loads the checkpoint `latest` names (model, optimizer, positions) into m, opt and rs.
void load_checkpoint(const std::string& dir, GPT<float>& m, AdamW<float>& opt, ResumeState& rs);

// The model files ckpt_NNNNNN.safetensors of a run directory, oldest first.
std::vector<std::string> list_checkpoints(const std::string& dir);
// Deletes all but the newest `keep` checkpoints (model and optimizer files); the one `latest`
// names is never deleted.
void prune_checkpoints(const std::string& dir, int keep);
// Removes temporary files a killed write left behind (*.tmp.<pid>).
void remove_stale_temporaries(const std::string& dir);

}  // namespace mhc::run_dir
