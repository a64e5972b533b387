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

// A file's fingerprint; for a pattern's files, their total size and a CRC-32 of their fingerprints
// in order, so that a file changed, added, removed or renamed out of order is other data. The
// N files share one file's budget: each is read whole up to 256/N MiB (at least 1 MiB), else
// sampled in 64/N pieces of 1 MiB (at least 2: its first and last), so a hundred shards cost
// about what one large file does.
nlohmann::json file_identity(const std::string& spec, const std::vector<std::string>& files) {
    if (files.size() == 1) {
        const sys::Fingerprint fp = sys::file_fingerprint(files[0]);
        return {{"path", spec}, {"bytes", fp.bytes}, {"hash", fp.hash}};
    }
    const int64_t n = (int64_t)files.size();
    int64_t bytes = 0;
    sys::Crc32 crc;
    for (const std::string& f : files) {
        const sys::Fingerprint fp = sys::file_fingerprint(f, (256ll << 20) / n, (int)(64 / n));
        const std::string line = std::to_string(fp.bytes) + " " + fp.hash + "\n";
        crc.add(line.data(), line.size());
        bytes += fp.bytes;
    }
    return {{"path", spec}, {"files", files.size()}, {"bytes", bytes}, {"hash", "files-" + crc.name()}};
}

// "PATH" for one file, "PATTERN (N files)" for several.
std::string data_phrase(const std::string& spec, const TokenData& d) {
    return d.tokens.segments() > 1 ? spec + " (" + std::to_string(d.tokens.segments()) + " files)" : spec;
}

std::string percent(double frac) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g%%", 100 * frac);
    return buf;
}

}  // namespace

nlohmann::json data_identity(const std::string& data, const std::vector<std::string>& data_files,
                             const std::string& val_data, const std::vector<std::string>& val_files) {
    return {{"train", file_identity(data, data_files)},
            {"val", val_data.empty() ? nlohmann::json() : file_identity(val_data, val_files)}};
}

TrainData load_train_data(const TrainOptions& opt, const TrainConfig& cfg) {
    TrainData d;
    d.train = load_tokens(opt.data, opt.format, cfg.model.vocab_size);
    const std::vector<std::string> train_files = d.train.files;
    const std::string train_phrase = data_phrase(opt.data, d.train);  // before a split cuts a file off
    std::string val_phrase;
    if (!opt.val_data.empty()) {
        d.val = load_tokens(opt.val_data, opt.format, d.train.vocab_size);
        if (d.val.format != d.train.format)
            throw std::invalid_argument("--data " + opt.data + " reads as " + data_format_name(d.train.format) +
                                        " but --val-data " + opt.val_data + " as " + data_format_name(d.val.format) +
                                        " (both guessed from the file names): give --format, or files of one format");
        val_phrase = std::to_string(d.val.tokens.size()) + " validation tokens in " + data_phrase(opt.val_data, d.val);
    } else {
        std::tie(d.train, d.val) = split_tokens(d.train, cfg.train_split);
        val_phrase = std::to_string(d.val.tokens.size()) + " validation tokens (the last " +
                     percent(1 - cfg.train_split) + ", train_split " + percent(cfg.train_split) + ")";
    }
    d.header = "data: " + train_phrase + ": " + format_phrase(opt.format, d.train) + ", vocab " +
               std::to_string(d.train.vocab_size) + "; " + std::to_string(d.train.tokens.size()) +
               " training tokens, " + val_phrase;
    d.record = data_identity(opt.data, train_files, opt.val_data, d.val.files);
    d.record["format"] = data_format_name(d.train.format);
    return d;
}

}  // namespace mhc
