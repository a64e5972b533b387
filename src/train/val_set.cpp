// The fixed validation set (see val_set.h).
#include "train/val_set.h"

#include "mhc/train.h"

namespace mhc {

ValSet val_set_make(const TokenData& val, const TrainConfig& cfg) {
    // The same seed as the validation batcher had when it drew a new stream at every evaluation,
    // so a run's first evaluation gives the value it gave then.
    return {Batcher(val, cfg.batch_size, cfg.model.block_size, Order::random, cfg.seed ^ 0x5A5A5A5Aull),
            cfg.eval_iters};
}

double val_set_loss(GPT<float>& m, const ValSet& vs) {
    Batcher b = vs.first;
    return evaluate(m, b, vs.batches);
}

}  // namespace mhc
