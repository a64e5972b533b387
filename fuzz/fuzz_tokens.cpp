// Fuzz target: token files in every format, and the batches cut from what loads.
// Input: the bytes of one token file. Each input is read as every format (automatic detection
// under a .bin and a .txt name, then text, u16, u32 and llm.c forced), with the default vocabulary and
// with 256 and 65536. A std::exception is the expected way to refuse a file; anything else (a
// sanitizer report, a crash, a non-std exception, a violated invariant below) is a finding.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <string_view>
#include <vector>

#include "mhc/data.h"

using namespace mhc;

namespace {

// Loads, then checks what load_tokens promises and draws a few batches from the result.
void one(std::string_view bytes, const char* name, DataFormat fmt, int vocab) {
    TokenData d;
    try {
        d = load_tokens_from_memory(bytes, name, fmt, vocab);
    } catch (const std::exception&) {
        return;
    }
    if (d.tokens.empty() || d.format == DataFormat::automatic) __builtin_trap();
    if (d.tokens.find_at_least((uint32_t)d.vocab_size) >= 0)
        __builtin_trap();  // out-of-range ids must be refused, never kept
    try {
        const auto [train, val] = split_tokens(d, 0.9);
        if (train.tokens.size() + val.tokens.size() != d.tokens.size()) __builtin_trap();
    } catch (const std::exception&) {
    }
    // Windows no longer than the data, so both orders get to run; the windows must stay inside.
    const int T = (int)std::min<int64_t>(d.tokens.size() - 1, 7), B = 3;
    for (Order order : {Order::random, Order::sequential}) {
        try {
            Batcher b(d, B, T, order, bytes.size());
            std::vector<int32_t> in(B * T), tg(B * T);
            for (int k = 0; k < 3; k++) {
                b.next(in.data(), tg.data());
                for (int i = 0; i < B * T; i++)
                    if (in[i] < 0 || tg[i] < 0 || tg[i] >= d.vocab_size)
                        __builtin_trap();
            }
            Batcher again(d, B, T, order, 0);
            again.restore(b.state());
        } catch (const std::exception&) {
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes((const char*)data, size);
    for (int vocab : {0, 256, 65536}) {
        one(bytes, "fuzz.bin", DataFormat::automatic, vocab);
        one(bytes, "fuzz.txt", DataFormat::automatic, vocab);
        one(bytes, "fuzz.tok", DataFormat::text, vocab);
        one(bytes, "fuzz.tok", DataFormat::u16, vocab);
        one(bytes, "fuzz.tok", DataFormat::u32, vocab);
        one(bytes, "fuzz.tok", DataFormat::llmc, vocab);
    }
    return 0;
}
