// A piece of the engine's stream work captured once into a CUDA graph and replayed as one launch
// instead of hundreds (train/engine_cuda.cpp's training step). A graph holds what the capture saw:
// the kernels' arguments (pointers, sizes, host numbers) as they were then, so the work must read
// whatever changes between replays from device memory written outside it, and the graph is made
// again whenever its key changes: the caller's (shapes) plus device_frees(), since a buffer freed
// after the capture may be named in it.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "cuda/cuda.h"

namespace mhc::cuda {

class Graph {
public:
    Graph() = default;
    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;
    ~Graph() { reset(); }

    // Queues work()'s device work on the stream: by replaying the graph when it was captured with
    // this key, else by capturing work() (which then only records: nothing runs) and launching the
    // new graph. false when work() could not be captured (it waits for the device, allocates or
    // frees memory, ...: CUDA refuses those during a capture): nothing is queued then, *why says
    // what was refused, and the caller runs work() itself.
    bool run(std::vector<long> key, const std::function<void()>& work, std::string* why);
    void reset();

private:
    cudaGraphExec_t exec_ = nullptr;
    std::vector<long> key_;
};

}  // namespace mhc::cuda
