// Tokenizers other than tokenizer.json (test_tokenizer_bpe.cpp): bytes, SentencePiece (trained here
// with Debian's libsentencepiece, then decode(encode(x)) = x on every fortune file), llm.c's
// gpt2_tokenizer.bin, the vocabulary check, a checkpoint's tokenizer, and the UTF-8 stream that
// never prints a broken character.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "file_util.h"
#include "mhc/tokenizer.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

using V = std::vector<uint32_t>;

std::string tmpdir() { return scratch_dir("tok"); }

std::string write_file(const std::string& name, const std::string& bytes) { return scratch_file("tok", name, bytes); }

V enc(const Tokenizer& t, std::string_view s) {
    V ids;
    tokenizer_encode(t, s, ids);
    return ids;
}

// Debian's fortune files (package `fortunes`), as scripts/demo.sh lists them.
std::vector<std::string> fortune_files() {
    std::vector<std::string> out;
    const fs::path dir = "/usr/share/games/fortunes";
    if (!fs::is_directory(dir)) return out;
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        if (e.is_regular_file() && !e.is_symlink() && e.path().extension() != ".dat" && e.path().extension() != ".u8")
            out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

// A SentencePiece model trained by mhc's spm_train on the lines of some text, written to a file.
std::string trained_model(const std::string& name, const std::string& text, int vocab, const std::string& type = "bpe") {
    std::stringstream ss(text);
    SpmTrainOptions o;
    o.model_type = type;
    o.vocab_size = vocab;
    o.threads = 1;
    const std::string model = spm_train(o, [&](std::string& l) { return (bool)std::getline(ss, l); });
    return write_file(name, model);
}

TEST(TokenizerBytes, EncodeDecode) {
    const Tokenizer t = tokenizer_bytes();
    EXPECT_EQ(t.vocab_size, 256);
    const std::string s("h\xC3\xA9\n\0\xFF", 6);
    EXPECT_EQ(enc(t, s), (V{'h', 0xC3, 0xA9, '\n', 0, 0xFF}));
    EXPECT_EQ(tokenizer_decode(t, enc(t, s)), s);
    DecodeState st;
    EXPECT_EQ(tokenizer_text_bytes(t, '\n', st), 1);
    EXPECT_EQ(tokenizer_text_bytes(t, 65, st), 1);
    EXPECT_THROW(tokenizer_decode(t, V{256}), std::out_of_range);
}

TEST(TokenizerSpm, EveryFortuneFileRoundTrips) {
    const std::vector<std::string> files = fortune_files();
    if (files.empty()) GTEST_SKIP() << "Debian's fortunes package is not installed";
    // Trained on one file; the settings (identity normalisation, spaces kept, byte fallback) make
    // any text round-trip, whatever the model learnt.
    const Tokenizer t = tokenizer_load(trained_model("fortunes.model", slurp("/usr/share/games/fortunes/computers"), 800));
    EXPECT_EQ(t.kind, TokenizerKind::sentencepiece);
    EXPECT_EQ(t.vocab_size, 800);
    EXPECT_FALSE(t.strip_line_space);
    size_t tokens = 0, bytes = 0;
    for (const std::string& f : files) {
        const std::string text = slurp(f);
        const V ids = enc(t, text);
        EXPECT_EQ(tokenizer_decode(t, ids), text) << f;
        tokens += ids.size(), bytes += text.size();
    }
    EXPECT_EQ(files.size(), 43u);
    EXPECT_LT(tokens, bytes / 2) << "the model should compress English text";
}

TEST(TokenizerSpm, LinesAsSentencePieceEncodesThem) {
    const std::string corpus = "the cat sat on the mat\nthe dog sat on the log\n  indented  line\n\tand a tab\n";
    std::string text;
    for (int i = 0; i < 30; i++) text += corpus;
    const std::string path = trained_model("small.model", text, 300);
    const Tokenizer t = tokenizer_load(path);
    sentencepiece::SentencePieceProcessor sp;
    ASSERT_TRUE(sp.Load(path).ok());
    // Each line is what SentencePiece gives it alone, then the newline's byte piece.
    const int nl = sp.PieceToId("<0x0A>");
    V expect;
    std::stringstream ss(corpus);
    std::string line;
    while (std::getline(ss, line)) {
        std::vector<int> ids;
        ASSERT_TRUE(sp.Encode(line, &ids).ok());
        expect.insert(expect.end(), ids.begin(), ids.end());
        expect.push_back((uint32_t)nl);
    }
    EXPECT_EQ(enc(t, corpus), expect);
    EXPECT_EQ(tokenizer_decode(t, expect), corpus);
    // No newline at the end: no newline token. Empty text: nothing.
    EXPECT_EQ(enc(t, "the cat").size() + 1, enc(t, "the cat\n").size());
    EXPECT_TRUE(enc(t, "").empty());
    // Bytes that are not UTF-8 become byte pieces, so they survive too.
    const std::string bad = "the \xFF\xFE cat \xE2\x82\n\xC3";
    EXPECT_EQ(tokenizer_decode(t, enc(t, bad)), bad);
    // Cut points: after a newline only.
    EXPECT_TRUE(tokenizer_cut_ok(t, "ab\ncd", 3));
    EXPECT_FALSE(tokenizer_cut_ok(t, "ab\ncd", 2));
    EXPECT_FALSE(tokenizer_cut_ok(t, "ab cd", 3));
}

TEST(TokenizerSpm, DummyPrefixModelsDecodeLineByLine) {
    // A model of the common kind (add_dummy_prefix, as LLaMA's): SentencePiece puts "▁" in front of
    // each line it encodes, and its decoder drops it; so does mhc's at the start of every line.
    std::string text;
    for (int i = 0; i < 30; i++) text += "hello world\nthe world is round\n  two spaces\n";
    const std::string prefix = tmpdir() + "/dummy";
    ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train("--input=" + write_file("dummy.txt", text) + " --model_prefix=" +
                                                           prefix + " --vocab_size=300 --model_type=bpe --byte_fallback=true"
                                                           " --remove_extra_whitespaces=false --minloglevel=2")
                    .ok());
    const Tokenizer t = tokenizer_load(prefix + ".model");
    EXPECT_TRUE(t.strip_line_space);
    const std::string s = "hello world\n  two spaces\nround\n";
    EXPECT_EQ(tokenizer_decode(t, enc(t, s)), s);
    sentencepiece::SentencePieceProcessor sp;
    ASSERT_TRUE(sp.Load(prefix + ".model").ok());
    std::vector<int> ids;
    ASSERT_TRUE(sp.Encode("  two spaces", &ids).ok());
    std::string ref;
    ASSERT_TRUE(sp.Decode(ids, &ref).ok());
    EXPECT_EQ(tokenizer_decode(t, V(ids.begin(), ids.end())), ref);  // SentencePiece's own decoding
    // Bits per byte counts what decoding gives: each id's text bytes, decoding along the ids, add
    // up to the decoded text (the dummy space dropped at every line start).
    const V all = enc(t, s + s);
    DecodeState st;
    int64_t sum = 0, dropped = 0;
    for (uint32_t id : all) {
        const int64_t n = tokenizer_text_bytes(t, id, st);
        sum += n;
        dropped += (int64_t)t.pieces[id].size() - n;
    }
    EXPECT_EQ(sum, (int64_t)tokenizer_decode(t, all).size());
    EXPECT_EQ(dropped, 6);  // 6 lines

    // A control id (</s> between documents) has no text, and the next document's dummy space is not
    // text either: "round" + </s> + "hello" decodes to "roundhello", 10 text bytes.
    const int eos = sp.eos_id();
    ASSERT_TRUE(eos >= 0 && t.special[(size_t)eos]);
    EXPECT_EQ(t.doc_start, sp.bos_id());  // <s>
    EXPECT_TRUE(t.special[(size_t)sp.bos_id()]);
    V docs = enc(t, "round");
    docs.push_back((uint32_t)eos);
    for (uint32_t id : enc(t, "hello")) docs.push_back(id);
    EXPECT_EQ(tokenizer_decode(t, docs), "roundhello");
    DecodeState st2;
    sum = 0;
    for (uint32_t id : docs) sum += tokenizer_text_bytes(t, id, st2);
    EXPECT_EQ(sum, 10);
    EXPECT_EQ(tokenizer_text_bytes(t, (uint32_t)eos, st2), 0);
}

TEST(TokenizerSpm, TrainingErrors) {
    const auto lines = [](std::string& l) {
        static int n = 0;
        l = "a few words " + std::to_string(n);
        return n++ < 20;
    };
    SpmTrainOptions o;
    o.vocab_size = 100;
    EXPECT_THROW(spm_train(o, lines), std::invalid_argument);
    o.vocab_size = 5000;  // far more than 20 short lines can give
    try {
        spm_train(o, lines);
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("SentencePiece training failed"), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    o.model_type = "word";
    EXPECT_THROW(spm_train(o, lines), std::invalid_argument);
}

// llm.c's format: 256 uint32 of header, then per token a length byte and the bytes.
std::string llmc_tokenizer(const std::vector<std::string>& tokens, uint32_t version = 2, uint32_t magic = 20240328) {
    std::string s(1024, '\0');
    const uint32_t h[4] = {magic, version, (uint32_t)tokens.size(), (uint32_t)tokens.size() - 1};
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 4; b++) s[4 * i + b] = (char)((h[i] >> (8 * b)) & 255);
    for (const std::string& t : tokens) s += (char)t.size(), s += t;
    return s;
}

TEST(TokenizerLlmc, DecodesOnly) {
    const Tokenizer t = tokenizer_load(write_file("gpt2_tokenizer.bin", llmc_tokenizer({"a", " b", "\xC3", "\xA9", "<|endoftext|>"})));
    EXPECT_EQ(t.kind, TokenizerKind::llmc_gpt2);
    EXPECT_EQ(t.vocab_size, 5);
    EXPECT_FALSE(t.can_encode);
    EXPECT_EQ(tokenizer_decode(t, V{0, 1, 2, 3, 4}), "a b\xC3\xA9<|endoftext|>");
    // The end-of-text id of the header (here the last) is written out but is no text.
    DecodeState st;
    EXPECT_EQ(tokenizer_text_bytes(t, 1, st), 2);
    EXPECT_EQ(tokenizer_text_bytes(t, 4, st), 0);
    EXPECT_EQ(std::count(t.special.begin(), t.special.end(), 1), 1);
    EXPECT_EQ(t.doc_start, 4);  // llm.c's data puts it before each document
    try {
        enc(t, "a");
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("decodes only"), std::string::npos) << e.what();
    }
    EXPECT_EQ(tokenizer_load(write_file("v1.bin", llmc_tokenizer({"x", "y"}, 1))).vocab_size, 2);
    // Version 1 has no end-of-text field: GPT-2's 50256, as llm.c takes it.
    std::vector<std::string> gpt2(50257, "x");
    gpt2[50256] = "<|endoftext|>";
    const Tokenizer v1 = tokenizer_load(write_file("v1_gpt2.bin", llmc_tokenizer(gpt2, 1)));
    EXPECT_TRUE(v1.special[50256]);
    EXPECT_EQ(std::count(v1.special.begin(), v1.special.end(), 1), 1);
}

void expect_load_error(const std::string& bytes, const std::string& fragment) {
    const std::string p = write_file("bad_tokenizer.bin", bytes);
    try {
        tokenizer_load(p);
        ADD_FAILURE() << "accepted; expected " << fragment;
    } catch (const std::runtime_error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
        EXPECT_NE(msg.find(p), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
}

TEST(TokenizerLoad, MalformedFiles) {
    expect_load_error(llmc_tokenizer({"a", "b"}, 3), "version 3");
    expect_load_error(llmc_tokenizer({"a", "b"}).substr(0, 1026), "a vocabulary of 2 tokens, more than its 1026 bytes");
    expect_load_error(llmc_tokenizer({"abc", "b"}).substr(0, 1028), "token 1 of 2 is missing");
    expect_load_error(llmc_tokenizer({"a", "bcd"}).substr(0, 1029), "runs past the end");
    expect_load_error(llmc_tokenizer({"a", "", "bc"}), "token 1 has length 0");
    expect_load_error(llmc_tokenizer({"a"}) + "zz", "trailing data");
    expect_load_error(std::string("\x01\x02\x03garbage"), "not a tokenizer");
    expect_load_error("", "empty file");
    try {
        tokenizer_load(tmpdir() + "/missing.model");
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos) << e.what();
    }
}

TEST(TokenizerVocab, ModelMustHoldTheTokenizer) {
    Tokenizer t = tokenizer_bytes();
    EXPECT_NO_THROW(tokenizer_check_vocab(t, 256));
    t.vocab_size = 50257;
    EXPECT_NO_THROW(tokenizer_check_vocab(t, 50257));
    EXPECT_NO_THROW(tokenizer_check_vocab(t, 50304));  // GPT-2's padding
    EXPECT_THROW(tokenizer_check_vocab(t, 50305), std::runtime_error);
    t.vocab_size = 4096;
    try {
        tokenizer_check_vocab(t, 4000);
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("vocabulary of 4096 tokens, the model 4000"), std::string::npos) << e.what();
    }
}

TEST(TokenizerRun, CheckpointNamesItsTokenizer) {
    const std::string dir = tmpdir() + "/run";
    fs::create_directories(dir);
    const std::string tok = write_file("gpt2_tokenizer.bin", llmc_tokenizer({"a", "b", "c"}));
    // Training copies it into the run and names it; a checkpoint there finds it again.
    const auto meta = run_tokenizer_attach(dir, tok, {}, 3);
    ASSERT_EQ(meta.count("tokenizer"), 1u);
    EXPECT_TRUE(fs::exists(dir + "/gpt2_tokenizer.bin"));
    Tokenizer t;
    EXPECT_TRUE(tokenizer_for_checkpoint(dir + "/ckpt_000001.safetensors", meta, "", 3, t));
    EXPECT_EQ(tokenizer_decode(t, V{2, 0}), "ca");
    // Vocabulary mismatch, missing file, changed file: one line each, saying what to do.
    EXPECT_THROW(tokenizer_for_checkpoint(dir + "/ckpt_000001.safetensors", meta, "", 300, t), std::runtime_error);
    EXPECT_THROW(run_tokenizer_attach(tmpdir() + "/run2", tok, {}, 300), std::runtime_error);
    std::ofstream(dir + "/gpt2_tokenizer.bin", std::ios::binary) << llmc_tokenizer({"x", "y", "z"});
    try {
        tokenizer_for_checkpoint(dir + "/ckpt_000001.safetensors", meta, "", 3, t);
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("is not the tokenizer"), std::string::npos) << e.what();
    }
    fs::remove(dir + "/gpt2_tokenizer.bin");
    try {
        tokenizer_for_checkpoint(dir + "/ckpt_000001.safetensors", meta, "", 3, t);
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("--tokenizer"), std::string::npos) << e.what();
    }
    // --tokenizer overrides; a 256-token model without an entry is bytes; others have none.
    EXPECT_TRUE(tokenizer_for_checkpoint("x.safetensors", meta, tok, 3, t));
    EXPECT_TRUE(tokenizer_for_checkpoint("x.safetensors", {}, "", 256, t));
    EXPECT_EQ(t.kind, TokenizerKind::bytes);
    EXPECT_FALSE(tokenizer_for_checkpoint("x.safetensors", {}, "", 300, t));
}

// An independent strict check: the whole string decodes as UTF-8 (no overlongs, surrogates or
// code points past U+10FFFF, nothing cut short).
bool valid_utf8(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = (unsigned char)s[i];
        int n;
        uint32_t cp;
        if (c < 0x80) n = 1, cp = c;
        else if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
        else return false;
        if (i + n > s.size()) return false;
        for (int k = 1; k < n; k++) {
            const unsigned char d = (unsigned char)s[i + k];
            if ((d & 0xC0) != 0x80) return false;
            cp = cp << 6 | (d & 0x3F);
        }
        const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n;
    }
    return true;
}

TEST(Utf8Stream, HoldsSplitCharacters) {
    Utf8Stream u;
    EXPECT_EQ(u.push("caf\xC3"), "caf");  // é's first byte waits
    EXPECT_EQ(u.push("\xA9 "), "\xC3\xA9 ");
    EXPECT_EQ(u.push("\xF0\x9F"), "");     // half an emoji
    EXPECT_EQ(u.push("\x98"), "");
    EXPECT_EQ(u.push("\x80!"), "\xF0\x9F\x98\x80!");
    EXPECT_EQ(u.finish(), "");
}

TEST(Utf8Stream, ReplacesWhatCannotBeACharacter) {
    const std::string R = "\xEF\xBF\xBD";
    Utf8Stream u;
    EXPECT_EQ(u.push("a\xFF" "b"), "a" + R + "b");      // never valid
    EXPECT_EQ(u.push("\xE2\x82" "A"), R + "A");          // cut short by an ASCII byte: one U+FFFD
    EXPECT_EQ(u.push("\xC0\xAF"), R + R);                // overlong
    EXPECT_EQ(u.push("\xED\xA0\x80"), R + R + R);        // a surrogate
    EXPECT_EQ(u.push("\xE2\x82"), "");
    EXPECT_EQ(u.finish(), R);                            // incomplete at the end
    EXPECT_EQ(utf8_char_length((const unsigned char*)"\xF4\x90\x80\x80", 4), -1);  // past U+10FFFF
}

TEST(Utf8Stream, NeverPrintsABrokenSequence) {
    std::mt19937 rng(7);
    const std::string pool[] = {"a", " ", "\n", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xC3", "\xA9", "\x82",
                                "\xE2", "\xF0\x9F", "\xFF", "\xED\xA0\x80", "\xC0\x80"};
    for (int trial = 0; trial < 300; trial++) {
        std::string in;
        const int n = 1 + (int)(rng() % 40);
        for (int i = 0; i < n; i++) in += pool[rng() % std::size(pool)];
        Utf8Stream u;
        std::string out;
        for (size_t i = 0; i < in.size();) {  // random pieces, as tokens come
            const size_t k = std::min(in.size() - i, (size_t)(1 + rng() % 4));
            const std::string piece = u.push(in.substr(i, k));
            EXPECT_TRUE(valid_utf8(piece)) << "trial " << trial;
            out += piece;
            i += k;
        }
        out += u.finish();
        EXPECT_TRUE(valid_utf8(out));
        if (valid_utf8(in)) {
            EXPECT_EQ(out, in);  // valid text passes unchanged
        }
    }
}

}  // namespace
