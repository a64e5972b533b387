// Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2 and the models that reuse it),
// encoded as the `tokenizers` library does with add_special_tokens=False:
//   1. added tokens are matched in the raw text first, leftmost-longest; they are ids of their own;
//   2. every other stretch of text is pre-tokenized by the ByteLevel pre-tokenizer: a space in
//      front when add_prefix_space is set and the stretch does not start with one, then GPT-2's
//      regex splits it (contractions, letters, numbers, other symbols, the `\s+(?!\S)` rule);
//   3. each piece's bytes become characters of the byte-to-unicode alphabet, and the merges join
//      adjacent symbols, lowest rank first (leftmost among equals), until none applies.
// Decoding maps the characters back to bytes. PCRE2 (Debian's libpcre2) runs the regex with
// Unicode properties; `tokenizers` uses Oniguruma, whose \s is Unicode's White_Space, i.e. PCRE2's
// \s plus U+0085, which the pattern below adds. Text that is not valid UTF-8 (which `tokenizers`
// cannot take at all) is still encoded: invalid bytes never match, so they form pieces of their own.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "tok/tok_internal.h"

namespace mhc {

struct AddedToken {
    std::string content;
    uint32_t id;
    bool special;  // "special": true (end-of-text and the like): no text bytes
};

struct BpeModel {
    std::string path;
    uint32_t byte_id[256];                                   // the id of each byte's character
    std::string byte_char[256];                              // each byte's character, in UTF-8
    std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> merges;  // (left<<32|right) -> (rank, merged id)
    std::unordered_map<std::string, uint32_t> vocab;         // for ignore_merges: the piece's characters
    bool ignore_merges = false, add_prefix_space = false;
    std::vector<AddedToken> added;                           // longest first
    std::vector<std::vector<size_t>> added_by_first_byte;    // indices into `added`
    size_t added_max_len = 0;
    std::shared_ptr<pcre2_code> re;
};

namespace tok {

namespace {

using json = nlohmann::json;

// Ids above this are refused: the decode table has an entry per id (the largest vocabularies in
// use have a few hundred thousand).
constexpr int64_t kMaxId = (1 << 21) - 1;

// GPT-2's pre-tokenization regex, with \s widened to Unicode's White_Space (see above).
const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\x{85}\\p{L}\\p{N}]+|[\\s\\x{85}]+(?![^\\s\\x{85}])|[\\s\\x{85}]+";

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 are moved to
// U+0100 and up in byte order, so every byte is a visible character.
void byte_alphabet(uint32_t cp_of_byte[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp_of_byte[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

void append_utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) s += (char)cp;
    else if (cp < 0x800) s += (char)(0xC0 | cp >> 6), s += (char)(0x80 | (cp & 63));
    else if (cp < 0x10000) s += (char)(0xE0 | cp >> 12), s += (char)(0x80 | ((cp >> 6) & 63)), s += (char)(0x80 | (cp & 63));
    else s += (char)(0xF0 | cp >> 18), s += (char)(0x80 | ((cp >> 12) & 63)), s += (char)(0x80 | ((cp >> 6) & 63)), s += (char)(0x80 | (cp & 63));
}

// The code point of the valid UTF-8 character at s[i..), its length in *len; -1 if invalid.
int64_t decode_utf8(std::string_view s, size_t i, int* len) {
    const unsigned char* p = (const unsigned char*)s.data() + i;
    const int r = utf8_char_length(p, s.size() - i);
    if (r <= 0) return *len = 1, -1;
    *len = r;
    if (r == 1) return p[0];
    uint32_t cp = p[0] & (0x7F >> r);
    for (int k = 1; k < r; k++) cp = cp << 6 | (p[k] & 63);
    return cp;
}

// Unicode's White_Space property (what the pattern's [\s\x{85}] matches).
bool is_space(int64_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// The character that ends at byte p (exclusive), as a code point; -1 if invalid or none.
int64_t char_before(std::string_view s, size_t p) {
    for (size_t k = 1; k <= 4 && k <= p; k++) {
        const unsigned char c = (unsigned char)s[p - k];
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte: the start is further back
        int len;
        const int64_t cp = decode_utf8(s, p - k, &len);
        return (size_t)len == k ? cp : -1;
    }
    return -1;
}

std::string type_of(const json& j) {
    if (j.is_object() && j.contains("type") && j["type"].is_string()) return j["type"].get<std::string>();
    return j.is_null() ? "none" : "of unknown type";
}

// "Sequence[Split, ByteLevel]" for messages.
std::string describe(const json& j) {
    std::string t = type_of(j);
    for (const char* key : {"pretokenizers", "normalizers", "decoders"})
        if (j.is_object() && j.contains(key) && j[key].is_array()) {
            t += "[";
            for (size_t i = 0; i < j[key].size(); i++) t += (i ? ", " : "") + describe(j[key][i]);
            t += "]";
        }
    return t;
}

bool null_or_empty_string(const json& j, const char* key) {
    return !j.contains(key) || j[key].is_null() || (j[key].is_string() && j[key].get<std::string>().empty());
}

// The pieces of one stretch of text (no added tokens inside): regex matches and, for invalid
// UTF-8 that nothing matches, the gaps between them.
template <typename F> void pretokenize(const BpeModel& m, std::string_view s, pcre2_match_data* md, F&& piece) {
    size_t pos = 0;
    while (pos < s.size()) {
        const int rc = pcre2_match(m.re.get(), (PCRE2_SPTR)s.data(), s.size(), pos, 0, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) {
            piece(s.substr(pos));
            return;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            fail(m.path, std::string("pre-tokenizer regex failed: ") + (const char*)msg);
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[0] > pos) piece(s.substr(pos, ov[0] - pos));
        if (ov[1] == ov[0]) fail(m.path, "pre-tokenizer regex matched nothing");  // cannot happen with this pattern
        piece(s.substr(ov[0], ov[1] - ov[0]));
        pos = ov[1];
    }
}

// Byte-pair merging of one piece, as `tokenizers` does it: a queue of the adjacent pairs that have
// a merge, lowest rank (then leftmost) first; a popped pair whose symbols changed is skipped.
void merge_piece(const BpeModel& m, std::string_view piece, std::vector<uint32_t>& out) {
    if (m.ignore_merges) {
        std::string chars;
        for (unsigned char b : piece) chars += m.byte_char[b];
        auto it = m.vocab.find(chars);
        if (it != m.vocab.end()) return out.push_back(it->second);
    }
    struct Sym {
        uint32_t id;
        int prev, next;
        bool alive;
    };
    const int n = (int)piece.size();
    std::vector<Sym> sym((size_t)n);
    for (int i = 0; i < n; i++) sym[i] = {m.byte_id[(unsigned char)piece[i]], i - 1, i + 1 < n ? i + 1 : -1, true};
    struct Cand {
        uint32_t rank;
        int pos;
        uint32_t id;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> q;
    auto push = [&](int a) {
        if (a < 0 || sym[a].next < 0) return;
        auto it = m.merges.find((uint64_t)sym[a].id << 32 | sym[sym[a].next].id);
        if (it != m.merges.end()) q.push({it->second.first, a, it->second.second});
    };
    for (int i = 0; i + 1 < n; i++) push(i);
    while (!q.empty()) {
        const Cand c = q.top();
        q.pop();
        Sym& a = sym[c.pos];
        if (!a.alive || a.next < 0) continue;
        auto it = m.merges.find((uint64_t)a.id << 32 | sym[a.next].id);
        if (it == m.merges.end() || it->second.second != c.id || it->second.first != c.rank) continue;  // stale
        Sym& b = sym[a.next];
        a.id = c.id;
        b.alive = false;
        a.next = b.next;
        if (a.next >= 0) sym[a.next].prev = c.pos;
        push(a.prev);
        push(c.pos);
    }
    for (int i = 0; i >= 0 && i < n; i = sym[i].next) out.push_back(sym[i].id);
}

// The added token starting at s[i] (longest first), or nullptr.
const AddedToken* added_at(const BpeModel& m, std::string_view s, size_t i) {
    for (size_t k : m.added_by_first_byte[(unsigned char)s[i]]) {
        const std::string& c = m.added[k].content;
        if (s.compare(i, c.size(), c) == 0) return &m.added[k];
    }
    return nullptr;
}

}  // namespace

Tokenizer bpe_load(const std::string& path, std::string_view text) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        fail(path, std::string("malformed tokenizer.json: ") + e.what());
    }
    auto unsupported = [&](const std::string& what) {
        fail(path, "unsupported tokenizer.json: " + what + " (mhc reads byte-level BPE tokenizers of the GPT-2 kind)");
    };
    try {
        if (!j.is_object()) fail(path, "malformed tokenizer.json: not a JSON object");
        if (!j.contains("model") || !j["model"].is_object()) fail(path, "malformed tokenizer.json: no \"model\" object");
        const json& model = j["model"];
        if (type_of(model) != "BPE") unsupported("model " + type_of(model) + " (only BPE)");
        if (j.contains("normalizer") && !j["normalizer"].is_null() &&
            !(type_of(j["normalizer"]) == "Sequence" && j["normalizer"].value("normalizers", json::array()).empty()))
            unsupported("normalizer " + describe(j["normalizer"]) + " (only none)");
        const json pre = j.value("pre_tokenizer", json());
        if (type_of(pre) != "ByteLevel") unsupported("pre-tokenizer " + describe(pre) + " (only ByteLevel)");
        if (!pre.value("use_regex", true)) unsupported("ByteLevel pre-tokenizer with use_regex false");
        const json dec = j.value("decoder", json());
        if (type_of(dec) != "ByteLevel") unsupported("decoder " + describe(dec) + " (only ByteLevel)");
        if (j.contains("truncation") && !j["truncation"].is_null()) unsupported("truncation");
        if (j.contains("padding") && !j["padding"].is_null()) unsupported("padding");
        if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0)
            unsupported("BPE dropout");
        if (!null_or_empty_string(model, "continuing_subword_prefix")) unsupported("BPE continuing_subword_prefix");
        if (!null_or_empty_string(model, "end_of_word_suffix")) unsupported("BPE end_of_word_suffix");

        auto m = std::make_shared<BpeModel>();
        m->path = path;
        m->add_prefix_space = pre.value("add_prefix_space", false);
        m->ignore_merges = model.value("ignore_merges", false);
        if (!model.contains("vocab") || !model["vocab"].is_object()) fail(path, "malformed tokenizer.json: model has no \"vocab\" object");
        int64_t max_id = -1;
        std::unordered_map<uint32_t, std::string> by_id;
        for (const auto& [tok, idj] : model["vocab"].items()) {
            const int64_t id = idj.get<int64_t>();
            if (id < 0 || id > kMaxId) fail(path, "malformed tokenizer.json: vocabulary id " + std::to_string(id) + " of '" + tok + "' is out of range (0.." + std::to_string(kMaxId) + ")");
            if (!by_id.emplace((uint32_t)id, tok).second) fail(path, "malformed tokenizer.json: vocabulary id " + std::to_string(id) + " is given twice");
            m->vocab[tok] = (uint32_t)id;
            max_id = std::max(max_id, id);
        }
        uint32_t cp_of_byte[256];
        byte_alphabet(cp_of_byte);
        std::vector<int> byte_of_cp(324, -1);
        for (int b = 0; b < 256; b++) {
            byte_of_cp[cp_of_byte[b]] = b;
            std::string c;
            append_utf8(c, cp_of_byte[b]);
            auto it = m->vocab.find(c);
            if (it == m->vocab.end()) {
                char hex[8];
                std::snprintf(hex, sizeof hex, "0x%02X", b);
                fail(path, std::string("not a byte-level vocabulary: byte ") + hex + " (character '" + c + "') has no token");
            }
            m->byte_id[b] = it->second;
            m->byte_char[b] = c;
        }
        if (!model.contains("merges") || !model["merges"].is_array()) fail(path, "malformed tokenizer.json: model has no \"merges\" list");
        const json& merges = model["merges"];
        for (size_t r = 0; r < merges.size(); r++) {
            std::string a, b;
            const json& mj = merges[r];
            if (mj.is_string()) {  // "a b" (older files)
                const std::string s = mj.get<std::string>();
                const size_t sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    fail(path, "malformed tokenizer.json: merge " + std::to_string(r) + " '" + s + "' is not two tokens");
                a = s.substr(0, sp), b = s.substr(sp + 1);
            } else if (mj.is_array() && mj.size() == 2) {  // ["a", "b"] (tokenizers >= 0.20)
                a = mj[0].get<std::string>(), b = mj[1].get<std::string>();
            } else {
                fail(path, "malformed tokenizer.json: merge " + std::to_string(r) + " is neither \"a b\" nor [a, b]");
            }
            auto ia = m->vocab.find(a), ib = m->vocab.find(b), iab = m->vocab.find(a + b);
            if (ia == m->vocab.end() || ib == m->vocab.end() || iab == m->vocab.end())
                fail(path, "malformed tokenizer.json: merge " + std::to_string(r) + " ('" + a + "', '" + b + "') uses or makes a token that is not in the vocabulary");
            m->merges[(uint64_t)ia->second << 32 | ib->second] = {(uint32_t)r, iab->second};  // a repeated pair: the last rank, as in tokenizers
        }
        for (const json& at : j.value("added_tokens", json::array())) {
            const std::string content = at.at("content").get<std::string>();
            const int64_t id = at.at("id").get<int64_t>();
            for (const char* flag : {"single_word", "lstrip", "rstrip"})
                if (at.value(flag, false)) unsupported("added token '" + content + "' has " + flag);
            if (content.empty() || id < 0 || id > kMaxId) fail(path, "malformed tokenizer.json: added token '" + content + "' with id " + std::to_string(id));
            m->added.push_back({content, (uint32_t)id, at.value("special", false)});
            max_id = std::max(max_id, id);
        }
        std::stable_sort(m->added.begin(), m->added.end(), [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
        m->added_by_first_byte.resize(256);
        for (size_t k = 0; k < m->added.size(); k++) {
            m->added_by_first_byte[(unsigned char)m->added[k].content[0]].push_back(k);
            m->added_max_len = std::max(m->added_max_len, m->added[k].content.size());
        }

        int err;
        PCRE2_SIZE at;
        pcre2_code* re = pcre2_compile((PCRE2_SPTR)kGpt2Pattern, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, nullptr);
        if (!re) fail(path, "cannot compile the GPT-2 pre-tokenizer regex");
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // optional: the interpreter is used without it
        m->re.reset(re, pcre2_code_free);

        Tokenizer t;
        t.kind = TokenizerKind::hf_bpe;
        t.path = path;
        t.vocab_size = (int)(max_id + 1);
        t.pieces.resize((size_t)t.vocab_size);
        t.has_piece.assign((size_t)t.vocab_size, 0);
        for (const auto& [id, tok] : by_id) {
            std::string bytes;
            for (size_t i = 0; i < tok.size();) {
                int len;
                const int64_t cp = decode_utf8(tok, i, &len);
                if (cp < 0 || cp >= (int64_t)byte_of_cp.size() || byte_of_cp[(size_t)cp] < 0) {
                    bytes.clear();
                    break;  // not byte-level text: only an added token may be like that (below)
                }
                bytes += (char)byte_of_cp[(size_t)cp];
                i += (size_t)len;
            }
            t.pieces[id] = bytes;
            t.has_piece[id] = !bytes.empty();
        }
        t.special.assign((size_t)t.vocab_size, 0);
        for (const AddedToken& a : m->added) t.pieces[a.id] = a.content, t.has_piece[a.id] = 1, t.special[a.id] = a.special;  // decoded as written
        for (const char* start : {"<|endoftext|>", "<|begin_of_text|>", "<|startoftext|>", "<s>"}) {
            for (const AddedToken& a : m->added)
                if (a.special && a.content == start) t.doc_start = (int)a.id;
            if (t.doc_start >= 0) break;
        }
        for (const auto& [id, tok] : by_id)
            if (!t.has_piece[id]) fail(path, "not a byte-level vocabulary: token " + std::to_string(id) + " '" + tok + "' has characters outside the byte-to-unicode alphabet");
        t.bpe = m;
        return t;
    } catch (const json::exception& e) {
        fail(path, std::string("malformed tokenizer.json: ") + e.what());
    }
}

void bpe_encode(const BpeModel& m, std::string_view text, std::vector<uint32_t>& out) {
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(pcre2_match_data_create_from_pattern(m.re.get(), nullptr),
                                                                      pcre2_match_data_free);
    std::string prefixed;
    auto stretch = [&](std::string_view s) {  // text between added tokens
        if (s.empty()) return;
        if (m.add_prefix_space && s[0] != ' ') {
            prefixed.assign(1, ' ');
            prefixed.append(s);
            s = prefixed;
        }
        pretokenize(m, s, md.get(), [&](std::string_view piece) { merge_piece(m, piece, out); });
    };
    size_t start = 0, i = 0;
    while (i < text.size()) {
        const AddedToken* a = m.added.empty() ? nullptr : added_at(m, text, i);
        if (!a) {
            i++;
            continue;
        }
        stretch(text.substr(start, i - start));
        out.push_back(a->id);
        i += a->content.size();
        start = i;
    }
    stretch(text.substr(start));
}

bool bpe_cut_ok(const BpeModel& m, std::string_view s, size_t p) {
    if (p == 0 || p + 1 >= s.size()) return false;
    bool ok = false;
    int len;
    if (s[p] == ' ') {  // "x y": the match at p is " y..." whatever y is, and x's ends at p
        const int64_t before = char_before(s, p), after = decode_utf8(s, p + 1, &len);
        ok = !is_space(before) && !is_space(after) && p >= 1;
    } else if (s[p - 1] == '\n' && !m.add_prefix_space && p >= 2) {  // "x\ny": "\n" is a piece of its own
        const int64_t before = char_before(s, p - 1), after = decode_utf8(s, p, &len);
        ok = !is_space(before) && !is_space(after);
    }
    if (!ok) return false;
    // No added token may straddle the cut.
    for (const AddedToken& a : m.added) {
        const size_t L = a.content.size();
        if (L < 2) continue;
        const size_t from = p >= L - 1 ? p - (L - 1) : 0;
        for (size_t k = s.find(a.content, from); k != std::string_view::npos && k < p; k = s.find(a.content, k + 1))
            if (k + L > p) return false;
    }
    return true;
}

}  // namespace tok
}  // namespace mhc
