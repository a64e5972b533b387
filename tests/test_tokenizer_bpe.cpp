// Hugging Face byte-level BPE (tokenizer.json) against a hand-written fixture,
// tests/tokenizers/tiny_bpe.json: the 256 byte characters of GPT-2's byte-to-unicode alphabet with
// id = the byte's value (so an unmerged byte's id is the byte itself: ' ' is 'Ġ' = 32, '\n' is
// 'Ċ' = 10), then 13 merges by hand, ranks 0-12, making ids 256-268:
//   0 Ġ+t=256  1 h+e=257  2 Ġt+he=258  3 '+s=259  4 1+2=260  5 Ġ+Ġ=261  6 Ã+©=262 ("é" is C3 A9)
//   7 c+a=263  8 ca+f=264  9 caf+Ã©=265  10 l+l=266  11 '+ll=267  12 e+r=268
// an added token <|endoftext|> = 269, and "tt" = 270, a vocabulary entry no merge makes.
// Every expected id list below was worked out by hand from GPT-2's pre-tokenization rules and
// these merges (the comments show the steps); unsupported and malformed files are refused with one
// line naming what is wrong.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "file_util.h"
#include "mhc/tokenizer.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

const std::string kFixture = std::string(MHC_TESTS_DIR) + "/tokenizers/tiny_bpe.json";

nlohmann::json fixture_json() {
    std::ifstream f(kFixture);
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::json::parse(ss.str());
}

std::string write_json(const std::string& name, const nlohmann::json& j) {
    return scratch_file("bpe", name, j.dump());
}

std::vector<uint32_t> enc(const Tokenizer& t, const std::string& s) {
    std::vector<uint32_t> ids;
    tokenizer_encode(t, s, ids);
    return ids;
}

using V = std::vector<uint32_t>;

TEST(TokenizerBpe, LoadsTheFixture) {
    const Tokenizer t = tokenizer_load(kFixture);
    EXPECT_EQ(t.kind, TokenizerKind::hf_bpe);
    EXPECT_EQ(t.vocab_size, 271);
    EXPECT_TRUE(t.can_encode);
}

TEST(TokenizerBpe, ByteLevelAlphabet) {
    const Tokenizer t = tokenizer_load(kFixture);
    // Each byte alone is its own character's id, = the byte here; control bytes, DEL and the
    // 0x80-0xA0 range are the moved characters (Ā = byte 0, Ġ = ' ', Ċ = '\n', ...).
    std::string all;
    for (int b = 0; b < 256; b++) all += (char)b;
    for (int b = 0; b < 256; b++) {
        const std::string one(1, (char)b);
        EXPECT_EQ(enc(t, one), V{(uint32_t)b}) << "byte " << b;
    }
    // Decoding maps the characters back to bytes: every byte string survives.
    EXPECT_EQ(tokenizer_decode(t, enc(t, all)), all);
    EXPECT_EQ(tokenizer_decode(t, V{32, 10, 0, 127, 173, 255}), std::string(" \n\0\x7f\xad\xff", 6));
}

TEST(TokenizerBpe, MergesByRank) {
    const Tokenizer t = tokenizer_load(kFixture);
    // "the": t h e; only (h,e) has a merge (rank 1) -> t he = [116, 257].
    EXPECT_EQ(enc(t, "the"), (V{116, 257}));
    // " the": Ġ t h e; (Ġ,t) rank 0 first -> Ġt h e; (h,e) rank 1 -> Ġt he; (Ġt,he) rank 2 -> 258.
    EXPECT_EQ(enc(t, " the"), (V{258}));
    // "her": (h,e) rank 1 beats (e,r) rank 12; then (he,r) has no merge -> [257, 'r'].
    EXPECT_EQ(enc(t, "her"), (V{257, 114}));
    // " café" = Ġ c a f Ã ©: rank 6 (Ã,©), rank 7 (c,a), rank 8 (ca,f), rank 9 (caf,Ã©): Ġ + 265.
    EXPECT_EQ(enc(t, " café"), (V{32, 265}));
    // "tt" is in the vocabulary but no merge makes it: t t stays two tokens.
    EXPECT_EQ(enc(t, "tt"), (V{116, 116}));
    EXPECT_EQ(tokenizer_decode(t, V{265}), "café");
    EXPECT_EQ(tokenizer_decode(t, V{258}), " the");
}

TEST(TokenizerBpe, PreTokenizesSpaces) {
    const Tokenizer t = tokenizer_load(kFixture);
    // "a b": "a", " b" (a space joins the word after it).
    EXPECT_EQ(enc(t, "a b"), (V{97, 32, 98}));
    // "a  b": \s+(?!\S) takes the first space only (the second must stay for " b"): "a", " ", " b".
    EXPECT_EQ(enc(t, "a  b"), (V{97, 32, 32, 98}));
    // "a   b": "a", "  " (merge 5: ĠĠ = 261), " b".
    EXPECT_EQ(enc(t, "a   b"), (V{97, 261, 32, 98}));
    // Trailing spaces are one piece: "a", "  " -> 261.
    EXPECT_EQ(enc(t, "a  "), (V{97, 261}));
    // "a\n\nb": "\n" (the run minus its last character, which must precede "b"), then "\n" alone.
    EXPECT_EQ(enc(t, "a\n\nb"), (V{97, 10, 10, 98}));
    // " \tx": only ' ' may lead a word, so the whitespace before "x" splits as " " (\s+(?!\S)
    // leaves the tab), then "\t" (plain \s+), then "x".
    EXPECT_EQ(enc(t, " \tx"), (V{32, 9, 120}));
}

TEST(TokenizerBpe, PreTokenizesDigitsPunctuationContractions) {
    const Tokenizer t = tokenizer_load(kFixture);
    // " 123": one number piece Ġ 1 2 3; merge 4 (1,2): [Ġ, 12, 3].
    EXPECT_EQ(enc(t, " 123"), (V{32, 260, 51}));
    // Letters and digits split: "ab12" -> "ab", "12".
    EXPECT_EQ(enc(t, "ab12"), (V{97, 98, 260}));
    // Punctuation runs: "hi!!" -> "hi", "!!"; " !?" is one piece with its space.
    EXPECT_EQ(enc(t, "hi!!"), (V{104, 105, 33, 33}));
    EXPECT_EQ(enc(t, " !?"), (V{32, 33, 63}));
    // Contractions: "it's" -> "it", "'s" (merge 3 = 259); "you'll" -> "you", "'ll" (l+l, then '+ll).
    EXPECT_EQ(enc(t, "it's"), (V{105, 116, 259}));
    EXPECT_EQ(enc(t, "you'll"), (V{121, 111, 117, 267}));
    // They are lower case only in GPT-2's pattern: "IT'S" -> "IT", "'", "S".
    EXPECT_EQ(enc(t, "IT'S"), (V{73, 84, 39, 83}));
    // "'x" is no contraction: "'" is punctuation, "x" a word.
    EXPECT_EQ(enc(t, "'x"), (V{39, 120}));
}

TEST(TokenizerBpe, NonAsciiText) {
    const Tokenizer t = tokenizer_load(kFixture);
    // CJK letters are one \p{L} run; no merges apply: the UTF-8 bytes E6 9D B1 E4 BA AC.
    EXPECT_EQ(enc(t, "東京"), (V{0xE6, 0x9D, 0xB1, 0xE4, 0xBA, 0xAC}));
    // An Arabic-Indic digit (U+0663) is \p{N}: "x٣" -> "x", "٣".
    EXPECT_EQ(enc(t, "x\xD9\xA3"), (V{120, 0xD9, 0xA3}));
    // No-break space (U+00A0) is whitespace but cannot lead a word: "a", NBSP, "b".
    EXPECT_EQ(enc(t, "a\xC2\xA0" "b"), (V{97, 0xC2, 0xA0, 98}));
    // U+0085 is whitespace for tokenizers' Oniguruma (not for PCRE2's plain \s): " \x85b" is " ",
    // "\x85", "b" (were it punctuation, " \x85" would be one piece).
    EXPECT_EQ(enc(t, " \xC2\x85" "b"), (V{32, 0xC2, 0x85, 98}));
    // "é" alone: Ã © merge to 262.
    EXPECT_EQ(enc(t, "é"), (V{262}));
    // Bytes that are not UTF-8 match nothing and stay pieces of their own; decoding restores them.
    EXPECT_EQ(enc(t, "a\xFF" "b"), (V{97, 255, 98}));
    const std::string mixed = "caf\xC3\xA9 \xE2\x82 \xF0\x9F\x98\x80!";
    EXPECT_EQ(tokenizer_decode(t, enc(t, mixed)), mixed);
}

TEST(TokenizerBpe, AddedTokensFirst) {
    const Tokenizer t = tokenizer_load(kFixture);
    EXPECT_EQ(enc(t, "a<|endoftext|>b"), (V{97, 269, 98}));
    // The text on each side is pre-tokenized on its own: " the" after the token is still 258.
    EXPECT_EQ(enc(t, "<|endoftext|> the"), (V{269, 258}));
    EXPECT_EQ(enc(t, "<|endoftext|"), (V{60, 124, 101, 110, 100, 111, 102, 116, 101, 120, 116, 124}));
    EXPECT_EQ(tokenizer_decode(t, V{97, 269}), "a<|endoftext|>");
    // Marked "special" in the file: written out, but no text for bits per byte.
    DecodeState st;
    EXPECT_EQ(tokenizer_text_bytes(t, 97, st), 1);
    EXPECT_EQ(tokenizer_text_bytes(t, 269, st), 0);
    EXPECT_EQ(tokenizer_text_bytes(t, 258, st), 4);  // " the" after it: no dummy space to drop
    // An added token not marked special is text like any other.
    nlohmann::json j = fixture_json();
    j["added_tokens"][0]["special"] = false;
    const Tokenizer plain = tokenizer_load(write_json("not_special.json", j));
    EXPECT_EQ(tokenizer_text_bytes(plain, 269, st), 13);
    // Sampling with it: a document starts at <|endoftext|>, which ends one too; a model padded to
    // 384 ids draws only the 271 the tokenizer decodes.
    EXPECT_EQ(t.doc_start, 269);
    EXPECT_EQ(plain.doc_start, -1);  // not special: just text
    EXPECT_EQ(tokenizer_special_ids(t, 384), (std::vector<int32_t>{269}));
    const std::vector<uint8_t> ok = tokenizer_decodable(t, 384);
    ASSERT_EQ(ok.size(), 384u);
    EXPECT_EQ(std::count(ok.begin(), ok.end(), 1), 271);
    EXPECT_EQ(std::count(ok.begin(), ok.begin() + 271, 1), 271);
}

TEST(TokenizerBpe, OptionsAddPrefixSpaceAndIgnoreMerges) {
    nlohmann::json j = fixture_json();
    j["pre_tokenizer"]["add_prefix_space"] = true;
    const Tokenizer p = tokenizer_load(write_json("prefix.json", j));
    EXPECT_EQ(enc(p, "the"), (V{258}));        // " the"
    EXPECT_EQ(enc(p, " the"), (V{258}));       // already starts with a space: none added
    EXPECT_EQ(enc(p, "a<|endoftext|>the"), (V{32, 97, 269, 258}));  // each stretch gets one
    j = fixture_json();
    j["model"]["ignore_merges"] = true;
    const Tokenizer g = tokenizer_load(write_json("ignore.json", j));
    EXPECT_EQ(enc(g, "tt"), (V{270}));          // the whole piece is in the vocabulary
    EXPECT_EQ(enc(g, "her"), (V{257, 114}));
    // Merges as [a, b] pairs (tokenizers >= 0.20) read the same.
    j = fixture_json();
    nlohmann::json pairs = nlohmann::json::array();
    for (const auto& m : j["model"]["merges"]) {
        const std::string s = m.get<std::string>();
        pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    j["model"]["merges"] = pairs;
    EXPECT_EQ(enc(tokenizer_load(write_json("pairs.json", j)), " the café"), (V{258, 32, 265}));
}

TEST(TokenizerBpe, DecodeRejectsUnknownIds) {
    const Tokenizer t = tokenizer_load(kFixture);
    EXPECT_THROW(tokenizer_decode(t, V{271}), std::out_of_range);
    try {
        tokenizer_decode(t, std::vector<int32_t>{5, -1});
        ADD_FAILURE();
    } catch (const std::out_of_range& e) {
        EXPECT_NE(std::string(e.what()).find("token id -1"), std::string::npos) << e.what();
    }
}

TEST(TokenizerBpe, SafeCutsDoNotChangeTheIds) {
    const Tokenizer t = tokenizer_load(kFixture);
    const std::string text = "the cat's 12 cafés\n\nare  here <|endoftext|> it'll\tend.\nx y";
    const V whole = enc(t, text);
    int cuts = 0;
    for (size_t p = 1; p < text.size(); p++) {
        if (!tokenizer_cut_ok(t, text, p)) continue;
        cuts++;
        V parts = enc(t, text.substr(0, p));
        const V b = enc(t, text.substr(p));
        parts.insert(parts.end(), b.begin(), b.end());
        EXPECT_EQ(parts, whole) << "cut at " << p;
    }
    EXPECT_GT(cuts, 5);
    // Never inside an added token: give the fixture one with a space in it.
    nlohmann::json j = fixture_json();
    j["added_tokens"].push_back({{"id", 271}, {"content", "<|a b|>"}, {"special", true}});
    const Tokenizer a = tokenizer_load(write_json("spaced_added.json", j));
    EXPECT_EQ(enc(a, "x <|a b|> y"), (V{120, 32, 271, 32, 121}));
    EXPECT_TRUE(tokenizer_cut_ok(a, "x <|a b|> y", 1));
    EXPECT_FALSE(tokenizer_cut_ok(a, "x <|a b|> y", 5));
}

// One line that names what is unsupported or malformed.
void expect_refused(const nlohmann::json& j, const std::string& fragment) {
    const std::string p = write_json("bad.json", j);
    try {
        tokenizer_load(p);
        ADD_FAILURE() << "accepted; expected: " << fragment;
    } catch (const std::runtime_error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
        EXPECT_NE(msg.find(p), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
}

TEST(TokenizerBpe, RefusesWhatItDoesNotSupport) {
    nlohmann::json j = fixture_json();
    j["model"]["type"] = "WordPiece";
    expect_refused(j, "unsupported tokenizer.json: model WordPiece (only BPE)");
    j = fixture_json();
    j["normalizer"] = {{"type", "NFC"}};
    expect_refused(j, "normalizer NFC");
    j = fixture_json();
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "Split"}}, {{"type", "ByteLevel"}, {"use_regex", false}}}}};
    expect_refused(j, "pre-tokenizer Sequence[Split, ByteLevel]");
    j = fixture_json();
    j["pre_tokenizer"] = {{"type", "Metaspace"}};
    expect_refused(j, "pre-tokenizer Metaspace");
    j = fixture_json();
    j["pre_tokenizer"]["use_regex"] = false;
    expect_refused(j, "use_regex false");
    j = fixture_json();
    j["decoder"] = nullptr;
    expect_refused(j, "decoder none");
    j = fixture_json();
    j["added_tokens"][0]["lstrip"] = true;
    expect_refused(j, "added token '<|endoftext|>' has lstrip");
    j = fixture_json();
    j["model"]["continuing_subword_prefix"] = "##";
    expect_refused(j, "continuing_subword_prefix");
    j = fixture_json();
    j["model"]["dropout"] = 0.1;
    expect_refused(j, "BPE dropout");
    j = fixture_json();
    j["truncation"] = {{"max_length", 8}};
    expect_refused(j, "truncation");
}

TEST(TokenizerBpe, RefusesMalformedFiles) {
    nlohmann::json j = fixture_json();
    j["model"]["merges"][0] = "Ġ zz";
    expect_refused(j, "merge 0");
    j = fixture_json();
    j["model"]["merges"][1] = "heh";
    expect_refused(j, "merge 1 'heh' is not two tokens");
    j = fixture_json();
    j["model"]["vocab"].erase("A");
    expect_refused(j, "byte 0x41");
    j = fixture_json();
    j["model"]["vocab"]["x y"] = 300;
    expect_refused(j, "outside the byte-to-unicode alphabet");
    j = fixture_json();
    j["model"].erase("vocab");
    expect_refused(j, "no \"vocab\"");
    j = fixture_json();
    j["model"]["vocab"]["Ġt"] = "x";
    expect_refused(j, "malformed tokenizer.json");
    const std::string broken = scratch_file("bpe", "broken.json", "{ \"model\": ");
    try {
        tokenizer_load(broken);
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("malformed tokenizer.json"), std::string::npos) << e.what();
    }
}

}  // namespace
