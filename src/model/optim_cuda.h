// AdamW with SPEC §5's decay rule and clipping by global gradient norm on the GPU: the CPU's
// mhc/optim.h on device buffers, with its order of operations (the norm in double over fixed blocks
// of 16384 values, the blocks added in order; the update in fp32).
#pragma once
#include <vector>

#include "cuda/cuda.h"
#include "mhc/conn.h"
#include "mhc/optim.h"

namespace mhc::cuda {

// Global L2 norm of a device gradient buffer of `count` values (waits for the result).
double grad_norm(const float* g, long count);

// Scales the gradients so their global norm is at most max_norm (clip_grad's rule; 0 disables).
void clip_grad(float* g, long count, double norm, double max_norm);

// AdamW state on the device: the moments (zero until the first step), the step count, the weights'
// bf16 copies that the update writes beside them (dtype bf16), and the decay mask and the copies
// as runs of consecutive values with the same ParamTensor::decay and the same copy (or none).
struct AdamWCuda {
    DeviceBuffer<float> m, v;
    long step = 0;
    struct Copy {  // the weights [offset, offset + count) rounded to bf16 at dst[0, count)
        long offset, count;
        bf16* dst;
    };
    std::vector<Copy> copies;  // adamw_copy_bf16
    bf16* copy_base = nullptr;  // the lowest dst
    DeviceBuffer<long> seg_end;             // end offset of each run
    DeviceBuffer<unsigned char> seg_decay;  // whether its values decay
    DeviceBuffer<long> seg_copy;            // value i's copy at copy_base[i + seg_copy], or LONG_MIN for none
    // The maxima of |weight|, |m| and v (NaN as infinite) that the last update left, and 1 if they
    // still hold ({max |p|, max |m|, max v, valid}; written on the device by every update). With
    // them and the gradients' norm the engine's check (adamw_nonfinite_into) proves most updates
    // finite without reading the weights, moments and gradients. Whatever writes the weights or
    // the moments otherwise must call adamw_forget_bound (adamw_upload does; the engine writes the
    // weights only through the updates).
    DeviceBuffer<double> bound;
    // The update's numbers for its step (adamw_prepare: decay, the moments' rates, the step size with
    // its bias correction, ...), read by the kernels from the device, so that a step captured once
    // in a CUDA graph (train/engine_cuda.cpp) updates with each later step's learning rate and count.
    struct Scalars {
        float decay, b1, b2, step_size, bc2_sqrt, eps;
        double max_norm;  // clipping's (0: none)
    };
    DeviceBuffer<Scalars> scalars;
    long count = 0;  // the values adamw_prepare's tensors cover
};

// The bound no longer holds (queued on the stream).
void adamw_forget_bound(AdamWCuda& st);

// From now on every update also writes these bf16 copies of the weights it changes (dtype bf16's
// linear layers, gpt_cuda.h's lin16), in the same kernel: nothing else makes them after a step.
// They must not overlap.
void adamw_copy_bf16(AdamWCuda& st, std::vector<AdamWCuda::Copy> copies);

// One AdamW step over every tensor, one fused kernel (adamw_step's arithmetic, per element).
void adamw_step(AdamWCuda& st, float* param, const float* grad, const std::vector<ParamTensor>& tensors, double lr,
                double beta1, double beta2, double weight_decay);

// Whether adamw_step with these arguments would leave every weight and both moments finite (the
// CPU's adamw_step_is_finite): the same expressions, nothing changed but the decay table (waits
// for the result).
bool adamw_step_is_finite(AdamWCuda& st, const float* param, const float* grad, const std::vector<ParamTensor>& tensors,
                          double lr, double beta1, double beta2, double weight_decay);

// A training step's decisions on the device, read once at its end (train/engine_cuda.cpp), so that
// nothing inside the step waits for the GPU: the step's mean loss, the gradients' Σ g², and how
// many values AdamW would make non-finite. The update is applied only when all three are clean,
// which is train_step's rule (the loss and the norm finite, then the update's check).
struct StepCheck {
    double loss = 0, sumsq = 0, bad = 0;
};
// grad_norm's Σ g² (the same blocks, the same order) into chk->sumsq.
void grad_sumsq_into(const float* g, long count, StepCheck* chk);
// The next two read the gradients as clip_grad with the norm sqrt(chk->sumsq) and max_norm would
// leave them (the same expression per value, so the same bits; max_norm 0: unclipped), without
// writing them: one pass over the gradients fewer than clipping them first.
// adamw_prepare sets them up for the step st.step + 1 (the numbers uploaded, queued, no wait); the
// two after it launch kernels only, which read those numbers on the device (a first step's zero
// moments are made by adamw_step_checked, when there are none).
void adamw_prepare(AdamWCuda& st, const std::vector<ParamTensor>& tensors, double lr, double beta1, double beta2,
                   double weight_decay, double max_norm);
// adamw_step_is_finite's count of non-finite values into chk->bad: zero without reading a value
// when st.bound proves the step finite.
void adamw_nonfinite_into(AdamWCuda& st, const float* param, const float* grad, StepCheck* chk);
// adamw_step, applied only where chk is clean (then the bf16 copies too); st.step is not advanced
// (the caller does, after reading chk).
void adamw_step_checked(AdamWCuda& st, float* param, const float* grad, const StepCheck* chk);

// The state to and from the CPU's AdamW (checkpoints): the moments and the step count.
void adamw_download(const AdamWCuda& st, AdamW<float>& out);
void adamw_upload(AdamWCuda& st, const AdamW<float>& in);

}  // namespace mhc::cuda
