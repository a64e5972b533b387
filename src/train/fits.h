// Whether a training run fits in memory, decided from its config before anything is allocated or
// created: an impossible model is one clear line with its estimated size, not std::bad_alloc (or
// the kernel's OOM killer) after the run directory was made. Internal.
#pragma once
#include <string>

#include "mhc/config.h"

namespace mhc {

// Throws std::runtime_error when gpt_memory_estimate for cfg (finalized, vocab_size set) exceeds
// what this process may use (sys::memory_limit_bytes), or on a GPU (cfg.device) its free memory
// once the device's own costs for the model are met (engine_room: on CUDA the stack frames' reserve,
// made then, and cuBLAS's workspaces). The message gives the estimate and its parts.
void require_memory_for(const TrainConfig& cfg);
// The same for a forward of a batch of B x T tokens on `device` in fp32 (eval, info): the engine's
// weights and gradients (both allocated) and the activations, no optimizer state; `use` names
// what the batch is for ("evaluate") in the message.
void require_memory_to_run(const ModelConfig& model, const std::string& device, int B, int T, const char* use);

}  // namespace mhc
