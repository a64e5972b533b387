// mhc sample
#include <chrono>
#include <sstream>

#include "cli/cli.h"
#include "mhc/checkpoint.h"
#include "mhc/sample.h"
#include "mhc/tokenizer.h"
#include "train/engine.h"

namespace mhc::cli {

Runner add_sample(CLI::App& app) {
    struct Opts {
        std::string ckpt, prompt = "\n", prompt_tokens, tokenizer, device = "cpu";
        int max_new = 256, top_k = 40;
        double temperature = 0.8;
        uint64_t seed = 1;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    add_ckpt_option(app, o->ckpt);
    CLI::Option* text = app.add_option("--prompt", o->prompt, "Prompt text, encoded with the model's tokenizer; "
                                       "default: a newline")->default_str("");
    app.add_option("--prompt-tokens", o->prompt_tokens, "Prompt as token ids, comma-separated (any vocabulary)")
        ->excludes(text);
    app.add_option("--tokenizer", o->tokenizer, "Tokenizer for the prompt and the output: SentencePiece .model, "
                   "tokenizer.json, llm.c's gpt2_tokenizer.bin (decoding only) or bytes; default: the one the "
                   "checkpoint names (beside it), or bytes for a 256-token model");
    app.add_option("--max-new-tokens", o->max_new, "Tokens to generate")->check(at_least(0));
    app.add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->check(non_negative_number());
    app.add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0: all)")->check(at_least(0));
    app.add_option("--seed", o->seed, "Seed of the sampler");
    add_device_option(app, o->device, false);
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line (no streaming)");
    return [o] {
        engine_require(o->device);
        GPT<float> m;
        SafeTensors raw;
        const std::string ckpt = load_checkpoint(o->ckpt, m, &raw);
        raw.tensors.clear();  // only the metadata is needed from here on
        Tokenizer tok;
        const bool text = tokenizer_for_checkpoint(ckpt, raw.metadata, o->tokenizer, m.V, tok);
        std::vector<int32_t> prompt;
        if (!o->prompt_tokens.empty()) {
            std::stringstream ss(o->prompt_tokens);
            std::string item;
            while (std::getline(ss, item, ',')) {
                try {
                    size_t used = 0;
                    prompt.push_back(std::stoi(item, &used));
                    if (used != item.size()) throw std::invalid_argument(item);
                } catch (const std::exception&) {
                    throw std::invalid_argument("--prompt-tokens: '" + item + "' is not a token id");
                }
            }
        } else if (!text) {
            throw std::invalid_argument("this checkpoint names no tokenizer and its vocabulary is " + std::to_string(m.V) +
                                        " tokens, not bytes: give --tokenizer FILE, or the prompt as --prompt-tokens");
        } else {
            if (!tok.can_encode)
                throw std::invalid_argument(tok.path + " decodes only (llm.c's tokenizer file): give the prompt as --prompt-tokens");
            std::vector<uint32_t> ids;
            tokenizer_encode(tok, o->prompt, ids);
            if (ids.empty()) throw std::invalid_argument("--prompt encodes to no tokens");
            prompt.assign(ids.begin(), ids.end());
        }
        for (int32_t t : prompt)
            if (t < 0 || t >= m.V)
                throw std::invalid_argument("prompt token " + std::to_string(t) + " is outside the model's vocabulary [0, " +
                                            std::to_string(m.V) + ")");
        // Streamed as text when there is a tokenizer (whole UTF-8 characters only), else as ids.
        DecodeState ds;
        Utf8Stream utf8;
        auto put = [](const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); };
        auto stream = [&](int32_t t) {
            if (text) {
                std::string piece;
                tokenizer_decode_one(tok, t, ds, piece);
                put(utf8.push(piece));
            } else {
                std::printf("%d ", t);
            }
            std::fflush(stdout);
        };
        if (!o->json && text)
            for (int32_t t : prompt) stream(t);  // the prompt as the model sees it
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<int32_t> out;
        try {
            AdamW<float> no_optimizer;
            out = engine_make(o->device, m, no_optimizer)
                      ->generate(prompt, o->max_new, o->temperature, o->top_k, o->seed,
                                 o->json ? std::function<void(int32_t)>() : stream);
        } catch (const std::runtime_error& e) {  // non-finite logits: finite weights whose outputs overflow
            if (!o->json) std::printf("\n");
            throw std::runtime_error(ckpt + ": " + e.what() + ": its outputs overflow");
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!o->json) {
            put(utf8.finish());
            std::printf("\n");
            std::fflush(stdout);  // the text first, then the timing on stderr
            std::fprintf(stderr, "%zu tokens in %.2f s (%.0f tokens/s)\n", out.size(), s, out.size() / s);
            return 0;
        }
        nlohmann::json j = {{"prompt_tokens", prompt}, {"tokens", out}, {"seconds", s}, {"device", o->device}};
        if (text) {
            Utf8Stream u;
            j["text"] = u.push(tokenizer_decode(tok, out)) + u.finish();
            j["tokenizer"] = tokenizer_kind_name(tok.kind);
        }
        print_json(j);
        return 0;
    };
}

}  // namespace mhc::cli
