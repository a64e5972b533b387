// mhc eval
#include <cmath>

#include "cli/cli.h"
#include "mhc/checkpoint.h"
#include "mhc/tokenizer.h"
#include "mhc/train.h"

namespace mhc::cli {

Runner add_eval(CLI::App& app) {
    struct Opts {
        std::string ckpt, data, format = "auto", order = "random", tokenizer;
        int batch = 8, seq = 0, batches = 0;
        uint64_t seed = 1;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("--ckpt", o->ckpt, "Checkpoint (.safetensors)")->required();
    app.add_option("--data", o->data, "Data file")->required();
    app.add_option("--format", o->format, "Data format: auto, text, u16, u32, llmc")
        ->check(CLI::IsMember({"auto", "text", "u16", "u32", "llmc"}));
    app.add_option("--batch", o->batch, "Sequences per batch")->check(CLI::PositiveNumber);
    app.add_option("--seq", o->seq, "Sequence length (default: the model's block_size)")->check(CLI::PositiveNumber);
    app.add_option("--order", o->order, "random windows (seeded), or sequential: window j is tokens "
                   "[jT, jT+T) -> [jT+1, jT+T+1), batch b holds windows bB..bB+B-1")
        ->check(CLI::IsMember({"random", "sequential"}));
    app.add_option("--batches", o->batches, "Batches to evaluate (default: random 20; sequential: all "
                   "that fit)")->check(CLI::PositiveNumber);
    app.add_option("--seed", o->seed, "Seed of the random windows");
    app.add_option("--tokenizer", o->tokenizer, "Tokenizer for bits per byte (SentencePiece .model, tokenizer.json, "
                   "gpt2_tokenizer.bin, bytes); default: the one the checkpoint names, or bytes for a 256-token model");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line");
    return [o] {
        GPT<float> m;
        SafeTensors raw;
        checkpoint_load(o->ckpt, m, &raw);
        raw.tensors.clear();  // only the metadata is needed from here on
        const int T = o->seq ? o->seq : m.Tmax;
        if (T > m.Tmax)
            throw std::invalid_argument("--seq " + std::to_string(T) + " exceeds the model's block_size " +
                                        std::to_string(m.Tmax));
        const TokenData data = load_tokens(o->data, data_format_from_string(o->format), m.V);
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
        const double loss = evaluate(m, b, K);
        const long tokens = (long)K * o->batch * T;
        nlohmann::json j = {{"loss", loss}, {"batches", K}, {"tokens", tokens}, {"order", o->order}};
        // Bits per byte, comparable across tokenizers: the summed loss over the text bytes of the
        // evaluated targets (the same windows again), in bits. Needs the tokenizer; without one the
        // loss alone is reported.
        Tokenizer tok;
        bool has_tok = false;
        try {
            has_tok = tokenizer_for_checkpoint(o->ckpt, raw.metadata, o->tokenizer, m.V, tok);
        } catch (const std::exception& e) {
            if (!o->tokenizer.empty()) throw;
            std::fprintf(stderr, "no bits per byte: %s\n", e.what());
        }
        if (has_tok && !data.tokenizer.empty() &&
            (data.tokenizer.kind != tokenizer_kind_name(tok.kind) ||
             (!data.tokenizer.crc32.empty() && data.tokenizer.crc32 != tokenizer_ref(tok, "").crc32)))
            throw std::runtime_error(o->data + " was made with another tokenizer (" + data.tokenizer.kind + " " +
                                     data.tokenizer.crc32 + ") than the model's (" + tokenizer_kind_name(tok.kind) + " " +
                                     tokenizer_ref(tok, "").crc32 + ")");
        char line[160];
        std::snprintf(line, sizeof line, "loss %.6f over %d batches (%ld tokens)", loss, K, tokens);
        std::string msg = line;
        if (has_tok) {
            std::vector<int64_t> piece_bytes((size_t)m.V, -1);
            Batcher again(data, o->batch, T, order, o->seed);
            std::vector<int32_t> in((size_t)o->batch * T), tg(in.size());
            long bytes = 0;
            for (int k = 0; k < K; k++) {
                again.next(in.data(), tg.data());
                for (int32_t t : tg) {
                    if (piece_bytes[t] < 0) piece_bytes[t] = tokenizer_piece_bytes(tok, t);
                    bytes += piece_bytes[t];
                }
            }
            const double bpb = bytes > 0 ? loss * (double)tokens / (double)bytes / std::log(2.0) : NAN;
            std::snprintf(line, sizeof line, ", %ld text bytes: %.4f bits per byte (%s)", bytes, bpb, tokenizer_kind_name(tok.kind));
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
