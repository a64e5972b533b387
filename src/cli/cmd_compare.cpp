// mhc compare: trains variants × seeds of one config one after another, each run a child
// `mhc train` of this same binary, reusing finished runs and continuing partial ones; then writes
// the report (src/report/: table, gnuplot plots, report.md, report.html).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cli/cli.h"
#include "mhc/config.h"
#include "report/report.h"
#include "sys/file.h"
#include "sys/lock.h"
#include "sys/process.h"
#include "sys/signals.h"
#include "train/engine.h"
#include "train/run_dir.h"
#include "train/train_data.h"

namespace mhc::cli {

namespace {

namespace fs = std::filesystem;
using report::RunData;

std::vector<uint64_t> parse_seeds(const std::string& s) {
    std::vector<uint64_t> out;
    for (const std::string& x : split_list(s)) {
        const bool digits = x.size() <= 19 && std::all_of(x.begin(), x.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!digits) throw std::invalid_argument("bad seed '" + x + "' in --seeds (expected integers, e.g. 1,2,3)");
        const uint64_t v = std::stoull(x);
        if (std::find(out.begin(), out.end(), v) != out.end())
            throw std::invalid_argument("seed " + x + " is listed twice in --seeds");
        out.push_back(v);
    }
    if (out.empty()) throw std::invalid_argument("--seeds is empty");
    return out;
}

// Signals: forwarded once per signal to the running child (its own process group, so a terminal's
// Ctrl-C reaches it only through us): the first makes `train` stop after the step with a checkpoint,
// a second makes it stop at once.
volatile sig_atomic_t g_signals = 0;
volatile sig_atomic_t g_child = 0;

// A closed terminal (SIGHUP) stops the run the same way, as SIGTERM: `train` checkpoints on that.
extern "C" void on_compare_signal(int sig) {
    g_signals = g_signals + 1;
    if (g_child > 0) kill((pid_t)g_child, sig == SIGHUP ? SIGTERM : sig);
}

enum class Plan { train, resume, reuse, retrain };

struct Run {
    std::string variant, name, dir;
    uint64_t seed = 0;
    TrainConfig cfg;  // resolved (finalized)
    long ckpt_step = -1;
    Plan plan = Plan::train;
    std::string status;  // trained, resumed, reused, failed
    std::string data_diff;  // retrain: how its data differs from the requested data
    bool data_unknown = false;  // a run from before data.json: taken as trained on the requested data
};

// The keys where a run's own config.toml differs from the requested config ("" if none).
// vocab_size 0 means "from the data", which the run directory has resolved. The device,
// recompute and cuda_graphs are no difference: they change where and how a run computes, not its
// results, and a run continues with whichever is asked for now. dtype is one: bf16 products change the arithmetic.
std::string config_difference(const TrainConfig& want, const TrainConfig& have) {
    nlohmann::json a = config_to_json(want), b = config_to_json(have);
    if (a.value("vocab_size", 0) == 0 && b.contains("vocab_size")) a["vocab_size"] = b["vocab_size"];
    for (const char* key : {"device", "recompute", "cuda_graphs"}) a.erase(key), b.erase(key);
    return config_json_difference(b, a, "in the run", "requested", 3);
}

std::string plan_line(const Run& r) {
    const int max_iters = r.cfg.max_iters;
    switch (r.plan) {
        case Plan::reuse: return "reused (complete at step " + std::to_string(r.ckpt_step) + ")";
        case Plan::retrain: return "training " + std::to_string(max_iters) + " steps again (its data differed: " +
                                   r.data_diff + ")";
        case Plan::resume:
            return "resuming at step " + std::to_string(r.ckpt_step) + " of " + std::to_string(max_iters);
        default: return "training " + std::to_string(max_iters) + " steps";
    }
}

// Copies a child's output to stderr with the run's name in front. On a terminal, the per-step
// lines share one live line; evaluations and messages stay.
struct Relay {
    std::string name;
    bool tty = false, live = false;
    nlohmann::json result;  // the child's --json line
    void operator()(const std::string& line) {
        if (!line.empty() && line[0] == '{') {
            try {
                nlohmann::json j = nlohmann::json::parse(line);
                if (j.is_object() && j.contains("interrupted")) {
                    result = j;
                    return;
                }
            } catch (const std::exception&) {
            }
        }
        const bool step_line = line.rfind("step ", 0) == 0 && line.find(" val ") == std::string::npos;
        if (tty) {
            std::fprintf(stderr, "\r\033[K[%s] %s%s", name.c_str(), line.c_str(), step_line ? "" : "\n");
            live = step_line;
        } else {
            std::fprintf(stderr, "[%s] %s\n", name.c_str(), line.c_str());
        }
        std::fflush(stderr);
    }
    void end() {
        if (live) std::fprintf(stderr, "\n");
        live = false;
    }
};

// Lines at the top of the report: what was compared, on what.
std::vector<std::string> report_header(const nlohmann::json& setup, const std::vector<RunData>& runs,
                                       bool report_only) {
    std::vector<std::string> h;
    if (setup.is_object()) {
        std::string c = "config: " + setup.value("config", std::string("?"));
        for (const auto& s : setup.value("sets", std::vector<std::string>{})) c += " --set " + s;
        h.push_back(c + "; each run adds --set hyper_conn_type=VARIANT --set seed=SEED");
        const std::string val = setup.value("val_data", std::string());
        h.push_back("data: " + setup.value("data", std::string("?")) +
                    (val.empty() ? " (validation: its last 10%, train_split)" : ", validation: " + val));
    }
    for (const RunData& r : runs) {  // the model and schedule, from the first run with streams and a config
        const VariantInfo* info = variant_find(r.variant);
        const bool single = info && info->fixed_n == 1;  // its hyper_conn_n is forced to 1: not the config's
        if (single && &r != &runs.back()) continue;
        try {
            TrainConfig c = run_dir::read_config(r.dir);
            const long tps = (long)c.batch_size * c.gradient_accumulation_steps * c.model.block_size;
            char line[300];
            std::snprintf(line, sizeof line, "model: %d layers × %d wide, %d heads, block %d, hyper_conn_n %d%s; "
                          "%d steps of %ld tokens, learning rate %g", c.model.n_layer, c.model.n_embd,
                          c.model.n_head, c.model.block_size, c.model.hyper_conn_n,
                          single ? " (none)" : "", c.max_iters, tps, c.learning_rate);
            h.push_back(line);
            break;
        } catch (const std::exception&) {
        }
    }
    // --report-only cannot know how the runs were trained (another compare, several side by side, by hand).
    h.push_back(report_only ? "runs: " + std::to_string(runs.size()) + ", trained before this report (written with "
                                  "--report-only)"
                            : "runs: executed one after another on this machine (" + std::to_string(runs.size()) +
                                  " runs)");
    return h;
}

nlohmann::json row_json(const report::VariantRow& r) {
    return {{"variant", r.variant}, {"runs", r.runs}, {"incomplete", r.incomplete},
            {"final_val_loss", r.final_val.mean}, {"final_val_loss_std", r.final_val.std},
            {"best_val_loss", r.best_val.mean}, {"best_val_loss_std", r.best_val.std},
            {"tokens_per_s", r.tokens_per_s}, {"peak_rss_mb", r.peak_rss_mb}, {"max_grad_norm", r.max_grad_norm},
            {"spikes", r.spikes}, {"skipped_steps", r.skipped}};
}

struct Opts {
    std::string config, data, val_data, format = "auto", out, variants = variant_keys_csv(), seeds = "1", device;
    std::vector<std::string> sets;
    bool report_only = false, json = false, retrain_other_data = false;
};

Run make_run(const Opts& o, const std::string& variant, uint64_t seed) {
    Run r;
    r.variant = variant, r.seed = seed, r.name = report::run_name(variant, seed), r.dir = o.out + "/runs/" + r.name;
    return r;
}

// --report-only: the runs of --variants/--seeds if given, else those compare.json lists, else every
// <variant>-s<seed> directory (variants in the canonical order). vlist becomes the row order.
std::vector<Run> existing_runs(const Opts& o, bool explicit_list, std::vector<std::string>& vlist,
                               std::vector<uint64_t> slist, const nlohmann::json& setup) {
    if (!fs::is_directory(o.out + "/runs")) throw std::runtime_error(o.out + "/runs: no such directory (nothing to report)");
    std::vector<std::pair<std::string, uint64_t>> found;
    bool listed = explicit_list;
    if (!explicit_list && setup.is_object()) {
        try {
            vlist = setup.at("variants").get<std::vector<std::string>>();
            slist = setup.at("seeds").get<std::vector<uint64_t>>();
            listed = true;
        } catch (const std::exception&) {  // not ours, or damaged: look at the directories instead
        }
    }
    if (listed) {
        for (const auto& v : vlist)
            for (uint64_t s : slist) found.push_back({v, s});
    } else {
        for (const auto& e : fs::directory_iterator(o.out + "/runs")) {
            std::string v;
            uint64_t s;
            if (e.is_directory() && report::parse_run_name(e.path().filename().string(), v, s) && variant_find(v) &&
                v == variant_find(v)->key)
                found.push_back({v, s});
        }
        auto rank = [](const std::string& v) { return variant_find(v) - variant_table().data(); };
        std::sort(found.begin(), found.end(), [&](const auto& a, const auto& b) {
            return rank(a.first) != rank(b.first) ? rank(a.first) < rank(b.first) : a.second < b.second;
        });
        vlist.clear();
        for (const auto& [v, s] : found)
            if (std::find(vlist.begin(), vlist.end(), v) == vlist.end()) vlist.push_back(v);
    }
    std::vector<Run> runs;
    for (const auto& [v, s] : found) {
        Run r = make_run(o, v, s);
        if (!fs::is_directory(r.dir)) {
            if (explicit_list) throw std::runtime_error(r.dir + ": no such run directory");
            continue;  // listed in compare.json but not started yet (an interrupted compare)
        }
        r.status = "reported";
        runs.push_back(r);
    }
    if (runs.empty()) throw std::runtime_error(o.out + "/runs: no run directories (<variant>-s<seed>) to report");
    return runs;
}

// How a run directory's data.json differs from the requested data ("" when it does not, or when
// it has no record: a run from before mhc kept one, reused with a note).
std::string run_data_difference(const Opts& o, Run& r, const nlohmann::json& want) {
    const nlohmann::json had = run_dir::read_data_record(r.dir);
    if (!had.is_object()) {
        r.data_unknown = true;
        return "";
    }
    std::string diff = run_dir::data_record_difference(had, want);
    const std::string fmt = had.value("format", std::string());
    if (diff.empty() && o.format != "auto" && !fmt.empty() && fmt != o.format)
        diff = "data format " + fmt + " then, " + o.format + " now";
    return diff;
}

// Resolves and checks every run before training any, so that bad input fails at once.
std::vector<Run> plan_runs(const Opts& o, const std::vector<std::string>& vlist, const std::vector<uint64_t>& slist) {
    if (o.config.empty()) throw std::invalid_argument("--config is required (unless --report-only)");
    if (o.data.empty()) throw std::invalid_argument("--data is required (unless --report-only)");
    if (!fs::is_regular_file(o.config)) throw std::runtime_error(o.config + ": no such file");
    std::vector<std::string> files[2];
    for (int i = 0; i < 2; i++) {
        const std::string& spec = i == 0 ? o.data : o.val_data;
        if (spec.empty()) continue;
        files[i] = data_files(spec);  // a pattern that matches nothing is refused here
        for (const std::string& f : files[i])
            if (!fs::is_regular_file(f)) throw std::runtime_error(f + ": no such file");
    }
    for (const std::string& s : o.sets) {
        const std::string key = s.substr(0, s.find('='));
        if (key == "hyper_conn_type" || key == "seed")
            throw std::invalid_argument("--set " + key + ": compare sets it per run (use --variants / --seeds)");
    }
    const TrainConfig base = config_from_toml_file(o.config);
    const nlohmann::json want_data = data_identity(o.data, files[0], o.val_data, files[1]);
    std::vector<Run> runs;
    for (const auto& v : vlist)
        for (uint64_t s : slist) {
            Run r = make_run(o, v, s);
            r.cfg = base;
            try {  // the order `mhc train` applies them in
                for (const auto& kv : o.sets) config_apply_override(r.cfg, kv);
                config_apply_override(r.cfg, "hyper_conn_type=" + v);
                config_apply_override(r.cfg, "seed=" + std::to_string(s));
                if (!o.device.empty()) r.cfg.device = o.device;
                config_finalize(r.cfg);
            } catch (const std::invalid_argument& e) {
                throw std::invalid_argument(r.name + ": " + e.what());
            }
            if (fs::exists(run_dir::config_path(r.dir))) {
                TrainConfig have = run_dir::read_config(r.dir);
                config_finalize(have);
                const std::string diff = config_difference(r.cfg, have);
                if (!diff.empty())
                    throw std::runtime_error(r.dir + " holds a run with another config (" + diff +
                                             "); choose another --out or remove that run directory");
            }
            r.ckpt_step = run_dir::latest_step(r.dir);
            r.plan = r.ckpt_step >= r.cfg.max_iters ? Plan::reuse : r.ckpt_step > 0 ? Plan::resume : Plan::train;
            if (r.plan != Plan::train) r.data_diff = run_data_difference(o, r, want_data);
            if (!r.data_diff.empty() && !o.retrain_other_data)
                throw std::runtime_error(r.dir + " was trained on other data (" + r.data_diff + "): add --retrain-"
                                         "other-data to train it again on this data, or choose another --out");
            if (!r.data_diff.empty()) r.plan = Plan::retrain;
            runs.push_back(r);
        }
    return runs;
}

// Trains the runs one after another. Returns false if a signal stopped them (the message is out);
// `failed` counts the runs whose `mhc train` failed (the others still run).
bool train_runs(const Opts& o, std::vector<Run>& runs, int& failed) {
    const std::string exe = sys::self_exe();
    const sys::ScopedSignals forwarding({SIGINT, SIGTERM, SIGHUP}, on_compare_signal);
    g_signals = 0;
    for (size_t i = 0; i < runs.size() && !g_signals; i++) {
        Run& r = runs[i];
        std::fprintf(stderr, "mhc compare: [%zu/%zu] %s: %s\n", i + 1, runs.size(), r.name.c_str(), plan_line(r).c_str());
        if (r.data_unknown)
            std::fprintf(stderr, "mhc compare: note: %s does not record its data (a run from before data.json); it is "
                         "taken as trained on %s\n", r.dir.c_str(), o.data.c_str());
        if (r.plan == Plan::reuse) {
            r.status = "reused";
            continue;
        }
        if (r.plan == Plan::retrain) run_dir::clear(r.dir);
        std::vector<std::string> argv = {exe, "train", "--config", o.config};
        for (const auto& kv : o.sets) argv.insert(argv.end(), {"--set", kv});
        argv.insert(argv.end(), {"--set", "hyper_conn_type=" + r.variant, "--set", "seed=" + std::to_string(r.seed),
                                 "--data", o.data, "--format", o.format, "--out", r.dir, "--json"});
        if (!o.val_data.empty()) argv.insert(argv.end(), {"--val-data", o.val_data});
        if (r.plan == Plan::resume) argv.push_back("--resume");
        if (!o.device.empty()) argv.insert(argv.end(), {"--device", o.device});
        sys::SpawnOptions opt;
        opt.new_group = opt.die_with_parent = true;
        sys::Child child = sys::spawn_child(argv, opt);
        g_child = child.pid;
        if (g_signals) kill(child.pid, SIGINT);  // a signal that came while it started
        Relay relay;
        relay.name = r.name;
        relay.tty = isatty(fileno(stderr));
        const int rc = sys::finish_child(child, relay);
        g_child = 0;
        relay.end();
        if (g_signals || (relay.result.is_object() && relay.result.value("interrupted", false))) {
            std::fprintf(stderr, "mhc compare: interrupted; %s stopped at its last checkpoint. Run the same command "
                         "again to continue (finished runs are reused).\n", r.name.c_str());
            return false;
        }
        if (rc != 0) {
            r.status = "failed";
            failed++;
            std::fprintf(stderr, "mhc compare: %s failed (exit %d, its error is above); going on with the other runs\n",
                         r.name.c_str(), rc);
        } else {
            r.status = r.plan == Plan::resume ? "resumed" : r.plan == Plan::retrain ? "retrained" : "trained";
        }
    }
    if (!g_signals) return true;
    std::fprintf(stderr, "mhc compare: interrupted. Run the same command again to continue (finished runs are reused).\n");
    return false;
}

nlohmann::json result_json(const Opts& o, const std::vector<Run>& runs, const report::ReportOutput& out, int failed) {
    nlohmann::json j = {{"out", o.out}, {"report", o.out + "/report.md"}, {"html", o.out + "/report.html"},
                        {"plots", out.pngs}, {"gnuplot", out.gnuplot_found}, {"notes", out.notes},
                        {"plot_errors", out.plot_errors}, {"failed_runs", failed}};
    j["runs"] = nlohmann::json::array();
    for (const Run& r : runs)
        j["runs"].push_back({{"name", r.name}, {"dir", r.dir}, {"status", r.status},
                             {"checkpoint_step", run_dir::latest_step(r.dir)}});
    j["rows"] = nlohmann::json::array();
    for (const auto& row : out.rows) j["rows"].push_back(row_json(row));
    return j;
}

}  // namespace

Runner add_compare(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    app.add_option("--config", o->config, "TOML config shared by every run (required, except with --report-only)");
    app.add_option("--data", o->data, "Training data, as for mhc train (required, except with --report-only)");
    app.add_option("--val-data", o->val_data, "Validation data, a file or a quoted pattern (default: the part of "
                   "--data after train_split, its last 10% by default)");
    add_format_option(app, o->format);
    CLI::Option* variants = app.add_option("--variants", o->variants, "Comma-separated hyper_conn_type values, the "
                                           "table's row order (default: " + variant_keys_csv() + ")");
    CLI::Option* seeds = app.add_option("--seeds", o->seeds, "Comma-separated seeds (default: 1)");
    app.add_option("--set", o->sets, "Override one config key for every run: --set key=value (repeatable)")
        ->default_str("");
    app.add_option("--out", o->out, "Comparison directory: runs/<variant>-s<seed>/, report.md, report.html, "
                   "*.png and the plots' *.gp/*.dat")->required();
    add_device_option(app, o->device, true);
    app.add_flag("--report-only", o->report_only, "Train nothing: write the report from the runs already in --out "
                 "(those of --variants/--seeds if given, else those of the last compare there)");
    app.add_flag("--retrain-other-data", o->retrain_other_data, "Train again, from scratch, a run of --out that "
                 "was trained on other data (else that is an error)");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    app.footer("Runs train one after another as child processes (`mhc train`); a finished run is reused, a partial\n"
               "one continued with --resume, and a run whose config or data differs from the requested one is an\n"
               "error. One compare at a time writes into an --out (a second is refused, naming the first's pid).\n"
               "Plots are drawn by gnuplot (Debian: gnuplot-nox); without it the table and HTML are still written,\n"
               "with a warning, and the exit status stays 0.\n"
               "Exit status: 0 report written; 1 bad input, a failed run (the report is still written) or a\n"
               "gnuplot error; 130 interrupted (Ctrl-C/SIGTERM: the current run stops with a checkpoint; the\n"
               "same command continues).");
    return [o, variants, seeds] {
        std::vector<std::string> vlist = parse_variant_list(o->variants);
        const std::vector<uint64_t> slist = parse_seeds(o->seeds);
        const std::string setup_path = o->out + "/compare.json";  // what was compared, for --report-only
        nlohmann::json setup;
        std::vector<Run> runs;
        int failed = 0;
        sys::FileLock lock;  // one compare per --out, taken once the input is known to be good
        if (o->report_only) {
            std::ifstream sf(setup_path);
            setup = nlohmann::json::parse(sf, nullptr, false);  // unreadable or damaged: discarded
            if (setup.is_discarded()) setup = nullptr;
            runs = existing_runs(*o, variants->count() > 0 || seeds->count() > 0, vlist, slist, setup);
            lock = sys::lock_file(o->out + "/lock", o->out);
        } else {
            // Bad input fails here, before --out is created, and so does a device that cannot run (one for all runs).
            engine_require(plan_runs(*o, vlist, slist).front().cfg.device);
            fs::create_directories(o->out + "/runs");
            lock = sys::lock_file(o->out + "/lock", o->out);
            runs = plan_runs(*o, vlist, slist);  // again, now that no other compare can change the runs
            setup = {{"config", o->config}, {"sets", o->sets}, {"data", o->data}, {"val_data", o->val_data},
                     {"format", o->format}, {"variants", vlist}, {"seeds", slist}, {"device", o->device}};
            sys::write_file_atomic(setup_path, setup.dump(2) + "\n");
            if (!train_runs(*o, runs, failed)) return 130;
        }

        report::ReportInput in;
        in.out_dir = o->out;
        in.variants = vlist;
        for (const Run& r : runs)
            if (fs::exists(run_dir::metrics_path(r.dir)))  // else it failed before its first step
                in.runs.push_back(report::read_run(r.dir, r.variant, r.seed));
        in.header = report_header(setup, in.runs, o->report_only);
        const report::ReportOutput out = report::write_report(in);
        if (!out.gnuplot_found)
            std::fprintf(stderr, "mhc compare: warning: gnuplot not found, so no plots were drawn (their .gp/.dat "
                         "files are in %s); install gnuplot-nox and rerun with --report-only\n", o->out.c_str());
        for (const std::string& e : out.plot_errors) std::fprintf(stderr, "mhc compare: error: %s\n", e.c_str());
        if (failed)
            std::fprintf(stderr, "mhc compare: error: %d run(s) failed; the report shows what they logged\n", failed);
        if (o->json) print_json(result_json(*o, runs, out, failed));
        else
            std::printf("%s\nreport: %s/report.md, %s/report.html (%zu plots)\n", out.markdown_table.c_str(),
                        o->out.c_str(), o->out.c_str(), out.pngs.size());
        return failed || !out.plot_errors.empty() ? 1 : 0;
    };
}

}  // namespace mhc::cli
