// mhc: train, evaluate and sample GPT models with hyper-connections (SPEC.md). The command line
// (the subcommands, their parsing, one-line errors), compiled once for every program that has it;
// main.cpp, per program, registers the devices the program links and calls run().
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>

#include "cli/cli.h"
#include "mhc/checkpoint.h"
#include "train/run_dir.h"

namespace mhc::cli {

void print_json(const nlohmann::json& j) {
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
}

std::vector<std::string> split_list(const std::string& list) {
    std::vector<std::string> out;
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ',')) {
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

std::vector<std::string> parse_variant_list(const std::string& list) {
    std::vector<std::string> out;
    for (std::string v : split_list(list)) {
        const VariantInfo* info = variant_find(v);
        if (!info)
            throw std::invalid_argument("unknown variant '" + v + "' in --variants (choose from " +
                                        variant_choices(false, ", ", ", ") + "; aliases " + variant_other_spellings() + ")");
        v = info->key;
        if (std::find(out.begin(), out.end(), v) != out.end())
            throw std::invalid_argument("variant '" + v + "' is listed twice in --variants");
        out.push_back(v);
    }
    if (out.empty()) throw std::invalid_argument("--variants lists no variant");
    return out;
}

void add_format_option(CLI::App& app, std::string& format) {
    app.add_option("--format", format, "Data format: auto, text, u16, u32, llmc")
        ->check(CLI::IsMember({"auto", "text", "u16", "u32", "llmc"}))
        ->capture_default_str();
}

void add_ckpt_option(CLI::App& app, std::string& ckpt) {
    app.add_option("--ckpt", ckpt, "Checkpoint (.safetensors), or a run directory (its latest checkpoint)")
        ->required();
}

void add_device_option(CLI::App& app, std::string& device, bool config_default) {
    CLI::Option* opt = app.add_option("--device", device, std::string("Where the model runs: cpu, or cuda (an NVIDIA GPU, "
                                      "in a build with CUDA; docs/GPU.md)") +
                                      (config_default ? "; default: the config's device key (cpu)" : ""))
                           ->check(CLI::IsMember({"cpu", "cuda"}));
    if (config_default) opt->default_str("");
    else opt->capture_default_str();
}

namespace {
// The value as a whole number, or why not ("" when it is one).
std::string parse_long(const std::string& in, long& v) {
    try {
        size_t used = 0;
        v = std::stol(in, &used);
        if (used == in.size()) return "";
    } catch (const std::exception&) {
    }
    return "must be a whole number, got '" + in + "'";
}
}  // namespace

CLI::Validator at_least(long min) {
    return CLI::Validator(
        [min](std::string& in) -> std::string {
            long v = 0;
            const std::string bad = parse_long(in, v);
            if (!bad.empty()) return bad;
            return v >= min ? "" : "must be >= " + std::to_string(min) + ", got " + in;
        },
        "INT>=" + std::to_string(min));
}

namespace {
// A validator of a number: `ok` says whether a parsed value is allowed, `what` names what is.
CLI::Validator number_where(bool (*ok)(double), const std::string& what, const std::string& name) {
    return CLI::Validator(
        [ok, what](std::string& in) -> std::string {
            try {
                size_t used = 0;
                const double v = std::stod(in, &used);
                if (used == in.size() && ok(v)) return "";
            } catch (const std::exception&) {
            }
            return "must be " + what + ", got '" + in + "'";
        },
        name);
}
}  // namespace

CLI::Validator non_negative_number() {
    return number_where([](double v) { return std::isfinite(v) && v >= 0; }, "a finite number >= 0", "NUMBER>=0");
}

CLI::Validator positive_fraction() {
    return number_where([](double v) { return v > 0 && v <= 1; }, "a number in (0, 1]", "(0,1]");
}

// The whole program but its devices (main.cpp): the subcommands, then the one that was asked for.
int run(int argc, char** argv) {
    // OpenMP threads wait for the next parallel region by spinning. Forever (active) takes the
    // cores from everything else on the machine, and when the cores are shared it slows our many
    // small parallel loops 5-60x; not at all (passive) costs ~8% of an mhc-lite step on idle cores.
    // A short spin (GOMP_SPINCOUNT=20000, ~10 us) measured as fast as the default on idle cores.
    // libgomp reads these before main, so when neither is set we start again with the spin set.
    if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT") &&
        setenv("GOMP_SPINCOUNT", "20000", 1) == 0)
        execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
    // A file-size limit (or a full quota) should fail the write with an error we report, leaving
    // the previous checkpoint intact, not kill the process.
    std::signal(SIGXFSZ, SIG_IGN);
    const std::string about = "mhc: train, evaluate and sample GPT models whose residual connections are\n"
                              "hyper-connections (" + mhc::variant_choices(true, ", ", ", ") + "). See README.md and SPEC.md.";
    CLI::App app{about};
    app.require_subcommand(1);
    // Every --help shows each option's default (subcommands copy these option defaults).
    app.option_defaults()->always_capture_default();
    // Parse errors in one line, like every other error of mhc.
    app.failure_message([](const CLI::App* a, const CLI::Error& e) {
        std::string where = "mhc";
        for (const CLI::App* sub : a->get_subcommands()) where += " " + sub->get_name();
        // An unquoted pattern reaches us as many file names: say so rather than only "not expected".
        // (CLI11's ExtrasError: "The following argument(s) ...: A B", named for the app, not its type.)
        std::string hint;
        const std::string what = e.what();
        if (what.rfind("The following argument", 0) == 0 && what.find(": ") != std::string::npos) {
            std::istringstream extras(what.substr(what.find(": ") + 2));
            for (std::string x; hint.empty() && extras >> x;)
                if (std::error_code ec; std::filesystem::is_regular_file(x, ec))
                    hint = "; a file pattern left unquoted reaches mhc as many files: quote it, as in "
                           "--data 'dir/train_*.bin'";
        }
        return where + ": error: " + e.what() + hint + " (see " + where + " --help)\n";
    });
    app.set_version_flag("--version", "mhc 0.1");
    std::map<CLI::App*, mhc::cli::Runner> runners;
    auto add = [&](const char* name, const char* help, auto adder) {
        CLI::App* sub = app.add_subcommand(name, help);
        runners[sub] = adder(*sub);
    };
    add("prepare", "Tokenize text files into train/val token files (bytes, SentencePiece, tokenizer.json)",
        mhc::cli::add_prepare);
    add("train", "Train a model from a TOML config on a text or token file", mhc::cli::add_train);
    add("eval", "Loss of a checkpoint on a data file", mhc::cli::add_eval);
    add("sample", "Generate text or tokens from a checkpoint (KV cache)", mhc::cli::add_sample);
    add("info", "A checkpoint's config, parameter count and connection diagnostics", mhc::cli::add_info);
    add("bench", "Training-step speed per variant: tokens/s, time per phase, peak RSS, MFU vs the sgemm peak",
        mhc::cli::add_bench);
    add("compare", "Train variants x seeds of one config and write a report (table, plots, HTML)",
        mhc::cli::add_compare);
    // A misspelled subcommand would otherwise read as "A subcommand is required".
    const std::vector<CLI::App*> subs = app.get_subcommands(std::function<bool(CLI::App*)>());  // in order
    if (argc > 1 && argv[1][0] != '-' &&
        std::none_of(subs.begin(), subs.end(), [&](CLI::App* s) { return s->check_name(argv[1]); })) {
        std::vector<std::string> names;
        for (CLI::App* sub : subs) names.push_back(sub->get_name());
        const std::string near = mhc::closest_name(argv[1], names);
        std::string all;
        for (const std::string& n : names) all += (all.empty() ? "" : ", ") + n;
        std::fprintf(stderr, "mhc: error: unknown subcommand '%s'%s; the subcommands are %s (see mhc --help)\n",
                     argv[1], near.empty() ? "" : (" (did you mean '" + near + "'?)").c_str(), all.c_str());
        return 1;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    for (auto& [sub, run] : runners) {
        if (!sub->parsed()) continue;
        try {
            return run();
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "mhc %s: error: out of memory (a smaller model, batch_size or block_size needs "
                         "less)\n", sub->get_name().c_str());
            return 1;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "mhc %s: error: %s\n", sub->get_name().c_str(), e.what());
            return 1;
        }
    }
    return 1;
}

}  // namespace mhc::cli
