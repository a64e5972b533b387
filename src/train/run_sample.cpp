// Samples of the model while it trains (see run_sample.h).
#include "train/run_sample.h"

#include <stdexcept>
#include <vector>

#include "mhc/sample.h"

namespace mhc {

nlohmann::json run_sample(Engine& e, const Tokenizer* tok, int V, int count, uint64_t seed) {
    Sampling s;
    s.seed = seed;
    std::vector<int32_t> prompt;
    if (tok) {
        for (int id = 0; id < tok->vocab_size && id < V; id++)
            if (tok->special[(size_t)id]) s.stop.push_back(id);
        if (!s.stop.empty()) {
            prompt = {s.stop[0]};
        } else if (tok->can_encode) {
            std::vector<uint32_t> ids;
            tokenizer_encode(*tok, "\n", ids);
            prompt.assign(ids.begin(), ids.end());
        }
    }
    if (prompt.empty()) prompt = {0};
    std::vector<int32_t> out;
    try {
        out = e.generate(prompt, count, s, {});
    } catch (const std::runtime_error& err) {  // non-finite logits of finite weights: said, not fatal
        return {{"error", err.what()}};
    }
    nlohmann::json j = {{"tokens", out}};
    if (tok) {
        Utf8Stream u;
        j["text"] = u.push(tokenizer_decode(*tok, out)) + u.finish();
    }
    return j;
}

std::string run_sample_lines(long step, const nlohmann::json& sample) {
    std::string s = "sample at step " + std::to_string(step) + ":";
    if (sample.contains("error")) return s + " none (" + sample["error"].get<std::string>() + ")";
    if (sample.contains("text")) return s + "\n" + sample["text"].get<std::string>();
    s += "\n";
    for (const auto& t : sample["tokens"]) s += std::to_string(t.get<int32_t>()) + " ";
    return s;
}

}  // namespace mhc
