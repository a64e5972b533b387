// Training a SentencePiece model (Debian's libsentencepiece_train) on lines streamed from the
// corpus, with settings that make it lossless on any text.
#include <sentencepiece_trainer.h>

#include <stdexcept>

#include "mhc/tokenizer.h"

namespace mhc {

namespace {

// SentencePiece pulls its sentences through this iterator, so the corpus is never read whole:
// the trainer keeps a reservoir sample of at most input_sentence_size lines.
struct LineIterator : sentencepiece::SentenceIterator {
    const std::function<bool(std::string&)>& next_line;
    std::string line;
    bool end = false;
    explicit LineIterator(const std::function<bool(std::string&)>& f) : next_line(f) { Next(); }
    bool done() const override { return end; }
    void Next() override { end = !next_line(line); }
    const std::string& value() const override { return line; }
    sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }
};

}  // namespace

std::string spm_train(const SpmTrainOptions& opt, const std::function<bool(std::string&)>& next_line) {
    if (opt.model_type != "bpe" && opt.model_type != "unigram")
        throw std::invalid_argument("SentencePiece model type '" + opt.model_type + "' (expected bpe or unigram)");
    if (opt.vocab_size < 260)
        throw std::invalid_argument("--vocab-size " + std::to_string(opt.vocab_size) +
                                    ": a SentencePiece model with byte fallback needs at least 260 (256 bytes, <unk> and pieces)");
    sentencepiece::SetRandomGeneratorSeed(opt.seed);  // the reservoir sample of lines
    // Lossless on any text: no normalisation (identity), spaces kept as they are and no dummy
    // space in front of each line, and every byte has a piece (byte fallback), so
    // decode(encode(x)) = x. No BOS/EOS: the corpus is one stream of text, and they would only
    // take two ids. Lines are the sentences; a newline is its own token (see mhc/tokenizer.h).
    const std::unordered_map<std::string, std::string> args = {
        {"model_type", opt.model_type},
        {"vocab_size", std::to_string(opt.vocab_size)},
        {"normalization_rule_name", "identity"},
        {"remove_extra_whitespaces", "false"},
        {"add_dummy_prefix", "false"},
        {"byte_fallback", "true"},
        {"allow_whitespace_only_pieces", "true"},
        {"split_digits", "false"},
        {"unk_id", "0"},
        {"bos_id", "-1"},
        {"eos_id", "-1"},
        {"pad_id", "-1"},
        {"input_sentence_size", std::to_string(opt.max_sentences)},
        {"max_sentence_length", std::to_string(kSpmMaxLine)},
        {"shuffle_input_sentence", "true"},
        {"num_threads", std::to_string(opt.threads)},
        {"minloglevel", "1"},  // its progress log is long; mhc prints its own line
    };
    LineIterator it(next_line);
    std::string model;
    const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
    if (!status.ok()) throw std::runtime_error("SentencePiece training failed: " + status.ToString());
    return model;
}

}  // namespace mhc
