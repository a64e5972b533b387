// SentencePiece models through Debian's libsentencepiece: loading, the decode table, and encoding
// line by line, so that mhc's ids for a line are exactly what `spm_encode` prints for it.
#include <sentencepiece_processor.h>

#include <cstdio>

#include "tok/tok_internal.h"

namespace mhc {

struct SpmModel {
    sentencepiece::SentencePieceProcessor sp;
    int newline_id = -1;  // the piece "\n", else the byte piece <0x0A>; -1: unk
    int unk_id = 0;
    int byte_id[256];     // byte pieces <0xNN>, -1 where the model has none
    bool byte_fallback = false;
    std::string path;
};

namespace tok {

namespace {

const std::string kSpace = "\xE2\x96\x81";           // U+2581, SentencePiece's visible space
const std::string kUnkSurface = " \xE2\x81\x87 ";    // " ⁇ ", what SentencePiece decodes <unk> to

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size())) s.replace(i, from.size(), to);
    return s;
}

// One line (no newline inside). Valid UTF-8 goes to SentencePiece in one call, as spm_encode does;
// bytes that are not UTF-8 (SentencePiece would turn them into U+FFFD) become their byte pieces,
// so such text still decodes to itself when the model has byte fallback.
void encode_line(const SpmModel& m, std::string_view line, std::vector<uint32_t>& out) {
    std::vector<int> ids;
    auto flush = [&](std::string_view run) {
        if (run.empty()) return;
        ids.clear();
        const auto status = m.sp.Encode(run, &ids);
        if (!status.ok()) fail(m.path, "SentencePiece cannot encode: " + status.ToString());
        for (int id : ids) out.push_back((uint32_t)id);
    };
    const unsigned char* s = (const unsigned char*)line.data();
    size_t start = 0, i = 0;
    while (i < line.size()) {
        const int r = utf8_char_length(s + i, line.size() - i);
        if (r > 0) {
            i += (size_t)r;
            continue;
        }
        flush(line.substr(start, i - start));
        const size_t bad = r < 0 ? (size_t)-r : line.size() - i;  // an incomplete character at the end is bad too
        for (size_t k = 0; k < bad; k++) {
            const int b = m.byte_id[s[i + k]];
            out.push_back((uint32_t)(b >= 0 ? b : m.unk_id));
        }
        i += bad;
        start = i;
    }
    flush(line.substr(start));
}

}  // namespace

Tokenizer spm_load(const std::string& path, std::string_view bytes) {
    auto m = std::make_shared<SpmModel>();
    m->path = path;
    const auto status = m->sp.LoadFromSerializedProto(bytes);
    if (!status.ok())
        fail(path, "not a tokenizer: neither llm.c's gpt2_tokenizer.bin, a tokenizer.json, nor a SentencePiece "
                   "model (" + status.ToString() + ")");
    const int n = m->sp.GetPieceSize();
    if (n < 1) fail(path, "SentencePiece model has no pieces");
    m->unk_id = m->sp.unk_id();
    int bytes_found = 0;
    for (int b = 0; b < 256; b++) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        const int id = m->sp.PieceToId(name);
        m->byte_id[b] = (id >= 0 && id < n && m->sp.IsByte(id)) ? id : -1;
        bytes_found += m->byte_id[b] >= 0;
    }
    m->byte_fallback = bytes_found == 256;
    const int nl = m->sp.PieceToId("\n");
    m->newline_id = (nl >= 0 && nl < n && !m->sp.IsUnknown(nl) && !m->sp.IsControl(nl)) ? nl : m->byte_id[0x0A];

    Tokenizer t;
    t.kind = TokenizerKind::sentencepiece;
    t.path = path;
    t.vocab_size = n;
    t.pieces.resize((size_t)n);
    t.has_piece.assign((size_t)n, 1);
    t.special.assign((size_t)n, 0);
    for (int id = 0; id < n; id++) {
        if (m->sp.IsControl(id)) {  // <s>, </s>: no text
            t.special[id] = 1;
            continue;
        }
        if (m->sp.IsUnknown(id)) t.pieces[id] = kUnkSurface;
        else if (m->sp.IsByte(id)) t.pieces[id] = std::string(1, (char)std::stoi(m->sp.IdToPiece(id).substr(3, 2), nullptr, 16));
        else t.pieces[id] = replace_all(m->sp.IdToPiece(id), kSpace, " ");
    }
    // A model that puts a dummy "▁" in front of every text (add_dummy_prefix) shows it on "a";
    // its decoder drops that space again, which mhc does at the start of each line.
    std::vector<std::string> probe;
    if (m->sp.Encode("a", &probe).ok() && !probe.empty() && probe[0].rfind(kSpace, 0) == 0) t.strip_line_space = true;
    if (const int bos = m->sp.bos_id(); bos >= 0 && bos < n && m->sp.IsControl(bos)) t.doc_start = bos;
    t.spm = m;
    return t;
}

void spm_encode(const SpmModel& m, std::string_view text, std::vector<uint32_t>& out) {
    size_t start = 0;
    while (start <= text.size()) {
        const size_t nl = text.find('\n', start);
        const std::string_view line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
        encode_line(m, line, out);
        if (nl == std::string_view::npos) break;
        out.push_back((uint32_t)(m.newline_id >= 0 ? m.newline_id : m.unk_id));
        start = nl + 1;
    }
}

}  // namespace tok
}  // namespace mhc
