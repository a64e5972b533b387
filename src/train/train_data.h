// The data of a training run: the training tokens and the validation tokens (a file of their own,
// or the last 1 - train_split of the training file), one header line saying what they are, and
// their identity for the run directory's data.json. Internal.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "mhc/config.h"
#include "mhc/data.h"
#include "mhc/train.h"

namespace mhc {

struct TrainData {
    TokenData train, val;
    std::string header;     // "data: FILE: FORMAT (how it was chosen), vocab V; N train tokens ..."
    nlohmann::json record;  // run_dir::write_data_record's object
};

// Loads opt.data (and opt.val_data) with cfg's vocab_size and splits the training file when there
// is no validation file. Refuses, in one line, a training and a validation file that an automatic
// format guess reads differently (text and u16, say): both are read in one format or not at all.
TrainData load_train_data(const TrainOptions& opt, const TrainConfig& cfg);

// {"train": FILE, "val": FILE or null} for data.json, from the files alone (no format): what
// `mhc compare` checks a run directory's record against before reusing the run. The files are
// the arguments' data_files, globbed by the caller once for everything it does with them.
nlohmann::json data_identity(const std::string& data, const std::vector<std::string>& data_files,
                             const std::string& val_data, const std::vector<std::string>& val_files);

}  // namespace mhc
