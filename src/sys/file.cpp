// Files: whole-file reads, pread at an offset, atomic writes (see file.h).
#include "sys/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace mhc::sys {

namespace {
[[noreturn]] void fail(const std::string& path, const std::string& what, int err) {
    throw std::runtime_error(path + ": " + what + ": " + std::strerror(err));
}
}  // namespace

bool read_file(const std::string& path, std::string& out) {
    out.clear();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    // Read to EOF rather than trusting st_size: /proc files report 0.
    char buf[65536];
    for (;;) {
        const ssize_t r = ::read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            const int e = errno;
            ::close(fd);
            errno = e;
            return false;
        }
        if (r == 0) break;
        out.append(buf, (size_t)r);
    }
    ::close(fd);
    return true;
}

File::File(const std::string& p) : path(p) {
    fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(p, "cannot open", errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);  // the destructor does not run for a constructor that throws
        fail(p, "cannot stat", e);
    }
    size = (int64_t)st.st_size;
    is_dir = S_ISDIR(st.st_mode);
    is_regular = S_ISREG(st.st_mode);
}

File::~File() { ::close(fd); }

void File::read_at(int64_t off, void* dst, int64_t n) const {
    char* c = (char*)dst;
    while (n > 0) {
        const ssize_t r = ::pread(fd, c, (size_t)std::min<int64_t>(n, 1 << 30), (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) fail(path, "read failed", errno);
        if (r == 0) throw std::runtime_error(path + ": file shrank while being read");
        c += r;
        off += r;
        n -= r;
    }
}

Crc32::Crc32() : v(crc32(0L, Z_NULL, 0)) {}

void Crc32::add(const void* p, size_t n) {
    const Bytef* b = (const Bytef*)p;
    while (n > 0) {  // zlib takes uInt lengths
        const uInt chunk = (uInt)std::min<size_t>(n, 1u << 30);
        v = crc32(v, b, chunk);
        b += chunk;
        n -= chunk;
    }
}

std::string Crc32::name() const {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08lx", v);
    return std::string("crc32:") + hex;
}

const char* compression_of(std::string_view h) {
    auto starts = [&](std::string_view magic) { return h.substr(0, magic.size()) == magic; };
    if (starts("\x1f\x8b")) return "gzip";
    if (starts(std::string_view("\xfd" "7zXZ\0", 6))) return "xz";
    if (starts("\x28\xb5\x2f\xfd")) return "zstd";
    if (starts("BZh") && h.size() > 3 && h[3] >= '1' && h[3] <= '9') return "bzip2";
    if (starts("PK\x03\x04")) return "zip";
    return "";
}

const char* compression_of(const File& f) {
    char head[6];
    const int64_t n = std::min<int64_t>(f.size, sizeof head);
    f.read_at(0, head, n);
    return compression_of(std::string_view(head, (size_t)n));
}

std::string crc32_of(std::string_view bytes) {
    Crc32 c;
    c.add(bytes.data(), bytes.size());
    return c.name();
}

Fingerprint file_fingerprint(const std::string& path, int64_t whole_up_to, int pieces) {
    const File f(path);
    constexpr int64_t kPiece = 1 << 20;
    const int64_t kWhole = std::max(whole_up_to, kPiece), kPieces = std::max(pieces, 2);
    Fingerprint fp;
    fp.bytes = f.size;
    std::vector<unsigned char> buf((size_t)std::min<int64_t>(f.size, kPiece));
    Crc32 crc;
    auto add = [&](int64_t off, int64_t n) {
        f.read_at(off, buf.data(), n);
        crc.add(buf.data(), (size_t)n);
    };
    const bool whole = f.size <= kWhole;
    if (whole)
        for (int64_t off = 0; off < f.size; off += kPiece) add(off, std::min(kPiece, f.size - off));
    else
        for (int64_t i = 0; i < kPieces; i++) add((f.size - kPiece) / (kPieces - 1) * i, kPiece);
    fp.hash = whole ? crc.name() : "crc32-sampled:" + crc.name().substr(6);
    return fp;
}

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp." + std::to_string(getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_, "cannot write", errno);
}

AtomicFile::~AtomicFile() {
    if (done_) return;
    if (fd_ >= 0) ::close(fd_);
    ::unlink(tmp_.c_str());
}

void AtomicFile::give_up(const char* what, int err) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
    done_ = true;  // nothing left for the destructor
    fail(path_, what, err);
}

void AtomicFile::write(std::string_view bytes) {
    const char* c = bytes.data();
    size_t n = bytes.size();
    while (n > 0) {
        const ssize_t w = ::write(fd_, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) give_up("write failed", w < 0 ? errno : ENOSPC);
        c += w;
        n -= (size_t)w;
    }
}

void AtomicFile::pwrite(std::string_view bytes, int64_t offset) {
    const char* c = bytes.data();
    size_t n = bytes.size();
    while (n > 0) {
        const ssize_t w = ::pwrite(fd_, c, n, (off_t)offset);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) give_up("write failed", w < 0 ? errno : ENOSPC);
        c += w, n -= (size_t)w, offset += w;
    }
}

void AtomicFile::commit() {
    if (::fsync(fd_) != 0) give_up("write failed", errno);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) give_up("write failed", errno);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) give_up("cannot rename into place", errno);
    done_ = true;
    // The rename lives in the directory: sync it too, or a power cut can still lose the new name.
    // Best effort: the file is in place, and some file systems refuse to sync a directory.
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    const std::string dir = parent.empty() ? std::string(".") : parent.string();
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
    }
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
    AtomicFile f(path);
    for (std::string_view piece : pieces) f.write(piece);
    f.commit();
}

}  // namespace mhc::sys
