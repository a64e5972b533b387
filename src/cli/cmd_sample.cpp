// mhc sample
#include <algorithm>
#include <chrono>
#include <sstream>

#include "cli/cli.h"
#include "train/run_dir.h"
#include "mhc/checkpoint.h"
#include "mhc/sample.h"
#include "mhc/tokenizer.h"
#include "train/engine.h"

namespace mhc::cli {

Runner add_sample(CLI::App& app) {
    struct Opts {
        std::string ckpt, prompt = "\n", prompt_tokens, tokenizer, device = "cpu";
        int max_new = 256, top_k = 40, num_samples = 1;
        double temperature = 0.8, top_p = 1.0;
        uint64_t seed = 1;
        bool json = false, ignore_eos = false;
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
    app.add_option("--max-new-tokens", o->max_new, "Tokens to generate at most (fewer when a sample ends at a "
                   "special token)")->check(at_least(0));
    app.add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->check(non_negative_number());
    app.add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0: all)")->check(at_least(0));
    app.add_option("--top-p", o->top_p, "Then among the fewest most likely tokens whose probabilities reach p "
                   "(nucleus sampling; 1: all)")->check(positive_fraction());
    app.add_option("--num-samples", o->num_samples, "Samples to draw, sample i with seed --seed + i (each one "
                   "the same as a run of that seed alone)")->check(at_least(1));
    app.add_flag("--ignore-eos", o->ignore_eos, "Do not end a sample at a special token of the tokenizer "
                 "(end of text: <|endoftext|>, </s>): generate all --max-new-tokens");
    app.add_option("--seed", o->seed, "Seed of the sampler");
    add_device_option(app, o->device, false);
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line (no streaming); with "
                 "--num-samples above 1 the samples are its list \"samples\"");
    return [o] {
        engine_require(o->device);
        GPT<float> m;
        SafeTensors raw;
        const std::string ckpt = run_dir::load_model(o->ckpt, m, &raw);
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
        Sampling sampling;
        sampling.temperature = o->temperature;
        sampling.top_k = o->top_k;
        sampling.top_p = o->top_p;
        if (text) {
            sampling.allowed = tokenizer_decodable(tok, m.V);  // never GPT-2's padding, 50257..50303
            if (!o->ignore_eos) sampling.stop = tokenizer_special_ids(tok, m.V);  // a document ends there
        }
        AdamW<float> no_optimizer;
        auto engine = engine_make(o->device, m, no_optimizer);
        auto put = [](const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); };
        nlohmann::json samples = nlohmann::json::array();
        long total = 0;
        const auto t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < o->num_samples; k++) {
            sampling.seed = o->seed + (uint64_t)k;
            if (!o->json && o->num_samples > 1)
                std::printf("%s--- sample %d of %d (seed %llu) ---\n", k ? "\n" : "", k + 1, o->num_samples,
                            (unsigned long long)sampling.seed);
            // Streamed as text when there is a tokenizer (whole UTF-8 characters only), else as ids.
            DecodeState ds;
            Utf8Stream utf8;
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
            std::vector<int32_t> out;
            try {
                out = engine->generate(prompt, o->max_new, sampling, o->json ? std::function<void(int32_t)>() : stream);
            } catch (const std::runtime_error& e) {  // non-finite logits: finite weights whose outputs overflow
                if (!o->json) std::printf("\n");
                throw std::runtime_error(ckpt + ": " + e.what() + ": its outputs overflow");
            }
            total += (long)out.size();
            const bool stopped = !out.empty() && std::find(sampling.stop.begin(), sampling.stop.end(), out.back()) !=
                                                     sampling.stop.end();
            if (!o->json) {
                put(utf8.finish());
                std::printf("\n");
                std::fflush(stdout);
                continue;
            }
            nlohmann::json j = {{"seed", sampling.seed}, {"tokens", out}, {"finish_reason", stopped ? "stop" : "length"}};
            if (text) j["text"] = tokenizer_decode_utf8(tok, out);
            samples.push_back(j);
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!o->json) {  // the text first, then the timing on stderr
            std::fprintf(stderr, "%ld tokens in %.2f s (%.0f tokens/s)\n", total, s, total / s);
            return 0;
        }
        nlohmann::json j = {{"prompt_tokens", prompt}, {"seconds", s}, {"device", o->device}};
        if (text) j["tokenizer"] = tokenizer_kind_name(tok.kind);
        if (o->num_samples == 1) j.update(samples[0]);
        else j["samples"] = samples;
        print_json(j);
        return 0;
    };
}

}  // namespace mhc::cli
