// The run directory's files (see mhc/train.h). Internal to the trainer.
#pragma once
#include <map>
#include <string>

#include "mhc/data.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"

namespace mhc::detail {

struct ResumeState {
    long step = 0;
    BatcherState train, val;
};

// Writes ckpt_<step>.safetensors and ckpt_<step>.optim.safetensors, then points `latest` at them.
// Returns the checkpoint's path. A failure leaves the previous checkpoint and `latest` intact.
// extra_meta goes into the model checkpoint's metadata (the run's tokenizer).
std::string save_run_checkpoint(const std::string& dir, const GPT<float>& m, const AdamW<float>& opt,
                                const ResumeState& rs, const std::string& train_config_json,
                                const std::map<std::string, std::string>& extra_meta = {});
// Loads the checkpoint `latest` names (model, optimizer, positions) into m, opt and rs.
void load_run_checkpoint(const std::string& dir, GPT<float>& m, AdamW<float>& opt, ResumeState& rs);

// Deletes all but the newest `keep` checkpoints (model and optimizer files) of a run directory;
// the one `latest` names is never deleted.
void prune_checkpoints(const std::string& dir, int keep);
// Removes temporary files a killed write left behind (*.tmp.<pid>).
void remove_stale_temporaries(const std::string& dir);

// Writes a small text file atomically (temporary file, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace mhc::detail
