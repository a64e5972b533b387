// The memory check before a run (see fits.h).
#include "train/fits.h"

#include <cstdio>
#include <stdexcept>

#include "mhc/gpt.h"
#include "sys/process.h"
#include "train/engine.h"

namespace mhc {

namespace {

// What `device` has for the model: a process's memory limit on the CPU; a GPU's free memory once
// its fixed costs are met. *what names it for the message.
double room_for(const ModelConfig& model, const std::string& device, bool bf16, std::string* what) {
    *what = "free memory on the " + device + " device";
    if (device == "cpu") return sys::memory_limit_bytes(*what);
    const DeviceRoom r = engine_room(device, model, bf16);
    std::string set_aside;
    if (r.stack > 0) set_aside = sys::fmt_bytes(r.stack) + " reserved for the kernels' stack frames";
    if (r.blas > 0) set_aside += (set_aside.empty() ? "" : " and ") + sys::fmt_bytes(r.blas) + " for cuBLAS's workspaces";
    if (!set_aside.empty()) *what += " (after " + set_aside + ")";
    return r.free;
}

std::string fmt_count(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", x);
    return buf;
}

}  // namespace

void require_memory_for(const TrainConfig& cfg) {
    const int B = cfg.batch_size, T = cfg.model.block_size;
    const GptMemory g = gpt_memory_estimate(cfg.model, B, T, cfg.device != "cpu", cfg.recompute, cfg.dtype == "bf16",
                                            engine_conn_scratch(cfg.device, cfg.model, (long)B * T));
    std::string what;
    const double limit = room_for(cfg.model, cfg.device, cfg.dtype == "bf16", &what);
    if (limit < 0 || g.bytes() <= limit) return;
    throw std::runtime_error("the model needs about " + sys::fmt_bytes(g.bytes()) + " to train (" +
                             fmt_count(g.params) + " parameters: weights, gradients and AdamW moments " +
                             sys::fmt_bytes(16 * g.params) + "; activations of a batch of " + std::to_string(B) +
                             " x " + std::to_string(T) + " " + sys::fmt_bytes(4 * g.activations) +
                             (g.bf16 > 0 ? "; bf16 copies " + sys::fmt_bytes(2 * g.bf16) : "") + "), more than the " +
                             sys::fmt_bytes(limit) + " of " + what +
                             ": make it smaller (n_layer, n_embd, vocab_size, block_size, batch_size)");
}

void require_memory_to_run(const ModelConfig& model, const std::string& device, int B, int T, const char* use) {
    const GptMemory g = gpt_memory_estimate(model, B, T, device != "cpu", false, false,
                                            engine_conn_scratch(device, model, (long)B * T));
    const double bytes = g.run_bytes();
    std::string what;
    const double limit = room_for(model, device, false, &what);
    if (limit < 0 || bytes <= limit) return;
    throw std::runtime_error("a batch of " + std::to_string(B) + " x " + std::to_string(T) + " needs about " +
                             sys::fmt_bytes(bytes) + " to " + use + " (activations " +
                             sys::fmt_bytes(4 * g.activations) + "; " + fmt_count(g.params) +
                             " parameters: weights and gradients " + sys::fmt_bytes(8 * g.params) +
                             "), more than the " + sys::fmt_bytes(limit) + " of " + what +
                             ": a smaller --batch (or --seq) needs less");
}

}  // namespace mhc
