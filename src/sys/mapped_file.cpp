// Read-only file mappings and the SIGBUS handler that names a mapped file shortened on disk.
// The handler calls only write, _exit, signal and raise (async-signal-safe) and reads atomics.
#include "sys/mapped_file.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "sys/file.h"

namespace mhc::sys {

namespace {

// The live mappings, for the handler: a fixed table it can read without locks or allocation (the
// path is the MappedFile's own string, alive while it is mapped). A slot is claimed by setting its
// end last and released by clearing its end first, so a handler that sees an end sees its start
// and path (only a fault in a mapping being unmapped, itself a use after unmap, could mix two).
struct Slot {
    std::atomic<uintptr_t> begin{0}, end{0};
    std::atomic<const char*> path{nullptr};
};
constexpr int kSlots = 4096;  // patterns of thousands of shards; mappings past this go unnamed
Slot g_slots[kSlots];
std::mutex g_slots_mutex;  // between threads that map and unmap (never taken by the handler)
struct sigaction g_old_bus;

void put(const char* s) {
    size_t n = 0;
    while (s[n]) n++;  // no strlen: the handler keeps to what is async-signal-safe
    while (n > 0) {
        const ssize_t w = ::write(2, s, n);
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    for (Slot& s : g_slots) {
        if (si->si_code <= 0) break;  // sent (kill, raise, sigqueue): si_addr means nothing
        const uintptr_t e = s.end.load(std::memory_order_acquire);
        if (e != 0 && a >= s.begin.load(std::memory_order_relaxed) && a < e) {
            put("mhc: error: ");
            put(s.path.load(std::memory_order_relaxed));
            put(": the file was shortened on disk (or could not be read) while this process read it from memory "
                "(it must not change while a run uses it)\n");
            ::_exit(1);
        }
    }
    // Not ours: the previous handler's.
    if (g_old_bus.sa_flags & SA_SIGINFO) {
        if (g_old_bus.sa_sigaction) return g_old_bus.sa_sigaction(sig, si, ctx);
    } else if (g_old_bus.sa_handler != SIG_DFL && g_old_bus.sa_handler != SIG_IGN) {
        return g_old_bus.sa_handler(sig);
    }
    // The default action ends the process: at once for a signal sent (kill -BUS), which would
    // otherwise be lost, and for a fault, which returning would only run again.
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

void install_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
}

// The slot for [begin, end), or none when all are taken (the mapping then works, unnamed on SIGBUS).
void claim(const void* begin, int64_t size, const std::string& path) {
    std::lock_guard lock(g_slots_mutex);
    for (Slot& s : g_slots) {
        if (s.end.load(std::memory_order_relaxed) != 0) continue;
        s.path.store(path.c_str(), std::memory_order_relaxed);
        s.begin.store((uintptr_t)begin, std::memory_order_relaxed);
        s.end.store((uintptr_t)begin + (uintptr_t)size, std::memory_order_release);
        return;
    }
}

void release(const void* begin) {
    std::lock_guard lock(g_slots_mutex);
    for (Slot& s : g_slots)
        if (s.end.load(std::memory_order_relaxed) != 0 && s.begin.load(std::memory_order_relaxed) == (uintptr_t)begin) {
            s.end.store(0, std::memory_order_release);
            return;
        }
}

}  // namespace

MappedFile::~MappedFile() {
    if (!data) return;
    release(data);
    ::munmap((void*)data, (size_t)size);
}

std::shared_ptr<const MappedFile> map_file(const File& f) {
    if (!f.is_regular || f.size <= 0) return nullptr;
    install_handler();
    void* p = ::mmap(nullptr, (size_t)f.size, PROT_READ, MAP_SHARED, f.fd, 0);
    if (p == MAP_FAILED) return nullptr;
    auto m = std::make_shared<MappedFile>();
    m->path = f.path;
    m->data = (const unsigned char*)p;
    m->size = f.size;
    claim(p, f.size, m->path);  // m->path: the string the slot points to lives as long as the mapping
    return m;
}

void mapped_advise_sequential(const MappedFile& m, bool sequential) {
    ::madvise((void*)m.data, (size_t)m.size, sequential ? MADV_SEQUENTIAL : MADV_NORMAL);
}

}  // namespace mhc::sys
