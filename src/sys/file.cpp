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

Fingerprint file_fingerprint(const std::string& path) {
    const File f(path);
    constexpr int64_t kWhole = 256ll << 20, kPiece = 1 << 20, kPieces = 64;
    Fingerprint fp;
    fp.bytes = f.size;
    std::vector<unsigned char> buf((size_t)std::min<int64_t>(f.size, kPiece));
    uLong crc = crc32(0L, Z_NULL, 0);
    auto add = [&](int64_t off, int64_t n) {
        f.read_at(off, buf.data(), n);
        crc = crc32(crc, buf.data(), (uInt)n);
    };
    const bool whole = f.size <= kWhole;
    if (whole)
        for (int64_t off = 0; off < f.size; off += kPiece) add(off, std::min(kPiece, f.size - off));
    else
        for (int64_t i = 0; i < kPieces; i++) add((f.size - kPiece) / (kPieces - 1) * i, kPiece);
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08lx", (unsigned long)crc);
    fp.hash = std::string(whole ? "crc32:" : "crc32-sampled:") + hex;
    return fp;
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
    const std::string tmp = path + ".tmp." + std::to_string(getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail(path, "cannot write", errno);
    auto give_up = [&](const char* what, int err, bool close_fd) {
        if (close_fd) ::close(fd);
        ::unlink(tmp.c_str());
        fail(path, what, err);
    };
    for (std::string_view piece : pieces) {
        const char* c = piece.data();
        size_t n = piece.size();
        while (n > 0) {
            const ssize_t w = ::write(fd, c, n);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) give_up("write failed", w < 0 ? errno : ENOSPC, true);
            c += w;
            n -= (size_t)w;
        }
    }
    if (::fsync(fd) != 0) give_up("write failed", errno, true);
    if (::close(fd) != 0) give_up("write failed", errno, false);
    if (::rename(tmp.c_str(), path.c_str()) != 0) give_up("cannot rename into place", errno, false);
    // The rename lives in the directory: sync it too, or a power cut can still lose the new name.
    // Best effort: the file is in place, and some file systems refuse to sync a directory.
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    const std::string dir = parent.empty() ? std::string(".") : parent.string();
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
    }
}

}  // namespace mhc::sys
