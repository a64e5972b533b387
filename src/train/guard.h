// The NaN guard around checkpoints. A step with a non-finite loss, gradient or update changes
// nothing (train_step). But weights that a finite step produced can still give a non-finite loss
// at the next step: the check on a step's loss judges the weights before its update, not after.
// So before a checkpoint is written, the state it would hold is checked the way resuming will
// use it: every weight and moment finite, and the next step's loss and gradient norm finite. A checkpoint on disk
// can therefore always be evaluated and resumed. Internal.
#pragma once
#include <string>
#include <vector>

#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/gpt.h"
#include "mhc/optim.h"
#include "train/engine.h"

namespace mhc {

// What the next training step would see: the loss and gradient norm of its micro-batches, drawn
// from a copy of the training batcher. Nothing of the run changes (the activations and gradients
// are the next step's to overwrite), so a resumed run stays bit-identical.
struct NextStep {
    double loss = 0, grad_norm = 0;
};
NextStep next_step_check(Engine& e, const Batcher& tb, const TrainConfig& cfg);

// "" when the state may be checkpointed; else why not, in words. First brings the engine's state
// into m and adam (Engine::to_host), which a checkpoint then holds; then the two checks:
// nonfinite_state, and next_step_verdict of next_step_check.
std::string unsound_state(Engine& e, GPT<float>& m, AdamW<float>& adam, const Batcher& tb, const TrainConfig& cfg);
// The weights and the moments, `adam` laid out as moment_tensors (m.params, or a rank's shard of
// them): "" when all are finite, else which one is not.
std::string nonfinite_state(const GPT<float>& m, const std::vector<ParamTensor>& moment_tensors,
                            const AdamW<float>& adam);
// "" when the next step's loss and gradient norm are finite, else what is not.
std::string next_step_verdict(const NextStep& ns);

// The one line a run stops with after max_nonfinite_steps non-finite steps in a row (up to step
// `done`). saved_step: the step of the newest checkpoint (the state saved just now when it equals
// done; 0: none). It names a state that evaluates to a finite loss and says how to go on from it.
std::string diverged_message(const std::string& dir, int in_a_row, long done, long saved_step,
                             const TrainConfig& cfg);

// The one line a run ends with when its final state (step `done`) was not saved (unsound).
std::string unsaved_end_message(const std::string& dir, long done, long saved_step, const TrainConfig& cfg);

}  // namespace mhc
