// Fuzz target: tokenizer files mhc did not write, and text through the byte-level BPE encoder.
// Input: one byte that chooses, then the rest.
//   even  the rest is a tokenizer file: a tokenizer.json (when it starts with '{') or llm.c's
//         gpt2_tokenizer.bin (when it starts with its magic), loaded; what loads decodes every id.
//   odd   the rest is text for the hand-written fixture tests/tokenizers/tiny_bpe.json:
//         decode(encode(x)) must be x, and cutting x where tokenizer_cut_ok allows must not
//         change the ids (prepare's streaming relies on it).
// SentencePiece models are not fed: their parser is the library's (protobuf), not mhc's code.
// A std::exception is the expected way to refuse an input; anything else is a finding.
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mhc/tokenizer.h"

using namespace mhc;

namespace {

const Tokenizer& fixture() {
    static const Tokenizer t = tokenizer_load(MHC_FUZZ_BPE_FIXTURE);
    return t;
}

void load_file(std::string_view bytes) {
    const bool json = !bytes.empty() && bytes[0] == '{';
    const bool llmc = bytes.size() >= 4 && (uint8_t)bytes[0] == 0xC8 && (uint8_t)bytes[1] == 0xD7 &&
                      (uint8_t)bytes[2] == 0x34 && (uint8_t)bytes[3] == 0x01;  // 20240328, little-endian
    if (!json && !llmc) return;
    Tokenizer t;
    try {
        t = tokenizer_load_bytes("fuzz", bytes);
    } catch (const std::exception&) {
        return;
    }
    if (t.vocab_size < 1 || t.pieces.size() != (size_t)t.vocab_size) __builtin_trap();
    DecodeState st;
    std::string out;
    for (int id = 0; id < t.vocab_size; id++) {
        try {
            tokenizer_decode_one(t, id, st, out);
        } catch (const std::out_of_range&) {
            if (t.has_piece[id]) __builtin_trap();  // only holes may be refused
        }
    }
    if (t.can_encode) {
        std::vector<uint32_t> ids;
        tokenizer_encode(t, "hello world, it's 2024!\n", ids);
        for (uint32_t id : ids)
            if (id >= (uint32_t)t.vocab_size) __builtin_trap();
    }
}

void encode_text(std::string_view text) {
    text = text.substr(0, 2048);  // longer texts add time, not cases (the pieces are short)
    const Tokenizer& t = fixture();
    std::vector<uint32_t> whole;
    tokenizer_encode(t, text, whole);
    if (tokenizer_decode(t, whole) != text) __builtin_trap();
    // Up to 4 of the allowed cuts, spread over the text (every one would make a run quadratic).
    std::vector<size_t> cuts;
    for (size_t p = 1; p < text.size(); p++)
        if (tokenizer_cut_ok(t, text, p)) cuts.push_back(p);
    const size_t step = cuts.size() / 4 + 1;
    for (size_t k = 0; k < cuts.size(); k += step) {
        const size_t p = cuts[k];
        std::vector<uint32_t> parts;
        tokenizer_encode(t, text.substr(0, p), parts);
        tokenizer_encode(t, text.substr(p), parts);
        if (parts != whole) __builtin_trap();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const std::string_view rest((const char*)data + 1, size - 1);
    if (data[0] % 2 == 0) load_file(rest);
    else encode_text(rest);
    return 0;
}
