// The memory check before a run (see fits.h).
#include "train/fits.h"

#include <cstdio>
#include <stdexcept>

#include "mhc/gpt.h"
#include "sys/process.h"
#include "train/engine.h"

namespace mhc {

void require_memory_for(const TrainConfig& cfg) {
    const int B = cfg.batch_size, T = cfg.model.block_size;
    const GptMemory g = gpt_memory_estimate(cfg.model, B, T, cfg.device != "cpu", cfg.recompute, cfg.dtype == "bf16",
                                            engine_conn_scratch(cfg.device, cfg.model, (long)B * T));
    // On a GPU what counts is its free memory (the host keeps only the weights and the AdamW state).
    std::string what = "free memory on the " + cfg.device + " device";
    double limit = -1;
    if (cfg.device == "cpu") {
        limit = sys::memory_limit_bytes(what);
    } else {
        const DeviceRoom r = engine_room(cfg.device, cfg.model, cfg.dtype == "bf16");
        limit = r.free;
        std::string set_aside;
        if (r.stack > 0) set_aside = sys::fmt_bytes(r.stack) + " reserved for the kernels' stack frames";
        if (r.blas > 0) set_aside += (set_aside.empty() ? "" : " and ") + sys::fmt_bytes(r.blas) + " for cuBLAS's workspaces";
        if (!set_aside.empty()) what += " (after " + set_aside + ")";
    }
    if (limit < 0 || g.bytes() <= limit) return;
    char params[32];
    std::snprintf(params, sizeof params, "%.3g", g.params);
    throw std::runtime_error("the model needs about " + sys::fmt_bytes(g.bytes()) + " to train (" + params +
                             " parameters: weights, gradients and AdamW moments " + sys::fmt_bytes(16 * g.params) +
                             "; activations of a batch of " + std::to_string(B) + " x " + std::to_string(T) + " " +
                             sys::fmt_bytes(4 * g.activations) +
                             (g.bf16 > 0 ? "; bf16 copies " + sys::fmt_bytes(2 * g.bf16) : "") + "), more than the " +
                             sys::fmt_bytes(limit) + " of " + what +
                             ": make it smaller (n_layer, n_embd, vocab_size, block_size, batch_size)");
}

}  // namespace mhc
