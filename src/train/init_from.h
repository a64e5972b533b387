// A new run that starts from another run's weights (train --init-from): fine-tuning on other data,
// or training on with another schedule. The model is the checkpoint's; the optimizer state, the
// step and the data positions start afresh. Internal.
#pragma once
#include <string>

#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/gpt.h"
#include "mhc/train.h"

namespace mhc {

struct InitFrom {
    std::string file;       // the checkpoint loaded
    std::string checksum;   // its tensors' checksum (metadata), to name it in the new run's checkpoints
    std::string tokenizer;  // the run's tokenizer for run_tokenizer_attach's `given`: opt.tokenizer, or when
                            // neither it nor the data names one, the checkpoint's (its file, or "bytes")
};

// Loads opt.init_from's model into m and checks the run against it, each refusal one line: cfg's
// model (finalized, vocab_size set) must be the checkpoint's, naming every key that differs; the
// run's tokenizer (--tokenizer, else the data's) must be the one the checkpoint names, when both
// are known (other ids would stand for other text). A model holding NaN or inf is refused, and so
// is one whose logits over the data's first tokens are not (finite weights whose outputs overflow:
// every step would be skipped).
InitFrom init_from_load(const TrainOptions& opt, const TrainConfig& cfg, const TokenData& train, GPT<float>& m);

}  // namespace mhc
