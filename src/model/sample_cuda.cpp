// The KV-cache step on the GPU (model/gpt_cuda.h): mhc/sample.h's gpt_forward_token with the same
// wiring (model/block.h) through the CUDA ops, one position per call; the cache and the step's
// activations live on the device, only the logits come back.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "model/block.h"
#include "model/cuda_ops.h"
#include "model/gpt_cuda.h"

namespace mhc {

void kv_cache_cuda_init(KVCacheCuda& kv, const GptCuda& g) {
    const GPT<float>& m = g.host;
    const long C = m.C, S = (long)m.n * m.C;
    long stride = 0, scratch = 0;
    for (const auto& s : m.sites) {
        stride = std::max(stride, (long)conn_cache_stride(s));
        scratch = std::max(scratch, cuda::conn_scratch_size_cuda(s, 1));
    }
    kv.k.resize((size_t)m.L * m.Tmax * C);
    kv.v.resize(kv.k.size());
    // One buffer in 256-byte pieces (the connections' scratch holds doubles); the connection cache
    // and scratch serve every site in turn, as on the CPU.
    const std::pair<float**, long> parts[] = {
        {&kv.Xa, S}, {&kv.Xb, S}, {&kv.u, C}, {&kv.ln, C}, {&kv.mean, 1}, {&kv.rstd, 1},
        {&kv.qkv, 3 * C}, {&kv.att, (long)m.H * m.Tmax}, {&kv.atty, C}, {&kv.y, C},
        {&kv.fch, 4 * C}, {&kv.fcg, 4 * C}, {&kv.conn_cache, stride}, {&kv.conn_scratch, scratch},
        {&kv.lnf, S}, {&kv.lnf_mean, m.n}, {&kv.lnf_rstd, m.n}, {&kv.hsum, C}, {&kv.logits, m.V}};
    long total = 0;
    for (const auto& p : parts) total += (p.second + 63) / 64 * 64;
    kv.buf.resize(total);
    long off = 0;
    for (const auto& p : parts) *p.first = kv.buf.data() + off, off += (p.second + 63) / 64 * 64;
    kv.token.resize(1);
    kv.host_logits.resize(m.V);
    kv.pos = 0;
}

const float* gpt_cuda_forward_token(const GptCuda& g, KVCacheCuda& kv, int32_t token) {
    const GPT<float>& m = g.host;
    if (kv.buf.empty() || kv.k.size() != (size_t)m.L * m.Tmax * m.C || kv.host_logits.size() != (size_t)m.V)
        throw std::invalid_argument("KV cache is not sized for this model (call kv_cache_cuda_init)");
    if (token < 0 || token >= m.V)
        throw std::invalid_argument("token id " + std::to_string(token) + " out of range 0.." +
                                    std::to_string(m.V - 1));
    if (kv.pos >= m.Tmax)
        throw std::length_error("KV cache full: block_size " + std::to_string(m.Tmax) +
                                " positions already fed (reset it and re-feed a shorter context)");
    const int C = m.C, pos = kv.pos;
    const float* P = g.param.data();
    const detail::CudaOps ops{&m.sites, &g.dsites, nullptr, nullptr, nullptr, {}};  // fp32 products
    const GPT<float>::Block a = {kv.ln, kv.mean, kv.rstd, kv.qkv, kv.att, kv.atty,
                                 kv.ln, kv.mean, kv.rstd, kv.fch, kv.fcg};
    const GPT<float>::Site site = {kv.conn_cache, kv.u, kv.y};
    kv.token.upload(&token, 1);
    float *X = kv.Xa, *Xmid = kv.Xb;
    ops.encoder_forward(X, kv.token.data(), P + m.wte, P + m.wpe + (long)pos * C, 1, 1, C, m.n);
    for (int i = 0; i < m.L; i++) {
        float* K = kv.k.data() + (long)i * m.Tmax * C;
        float* V = kv.v.data() + (long)i * m.Tmax * C;
        auto attend = [&](const float* qkv, float* atty, float* att) {
            ops.attention_cached_forward(atty, att, qkv, K, V, pos, C, m.H, m.Tmax);
        };
        detail::block_forward(ops, m, i, P, X, Xmid, X, a, site, site, kv.conn_scratch, 1, attend);
    }
    detail::head_forward(ops, m, P, X, kv.lnf, kv.lnf_mean, kv.lnf_rstd, kv.hsum, kv.logits, 1);
    cuda::copy_to_host(kv.host_logits.data(), kv.logits, (size_t)m.V * sizeof(float));
    kv.pos++;
    return kv.host_logits.data();
}

}  // namespace mhc
