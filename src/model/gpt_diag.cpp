// SPEC §6 diagnostics of every connection site of a model, from its last forward's coefficient
// caches (conn_post_backward writes dH into separate cache slots, so they survive the backward).
#include <stdexcept>
#include <string>
#include <vector>

#include "mhc/diag.h"

namespace mhc {

namespace {
// The stream state after site k. With recompute the states inside the blocks were not kept: the
// attention site's is made again, into mid, from the block's input and branch output.
template <typename T> const T* streams_after(const GPT<T>& m, int k, std::vector<T>& mid) {
    if (!m.recompute || k % 2) return m.X[k + 1];
    mid.resize((size_t)m.B * m.Tn * m.n * m.C);
    conn_post_forward(m.sites[k], m.s_act[k].cache, m.X[k], m.s_act[k].y, mid.data(), m.B * m.Tn);
    return mid.data();
}
}  // namespace

template <typename T> nlohmann::json gpt_diagnostics(const GPT<T>& m, const std::vector<double>* similarity) {
    const int N = m.B * m.Tn;
    if (N <= 0 || m.s_act.size() != m.sites.size())
        throw std::logic_error("gpt_diagnostics: the model has not run a forward yet");
    CompositeGain cg;
    cg.reset(N, m.n);
    nlohmann::json sites = nlohmann::json::array();
    std::vector<T> mid;
    for (int k = 0; k < (int)m.sites.size(); k++) {
        const T* cache = m.s_act[k].cache;
        const SiteDiag d = conn_site_diagnostics(m.sites[k], cache, N);
        cg.push(m.sites[k], cache);
        const Stat cf = cg.fwd(), cb = cg.bwd();
        const CompositeGain::Spectrum sp = cg.spectrum();
        nlohmann::json s = {{"site", k}, {"block", k / 2}, {"kind", k % 2 ? "mlp" : "attn"},
                            {"ds_error_mean", d.ds.mean}, {"ds_error_max", d.ds.max},
                            {"orth_error_mean", d.orth.mean}, {"orth_error_max", d.orth.max},
                            {"fwd_gain_mean", d.fwd.mean}, {"fwd_gain_max", d.fwd.max},
                            {"bwd_gain_mean", d.bwd.mean}, {"bwd_gain_max", d.bwd.max},
                            {"depth_fwd_gain_mean", cf.mean}, {"depth_fwd_gain_max", cf.max},
                            {"depth_bwd_gain_mean", cb.mean}, {"depth_bwd_gain_max", cb.max},
                            {"depth_sigma1_mean", sp.s1.mean}, {"depth_sigma1_max", sp.s1.max}};
        if (m.n > 1) {  // a single stream has no second singular value and no pairs of streams
            s["depth_sigma2_mean"] = sp.s2.mean;
            s["depth_sigma2_max"] = sp.s2.max;
            s["stream_similarity"] = similarity ? similarity->at(k)
                                                : stream_similarity(streams_after(m, k, mid), N, m.n, m.C);
        }
        if (d.has_nu) {
            s["log_inv_nu_mean"] = d.log_inv_nu.mean;
            s["log_inv_nu_max"] = d.log_inv_nu.max;
            s["frac_nu_above_30"] = d.frac_nu_above_30;
        }
        sites.push_back(std::move(s));
    }
    return {{"tokens", N}, {"sites", std::move(sites)}};
}

template nlohmann::json gpt_diagnostics<float>(const GPT<float>&, const std::vector<double>*);
template nlohmann::json gpt_diagnostics<double>(const GPT<double>&, const std::vector<double>*);

}  // namespace mhc
