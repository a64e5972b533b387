// The NaN guard's checks around checkpoints and its messages (see guard.h).
#include "train/guard.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include "train/run_dir.h"

namespace mhc {

NextStep next_step_check(Engine& e, const Batcher& tb, const TrainConfig& cfg) {
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    std::vector<int32_t> in((size_t)B * T), tg(in.size());
    Batcher b = tb;
    NextStep ns;
    e.zero_grad();
    for (int micro = 0; micro < accum; micro++) {
        b.next(in.data(), tg.data());
        ns.loss += e.forward(in.data(), tg.data(), B, T) / accum;
        e.backward(1.0 / accum);
    }
    ns.grad_norm = e.grad_norm();
    return ns;
}

std::string nonfinite_state(const GPT<float>& m, const std::vector<ParamTensor>& moment_tensors,
                            const AdamW<float>& adam) {
    std::string name = nonfinite_tensor(m.params, m.param);
    if (!name.empty()) return "weight '" + name + "' holds NaN or inf";
    for (const auto& [buf, what] : {std::pair{&adam.m, "AdamW moment m of"}, std::pair{&adam.v, "AdamW moment v of"}}) {
        name = nonfinite_tensor(moment_tensors, *buf);
        if (!name.empty()) return std::string(what) + " '" + name + "' holds NaN or inf";
    }
    return "";
}

std::string next_step_verdict(const NextStep& ns) {
    if (std::isfinite(ns.loss) && std::isfinite(ns.grad_norm)) return "";
    char buf[128];
    std::snprintf(buf, sizeof buf, "its weights give a non-finite %s (%g) on the next batch",
                  std::isfinite(ns.loss) ? "gradient norm" : "loss", std::isfinite(ns.loss) ? ns.grad_norm : ns.loss);
    return buf;
}

std::string unsound_state(Engine& e, GPT<float>& m, AdamW<float>& adam, const Batcher& tb, const TrainConfig& cfg) {
    e.to_host();
    const std::string bad = nonfinite_state(m, m.params, adam);
    return bad.empty() ? next_step_verdict(next_step_check(e, tb, cfg)) : bad;
}

namespace {

// What to do next, from the newest checkpoint (saved_step) or from scratch.
std::string advice(const std::string& dir, long saved_step, const TrainConfig& cfg) {
    char lr[32];
    std::snprintf(lr, sizeof lr, "%g", cfg.learning_rate / 10);
    if (saved_step > 0)
        return "the last good state is " + dir + "/" + run_dir::checkpoint_name(saved_step) + ".safetensors (step " +
               std::to_string(saved_step) + "): continue from it with --resume and a lower learning rate (e.g. "
               "--set learning_rate=" + lr + ") or grad_clip";
    return "no good state was saved before it (the first checkpoint was due at step " +
           std::to_string(cfg.checkpoint_interval) + "): start again with a lower learning rate (e.g. "
           "--set learning_rate=" + std::string(lr) + ") or grad_clip";
}

}  // namespace

std::string diverged_message(const std::string& dir, int in_a_row, long done, long saved_step, const TrainConfig& cfg) {
    const std::string head = std::to_string(in_a_row) + " steps in a row (up to step " + std::to_string(done) +
                             ") had a non-finite loss or gradient";
    if (saved_step == done)  // the weights before them still give a finite loss: saved now
        return head + "; " + advice(dir, saved_step, cfg);
    return head + ", and the weights before them give a non-finite loss or gradient too, so they were not saved; " +
           advice(dir, saved_step, cfg);
}

std::string unsaved_end_message(const std::string& dir, long done, long saved_step, const TrainConfig& cfg) {
    return "the final state (step " + std::to_string(done) + ") was not saved: its weights give a non-finite loss or "
           "gradient; " +
           advice(dir, saved_step, cfg);
}

}  // namespace mhc
