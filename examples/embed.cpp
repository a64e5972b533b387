// Putting one mHC-lite connection around your own branch F (here: F(u) = 2u) in a C++ model.
#include <cstdio>
#include <vector>

#include "mhc/conn.h"

int main() {
    const int N = 8, n = 4, C = 16;  // tokens, streams, width
    mhc::ConnConfig cfg;
    cfg.variant = mhc::Variant::mhc_lite;
    cfg.n = n;
    cfg.C = C;
    const mhc::ConnSite site = mhc::conn_site_make(cfg);  // throws std::invalid_argument if invalid

    std::vector<float> params(mhc::conn_param_count(site)), grads(params.size(), 0.0f);
    mhc::conn_init_params(site, params.data());
    std::vector<float> cache((size_t)N * mhc::conn_cache_stride(site));
    std::vector<float> scratch(mhc::conn_scratch_size(site, N));
    std::vector<float> X((size_t)N * n * C, 1.0f), Xout(X.size()), u((size_t)N * C), y(u.size());

    // forward: streams -> branch input -> your branch -> new streams
    mhc::conn_pre_forward(site, params.data(), X.data(), u.data(), cache.data(), scratch.data(), N);
    for (size_t i = 0; i < u.size(); i++) y[i] = 2 * u[i];
    mhc::conn_post_forward(site, cache.data(), X.data(), y.data(), Xout.data(), N);

    // backward: dXout -> dX (overwritten), dy; your branch's backward; then dX, grads (+=)
    std::vector<float> dXout(X.size(), 1.0f), dX(X.size()), dy(y.size()), du(u.size());
    mhc::conn_post_backward(site, cache.data(), X.data(), y.data(), dXout.data(), dX.data(),
                            dy.data(), N);
    for (size_t i = 0; i < u.size(); i++) du[i] = 2 * dy[i];
    mhc::conn_pre_backward(site, params.data(), cache.data(), X.data(), du.data(), dX.data(),
                           grads.data(), scratch.data(), N);

    const mhc::SiteDiag d = mhc::conn_site_diagnostics(site, cache.data(), N);
    std::printf("H_res DS error max %.1e, forward gain %.6f\n", d.ds.max, d.fwd.max);
    for (const auto& t : site.params)  // SPEC §4 names, shapes and offsets, e.g. for checkpoints
        std::printf("  %-18s %6ld values at offset %ld\n", t.name.c_str(), t.size, t.offset);
}
