// Shared pieces of the `mhc` command line: each subcommand registers its options on a CLI11 app
// and returns a function that runs it (returning the process exit code).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "mhc/gpt.h"
#include "mhc/safetensors.h"

namespace mhc::cli {

using Runner = std::function<int()>;

Runner add_train(CLI::App& app);
Runner add_eval(CLI::App& app);
Runner add_sample(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_compare(CLI::App& app);
Runner add_prepare(CLI::App& app);

// "none,hc, mhc-lite" -> config names in order (aliases residual, mhc-lite; spaces trimmed).
// Unknown, repeated or no variants: std::invalid_argument naming the option.
std::vector<std::string> parse_variant_list(const std::string& list);
// Comma-separated items with surrounding blanks trimmed, empty items dropped.
std::vector<std::string> split_list(const std::string& list);

// Prints the result object as one line of JSON on stdout (the last line a --json command prints).
void print_json(const nlohmann::json& j);

// --format for the commands that read token files: auto, text, u16, u32, llmc.
void add_format_option(CLI::App& app, std::string& format);

// --ckpt (required) for the commands that read a model: eval, sample, info.
void add_ckpt_option(CLI::App& app, std::string& ckpt);

// --device: where the model runs (train/engine.h). With config_default the option is empty unless
// given, and the config's `device` key decides (train, bench, compare); else it defaults to cpu.
void add_device_option(CLI::App& app, std::string& device, bool config_default);

// Option checks worded like the rest of mhc ("must be >= 1, got 0"): CLI11's PositiveNumber and
// NonNegativeNumber print their double bounds with std::to_string, 310 digits that read as a
// contradiction ("0 not in range 0.000000 to 1797...").
CLI::Validator at_least(long min);       // an integer >= min
CLI::Validator non_negative_number();    // a finite number >= 0
CLI::Validator positive_fraction();      // a number in (0, 1]

// The command line (app.cpp): parses argv and runs the subcommand; the exit status.
int run(int argc, char** argv);

}  // namespace mhc::cli
