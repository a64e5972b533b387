// mhc prepare
#include <unistd.h>

#include <thread>

#include "cli/cli.h"
#include "mhc/prepare.h"

namespace mhc::cli {

Runner add_prepare(CLI::App& app) {
    struct Opts {
        PrepareOptions p;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("inputs", o->p.inputs, "Text files, read in this order (each encoded on its own)")->required();
    app.add_option("--out", o->p.out_dir, "Output directory: train.bin, val.bin, meta.json and the tokenizer")->required();
    app.add_option("--tokenizer", o->p.tokenizer,
                   "bytes (the default); spm-bpe or spm-unigram (train a SentencePiece model of --vocab-size on "
                   "the training part); or a file: a SentencePiece .model or a byte-level BPE tokenizer.json");
    app.add_option("--vocab-size", o->p.vocab_size, "Vocabulary of the SentencePiece model to train")
        ->check(CLI::PositiveNumber);
    app.add_option("--val-fraction", o->p.val_fraction, "Share of the input bytes, from the end, for val.bin (default 0.1; 0: none)");
    app.add_option("--format", o->p.container, "bin (raw tokens, nanoGPT's layout; the default) or llmc (llm.c shards)")
        ->check(CLI::IsMember({"bin", "llmc"}));
    app.add_option("--spm-max-sentences", o->p.spm_max_sentences,
                   "Lines SentencePiece trains on at most (default 2000000; a seeded sample when there are more)")->check(CLI::PositiveNumber);
    app.add_flag("--quiet", o->p.quiet, "No progress or summary on stderr");
    app.add_flag("--json", o->json, "Print the sidecar (meta.json) and the time as one JSON object on the last line");
    return [o] {
        PrepareOptions p = o->p;
        p.progress = isatty(fileno(stderr));
        p.threads = (int)std::max(1u, std::thread::hardware_concurrency());
        const PrepareResult r = prepare_run(p);
        int64_t bytes = 0, tokens = 0;
        std::string files;
        for (const auto& [name, info] : r.meta.files) {
            bytes += info.bytes, tokens += info.tokens;
            files += (files.empty() ? "" : ", ") + name + " " + std::to_string(info.tokens) + " tokens";
        }
        if (!p.quiet)
            std::fprintf(stderr, "prepare: %lld bytes -> %s (%s, vocabulary %d, %s, %.2f bytes/token) in %s; %.1f s, %.2f MB/s\n",
                         (long long)bytes, files.c_str(), r.meta.tokenizer.kind.c_str(), r.meta.vocab_size,
                         r.meta.dtype.c_str(), tokens ? (double)bytes / tokens : 0.0, p.out_dir.c_str(), r.seconds,
                         r.seconds > 0 ? bytes / r.seconds / 1e6 : 0.0);
        if (o->json) {
            nlohmann::json j = nlohmann::json::parse(token_meta_json(r.meta));
            j["seconds"] = r.seconds;
            j["out"] = p.out_dir;
            print_json(j);
        }
        return 0;
    };
}

}  // namespace mhc::cli
