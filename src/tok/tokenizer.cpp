// Tokenizers: loading by content, the bytes and llm.c kinds, decoding, and what every kind shares
// (safe cut points, CRC-32 names, the vocabulary check). SentencePiece is in spm.cpp, Hugging
// Face byte-level BPE in bpe.cpp.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "sys/file.h"
#include "tok/tok_internal.h"

namespace mhc {

namespace tok {
void fail(const std::string& path, const std::string& what) { throw std::runtime_error(path + ": " + what); }
}  // namespace tok

using tok::fail;

namespace {

constexpr uint32_t kLlmcTokenizerMagic = 20240328;  // llm.c's gpt2_tokenizer.bin
constexpr size_t kMaxTokenizerBytes = size_t(1) << 30;

std::string read_whole(const std::string& path) {
    const sys::File f(path);
    if (f.is_dir) fail(path, "is a directory, not a tokenizer file");
    if ((size_t)f.size > kMaxTokenizerBytes) fail(path, "larger than 1 GiB: not a tokenizer file");
    std::string s((size_t)f.size, '\0');
    f.read_at(0, s.data(), f.size);
    return s;
}

uint32_t le32(const std::string& s, size_t off) {
    const unsigned char* b = (const unsigned char*)s.data() + off;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

// llm.c's GPT-2 tokenizer: 256 uint32 of header ([0] magic, [1] version 1 or 2, [2] vocabulary,
// [3] end-of-text id in version 2; version 1's is GPT-2's 50256, as llm.c assumes), then per
// token a uint8 length (> 0) and that many bytes.
Tokenizer llmc_load(const std::string& path, const std::string& s) {
    if (s.size() < 1024) fail(path, "truncated llm.c tokenizer: " + std::to_string(s.size()) + " bytes, shorter than its 1024-byte header");
    const uint32_t version = le32(s, 4), vocab = le32(s, 8);
    if (version != 1 && version != 2)
        fail(path, "unsupported llm.c tokenizer version " + std::to_string(version) + " (expected 1 or 2)");
    // Each token takes at least 2 bytes (length and one byte): a vocabulary the file cannot hold
    // is refused before anything is allocated for it.
    if (vocab < 1 || vocab > (s.size() - 1024) / 2)
        fail(path, "llm.c tokenizer header gives a vocabulary of " + std::to_string(vocab) + " tokens, more than its " +
                       std::to_string(s.size()) + " bytes can hold");
    Tokenizer t;
    t.kind = TokenizerKind::llmc_gpt2;
    t.path = path;
    t.vocab_size = (int)vocab;
    t.can_encode = false;
    t.pieces.resize(vocab);
    t.has_piece.assign(vocab, 1);
    size_t off = 1024;
    for (uint32_t i = 0; i < vocab; i++) {
        if (off >= s.size()) fail(path, "truncated llm.c tokenizer: token " + std::to_string(i) + " of " + std::to_string(vocab) + " is missing");
        const size_t len = (unsigned char)s[off++];
        if (len == 0) fail(path, "llm.c tokenizer token " + std::to_string(i) + " has length 0");
        if (off + len > s.size()) fail(path, "truncated llm.c tokenizer: token " + std::to_string(i) + " runs past the end");
        t.pieces[i] = s.substr(off, len);
        off += len;
    }
    if (off != s.size()) fail(path, std::to_string(s.size() - off) + " bytes of trailing data after the llm.c tokenizer's " + std::to_string(vocab) + " tokens");
    t.special.assign(vocab, 0);
    const uint32_t eot = version == 2 ? le32(s, 12) : 50256;
    if (eot < vocab) t.special[eot] = 1, t.doc_start = (int)eot;
    return t;
}

bool looks_like_json(const std::string& s) {
    for (char c : s) {
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
        return c == '{';
    }
    return false;
}

}  // namespace

const char* tokenizer_kind_name(TokenizerKind k) {
    switch (k) {
        case TokenizerKind::bytes: return "bytes";
        case TokenizerKind::sentencepiece: return "sentencepiece";
        case TokenizerKind::hf_bpe: return "hf_bpe";
        case TokenizerKind::llmc_gpt2: return "llmc_gpt2";
    }
    return "?";
}

Tokenizer tokenizer_bytes() {
    Tokenizer t;
    t.pieces.resize(256);
    t.has_piece.assign(256, 1);
    t.special.assign(256, 0);
    for (int b = 0; b < 256; b++) t.pieces[b] = std::string(1, (char)b);
    return t;
}

Tokenizer tokenizer_load(const std::string& path) { return tokenizer_load_bytes(path, read_whole(path)); }

Tokenizer tokenizer_load_bytes(const std::string& path, std::string_view bytes) {
    const std::string s(bytes);
    if (s.empty()) fail(path, "empty file, not a tokenizer");
    if (s.size() >= 4 && le32(s, 0) == kLlmcTokenizerMagic) return llmc_load(path, s);
    if (looks_like_json(s)) return tok::bpe_load(path, s);
    return tok::spm_load(path, s);
}

Tokenizer tokenizer_load_given(const std::string& given) {
    return given == "bytes" ? tokenizer_bytes() : tokenizer_load(given);
}

void tokenizer_encode(const Tokenizer& t, std::string_view text, std::vector<uint32_t>& out) {
    switch (t.kind) {
        case TokenizerKind::bytes:
            for (unsigned char c : text) out.push_back(c);
            return;
        case TokenizerKind::sentencepiece: tok::spm_encode(*t.spm, text, out); return;
        case TokenizerKind::hf_bpe: tok::bpe_encode(*t.bpe, text, out); return;
        case TokenizerKind::llmc_gpt2: break;
    }
    fail(t.path, "llm.c's GPT-2 tokenizer file decodes only: it has no merges to encode text with "
                 "(give token ids, or the tokenizer.json of the same vocabulary)");
}

void tokenizer_decode_one(const Tokenizer& t, int64_t id, DecodeState& st, std::string& out) {
    if (id < 0 || id >= t.vocab_size || (size_t)id >= t.has_piece.size() || !t.has_piece[(size_t)id])
        throw std::out_of_range("token id " + std::to_string(id) + " is not in the vocabulary of the tokenizer " +
                                (t.path.empty() ? std::string("bytes") : t.path) + " (" + std::to_string(t.vocab_size) + " ids)");
    const std::string& p = t.pieces[(size_t)id];
    if (t.special[(size_t)id]) {
        out += p;
        st.line_start = true;  // a document starts after it
        return;
    }
    if (p.empty()) return;
    const bool strip = t.strip_line_space && st.line_start && p[0] == ' ';
    out.append(p, strip ? 1 : 0, std::string::npos);
    st.line_start = p.back() == '\n';
}

std::string tokenizer_decode(const Tokenizer& t, const std::vector<uint32_t>& ids) {
    std::string out;
    DecodeState st;
    for (uint32_t id : ids) tokenizer_decode_one(t, id, st, out);
    return out;
}

std::string tokenizer_decode(const Tokenizer& t, const std::vector<int32_t>& ids) {
    std::string out;
    DecodeState st;
    for (int32_t id : ids) tokenizer_decode_one(t, id, st, out);
    return out;
}

std::string tokenizer_decode_utf8(const Tokenizer& t, const std::vector<int32_t>& ids) {
    Utf8Stream u;
    return u.push(tokenizer_decode(t, ids)) + u.finish();
}

int64_t tokenizer_text_bytes(const Tokenizer& t, int64_t id, DecodeState& st) {
    std::string s;
    tokenizer_decode_one(t, id, st, s);
    return t.special[(size_t)id] ? 0 : (int64_t)s.size();
}

std::vector<uint8_t> tokenizer_decodable(const Tokenizer& t, int V) {
    std::vector<uint8_t> ok((size_t)std::max(V, 0), 0);
    for (int id = 0; id < V && id < t.vocab_size && (size_t)id < t.has_piece.size(); id++) ok[(size_t)id] = t.has_piece[(size_t)id];
    return ok;
}

std::vector<int32_t> tokenizer_special_ids(const Tokenizer& t, int V) {
    std::vector<int32_t> ids;
    for (int id = 0; id < V && (size_t)id < t.special.size(); id++)
        if (t.special[(size_t)id]) ids.push_back(id);
    return ids;
}

bool tokenizer_cut_ok(const Tokenizer& t, std::string_view text, size_t p) {
    if (p == 0 || p >= text.size()) return false;
    switch (t.kind) {
        case TokenizerKind::bytes: return true;
        case TokenizerKind::sentencepiece: return text[p - 1] == '\n';  // lines are encoded apart
        case TokenizerKind::hf_bpe: return tok::bpe_cut_ok(*t.bpe, text, p);
        case TokenizerKind::llmc_gpt2: return false;
    }
    return false;
}

std::string file_crc32(const std::string& path) { return sys::file_fingerprint(path).hash; }  // whole: < 1 GiB

std::string bytes_crc32(std::string_view bytes) { return sys::crc32_of(bytes); }

TokenizerRef tokenizer_ref(const Tokenizer& t, const std::string& file) {
    TokenizerRef r;
    r.kind = tokenizer_kind_name(t.kind);
    r.vocab_size = t.vocab_size;
    if (t.kind != TokenizerKind::bytes) {
        r.file = file;
        r.crc32 = file_crc32(t.path);
    }
    return r;
}

void tokenizer_check_vocab(const Tokenizer& t, int model_vocab) {
    const int padded = (t.vocab_size + 127) / 128 * 128;
    if (model_vocab >= t.vocab_size && model_vocab <= padded) return;
    throw std::runtime_error("the tokenizer " + (t.path.empty() ? std::string("bytes") : t.path) + " has a vocabulary of " +
                             std::to_string(t.vocab_size) + " tokens, the model " + std::to_string(model_vocab) +
                             " (it must be " + std::to_string(t.vocab_size) +
                             (padded > t.vocab_size ? ", or padded to at most " + std::to_string(padded) : std::string()) + ")");
}

void tokenizer_copy_file(const Tokenizer& t, const std::string& dst) {
    std::string bytes;
    if (!sys::read_file(t.path, bytes)) throw std::runtime_error(t.path + ": cannot read the tokenizer file");
    sys::write_file_atomic(dst, bytes);
}

}  // namespace mhc
