// mhc/tokenizer.h — text <-> token ids: bytes, SentencePiece, Hugging Face byte-level BPE, and
// llm.c's GPT-2 tokenizer file (decoding only); UTF-8-safe streaming output; a run's tokenizer.
//
//   Tokenizer tok = tokenizer_load("data/fortunes-spm/tokenizer.model");   // or tokenizer_bytes()
//   std::vector<uint32_t> ids;
//   tokenizer_encode(tok, "Hello world\n", ids);        // appends
//   std::string text = tokenizer_decode(tok, ids);       // "Hello world\n"
//
// The kinds:
//   bytes          one token per byte, vocabulary 256 (mhc's character-level models).
//   sentencepiece  a SentencePiece .model (Debian's libsentencepiece). Text is encoded line by line:
//                  each line without its newline as SentencePiece encodes it (what `spm_encode`
//                  prints for that line), then one token for the newline (the piece "\n" if the
//                  model has it, else its byte piece <0x0A>). Bytes that are not valid UTF-8 become
//                  their byte pieces when the model has byte fallback.
//   hf_bpe         a Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2 and the models
//                  that reuse it): added tokens matched first, then the ByteLevel pre-tokenizer's
//                  GPT-2 regex, the byte-to-unicode alphabet and the merges by rank, as the
//                  `tokenizers` library does. Anything else in the file is refused by name.
//   llmc_gpt2      llm.c's gpt2_tokenizer.bin: a table of token bytes, for decoding only.
// Loading errors are std::runtime_error with one line naming the file and the problem.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mhc/data.h"

namespace mhc {

enum class TokenizerKind { bytes, sentencepiece, hf_bpe, llmc_gpt2 };
const char* tokenizer_kind_name(TokenizerKind k);  // "bytes", "sentencepiece", "hf_bpe", "llmc_gpt2"

struct SpmModel;  // src/tok/spm.cpp
struct BpeModel;  // src/tok/bpe.cpp

struct Tokenizer {
    TokenizerKind kind = TokenizerKind::bytes;
    std::string path;                 // the file it was loaded from ("" for bytes)
    int vocab_size = 256;             // every id it makes or takes is < vocab_size
    bool can_encode = true;           // false for llm.c's table (decoding only)
    // The bytes each id decodes to ("" for ids it has no text for: controls, holes in the ids).
    std::vector<std::string> pieces;
    std::vector<uint8_t> has_piece;   // 1 where the id exists (holes in a tokenizer.json are 0)
    // 1 where the id marks a document's bounds, not text: SentencePiece's controls (<s>, </s>),
    // a tokenizer.json's added tokens marked "special", llm.c's end-of-text. Decoded as written,
    // but no text bytes (bits per byte), and what follows starts a document (a line start).
    std::vector<uint8_t> special;
    // The id a document starts with, where the tokenizer has one: llm.c's end of text (its data
    // puts one before each document), SentencePiece's <s>, a tokenizer.json's <|endoftext|>,
    // <|begin_of_text|>, <|startoftext|> or <s> (the first of those it has, marked special); -1.
    int doc_start = -1;
    // SentencePiece models that add a dummy "▁" in front of each line: decoding drops one space at
    // the start of each line, as SentencePiece's decoder does at the start of its text.
    bool strip_line_space = false;
    std::shared_ptr<const SpmModel> spm;
    std::shared_ptr<const BpeModel> bpe;
};

Tokenizer tokenizer_bytes();
// Reads a tokenizer file, its kind told by its contents: llm.c's magic 20240328, a JSON object
// (tokenizer.json), else a SentencePiece model.
Tokenizer tokenizer_load(const std::string& path);
// A --tokenizer argument: "bytes", else a file as tokenizer_load reads it.
Tokenizer tokenizer_load_given(const std::string& file_or_bytes);
// The same from the file's bytes in memory; `name` stands for the path (messages, Tokenizer::path).
Tokenizer tokenizer_load_bytes(const std::string& name, std::string_view bytes);
// Copies the tokenizer's file to `dst` atomically (temporary file, fsync, rename).
void tokenizer_copy_file(const Tokenizer& tok, const std::string& dst);

// Appends the ids of `text` to `out`. Throws std::runtime_error for a decode-only tokenizer.
void tokenizer_encode(const Tokenizer& tok, std::string_view text, std::vector<uint32_t>& out);
// Decoding in steps keeps the little state SentencePiece's line rule needs.
struct DecodeState {
    bool line_start = true;  // after a newline or a special id, or at the start
};
// Appends the bytes of one id. An id outside [0, vocab_size) or a hole is a std::out_of_range
// naming the id and the vocabulary.
void tokenizer_decode_one(const Tokenizer& tok, int64_t id, DecodeState& st, std::string& out);
std::string tokenizer_decode(const Tokenizer& tok, const std::vector<uint32_t>& ids);
std::string tokenizer_decode(const Tokenizer& tok, const std::vector<int32_t>& ids);
// The same made valid UTF-8 (Utf8Stream's replacements): what a sample's JSON "text" holds.
std::string tokenizer_decode_utf8(const Tokenizer& tok, const std::vector<int32_t>& ids);
// The text bytes id adds when decoded in state st, which it advances (for bits per byte): 0 for a
// special id; SentencePiece's line rule drops a dummy prefix's space at a line start. Ids as
// decode_one's.
int64_t tokenizer_text_bytes(const Tokenizer& tok, int64_t id, DecodeState& st);

// For sampling a model of V ids with this tokenizer: V flags, 1 for the ids it can decode (not
// the ids past its vocabulary that pad the model's, nor holes).
std::vector<uint8_t> tokenizer_decodable(const Tokenizer& tok, int V);
// Its special ids below V, in order (where a sample ends: the end of a document).
std::vector<int32_t> tokenizer_special_ids(const Tokenizer& tok, int V);

// True when text may be cut at byte p (0 < p < text.size()) and the two sides encoded apart give
// the ids of the whole: bytes anywhere; SentencePiece after a newline; byte-level BPE before a
// single space or after a single newline between two non-space characters, outside any added
// token. `text` is the bytes around p; p + 1 < text.size() is needed to decide.
bool tokenizer_cut_ok(const Tokenizer& tok, std::string_view text, size_t p);

// CRC-32 of a file's bytes, "crc32:<8 hex digits>" (how sidecars and checkpoints name a tokenizer).
std::string file_crc32(const std::string& path);
std::string bytes_crc32(std::string_view bytes);  // the same of bytes in memory
// kind, file (as given), vocabulary and CRC-32 of a tokenizer.
TokenizerRef tokenizer_ref(const Tokenizer& tok, const std::string& file);

// The model's vocabulary must hold the tokenizer's: equal, or padded up to the next multiple of
// 128 (as GPT-2's 50257 is to 50304). Otherwise std::runtime_error naming both sizes.
void tokenizer_check_vocab(const Tokenizer& tok, int model_vocab);

// SentencePiece training (src/tok/spm_train.cpp). Lines come from `next_line`, which returns
// false at the end. The model is lossless on any text: identity normalisation, no whitespace
// removal, no dummy prefix, byte fallback, no BOS/EOS. Returns the serialized .model.
// SentencePiece trains on lines of at most this many bytes (its max_sentence_length, set so):
// longer ones are left out of training (prepare counts and reports them), not cut.
constexpr size_t kSpmMaxLine = 4192;
struct SpmTrainOptions {
    std::string model_type = "bpe";  // or "unigram"
    int vocab_size = 4096;
    long max_sentences = 2000000;    // lines sampled (reservoir) when there are more
    int threads = 2;
    uint32_t seed = 1;
};
std::string spm_train(const SpmTrainOptions& opt, const std::function<bool(std::string&)>& next_line);

// Streaming output of text that arrives in pieces: whole UTF-8 characters only. A character split
// across pieces is held until complete; bytes that cannot become a valid character (and an
// incomplete one at the end) come out as U+FFFD, so what is printed is always valid UTF-8.
struct Utf8Stream {
    std::string pending;
    std::string push(std::string_view bytes);  // the complete characters now available
    std::string finish();                      // what is left, made valid
};
// At s[0..n): k > 0 when a valid UTF-8 character of k bytes starts there; 0 when s is a valid but
// incomplete start of one; -k when it is invalid, k >= 1 being the bytes of its longest valid
// start (the "maximal subpart" that becomes one U+FFFD, as Python and the Unicode standard do).
int utf8_char_length(const unsigned char* s, size_t n);

// A run's tokenizer (src/train/run_tokenizer.cpp).
// Training: copies the tokenizer into the run directory as tokenizer.model / tokenizer.json /
// gpt2_tokenizer.bin (bytes needs no file), and returns the checkpoint metadata entry naming it
// ({"tokenizer": JSON of its TokenizerRef}); empty when there is none. `given` is --tokenizer
// (a file or "bytes"), else the data's own tokenizer is used. Checks the vocabulary against the
// model's; on resume, a different tokenizer than the run's is an error. The tokenizer itself goes
// to *out when there is one and out is given (the samples of a run).
std::map<std::string, std::string> run_tokenizer_attach(const std::string& run_dir, const std::string& given,
                                                        const TokenizerRef& data_tokenizer, int model_vocab,
                                                        Tokenizer* out = nullptr);
// Sampling and evaluation: `given` (--tokenizer) if set, else the one the checkpoint's metadata
// names (its file beside the checkpoint, CRC-checked), else bytes for a 256-token model. Returns
// false when there is none; a named but missing, changed or mismatched one is an error.
bool tokenizer_for_checkpoint(const std::string& ckpt_path, const std::map<std::string, std::string>& metadata,
                              const std::string& given, int model_vocab, Tokenizer& out);

}  // namespace mhc
