// Samples of the model while it trains (sample_interval): how its text develops, in the progress
// output and in metrics.jsonl. Internal.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mhc/tokenizer.h"
#include "train/engine.h"

namespace mhc {

// Up to `count` tokens from the model on `e` (temperature 0.8, top-k 40, seeded by `seed`), from
// the start of a document: the tokenizer's doc_start (llm.c's end of text before a document, as
// its samples start; SentencePiece's <s>), else a newline, else token 0 when there is no
// tokenizer (tok null). Only ids the tokenizer decodes are drawn, and the sample ends early at a
// special id. Returns {"tokens": [...], "text": "..."} (text with a tokenizer, whole UTF-8
// characters), or {"error": "..."} when it fails (logits not finite, the device out of memory):
// a sample never stops a run. The model is only read.
nlohmann::json run_sample(Engine& e, const Tokenizer* tok, int V, int count, uint64_t seed);

// How the progress output shows one: "sample at step N:" then its text (or its ids) on the lines
// after, or "sample at step N: none (why)".
std::string run_sample_lines(long step, const nlohmann::json& sample);

}  // namespace mhc
