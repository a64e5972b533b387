// The device check's test kernel (cuda_available): proves that this build's machine code loads and
// runs on the device, not just that a device is there.
#include "cuda/device.cuh"

namespace mhc::cuda {

namespace {
__global__ void k_probe(int* out) { *out = 42; }
}  // namespace

cudaError_t detail::probe_kernel() {
    int* d = nullptr;
    cudaError_t e = cudaMalloc(&d, sizeof(int));
    if (e != cudaSuccess) return e;
#if MHC_CUDA_EMU
    ::mhc::emu::launch("k_probe", 1, 1, stream(), k_probe, d);
#else
    k_probe<<<1, 1, 0, stream()>>>(d);
#endif
    e = cudaGetLastError();
    int h = 0;
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
    (void)cudaFree(d);
    if (e == cudaSuccess && h != 42) e = cudaErrorInvalidValue;
    return e;
}

}  // namespace mhc::cuda
