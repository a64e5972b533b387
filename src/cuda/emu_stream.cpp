// The CPU emulation's streams (cuda/emu.h): stream-ordered copies and fills, stream capture into
// graphs and their launches, and events. Work runs when it is queued (one host thread, in order), so
// a stream is only what a capture records: the checks are what CUDA's global capture mode refuses.
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include "cuda/emu.h"

struct CUgraph_st {
    std::vector<std::function<void()>> work;  // in the order it was queued
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> work;
};

namespace mhc::emu {

bool copy_ok(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);  // emu.cpp

namespace {
struct Capture {
    cudaStream_t stream = nullptr;         // the stream being captured, when active
    bool active = false, invalidated = false;
    std::unique_ptr<CUgraph_st> graph;
};
Capture& capture() {
    static Capture c;
    return c;
}
void invalidate() {
    capture().invalidated = true;
    capture().graph->work.clear();
}
}  // namespace

bool enqueue(cudaStream_t stream, std::function<void()> work) {
    Capture& c = capture();
    if (!c.active) {
        work();
        return true;
    }
    if (stream != c.stream) {  // CUDA: the legacy stream would have to wait for the captured one
        invalidate();
        return false;
    }
    if (!c.invalidated) c.graph->work.push_back(std::move(work));
    return !c.invalidated;
}

}  // namespace mhc::emu

using mhc::emu::is_device;

namespace {
cudaError_t failed(cudaError_t e) {  // what the call returns, and cudaGetLastError next
    mhc::emu::set_last_error(e);
    return e;
}
cudaError_t refused() { return failed(cudaErrorStreamCaptureUnsupported); }
}  // namespace

cudaError_t mhc::emu::outside_capture() {
    if (!capture().active) return cudaSuccess;
    invalidate();
    return refused();
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    if (!bytes) return cudaSuccess;
    if (!mhc::emu::copy_ok(dst, src, bytes, kind)) return failed(cudaErrorInvalidMemcpyDirection);
    // A captured copy must be device to device here (pageable host memory cannot be captured).
    if (mhc::emu::capture().active && !(is_device(dst, bytes) && is_device(src, bytes))) {
        mhc::emu::invalidate();
        return refused();
    }
    // Host memory is read at the call (CUDA stages pageable memory before it returns).
    if (!mhc::emu::enqueue(stream, [=] { std::memmove(dst, src, bytes); })) return failed(cudaErrorStreamCaptureImplicit);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
    if (!bytes) return cudaSuccess;
    if (!is_device(p, bytes)) return failed(cudaErrorInvalidValue);
    if (!mhc::emu::enqueue(stream, [=] { std::memset(p, value, bytes); })) return failed(cudaErrorStreamCaptureImplicit);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
    return mhc::emu::outside_capture();
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
    const auto& c = mhc::emu::capture();
    *status = c.active && c.stream == stream ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t bytes) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    *p = std::malloc(bytes);
    return *p || !bytes ? cudaSuccess : failed(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* p) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    std::free(p);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
    auto& c = mhc::emu::capture();
    if (c.active || stream == nullptr) return refused();  // CUDA: the legacy stream cannot be captured
    c.active = true, c.invalidated = false, c.stream = stream;
    c.graph = std::make_unique<CUgraph_st>();
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
    auto& c = mhc::emu::capture();
    if (!c.active || stream != c.stream) return failed(cudaErrorInvalidValue);
    c.active = false;
    *graph = nullptr;
    if (c.invalidated) {
        c.graph.reset();
        return failed(cudaErrorStreamCaptureInvalidated);
    }
    *graph = c.graph.release();
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
    if (!graph) return cudaErrorInvalidValue;
    *exec = new CUgraphExec_st{graph->work};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    if (!exec) return cudaErrorInvalidValue;
    if (mhc::emu::capture().active) return refused();  // not needed by the engine: refused, not emulated
    (void)stream;
    for (const auto& w : exec->work) w();
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}

// ---- events: a host clock read when recorded (the work before it has run to its end) -------------
struct CUevent_st {
    std::chrono::steady_clock::time_point t;
    bool recorded = false;
};
cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = new CUevent_st;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
// CUDA records an event inside a capture as a graph node that cannot be timed: refused here, so
// that the engine's timing stays out of its graphs.
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    if (const cudaError_t e = mhc::emu::outside_capture()) return e;
    e->t = std::chrono::steady_clock::now(), e->recorded = true;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) {
    return mhc::emu::outside_capture();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start->recorded || !end->recorded) {
        return failed(cudaErrorInvalidResourceHandle);
    }
    *ms = std::chrono::duration<float, std::milli>(end->t - start->t).count();
    return cudaSuccess;
}
