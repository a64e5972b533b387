// Resuming a run: the checkpoint to start from (the newest, or when it is corrupt and the user
// asks for it, the newest intact one: never silently), and the checks that the run is the one
// the command describes (its model, its data), each refused in one line naming what differs.
// Internal.
#pragma once
#include <nlohmann/json.hpp>

#include "mhc/config.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"
#include "mhc/train.h"
#include "train/run_dir.h"

namespace mhc {

// Loads the run in opt.out_dir into m, adam and rs. cfg: the finalized config of this invocation;
// data: load_train_data's record. When the checkpoint `latest` names does not load, says which
// older one does and how to take it (opt.resume_from_intact), or takes it saying so, pointing
// `latest` at it.
void resume_run(const TrainOptions& opt, const TrainConfig& cfg, const nlohmann::json& data, GPT<float>& m,
                AdamW<float>& adam, run_dir::ResumeState& rs);

}  // namespace mhc
