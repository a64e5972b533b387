// An exclusive advisory lock on a file (flock semantics; see lock.cpp), held while the FileLock lives: the one-writer
// rule of a run directory and of `mhc compare`'s --out. The kernel drops the lock when the
// process dies however it dies, so a crash never leaves a stale lock behind, only the file (which
// the next holder takes over); a normal release removes the file.
#pragma once
#include <string>

namespace mhc::sys {

struct FileLock {
    std::string path;
    int fd = -1;
    FileLock() = default;
    FileLock(FileLock&& o) noexcept : path(std::move(o.path)), fd(o.fd) { o.fd = -1; }
    FileLock& operator=(FileLock&& o) noexcept;
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;
    ~FileLock();  // removes the file, then releases the lock
    bool held() const { return fd >= 0; }
};

// Takes the lock on `path` (created if missing) without waiting and writes our pid into the file.
// When another process holds it, throws std::runtime_error with one line:
//   "<what> is in use by process <pid> (it holds <path>); wait for it to end or stop it".
// The descriptor is close-on-exec, so child processes never inherit the lock.
FileLock lock_file(const std::string& path, const std::string& what);

// The pid written in a lock file by its holder, or -1 (no file, not yet written, not a number).
long lock_file_pid(const std::string& path);

}  // namespace mhc::sys
