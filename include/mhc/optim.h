// mhc/optim.h — AdamW with SPEC §5's decay rule, nanoGPT's learning-rate schedule, and clipping
// by global gradient norm.
#pragma once
#include <vector>

#include "mhc/config.h"
#include "mhc/conn.h"

namespace mhc {

// nanoGPT's get_lr: linear warm-up (it+1)/(warmup+1), cosine decay to min_lr at lr_decay_iters,
// then min_lr. `it` counts optimizer steps from 0.
double lr_at(const TrainConfig& cfg, long it);

// Global L2 norm of a gradient buffer (accumulated in double): the square root of the sum, in block
// order, of the sums of squares of its blocks of kNormBlock values.
template <typename T> double grad_norm(const T* g, long count);
// Those per-block sums of squares, for blocks b0 .. b1-1 of a buffer of `count` values, into part[0..):
// a sharded optimizer adds every rank's blocks in the same order and gets grad_norm bit for bit.
constexpr long kNormBlock = 1 << 14;
template <typename T> void grad_sumsq_blocks(const T* g, long count, long b0, long b1, double* part);

// Scales the gradients so their global norm is at most max_norm (PyTorch's clip_grad_norm_:
// coefficient max_norm / (norm + 1e-6), applied when below 1). max_norm 0 disables clipping.
template <typename T> void clip_grad(T* g, long count, double norm, double max_norm);

// AdamW state: first and second moments, and the number of steps taken.
template <typename T> struct AdamW {
    std::vector<T> m, v;
    long step = 0;
};

// One AdamW step (PyTorch's order of operations): for every tensor, decoupled weight decay if its
// ParamTensor says so (SPEC §5), then the bias-corrected Adam update with eps 1e-8.
template <typename T>
void adamw_step(AdamW<T>& st, T* param, const T* grad, const std::vector<ParamTensor>& tensors,
                double lr, double beta1, double beta2, double weight_decay);

// Whether adamw_step with these arguments would leave every weight and both moments finite,
// computed with the same expressions and nothing stored: the training step applies an update only
// when it would (a huge but finite gradient can overflow v = g², or a huge learning rate the
// weights), so a non-finite step never touches the weights or the optimizer state.
template <typename T>
bool adamw_step_is_finite(const AdamW<T>& st, const T* param, const T* grad, const std::vector<ParamTensor>& tensors,
                          double lr, double beta1, double beta2, double weight_decay);

}  // namespace mhc
