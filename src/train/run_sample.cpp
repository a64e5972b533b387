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
        s.allowed = tokenizer_decodable(*tok, V);
        s.stop = tokenizer_special_ids(*tok, V);
        if (tok->doc_start >= 0 && tok->doc_start < V) {
            prompt = {tok->doc_start};
        } else if (tok->can_encode) {
            std::vector<uint32_t> ids;
            tokenizer_encode(*tok, "\n", ids);
            prompt.assign(ids.begin(), ids.end());
        }
    }
    if (prompt.empty()) prompt = {0};
    try {  // non-finite logits of finite weights, a device out of memory: said, never fatal
        const std::vector<int32_t> out = e.generate(prompt, count, s, {});
        nlohmann::json j = {{"tokens", out}};
        if (tok) j["text"] = tokenizer_decode_utf8(*tok, out);
        return j;
    } catch (const std::exception& err) {
        return {{"error", err.what()}};
    }
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
