// mhc train
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "cli/cli.h"
#include "mhc/train.h"
#include "train/comm.h"
#include "train/run_dir.h"

namespace mhc::cli {

Runner add_train(CLI::App& app) {
    struct Opts {
        std::string config, format = "auto";
        std::vector<std::string> sets;
        TrainOptions t;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("--config", o->config, "TOML config (nanoGPT key names); default: built-in defaults, "
                   "or the run's own config.toml with --resume")->check(CLI::ExistingFile);
    app.add_option("--set", o->sets, "Override one config key: --set key=value (repeatable)");
    app.add_option("--data", o->t.data, "Training data: .txt (bytes), nanoGPT uint16 .bin, or llm.c shard")
        ->required();
    app.add_option("--val-data", o->t.val_data, "Validation data (default: the last 10% of --data)");
    app.add_option("--format", o->format, "Data format: auto, text, u16, llmc")
        ->check(CLI::IsMember({"auto", "text", "u16", "llmc"}));
    app.add_option("--out", o->t.out_dir, "Run directory (config, metrics.jsonl, checkpoints)")->required();
    app.add_flag("--resume", o->t.resume, "Continue the run in --out from its latest checkpoint");
    app.add_flag("--quiet", o->t.quiet, "No per-step output");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    // Under mpirun every rank runs this; comm_main makes one line of an error that several ranks hit.
    return [o] { return comm_main([o](Comm& comm) {
        TrainConfig cfg;
        const std::string own = run_dir::config_path(o->t.out_dir);
        if (!o->config.empty()) cfg = config_from_toml_file(o->config);
        else if (o->t.resume && std::filesystem::exists(own)) cfg = config_from_toml_file(own);
        for (const auto& s : o->sets) config_apply_override(cfg, s);
        TrainOptions t = o->t;
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
