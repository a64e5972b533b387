// Token files as memory sees them: mapped at their stored width, the Tokens stream's segments
// (concatenation, slices, copies across boundaries), data given as a glob pattern over several
// files (llm.c's shards), and files changed on disk under a run.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>

#include "error_util.h"
#include "file_util.h"
#include "token_bytes.h"
#include "mhc/data.h"
#include "sys/file.h"

using namespace mhc;
namespace fs = std::filesystem;

namespace {

std::string write_file(const std::string& name, const std::string& bytes) {
    return scratch_file("data_files", name, bytes);
}

// Token files are mapped and kept at their width (1 byte for text, 2 for uint16, 4 for uint32),
// an llm.c shard's tokens seen after its header; bytes from memory are owned, at the same widths.
TEST(DataLoad, FilesAreMappedAtTheirWidth) {
    struct Case {
        std::string name, bytes;
        int width;
        std::vector<uint32_t> ids;
    };
    const std::vector<Case> cases = {
        {"w.txt", "ab\xff", 1, {'a', 'b', 0xff}},
        {"w.bin", u16_bytes({7, 50000}), 2, {7, 50000}},
        {"w_shard.bin", llmc_bytes({3, 4, 5}), 2, {3, 4, 5}},
    };
    for (const Case& c : cases) {
        const TokenData d = load_tokens(write_file(c.name, c.bytes));
        EXPECT_TRUE(d.tokens.mapped()) << c.name;
        EXPECT_EQ(d.tokens.width(), c.width) << c.name;
        EXPECT_EQ(d.tokens.to_vector(), c.ids) << c.name;
        const TokenData m = load_tokens_from_memory(c.bytes, c.name);
        EXPECT_FALSE(m.tokens.mapped()) << c.name;
        EXPECT_EQ(m.tokens.width(), c.width) << c.name;
        EXPECT_EQ(m.tokens.to_vector(), c.ids) << c.name;
    }
    const TokenData u32 = load_tokens(write_file("w.tok", std::string("\x01\x00\x01\x00", 4)), DataFormat::u32, 70000);
    EXPECT_EQ(u32.tokens.width(), 4);
    EXPECT_EQ(u32.tokens.to_vector(), (std::vector<uint32_t>{65537}));
    // A Batcher keeps the storage alive after the data it was made from is gone.
    Batcher b(load_tokens(write_file("gone.bin", u16_bytes({1, 2, 3, 4, 5}))), 1, 4, Order::sequential, 0);
    std::vector<int32_t> in(4), tg(4);
    b.next(in.data(), tg.data());
    EXPECT_EQ(tg, (std::vector<int32_t>{2, 3, 4, 5}));
}

// A mapped file rewritten in place after it was validated: an id past the vocabulary is an error
// naming the file when a batch would carry it, never an index past the embedding table.
TEST(DataBatcher, FileRewrittenInPlaceWithIdsPastTheVocabularyIsAnError) {
    const std::string path = write_file("rewritten.bin", u16_bytes({1, 2, 3, 4, 5, 6, 7, 8}));
    const TokenData d = load_tokens(path, DataFormat::u16, 100);
    Batcher b(d, 2, 3, Order::sequential, 0);
    std::vector<int32_t> in(6), tg(6);
    b.next(in.data(), tg.data());
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);  // the same inode, no truncation
    f.seekp(2 * 6);
    f.write(u16_bytes({60000}).data(), 2);
    f.close();
    b.restore({0, 0});
    expect_error<std::runtime_error>([&] { b.next(in.data(), tg.data()); },
                                     path + ": token 60000 at position 6 is >= vocab_size 100: the file changed on disk");
}

// A mapped file shortened on disk: the next read of the lost part ends the process with one line
// naming the file and exit code 1 (not a bare "Bus error").
TEST(DataLoadDeathTest, FileShortenedWhileMappedIsNamed) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    const std::string path = write_file("shortened.bin", u16_bytes(std::vector<uint16_t>(8192, 3)));
    EXPECT_EXIT(
        {
            const TokenData d = load_tokens(path);
            if (::truncate(path.c_str(), 0) != 0) std::_Exit(3);
            volatile uint32_t x = d.tokens[8000];
            (void)x;
            std::_Exit(2);
        },
        ::testing::ExitedWithCode(1), "shortened.bin: the file was shortened on disk \\(or could not be read\\) while this process read it");
}

// A SIGBUS that is not a fault in a mapping still ends the process once the handler is in place
// (the previous handler's or the default action), whoever sent it.
TEST(DataLoadDeathTest, OtherSigbusStillEndsTheProcess) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    const std::string path = write_file("mapped.bin", u16_bytes({1, 2, 3}));
    EXPECT_EXIT(
        {
            const TokenData d = load_tokens(path);
            ::raise(SIGBUS);
            std::_Exit(0);
        },
        [](int status) { return !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }, "");
}

// Every id a batch carries is checked against the data's vocabulary, so data must have one.
TEST(DataBatcher, DataWithoutAVocabularyIsRefused) {
    TokenData d{"hand-made", DataFormat::u16, 0, Tokens(std::vector<uint16_t>{1, 2, 3, 4}), {}, {}};
    expect_error<std::invalid_argument>([&] { Batcher(d, 1, 2, Order::random, 0); },
                                        "hand-made: vocab_size 0 (the data's vocabulary must be set");
    d.vocab_size = 4;  // owned data with an id past it: refused at the batch, with no word of a file
    Batcher b(d, 1, 3, Order::sequential, 0);
    std::vector<int32_t> in(3), tg(3);
    expect_error<std::runtime_error>([&] { b.next(in.data(), tg.data()); }, "hand-made: token 4 at position 3 is >= vocab_size 4");
    try {
        b.next(in.data(), tg.data());
    } catch (const std::runtime_error& e) {
        EXPECT_EQ(std::string(e.what()).find("changed on disk"), std::string::npos) << e.what();
    }
}

// A compressed file the name makes text (corpus.txt.gz) is refused, never trained on as its
// compressed bytes; --format text takes the bytes as asked. The magic numbers, one by one.
TEST(DataLoad, CompressedFilesAreNotTakenForText) {
    const std::string gz = write_file("corpus.txt.gz", std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00", 8));
    expect_error<std::runtime_error>([&] { load_tokens(gz); },
                                     gz + ": is gzip-compressed, not text: decompress it first (or give --format text");
    EXPECT_EQ(load_tokens(gz, DataFormat::text).tokens.size(), 8);
    EXPECT_STREQ(sys::compression_of(std::string_view("\xfd" "7zXZ\0rest", 10)), "xz");
    EXPECT_STREQ(sys::compression_of("\x28\xb5\x2f\xfd..."), "zstd");
    EXPECT_STREQ(sys::compression_of("BZh91AY&SY"), "bzip2");
    EXPECT_STREQ(sys::compression_of("PK\x03\x04..."), "zip");
    EXPECT_STREQ(sys::compression_of("BZh is not bzip2 without its level"), "");
    EXPECT_STREQ(sys::compression_of("plain text"), "");
    EXPECT_STREQ(sys::compression_of("\x1f"), "");  // too short to say
}

// A stream of owned segments against the same ids in one vector: every copy, slice and search
// across the boundaries, at each width.
TEST(TokensStream, SegmentsReadAsOneStream) {
    std::mt19937 rng(7);
    for (int width : {1, 2, 4}) {
        std::vector<uint32_t> all;
        std::vector<Tokens> parts;
        for (int len : {5, 1, 9, 3}) {
            std::vector<uint32_t> ids;
            for (int i = 0; i < len; i++) ids.push_back(rng() % (width == 1 ? 200u : width == 2 ? 60000u : 4000000000u));
            all.insert(all.end(), ids.begin(), ids.end());
            if (width == 1) parts.emplace_back(std::vector<uint8_t>(ids.begin(), ids.end()));
            if (width == 2) parts.emplace_back(std::vector<uint16_t>(ids.begin(), ids.end()));
            if (width == 4) parts.emplace_back(ids);
        }
        const Tokens t = Tokens::concat(parts);
        ASSERT_EQ(t.size(), (int64_t)all.size());
        EXPECT_EQ(t.segments(), 4);
        EXPECT_EQ(t.width(), width);
        EXPECT_FALSE(t.mapped());
        EXPECT_EQ(t.to_vector(), all);
        const int64_t n = t.size();
        for (int64_t b = 0; b <= n; b++)
            for (int64_t e = b; e <= n; e++) {
                std::vector<int32_t> got((size_t)(e - b));
                t.copy(b, e - b, got.data());
                const std::vector<uint32_t> want(all.begin() + b, all.begin() + e);
                EXPECT_EQ(std::vector<uint32_t>(got.begin(), got.end()), want) << width << " " << b << " " << e;
                const Tokens s = t.slice(b, e);
                EXPECT_EQ(s.to_vector(), want);
                if (b < e) {
                    EXPECT_EQ(s[0], all[b]);
                }
            }
        // The first id at or past a limit, found in whichever segment holds it.
        for (int64_t i = 0; i < n; i++) {
            const uint32_t limit = all[i];
            const auto first = std::find_if(all.begin(), all.end(), [&](uint32_t v) { return v >= limit; });
            EXPECT_EQ(t.find_at_least(limit), first - all.begin());
        }
        EXPECT_EQ(t.find_at_least(*std::max_element(all.begin(), all.end()) + 1), -1);
        // Moved from, a stream is empty (as a vector is), whatever it held.
        Tokens from = t, to = std::move(from);
        EXPECT_TRUE(from.empty() && from.segments() == 0 && to.size() == n);
        from = std::move(to);
        EXPECT_TRUE(to.empty() && from.to_vector() == all);
    }
    expect_error<std::invalid_argument>([] { Tokens::concat({Tokens(std::vector<uint8_t>{1}), Tokens(std::vector<uint16_t>{2})}); },
                                        "tokens of 1 and 2 bytes cannot make one stream");
}

// llm.c's layout: a directory of shards, given as a quoted pattern. The shards are read in name
// order as one stream (windows may span two of them), each mapped; the split and the Batcher see
// the stream.
TEST(DataPattern, ShardsReadInNameOrderAsOneStream) {
    const std::string dir = fresh_dir("data_files", "shards");
    std::ofstream(dir + "/train_000002.bin", std::ios::binary) << llmc_bytes({20, 21, 22});
    std::ofstream(dir + "/train_000000.bin", std::ios::binary) << llmc_bytes({0, 1, 2, 3});
    std::ofstream(dir + "/train_000001.bin", std::ios::binary) << llmc_bytes({10, 11});
    std::ofstream(dir + "/val_000000.bin", std::ios::binary) << llmc_bytes({90, 91});
    const std::string pattern = dir + "/train_*.bin";
    EXPECT_EQ(data_files(pattern), (std::vector<std::string>{dir + "/train_000000.bin", dir + "/train_000001.bin",
                                                            dir + "/train_000002.bin"}));
    const TokenData d = load_tokens(pattern);
    EXPECT_EQ(d.path, pattern);
    EXPECT_EQ(d.files, data_files(pattern));  // what was read, for the run's data identity
    EXPECT_EQ(d.format, DataFormat::llmc);
    EXPECT_EQ(d.vocab_size, 50304);
    EXPECT_EQ(d.tokens.segments(), 3);
    EXPECT_TRUE(d.tokens.mapped());
    EXPECT_EQ(d.tokens.to_vector(), (std::vector<uint32_t>{0, 1, 2, 3, 10, 11, 20, 21, 22}));
    // Sequential windows of T = 4 cross from one shard into the next.
    Batcher b(d, 2, 4, Order::sequential, 0);
    std::vector<int32_t> in(8), tg(8);
    b.next(in.data(), tg.data());
    EXPECT_EQ(in, (std::vector<int32_t>{0, 1, 2, 3, 10, 11, 20, 21}));
    EXPECT_EQ(tg, (std::vector<int32_t>{1, 2, 3, 10, 11, 20, 21, 22}));
    // 9 * 0.5 = 4.5 -> 4: the validation part starts at the second shard.
    const auto [train, val] = split_tokens(d, 0.5);
    EXPECT_EQ(train.tokens.to_vector(), (std::vector<uint32_t>{0, 1, 2, 3}));
    EXPECT_EQ(val.tokens.to_vector(), (std::vector<uint32_t>{10, 11, 20, 21, 22}));
    EXPECT_EQ(val.tokens.segments(), 2);
    // One file is the file itself, whether named or matched; a pattern matching nothing is named.
    EXPECT_EQ(load_tokens(dir + "/val_*.bin").path, dir + "/val_000000.bin");
    EXPECT_EQ(data_files(dir + "/val_000000.bin"), (std::vector<std::string>{dir + "/val_000000.bin"}));
    expect_error<std::runtime_error>([&] { load_tokens(dir + "/test_*.bin"); },
                                     dir + "/test_*.bin: no file matches this pattern");
    // A file whose name holds a glob character is that file.
    std::ofstream(dir + "/odd[1].bin", std::ios::binary) << llmc_bytes({5, 6});
    EXPECT_EQ(load_tokens(dir + "/odd[1].bin").tokens.to_vector(), (std::vector<uint32_t>{5, 6}));
}

// The files of one pattern must make one stream: one format, one width, one vocabulary (the
// first file's), one tokenizer; a bad file among them is named itself.
TEST(DataPattern, FilesThatCannotMakeOneStreamAreRefused) {
    const std::string dir = fresh_dir("data_files", "mixed");
    auto put = [&](const std::string& name, const std::string& bytes) {
        std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    };
    put("a_0.bin", llmc_bytes({1, 2}));
    put("a_1.txt", "hello");
    expect_error<std::invalid_argument>([&] { load_tokens(dir + "/a_*"); },
                                        dir + "/a_1.txt reads as text but " + dir + "/a_0.bin as llmc");
    put("b_0.bin", llmc_bytes({1, 2}));
    std::string v7;
    put32(v7, 20240801), put32(v7, 7), put32(v7, 2);
    v7.resize(1024, '\0');
    put("b_1.bin", v7 + u32_bytes({3, 100000}));  // an id past b_0's vocabulary: the width is said first
    expect_error<std::invalid_argument>([&] { load_tokens(dir + "/b_*.bin"); }, "tokens of 4 and 2 bytes cannot make one stream");
    put("c_0.bin", u16_bytes({1, 2}));
    put("c_1.bin", u16_bytes({60000}));
    expect_error<std::runtime_error>([&] { load_tokens(dir + "/c_*.bin"); },
                                     dir + "/c_1.bin: token 60000 at position 0 is >= vocab_size 50304");
    EXPECT_EQ(load_tokens(dir + "/c_*.bin", DataFormat::u16, 65536).tokens.size(), 3);
    put("d_0.bin", llmc_bytes({1, 2}));
    put("d_1.bin", llmc_bytes({3}, 20240520, 1, 5));
    expect_error<std::runtime_error>([&] { load_tokens(dir + "/d_*.bin"); }, dir + "/d_1.bin: truncated llm.c shard");
    // Two sidecars naming two tokenizers.
    for (const char* sub : {"t0", "t1"}) {
        fs::create_directories(dir + "/" + sub);
        std::ofstream(dir + "/" + sub + "/train.bin", std::ios::binary) << u16_bytes({1, 2, 3});
        TokenMeta m;
        m.vocab_size = 100;
        m.tokenizer = {"sentencepiece", "tok.model", 100, sub[1] == '0' ? "crc32:00000001" : "crc32:00000002"};
        m.files = {{"train.bin", {3, 9}}};
        std::ofstream(dir + "/" + sub + "/meta.json") << token_meta_json(m);
    }
    expect_error<std::invalid_argument>([&] { load_tokens(dir + "/t*/train.bin"); },
                                        dir + "/t1/train.bin was made by sentencepiece crc32:00000002, " + dir +
                                            "/t0/train.bin was made by sentencepiece crc32:00000001: the files of " +
                                            dir + "/t*/train.bin must come from one tokenizer");
}

}  // namespace
