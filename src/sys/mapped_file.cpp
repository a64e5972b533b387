// Read-only file mappings and the SIGBUS handler that names a mapped file shortened on disk.
#include "sys/mapped_file.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "sys/file.h"

namespace mhc::sys {

namespace {

// The live mappings, for the handler: a fixed table it can read without locks or allocation.
// A slot is claimed by setting its end last and released by clearing its end first, so the
// handler never pairs one mapping's start with another's end.
struct Slot {
    std::atomic<uintptr_t> begin{0}, end{0};
    char path[1024] = {};
};
constexpr int kSlots = 64;
Slot g_slots[kSlots];
std::mutex g_slots_mutex;  // between threads that map and unmap (never taken by the handler)
struct sigaction g_old_bus;

void put(const char* s) {
    for (size_t n = std::strlen(s); n > 0;) {
        const ssize_t w = ::write(2, s, n);
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    for (Slot& s : g_slots) {
        const uintptr_t e = s.end.load(std::memory_order_acquire);
        if (e != 0 && a >= s.begin.load(std::memory_order_relaxed) && a < e) {
            put("mhc: error: ");
            put(s.path);
            put(": the file was shortened on disk while this process read it from memory (it must not change "
                "while a run uses it)\n");
            ::_exit(1);
        }
    }
    // Not ours: the previous handler's, or the default action, takes the fault when it recurs.
    if (g_old_bus.sa_flags & SA_SIGINFO) {
        if (g_old_bus.sa_sigaction) return g_old_bus.sa_sigaction(sig, si, ctx);
    } else if (g_old_bus.sa_handler != SIG_DFL && g_old_bus.sa_handler != SIG_IGN) {
        return g_old_bus.sa_handler(sig);
    }
    signal(SIGBUS, SIG_DFL);  // returning re-runs the faulting access, which now ends the process
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
        const size_t n = std::min(path.size(), sizeof s.path - 1);
        std::memcpy(s.path, path.data(), n);
        s.path[n] = '\0';
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
    claim(p, f.size, f.path);
    return m;
}

void mapped_advise_sequential(const MappedFile& m, bool sequential) {
    ::madvise((void*)m.data, (size_t)m.size, sequential ? MADV_SEQUENTIAL : MADV_NORMAL);
}

}  // namespace mhc::sys
