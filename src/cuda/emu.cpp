// The CPU emulation of CUDA (cuda/emu.h): fibers for the threads of a block, a registry of device
// allocations, the warp matrix products (cuda/emu_wmma.h) and the runtime's memory calls. Streams
// are in emu_stream.cpp, cuBLAS in emu_cublas.cpp.
#include "cuda/emu.h"
#include "cuda/emu_wmma.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MHC_EMU_ASAN 1
#else
#define MHC_EMU_ASAN 0
#endif

#if !defined(__x86_64__)
#error "the CUDA emulation switches fibers with x86-64 assembly; configure with -DMHC_CUDA_EMU=OFF"
#endif

// mhc_emu_switch(save, to): saves the callee-saved registers on the current stack, stores the
// stack pointer in *save, continues on stack `to` (System V x86-64). The floating-point control
// state (MXCSR, x87 control word) is the thread's, shared by all fibers: nothing here changes it.
extern "C" void mhc_emu_switch(void** save, void* to);
asm(R"(
    .text
    .globl mhc_emu_switch
    .type mhc_emu_switch, @function
mhc_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mhc_emu_switch, .-mhc_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

namespace mhc::emu {

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "CUDA emulation: %s\n", what.c_str());
    std::fflush(stderr);
    std::abort();
}

enum class State { run, wait_block, wait_warp, done };

constexpr size_t kStack = MHC_EMU_ASAN ? (1u << 20) : (256u << 10);  // per fiber, allocated once
constexpr int kWide = 4;  // 64-bit words a lane publishes per warp_gather

struct Fiber {
    void* sp = nullptr;
    std::unique_ptr<char[]> stack;
    uint3 tid{0, 0, 0};
    State state = State::done;
};

struct Scheduler {
    std::vector<Fiber> fibers;
    void* sched_sp = nullptr;
    int cur = -1;
    const std::function<void()>* body = nullptr;
    const char* kernel = "";
    // Two per thread: the values published at warp exchanges, alternately in each half, so one
    // barrier per exchange suffices (a lane cannot publish twice before all have read once).
    std::vector<uint64_t> slots;
    std::vector<uint64_t> wide;  // warp_gather's slots: [2][threads][kWide]
    std::vector<unsigned char> parity;  // per thread: which half its next exchange uses
#if MHC_EMU_ASAN
    void* fake_stack = nullptr;
    const void* main_bottom = nullptr;
    size_t main_size = 0;
#endif
};
thread_local Scheduler S;

// Fiber side: give control back to the scheduler in the given state.
void yield(State st) {
    Fiber& f = S.fibers[S.cur];
    f.state = st;
#if MHC_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, S.main_bottom, S.main_size);
    mhc_emu_switch(&f.sp, S.sched_sp);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    mhc_emu_switch(&f.sp, S.sched_sp);
#endif
}

// A fiber lives as long as the process and runs one emulated thread after another: resumed when
// done, it starts the current kernel's body again for the thread index it was given.
extern "C" void fiber_entry() {
#if MHC_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &S.main_bottom, &S.main_size);
#endif
    for (;;) {
        (*S.body)();
        yield(State::done);
    }
}

// The first start of a fiber: a stack that enters fiber_entry when switched to (see
// mhc_emu_switch's pops).
void prime(Fiber& f) {
    f.stack.reset(new char[kStack]);
    uintptr_t top = ((uintptr_t)f.stack.get() + kStack) & ~(uintptr_t)15;
    uint64_t* s = (uint64_t*)top;
    *--s = 0;                        // fiber_entry's return address (it never returns)
    *--s = (uint64_t)&fiber_entry;   // popped by `ret`
    for (int i = 0; i < 6; i++) *--s = 0;  // rbp rbx r12 r13 r14 r15
    f.sp = s;
}

void resume(int i) {
    S.cur = i;
    threadIdx = S.fibers[i].tid;
#if MHC_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, S.fibers[i].stack.get(), kStack);
    mhc_emu_switch(&S.sched_sp, S.fibers[i].sp);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    mhc_emu_switch(&S.sched_sp, S.fibers[i].sp);
#endif
}

int linear(const uint3& t) { return (int)(t.x + blockDim.x * (t.y + blockDim.y * t.z)); }

void run_block(int nt) {
    std::fill(S.parity.begin(), S.parity.end(), 0);
    for (int i = 0; i < nt; i++) {
        Fiber& f = S.fibers[i];
        f.tid = {(unsigned)i % blockDim.x, (unsigned)i / blockDim.x % blockDim.y,
                 (unsigned)i / (blockDim.x * blockDim.y)};
        if (!f.stack) prime(f);
        f.state = State::run;
    }
    // Warp by warp: each warp runs as far as it can (its lanes in step at shuffles) before the next
    // one starts, so warps drift as far apart as __syncthreads allows. A shared-memory hazard
    // between warps that a missing __syncthreads leaves open then gives wrong values (lockstep
    // warps would hide it) when the reader runs first: in the default order, a later warp's write
    // read by an earlier warp; MHC_EMU_ORDER=reverse runs the warps, and the lanes of each warp
    // between shuffles, last first, which catches the other direction (and a lane reading what a
    // later lane writes with no shuffle between).
    const int nw = (nt + warpSize - 1) / warpSize;
    const bool rev = reverse_order();
    for (;;) {
        for (int wi = 0; wi < nw; wi++) {
            const int w = rev ? nw - 1 - wi : wi;
            const int l0 = w * warpSize, l1 = std::min(nt, l0 + warpSize);
            for (;;) {
                for (int k = l0; k < l1; k++) {
                    const int i = rev ? l1 - 1 - (k - l0) : k;
                    if (S.fibers[i].state == State::run) resume(i);
                }
                int waiting = 0, done = 0;
                for (int i = l0; i < l1; i++) {
                    waiting += S.fibers[i].state == State::wait_warp;
                    done += S.fibers[i].state == State::done;
                }
                if (waiting && waiting != l1 - l0)
                    die(std::string(S.kernel) + ": a warp shuffle that some lanes of the warp never reach");
                if (!waiting) break;  // the warp is done or at the block barrier
                for (int i = l0; i < l1; i++) S.fibers[i].state = State::run;
            }
        }
        int at_block = 0, done = 0;
        for (int i = 0; i < nt; i++) {
            at_block += S.fibers[i].state == State::wait_block;
            done += S.fibers[i].state == State::done;
        }
        if (done == nt) return;
        if (at_block != nt)
            die(std::string(S.kernel) + ": __syncthreads() that not every thread of the block reaches (" +
                std::to_string(at_block) + " of " + std::to_string(nt) + ")");
        for (int i = 0; i < nt; i++) S.fibers[i].state = State::run;
    }
}

cudaError_t g_last = cudaSuccess;

// The kernels' shared memory: every __shared__ array is in this section (cuda/emu.h), whose bounds
// the linker provides. NaN bytes (every bit set) before every block, because on a GPU a block's
// shared memory holds whatever was there before: a kernel that reads a value it has not written
// (a ragged last tile, a row past T) then computes on NaN, or indexes with -1, and fails its test.
extern "C" char __start_mhc_emu_shared[] __attribute__((weak));
extern "C" char __stop_mhc_emu_shared[] __attribute__((weak));
void poison_shared() {
    if (__start_mhc_emu_shared) std::memset(__start_mhc_emu_shared, 0xFF, __stop_mhc_emu_shared - __start_mhc_emu_shared);
}

// Device allocations: start -> size.
std::map<uintptr_t, size_t>& allocations() {
    static std::map<uintptr_t, size_t> m;
    return m;
}

}  // namespace

bool reverse_order() {
    static const bool rev = [] {
        const char* e = std::getenv("MHC_EMU_ORDER");
        return e && std::string(e) == "reverse";
    }();
    return rev;
}

void syncthreads() {
    if (S.cur < 0) die("__syncthreads() outside a kernel");
    yield(State::wait_block);
}

uint64_t warp_exchange(uint64_t bits, int src_lane) {
    if (S.cur < 0) die("warp shuffle outside a kernel");
    const int me = linear(S.fibers[S.cur].tid);
    const int base = me - me % warpSize;
    const int nt = (int)(blockDim.x * blockDim.y * blockDim.z);
    if (src_lane < 0 || src_lane >= warpSize || base + src_lane >= nt)
        die(std::string(S.kernel) + ": shuffle from lane " + std::to_string(src_lane) + ", which does not exist");
    const int nt2 = nt * (S.parity[me] ^= 1);
    S.slots[nt2 + me] = bits;
    yield(State::wait_warp);  // every lane has published
    return S.slots[nt2 + base + src_lane];
}

void warp_gather(const uint64_t* mine, int words, uint64_t* all) {
    if (S.cur < 0) die("warp shuffle outside a kernel");
    if (words < 1 || words > kWide) die("warp_gather of " + std::to_string(words) + " words");
    const int me = linear(S.fibers[S.cur].tid);
    const int base = me - me % warpSize;
    const int nt = (int)(blockDim.x * blockDim.y * blockDim.z);
    if (base + warpSize > nt) die(std::string(S.kernel) + ": a warp-wide matrix product in a partial warp");
    uint64_t* half = S.wide.data() + (size_t)nt * kWide * (S.parity[me] ^= 1);
    std::memcpy(half + (size_t)me * kWide, mine, words * sizeof(uint64_t));
    yield(State::wait_warp);  // every lane has published
    for (int l = 0; l < warpSize; l++) std::memcpy(all + l * words, half + (size_t)(base + l) * kWide, words * 8);
}

void run(dim3 grid, dim3 block, const std::function<void()>& body, const char* name) {
    const unsigned long nt = (unsigned long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !nt || nt > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535 ||
        grid.x > 2147483647u) {
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    if (S.cur >= 0) die(std::string("kernel ") + name + " launched from inside a kernel");
    if (S.fibers.size() < nt) S.fibers.resize(nt);
    S.slots.assign(2 * nt, 0);
    S.wide.assign(2 * nt * kWide, 0);
    S.parity.assign(nt, 0);
    S.body = &body;
    S.kernel = name;
    gridDim = grid;
    blockDim = block;
    // The blocks one after another; in reverse_order() last first (a block that reads what another
    // block of the same launch writes is wrong on a GPU, whichever order shows it here).
    const bool rev = reverse_order();
    for (unsigned zi = 0; zi < grid.z; zi++)
        for (unsigned yi = 0; yi < grid.y; yi++)
            for (unsigned xi = 0; xi < grid.x; xi++) {
                blockIdx = rev ? uint3{grid.x - 1 - xi, grid.y - 1 - yi, grid.z - 1 - zi} : uint3{xi, yi, zi};
                poison_shared();
                run_block((int)nt);
            }
    S.cur = -1;
    S.body = nullptr;
}

namespace {
template <typename T> void check_tile(const T* p, unsigned ldm) {
    if ((uintptr_t)p % 32) fault("wmma: a tile pointer not aligned to 32 bytes");
    if (ldm % (16 / sizeof(T))) fault("wmma: a leading dimension that is not whole 16-byte rows");
}
// The offset of element (r, c) of a tile: row r at r·ldm (row major), or column c at c·ldm.
long tile_at(unsigned ldm, bool row, int r, int c) { return row ? (long)r * ldm + c : (long)c * ldm + r; }
}  // namespace

void wmma_load(float (*v)[16], const __nv_bfloat16* p, unsigned ldm, bool row) {
    check_tile(p, ldm);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) v[r][c] = __bfloat162float(p[tile_at(ldm, row, r, c)]);
}
void wmma_load(float (*v)[16], const float* p, unsigned ldm, bool row) {
    check_tile(p, ldm);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) v[r][c] = p[tile_at(ldm, row, r, c)];
}
void wmma_store(float* p, const float (*v)[16], unsigned ldm, bool row) {
    check_tile(p, ldm);
    for (int e = (int)emu_lane(); e < 256; e += 32) p[tile_at(ldm, row, e / 16, e % 16)] = v[e / 16][e % 16];
}
void wmma_mma(float (*d)[16], const float (*a)[16], const float (*b)[16], const float (*c)[16]) {
    float out[16][16];  // d may be c
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) {
            float s = c[r][n];
            for (int k = 0; k < 16; k++) s += a[r][k] * b[k][n];
            out[r][n] = s;
        }
    std::memcpy(d, out, sizeof out);
}

// mma.sync.m16n8k16 (cuda/mma.cuh): the warp's A and B fragments gathered, the tiles rebuilt from
// the PTX ISA's layout, and the lane's four D elements computed: d += Σ_k a·b in fp32, k in order.
void mma16816(float* d, const uint32_t* a, const uint32_t* b) {
    const uint64_t mine[3] = {a[0] | (uint64_t)a[1] << 32, a[2] | (uint64_t)a[3] << 32, b[0] | (uint64_t)b[1] << 32};
    uint64_t all[32][3];
    warp_gather(mine, 3, &all[0][0]);
    const auto half = [](uint64_t word, int i) {  // bf16 i (0..3) of a 64-bit word, as float
        return __bfloat162float(__nv_bfloat16{(unsigned short)(word >> (16 * i))});
    };
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        for (int e = 0; e < 2; e++) {
            A[g][2 * t + e] = half(all[l][0], e);          // a0
            A[g + 8][2 * t + e] = half(all[l][0], 2 + e);  // a1
            A[g][2 * t + 8 + e] = half(all[l][1], e);      // a2
            A[g + 8][2 * t + 8 + e] = half(all[l][1], 2 + e);  // a3
            B[2 * t + e][g] = half(all[l][2], e);          // b0
            B[2 * t + 8 + e][g] = half(all[l][2], 2 + e);  // b1
        }
    }
    const int lane = (int)emu_lane(), g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        const int r = g + 8 * (e >> 1), n = 2 * t + (e & 1);
        float acc = d[e];
        for (int k = 0; k < 16; k++) acc += A[r][k] * B[k][n];
        d[e] = acc;
    }
}

void set_last_error(cudaError_t e) { g_last = e; }

void fault(const char* what) {
    die(std::string(S.cur >= 0 ? S.kernel : "host") + ": " + what);
}

bool is_device(const void* p, size_t bytes) {
    const auto& m = allocations();
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin()) return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + bytes <= it->first + it->second;
}

}  // namespace mhc::emu

using mhc::emu::is_device;

namespace {
constexpr size_t kDeviceMemory = (size_t)1 << 34;  // what the emulated device says it has (16 GiB)
constexpr int kDeviceThreads = 2048;               // the threads it holds at once (one multiprocessor)
size_t g_stack = 1024;                             // cudaLimitStackSize, bytes a thread
// What the allocations and the stack reserve take of the device.
size_t device_used() {
    size_t used = g_stack * kDeviceThreads;
    for (const auto& a : mhc::emu::allocations()) used += a.second;
    return used;
}
// What an allocation of `bytes` takes: whole 256-byte blocks (cudaMalloc's alignment), and one more.
size_t padded_size(size_t bytes) { return (bytes + 255) / 256 * 256 + 256; }
}  // namespace

cudaError_t cudaMalloc(void** p, size_t bytes) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    if (bytes > kDeviceMemory - std::min(device_used(), kDeviceMemory)) return mhc::emu::g_last = cudaErrorMemoryAllocation;
    const size_t padded = padded_size(bytes);
    void* q = std::aligned_alloc(256, padded);
    if (!q) return mhc::emu::g_last = cudaErrorMemoryAllocation;
#if MHC_EMU_ASAN
    // An access past the end, even into the padding, is an AddressSanitizer report (as it is
    // compute-sanitizer's on a GPU).
    ASAN_POISON_MEMORY_REGION((char*)q + bytes, padded - bytes);
#endif
    // cudaMalloc's memory holds whatever was there (often zeros on a fresh GPU, not after reuse):
    // NaN bytes here, so that a kernel reading what nothing wrote (a sum into a buffer never
    // zeroed) fails its test rather than passing on the host's zero pages.
    std::memset(q, 0xFF, bytes);
    mhc::emu::allocations()[(uintptr_t)q] = bytes;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    if (!p) return cudaSuccess;
    auto& m = mhc::emu::allocations();
    auto it = m.find((uintptr_t)p);
    if (it == m.end()) return mhc::emu::g_last = cudaErrorInvalidDevicePointer;
#if MHC_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, padded_size(it->second));
#endif
    m.erase(it);
    std::free(p);
    return cudaSuccess;
}

namespace mhc::emu {
bool copy_ok(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    const bool dd = is_device(dst, bytes), sd = is_device(src, bytes);
    bool ok = false;
    switch (kind) {
        case cudaMemcpyHostToHost: ok = !dd && !sd; break;
        case cudaMemcpyHostToDevice: ok = dd && !sd; break;
        case cudaMemcpyDeviceToHost: ok = !dd && sd; break;
        case cudaMemcpyDeviceToDevice: ok = dd && sd; break;
        case cudaMemcpyDefault: ok = true; break;
    }
    return ok;
}
}  // namespace mhc::emu

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    if (!bytes) return cudaSuccess;
    if (!mhc::emu::copy_ok(dst, src, bytes, kind)) return mhc::emu::g_last = cudaErrorInvalidMemcpyDirection;
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemset(void* p, int value, size_t bytes) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    if (!bytes) return cudaSuccess;
    if (!is_device(p, bytes)) return mhc::emu::g_last = cudaErrorInvalidValue;
    std::memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaGetLastError() {
    const cudaError_t e = mhc::emu::g_last;
    mhc::emu::g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError() { return mhc::emu::g_last; }
cudaError_t cudaDeviceSynchronize() {
    return mhc::emu::outside_capture();
}
cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device != 0) return cudaErrorInvalidValue;
    *prop = cudaDeviceProp{};
    std::snprintf(prop->name, sizeof prop->name, "CUDA emulation on the CPU");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    prop->maxThreadsPerMultiProcessor = kDeviceThreads;
    prop->totalGlobalMem = kDeviceMemory;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
    const size_t used = device_used();
    *total = kDeviceMemory;
    *free = used < kDeviceMemory ? kDeviceMemory - used : 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetLimit(size_t* value, cudaLimit limit) {
    if (limit != cudaLimitStackSize || !value) return mhc::emu::g_last = cudaErrorInvalidValue;
    *value = g_stack;
    return cudaSuccess;
}
cudaError_t cudaDeviceSetLimit(cudaLimit limit, size_t value) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    if (limit != cudaLimitStackSize) return mhc::emu::g_last = cudaErrorInvalidValue;
    const size_t others = device_used() - g_stack * kDeviceThreads;
    if (value > (kDeviceMemory - std::min(others, kDeviceMemory)) / kDeviceThreads)
        return mhc::emu::g_last = cudaErrorMemoryAllocation;
    g_stack = value;
    return cudaSuccess;
}
cudaError_t emu_func_attributes(cudaFuncAttributes* attr) {
    if (!attr) return mhc::emu::g_last = cudaErrorInvalidValue;
    const char* e = std::getenv("MHC_EMU_STACK_BYTES");
    *attr = cudaFuncAttributes{};
    attr->localSizeBytes = e ? std::strtoull(e, nullptr, 10) : 0;
    return cudaSuccess;
}
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevicePointer: return "invalid device pointer";
        case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
        case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
        case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
        default: return "unknown error";
    }
}
