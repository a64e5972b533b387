// mhc: train, evaluate and sample GPT models with hyper-connections (SPEC.md).
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>

#include "cli/cli.h"
#include "mhc/checkpoint.h"

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

void load_checkpoint(const std::string& path, GPT<float>& m) { checkpoint_load(path, m); }

}  // namespace mhc::cli

int main(int argc, char** argv) {
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
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    for (auto& [sub, run] : runners) {
        if (!sub->parsed()) continue;
        try {
            return run();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "mhc %s: error: %s\n", sub->get_name().c_str(), e.what());
            return 1;
        }
    }
    return 1;
}
