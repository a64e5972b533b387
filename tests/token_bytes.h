// Token files' bytes for the data tests, little-endian and written byte by byte, so the files are
// the same on any host: raw uint16 and uint32 tokens, and llm.c shards (1024-byte header in front).
#pragma once
#include <cstdint>
#include <climits>
#include <string>
#include <vector>

inline void put32(std::string& s, int32_t v) {
    for (int i = 0; i < 4; i++) s += (char)(((uint32_t)v >> (8 * i)) & 255);
}
inline std::string u16_bytes(const std::vector<uint16_t>& v) {
    std::string s;
    for (uint16_t x : v) s += (char)(x & 255), s += (char)(x >> 8);
    return s;
}
inline std::string u32_bytes(const std::vector<uint32_t>& v) {
    std::string s;
    for (uint32_t x : v) put32(s, (int32_t)x);
    return s;
}
// A GPT-2 shard (magic 20240520, version 1) of v; count overrides the header's token count.
inline std::string llmc_bytes(const std::vector<uint16_t>& v, int32_t magic = 20240520, int32_t version = 1,
                              int64_t count = INT64_MIN) {
    std::string s;
    put32(s, magic);
    put32(s, version);
    put32(s, count == INT64_MIN ? (int32_t)v.size() : (int32_t)count);
    s.resize(1024, '\0');
    return s + u16_bytes(v);
}
