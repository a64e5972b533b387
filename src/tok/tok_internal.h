// What the tokenizer kinds share inside src/tok/ (the public side is mhc/tokenizer.h).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "mhc/tokenizer.h"

namespace mhc::tok {

[[noreturn]] void fail(const std::string& path, const std::string& what);  // runtime_error "path: what"

// SentencePiece (spm.cpp): `bytes` is the serialized model.
Tokenizer spm_load(const std::string& path, std::string_view bytes);
void spm_encode(const SpmModel& m, std::string_view text, std::vector<uint32_t>& out);

// Hugging Face byte-level BPE (bpe.cpp): `json` is the tokenizer.json text.
Tokenizer bpe_load(const std::string& path, std::string_view json);
void bpe_encode(const BpeModel& m, std::string_view text, std::vector<uint32_t>& out);
bool bpe_cut_ok(const BpeModel& m, std::string_view text, size_t p);

}  // namespace mhc::tok
