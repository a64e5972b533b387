// mhc/data.h — training data: token files and the batches drawn from them.
//
// Three file formats, all loaded whole into memory as uint16 tokens:
//   text  bytes of any file, one token per byte (vocabulary 256), for character-level runs;
//   u16   raw little-endian uint16 tokens, as nanoGPT's prepare.py writes train.bin / val.bin;
//   llmc  an llm.c shard: a 1024-byte header of 256 little-endian int32 ([0] magic 20240520,
//         [1] version 1, [2] token count) followed by exactly that many uint16 tokens.
// Loading validates everything (sizes, header, every token < vocab_size) and throws
// std::runtime_error with a one-line message naming the file and the problem; bad arguments
// (unknown names, a vocabulary that does not fit the format) throw std::invalid_argument.
//
// A Batcher cuts windows of T+1 tokens out of the data, B per batch, either at random starts or
// sequentially (for evaluation), and its whole position fits in a BatcherState so a run resumes
// bit-identically from a checkpoint.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mhc {

enum class DataFormat { automatic, text, u16, llmc };

// "auto", "text", "u16", "llmc". Throws std::invalid_argument on anything else.
DataFormat data_format_from_string(const std::string& s);
const char* data_format_name(DataFormat f);  // the same spellings

struct TokenData {
    std::string path;                       // the file read, for messages
    DataFormat format = DataFormat::text;   // as resolved by load_tokens (never automatic)
    int vocab_size = 0;                     // every token is < vocab_size
    std::vector<uint16_t> tokens;
};

// Loads a whole file. automatic: an llm.c shard if the file starts with the int32 magic 20240520;
// otherwise raw uint16 if the file name ends in .bin or has no extension, else text.
// vocab_size 0 means the format's default: 256 for text, 50304 (GPT-2's padded vocabulary) for u16
// and llmc. Text takes no other vocabulary than 256. The first token >= vocab_size is an error
// that gives its value and position; tokens are never wrapped or clipped.
TokenData load_tokens(const std::string& path, DataFormat fmt = DataFormat::automatic,
                      int vocab_size = 0);
// The same loader on a whole file already in memory (embedders, the fuzz targets). `name` stands
// for the path: in messages, in the result, and for automatic's extension rule.
TokenData load_tokens_from_memory(std::string_view bytes, const std::string& name,
                                  DataFormat fmt = DataFormat::automatic, int vocab_size = 0);

// Train = the first floor(frac * len) tokens, validation = the rest (nanoGPT splits 90/10 this way).
// Both keep the path, format and vocabulary of `all`. Throws std::invalid_argument unless
// 0 < frac < 1 and both parts are non-empty.
std::pair<TokenData, TokenData> split_tokens(const TokenData& all, double frac = 0.9);

enum class Order { random, sequential };

// "random", "sequential". Throws std::invalid_argument on anything else.
Order order_from_string(const std::string& s);
const char* order_name(Order o);

// Everything a Batcher needs to resume exactly (store it in checkpoints).
//   rng:  the generator's state (random order; it is the seed before the first batch).
//   next: sequential order, the index of the next window in [0, num_windows());
//         random order, the number of batches drawn so far (informational only).
struct BatcherState {
    uint64_t rng = 0;
    int64_t next = 0;
};

class Batcher {
  public:
    // Windows of T+1 tokens: inputs = tokens[s .. s+T), targets = tokens[s+1 .. s+T+1).
    // Keeps a pointer to data.tokens: `data` must outlive the Batcher (temporaries are refused).
    // Throws std::invalid_argument if B < 1, T < 1 or the data holds fewer than T+1 tokens.
    Batcher(const TokenData& data, int B, int T, Order order, uint64_t seed);
    Batcher(TokenData&&, int, int, Order, uint64_t) = delete;

    // Fills inputs[B*T] and targets[B*T] (row-major [B][T]). Allocates nothing.
    // random: each row's start is uniform in [0, len-T-1], from a splitmix64 generator (the same
    //   sequence on every platform and compiler).
    // sequential: window j starts at j*T, so the target of one window is the first input of the
    //   next; row b of batch k is window (k*B + b) mod num_windows() (wraps to window 0 at the end).
    void next(int32_t* inputs, int32_t* targets);

    BatcherState state() const { return st_; }
    // Throws std::invalid_argument if a sequential state's window is out of range.
    void restore(const BatcherState& s);

    int64_t num_windows() const { return (len_ - 1) / T_; }  // sequential windows that fit
    int B() const { return B_; }
    int T() const { return T_; }
    Order order() const { return order_; }

  private:
    const uint16_t* tok_;
    int64_t len_;
    int B_, T_;
    Order order_;
    BatcherState st_;
};

}  // namespace mhc
