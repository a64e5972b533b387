// GPT parameter layout (SPEC §4 names, flat buffer) and initialisation (SPEC §3).
#include <cmath>
#include <stdexcept>

#include "mhc/gpt.h"
#include "mhc/rng.h"

namespace mhc {

long gpt_param_count_of(const std::vector<ParamTensor>& params) {
    return params.empty() ? 0 : params.back().offset + params.back().size;
}

std::string nonfinite_tensor(const std::vector<ParamTensor>& params, const std::vector<float>& buf) {
    if ((long)buf.size() < gpt_param_count_of(params)) return "";
    for (const ParamTensor& t : params) {
        bool finite = true;
        const float* p = buf.data() + t.offset;
#pragma omp parallel for simd reduction(&& : finite) if (t.size >= 65536)
        for (long i = 0; i < t.size; i++) finite = finite && std::isfinite(p[i]);
        if (!finite) return t.name;
    }
    return "";
}

ConnConfig gpt_site_config(const ModelConfig& cfg, int k) {
    ConnConfig cc;
    cc.variant = cfg.hyper_conn_type;
    // A single stream needs no n; any other fixed n (ohc: 4) is the site's to check.
    cc.n = variant_info(cc.variant).fixed_n == 1 ? 1 : cfg.hyper_conn_n;
    cc.C = cfg.n_embd;
    cc.site_index = k;
    cc.sinkhorn_iters = cfg.sinkhorn_iters;
    cc.cayley_iters = cfg.cayley_iters;
    cc.perm_subset = cfg.hyper_conn_perm_subset;
    cc.perm_seed = cfg.hyper_conn_perm_seed + (uint64_t)k;  // each site draws its own subset
    return cc;
}

template <typename T>
void gpt_build(GPT<T>& m, const ModelConfig& cfg, const std::vector<std::vector<int>>* site_perms) {
    auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
    if (cfg.vocab_size < 1) bad("vocab_size must be set (>= 1) to build a model");
    if (cfg.n_layer < 1 || cfg.n_head < 1 || cfg.n_embd < 1 || cfg.block_size < 1)
        bad("n_layer, n_head, n_embd and block_size must be >= 1");
    if (cfg.n_embd % cfg.n_head) bad("n_embd " + std::to_string(cfg.n_embd) +
                                     " is not divisible by n_head " + std::to_string(cfg.n_head));
    m = GPT<T>();
    m.cfg = cfg;
    m.L = cfg.n_layer, m.C = cfg.n_embd, m.H = cfg.n_head, m.V = cfg.vocab_size, m.Tmax = cfg.block_size;
    m.variant = cfg.hyper_conn_type;
    m.n = gpt_site_config(cfg, 0).n;
    if (site_perms && (int)site_perms->size() != 2 * m.L) bad("need one permutation list per site");
    for (int k = 0; k < 2 * m.L; k++) {
        ConnConfig cc = gpt_site_config(cfg, k);
        if (site_perms) cc.perms = (*site_perms)[k];
        m.sites.push_back(conn_site_make(cc));
    }
    long off = 0;
    auto add = [&](const std::string& name, std::vector<int> shape, bool decay) {
        ParamTensor p;
        p.name = name;
        p.shape = shape;
        p.size = 1;
        for (int d : shape) p.size *= d;
        p.offset = off;
        p.decay = decay;
        off += p.size;
        m.params.push_back(p);
        return p.offset;
    };
    const int C = m.C;
    const bool bias = cfg.bias;
    m.wte = add("transformer.wte.weight", {m.V, C}, true);
    m.wpe = add("transformer.wpe.weight", {m.Tmax, C}, true);
    for (int i = 0; i < m.L; i++) {
        const std::string h = "transformer.h." + std::to_string(i) + ".";
        GptBlock b;
        b.ln1_w = add(h + "branch_attn.0.weight", {C}, false);
        if (bias) b.ln1_b = add(h + "branch_attn.0.bias", {C}, false);
        b.attn_w = add(h + "branch_attn.1.c_attn.weight", {3 * C, C}, true);
        if (bias) b.attn_b = add(h + "branch_attn.1.c_attn.bias", {3 * C}, false);
        b.aproj_w = add(h + "branch_attn.1.c_proj.weight", {C, C}, true);
        if (bias) b.aproj_b = add(h + "branch_attn.1.c_proj.bias", {C}, false);
        b.ln2_w = add(h + "branch_mlp.0.weight", {C}, false);
        if (bias) b.ln2_b = add(h + "branch_mlp.0.bias", {C}, false);
        b.fc_w = add(h + "branch_mlp.1.c_fc.weight", {4 * C, C}, true);
        if (bias) b.fc_b = add(h + "branch_mlp.1.c_fc.bias", {4 * C}, false);
        b.mproj_w = add(h + "branch_mlp.1.c_proj.weight", {C, 4 * C}, true);
        if (bias) b.mproj_b = add(h + "branch_mlp.1.c_proj.bias", {C}, false);
        for (int j = 0; j < 2; j++) {  // the site's own layout, under its prefix
            const ConnSite& s = m.sites[2 * i + j];
            b.conn[j] = off;
            for (const auto& t : s.params)
                add(h + (j == 0 ? "hc_attn." : "hc_mlp.") + t.name, t.shape, t.decay);
        }
        m.blocks.push_back(b);
    }
    m.lnf_w = add("transformer.ln_f.weight", {C}, false);
    if (bias) m.lnf_b = add("transformer.ln_f.bias", {C}, false);
    m.param.assign(off, T(0));
    m.grad.assign(off, T(0));
}

namespace {
// splitmix64 + Box–Muller: the same numbers on every platform and compiler.
struct Normal {
    SplitMix64 u;
    double spare = 0;
    bool has = false;
    double operator()() {
        if (has) return has = false, spare;
        const double u1 = u.uniform() + 1e-300, u2 = u.uniform();
        const double r = std::sqrt(-2 * std::log(u1));
        spare = r * std::sin(2 * M_PI * u2);
        has = true;
        return r * std::cos(2 * M_PI * u2);
    }
};
}  // namespace

template <typename T> void gpt_init(GPT<T>& m, uint64_t seed) {
    Normal rng{SplitMix64(seed)};
    const double proj_std = 0.02 / std::sqrt(2.0 * m.L);
    for (const auto& p : m.params) {
        T* v = m.param.data() + p.offset;
        const bool is = p.name.find(".hc_") != std::string::npos;
        if (is) continue;  // connection parameters: below, per site
        const bool ln = p.shape.size() == 1;  // LayerNorm weights/biases and linear biases
        if (ln) {
            const bool weight = p.name.size() > 7 && p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
            for (long i = 0; i < p.size; i++) v[i] = T(weight ? 1 : 0);
        } else {
            const bool proj = p.name.find("c_proj.weight") != std::string::npos;
            for (long i = 0; i < p.size; i++) v[i] = T((proj ? proj_std : 0.02) * rng());
        }
    }
    for (int k = 0; k < 2 * m.L; k++)
        conn_init_params(m.sites[k], m.param.data() + m.blocks[k / 2].conn[k % 2]);
}

template void gpt_build<float>(GPT<float>&, const ModelConfig&, const std::vector<std::vector<int>>*);
template void gpt_build<double>(GPT<double>&, const ModelConfig&, const std::vector<std::vector<int>>*);
template void gpt_init<float>(GPT<float>&, uint64_t);
template void gpt_init<double>(GPT<double>&, uint64_t);

}  // namespace mhc
