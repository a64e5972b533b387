// Token files: format detection, loading and validation (text bytes, raw uint16/uint32, llm.c shards).
#include <glob.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "mhc/data.h"
#include "sys/file.h"
#include "sys/mapped_file.h"

namespace mhc {

namespace {

// llm.c's two shard kinds (dev/data/data_common.py): GPT-2 shards of uint16 tokens, and LLaMA-3
// shards of uint32 tokens with their own magic and version.
constexpr int32_t kLlmcMagic = 20240520, kLlmcVersion = 1;
constexpr int32_t kLlmc32Magic = 20240801, kLlmc32Version = 7;
constexpr int64_t kLlmcHeaderBytes = 1024;  // 256 int32
constexpr int kGpt2Vocab = 50304;         // 50257 padded to a multiple of 128
constexpr int kLlama3Vocab = 128256;

[[noreturn]] void bad(const std::string& path, const std::string& what) {
    throw std::runtime_error(path + ": " + what);
}

// Where the bytes come from: a file, or a buffer already in memory. The readers below see only
// the path (for messages and the extension rule), the size, and reads inside [0, size).
struct Source {
    std::string path;
    int64_t size = 0;
    virtual void read_at(int64_t off, void* dst, int64_t n) const = 0;
    // The whole source mapped, or null when it is read instead.
    virtual std::shared_ptr<const sys::MappedFile> map() const { return nullptr; }
    virtual ~Source() = default;
};

struct Memory : Source {
    std::string_view bytes;
    Memory(std::string_view b, const std::string& name) : bytes(b) {
        path = name;
        size = (int64_t)b.size();
    }
    void read_at(int64_t off, void* dst, int64_t n) const override {
        if (n > 0) std::memcpy(dst, bytes.data() + off, (size_t)n);  // n = 0 may come with dst = nullptr
    }
};

// A file on disk (sys::File: opened, sized by fstat, read with pread).
struct File : Source {
    sys::File f;
    explicit File(const std::string& p) : f(p) {
        path = p;
        if (f.is_dir) bad(p, "is a directory, not a token file");
        size = f.size;
    }
    void read_at(int64_t off, void* dst, int64_t n) const override { f.read_at(off, dst, n); }
    // The files are little-endian: a big-endian host reads them, swapping each token.
    std::shared_ptr<const sys::MappedFile> map() const override {
        return std::endian::native == std::endian::little ? sys::map_file(f) : nullptr;
    }
};

// The files are little-endian; on a big-endian host swap after reading.
void from_little_endian(uint16_t* p, int64_t n) {
    if constexpr (std::endian::native == std::endian::big)
        for (int64_t i = 0; i < n; i++) p[i] = (uint16_t)((p[i] >> 8) | (p[i] << 8));
    (void)p, (void)n;
}
void from_little_endian(uint32_t* p, int64_t n) {
    if constexpr (std::endian::native == std::endian::big)
        for (int64_t i = 0; i < n; i++) p[i] = __builtin_bswap32(p[i]);
    (void)p, (void)n;
}
int32_t le_int32(const uint8_t* b) {
    return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}

// 2 or 4 bytes per token as an llm.c shard's magic says; 0 when it has none (reading it says why).
int llmc_width(const Source& f) {
    if (f.size < 4) return 0;
    uint8_t b[4];
    f.read_at(0, b, 4);
    return le_int32(b) == kLlmcMagic ? 2 : le_int32(b) == kLlmc32Magic ? 4 : 0;
}

DataFormat detect(const Source& f, const TokenMeta* meta) {
    if (llmc_width(f) != 0) return DataFormat::llmc;
    const std::string ext = std::filesystem::path(f.path).extension().string();
    if (!(ext.empty() || ext == ".bin")) return DataFormat::text;
    return meta && meta->dtype == "uint32" ? DataFormat::u32 : DataFormat::u16;
}

Tokens read_text(const Source& f, const std::shared_ptr<const sys::MappedFile>& m) {
    if (m) return Tokens(m, m->data, f.size, 1, true);
    std::vector<uint8_t> out((size_t)f.size);
    f.read_at(0, out.data(), f.size);
    return Tokens(std::move(out));
}

// `count` little-endian tokens of `width` bytes at offset `off`: in the mapping, or read.
template <class Id>
Tokens read_ids(const Source& f, int64_t off, int64_t count) {
    std::vector<Id> out((size_t)count);
    f.read_at(off, out.data(), (int64_t)sizeof(Id) * count);
    from_little_endian(out.data(), count);
    return Tokens(std::move(out));
}
Tokens read_raw(const Source& f, const std::shared_ptr<const sys::MappedFile>& m, int64_t off, int64_t count,
                int width) {
    if (m) return Tokens(m, m->data + off, count, width, true);  // off 0 or 1024: aligned for any width
    return width == 4 ? read_ids<uint32_t>(f, off, count) : read_ids<uint16_t>(f, off, count);
}

Tokens read_u16(const Source& f, const std::shared_ptr<const sys::MappedFile>& m) {
    if (f.size % 2 != 0)
        bad(f.path, "odd byte count " + std::to_string(f.size) +
                        ": raw uint16 data has two bytes per token");
    return read_raw(f, m, 0, f.size / 2, 2);
}

Tokens read_u32(const Source& f, const std::shared_ptr<const sys::MappedFile>& m) {
    if (f.size % 4 != 0)
        bad(f.path, "byte count " + std::to_string(f.size) +
                        " is not a multiple of 4: raw uint32 data has four bytes per token");
    return read_raw(f, m, 0, f.size / 4, 4);
}

Tokens read_llmc(const Source& f, const std::shared_ptr<const sys::MappedFile>& m) {
    if (f.size < kLlmcHeaderBytes)
        bad(f.path, "truncated llm.c shard: " + std::to_string(f.size) +
                        " bytes, shorter than its 1024-byte header");
    uint8_t h[kLlmcHeaderBytes];
    f.read_at(0, h, kLlmcHeaderBytes);
    const int32_t magic = le_int32(h), version = le_int32(h + 4), count = le_int32(h + 8);
    if (magic != kLlmcMagic && magic != kLlmc32Magic)
        bad(f.path, "not an llm.c shard: magic " + std::to_string(magic) + ", expected " +
                        std::to_string(kLlmcMagic) + " (uint16 tokens) or " + std::to_string(kLlmc32Magic) +
                        " (uint32 tokens)");
    const int32_t want_version = magic == kLlmcMagic ? kLlmcVersion : kLlmc32Version;
    if (version != want_version)
        bad(f.path, "unsupported llm.c shard version " + std::to_string(version) + " for magic " +
                        std::to_string(magic) + " (expected version " + std::to_string(want_version) + ")");
    if (count < 0) bad(f.path, "llm.c header gives a negative token count " + std::to_string(count));
    const int width = magic == kLlmcMagic ? 2 : 4;
    const int64_t have = f.size - kLlmcHeaderBytes, want = width * (int64_t)count;
    if (have < want)
        bad(f.path, "truncated llm.c shard: header token count " + std::to_string(count) + " needs " +
                        std::to_string(want) + " bytes after the header, the file has " +
                        std::to_string(have));
    if (have > want)
        bad(f.path, "llm.c header token count " + std::to_string(count) + " needs " +
                        std::to_string(want) + " bytes after the header, the file has " +
                        std::to_string(have) + " (trailing data)");
    return read_raw(f, m, kLlmcHeaderBytes, count, width);
}

}  // namespace

DataFormat data_format_from_string(const std::string& s) {
    if (s == "auto") return DataFormat::automatic;
    if (s == "text") return DataFormat::text;
    if (s == "u16") return DataFormat::u16;
    if (s == "u32") return DataFormat::u32;
    if (s == "llmc") return DataFormat::llmc;
    throw std::invalid_argument("unknown data format '" + s + "' (expected auto, text, u16, u32 or llmc)");
}

const char* data_format_name(DataFormat f) {
    switch (f) {
        case DataFormat::automatic: return "auto";
        case DataFormat::text: return "text";
        case DataFormat::u16: return "u16";
        case DataFormat::u32: return "u32";
        case DataFormat::llmc: return "llmc";
    }
    return "?";
}

namespace {

void check_vocab_argument(const std::string& path, int vocab_size) {
    if (vocab_size < 0)
        throw std::invalid_argument(path + ": vocab_size " + std::to_string(vocab_size) + " is negative");
}

// meta: the file's sidecar, if it has one (files only; never for data in memory).
TokenData load(const Source& f, DataFormat fmt, int vocab_size, const TokenMeta* meta) {
    const std::string& path = f.path;
    if (f.size == 0) bad(path, "empty file, no tokens");
    TokenData d;
    d.path = path;
    d.format = fmt == DataFormat::automatic ? detect(f, meta) : fmt;
    if (d.format == DataFormat::text && vocab_size != 0 && vocab_size != 256)
        throw std::invalid_argument(path + ": text data is bytes, its vocab_size is 256, not " +
                                    std::to_string(vocab_size));
    if (meta && (d.format == DataFormat::u16 || d.format == DataFormat::u32) &&
        (meta->dtype == "uint32") != (d.format == DataFormat::u32))
        throw std::invalid_argument(path + ": its meta.json gives dtype " + meta->dtype + ", not the " +
                                    data_format_name(d.format) + " of the format asked for");
    const auto m = f.map();
    switch (d.format) {
        case DataFormat::text: d.tokens = read_text(f, m); break;
        case DataFormat::u16: d.tokens = read_u16(f, m); break;
        case DataFormat::u32: d.tokens = read_u32(f, m); break;
        default: d.tokens = read_llmc(f, m); break;
    }
    const int width = d.tokens.width();
    if (d.format == DataFormat::text) {
        d.tokenizer = {"bytes", "", 256, ""};
    } else if (meta) {
        d.tokenizer = meta->tokenizer;
        if (!d.tokenizer.file.empty())  // the sidecar names it relative to its own directory
            d.tokenizer.file = (std::filesystem::path(path).parent_path() / d.tokenizer.file).string();
    }
    d.vocab_size = vocab_size;
    if (d.vocab_size == 0 && d.format == DataFormat::text) d.vocab_size = 256;
    if (d.vocab_size == 0 && meta) d.vocab_size = meta->vocab_size;
    if (d.vocab_size == 0 && d.format == DataFormat::u32)
        throw std::invalid_argument(path + ": raw uint32 tokens have no default vocabulary: set vocab_size "
                                    "(or prepare the data with mhc prepare, whose meta.json gives it)");
    if (d.vocab_size == 0) d.vocab_size = width == 4 ? kLlama3Vocab : kGpt2Vocab;
    if (d.tokens.empty()) bad(path, "holds no tokens");
    // Out-of-range ids would index past the embedding table; report the first, never wrap. (Ids
    // of a width below the vocabulary's need no look: 256 bytes for text, 65,536 for uint16.)
    if (width < 4 && (int64_t)d.vocab_size >= (1ll << (8 * width))) return d;
    if (m) sys::mapped_advise_sequential(*m, true);
    const int64_t i = d.tokens.find_at_least((uint32_t)d.vocab_size);
    if (m) sys::mapped_advise_sequential(*m, false);
    if (i >= 0)
        bad(path, "token " + std::to_string(d.tokens[i]) + " at position " + std::to_string(i) + " is >= vocab_size " +
                      std::to_string(d.vocab_size) + " (" + data_format_name(d.format) + " data)");
    return d;
}

}  // namespace

std::vector<std::string> data_files(const std::string& spec) {
    std::error_code ec;
    if (spec.find_first_of("*?[") == std::string::npos || std::filesystem::exists(spec, ec)) return {spec};
    glob_t g{};
    // GLOB_ERR: a directory that cannot be read stops the expansion rather than losing its files.
    const int rc = ::glob(spec.c_str(), GLOB_ERR, nullptr, &g);
    std::vector<std::string> files(g.gl_pathv, g.gl_pathv + (rc == 0 ? g.gl_pathc : 0));
    ::globfree(&g);
    if (rc == GLOB_NOMATCH) throw std::runtime_error(spec + ": no file matches this pattern");
    if (rc == GLOB_ABORTED)
        throw std::runtime_error(spec + ": cannot expand this pattern: a directory on its way cannot be read");
    if (rc != 0) throw std::runtime_error(spec + ": cannot expand this pattern: out of memory");
    std::sort(files.begin(), files.end());  // byte order, whatever the locale
    return files;
}

TokenData load_tokens(const std::string& spec, DataFormat fmt, int vocab_size) {
    // Check the arguments before touching the file: a wrong vocabulary is the caller's mistake
    // whatever the file holds. (Text's vocabulary is checked once the format is known.)
    check_vocab_argument(spec, vocab_size);
    const std::vector<std::string> files = data_files(spec);
    // Each later file must read as the first one's format (checked before its vocabulary, which
    // is the first file's) to join its stream.
    auto one = [&](const std::string& path, int vocab, const TokenData* first) {
        const File f(path);
        TokenMeta meta;
        const bool has_meta = token_meta_find(path, meta);
        const DataFormat resolved = fmt == DataFormat::automatic ? detect(f, has_meta ? &meta : nullptr) : fmt;
        if (first && resolved != first->format)
            throw std::invalid_argument(path + " reads as " + data_format_name(resolved) + " but " + files[0] +
                                        " as " + data_format_name(first->format) +
                                        ": the files of one data argument are of one format (give --format, or "
                                        "a pattern matching only those files)");
        // One format is one width but for llm.c's shards (GPT-2's uint16, LLaMA-3's uint32): their
        // widths are compared before any id is checked against the first shard's vocabulary.
        if (first && resolved == DataFormat::llmc)
            if (const int width = llmc_width(f); width != 0 && width != first->tokens.width())
                throw std::invalid_argument("tokens of " + std::to_string(width) + " and " +
                                            std::to_string(first->tokens.width()) + " bytes cannot make one stream (" +
                                            files[0] + " and " + path + " of " + spec + ")");
        // A guess of text for a compressed file (corpus.txt.gz) would train on its compressed bytes.
        if (fmt == DataFormat::automatic && resolved == DataFormat::text && f.size > 0)
            if (const std::string kind = sys::compression_of(f.f); !kind.empty())
                throw std::runtime_error(path + ": is " + kind + "-compressed, not text: decompress it first (or give "
                                         "--format text to take its bytes as they are)");
        return load(f, resolved, vocab, has_meta ? &meta : nullptr);
    };
    TokenData all = one(files[0], vocab_size, nullptr);
    all.files = files;  // as globbed once: the run's data identity is of these very files
    std::vector<Tokens> parts{all.tokens};
    for (size_t i = 1; i < files.size(); i++) {
        const TokenData d = one(files[i], all.vocab_size, &all);
        auto named = [](const TokenizerRef& t) {
            return t.empty() ? std::string("names no tokenizer (no meta.json lists it)") : "was made by " + t.kind + " " + t.crc32;
        };
        if (d.tokenizer.kind != all.tokenizer.kind || d.tokenizer.crc32 != all.tokenizer.crc32)
            throw std::invalid_argument(files[i] + " " + named(d.tokenizer) + ", " + files[0] + " " + named(all.tokenizer) +
                                        ": the files of " + spec + " must come from one tokenizer");
        parts.push_back(d.tokens);
    }
    if (files.size() > 1) {
        all.path = spec;
        all.tokens = Tokens::concat(parts);
    }
    return all;
}

TokenData load_tokens_from_memory(std::string_view bytes, const std::string& name, DataFormat fmt,
                                  int vocab_size) {
    check_vocab_argument(name, vocab_size);
    return load(Memory(bytes, name), fmt, vocab_size, nullptr);
}

std::pair<TokenData, TokenData> split_tokens(const TokenData& all, double frac) {
    if (!(frac > 0.0 && frac < 1.0))
        throw std::invalid_argument(all.path + ": split fraction " + std::to_string(frac) +
                                    " is not strictly between 0 and 1");
    const int64_t n = all.tokens.size();
    // The same double product and truncation as nanoGPT's int(n * 0.9), so the boundary matches.
    const int64_t cut = (int64_t)((double)n * frac);
    if (cut <= 0 || cut >= n)
        throw std::invalid_argument(all.path + ": splitting " + std::to_string(n) + " tokens at " +
                                    std::to_string(frac) + " leaves an empty part");
    std::pair<TokenData, TokenData> r{all, all};
    r.first.tokens = all.tokens.slice(0, cut);
    r.second.tokens = all.tokens.slice(cut, n);
    return r;
}

}  // namespace mhc
