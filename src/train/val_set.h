// The validation set of a run: eval_iters batches of batch_size windows of the held-out tokens,
// chosen once from the run's seed and the same at every evaluation. So validation curves compare
// point for point (between runs, and between evaluations of one run), the value at a step does
// not depend on eval_interval, and a resumed run has the same set without storing it. Internal.
#pragma once
#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/gpt.h"
#include "train/engine.h"

namespace mhc {

struct ValSet {
    Batcher first;  // positioned at the set's first batch; each evaluation draws from a copy
    int batches = 0;
};

// The set for a run's config: random windows from a generator seeded with seed ^ 0x5A5A5A5A.
// The set shares `val`'s tokens (it may outlive `val`). Throws as Batcher does (too few tokens for
// one window).
ValSet val_set_make(const TokenData& val, const TrainConfig& cfg);

// The mean loss of the model over the whole set.
double val_set_loss(Engine& e, const ValSet& vs);

}  // namespace mhc
