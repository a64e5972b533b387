// Inference (see mhc/sample.h): the full forward of SPEC §3 restricted to the newest position, over
// a cache of the keys and values of the earlier ones, and seeded sampling from the logits.
#include "mhc/sample.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "model/block.h"
#include "model/cpu_ops.h"

namespace mhc {

namespace {

template <typename T> bool fits(const KVCache<T>& kv, const GPT<T>& m) {
    return !kv.buf.empty() && kv.L == m.L && kv.C == m.C && kv.H == m.H && kv.n == m.n &&
           kv.V == m.V && kv.Tmax == m.Tmax;
}

}  // namespace

template <typename T> void kv_cache_init(KVCache<T>& kv, const GPT<T>& m) {
    if (m.L < 1 || m.C < 1 || m.V < 1 || m.Tmax < 1 || m.param.empty())
        throw std::invalid_argument("kv_cache_init: the model is not built (call gpt_build first)");
    kv.L = m.L, kv.C = m.C, kv.H = m.H, kv.n = m.n, kv.V = m.V, kv.Tmax = m.Tmax;
    const long C = m.C, S = (long)m.n * m.C;
    long stride = 0, scratch = 0;
    for (const auto& s : m.sites) {
        stride = std::max(stride, (long)conn_cache_stride(s));
        scratch = std::max(scratch, conn_scratch_size(s, 1));
    }
    kv.k.assign((size_t)m.L * m.Tmax * C, T(0));
    kv.v.assign(kv.k.size(), T(0));
    // One buffer for the step's activations; the connection cache and scratch are reused by every
    // site in turn, since a site's post reads only its own pre's cache.
    const std::pair<T**, long> parts[] = {
        {&kv.Xa, S}, {&kv.Xb, S}, {&kv.u, C}, {&kv.ln, C}, {&kv.mean, 1}, {&kv.rstd, 1},
        {&kv.qkv, 3 * C}, {&kv.att, (long)m.H * m.Tmax}, {&kv.atty, C}, {&kv.y, C},
        {&kv.fch, 4 * C}, {&kv.fcg, 4 * C}, {&kv.conn_cache, stride}, {&kv.conn_scratch, scratch},
        {&kv.lnf, S}, {&kv.lnf_mean, m.n}, {&kv.lnf_rstd, m.n}, {&kv.hsum, C}, {&kv.logits, m.V}};
    long total = 0;
    for (const auto& p : parts) total += p.second;
    kv.buf.assign(total, T(0));
    long off = 0;
    for (const auto& p : parts) *p.first = kv.buf.data() + off, off += p.second;
    kv.pos = 0;
    kv.positions_processed = 0;
}

template <typename T> void kv_cache_reset(KVCache<T>& kv) { kv.pos = 0; }

template <typename T> const T* gpt_forward_token(const GPT<T>& m, KVCache<T>& kv, int32_t token) {
    if (!fits(kv, m))
        throw std::invalid_argument("KV cache is not sized for this model (call kv_cache_init)");
    if (token < 0 || token >= m.V)
        throw std::invalid_argument("token id " + std::to_string(token) + " out of range 0.." +
                                    std::to_string(m.V - 1));
    if (kv.pos >= kv.Tmax)
        throw std::length_error("KV cache full: block_size " + std::to_string(kv.Tmax) +
                                " positions already fed (reset it and re-feed a shorter context)");
    const int C = m.C, pos = kv.pos;
    const T* P = m.param.data();
    const detail::CpuOps ops;
    // One set of activations for every block and site in turn: a site's post reads only its own
    // pre's cache, and nothing is kept for a backward.
    const typename GPT<T>::Block a = {kv.ln, kv.mean, kv.rstd, kv.qkv, kv.att, kv.atty,
                                      kv.ln, kv.mean, kv.rstd, kv.fch, kv.fcg};
    const typename GPT<T>::Site site = {kv.conn_cache, kv.u, kv.y};
    T *X = kv.Xa, *Xmid = kv.Xb;  // the streams before a block (and after it) / between its sites
    ops.encoder_forward(X, &token, P + m.wte, P + m.wpe + (long)pos * C, 1, 1, C, m.n);
    for (int i = 0; i < m.L; i++) {
        T* K = kv.k.data() + (long)i * kv.Tmax * C;
        T* V = kv.v.data() + (long)i * kv.Tmax * C;
        auto attend = [&](const T* qkv, T* atty, T* att) {
            ops.attention_cached_forward(atty, att, qkv, K, V, pos, C, m.H, kv.Tmax);
        };
        detail::block_forward(ops, m, i, P, X, Xmid, X, a, site, site, kv.conn_scratch, 1, attend);
    }
    detail::head_forward(ops, m, P, X, kv.lnf, kv.lnf_mean, kv.lnf_rstd, kv.hsum, kv.logits, 1);
    kv.pos++;
    kv.positions_processed++;
    return kv.logits;
}

namespace {
void check_sampling(const Sampling& s) {
    if (!(s.temperature >= 0) || !std::isfinite(s.temperature))
        throw std::invalid_argument("temperature must be a finite number >= 0, got " + std::to_string(s.temperature));
    if (s.top_k < 0) throw std::invalid_argument("top_k must be >= 0 (0: no limit), got " + std::to_string(s.top_k));
    if (!(s.top_p > 0 && s.top_p <= 1))
        throw std::invalid_argument("top_p must be in (0, 1] (1: no limit), got " + std::to_string(s.top_p));
}
}  // namespace

template <typename T>
int32_t sample_token(const T* logits, int V, const Sampling& s, SplitMix64& rng, std::vector<int32_t>& work) {
    check_sampling(s);
    if (V < 1) throw std::invalid_argument("sample_token: vocabulary size must be >= 1");
    if (!s.allowed.empty() && s.allowed.size() != (size_t)V)
        throw std::invalid_argument("sampling: " + std::to_string(s.allowed.size()) + " allowed flags for a vocabulary of " +
                                    std::to_string(V));
    auto ok = [&](int32_t i) { return s.allowed.empty() || s.allowed[(size_t)i] != 0; };
    for (int i = 0; i < V; i++)
        if (!std::isfinite((double)logits[i]))
            throw std::runtime_error("sampling: the model produced a non-finite logit (token " +
                                     std::to_string(i) + ")");
    // A strict total order (larger logit first, then lower id): the candidate set never depends on
    // the sorting algorithm, so the draws are the same with every standard library.
    auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    work.clear();  // the candidates, by id
    for (int32_t i = 0; i < V; i++)
        if (ok(i)) work.push_back(i);
    const int n = (int)work.size();
    if (n == 0) throw std::invalid_argument("sampling: no token id is allowed");
    if (s.temperature == 0) {
        int32_t best = work[0];
        for (int32_t i : work)
            if (before(i, best)) best = i;
        return best;
    }
    int K = s.top_k > 0 && s.top_k < n ? s.top_k : n;
    if (s.top_p < 1) {
        // The nucleus needs the candidates most likely first; that order is also a fixed one to sum in.
        std::partial_sort(work.begin(), work.begin() + K, work.end(), before);
    } else if (K < n) {
        std::nth_element(work.begin(), work.begin() + (K - 1), work.end(), before);
        std::sort(work.begin(), work.begin() + K);  // candidates by id: a fixed summation order
    }
    double mx = -INFINITY;
    for (int i = 0; i < K; i++) mx = std::max(mx, (double)logits[work[i]]);
    // Weights exp((l - max) / temperature) in double: the largest is 1, tiny temperatures underflow
    // the others to 0 (greedy in the limit) instead of overflowing.
    auto weight = [&](int i) { return std::exp(((double)logits[work[i]] - mx) / s.temperature); };
    double z = 0;
    for (int i = 0; i < K; i++) z += weight(i);
    if (s.top_p < 1) {  // the first candidate weighs 1 and top_p > 0: at least one is kept
        const double target = s.top_p * z;
        double acc = 0;
        int keep = 0;
        while (keep < K && acc < target) acc += weight(keep++);
        K = keep;
        z = acc;
    }
    const double r = rng.uniform() * z;
    double acc = 0;
    int32_t last = work[0];
    for (int i = 0; i < K; i++) {
        const double wi = weight(i);
        if (wi <= 0) continue;
        acc += wi;
        last = work[i];
        if (r < acc) return work[i];
    }
    return last;  // r rounded up to z: the last candidate with a positive weight
}

template <typename T>
std::vector<int32_t> generate_with(int V, int capacity, const std::function<const T*(int32_t)>& feed,
                                   const std::function<void()>& reset, const std::vector<int32_t>& prompt,
                                   int max_new_tokens, const Sampling& s,
                                   const std::function<void(int32_t)>& on_token) {
    if (prompt.empty()) throw std::invalid_argument("generate: the prompt is empty (give at least one token)");
    for (int32_t t : prompt)
        if (t < 0 || t >= V)
            throw std::invalid_argument("generate: prompt token " + std::to_string(t) +
                                        " out of range 0.." + std::to_string(V - 1));
    for (int32_t t : s.stop)
        if (t < 0 || t >= V)
            throw std::invalid_argument("generate: stop token " + std::to_string(t) + " out of range 0.." +
                                        std::to_string(V - 1));
    check_sampling(s);
    if (!s.allowed.empty() && s.allowed.size() != (size_t)V)
        throw std::invalid_argument("generate: " + std::to_string(s.allowed.size()) +
                                    " allowed flags for a vocabulary of " + std::to_string(V));
    if (max_new_tokens < 0)
        throw std::invalid_argument("max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
    reset();
    std::vector<int32_t> out;
    out.reserve(max_new_tokens);
    if (max_new_tokens == 0) return out;

    // ctx: the tokens in the cache (plus, briefly, the one about to be fed).
    const size_t Tmax = (size_t)capacity, keep = std::max<size_t>(1, Tmax / 2);
    std::vector<int32_t> ctx;
    ctx.reserve(Tmax + 1);
    ctx.assign(prompt.end() - (long)std::min(prompt.size(), Tmax), prompt.end());
    const T* logits = nullptr;
    for (int32_t t : ctx) logits = feed(t);
    size_t fed = ctx.size();  // positions in the cache
    SplitMix64 rng(s.seed);
    std::vector<int32_t> work;
    work.reserve(V);
    for (int i = 0; i < max_new_tokens; i++) {
        const int32_t tok = sample_token(logits, V, s, rng, work);
        out.push_back(tok);
        if (on_token) on_token(tok);
        if (i + 1 == max_new_tokens) break;  // the last token's logits are never needed
        if (std::find(s.stop.begin(), s.stop.end(), tok) != s.stop.end()) break;
        ctx.push_back(tok);
        if (fed < Tmax) {
            logits = feed(tok);
            fed++;
            continue;
        }
        // Full: positions past block_size were never trained, so restart from the last
        // block_size/2 tokens (the new one included) rather than sliding the positions.
        ctx.erase(ctx.begin(), ctx.end() - (long)keep);
        reset();
        for (int32_t t : ctx) logits = feed(t);
        fed = ctx.size();
    }
    return out;
}

template <typename T>
std::vector<int32_t> generate(const GPT<T>& m, KVCache<T>& kv, const std::vector<int32_t>& prompt,
                              int max_new_tokens, const Sampling& s, const std::function<void(int32_t)>& on_token) {
    if (!fits(kv, m)) kv_cache_init(kv, m);
    return generate_with<T>(
        m.V, m.Tmax, [&](int32_t t) { return gpt_forward_token(m, kv, t); }, [&] { kv_cache_reset(kv); }, prompt,
        max_new_tokens, s, on_token);
}

template <typename T>
std::vector<int32_t> generate(const GPT<T>& m, const std::vector<int32_t>& prompt, int max_new_tokens,
                              const Sampling& s, const std::function<void(int32_t)>& on_token) {
    KVCache<T> kv;
    return generate(m, kv, prompt, max_new_tokens, s, on_token);
}

#define MHC_SAMPLE_INST(T)                                                                        \
    template void kv_cache_init<T>(KVCache<T>&, const GPT<T>&);                                   \
    template void kv_cache_reset<T>(KVCache<T>&);                                                 \
    template const T* gpt_forward_token<T>(const GPT<T>&, KVCache<T>&, int32_t);                  \
    template int32_t sample_token<T>(const T*, int, const Sampling&, SplitMix64&, std::vector<int32_t>&); \
    template std::vector<int32_t> generate<T>(const GPT<T>&, KVCache<T>&, const std::vector<int32_t>&, \
                                              int, const Sampling&, const std::function<void(int32_t)>&); \
    template std::vector<int32_t> generate<T>(const GPT<T>&, const std::vector<int32_t>&, int,     \
                                              const Sampling&, const std::function<void(int32_t)>&); \
    template std::vector<int32_t> generate_with<T>(int, int, const std::function<const T*(int32_t)>&, \
                                                   const std::function<void()>&, const std::vector<int32_t>&, \
                                                   int, const Sampling&, const std::function<void(int32_t)>&);
MHC_SAMPLE_INST(float)
MHC_SAMPLE_INST(double)

}  // namespace mhc
