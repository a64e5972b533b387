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
#include "mhc/safetensors.h"
#include "mhc/tokenizer.h"
#include "mhc/train.h"
#include "sys/process.h"
#include "sys/signals.h"
#include "train/data_parallel.h"
#include "train/engine.h"
#include "train/fits.h"
#include "train/guard.h"
#include "train/init_from.h"
#include "train/resume.h"
#include "train/run_dir.h"
#include "train/run_sample.h"
#include "train/train_data.h"
#include "train/val_set.h"

namespace mhc {

namespace fs = std::filesystem;

double evaluate(Engine& e, Batcher& b, int batches) {
    std::vector<int32_t> in((size_t)b.B() * b.T()), tg(in.size());
    double sum = 0;
    for (int i = 0; i < batches; i++) {
        b.next(in.data(), tg.data());
        sum += e.forward(in.data(), tg.data(), b.B(), b.T());
    }
    return batches ? sum / batches : NAN;
}

double evaluate(GPT<float>& m, Batcher& b, int batches) {
    AdamW<float> unused;
    return evaluate(*engine_make("cpu", m, unused), b, batches);
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

StepStats train_step(Engine& e, Batcher& batches, const TrainConfig& cfg, long step, int32_t* in, int32_t* tg,
                     bool force_nonfinite) {
    return e.step(batches, cfg, lr_at(cfg, step), in, tg, force_nonfinite);
}

bool step_sums_finite(const StepStats& st) { return std::isfinite(st.loss) && std::isfinite(st.grad_norm); }

void step_verdict(StepStats& st, bool update_finite) {
    st.nonfinite = !std::isfinite(st.loss)        ? "loss"
                   : !std::isfinite(st.grad_norm) ? "gradient norm"
                   : !update_finite              ? "update"
                                                 : "";
    st.finite = !*st.nonfinite;
}

StepStats Engine::step(Batcher& batches, const TrainConfig& cfg, double lr, int32_t* in, int32_t* tg,
                       bool force_nonfinite) {
    Engine& e = *this;
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    StepStats st;
    st.lr = lr;
    e.zero_grad();
    for (int micro = 0; micro < accum; micro++) {
        batches.next(in, tg);
        st.loss += e.forward(in, tg, B, T) / accum;
        e.backward(1.0 / accum);
    }
    if (force_nonfinite) st.loss = NAN, e.poison_grad();
    e.finish();  // the optimizer's time starts when the backward has ended, on any device
    const auto t1 = std::chrono::steady_clock::now();
    st.grad_norm = e.grad_norm();
    bool update_finite = false;
    if (step_sums_finite(st)) {
        e.clip_grad(st.grad_norm, cfg.grad_clip);
        // A finite gradient can still overflow the moments or the weights: then skip it too.
        update_finite = e.adamw_step_is_finite(st.lr, cfg.beta1, cfg.beta2, cfg.weight_decay);
        if (update_finite) e.adamw_step(st.lr, cfg.beta1, cfg.beta2, cfg.weight_decay);
    }
    step_verdict(st, update_finite);
    e.finish();
    st.optimizer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    return st;
}

StepStats train_step(GPT<float>& m, AdamW<float>& adam, Batcher& batches, const TrainConfig& cfg, long step,
                     int32_t* in, int32_t* tg, bool force_nonfinite) {
    return train_step(*engine_make("cpu", m, adam), batches, cfg, step, in, tg, force_nonfinite);
}

TrainResult train_run(TrainConfig cfg, const TrainOptions& opt) {
    const auto t_start = std::chrono::steady_clock::now();
    config_finalize(cfg);
    if (opt.out_dir.empty()) throw std::invalid_argument("no output directory (--out)");

    // Data. Without a validation file the training file is split (train_split, nanoGPT's 90%).
    // Everything that can refuse the run does so before the run directory is touched.
    engine_require(cfg.device);
    if (!opt.init_from.empty() && opt.resume)
        throw std::invalid_argument("--init-from starts a new run from a checkpoint's weights; --resume continues "
                                    "the run in --out: give one of them");
    // A model started from a checkpoint has its vocabulary: the data is checked against it.
    if (!opt.init_from.empty() && cfg.model.vocab_size == 0)
        cfg.model.vocab_size = run_dir::checkpoint_model(opt.init_from).vocab_size;
    const TrainData data = load_train_data(opt, cfg);
    if (cfg.model.vocab_size == 0) cfg.model.vocab_size = data.train.vocab_size;
    require_memory_for(cfg);
    Comm& comm = comm_world();  // this process alone, or one rank under mpirun (train/comm.h)
    const bool root = comm.rank == 0;  // rank 0 alone writes the run directory and speaks
    dp_check_run(comm, cfg, opt, data);
    const int B = cfg.batch_size, T = cfg.model.block_size, accum = cfg.gradient_accumulation_steps;
    Batcher tb(data.train, B, T, order_from_string(cfg.data_order), cfg.seed);
    const ValSet vs = val_set_make(data.val, cfg);
    GPT<float> m;
    std::optional<InitFrom> init;
    if (!opt.init_from.empty()) init = init_from_load(opt, cfg, data.train, m);

    // One writer per run directory, from here to the end of the process (the kernel releases the
    // lock however it ends), so the checks below see no other trainer's half-written state. Under
    // mpirun that is rank 0; the others never write there, and read it only to resume. A refusal
    // on rank 0 reaches the others in their next wait (comm.h): one line, every rank stops.
    std::optional<run_dir::Writer> writer;
    std::map<std::string, std::string> ckpt_meta;  // the run's tokenizer, the weights it started from
    std::optional<Tokenizer> tokenizer;  // the run's, when it has one (its samples' text)
    if (root) {
        writer.emplace(run_dir::take(opt.out_dir));
        const bool has_run = !run_dir::latest_checkpoint(opt.out_dir).empty();
        if (opt.resume && !has_run)
            throw std::runtime_error(opt.out_dir + ": no checkpoint to resume from");
        if (!opt.resume && has_run)
            throw std::runtime_error(opt.out_dir + " already holds a run: add --resume to continue it, or "
                                     "choose another --out");
        // The run's tokenizer (mhc/tokenizer.h): checked against the model, copied into the run,
        // named in every checkpoint.
        Tokenizer tok;
        ckpt_meta = run_tokenizer_attach(opt.out_dir, init ? init->tokenizer : opt.tokenizer, data.train.tokenizer,
                                              cfg.model.vocab_size, &tok);
        if (!ckpt_meta.empty()) tokenizer = std::move(tok);
        // Every checkpoint of the run names the weights it started from.
        if (init) ckpt_meta["init_from"] = nlohmann::json{{"file", init->file}, {"checksum", init->checksum}}.dump();
    }

    AdamW<float> adam;
    run_dir::ResumeState rs;
    if (opt.resume) {
        // Rank 0 chooses the checkpoint (an older intact one with --resume-from-intact, pointing
        // `latest` at it) and checks its model and data; then the others load that same file.
        if (root) resume_run(opt, cfg, data.record, m, adam, rs);
        if (root) {  // a run started from other weights goes on naming them
            const SafeTensors head = safetensors_read_header(run_dir::latest_checkpoint(opt.out_dir));
            if (auto it = head.metadata.find("init_from"); it != head.metadata.end()) ckpt_meta["init_from"] = it->second;
        }
        const long start = comm_max(comm, root ? rs.step : -1);
        if (!root)
            run_dir::load_checkpoint_file(opt.out_dir + "/" + run_dir::checkpoint_name(start) + ".safetensors", m,
                                          adam, rs);
        tb.restore(rs.train);
        if (root) run_dir::truncate_metrics(opt.out_dir, rs.step);
    } else {
        if (init) {
            if (root && !opt.quiet) std::fprintf(stderr, "mhc train: starting from the weights of %s\n", init->file.c_str());
        } else {
            gpt_build(m, cfg.model);
            gpt_init(m, cfg.seed);
        }
        if (root) run_dir::start_metrics(opt.out_dir);
        if (root) run_dir::write_data_record(opt.out_dir, data.record);
    }
    if (root) run_dir::remove_stale_temporaries(opt.out_dir);
    if (root) run_dir::write_config(opt.out_dir, cfg);
    const std::string cfg_json = config_to_json(cfg).dump();
    std::optional<run_dir::MetricsLog> log;
    if (root) log.emplace(opt.out_dir);
    // The model and its optimizer state on the run's device (several ranks: the CPU); m and adam
    // hold them again at each checkpoint.
    m.recompute = cfg.recompute;
    const std::unique_ptr<Engine> engine = engine_make(cfg.device, m, adam, engine_options(cfg));
    DataParallel dp = dp_start(comm, m, adam, *engine);  // one rank: `adam` itself; several: its shards
    g_rank = comm.rank;

    g_stop = 0;
    const sys::ScopedSignals signals({SIGINT, SIGTERM}, on_stop_signal);
    const std::set<long> forced_nan = forced_nonfinite_steps();
    int nonfinite_in_a_row = 0;
    // Wall-clock seconds since the run started, over all its resumes (metrics' time_s).
    const double time_before = rs.time_s;
    auto run_time = [&] {
        return time_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    };
    // Every rank calls it at the same steps; they reach the same verdict and the same rs.
    auto save = [&](long done) -> std::string {
        const std::string unsound = dp_unsound_state(dp, m, tb, cfg);
        if (!unsound.empty()) {  // the NaN guard: never a checkpoint that cannot be evaluated or resumed
            if (!root) return "";
            std::fprintf(stderr, "%sstep %ld: no checkpoint written: %s\n", opt.progress && !opt.quiet ? "\n" : "",
                         done, unsound.c_str());
            return run_dir::latest_checkpoint(opt.out_dir);
        }
        rs.step = done;
        rs.train = tb.state();
        rs.time_s = run_time();
        AdamW<float> gathered;
        const AdamW<float>& whole = dp_whole_optimizer(dp, gathered);  // sharded: gathered to rank 0
        std::string path;
        if (root) {
            path = run_dir::save_checkpoint(opt.out_dir, m, whole, rs, cfg_json, ckpt_meta);
            run_dir::prune_checkpoints(opt.out_dir, cfg.keep_checkpoints);
        }
        // No rank goes on (or stops on an error of its own) before the checkpoint is on disk; a
        // failed write on rank 0 stops the others here.
        comm.barrier();
        return path;
    };
    std::vector<int32_t> in((size_t)B * T), tg(in.size());
    const long tokens_per_step = (long)B * T * accum;
    std::vector<double> step_times;
    TrainResult res;
    res.final_loss = res.final_val_loss = NAN;  // stay NaN when a resumed run has no step left
    if (!opt.quiet)
        std::fprintf(stderr, "mhc train: %s, n=%d, %d layers x %d wide, %ld parameters, %ld tokens/step, "
                     "steps %ld..%d%s\n%s\n", variant_key(cfg.model.hyper_conn_type), m.n, m.L, m.C,
                     (long)m.param.size(), tokens_per_step, rs.step, cfg.max_iters,
                     cfg.device == "cpu" ? "" : (", on " + cfg.device).c_str(), data.header.c_str());
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
            if (root)
                std::fprintf(stderr, "%sstep %ld: non-finite %s, update skipped (%d in a row, limit %d)\n",
                             opt.progress && !opt.quiet ? "\n" : "", done, st.nonfinite, nonfinite_in_a_row,
                             cfg.max_nonfinite_steps);
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
        if (diag_now) rec["diag"] = engine->diagnostics();  // this rank's last micro-batch
        if (eval_now) rec["val_loss"] = res.final_val_loss = dp_val_set_loss(dp, m, vs);
        // A sample reads the model only (its own cache and generator): resumption stays exact.
        const bool sample_now = root && cfg.sample_interval > 0 && (done % cfg.sample_interval == 0 || last);
        if (sample_now)
            rec["sample"] = run_sample(*engine, tokenizer ? &*tokenizer : nullptr, m.V, cfg.sample_tokens,
                                       cfg.seed + (uint64_t)done);
        rec["peak_rss_mb"] = sys::peak_rss_mb();
        rec["time_s"] = run_time();
        if (root && (done % cfg.log_interval == 0 || eval_now || diag_now || sample_now || done == 1 || !finite))
            log->append(rec);
        if (!opt.quiet && finite) {
            std::vector<double> recent(step_times.end() - std::min<size_t>(step_times.size(), 20), step_times.end());
            std::nth_element(recent.begin(), recent.begin() + recent.size() / 2, recent.end());
            const double med = recent[recent.size() / 2];
            char val[32] = "", line[256];
            if (eval_now) std::snprintf(val, sizeof val, "  val %.4f", res.final_val_loss);
            std::snprintf(line, sizeof line, "step %ld/%d  loss %.4f%s  lr %.2e  %.0f tok/s  ETA %s", done,
                          cfg.max_iters, loss, val, lr, tokens_per_step / med,
                          fmt_eta(med * (cfg.max_iters - done)).c_str());
            if (opt.progress) std::fprintf(stderr, "\r%-100s%s", line, eval_now || last || sample_now ? "\n" : "");
            else if (done % cfg.log_interval == 0 || eval_now || done == 1) std::fprintf(stderr, "%s\n", line);
        }
        if (!opt.quiet && sample_now) std::fprintf(stderr, "%s\n", run_sample_lines(done, rec["sample"]).c_str());
        const bool give_up = nonfinite_in_a_row >= cfg.max_nonfinite_steps;
        const bool stop = comm_any(comm, g_stop != 0);  // every rank stops at the same step
        if (done % cfg.checkpoint_interval == 0 || last || stop || give_up) res.checkpoint = save(done);
        if (give_up) throw std::runtime_error(diverged_message(opt.out_dir, nonfinite_in_a_row, done, rs.step, cfg));
        if (last && rs.step != done) throw std::runtime_error(unsaved_end_message(opt.out_dir, done, rs.step, cfg));
        if (stop && !last) {
            res.interrupted = true;
            if (root)
                std::fprintf(stderr, "mhc train: interrupted at step %ld; checkpoint %s; continue with --resume\n",
                             done, res.checkpoint.c_str());
            break;
        }
    }
    res.steps = rs.step;  // the last checkpoint's step (the final one, or where a signal stopped us)
    if (!step_times.empty()) {
        std::nth_element(step_times.begin(), step_times.begin() + step_times.size() / 2, step_times.end());
        res.tokens_per_s = tokens_per_step / step_times[step_times.size() / 2];
    }
    if (res.checkpoint.empty() && root) res.checkpoint = run_dir::latest_checkpoint(opt.out_dir);
    res.world_size = comm.size;
    res.optimizer_bytes = dp_optimizer_bytes(dp);
    return res;
}

}  // namespace mhc
