// Data-parallel training over a communicator (train/comm.h), the optimizer state sharded over the
// ranks (ZeRO stage 1). Internal: train_run calls these; with one rank they are today's single
// process exactly (train_step, evaluate, the whole AdamW state).
//
// A step: every rank draws every micro-batch of the global batch from the same seeded batcher
// (so data positions are the same on every rank and in any world size) and computes only its own
// gradient_accumulation_steps / ranks of them, a contiguous run. During the backward of its last
// micro-batch, each range of parameters whose gradient is complete (a block, ln_f, the embeddings
// last) is sent, piece by piece, to the rank that owns that piece (point-to-point, overlapped
// with the rest of the backward). The owner adds the ranks' pieces in rank order: the sum is
// deterministic for a given number of ranks. The global gradient norm comes from the same
// 16384-value blocks, added in the same order, as in one process (grad_sumsq_blocks); each rank
// clips and updates its shard with AdamW (its moments only), and the shards are gathered.
//
// Shards are whole runs of those blocks, split evenly: rank r owns [bounds[r], bounds[r+1]).
#pragma once
#include <string>
#include <vector>

#include "mhc/train.h"
#include "train/comm.h"
#include "train/engine.h"
#include "train/train_data.h"
#include "train/val_set.h"

namespace mhc {

struct DataParallel {
    Comm* comm = nullptr;
    Engine* engine = nullptr;                // one rank: where the model runs (the CPU or a GPU)
    std::vector<long> bounds;                // size + 1 shard boundaries over the parameters
    long lo = 0, hi = 0;                     // this rank's shard
    AdamW<float>* whole = nullptr;           // one rank: the optimizer state itself
    AdamW<float> shard;                      // several ranks: the moments of [lo, hi)
    std::vector<ParamTensor> shard_tensors;  // the parts of the tensors inside [lo, hi), offsets from lo
    std::vector<float> inbox;                // (size - 1) x (hi - lo): the other ranks' gradients of the shard
    int overflow_rank = -1;                  // test hook MHC_TEST_NONFINITE_UPDATE_RANK (dp_train_step)
};

// Before the run directory is touched. Throws std::invalid_argument, the same on every rank, when
// gradient_accumulation_steps does not split over the ranks or several ranks are asked to train on
// a GPU (cfg.device); std::runtime_error when the ranks
// were started with different configs, data, options or binaries (hashes compared). The test hook
// MHC_TEST_PERTURB_CONFIG_RANK=R makes rank R's config look different.
void dp_check_run(Comm& comm, const TrainConfig& cfg, const TrainOptions& opt, const TrainData& data);

// Shards the optimizer state (fresh, or loaded whole from a checkpoint: moments re-sharded for this
// world size) and gives every rank rank 0's weights. `engine` (made for m and adam, train/engine.h)
// runs the steps of one rank, on its device; several ranks train on the CPU (dp_check_run).
DataParallel dp_start(Comm& comm, GPT<float>& m, AdamW<float>& adam, Engine& engine);

// train_step's contract over all ranks: the same loss, norm and weights on every rank, and the same
// verdict on whether the update is finite (each rank checks its shard; one overflow skips it on all).
// Test hook: with MHC_TEST_NONFINITE_UPDATE_RANK=R, force_nonfinite overflows the update of rank
// R's shard alone (a gradient of 1e30 after clipping: v = g² is inf) instead of making the loss NaN.
StepStats dp_train_step(DataParallel& dp, GPT<float>& m, Batcher& batches, const TrainConfig& cfg, long step,
                        int32_t* in, int32_t* tg, bool force_nonfinite);

// The NaN guard's unsound_state (train/guard.h) over all ranks (collective): the moments checked
// shard by shard, the next step's loss and norm computed as dp_train_step computes them; the same
// verdict on every rank.
std::string dp_unsound_state(DataParallel& dp, GPT<float>& m, const Batcher& tb, const TrainConfig& cfg);

// evaluate()'s mean loss, the batches shared round-robin over the ranks (the same result).
double dp_evaluate(DataParallel& dp, GPT<float>& m, Batcher& b, int batches);
// val_set_loss over the ranks: the run's fixed validation set, shared as dp_evaluate shares it.
double dp_val_set_loss(DataParallel& dp, GPT<float>& m, const ValSet& vs);

// The whole AdamW state for a checkpoint, on rank 0 (collective): with one rank the state itself;
// with several, the shards gathered into `buf`. Other ranks get an empty state.
const AdamW<float>& dp_whole_optimizer(DataParallel& dp, AdamW<float>& buf);

// Bytes of AdamW moments the fullest rank holds (collective): 1/N of one process's, measured.
long dp_optimizer_bytes(DataParallel& dp);

// "data parallel: 2 ranks (mpi), ..." for the run's header (not collective).
std::string dp_describe(DataParallel& dp, const TrainConfig& cfg);

}  // namespace mhc
