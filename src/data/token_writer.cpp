// Token files written as they are made (mhc prepare): raw little-endian tokens or an llm.c shard,
// through sys::AtomicFile, so that only a complete file appears under its name.
#include <limits>
#include <stdexcept>

#include "mhc/data.h"
#include "sys/file.h"

namespace mhc {

namespace {
constexpr size_t kBufBytes = 1 << 20;

void put_le(std::string& s, uint32_t v, int width) {
    for (int i = 0; i < width; i++) s += (char)((v >> (8 * i)) & 255);
}
}  // namespace

TokenWriter::TokenWriter(const std::string& path, int width, bool llmc) : path_(path), width_(width), llmc_(llmc) {
    if (width != 2 && width != 4) throw std::invalid_argument(path + ": token width " + std::to_string(width) + " (2 or 4)");
    file_ = std::make_unique<sys::AtomicFile>(path);
    buf_.reserve(kBufBytes + 1024);
    if (llmc_) buf_.assign(1024, '\0');  // the header, written again with the count by finish()
}

TokenWriter::~TokenWriter() = default;  // an unfinished file's temporary goes with its AtomicFile

void TokenWriter::flush() {
    file_->write(buf_);
    buf_.clear();
}

namespace {
[[noreturn]] void too_many_for_llmc(const std::string& path, const std::string& count) {
    throw std::runtime_error(path + ": " + count + " tokens do not fit an llm.c shard (its header counts at most "
                             "2^31-1): use the bin format");
}
}  // namespace

void TokenWriter::write(const uint32_t* t, size_t n) {
    // Refused as soon as the count passes an llm.c header's, not after the rest of the corpus.
    if (llmc_ && count_ + (int64_t)n > std::numeric_limits<int32_t>::max())
        too_many_for_llmc(path_, "more than 2147483647");
    const uint32_t max = width_ == 2 ? 0xFFFF : 0xFFFFFFFF;
    for (size_t i = 0; i < n; i++) {
        if (t[i] > max) throw std::runtime_error(path_ + ": token " + std::to_string(t[i]) + " does not fit 16 bits");
        put_le(buf_, t[i], width_);
        if (buf_.size() >= kBufBytes) flush();
    }
    count_ += (int64_t)n;
}

void TokenWriter::finish() {
    flush();
    if (llmc_) {
        if (count_ > std::numeric_limits<int32_t>::max()) too_many_for_llmc(path_, std::to_string(count_));
        std::string h;
        put_le(h, width_ == 2 ? 20240520u : 20240801u, 4);  // magic
        put_le(h, width_ == 2 ? 1u : 7u, 4);                // version
        put_le(h, (uint32_t)count_, 4);
        file_->pwrite(h, 0);
    }
    file_->commit();
}

}  // namespace mhc
