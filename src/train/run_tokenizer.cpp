// A run remembers its tokenizer: training copies it into the run directory and names it in every
// checkpoint's metadata; sampling and evaluation find it there (or take --tokenizer).
#include <filesystem>
#include <stdexcept>

#include "mhc/tokenizer.h"
#include "train/run_dir.h"

namespace mhc {

namespace fs = std::filesystem;

namespace {

// The name a tokenizer file gets in a run directory (and in `mhc prepare`'s output).
const char* run_file_name(TokenizerKind k) {
    switch (k) {
        case TokenizerKind::sentencepiece: return "tokenizer.model";
        case TokenizerKind::hf_bpe: return "tokenizer.json";
        case TokenizerKind::llmc_gpt2: return "gpt2_tokenizer.bin";
        case TokenizerKind::bytes: break;
    }
    return "";
}

// The tokenizer a sidecar or checkpoint names, its file resolved against `dir`; `what` names the
// referrer in messages. Missing or changed files are errors that say how to go on.
Tokenizer load_ref(const TokenizerRef& ref, const std::string& dir, const std::string& what) {
    if (ref.kind == "bytes") return tokenizer_bytes();
    if (ref.file.empty() || ref.file.find('/') != std::string::npos)
        throw std::runtime_error(what + " names the tokenizer file '" + ref.file + "', which is not a plain file name");
    const std::string path = (fs::path(dir) / ref.file).string();
    if (!fs::exists(path))
        throw std::runtime_error(what + " names the tokenizer " + ref.file + ", which is missing from " +
                                 (dir.empty() ? std::string(".") : dir) + ": give --tokenizer FILE");
    if (!ref.crc32.empty() && file_crc32(path) != ref.crc32)
        throw std::runtime_error(path + " is not the tokenizer " + what + " names (" + file_crc32(path) + ", not " +
                                 ref.crc32 + "): give --tokenizer FILE to use a tokenizer anyway");
    return tokenizer_load(path);
}

}  // namespace

std::map<std::string, std::string> run_tokenizer_attach(const std::string& dir, const std::string& given,
                                                        const TokenizerRef& data_tokenizer, int model_vocab,
                                                        Tokenizer* out) {
    Tokenizer tok;
    if (!given.empty()) {
        tok = tokenizer_load_given(given);
    } else if (!data_tokenizer.empty()) {
        const fs::path f(data_tokenizer.file);
        tok = load_ref({data_tokenizer.kind, f.filename().string(), data_tokenizer.vocab_size, data_tokenizer.crc32},
                       f.parent_path().string(), "the data's meta.json");
    } else {
        // Neither given nor known from the data: keep the one a resumed run already has.
        bool found = false;
        for (TokenizerKind k : {TokenizerKind::sentencepiece, TokenizerKind::hf_bpe, TokenizerKind::llmc_gpt2})
            if (fs::exists(fs::path(dir) / run_file_name(k))) {
                tok = tokenizer_load((fs::path(dir) / run_file_name(k)).string());
                found = true;
                break;
            }
        if (!found) return {};
    }
    try {
        tokenizer_check_vocab(tok, model_vocab);
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(std::string(e.what()) + "; set vocab_size to match the tokenizer");
    }
    const std::string name = run_file_name(tok.kind);
    const TokenizerRef ref = tokenizer_ref(tok, name);
    if (!name.empty()) {
        const std::string dst = (fs::path(dir) / name).string();
        const bool differs = fs::exists(dst) && file_crc32(dst) != ref.crc32;
        if (differs && !run_dir::latest_checkpoint(dir).empty())
            throw std::runtime_error(dir + " already holds another " + name + " (its checkpoints were trained with "
                                     "it): give that tokenizer, or choose another --out");
        if (differs || !fs::exists(dst)) {
            fs::create_directories(dir);
            tokenizer_copy_file(tok, dst);
        }
    }
    if (out) *out = tok;
    return {{"tokenizer", tokenizer_ref_to_json(ref)}};
}

bool tokenizer_for_checkpoint(const std::string& ckpt_path, const std::map<std::string, std::string>& metadata,
                              const std::string& given, int model_vocab, Tokenizer& out) {
    auto it = metadata.find("tokenizer");
    if (!given.empty()) {
        out = tokenizer_load_given(given);
    } else if (it != metadata.end()) {
        TokenizerRef ref;
        try {
            ref = tokenizer_ref_from_json(it->second);
        } catch (const std::runtime_error& e) {
            throw std::runtime_error(ckpt_path + ": " + e.what());
        }
        out = load_ref(ref, fs::path(ckpt_path).parent_path().string(), "the checkpoint " + ckpt_path);
    } else if (model_vocab == 256) {
        out = tokenizer_bytes();  // checkpoints from before tokenizers were recorded: bytes
    } else {
        return false;
    }
    tokenizer_check_vocab(out, model_vocab);
    return true;
}

}  // namespace mhc
