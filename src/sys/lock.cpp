// Exclusive advisory file locks (see lock.h).
#include "sys/lock.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "sys/file.h"

namespace mhc::sys {

namespace {
// Unlink first, while we still hold the lock: a process that opened the old file meanwhile sees
// after its flock that the path no longer names it, and starts again (lock_file).
void release(const std::string& path, int fd) {
    if (fd < 0) return;
    ::unlink(path.c_str());
    ::close(fd);  // closing the last descriptor of the open file releases the lock
}
}  // namespace

FileLock& FileLock::operator=(FileLock&& o) noexcept {
    if (this != &o) {
        release(path, fd);
        path = std::move(o.path);
        fd = o.fd;
        o.fd = -1;
    }
    return *this;
}

FileLock::~FileLock() { release(path, fd); }

long lock_file_pid(const std::string& path) {
    std::string text;
    if (!read_file(path, text)) return -1;
    char* end = nullptr;
    const long pid = std::strtol(text.c_str(), &end, 10);
    return end != text.c_str() && pid > 0 ? pid : -1;
}

namespace {
// An open-file-description lock (fcntl F_OFD_SETLK) on the whole file: flock's semantics (owned by
// the open file, not the process; gone when its last descriptor closes, so at any death), in
// <fcntl.h>. (<sys/file.h>, flock's header, is shadowed by our own sys/file.h on the include path.)
bool try_lock(int fd) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file
    return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}
}  // namespace

FileLock lock_file(const std::string& path, const std::string& what) {
    for (;;) {
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) throw std::runtime_error(path + ": cannot create the lock file: " + std::strerror(errno));
        if (!try_lock(fd)) {
            const int err = errno;
            ::close(fd);
            if (err != EAGAIN && err != EACCES)
                throw std::runtime_error(path + ": cannot lock: " + std::strerror(err));
            // The holder writes its pid right after taking the lock: give it a moment to.
            long pid = lock_file_pid(path);
            for (int i = 0; i < 50 && pid < 0; i++) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
                pid = lock_file_pid(path);
            }
            throw std::runtime_error(what + " is in use by " +
                                     (pid > 0 ? "process " + std::to_string(pid) : std::string("another process")) +
                                     " (it holds " + path + "); wait for it to end or stop it");
        }
        // The file may have been unlinked (by a holder releasing it) between our open and our
        // lock: then we hold a lock nobody else can see. Start again.
        struct stat a {}, b {};
        if (::fstat(fd, &a) != 0 || ::stat(path.c_str(), &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            ::close(fd);
            continue;  // (if the directory is gone too, the next open says so)
        }
        const std::string pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != (ssize_t)pid.size()) {
            const int err = errno;
            ::close(fd);
            throw std::runtime_error(path + ": cannot write the lock file: " + std::strerror(err));
        }
        FileLock l;
        l.path = path;
        l.fd = fd;
        return l;
    }
}

}  // namespace mhc::sys
