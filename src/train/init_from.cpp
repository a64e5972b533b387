// Starting a run from another run's weights (see init_from.h).
#include "train/init_from.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "mhc/safetensors.h"
#include "mhc/sample.h"
#include "mhc/tokenizer.h"
#include "train/run_dir.h"

namespace mhc {

namespace {
std::string named(const TokenizerRef& r) { return r.kind + (r.crc32.empty() ? "" : " " + r.crc32); }

// Whether two tokenizers give every id the same text, whatever their files (GPT-2's tokenizer.json
// and llm.c's gpt2_tokenizer.bin do).
bool same_text(const Tokenizer& a, const Tokenizer& b) {
    return a.vocab_size == b.vocab_size && a.pieces == b.pieces && a.has_piece == b.has_piece &&
           a.special == b.special && a.strip_line_space == b.strip_line_space;
}
}  // namespace

InitFrom init_from_load(const TrainOptions& opt, const TrainConfig& cfg, const TokenData& train, GPT<float>& m) {
    const TokenizerRef& data_tokenizer = train.tokenizer;
    InitFrom init;
    SafeTensors raw;
    init.file = std::filesystem::absolute(run_dir::load_model(opt.init_from, m, &raw)).lexically_normal().string();
    raw.tensors.clear();
    if (auto it = raw.metadata.find("checksum"); it != raw.metadata.end()) init.checksum = it->second;
    const std::string diff = config_json_difference(model_config_to_json(m.cfg), model_config_to_json(cfg.model),
                                                    "in the checkpoint", "in the config");
    if (!diff.empty())
        throw std::runtime_error("--init-from " + init.file + ": its model differs from the config: " + diff +
                                 " (a run started from a checkpoint has its model; leave the model keys out, or set them "
                                 "as the checkpoint has them)");

    TokenizerRef had;  // what the checkpoint was trained with
    if (auto it = raw.metadata.find("tokenizer"); it != raw.metadata.end()) had = tokenizer_ref_from_json(it->second);
    TokenizerRef now;  // what this run's data is in
    init.tokenizer = opt.tokenizer;
    if (!opt.tokenizer.empty()) {
        now = tokenizer_ref(tokenizer_load_given(opt.tokenizer), "");
    } else if (!data_tokenizer.empty()) {
        now = data_tokenizer;
    } else if (!had.empty()) {  // raw ids: the checkpoint's tokenizer goes on with them
        Tokenizer tok;
        tokenizer_for_checkpoint(init.file, raw.metadata, "", m.V, tok);
        init.tokenizer = tok.kind == TokenizerKind::bytes ? "bytes" : tok.path;
    }
    if (!had.empty() && !now.empty() &&
        (had.kind != now.kind || (!had.crc32.empty() && !now.crc32.empty() && had.crc32 != now.crc32))) {
        // Other files can still be one vocabulary: compared id by id when both can be read.
        bool same = false;
        try {
            Tokenizer a;
            tokenizer_for_checkpoint(init.file, raw.metadata, "", m.V, a);
            same = same_text(a, tokenizer_load_given(!opt.tokenizer.empty() ? opt.tokenizer
                                                     : now.kind == "bytes"   ? "bytes"
                                                                             : now.file));
        } catch (const std::exception&) {
        }
        if (!same)
            throw std::runtime_error("--init-from " + init.file + " was trained with the tokenizer " + named(had) +
                                     ", this run's is " + named(now) + ": the same ids would stand for other text "
                                     "(prepare the data with the checkpoint's tokenizer)");
    }
    // A few positions through the KV cache (little memory whatever the batch): overflowing outputs
    // show at once; later ones meet the training's NaN guard.
    {
        std::vector<int32_t> first((size_t)std::min<int64_t>(8, std::min<int64_t>(train.tokens.size(), m.Tmax)));
        train.tokens.copy(0, (int64_t)first.size(), first.data());
        KVCache<float> kv;
        kv_cache_init(kv, m);
        for (int32_t t : first) {
            if (t < 0 || t >= m.V) break;  // the data's own check says it better, later
            const float* logits = gpt_forward_token(m, kv, t);
            for (int i = 0; i < m.V; i++)
                if (!std::isfinite(logits[i]))
                    throw std::runtime_error("--init-from " + init.file + ": its weights are finite but its outputs "
                                             "overflow (non-finite logits on the data's first tokens): take an earlier checkpoint");
        }
    }
    return init;
}

}  // namespace mhc
