// mhc/checkpoint.h — model checkpoints as safetensors (SPEC §4): every parameter as F32 under its
// PyTorch name, each mhc-lite site's permutation list as `...hc_attn.perms` (I64, K x n), and the
// model config in __metadata__["config"] as JSON with nanoGPT's names. Loads into the PyTorch
// reference with a strict load_state_dict. Writes are atomic (temporary file, fsync, rename).
#pragma once
#include <map>
#include <string>

#include "mhc/gpt.h"
#include "mhc/safetensors.h"

namespace mhc {

// The tensors and metadata of a model checkpoint (extra metadata entries are added as given).
SafeTensors checkpoint_tensors(const GPT<float>& m, const std::map<std::string, std::string>& extra_meta = {});
void checkpoint_save(const std::string& path, const GPT<float>& m,
                     const std::map<std::string, std::string>& extra_meta = {});

// Builds the model a checkpoint describes and loads its weights. Strict: a missing or unexpected
// tensor, a wrong shape, a non-float dtype or a config that does not build is an error
// (std::runtime_error naming the file and the problem). `lm_head.weight` is accepted in place of
// (or, if equal, beside) `transformer.wte.weight`.
void checkpoint_load(const std::string& path, GPT<float>& m, SafeTensors* raw = nullptr);
void checkpoint_load(const SafeTensors& st, GPT<float>& m);

// Integrity: "crc32:<8 hex digits>" over every tensor's name, dtype, shape and data, in name order
// (so it does not depend on the file's layout). Written into __metadata__["checksum"] by mhc;
// checksum_verify throws "<file>: checksum mismatch ..." when a file's data does not match its
// stored checksum (files without one, e.g. from other tools, are accepted).
std::string tensors_checksum(const SafeTensors& st);
void checksum_verify(const SafeTensors& st);

}  // namespace mhc
