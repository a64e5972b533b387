// mhc/data.h — training data: token files and the batches drawn from them.
//
// Four file formats, held at the width they are stored in (Tokens below):
//   text  bytes of any file, one token per byte (vocabulary 256), for character-level runs;
//   u16   raw little-endian uint16 tokens, as nanoGPT's prepare.py writes train.bin / val.bin;
//   u32   raw little-endian uint32 tokens (vocabularies of more than 65,536 tokens);
//   llmc  an llm.c shard: a 1024-byte header of 256 little-endian int32 ([0] magic, [1] version,
//         [2] token count) followed by exactly that many tokens: magic 20240520 version 1 holds
//         uint16 tokens (GPT-2), magic 20240801 version 7 uint32 tokens (llm.c's LLaMA-3 shards).
// A raw .bin does not say its width; `mhc prepare` writes a JSON sidecar, meta.json, beside its
// files (TokenMeta below), and automatic detection reads the width and vocabulary from it.
// A token file is mapped into memory, not read: its pages are the page cache's, shared by every
// process that maps it, and a dataset larger than the machine's memory can still be trained on.
// Loading validates everything (sizes, header, every token < vocab_size) and throws
// std::runtime_error with a one-line message naming the file and the problem; bad arguments
// (unknown names, a vocabulary that does not fit the format) throw std::invalid_argument.
//
// A Batcher cuts windows of T+1 tokens out of the data, B per batch, either at random starts or
// sequentially (for evaluation), and its whole position fits in a BatcherState so a run resumes
// bit-identically from a checkpoint.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mhc {

enum class DataFormat { automatic, text, u16, u32, llmc };

// "auto", "text", "u16", "u32", "llmc". Throws std::invalid_argument on anything else.
DataFormat data_format_from_string(const std::string& s);
const char* data_format_name(DataFormat f);  // the same spellings

// A tokenizer named by a data sidecar or a checkpoint: its kind ("bytes", "sentencepiece",
// "hf_bpe", "llmc_gpt2"), its file ("" for bytes; a path, or a name relative to the sidecar's or
// checkpoint's directory), its vocabulary and the file's CRC-32 ("crc32:<8 hex>", "" for bytes).
struct TokenizerRef {
    std::string kind, file;
    int vocab_size = 0;
    std::string crc32;
    bool empty() const { return kind.empty(); }
};
// As the text of a JSON object {"kind", "file", "vocab_size", "crc32"}, and back (a malformed one is
// a std::runtime_error).
std::string tokenizer_ref_to_json(const TokenizerRef& r);
TokenizerRef tokenizer_ref_from_json(const std::string& text);

// Token ids 1 (text bytes), 2 or 4 bytes wide, as their files hold them: one stream made of
// segments (one per file), each a mapped file (see above) or memory the object owns. Copies and
// slices share the storage, which lives as long as one of them does.
class Tokens {
  public:
    Tokens() = default;
    explicit Tokens(std::vector<uint32_t> ids);  // owned, 4 bytes each
    explicit Tokens(std::vector<uint16_t> ids);  // owned, 2 bytes each
    explicit Tokens(std::vector<uint8_t> ids);   // owned, 1 byte each
    // n ids of `width` bytes at data, kept alive by owner (mapped: whether owner is a file mapping).
    Tokens(std::shared_ptr<const void> owner, const void* data, int64_t n, int width, bool mapped);
    Tokens(const Tokens&) = default;
    Tokens& operator=(const Tokens&) = default;
    Tokens(Tokens&& o) noexcept;  // leaves o empty, as a moved-from vector is
    Tokens& operator=(Tokens&& o) noexcept;
    // The parts one after another, as one stream (no copy). Throws std::invalid_argument if their
    // widths differ.
    static Tokens concat(const std::vector<Tokens>& parts);

    int64_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    int width() const { return width_; }
    bool mapped() const { return mapped_; }           // every segment a file mapping
    int segments() const { return (int)segs_.size(); }
    const void* data() const;                         // the first segment's ids (null when empty)
    uint32_t operator[](int64_t i) const;
    // ids [begin, begin + n) into out, across segments; 0 <= begin, begin + n <= size().
    void copy(int64_t begin, int64_t n, int32_t* out) const;
    Tokens slice(int64_t begin, int64_t end) const;  // ids [begin, end), the same storage
    std::vector<uint32_t> to_vector() const;         // a widened copy
    // The index of the first id >= limit, or -1 if there is none.
    int64_t find_at_least(uint32_t limit) const;

  private:
    struct Segment {
        std::shared_ptr<const void> owner;
        const unsigned char* data;
        int64_t start, size;  // start: the index of its first id in the stream
    };
    size_t segment_of(int64_t i) const;  // the segment holding id i
    std::vector<Segment> segs_;
    int64_t size_ = 0;
    int width_ = 4;
    bool mapped_ = false;
};

struct TokenData {
    std::string path;                       // the file read (the pattern, for several), for messages
    DataFormat format = DataFormat::text;   // as resolved by load_tokens (never automatic)
    int vocab_size = 0;                     // every token is < vocab_size
    Tokens tokens;
    // The tokenizer that made the tokens, when known: bytes for text data, or what the sidecar
    // names (its file as a full path). Empty otherwise.
    TokenizerRef tokenizer;
    std::vector<std::string> files;         // the files read, in order (load_tokens: data_files(path))
};

// The files a data argument names: the path itself when it exists or holds no glob character
// (* ? [), else the files its glob pattern matches (llm.c's shards: "dir/fineweb_train_*.bin"), in
// byte order of their names. A pattern that matches nothing is a std::runtime_error.
std::vector<std::string> data_files(const std::string& spec);

// Loads the files `spec` names (data_files) as one stream, in that order, each whole (mapped where
// it can be: regular files on a little-endian host, else read); they must read as one format,
// width and vocabulary (the first file's) and come from one tokenizer. Windows may span two files,
// as they span two documents inside one. For each file, automatic: an llm.c shard if the file
// starts with one of the two int32 magics; otherwise raw tokens if the file name ends in .bin or
// has no extension (uint32 when a sidecar lists the file with dtype uint32, else uint16), else text.
// vocab_size 0 means the sidecar's vocabulary if there is one, else the format's default: 256 for
// text, 50304 (GPT-2's padded vocabulary) for u16 and version-1 shards, 128256 (LLaMA-3's) for
// version-7 shards; raw u32 has no default. Text takes no other vocabulary than 256. The first
// token >= vocab_size is an error that gives its value and position; tokens are never wrapped or
// clipped.
TokenData load_tokens(const std::string& spec, DataFormat fmt = DataFormat::automatic,
                      int vocab_size = 0);
// The same loader on a whole file already in memory (embedders, the fuzz targets). `name` stands
// for the path: in messages, in the result, and for automatic's extension rule.
TokenData load_tokens_from_memory(std::string_view bytes, const std::string& name,
                                  DataFormat fmt = DataFormat::automatic, int vocab_size = 0);

// Train = the first floor(frac * len) tokens, validation = the rest (nanoGPT splits 90/10 this way).
// Both keep the path, format, vocabulary and tokenizer of `all`, and share its storage (nothing is
// copied). Throws std::invalid_argument unless
// 0 < frac < 1 and both parts are non-empty.
std::pair<TokenData, TokenData> split_tokens(const TokenData& all, double frac = 0.9);

// The sidecar `mhc prepare` writes as DIR/meta.json beside the token files it makes:
//   {"format": "mhc-tokens-1", "dtype": "uint16" | "uint32", "container": "bin" | "llmc",
//    "vocab_size": V, "tokenizer": {"kind", "file", "vocab_size", "crc32"},
//    "files": {"train.bin": {"tokens": N, "bytes": B}, "val.bin": {...}}, "inputs": [...]}
// where "bytes" counts the text bytes each file's tokens encode.
struct TokenFileInfo {
    int64_t tokens = 0, bytes = 0;
};
struct TokenMeta {
    std::string dtype = "uint16", container = "bin";
    int vocab_size = 0;
    TokenizerRef tokenizer;                       // file relative to the sidecar's directory
    std::vector<std::pair<std::string, TokenFileInfo>> files;  // by file name, in order
    std::vector<std::pair<std::string, int64_t>> inputs;        // text files read, with their sizes
};
// Reads the sidecar that describes `data_path`: meta.json in the same directory with format
// "mhc-tokens-1" whose "files" lists the file's name. Returns false if there is none (no meta.json,
// or another program's, or one that does not list the file); a malformed mhc sidecar is a
// std::runtime_error naming it.
bool token_meta_find(const std::string& data_path, TokenMeta& meta);
// The sidecar as JSON text (written by mhc prepare).
std::string token_meta_json(const TokenMeta& meta);

namespace sys { class AtomicFile; }  // src/sys/file.h

// Writes a token file as the tokens come, atomically: into PATH.tmp.<pid>, then fsync and rename
// by finish(). Destroyed unfinished (an error, an interrupt), it removes the temporary, so PATH is
// either absent or complete. width 2 or 4 bytes per token; llmc: llm.c's 1024-byte header in front
// (a GPT-2 shard for width 2, a LLaMA-3 shard for width 4), its count written at the end.
// Errors are std::runtime_error naming the file.
class TokenWriter {
  public:
    TokenWriter(const std::string& path, int width, bool llmc);
    ~TokenWriter();
    TokenWriter(const TokenWriter&) = delete;
    TokenWriter& operator=(const TokenWriter&) = delete;
    void write(const uint32_t* tokens, size_t n);  // every token must fit the width
    void finish();
    int64_t count() const { return count_; }

  private:
    void flush();
    std::unique_ptr<sys::AtomicFile> file_;
    std::string path_;
    int width_;
    bool llmc_;
    int64_t count_ = 0;
    std::string buf_;
};

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
    // Shares data.tokens' storage (the Batcher may outlive `data`).
    // Throws std::invalid_argument if B < 1, T < 1, data.vocab_size < 1 or the data holds fewer
    // than T+1 tokens.
    Batcher(const TokenData& data, int B, int T, Order order, uint64_t seed);

    // Fills inputs[B*T] and targets[B*T] (row-major [B][T]). Allocates nothing. A token >=
    // data.vocab_size (a mapped file rewritten in place after it was validated) is a
    // std::runtime_error naming the file and the id's position in the data, never an id passed on
    // to index the embeddings.
    // random: each row's start is uniform in [0, len-T-1], from a splitmix64 generator (the same
    //   sequence on every platform and compiler).
    // sequential: window j starts at j*T, so the target of one window is the first input of the
    //   next; row b of batch k is window (k*B + b) mod num_windows() (wraps to window 0 at the end).
    void next(int32_t* inputs, int32_t* targets);

    BatcherState state() const { return st_; }
    // Throws std::invalid_argument if a sequential state's window is out of range.
    void restore(const BatcherState& s);

    int64_t num_windows() const { return (tok_.size() - 1) / T_; }  // sequential windows that fit
    int B() const { return B_; }
    int T() const { return T_; }
    Order order() const { return order_; }

  private:
    void copy_window(int64_t s, int32_t* in, int32_t* tg) const;
    Tokens tok_;
    std::string path_;
    uint32_t vocab_;
    int B_, T_;
    Order order_;
    BatcherState st_;
};

}  // namespace mhc
