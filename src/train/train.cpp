// The training loop: data, model, AdamW with schedule and clipping, gradient accumulation,
// evaluation, metrics, checkpoints, and exact resumption.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "mhc/checkpoint.h"
#include "mhc/train.h"
#include "train/run_dir.h"

namespace mhc {

namespace fs = std::filesystem;

double evaluate(GPT<float>& m, Batcher& b, int batches) {
    std::vector<int32_t> in((size_t)b.B() * b.T()), tg(in.size());
    double sum = 0;
    for (int i = 0; i < batches; i++) {
        b.next(in.data(), tg.data());
        sum += gpt_forward(m, in.data(), tg.data(), b.B(), b.T());
    }
    return batches ? sum / batches : NAN;
}

namespace {

// Keeps only the metrics of steps <= `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const std::string& path, long step) {
    std::ifstream f(path);
    if (!f) return;
    std::string line, kept;
    while (std::getline(f, line)) {
        try {
            if (nlohmann::json::parse(line).value("step", 0L) <= step) kept += line + "\n";
        } catch (const std::exception&) {
            break;  // a torn last line from a crash: drop it and everything after
        }
    }
    detail::write_file_atomic(path, kept);
}

std::string fmt_eta(double s) {
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%dm%02ds", (int)(s / 60), (int)s % 60);
    return buf;
}

}  // namespace

TrainResult train_run(TrainConfig cfg, const TrainOptions& opt) {
    config_finalize(cfg);
    if (opt.out_dir.empty()) throw std::invalid_argument("no output directory (--out)");
    const bool has_run = !run_latest_checkpoint(opt.out_dir).empty();
    if (opt.resume && !has_run)
        throw std::runtime_error(opt.out_dir + ": no checkpoint to resume from");
    if (!opt.resume && has_run)
        throw std::runtime_error(opt.out_dir + " already holds a run: add --resume to continue it, or "
                                 "choose another --out");

    // Data. Without a validation file the training file is split (train_split, nanoGPT's 90%).
    TokenData train = load_tokens(opt.data, opt.format, cfg.model.vocab_size), val;
    if (!opt.val_data.empty()) val = load_tokens(opt.val_data, opt.format, train.vocab_size);
    else std::tie(train, val) = split_tokens(train, cfg.train_split);
    if (cfg.model.vocab_size == 0) cfg.model.vocab_size = train.vocab_size;
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    Batcher tb(train, B, T, order_from_string(cfg.data_order), cfg.seed);
    Batcher vb(val, B, T, Order::random, cfg.seed ^ 0x5A5A5A5Aull);

    GPT<float> m;
    AdamW<float> adam;
    detail::ResumeState rs;
    const std::string metrics = opt.out_dir + "/metrics.jsonl";
    if (opt.resume) {
        detail::load_run_checkpoint(opt.out_dir, m, adam, rs);
        if (model_config_to_json(m.cfg) != model_config_to_json(cfg.model))
            throw std::runtime_error(opt.out_dir + ": the checkpoint's model (" + model_config_to_json(m.cfg).dump() +
                                     ") differs from the config's (" + model_config_to_json(cfg.model).dump() + ")");
        tb.restore(rs.train);
        vb.restore(rs.val);
        truncate_metrics(metrics, rs.step);
    } else {
        fs::create_directories(opt.out_dir);
        gpt_build(m, cfg.model);
        gpt_init(m, cfg.seed);
        detail::write_file_atomic(metrics, "");
    }
    detail::write_file_atomic(opt.out_dir + "/config.toml", config_to_toml(cfg));
    const std::string cfg_json = config_to_json(cfg).dump();
    std::ofstream log(metrics, std::ios::app);
    if (!log) throw std::runtime_error(metrics + ": cannot open for writing");

    std::vector<int32_t> in((size_t)B * T), tg(in.size());
    const long tokens_per_step = (long)B * T * accum;
    std::vector<double> step_times;
    TrainResult res;
    res.final_loss = res.final_val_loss = NAN;  // stay NaN when a resumed run has no step left
    if (!opt.quiet)
        std::fprintf(stderr, "mhc train: %s, n=%d, %d layers x %d wide, %ld parameters, %ld tokens/step, "
                     "steps %ld..%d\n", cfg.model.hyper_conn_type.c_str(), m.n, m.L, m.C,
                     (long)m.param.size(), tokens_per_step, rs.step, cfg.max_iters);
    for (long step = rs.step; step < cfg.max_iters; step++) {
        const auto t0 = std::chrono::steady_clock::now();
        const double lr = lr_at(cfg, step);
        gpt_zero_grad(m);
        double loss = 0;
        for (int micro = 0; micro < accum; micro++) {
            tb.next(in.data(), tg.data());
            loss += gpt_forward(m, in.data(), tg.data(), B, T) / accum;
            gpt_backward(m, 1.0 / accum);
        }
        const double norm = grad_norm(m.grad.data(), (long)m.grad.size());
        clip_grad(m.grad.data(), (long)m.grad.size(), norm, cfg.grad_clip);
        adamw_step(adam, m.param.data(), m.grad.data(), m.params, lr, cfg.beta1, cfg.beta2, cfg.weight_decay);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        step_times.push_back(dt);
        const long done = step + 1;
        res.final_loss = loss;

        nlohmann::json rec = {{"step", done}, {"tokens", done * tokens_per_step}, {"loss", loss}, {"lr", lr},
                              {"grad_norm", norm}, {"tokens_per_s", tokens_per_step / dt}};
        const bool last = done == cfg.max_iters;
        const bool eval_now = done % cfg.eval_interval == 0 || last;
        if (eval_now) rec["val_loss"] = res.final_val_loss = evaluate(m, vb, cfg.eval_iters);
        if (done % cfg.log_interval == 0 || eval_now || done == 1) {
            log << rec.dump() << "\n";
            log.flush();
        }
        if (!opt.quiet) {
            std::vector<double> recent(step_times.end() - std::min<size_t>(step_times.size(), 20), step_times.end());
            std::nth_element(recent.begin(), recent.begin() + recent.size() / 2, recent.end());
            const double med = recent[recent.size() / 2];
            char val[32] = "", line[256];
            if (eval_now) std::snprintf(val, sizeof val, "  val %.4f", res.final_val_loss);
            std::snprintf(line, sizeof line, "step %ld/%d  loss %.4f%s  lr %.2e  %.0f tok/s  ETA %s", done,
                          cfg.max_iters, loss, val, lr, tokens_per_step / med,
                          fmt_eta(med * (cfg.max_iters - done)).c_str());
            if (opt.progress) std::fprintf(stderr, "\r%-100s%s", line, eval_now || last ? "\n" : "");
            else if (done % cfg.log_interval == 0 || eval_now || done == 1) std::fprintf(stderr, "%s\n", line);
        }
        if (done % cfg.checkpoint_interval == 0 || last) {
            rs.step = done;
            rs.train = tb.state();
            rs.val = vb.state();
            res.checkpoint = detail::save_run_checkpoint(opt.out_dir, m, adam, rs, cfg_json);
        }
    }
    res.steps = std::max<long>(rs.step, cfg.max_iters);
    if (!step_times.empty()) {
        std::nth_element(step_times.begin(), step_times.begin() + step_times.size() / 2, step_times.end());
        res.tokens_per_s = tokens_per_step / step_times[step_times.size() / 2];
    }
    if (res.checkpoint.empty()) res.checkpoint = run_latest_checkpoint(opt.out_dir);
    return res;
}

}  // namespace mhc
