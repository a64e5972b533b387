// mhc prepare: text files streamed through a tokenizer into train/val token files and a sidecar
// (see mhc/prepare.h).
#include "mhc/prepare.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "mhc/tokenizer.h"
#include "sys/file.h"
#include "sys/signals.h"

namespace mhc {

namespace fs = std::filesystem;

namespace {

// Bytes read at a time. Test hook (tests/cli/test_prepare.py): MHC_TEST_PREPARE_CHUNK=N reads N,
// so small inputs are cut in many places too.
size_t chunk_bytes() {
    static const size_t n = [] {
        const char* e = std::getenv("MHC_TEST_PREPARE_CHUNK");
        return e && std::atol(e) > 0 ? (size_t)std::atol(e) : (size_t)(4 << 20);
    }();
    return n;
}
constexpr size_t kMaxPending = 64 << 20;   // text held while looking for a place to cut

// SIGINT / SIGTERM while encoding: stop at the next chunk; the writers remove their temporaries.
volatile sig_atomic_t g_interrupted = 0;
extern "C" void on_prepare_signal(int) { g_interrupted = 1; }

struct Input {
    std::string path;
    int64_t size = 0;
};

struct FileCloser {
    void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

FilePtr open_input(const std::string& path) {
    FilePtr f(std::fopen(path.c_str(), "rb"));
    if (!f) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
    return f;
}

// Appends up to chunk_bytes() bytes; false at the end of the file.
bool read_chunk(FILE* f, const std::string& path, std::string& buf) {
    const size_t old = buf.size(), want = chunk_bytes();
    buf.resize(old + want);
    const size_t n = std::fread(buf.data() + old, 1, want, f);
    buf.resize(old + n);
    if (std::ferror(f)) throw std::runtime_error(path + ": read failed: " + std::strerror(errno));
    return n > 0;
}

std::string human_bytes(double b) {
    char s[32];
    if (b >= 1e9) std::snprintf(s, sizeof s, "%.2f GB", b / 1e9);
    else if (b >= 1e6) std::snprintf(s, sizeof s, "%.1f MB", b / 1e6);
    else std::snprintf(s, sizeof s, "%.0f kB", b / 1e3);
    return s;
}

// The live progress line: bytes read of the total, throughput, tokens, ETA (a terminal only).
struct Progress {
    bool on;
    int64_t total;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now(), last = t0;
    void show(int64_t done, int64_t tokens, bool final = false) {
        if (!on) return;
        const auto now = std::chrono::steady_clock::now();
        if (!final && now - last < std::chrono::milliseconds(250)) return;
        last = now;
        const double s = std::chrono::duration<double>(now - t0).count(), rate = s > 0 ? done / s : 0;
        const double eta = rate > 0 ? (total - done) / rate : 0;
        std::fprintf(stderr, "\rprepare: %s of %s (%.0f%%)  %s/s  %lld tokens  ETA %dm%02ds   %s", human_bytes((double)done).c_str(),
                     human_bytes((double)total).c_str(), total ? 100.0 * done / total : 100.0, human_bytes(rate).c_str(),
                     (long long)tokens, (int)eta / 60, (int)eta % 60, final ? "\n" : "");
    }
};

// Lines of the first `limit` bytes of the inputs, for SentencePiece's trainer. Empty lines are
// skipped, and lines past kSpmMaxLine bytes, which the trainer would drop, are skipped and counted
// (too_long); past 64 KiB a line's bytes are not even kept.
struct LineSource {
    static constexpr size_t kMaxLine = 64 << 10;
    const std::vector<Input>& inputs;
    int64_t limit, consumed = 0;
    size_t file = 0;
    FilePtr f;
    std::string buf;
    size_t pos = 0;
    bool eof = false, skipping = false;
    long lines = 0, too_long = 0;

    LineSource(const std::vector<Input>& in, int64_t lim) : inputs(in), limit(lim) {}

    bool next(std::string& line) {
        for (;;) {
            if (consumed >= limit) return false;
            if (!f) {
                if (file >= inputs.size()) return false;
                f = open_input(inputs[file].path);
                buf.clear(), pos = 0, eof = false, skipping = false;
            }
            size_t nl = buf.find('\n', pos);
            while (nl == std::string::npos && !eof) {
                if (buf.size() - pos > kMaxLine) {  // an overlong line: drop what we have of it
                    consumed += (int64_t)(buf.size() - pos);
                    buf.clear(), pos = 0, skipping = true;
                } else {
                    buf.erase(0, pos), pos = 0;
                }
                eof = !read_chunk(f.get(), inputs[file].path, buf);
                nl = buf.find('\n', pos);
            }
            if (nl == std::string::npos && pos == buf.size()) {  // the file is done
                f.reset(), file++;
                continue;
            }
            const size_t end = nl == std::string::npos ? buf.size() : nl;
            line.assign(buf, pos, end - pos);
            consumed += (int64_t)(end - pos) + (nl != std::string::npos);
            pos = nl == std::string::npos ? end : nl + 1;
            const bool long_line = skipping || line.size() > kSpmMaxLine;
            skipping = false;
            too_long += long_line;
            if (long_line || line.empty()) continue;
            lines++;
            return true;
        }
    }
};

bool is_file_name(const std::string& s) { return s.find('/') != std::string::npos || fs::exists(s); }

}  // namespace

PrepareResult prepare_run(const PrepareOptions& opt) {
    const auto t0 = std::chrono::steady_clock::now();
    auto log = [&](const std::string& s) {  // progress notes, on a terminal only (like the live line)
        if (opt.progress && !opt.quiet) std::fprintf(stderr, "%s\n", s.c_str());
    };
    // Everything that can be checked is checked before any work.
    if (opt.inputs.empty()) throw std::invalid_argument("no input text files");
    if (opt.out_dir.empty()) throw std::invalid_argument("no output directory (--out)");
    if (!(opt.val_fraction >= 0 && opt.val_fraction < 1))
        throw std::invalid_argument("--val-fraction " + std::to_string(opt.val_fraction) + " is not in [0, 1)");
    if (opt.container != "bin" && opt.container != "llmc")
        throw std::invalid_argument("--format '" + opt.container + "' (expected bin or llmc)");
    const bool train_spm = opt.tokenizer == "spm-bpe" || opt.tokenizer == "spm-unigram";
    if (train_spm && opt.vocab_size <= 0) throw std::invalid_argument("--tokenizer " + opt.tokenizer + " needs --vocab-size");
    if (!train_spm && opt.vocab_size != 0)
        throw std::invalid_argument("--vocab-size is for training a SentencePiece model (--tokenizer spm-bpe or spm-unigram); "
                                    "the vocabulary of '" + opt.tokenizer + "' is its own");
    if (!train_spm && opt.tokenizer != "bytes" && !is_file_name(opt.tokenizer))
        throw std::invalid_argument("--tokenizer '" + opt.tokenizer + "': not bytes, spm-bpe, spm-unigram or an existing file");
    std::vector<Input> inputs;
    int64_t total = 0;
    for (const std::string& p : opt.inputs) {
        struct stat st;
        if (::stat(p.c_str(), &st) != 0) throw std::runtime_error(p + ": cannot open: " + std::strerror(errno));
        if (S_ISDIR(st.st_mode)) throw std::runtime_error(p + ": is a directory (give the text files in it)");
        if (!S_ISREG(st.st_mode))
            throw std::runtime_error(p + ": not a regular file (a pipe or a device: prepare needs each input's size "
                                         "before it starts, for the split by bytes; save the stream to a file first)");
        if (::access(p.c_str(), R_OK) != 0) throw std::runtime_error(p + ": cannot open: " + std::strerror(errno));
        if (const std::string kind = sys::compression_of(sys::File(p)); !kind.empty())
            throw std::runtime_error(p + ": is " + kind + "-compressed: decompress it first (prepare reads text)");
        inputs.push_back({p, (int64_t)st.st_size});
        total += st.st_size;
    }
    if (total == 0) throw std::runtime_error("the input files hold no text (0 bytes)");
    // prepare never overwrites: a directory with earlier output is refused (a tokenizer file equal
    // to the one given is fine, it is simply kept).
    for (const char* name : {"meta.json", "train.bin", "val.bin"})
        if (fs::exists(fs::path(opt.out_dir) / name))
            throw std::runtime_error(opt.out_dir + " already holds " + name + ": prepare never overwrites; choose another --out");
    if (train_spm && fs::exists(fs::path(opt.out_dir) / "tokenizer.model"))
        throw std::runtime_error(opt.out_dir + " already holds tokenizer.model: prepare never overwrites; choose another --out");
    const int64_t split_at = opt.val_fraction > 0 ? (int64_t)std::floor((double)total * (1.0 - opt.val_fraction)) : total;

    // The tokenizer, and its file's bytes for the output directory.
    Tokenizer tok;
    std::string tok_bytes, tok_name;
    if (train_spm) {
        SpmTrainOptions so;
        so.model_type = opt.tokenizer == "spm-bpe" ? "bpe" : "unigram";
        so.vocab_size = opt.vocab_size;
        so.max_sentences = opt.spm_max_sentences;
        so.threads = opt.threads;
        LineSource lines(inputs, split_at);
        log("prepare: training a SentencePiece " + so.model_type + " model of " + std::to_string(so.vocab_size) +
            " tokens on the training part (" + human_bytes((double)split_at) + ")");
        const auto ts = std::chrono::steady_clock::now();
        try {
            tok_bytes = spm_train(so, [&](std::string& l) { return lines.next(l); });
        } catch (const std::runtime_error&) {
            if (lines.lines == 0 && lines.too_long > 0)  // the trainer's own words would not say why
                throw std::runtime_error("SentencePiece found no line to train on: the training part's " +
                                         std::to_string(lines.too_long) + " lines are all longer than " +
                                         std::to_string(kSpmMaxLine) + " bytes (it trains on lines: break the text "
                                         "into shorter ones)");
            throw;
        }
        char took[96];
        std::snprintf(took, sizeof took, "prepare: trained on %ld lines in %.1f s", lines.lines,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count());
        log(took);
        if (lines.too_long > 0)  // always said, not only on a terminal: the model saw less text
            std::fprintf(stderr, "mhc prepare: %ld of %ld lines are longer than %zu bytes and were left out of "
                         "SentencePiece's training\n", lines.too_long, lines.too_long + lines.lines, kSpmMaxLine);
        tok_name = "tokenizer.model";
        tok = tokenizer_load_bytes((fs::path(opt.out_dir) / tok_name).string(), tok_bytes);  // written at the end
    } else if (opt.tokenizer == "bytes") {
        tok = tokenizer_bytes();
    } else {
        tok = tokenizer_load(opt.tokenizer);
        if (!tok.can_encode)
            throw std::invalid_argument(tok.path + ": llm.c's GPT-2 tokenizer file decodes only; prepare needs one that "
                                        "encodes (the tokenizer.json of the same vocabulary)");
        tok_name = tok.kind == TokenizerKind::sentencepiece ? "tokenizer.model" : "tokenizer.json";
        const fs::path dst = fs::path(opt.out_dir) / tok_name;
        if (fs::exists(dst) && file_crc32(dst.string()) != file_crc32(tok.path))
            throw std::runtime_error(opt.out_dir + " already holds another " + tok_name + ": choose another --out");
    }

    TokenMeta meta;
    meta.vocab_size = tok.vocab_size;
    meta.dtype = tok.vocab_size <= 65536 ? "uint16" : "uint32";
    meta.container = opt.container;
    if (tok.kind == TokenizerKind::bytes) meta.tokenizer = {"bytes", "", 256, ""};
    else meta.tokenizer = {tokenizer_kind_name(tok.kind), tok_name, tok.vocab_size,
                           train_spm ? bytes_crc32(tok_bytes) : file_crc32(tok.path)};
    for (const Input& in : inputs) meta.inputs.push_back({in.path, in.size});
    const int width = meta.dtype == "uint16" ? 2 : 4;
    const bool llmc = opt.container == "llmc";
    const std::string train_path = (fs::path(opt.out_dir) / "train.bin").string();
    const std::string val_path = (fs::path(opt.out_dir) / "val.bin").string();

    // Encode as the text streams by. `buf` holds text not yet encoded, starting at byte `base` of
    // the whole input; a piece is encoded once a safe cut point follows it.
    g_interrupted = 0;
    const sys::ScopedSignals signals({SIGINT, SIGTERM}, on_prepare_signal);
    fs::create_directories(opt.out_dir);
    TokenWriter train(train_path, width, llmc);
    std::unique_ptr<TokenWriter> val;
    if (opt.val_fraction > 0) val = std::make_unique<TokenWriter>(val_path, width, llmc);
    TokenWriter* out = &train;
    TokenFileInfo train_info, val_info;
    TokenFileInfo* info = &train_info;
    std::vector<uint32_t> ids;
    Progress progress{opt.progress && !opt.quiet, total};
    int64_t base = 0;
    auto emit = [&](std::string& buf, size_t n) {
        ids.clear();
        tokenizer_encode(tok, std::string_view(buf).substr(0, n), ids);
        out->write(ids.data(), ids.size());
        info->tokens += (int64_t)ids.size();
        info->bytes += (int64_t)n;
        buf.erase(0, n);
        base += (int64_t)n;
    };
    auto to_val = [&] {
        if (val && out == &train) out = val.get(), info = &val_info;
    };
    std::string buf;
    for (const Input& in : inputs) {
        FilePtr f = open_input(in.path);
        bool more = true;
        while (more) {
            if (g_interrupted) throw std::runtime_error("interrupted: no file was written");
            more = read_chunk(f.get(), in.path, buf);
            if (out == &train && base >= split_at) to_val();
            const bool split_here = out == &train && val && split_at < base + (int64_t)buf.size();
            if (split_here) {  // the first cut at or after the split point ends the training part
                for (size_t p = (size_t)(split_at - base); p < buf.size(); p++)
                    if (p == 0 || tokenizer_cut_ok(tok, buf, p)) {
                        emit(buf, p);
                        to_val();
                        break;
                    }
            }
            if (!more) break;  // the rest of the file is encoded below
            size_t cut = 0;
            const size_t hi = (out == &train && val && split_at - base < (int64_t)buf.size()) ? (size_t)(split_at - base) : buf.size();
            for (size_t p = std::min(hi, buf.size() - 1); p > 0; p--)
                if (tokenizer_cut_ok(tok, buf, p)) {
                    cut = p;
                    break;
                }
            if (cut > 0) emit(buf, cut);
            else if (buf.size() > kMaxPending)
                throw std::runtime_error(in.path + ": no place to cut the text within " + human_bytes((double)kMaxPending) +
                                         " after byte " + std::to_string(base) + " (for " + tokenizer_kind_name(tok.kind) +
                                         ": a line break, or a space between two words)");
            progress.show(base, train_info.tokens + val_info.tokens);
        }
        emit(buf, buf.size());  // the end of a file is a boundary of the encoding
        if (out == &train && base >= split_at) to_val();
        progress.show(base, train_info.tokens + val_info.tokens);
    }
    progress.show(base, train_info.tokens + val_info.tokens, true);
    if (train_info.tokens == 0) throw std::runtime_error("the training part is empty: lower --val-fraction");
    if (val && val_info.tokens == 0)
        throw std::runtime_error("the validation part is empty: no place to cut the text after " +
                                 std::to_string(split_at) + " bytes (raise --val-fraction, or set it to 0)");

    // All or nothing: the tokenizer, the token files, and last the sidecar that describes them.
    if (train_spm) sys::write_file_atomic((fs::path(opt.out_dir) / tok_name).string(), tok_bytes);
    else if (!tok_name.empty() && !fs::exists(fs::path(opt.out_dir) / tok_name))
        tokenizer_copy_file(tok, (fs::path(opt.out_dir) / tok_name).string());
    train.finish();
    meta.files.push_back({"train.bin", train_info});
    if (val) {
        val->finish();
        meta.files.push_back({"val.bin", val_info});
    }
    sys::write_file_atomic((fs::path(opt.out_dir) / "meta.json").string(), token_meta_json(meta));
    PrepareResult r;
    r.meta = meta;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

}  // namespace mhc
