// mhc/sample.h — inference: an incremental forward with a KV cache, and token sampling.
//
// The cache and every scratch buffer live in a KVCache, outside the model, so a GPT that is being
// trained can be sampled from without disturbing its activations: the model is only read.
//
//   KVCache<float> kv;
//   kv_cache_init(kv, m);                              // allocates everything, once
//   for (int32_t tok : tokens) logits = gpt_forward_token(m, kv, tok);   // one position per call
//
// gpt_forward_token computes exactly the full forward (SPEC §3) of the newest position: embedding
// into n streams, per block conn_pre -> LayerNorm -> c_attn -> attention of the new query over the
// cached keys/values 0..pos -> c_proj -> conn_post (same for the MLP site), ln_f per stream, sum of
// the streams, tied head. The cache holds keys and values only (no tokens), so earlier positions
// are never recomputed: every call processes one position (counted in positions_processed).
//
// generate() feeds a prompt and samples. Context past block_size: when the cache is full, the last
// block_size/2 tokens of the sequence are kept, the cache is reset and they are fed again (a
// "sliding restart"; the model never sees positions beyond block_size, which it was not trained on).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mhc/gpt.h"
#include "mhc/rng.h"  // SplitMix64, the sampler's generator

namespace mhc {

// Keys and values of every position processed so far, per layer, plus the scratch of one step.
// Not copyable (it holds pointers into its own buffer); movable.
template <typename T> struct KVCache {
    int L = 0, C = 0, H = 0, n = 1, V = 0, Tmax = 0;  // the model shape it was made for
    int pos = 0;                  // positions in the cache = position of the next token
    long positions_processed = 0; // every position ever computed (one per gpt_forward_token call)
    std::vector<T> k, v;          // [L, Tmax, C], heads as contiguous chunks of C/H (as in qkv)
    std::vector<T> buf;           // the step's activations, laid out once by kv_cache_init
    T *Xa = nullptr, *Xb = nullptr, *u = nullptr, *ln = nullptr, *mean = nullptr, *rstd = nullptr;
    T *qkv = nullptr, *att = nullptr, *atty = nullptr, *y = nullptr, *fch = nullptr, *fcg = nullptr;
    T *conn_cache = nullptr, *conn_scratch = nullptr, *lnf = nullptr, *lnf_mean = nullptr;
    T *lnf_rstd = nullptr, *hsum = nullptr, *logits = nullptr;

    KVCache() = default;
    KVCache(const KVCache&) = delete;
    KVCache& operator=(const KVCache&) = delete;
    KVCache(KVCache&&) = default;  // vectors keep their storage when moved: the pointers stay valid
    KVCache& operator=(KVCache&&) = default;
};

// Sizes the cache for model m (capacity block_size) and empties it. All allocation happens here.
template <typename T> void kv_cache_init(KVCache<T>& kv, const GPT<T>& m);
// Empties the cache (pos = 0) without freeing anything.
template <typename T> void kv_cache_reset(KVCache<T>& kv);

// Feeds one token at position kv.pos (then kv.pos += 1) and returns the logits [V] for the next
// token (they live in kv.logits until the next call). Throws std::invalid_argument for a token
// outside [0, V) or a cache made for another model shape, std::length_error when the cache is full.
template <typename T> const T* gpt_forward_token(const GPT<T>& m, KVCache<T>& kv, int32_t token);

// How each token is chosen. Temperature 0 is greedy: the largest logit (ties: lower id), the rest
// unused. Otherwise a draw from softmax(logits / temperature) over the candidates: the top_k largest
// logits when 0 < top_k < V (ties: lower id), then, when top_p < 1, the fewest of those, most likely
// first, whose probabilities add up to at least top_p (nucleus sampling; at least one).
struct Sampling {
    double temperature = 0.8;   // >= 0, finite
    int top_k = 40;             // >= 0 (0: all)
    double top_p = 1.0;         // in (0, 1]
    uint64_t seed = 1;          // of the draws (generate); sample_token takes a generator instead
    std::vector<int32_t> stop;  // generate() ends after one of these ids (it is returned): end of text
    // Empty: every id may be drawn. Else V flags, 1 where an id may be: those the tokenizer can
    // decode (a model padded past its tokenizer's vocabulary never writes the padding).
    std::vector<uint8_t> allowed;
};

// Chooses a token from logits [V] as s says (its seed and stop unused), among s.allowed's ids.
// `work` is scratch, grown on first use. Throws std::invalid_argument for options out of range (an
// `allowed` of another size than V, or allowing nothing), std::runtime_error on a non-finite logit.
template <typename T>
int32_t sample_token(const T* logits, int V, const Sampling& s, SplitMix64& rng, std::vector<int32_t>& work);

// Feeds the prompt and returns up to max_new_tokens new tokens (the prompt is not included; fewer
// when a stop id comes first), calling on_token with each one as soon as it is chosen. A prompt
// longer than block_size keeps its last block_size tokens. Throws std::invalid_argument for an
// empty prompt, a prompt or stop token outside [0, V), sampling options out of range (above),
// max_new_tokens < 0.
template <typename T>
std::vector<int32_t> generate(const GPT<T>& m, const std::vector<int32_t>& prompt, int max_new_tokens,
                              const Sampling& s, const std::function<void(int32_t)>& on_token = {});
// The same with a caller-owned cache (reset first; sized for m if it is not), to reuse its
// buffers across calls or to read its counters afterwards.
template <typename T>
std::vector<int32_t> generate(const GPT<T>& m, KVCache<T>& kv, const std::vector<int32_t>& prompt,
                              int max_new_tokens, const Sampling& s, const std::function<void(int32_t)>& on_token = {});

// generate()'s loop over any incremental forward (the GPU's too): feed(token) feeds one position
// and returns the logits [V] of the next token (host memory, valid until the next call); reset()
// empties the cache, which holds `capacity` positions (block_size). The same checks, prompt
// handling, sliding restart, draws and stops as generate().
template <typename T>
std::vector<int32_t> generate_with(int V, int capacity, const std::function<const T*(int32_t)>& feed,
                                   const std::function<void()>& reset, const std::vector<int32_t>& prompt,
                                   int max_new_tokens, const Sampling& s,
                                   const std::function<void(int32_t)>& on_token = {});

}  // namespace mhc
