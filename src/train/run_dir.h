// The run directory (see mhc/train.h), the one place that names its files, writes them and reads
// them back, for the trainer, `mhc compare` and the report. Internal.
//
//   config.toml                    the resolved config
//   metrics.jsonl                  one JSON object per logged step, appended as training goes
//   ckpt_NNNNNN.safetensors        the model at step NNNNNN (SPEC §4)
//   ckpt_NNNNNN.optim.safetensors  what resuming needs besides it: AdamW moments, step, data positions
//   latest                         "ckpt_NNNNNN\n", the newest complete checkpoint, written last
//   data.json                      the data the run trains on: path, size and a content hash per file
//   lock                           held (flock) by the run's one writer while it runs
#pragma once
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"
#include "mhc/safetensors.h"
#include "sys/lock.h"

namespace mhc::run_dir {

std::string config_path(const std::string& dir);   // DIR/config.toml
std::string metrics_path(const std::string& dir);  // DIR/metrics.jsonl
std::string lock_path(const std::string& dir);     // DIR/lock

// ---- the one writer ----
// Creates DIR if it is missing and takes DIR/lock for as long as the Writer lives: a second
// trainer (or compare) on the same directory gets one line naming this process's pid. On release
// a directory this Writer created and nothing else wrote into is removed again, so a refused run
// leaves no empty run directory behind.
struct Writer {
    std::string dir;
    bool created = false;
    sys::FileLock lock;
    Writer() = default;
    Writer(Writer&&) = default;
    ~Writer();
};
Writer take(const std::string& dir);

// ---- data.json: what the run was trained on ----
// {"train": FILE, "val": FILE or null (the held-out part of train), "format": "text"|"u16"|"llmc"},
// FILE = {"path", "bytes", "hash"} (sys::file_fingerprint); for a pattern of N files also
// "files": N, with their total bytes and a hash over their fingerprints (train_data.cpp). Two runs
// saw the same data when the files' sizes and hashes agree, and the formats where both records
// have one.
void write_data_record(const std::string& dir, const nlohmann::json& rec);
nlohmann::json read_data_record(const std::string& dir);  // null when there is none (older runs)
// "" when a and b describe the same data; else what differs, in words ("train file a.txt
// (1200 bytes, crc32:...) vs b.txt (...)").
std::string data_record_difference(const nlohmann::json& had, const nlohmann::json& now);

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
    BatcherState train;   // the validation set is fixed (train/val_set.h): it has no position
    double time_s = 0;    // wall-clock seconds of training before this checkpoint, over all resumes
};

// Writes ckpt_<step>.safetensors and ckpt_<step>.optim.safetensors, then points `latest` at them.
// Returns the checkpoint's path. A failure leaves the previous checkpoint and `latest` intact.
// Refuses (std::runtime_error naming the tensor) to write a weight or moment that is NaN or inf.
// extra_meta goes into the model checkpoint's metadata (the run's tokenizer).
std::string save_checkpoint(const std::string& dir, const GPT<float>& m, const AdamW<float>& opt,
                            const ResumeState& rs, const std::string& train_config_json,
                            const std::map<std::string, std::string>& extra_meta = {});
// Loads a checkpoint's model (eval, sample, info, train --init-from), with the path named in any
// error. `path` may be a run directory: its latest checkpoint. Returns the file loaded. A model
// whose weights hold NaN or inf is refused (one line naming the tensor): nothing it computes would
// mean anything. With raw, the file's tensors and metadata are kept there too (the tokenizer it
// names).
std::string load_model(const std::string& path, GPT<float>& m, SafeTensors* raw = nullptr);
// The checkpoint file `path` stands for: itself, or a run directory's latest.
std::string model_file(const std::string& path);
// A checkpoint's model config, from its header alone (no weights read).
ModelConfig checkpoint_model(const std::string& path);
// Loads the checkpoint `latest` names (model, optimizer, positions) into m, opt and rs.
void load_checkpoint(const std::string& dir, GPT<float>& m, AdamW<float>& opt, ResumeState& rs);
// The same for one checkpoint, by its model file's path.
void load_checkpoint_file(const std::string& model_path, GPT<float>& m, AdamW<float>& opt, ResumeState& rs);
// Loads the newest checkpoint that loads whole (both files, checksums verified), older than
// `before` (a model file's path; "" for any). Returns its path, or "" when none does.
std::string load_newest_intact(const std::string& dir, const std::string& before, GPT<float>& m,
                               AdamW<float>& opt, ResumeState& rs);
// The training config stored in the optimizer file of the checkpoint `latest` names (what the run
// was trained with), for a run directory that lost its config.toml. Throws when it cannot be read.
TrainConfig checkpoint_train_config(const std::string& dir);

// The model files ckpt_NNNNNN.safetensors of a run directory (six digits, seven past step 999,999),
// oldest step first.
std::vector<std::string> list_checkpoints(const std::string& dir);
// Deletes all but the newest `keep` checkpoints (model and optimizer files); the one `latest`
// names is never deleted.
void prune_checkpoints(const std::string& dir, int keep);
// Empties a run directory to train it again from scratch (`mhc compare --retrain-other-data`),
// holding its lock meanwhile: refused, in one line, while another process writes there.
void clear(const std::string& dir);
// Removes temporary files a killed write left behind (*.tmp.<pid>).
void remove_stale_temporaries(const std::string& dir);

}  // namespace mhc::run_dir
