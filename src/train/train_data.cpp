// A training run's data: loading, the format check, the header line and data.json's identity.
#include "train/train_data.h"

#include <cstdio>
#include <stdexcept>

#include "sys/file.h"

namespace mhc {

namespace {

// How the format was chosen, for the header: a guess from the name deserves to be seen.
std::string format_phrase(DataFormat asked, const TokenData& d) {
    std::string how = asked != DataFormat::automatic ? "--format"
                      : d.format == DataFormat::llmc  ? "its llm.c header"
                                                      : "guessed from the file name";
    return std::string(data_format_name(d.format)) + " (" + how + ")";
}

nlohmann::json file_identity(const std::string& path) {
    const sys::Fingerprint fp = sys::file_fingerprint(path);
    return {{"path", path}, {"bytes", fp.bytes}, {"hash", fp.hash}};
}

std::string percent(double frac) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g%%", 100 * frac);
    return buf;
}

}  // namespace

nlohmann::json data_identity(const std::string& data, const std::string& val_data) {
    return {{"train", file_identity(data)}, {"val", val_data.empty() ? nlohmann::json() : file_identity(val_data)}};
}

TrainData load_train_data(const TrainOptions& opt, const TrainConfig& cfg) {
    TrainData d;
    d.train = load_tokens(opt.data, opt.format, cfg.model.vocab_size);
    std::string val_phrase;
    if (!opt.val_data.empty()) {
        d.val = load_tokens(opt.val_data, opt.format, d.train.vocab_size);
        if (d.val.format != d.train.format)
            throw std::invalid_argument("--data " + opt.data + " reads as " + data_format_name(d.train.format) +
                                        " but --val-data " + opt.val_data + " as " + data_format_name(d.val.format) +
                                        " (both guessed from the file names): give --format, or files of one format");
        val_phrase = std::to_string(d.val.tokens.size()) + " validation tokens in " + opt.val_data;
    } else {
        std::tie(d.train, d.val) = split_tokens(d.train, cfg.train_split);
        val_phrase = std::to_string(d.val.tokens.size()) + " validation tokens (the last " +
                     percent(1 - cfg.train_split) + ", train_split " + percent(cfg.train_split) + ")";
    }
    d.header = "data: " + opt.data + ": " + format_phrase(opt.format, d.train) + ", vocab " +
               std::to_string(d.train.vocab_size) + "; " + std::to_string(d.train.tokens.size()) +
               " training tokens, " + val_phrase;
    d.record = data_identity(opt.data, opt.val_data);
    d.record["format"] = data_format_name(d.train.format);
    return d;
}

}  // namespace mhc
