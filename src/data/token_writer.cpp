// Token files written as they are made (mhc prepare): raw little-endian tokens or an llm.c shard,
// into a temporary that only a complete file's rename makes visible.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "mhc/data.h"

namespace mhc {

namespace {
constexpr size_t kBufBytes = 1 << 20;

void put_le(std::string& s, uint32_t v, int width) {
    for (int i = 0; i < width; i++) s += (char)((v >> (8 * i)) & 255);
}
}  // namespace

TokenWriter::TokenWriter(const std::string& path, int width, bool llmc)
    : path_(path), tmp_(path + ".tmp." + std::to_string(getpid())), width_(width), llmc_(llmc) {
    if (width != 2 && width != 4) throw std::invalid_argument(path + ": token width " + std::to_string(width) + " (2 or 4)");
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error(path + ": cannot write: " + std::strerror(errno));
    buf_.reserve(kBufBytes + 1024);
    if (llmc_) buf_.assign(1024, '\0');  // the header, written again with the count by finish()
}

TokenWriter::~TokenWriter() {
    if (done_) return;
    if (fd_ >= 0) ::close(fd_);
    ::unlink(tmp_.c_str());
}

void TokenWriter::flush() {
    size_t off = 0;
    while (off < buf_.size()) {
        const ssize_t w = ::write(fd_, buf_.data() + off, buf_.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw std::runtime_error(path_ + ": cannot write: " + std::strerror(errno));
        off += (size_t)w;
    }
    buf_.clear();
}

void TokenWriter::write(const uint32_t* t, size_t n) {
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
        if (count_ > std::numeric_limits<int32_t>::max())
            throw std::runtime_error(path_ + ": " + std::to_string(count_) + " tokens do not fit an llm.c shard "
                                     "(its header counts at most 2^31-1): use the bin format");
        std::string h;
        put_le(h, width_ == 2 ? 20240520u : 20240801u, 4);  // magic
        put_le(h, width_ == 2 ? 1u : 7u, 4);                // version
        put_le(h, (uint32_t)count_, 4);
        if (::pwrite(fd_, h.data(), h.size(), 0) != (ssize_t)h.size())
            throw std::runtime_error(path_ + ": cannot write: " + std::strerror(errno));
    }
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
        fd_ = -1;
        throw std::runtime_error(path_ + ": cannot write: " + std::strerror(errno));
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw std::runtime_error(path_ + ": cannot write: " + std::strerror(errno));
    done_ = true;
}

}  // namespace mhc
