// A site's device twin (conn/conn_cuda.h): its tables uploaded once, and its GPU scratch layout.
#include <algorithm>
#include <stdexcept>

#include "conn/conn_cuda.h"

namespace mhc::cuda {

namespace {

// The mixer's iteration count, which sizes its backward's trace: Sinkhorn's (mhc), the Cayley fixed
// point's (jpmhc; 0 is the exact transform, no trace), else 0.
int mixer_iters(const ConnSite& s) {
    if (s.cfg.variant == Variant::mhc) return s.cfg.sinkhorn_iters;
    if (s.cfg.variant == Variant::jpmhc) return s.cfg.cayley_iters;
    return 0;
}

}  // namespace

ConnSiteCuda conn_site_cuda(const ConnSite& s) {
    const Variant v = s.cfg.variant;
    ConnSiteCuda d;
    d.site = &s;
    SiteDev& g = d.dev;
    g.variant = (int)v;
    g.n = s.n, g.C = s.C, g.rpt = s.rpt, g.Dp = s.Dp, g.M1 = s.M1, g.M2 = s.M2, g.prow = s.prow;
    g.W = s.rpt * s.prow, g.stride = s.stride, g.K = s.K, g.n_extra = s.n_extra;
    g.iters = mixer_iters(s), g.nres = (int)s.res_col.size();
    g.c_hpre = s.c_hpre, g.c_hres = s.c_hres, g.c_hpost = s.c_hpost, g.c_logit = s.c_logit, g.c_rs = s.c_rs;
    g.c_extra = s.c_extra, g.c_dhres = s.c_dhres, g.c_dhpost = s.c_dhpost;
    g.o_gamma = s.o_gamma, g.o_W1 = s.o_W1, g.o_W2 = s.o_W2;
    if (v != Variant::residual) {
        d.col_scale.upload(s.col_scale);
        d.col_static.upload(s.col_static);
        if (!s.pre_col.empty()) d.pre_col.upload(std::vector<int>(s.pre_col));
        if (!s.res_col.empty()) d.res_col.upload(std::vector<int>(s.res_col));
        if (v == Variant::mhc_lite) d.perms.upload(std::vector<int>(s.perms));
    }
    g.col_scale = d.col_scale.data(), g.col_static = d.col_static.data();
    g.pre_col = d.pre_col.data(), g.res_col = d.res_col.data(), g.perms = d.perms.data();
    return d;
}

long detail::conn_scratch_layout(const SiteDev& s, int N, float* base, ConnScratch* out) {
    long used = 0;
    auto take = [&](long floats) {
        float* at = base ? base + used : nullptr;
        used += (floats + 63) / 64 * 64;  // 256-byte pieces: doubles aligned, rows coalesced
        return at;
    };
    ConnScratch c{};
    if (s.variant != (int)Variant::residual) {
        const long Nr = (long)N * s.rpt;
        c.Wf = take((long)s.Dp * s.prow);
        c.PZ = take(Nr * s.prow);
        c.G = take((long)N * s.W);
        if (s.variant == (int)Variant::hc) c.E = take(Nr * s.Dp);  // the others make dZ Wfᵀ in place (conn.cu)
        c.Dsum = take((long)s.Dp * s.prow);
        c.dhpre = (double*)take(2L * N * s.n);
        c.sums = (double*)take(2L * 2 * s.W);
        const long parts = std::max(Nr, (long)s.Dp) * parts_ld(s.prow);  // used with bf16 streams only
        c.split = take(parts);
        c.parts = (bf16*)take((parts + 1) / 2);
        // mhc: the Sinkhorn half steps; jpmhc: the fixed point's iterates (none for the exact transform)
        if (s.variant == (int)Variant::mhc) c.trace = (double*)take(2L * 2 * s.iters * s.n * s.n * N);
        if (s.variant == (int)Variant::jpmhc && s.iters > 0) c.trace = (double*)take(2L * s.iters * s.n * s.n * N);
    }
    if (out) *out = c;
    return used;
}

namespace {
// The scratch layout and the choice of kernels need only the sizes: a SiteDev without device tables.
SiteDev sizes_only(const ConnSite& site) {
    SiteDev g{};
    g.variant = (int)site.cfg.variant;
    g.n = site.n, g.rpt = site.rpt, g.Dp = site.Dp, g.prow = site.prow, g.W = site.rpt * site.prow, g.K = site.K;
    g.iters = mixer_iters(site);
    return g;
}
}  // namespace

long conn_scratch_size_cuda(const ConnSite& site, int N) {
    return detail::conn_scratch_layout(sizes_only(site), N, nullptr, nullptr);
}

size_t conn_stack_bytes_cuda(const ConnSite& site) { return detail::coef_stack_bytes(sizes_only(site)); }

}  // namespace mhc::cuda
