// CUDA graphs of the engine's stream work (cuda/graph.h).
#include "cuda/graph.h"

#include <exception>

namespace mhc::cuda {

void Graph::reset() {
    if (exec_ && cudaGraphExecDestroy(exec_) != cudaSuccess) (void)cudaGetLastError();
    exec_ = nullptr;
    key_.clear();
}

bool Graph::run(std::vector<long> key, const std::function<void()>& work, std::string* why) {
    key.push_back(device_frees());
    if (!exec_ || key != key_) {
        reset();
        MHC_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeGlobal));
        std::string failed;
        try {
            work();
        } catch (const std::exception& e) {  // a refused call, checked: the capture must still end
            failed = e.what();
        }
        cudaGraph_t graph = nullptr;
        const cudaError_t end = cudaStreamEndCapture(stream(), &graph);
        cudaError_t made = end;
        if (end == cudaSuccess && failed.empty()) made = cudaGraphInstantiate(&exec_, graph, 0);
        if (graph && cudaGraphDestroy(graph) != cudaSuccess) made = cudaErrorInvalidValue;
        if (!failed.empty() || made != cudaSuccess) {
            (void)cudaGetLastError();  // the refusal's error is answered here, not by the next check
            if (failed.empty()) failed = std::string("capture: ") + cudaGetErrorString(made);
            if (exec_ && cudaGraphExecDestroy(exec_) != cudaSuccess) (void)cudaGetLastError();
            exec_ = nullptr;
            *why = failed;
            return false;
        }
        key_ = std::move(key);
    }
    MHC_CUDA_CHECK(cudaGraphLaunch(exec_, stream()));
    return true;
}

}  // namespace mhc::cuda
