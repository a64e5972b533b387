// mhc sample
#include <chrono>
#include <sstream>

#include "cli/cli.h"
#include "mhc/sample.h"

namespace mhc::cli {

Runner add_sample(CLI::App& app) {
    struct Opts {
        std::string ckpt, prompt = "\n", prompt_tokens;
        int max_new = 256, top_k = 40;
        double temperature = 0.8;
        uint64_t seed = 1;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    app.add_option("--ckpt", o->ckpt, "Checkpoint (.safetensors), or a run directory (its latest checkpoint)")
        ->required();
    CLI::Option* text = app.add_option("--prompt", o->prompt, "Prompt text, for byte-level models (vocab 256); "
                                       "default: a newline")->default_str("");
    app.add_option("--prompt-tokens", o->prompt_tokens, "Prompt as token ids, comma-separated (any vocabulary)")
        ->excludes(text);
    app.add_option("--max-new-tokens", o->max_new, "Tokens to generate")->check(at_least(0));
    app.add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->check(non_negative_number());
    app.add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0: all)")->check(at_least(0));
    app.add_option("--seed", o->seed, "Seed of the sampler");
    app.add_flag("--json", o->json, "Print the result as one JSON object on the last line (no streaming)");
    return [o] {
        GPT<float> m;
        const std::string ckpt = load_checkpoint(o->ckpt, m);
        const bool bytes = m.V == 256;
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
        } else if (bytes) {
            for (unsigned char ch : o->prompt) prompt.push_back(ch);
        } else {
            throw std::invalid_argument("this model's vocabulary is " + std::to_string(m.V) +
                                        " tokens, not bytes: give the prompt with --prompt-tokens");
        }
        // Stream tokens as they come (text for byte models, ids otherwise), unless --json.
        auto stream = [&](int32_t t) {
            if (bytes) std::fputc((unsigned char)t, stdout);
            else std::printf("%d ", t);
            std::fflush(stdout);
        };
        if (!o->json && bytes) std::fwrite(o->prompt.data(), 1, o->prompt.size(), stdout);
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<int32_t> out;
        try {
            out = generate(m, prompt, o->max_new, o->temperature, o->top_k, o->seed,
                           o->json ? std::function<void(int32_t)>() : stream);
        } catch (const std::runtime_error& e) {  // non-finite logits: finite weights whose outputs overflow
            if (!o->json) std::printf("\n");
            throw std::runtime_error(ckpt + ": " + e.what() + ": its outputs overflow");
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!o->json) {
            std::printf("\n");
            std::fflush(stdout);  // the text first, then the timing on stderr
            std::fprintf(stderr, "%zu tokens in %.2f s (%.0f tokens/s)\n", out.size(), s, out.size() / s);
            return 0;
        }
        nlohmann::json j = {{"prompt_tokens", prompt}, {"tokens", out}, {"seconds", s}};
        if (bytes) j["text"] = bytes_of(out);
        print_json(j);
        return 0;
    };
}

}  // namespace mhc::cli
