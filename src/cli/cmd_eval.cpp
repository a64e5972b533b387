// mhc eval
#include <cmath>
#include <filesystem>

#include "cli/cli.h"
#include "mhc/checkpoint.h"
#include "mhc/tokenizer.h"
#include "mhc/train.h"
#include "train/engine.h"
#include "train/fits.h"
#include "train/run_dir.h"

namespace mhc::cli {

namespace {

// The fraction of a file that trains when --train-split is not given: the run's own train_split
// when the checkpoint sits in a run directory with a config.toml, else nanoGPT's 0.9.
double default_train_split(const std::string& ckpt_file, std::string& source) {
    std::string dir = std::filesystem::path(ckpt_file).parent_path().string();
    if (dir.empty()) dir = ".";
    source = "the default train_split";
    if (!std::filesystem::exists(run_dir::config_path(dir))) return 0.9;
    const TrainConfig c = run_dir::read_config(dir);  // a broken config.toml is an error, not a guess
    source = "train_split of " + run_dir::config_path(dir);
    return c.train_split;
}

// The model's tokenizer (--tokenizer, else the one its checkpoint names, else bytes for a 256-token
// model), for bits per byte; false (with a note) when there is none. The data must have been made
// with the same tokenizer when its sidecar says which.
bool model_tokenizer(const std::string& ckpt, const SafeTensors& raw, const std::string& given, int V,
                     const TokenData& data, Tokenizer& tok) {
    bool has = false;
    try {
        has = tokenizer_for_checkpoint(ckpt, raw.metadata, given, V, tok);
    } catch (const std::exception& e) {
        if (!given.empty()) throw;
        std::fprintf(stderr, "no bits per byte: %s\n", e.what());
    }
    if (has && !data.tokenizer.empty() &&
        (data.tokenizer.kind != tokenizer_kind_name(tok.kind) ||
         (!data.tokenizer.crc32.empty() && data.tokenizer.crc32 != tokenizer_ref(tok, "").crc32)))
        throw std::runtime_error(data.path + " was made with another tokenizer (" + data.tokenizer.kind + " " +
                                 data.tokenizer.crc32 + ") than the model's (" + tokenizer_kind_name(tok.kind) + " " +
                                 tokenizer_ref(tok, "").crc32 + ")");
    return has;
}

// The text bytes of the evaluated targets (the same K batches drawn again), for bits per byte:
// the summed loss over them in bits, comparable across tokenizers.
long target_text_bytes(const Tokenizer& tok, const TokenData& data, int B, int T, Order order, uint64_t seed, int K) {
    Batcher again(data, B, T, order, seed);
    std::vector<int32_t> in((size_t)B * T), tg(in.size());
    long bytes = 0;
    for (int k = 0; k < K; k++) {
        again.next(in.data(), tg.data());
        for (int b = 0; b < B; b++) {
            // A window's targets are its inputs moved by one: decoding runs along it once. What came
            // before its first id is unknown: taken as mid-line.
            DecodeState st;
            st.line_start = false;
            std::string first;
            tokenizer_decode_one(tok, in[(size_t)b * T], st, first);
            for (int t = 0; t < T; t++) bytes += tokenizer_text_bytes(tok, tg[(size_t)b * T + t], st);
        }
    }
    return bytes;
}

}  // namespace

Runner add_eval(CLI::App& app) {
    struct Opts {
        std::string ckpt, data, format = "auto", order = "random", split = "all", tokenizer, device = "cpu";
        int batch = 8, seq = 0, batches = 0;
        double train_split = 0;
        uint64_t seed = 1;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    add_ckpt_option(app, o->ckpt);
    app.add_option("--data", o->data, "Data file, or a quoted pattern of files read as one stream")->required();
    add_format_option(app, o->format);
    app.add_option("--split", o->split, "Which part of --data: all, or train / val as mhc train splits a file "
                   "without --val-data (the first train_split of it trains, the rest validates)")
        ->check(CLI::IsMember({"all", "train", "val"}));
    CLI::Option* split_opt = app.add_option("--train-split", o->train_split, "The fraction that trains, for --split "
                                            "(default: the run's train_split when --ckpt is in a run directory, "
                                            "else 0.9)")->default_str("");
    app.add_option("--batch", o->batch, "Sequences per batch")->check(at_least(1));
    app.add_option("--seq", o->seq, "Sequence length (0: the model's block_size)")->check(at_least(0));
    app.add_option("--order", o->order, "random windows (seeded), or sequential: window j is tokens "
                   "[jT, jT+T) -> [jT+1, jT+T+1), batch b holds windows bB..bB+B-1")
        ->check(CLI::IsMember({"random", "sequential"}));
    app.add_option("--batches", o->batches, "Batches to evaluate (0: random 20; sequential: all that fit)")
        ->check(at_least(0));
    app.add_option("--seed", o->seed, "Seed of the random windows");
    app.add_option("--tokenizer", o->tokenizer, "Tokenizer for bits per byte (SentencePiece .model, tokenizer.json, "
                   "gpt2_tokenizer.bin, bytes); default: the one the checkpoint names, or bytes for a 256-token model");
    add_device_option(app, o->device, false);
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    app.footer("Exit status: 0 with a finite loss; 1 on bad input or when the loss is not finite (NaN or inf).");
    return [o, split_opt] {
        engine_require(o->device);
        GPT<float> m;
        SafeTensors raw;
        const std::string ckpt = run_dir::load_model(o->ckpt, m, &raw);
        raw.tensors.clear();  // only the metadata is needed from here on
        const int T = o->seq ? o->seq : m.Tmax;
        if (T > m.Tmax)
            throw std::invalid_argument("--seq " + std::to_string(T) + " exceeds the model's block_size " +
                                        std::to_string(m.Tmax));
        if (split_opt->count() && o->split == "all")
            throw std::invalid_argument("--train-split needs --split train or --split val");
        require_memory_to_run(m.cfg, o->device, o->batch, T, "evaluate");
        TokenData data = load_tokens(o->data, data_format_from_string(o->format), m.V);
        std::string part = "all of it";
        if (o->split != "all") {
            std::string source = "--train-split";
            const double frac = split_opt->count() ? o->train_split : default_train_split(ckpt, source);
            auto halves = split_tokens(data, frac);
            data = o->split == "train" ? std::move(halves.first) : std::move(halves.second);
            char buf[160];
            std::snprintf(buf, sizeof buf, "%s part (%lld tokens; %s %g)", o->split.c_str(), (long long)data.tokens.size(),
                          source.c_str(), frac);
            part = buf;
        }
        const Order order = order_from_string(o->order);
        Batcher b(data, o->batch, T, order, o->seed);
        int K = o->batches;
        if (order == Order::sequential) {
            const long fit = b.num_windows() / o->batch;
            if (fit < 1)
                throw std::invalid_argument(o->data + ": " + std::to_string(b.num_windows()) +
                                            " windows, fewer than one batch of " + std::to_string(o->batch));
            if (K == 0) K = (int)fit;
            if (K > fit)
                throw std::invalid_argument("--batches " + std::to_string(K) + ": only " + std::to_string(fit) +
                                            " sequential batches fit in " + o->data);
        } else if (K == 0) {
            K = 20;
        }
        AdamW<float> no_optimizer;
        const double loss = evaluate(*engine_make(o->device, m, no_optimizer), b, K);
        const long tokens = (long)K * o->batch * T;
        if (!std::isfinite(loss))
            throw std::runtime_error(ckpt + ": the loss on " + o->data + " is not finite (" + std::to_string(loss) +
                                     "): the model's outputs overflow");
        nlohmann::json j = {{"loss", loss},         {"batches", K},       {"tokens", tokens},
                            {"order", o->order},    {"split", o->split},  {"device", o->device}};
        char line[160];
        std::snprintf(line, sizeof line, "loss %.6f over %d batches (%ld tokens) of %s, %s", loss, K, tokens,
                      o->data.c_str(), part.c_str());
        std::string msg = line;
        Tokenizer tok;
        if (model_tokenizer(ckpt, raw, o->tokenizer, m.V, data, tok)) {
            const long bytes = target_text_bytes(tok, data, o->batch, T, order, o->seed, K);
            const double bpb = bytes > 0 ? loss * (double)tokens / (double)bytes / std::log(2.0) : NAN;
            std::snprintf(line, sizeof line, ", %ld text bytes: %.4f bits per byte (%s)", bytes, bpb,
                          tokenizer_kind_name(tok.kind));
            msg += line;
            j["bytes"] = bytes;
            j["bits_per_byte"] = bpb;
            j["tokenizer"] = tokenizer_kind_name(tok.kind);
        }
        std::fprintf(stderr, "%s\n", msg.c_str());
        if (o->json) print_json(j);
        else std::printf("%.6f\n", loss);
        return 0;
    };
}

}  // namespace mhc::cli
