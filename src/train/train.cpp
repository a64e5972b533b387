// The training loop: data, model, AdamW with schedule and clipping, gradient accumulation,
// evaluation, metrics, checkpoints, and exact resumption.
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <set>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "mhc/checkpoint.h"
#include "mhc/diag.h"
#include "mhc/train.h"
#include "sys/process.h"
#include "train/data_parallel.h"
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

// SIGINT / SIGTERM: the first asks the loop to stop after the current step (with a checkpoint);
// a second one exits at once. Writes are atomic, so the last complete checkpoint stays intact.
volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_rank = 0;  // under mpirun every rank gets the signal; rank 0 speaks

extern "C" void on_stop_signal(int sig) {
    if (g_stop) _exit(128 + sig);
    g_stop = sig;
    const char msg[] = "\nmhc train: stopping after this step and writing a checkpoint (signal again to stop now)\n";
    if (g_rank == 0) (void)!write(2, msg, sizeof msg - 1);
}

struct StopSignals {
    struct sigaction old_int {}, old_term {};
    StopSignals() {
        g_stop = 0;
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    ~StopSignals() {
        sigaction(SIGINT, &old_int, nullptr);
        sigaction(SIGTERM, &old_term, nullptr);
    }
};

// Test hook (tests/cli): MHC_TEST_NONFINITE_STEPS="3,4" makes those steps' loss and gradients NaN.
std::set<long> forced_nonfinite_steps() {
    std::set<long> steps;
    const char* env = std::getenv("MHC_TEST_NONFINITE_STEPS");
    std::stringstream ss(env ? env : "");
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) steps.insert(std::stol(item));
    return steps;
}

std::string fmt_eta(double s) {
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%dm%02ds", (int)(s / 60), (int)s % 60);
    return buf;
}

}  // namespace

StepStats train_step(GPT<float>& m, AdamW<float>& adam, Batcher& batches, const TrainConfig& cfg, long step,
                     int32_t* in, int32_t* tg, bool force_nonfinite) {
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    StepStats st;
    st.lr = lr_at(cfg, step);
    gpt_zero_grad(m);
    for (int micro = 0; micro < accum; micro++) {
        batches.next(in, tg);
        st.loss += gpt_forward(m, in, tg, B, T) / accum;
        gpt_backward(m, 1.0 / accum);
    }
    if (force_nonfinite) st.loss = NAN, m.grad[0] = NAN;
    const auto t1 = std::chrono::steady_clock::now();
    st.grad_norm = grad_norm(m.grad.data(), (long)m.grad.size());
    st.finite = std::isfinite(st.loss) && std::isfinite(st.grad_norm);
    if (st.finite) {
        clip_grad(m.grad.data(), (long)m.grad.size(), st.grad_norm, cfg.grad_clip);
        adamw_step(adam, m.param.data(), m.grad.data(), m.params, st.lr, cfg.beta1, cfg.beta2, cfg.weight_decay);
    }
    st.optimizer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    return st;
}

TrainResult train_run(TrainConfig cfg, const TrainOptions& opt) {
    config_finalize(cfg);
    if (opt.out_dir.empty()) throw std::invalid_argument("no output directory (--out)");
    const bool has_run = !run_dir::latest_checkpoint(opt.out_dir).empty();
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
    Comm& comm = comm_world();  // this process alone, or one rank under mpirun (train/comm.h)
    const bool root = comm.rank == 0;  // rank 0 alone writes the run directory and speaks
    dp_check_run(comm, cfg, opt, train, val);
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    Batcher tb(train, B, T, order_from_string(cfg.data_order), cfg.seed);
    Batcher vb(val, B, T, Order::random, cfg.seed ^ 0x5A5A5A5Aull);

    GPT<float> m;
    AdamW<float> adam;
    run_dir::ResumeState rs;
    if (opt.resume) {
        run_dir::load_checkpoint(opt.out_dir, m, adam, rs);
        if (model_config_to_json(m.cfg) != model_config_to_json(cfg.model))
            throw std::runtime_error(opt.out_dir + ": the checkpoint's model (" + model_config_to_json(m.cfg).dump() +
                                     ") differs from the config's (" + model_config_to_json(cfg.model).dump() + ")");
        tb.restore(rs.train);
        vb.restore(rs.val);
        if (root) run_dir::truncate_metrics(opt.out_dir, rs.step);
    } else {
        if (root) fs::create_directories(opt.out_dir);
        gpt_build(m, cfg.model);
        gpt_init(m, cfg.seed);
        if (root) run_dir::start_metrics(opt.out_dir);
    }
    if (root) run_dir::remove_stale_temporaries(opt.out_dir);
    if (root) run_dir::write_config(opt.out_dir, cfg);
    const std::string cfg_json = config_to_json(cfg).dump();
    std::optional<run_dir::MetricsLog> log;
    if (root) log.emplace(opt.out_dir);
    DataParallel dp = dp_start(comm, m, adam);  // one rank: `adam` itself; several: its shards
    g_rank = comm.rank;

    const StopSignals signals;
    const std::set<long> forced_nan = forced_nonfinite_steps();
    int nonfinite_in_a_row = 0;
    auto save = [&](long done) {
        rs.step = done;
        rs.train = tb.state();
        rs.val = vb.state();
        AdamW<float> gathered;
        const AdamW<float>& whole = dp_whole_optimizer(dp, gathered);  // sharded: gathered to rank 0
        if (!root) return std::string();
        const std::string path = run_dir::save_checkpoint(opt.out_dir, m, whole, rs, cfg_json);
        run_dir::prune_checkpoints(opt.out_dir, cfg.keep_checkpoints);
        return path;
    };
    std::vector<int32_t> in((size_t)B * T), tg(in.size());
    const long tokens_per_step = (long)B * T * accum;
    std::vector<double> step_times;
    TrainResult res;
    res.final_loss = res.final_val_loss = NAN;  // stay NaN when a resumed run has no step left
    if (!opt.quiet)
        std::fprintf(stderr, "mhc train: %s, n=%d, %d layers x %d wide, %ld parameters, %ld tokens/step, "
                     "steps %ld..%d\n", variant_key(cfg.model.hyper_conn_type), m.n, m.L, m.C,
                     (long)m.param.size(), tokens_per_step, rs.step, cfg.max_iters);
    if (!opt.quiet && comm.size > 1) std::fprintf(stderr, "%s\n", dp_describe(dp, cfg).c_str());
    for (long step = rs.step; step < cfg.max_iters; step++) {
        const auto t0 = std::chrono::steady_clock::now();
        const long done = step + 1;
        const StepStats st = dp_train_step(dp, m, tb, cfg, step, in.data(), tg.data(), forced_nan.count(done) > 0);
        const double loss = st.loss, norm = st.grad_norm, lr = st.lr;
        const bool finite = st.finite;
        if (finite) {
            nonfinite_in_a_row = 0;
            res.final_loss = loss;
        } else {  // the update was skipped: weights and optimizer state stay as after the last good step
            res.skipped_steps++;
            nonfinite_in_a_row++;
            if (root) std::fprintf(stderr, "%sstep %ld: non-finite %s, update skipped (%d in a row, limit %d)\n",
                         opt.progress && !opt.quiet ? "\n" : "", done, std::isfinite(loss) ? "gradient norm" : "loss",
                         nonfinite_in_a_row, cfg.max_nonfinite_steps);
        }
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        step_times.push_back(dt);

        nlohmann::json rec = {{"step", done}, {"tokens", done * tokens_per_step}, {"loss", loss}, {"lr", lr},
                              {"grad_norm", norm}, {"tokens_per_s", tokens_per_step / dt}};
        if (!finite) rec["skipped"] = true;
        const bool last = done == cfg.max_iters;
        const bool eval_now = done % cfg.eval_interval == 0 || last;
        // SPEC §6 diagnostics of the last micro-batch's forward: read before the evaluation's
        // forwards overwrite the coefficient caches. Read-only, so resumption stays exact.
        const bool diag_now = cfg.diag_interval > 0 && (done % cfg.diag_interval == 0 || last);
        if (diag_now) rec["diag"] = gpt_diagnostics(m);
        if (eval_now) rec["val_loss"] = res.final_val_loss = dp_evaluate(dp, m, vb, cfg.eval_iters);
        rec["peak_rss_mb"] = sys::peak_rss_mb();
        if (root && (done % cfg.log_interval == 0 || eval_now || diag_now || done == 1 || !finite)) log->append(rec);
        if (!opt.quiet && finite) {
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
        const bool give_up = nonfinite_in_a_row >= cfg.max_nonfinite_steps;
        const bool stop = comm_any(comm, g_stop != 0);  // every rank stops at the same step
        if (done % cfg.checkpoint_interval == 0 || last || stop || give_up) res.checkpoint = save(done);
        if (give_up)
            throw std::runtime_error(std::to_string(nonfinite_in_a_row) + " steps in a row (up to step " +
                                     std::to_string(done) + ") had a non-finite loss or gradient; the last good "
                                     "state is saved in " + res.checkpoint + " (lower learning_rate or grad_clip, "
                                     "then --resume)");
        if (stop && !last) {
            res.interrupted = true;
            if (root) std::fprintf(stderr, "mhc train: interrupted at step %ld; checkpoint %s; continue with --resume\n",
                         done, res.checkpoint.c_str());
            break;
        }
    }
    res.steps = rs.step;  // the last checkpoint's step (the final one, or where a signal stopped us)
    if (!step_times.empty()) {
        std::nth_element(step_times.begin(), step_times.begin() + step_times.size() / 2, step_times.end());
        res.tokens_per_s = tokens_per_step / step_times[step_times.size() / 2];
    }
    if (res.checkpoint.empty()) res.checkpoint = run_dir::latest_checkpoint(opt.out_dir);
    res.world_size = comm.size;
    res.optimizer_bytes = dp_optimizer_bytes(dp);
    return res;
}

}  // namespace mhc
