// Shared pieces of the `mhc` command line: each subcommand registers its options on a CLI11 app
// and returns a function that runs it (returning the process exit code).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "mhc/gpt.h"

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

// Loads a checkpoint file into a model, with the path named in any error.
void load_checkpoint(const std::string& path, GPT<float>& m);

}  // namespace mhc::cli
