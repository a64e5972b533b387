// Training data: each file format read exactly, automatic detection, clear errors for malformed
// files, the 90/10 split, and the Batcher's windows, randomness, coverage and exact resume.
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>

#include "error_util.h"
#include "file_util.h"
#include "token_bytes.h"
#include "mhc/data.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

std::string tmpdir() { return scratch_dir("data"); }

std::string write_file(const std::string& name, const std::string& bytes) { return scratch_file("data", name, bytes); }

std::vector<uint32_t> widen(const std::vector<uint16_t>& v) { return {v.begin(), v.end()}; }

void expect_load_error(const std::string& path, const std::string& fragment,
                       DataFormat fmt = DataFormat::automatic, int vocab = 0) {
    expect_error<std::runtime_error>([&] { load_tokens(path, fmt, vocab); }, fragment);
    expect_error<std::runtime_error>([&] { load_tokens(path, fmt, vocab); }, path);  // names the file
}

// Tokens 0, 1, ..., n-1: every window shows its start in its first input.
TokenData iota_data(int n) {
    std::vector<uint32_t> ids((size_t)n);
    for (int i = 0; i < n; i++) ids[i] = (uint32_t)i;
    return {"iota", DataFormat::u16, 65536, Tokens(std::move(ids)), {}, {}};
}

TEST(DataLoad, FormatNames) {
    EXPECT_EQ(data_format_from_string("auto"), DataFormat::automatic);
    EXPECT_EQ(data_format_from_string("text"), DataFormat::text);
    EXPECT_EQ(data_format_from_string("u16"), DataFormat::u16);
    EXPECT_EQ(data_format_from_string("llmc"), DataFormat::llmc);
    for (auto f : {DataFormat::automatic, DataFormat::text, DataFormat::u16, DataFormat::llmc})
        EXPECT_EQ(data_format_from_string(data_format_name(f)), f);
    expect_error<std::invalid_argument>([] { data_format_from_string("bin"); }, "unknown data format 'bin'");
    EXPECT_EQ(order_from_string("random"), Order::random);
    EXPECT_EQ(order_from_string("sequential"), Order::sequential);
    expect_error<std::invalid_argument>([] { order_from_string("shuffled"); }, "'shuffled'");
}

TEST(DataLoad, TextBytesIncludingNonAscii) {
    const std::string s = std::string("h\xC3\xA9\n") + '\0' + "\xFF!";
    const std::string path = write_file("t.txt", s);
    const TokenData d = load_tokens(path);
    EXPECT_EQ(d.format, DataFormat::text);
    EXPECT_EQ(d.vocab_size, 256);
    EXPECT_EQ(d.path, path);
    EXPECT_EQ(d.tokens.to_vector(), (std::vector<uint32_t>{'h', 0xC3, 0xA9, '\n', 0, 0xFF, '!'}));
    EXPECT_EQ(load_tokens(path, DataFormat::text, 256).tokens.to_vector(), d.tokens.to_vector());
}

TEST(DataLoad, RawUint16) {
    const std::vector<uint16_t> v = {0, 1, 255, 256, 50303, 65535};
    const std::string path = write_file("train.bin", u16_bytes(v));
    const TokenData d = load_tokens(path, DataFormat::automatic, 65536);
    EXPECT_EQ(d.format, DataFormat::u16);
    EXPECT_EQ(d.vocab_size, 65536);
    EXPECT_EQ(d.tokens.to_vector(), widen(v));
    // The default vocabulary is GPT-2's padded 50304, so 65535 is out of range there.
    expect_load_error(path, "token 65535 at position 5 is >= vocab_size 50304");
    // Small vocabularies are checked too; the first offender is the one reported.
    expect_load_error(path, "token 255 at position 2 is >= vocab_size 200", DataFormat::u16, 200);
}

TEST(DataLoad, LlmcShard) {
    const std::vector<uint16_t> v = {50256, 7, 0, 50303, 12345};
    const std::string path = write_file("shard_000.bin", llmc_bytes(v));
    const TokenData d = load_tokens(path);
    EXPECT_EQ(d.format, DataFormat::llmc);
    EXPECT_EQ(d.vocab_size, 50304);
    EXPECT_EQ(d.tokens.to_vector(), widen(v));
    EXPECT_EQ(load_tokens(path, DataFormat::llmc).tokens.to_vector(), widen(v));
}

TEST(DataLoad, AutomaticDetection) {
    const std::string pairs = u16_bytes({1, 2, 3, 4});
    EXPECT_EQ(load_tokens(write_file("a.bin", pairs)).format, DataFormat::u16);
    EXPECT_EQ(load_tokens(write_file("noext", pairs)).format, DataFormat::u16);
    EXPECT_EQ(load_tokens(write_file("a.txt", pairs)).format, DataFormat::text);
    EXPECT_EQ(load_tokens(write_file("a.md", pairs)).format, DataFormat::text);
    EXPECT_EQ(load_tokens(write_file("a.txt", pairs)).tokens.size(), 8);
    EXPECT_EQ(load_tokens(write_file("a.bin", pairs)).tokens.size(), 4);
    // The magic wins over the name.
    EXPECT_EQ(load_tokens(write_file("shard.txt", llmc_bytes({9, 8}))).format, DataFormat::llmc);
    EXPECT_EQ(load_tokens(write_file("shard", llmc_bytes({9, 8}))).tokens.to_vector(), (std::vector<uint32_t>{9, 8}));
    // An explicit format overrides detection.
    EXPECT_EQ(load_tokens(write_file("b.bin", "abcd"), DataFormat::text).tokens.size(), 4);
}

TEST(DataLoad, FileErrors) {
    expect_load_error(tmpdir() + "/does-not-exist.bin", "cannot open");
    expect_load_error(write_file("empty.txt", ""), "empty file");
    expect_load_error(write_file("empty.bin", ""), "empty file");
    fs::create_directories(tmpdir() + "/adir.bin");
    expect_load_error(tmpdir() + "/adir.bin", "is a directory");
    expect_load_error(write_file("odd.bin", "abcde"), "odd byte count 5");
}

TEST(DataLoad, LlmcErrors) {
    const std::vector<uint16_t> v = {1, 2, 3};
    expect_load_error(write_file("magic.bin", llmc_bytes(v, 12345)), "magic 12345", DataFormat::llmc);
    expect_load_error(write_file("version.bin", llmc_bytes(v, 20240520, 2)), "version 2");
    expect_load_error(write_file("count.bin", llmc_bytes(v, 20240520, 1, 2)), "token count 2");
    expect_load_error(write_file("count.bin", llmc_bytes(v, 20240520, 1, 2)), "trailing");
    expect_load_error(write_file("short.bin", llmc_bytes(v, 20240520, 1, 4)), "truncated");
    expect_load_error(write_file("neg.bin", llmc_bytes(v, 20240520, 1, -5)), "negative token count -5");
    std::string header = llmc_bytes(v).substr(0, 500);
    expect_load_error(write_file("header.bin", header), "truncated llm.c shard: 500 bytes");
    expect_load_error(write_file("none.bin", llmc_bytes({})), "no tokens");
    expect_load_error(write_file("vocab.bin", llmc_bytes({1, 51000, 2, 60000})),
                      "token 51000 at position 1 is >= vocab_size 50304");
}

// An llm.c shard's header counts at most 2^31 - 1 tokens: the writer refuses the write that would
// pass it, before taking any of its tokens (the check reads n only), not at the end of a corpus of
// hours; the refused file never appears. Below the limit a shard reads back.
TEST(TokenWriter, LlmcShardRefusesPastItsHeaderAtOnce) {
    const std::string path = tmpdir() + "/writer.bin";
    fs::remove(path);
    const std::vector<uint32_t> toks = {5, 0, 65535, 7};
    {
        TokenWriter w(path, 2, true);
        w.write(toks.data(), toks.size());
        w.finish();
    }
    EXPECT_EQ(load_tokens(path, DataFormat::llmc, 65536).tokens.to_vector(), toks);
    fs::remove(path);
    {
        TokenWriter w(path, 2, true);
        w.write(toks.data(), toks.size());
        expect_error<std::runtime_error>([&] { w.write(toks.data(), (size_t)1 << 31); },
                                         "more than 2147483647 tokens do not fit an llm.c shard");
        EXPECT_EQ(w.count(), 4);
    }
    EXPECT_FALSE(fs::exists(path));
}

TEST(DataLoad, VocabularyArguments) {
    const std::string path = write_file("v.txt", "hello");
    expect_error<std::invalid_argument>([&] { load_tokens(path, DataFormat::text, 300); },
                                        "vocab_size is 256, not 300");
    expect_error<std::invalid_argument>([&] { load_tokens(path, DataFormat::automatic, 300); }, path);
    expect_error<std::invalid_argument>([&] { load_tokens(path, DataFormat::text, -1); }, "negative");
    // Text bytes >= a would-be vocabulary can never pass silently: 256 is the only one allowed.
    EXPECT_EQ(load_tokens(path, DataFormat::text, 0).vocab_size, 256);
}

TEST(DataSplit, NinetyTen) {
    TokenData all = iota_data(1000);
    auto [train, val] = split_tokens(all);
    ASSERT_EQ(train.tokens.size(), 900);
    ASSERT_EQ(val.tokens.size(), 100);
    EXPECT_EQ(train.tokens[0], 0);
    EXPECT_EQ(train.tokens[train.tokens.size() - 1], 899);
    EXPECT_EQ(val.tokens[0], 900);
    EXPECT_EQ(val.tokens[val.tokens.size() - 1], 999);
    EXPECT_EQ(val.vocab_size, 65536);
    EXPECT_EQ(val.format, DataFormat::u16);
    // int(n * frac), as nanoGPT computes it: 1001 * 0.9 = 900.9 -> 900.
    auto [t2, v2] = split_tokens(iota_data(1001));
    EXPECT_EQ(t2.tokens.size(), 900);
    EXPECT_EQ(v2.tokens.size(), 101);
    EXPECT_EQ(v2.tokens[0], 900);
    auto [t3, v3] = split_tokens(all, 0.25);
    EXPECT_EQ(t3.tokens.size(), 250);
    EXPECT_EQ(v3.tokens[0], 250);
    EXPECT_THROW(split_tokens(all, 1.0), std::invalid_argument);
    EXPECT_THROW(split_tokens(all, 0.0), std::invalid_argument);
    expect_error<std::invalid_argument>([] { split_tokens(iota_data(1), 0.9); }, "empty part");  // int(0.9) = 0
    EXPECT_EQ(split_tokens(iota_data(5), 0.99).second.tokens.size(), 1);  // int(4.95) = 4
}

// A split copies nothing: both parts are views of the whole's storage, which lives on while
// either part does.
TEST(DataSplit, PartsShareTheWholesStorage) {
    auto [train, val] = split_tokens(iota_data(1000));
    EXPECT_EQ(val.tokens.data(), (const char*)train.tokens.data() + 900 * train.tokens.width());
    EXPECT_EQ(train.tokens.to_vector(), iota_data(900).tokens.to_vector());
    EXPECT_EQ(val.tokens[99], 999);
    EXPECT_EQ(train.path, val.path);
    EXPECT_EQ(val.format, DataFormat::u16);
    EXPECT_EQ(train.vocab_size, 65536);
    const std::string path = write_file("split.bin", u16_bytes({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
    auto [t, v] = split_tokens(load_tokens(path));
    EXPECT_TRUE(t.tokens.mapped() && v.tokens.mapped());
    EXPECT_EQ(v.tokens.to_vector(), (std::vector<uint32_t>{10}));
}

TEST(DataBatcher, RejectsTooLittleData) {
    TokenData d = iota_data(100);
    expect_error<std::invalid_argument>([&] { Batcher(d, 4, 256, Order::random, 1); },
                                        "iota: 100 tokens, fewer than one window of T+1 = 257");
    EXPECT_THROW(Batcher(d, 4, 100, Order::sequential, 1), std::invalid_argument);
    EXPECT_NO_THROW(Batcher(d, 4, 99, Order::sequential, 1));
    EXPECT_THROW(Batcher(d, 0, 8, Order::random, 1), std::invalid_argument);
    EXPECT_THROW(Batcher(d, 2, 0, Order::random, 1), std::invalid_argument);
    // A whole file shorter than one window, through load_tokens.
    const TokenData small = load_tokens(write_file("small.txt", "abc"));
    expect_error<std::invalid_argument>([&] { Batcher(small, 1, 3, Order::random, 0); },
                                        "small.txt: 3 tokens, fewer than one window of T+1 = 4");
}

TEST(DataBatcher, SequentialWindowsAndWrap) {
    // 23 tokens, T = 4: windows start at 0, 4, 8, 12, 16 (the next, at 20, would need token 24).
    TokenData d = iota_data(23);
    Batcher b(d, 3, 4, Order::sequential, 0);
    ASSERT_EQ(b.num_windows(), 5);
    std::vector<int32_t> in(12), tg(12);
    const int expect_windows[3][3] = {{0, 1, 2}, {3, 4, 0}, {1, 2, 3}};
    for (int k = 0; k < 3; k++) {
        b.next(in.data(), tg.data());
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 4; t++) {
                EXPECT_EQ(in[r * 4 + t], expect_windows[k][r] * 4 + t) << "batch " << k << " row " << r;
                EXPECT_EQ(tg[r * 4 + t], in[r * 4 + t] + 1);
            }
    }
    // Consecutive windows overlap by one token: a window's last target is the next's first input.
    Batcher c(d, 5, 4, Order::sequential, 0);
    std::vector<int32_t> in5(20), tg5(20);
    c.next(in5.data(), tg5.data());
    for (int r = 0; r + 1 < 5; r++) EXPECT_EQ(tg5[r * 4 + 3], in5[(r + 1) * 4]);
    EXPECT_EQ(tg5[4 * 4 + 3], 20);  // the last window ends at token 20 of 0..22
    // Exactly divisible: len - 1 = W*T uses every token.
    TokenData e = iota_data(9);
    Batcher f(e, 2, 4, Order::sequential, 0);
    EXPECT_EQ(f.num_windows(), 2);
    std::vector<int32_t> in2(8), tg2(8);
    f.next(in2.data(), tg2.data());
    EXPECT_EQ(tg2[7], 8);
}

std::vector<int32_t> draw(Batcher& b, int batches) {
    std::vector<int32_t> all, in((size_t)b.B() * b.T()), tg(in.size());
    for (int k = 0; k < batches; k++) {
        b.next(in.data(), tg.data());
        all.insert(all.end(), in.begin(), in.end());
        all.insert(all.end(), tg.begin(), tg.end());
    }
    return all;
}

TEST(DataBatcher, RandomIsSeededAndPinned) {
    TokenData d = iota_data(1000);
    Batcher a(d, 4, 8, Order::random, 42), b(d, 4, 8, Order::random, 42), c(d, 4, 8, Order::random, 43);
    std::vector<int32_t> in(32), tg(32);
    // The first starts for seed 42 (splitmix64, rejection sampling), computed independently:
    // the sequence must never change, or resumed runs would see different data.
    const int starts[8] = {149, 803, 178, 788, 50, 454, 989, 100};
    for (int k = 0; k < 2; k++) {
        a.next(in.data(), tg.data());
        for (int r = 0; r < 4; r++) {
            EXPECT_EQ(in[r * 8], starts[k * 4 + r]);
            for (int t = 0; t < 8; t++) {
                EXPECT_EQ(in[r * 8 + t], in[r * 8] + t);
                EXPECT_EQ(tg[r * 8 + t], in[r * 8 + t] + 1);
            }
        }
    }
    EXPECT_EQ(a.state().rng, 17418742259747381458ull);
    const auto xb = draw(b, 50);
    Batcher a2(d, 4, 8, Order::random, 42);
    EXPECT_EQ(xb, draw(a2, 50));
    EXPECT_NE(xb, draw(c, 50));
}

TEST(DataBatcher, RandomStartsInRangeAndUniform) {
    // 20 tokens, T = 4: 16 possible starts, 0..15; start 15's targets end at the last token, 19.
    TokenData d = iota_data(20);
    Batcher b(d, 64, 4, Order::random, 7);
    std::vector<int32_t> in(256), tg(256);
    std::vector<int> count(16, 0);
    const int batches = 100;  // 6400 draws, 400 expected per start (sd ~19)
    for (int k = 0; k < batches; k++) {
        b.next(in.data(), tg.data());
        for (int r = 0; r < 64; r++) {
            const int s = in[r * 4];
            ASSERT_GE(s, 0);
            ASSERT_LE(s, 15);
            ASSERT_EQ(tg[r * 4 + 3], s + 4);
            count[s]++;
        }
    }
    double chi2 = 0;
    for (int s = 0; s < 16; s++) {
        EXPECT_GT(count[s], 300) << "start " << s;
        EXPECT_LT(count[s], 500) << "start " << s;
        chi2 += (count[s] - 400.0) * (count[s] - 400.0) / 400.0;
    }
    EXPECT_LT(chi2, 45.0);  // 15 degrees of freedom: p < 1e-4
    // The smallest data that fits one window has exactly one start.
    TokenData one = iota_data(5);
    Batcher o(one, 3, 4, Order::random, 1);
    std::vector<int32_t> oi(12), ot(12);
    o.next(oi.data(), ot.data());
    for (int i = 0; i < 12; i++) EXPECT_EQ(oi[i], i % 4);
}

TEST(DataBatcher, StateRestoreContinuesExactly) {
    TokenData d = iota_data(777);
    for (Order order : {Order::random, Order::sequential}) {
        Batcher a(d, 6, 16, order, 2024);
        draw(a, 5);
        const BatcherState s = a.state();
        const auto expected = draw(a, 3);
        Batcher b(d, 6, 16, order, 999);  // a different seed: restore must override it
        b.restore(s);
        EXPECT_EQ(draw(b, 3), expected) << order_name(order);
        EXPECT_EQ(b.state().rng, a.state().rng);
        EXPECT_EQ(b.state().next, a.state().next);
    }
    Batcher q(d, 6, 16, Order::sequential, 0);
    EXPECT_THROW(q.restore(BatcherState{0, q.num_windows()}), std::invalid_argument);
    EXPECT_THROW(q.restore(BatcherState{0, -1}), std::invalid_argument);
}

// uint32 tokens: raw u32 files, llm.c's LLaMA-3 shards (magic 20240801, version 7), and a raw .bin
// recognised as uint32 through the meta.json sidecar that mhc prepare writes beside it.

TEST(DataLoad, RawUint32AndLlama3Shards) {
    const std::vector<uint32_t> v = {0, 65535, 65536, 128255, 7};
    const std::string raw = write_file("big.tok", u32_bytes(v));
    const TokenData d = load_tokens(raw, DataFormat::u32, 128256);
    EXPECT_EQ(d.format, DataFormat::u32);
    EXPECT_EQ(d.tokens.to_vector(), v);
    expect_error<std::invalid_argument>([&] { load_tokens(raw, DataFormat::u32); }, "no default vocabulary");
    expect_load_error(write_file("odd32.tok", "abcdef"), "not a multiple of 4", DataFormat::u32, 100);
    std::string shard;
    put32(shard, 20240801);
    put32(shard, 7);
    put32(shard, (int32_t)v.size());
    shard.resize(1024, '\0');
    const std::string path = write_file("llama3_shard.bin", shard + u32_bytes(v));
    const TokenData s = load_tokens(path);
    EXPECT_EQ(s.format, DataFormat::llmc);
    EXPECT_EQ(s.vocab_size, 128256);  // LLaMA-3's vocabulary by default
    EXPECT_EQ(s.tokens.to_vector(), v);
    expect_load_error(path, "token 65536 at position 2 is >= vocab_size 65536", DataFormat::automatic, 65536);
    std::string v2 = shard;
    v2[4] = 2;  // magic 20240801 with version 2
    expect_load_error(write_file("llama3_v2.bin", v2 + u32_bytes(v)), "version 2 for magic 20240801");
    expect_load_error(write_file("llama3_short.bin", shard + u32_bytes({1, 2})), "truncated");
}

TEST(DataLoad, SidecarGivesWidthVocabularyAndTokenizer) {
    const std::string dir = tmpdir() + "/prepared";
    fs::create_directories(dir);
    const std::vector<uint32_t> v = {70000, 1, 2, 3};
    std::ofstream(dir + "/train.bin", std::ios::binary) << u32_bytes(v);
    std::ofstream(dir + "/other.bin", std::ios::binary) << u16_bytes({1, 2});
    TokenMeta m;
    m.dtype = "uint32";
    m.vocab_size = 70001;
    m.tokenizer = {"hf_bpe", "tokenizer.json", 70001, "crc32:00000000"};
    m.files = {{"train.bin", {4, 20}}};
    std::ofstream(dir + "/meta.json") << token_meta_json(m);
    const TokenData d = load_tokens(dir + "/train.bin");
    EXPECT_EQ(d.format, DataFormat::u32);
    EXPECT_EQ(d.vocab_size, 70001);
    EXPECT_EQ(d.tokens.to_vector(), v);
    EXPECT_EQ(d.tokenizer.kind, "hf_bpe");
    EXPECT_EQ(d.tokenizer.file, dir + "/tokenizer.json");  // resolved against the sidecar's directory
    // A file the sidecar does not list is read as before (uint16, GPT-2's vocabulary).
    const TokenData o = load_tokens(dir + "/other.bin");
    EXPECT_EQ(o.format, DataFormat::u16);
    EXPECT_EQ(o.vocab_size, 50304);
    EXPECT_TRUE(o.tokenizer.empty());
    // Another program's meta.json is not ours: ignored. A malformed one of ours is an error.
    std::ofstream(dir + "/meta.json") << "{\"name\": \"something else\"}";
    EXPECT_EQ(load_tokens(dir + "/train.bin", DataFormat::automatic, 80000).format, DataFormat::u16);
    std::ofstream(dir + "/meta.json") << "{\"format\": \"mhc-tokens-1\", \"files\": {\"train.bin\": {}}}";
    expect_load_error(dir + "/train.bin", "meta.json: malformed mhc token sidecar");
}

}  // namespace
