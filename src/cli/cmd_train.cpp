// mhc train
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "cli/cli.h"
#include "mhc/train.h"
#include "train/comm.h"
#include "train/run_dir.h"

namespace mhc::cli {

namespace {

// The config a --resume without --config continues with: the run's config.toml, or, when that is
// gone, the config its checkpoint was trained with (said, never the built-in defaults in silence;
// under mpirun by rank 0 alone).
TrainConfig resume_config(const std::string& dir, bool speak) {
    if (std::filesystem::exists(run_dir::config_path(dir))) return run_dir::read_config(dir);
    if (run_dir::latest_checkpoint(dir).empty()) return TrainConfig();  // train_run says there is nothing to resume
    TrainConfig cfg = run_dir::checkpoint_train_config(dir);
    if (speak)
        std::fprintf(stderr, "mhc train: %s is missing; continuing with the config stored in %s\n",
                     run_dir::config_path(dir).c_str(), run_dir::latest_checkpoint(dir).c_str());
    return cfg;
}

}  // namespace

Runner add_train(CLI::App& app) {
    struct Opts {
        std::string config, format = "auto", device;
        std::vector<std::string> sets;
        TrainOptions t;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("--config", o->config, "TOML config (nanoGPT key names); default: built-in defaults, "
                   "with --resume the run's own config.toml (or, if that is gone, its checkpoint's); with --init-from "
                   "the model keys it leaves out are the checkpoint's")
        ->check(CLI::ExistingFile);
    app.add_option("--set", o->sets, "Override one config key: --set key=value (repeatable)")->default_str("");
    app.add_option("--data", o->t.data, "Training data: .txt (bytes), nanoGPT uint16 .bin, or llm.c shard; a quoted "
                   "pattern ('dir/train_*.bin') reads its files in name order as one stream")
        ->required();
    app.add_option("--val-data", o->t.val_data, "Validation data, a file or a quoted pattern (default: the part of "
                   "--data after train_split, its last 10% by default)");
    add_format_option(app, o->format);
    add_device_option(app, o->device, true);
    app.add_option("--tokenizer", o->t.tokenizer, "The run's tokenizer (SentencePiece .model, tokenizer.json, llm.c's "
                   "gpt2_tokenizer.bin, or bytes); default: the one in the data's meta.json (bytes for text)");
    app.add_option("--out", o->t.out_dir, "Run directory (config, metrics.jsonl, checkpoints)")->required();
    CLI::Option* resume = app.add_flag("--resume", o->t.resume, "Continue the run in --out from its latest checkpoint");
    CLI::Option* intact = app.add_flag("--resume-from-intact", o->t.resume_from_intact, "--resume, and when the "
                                       "latest checkpoint is corrupt, from the newest intact one (said on stderr)");
    app.add_option("--init-from", o->t.init_from, "Start a new run in --out from the weights of this checkpoint (or run "
                   "directory's latest): fine-tuning, on other data or with another schedule; the optimizer, step and "
                   "data positions start afresh, the model keys are the checkpoint's")
        ->excludes(resume)
        ->excludes(intact);
    app.add_flag("--quiet", o->t.quiet, "No per-step output");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    // Under mpirun every rank runs this; comm_main makes one line of an error that several ranks hit.
    return [o] { return comm_main([o](Comm& comm) {
        TrainConfig cfg;
        TrainOptions t = o->t;
        t.resume = t.resume || t.resume_from_intact;
        // From a checkpoint's weights: its model keys, unless the config or a --set says otherwise
        // (then refused, naming the key).
        if (!t.init_from.empty()) cfg.model = run_dir::checkpoint_model(t.init_from);
        if (!o->config.empty()) cfg = config_from_toml_file(o->config, cfg);
        else if (t.resume) cfg = resume_config(t.out_dir, comm.rank == 0);
        for (const auto& s : o->sets) config_apply_override(cfg, s);
        if (!o->device.empty()) cfg.device = o->device;  // e.g. a run resumed on the other device
        t.format = data_format_from_string(o->format);
        t.progress = isatty(fileno(stderr));
        t.quiet = t.quiet || comm.rank != 0;  // rank 0 alone reports progress
        const TrainResult r = train_run(cfg, t);
        if (r.interrupted)
            ;  // the trainer said where it stopped and how to go on
        else if (!t.quiet && std::isnan(r.final_loss))
            std::fprintf(stderr, "the run in %s is already complete at step %ld (raise max_iters to go on); "
                         "checkpoint %s\n", t.out_dir.c_str(), r.steps, r.checkpoint.c_str());
        else if (!t.quiet)
            std::fprintf(stderr, "done: %ld steps, loss %.4f, val loss %.4f, %.0f tokens/s; checkpoint %s\n",
                         r.steps, r.final_loss, r.final_val_loss, r.tokens_per_s, r.checkpoint.c_str());
        if (o->json && comm.rank == 0)
            print_json({{"steps", r.steps}, {"loss", r.final_loss}, {"val_loss", r.final_val_loss},
                        {"tokens_per_s", r.tokens_per_s}, {"checkpoint", r.checkpoint}, {"out", t.out_dir},
                        {"skipped_steps", r.skipped_steps}, {"interrupted", r.interrupted},
                        {"world_size", r.world_size}, {"optimizer_bytes_per_rank", r.optimizer_bytes}});
        return 0;
    }); };
}

}  // namespace mhc::cli
