// Files: reading a whole file, a read-only handle with pread at an offset, and atomic writes.
// Errors are std::runtime_error with one line "PATH: what: <strerror>".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mhc::sys {

// The whole file into out. False (errno says why) if it cannot be opened or read.
bool read_file(const std::string& path, std::string& out);

// A file open for reading, closed by the destructor, so every error path can simply throw.
// Opening throws "PATH: cannot open: ..." or "PATH: cannot stat: ..."; what the file must be
// (a directory or a pipe may be fine or not) is the caller's to check and to word.
struct File {
    std::string path;
    int fd = -1;
    int64_t size = 0;
    bool is_dir = false, is_regular = false;
    explicit File(const std::string& path);
    ~File();
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    // Reads exactly n bytes at offset off (pread: no shared file position to keep track of).
    // Throws "PATH: read failed: ..." or "PATH: file shrank while being read".
    void read_at(int64_t off, void* dst, int64_t n) const;
};

// CRC-32 (zlib's), accumulated over pieces; name() is "crc32:xxxxxxxx", the form every checksum and
// fingerprint of the project is written in.
struct Crc32 {
    unsigned long v = 0;
    Crc32();
    void add(const void* p, size_t n);
    std::string name() const;
};
std::string crc32_of(std::string_view bytes);  // Crc32 of bytes in memory, named

// The compressed format a file's first bytes announce: "gzip", "xz", "zstd", "bzip2" or "zip" by
// their magic numbers; "" for anything else. Text and token files must not be read as they are
// when they are one of these (their bytes would become tokens).
const char* compression_of(std::string_view head);
// The same for a file's first bytes (File reads them; a shorter file is judged on what it has).
const char* compression_of(const File& f);

// A cheap identity of a file's content, to tell whether two runs saw the same data: its size and
// a CRC-32 (zlib) of its bytes, "crc32:XXXXXXXX" over the whole file up to whole_up_to bytes (256
// MiB; at least 1 MiB), beyond that "crc32-sampled:XXXXXXXX" over `pieces` (64; at least 2) evenly
// spaced 1 MiB pieces, the first and the last included. Throws as File does.
struct Fingerprint {
    int64_t bytes = 0;
    std::string hash;
};
Fingerprint file_fingerprint(const std::string& path, int64_t whole_up_to = 256ll << 20, int pieces = 64);

// Writes the pieces, one after another, to PATH.tmp.<pid>, fsyncs it, renames it over path and
// fsyncs the directory: readers see the old file or the new one, never a mix, even after a crash.
// Pieces let a large payload (a checkpoint's tensors) go out without one copy of it all.
// On failure the temporary is removed, path is untouched, and the error is "PATH: cannot write: ..."
// (cannot create), "PATH: write failed: ..." (full disk, file too large) or
// "PATH: cannot rename into place: ...".
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces);
inline void write_file_atomic(const std::string& path, std::string_view text) {
    write_file_atomic(path, std::vector<std::string_view>{text});
}

// The same, for a file written as it is made (mhc prepare's token files): write() appends, pwrite()
// patches bytes already written (a header completed last), commit() makes the file visible. A
// writer destroyed without commit() removes its temporary: a failed or interrupted file never
// appears under its name. Errors as write_file_atomic's.
class AtomicFile {
  public:
    explicit AtomicFile(const std::string& path);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    void write(std::string_view bytes);
    void pwrite(std::string_view bytes, int64_t offset);
    void commit();
    const std::string& path() const { return path_; }

  private:
    [[noreturn]] void give_up(const char* what, int err);
    std::string path_, tmp_;
    int fd_ = -1;
    bool done_ = false;
};

}  // namespace mhc::sys
