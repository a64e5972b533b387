// A file mapped read-only into memory, for token files: its pages come from the page cache, so
// untouched parts take no memory and the processes that map one file (the ranks of a data-parallel
// run on one machine) hold one copy between them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace mhc::sys {

struct File;  // sys/file.h

struct MappedFile {
    std::string path;
    const unsigned char* data = nullptr;
    int64_t size = 0;
    MappedFile() = default;
    ~MappedFile();  // unmaps
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
};

// Maps the whole of f (a regular file of at least one byte), or returns null where it cannot be
// mapped (the caller then reads it). A mapped file that another program shortens would kill the
// process with SIGBUS at the next read of the lost part; a SIGBUS handler, installed with the
// first mapping, turns a fault inside one of the first 4096 live mappings into one line naming
// the file and exit code 1, and hands any other SIGBUS to the handler that was there before (or
// to the default action, which ends the process).
std::shared_ptr<const MappedFile> map_file(const File& f);

// Hints the kernel to read ahead (a scan from start to end) or not (reads of scattered windows).
void mapped_advise_sequential(const MappedFile& m, bool sequential);

}  // namespace mhc::sys
