// The connection sites on the GPU (conn/conn_cuda.h) against the CPU's (mhc/conn.h): every variant,
// n from 1 to 8, mhc-lite with all n! permutations, a seeded subset and an explicit list, jpmhc's
// fixed point (1, 2 and 5 iterations) and exact Cayley transform, ohc, at 1, 3 and 65 tokens. A whole site runs forward and backward (pre, post, post's backward, pre's
// backward) from random non-initial parameters; the outputs, every slot of the per-token cache and
// every parameter gradient are compared. Tolerances: tests/cuda_util.h. The post side from a bf16
// branch output (dtype bf16) gives the fp32 kernels' bits for the rounded output. Then the same
// with dtype bf16's streams: X, Xout and y stored in bf16, against the CPU on the rounded inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <type_traits>

#include "conn/conn_cuda.h"
#include "conn_util.h"
#include "cuda_util.h"

using namespace mhc;
using test::dev_nan;
using test::to_dev;
using test::to_double;
using test::to_float;

namespace {

struct ConnCase {
    std::string name;
    Variant v;
    int n;
    int iters = 20;
    int subset = 0;
    std::vector<int> perms = {};
    int cayley = 2;  // jpmhc: fixed-point iterations, 0 = the exact transform
};

std::vector<ConnCase> conn_cases() {
    std::vector<ConnCase> c = {{"residual", Variant::residual, 1}};
    for (int n : {1, 2, 3, 4, 8}) c.push_back({"hc_n" + std::to_string(n), Variant::hc, n});
    for (int n : {1, 2, 3, 4, 5, 8}) c.push_back({"mhc_n" + std::to_string(n), Variant::mhc, n});
    c.push_back({"mhc_n4_iters1", Variant::mhc, 4, 1});
    for (int n : {1, 2, 3, 4, 5, 6}) c.push_back({"mhc_lite_n" + std::to_string(n), Variant::mhc_lite, n});
    c.push_back({"mhc_lite_n4_subset5", Variant::mhc_lite, 4, 20, 5});
    c.push_back({"mhc_lite_n7_subset24", Variant::mhc_lite, 7, 20, 24});
    c.push_back({"mhc_lite_n8_subset24", Variant::mhc_lite, 8, 20, 24});
    c.push_back({"mhc_lite_n3_explicit", Variant::mhc_lite, 3, 20, 0, {0, 1, 2, 2, 0, 1, 1, 0, 2}});
    for (int n : {1, 2, 4, 8}) c.push_back({"kromhc_n" + std::to_string(n), Variant::kromhc, n});
    for (int n : {1, 2, 3, 4, 5, 8}) c.push_back({"jpmhc_n" + std::to_string(n), Variant::jpmhc, n});
    for (int n : {2, 3, 4, 8}) c.push_back({"jpmhc_exact_n" + std::to_string(n), Variant::jpmhc, n, 20, 0, {}, 0});
    c.push_back({"jpmhc_n4_iters1", Variant::jpmhc, 4, 20, 0, {}, 1});
    c.push_back({"jpmhc_n4_iters5", Variant::jpmhc, 4, 20, 0, {}, 5});
    c.push_back({"ohc_n4", Variant::ohc, 4});
    return c;
}

void PrintTo(const ConnCase& c, std::ostream* os) { *os << c.name; }

class CudaConn : public test::CudaTest, public testing::WithParamInterface<ConnCase> {};

// A device copy of values as TX stores them (fp32, or bf16: rounded to nearest), and a download as
// floats.
template <typename TX> cuda::DeviceBuffer<TX> dev_stored(const std::vector<double>& v) {
    if constexpr (std::is_same_v<TX, float>) return to_dev(to_float(v));
    else return to_dev(test::to_bf16(v));
}
inline std::vector<float> as_floats(const std::vector<float>& v) { return v; }
inline std::vector<float> as_floats(const std::vector<cuda::bf16>& v) { return test::from_bf16(v); }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && !std::memcmp(a.data(), b.data(), a.size() * sizeof(float));
}

// Values [lo, hi) of every token's cache row, gathered.
template <typename R> std::vector<R> slots(const std::vector<R>& cache, int stride, int N, int lo, int hi) {
    std::vector<R> out;
    for (int t = 0; t < N; t++)
        for (int j = lo; j < hi; j++) out.push_back(cache[(size_t)t * stride + j]);
    return out;
}

TEST_P(CudaConn, SiteForwardBackwardMatchesCpu) {
    const ConnCase& cc = GetParam();
    ConnConfig cfg;
    cfg.variant = cc.v;
    cfg.n = cc.n;
    cfg.C = 37;
    cfg.site_index = 5;
    cfg.sinkhorn_iters = cc.iters;
    cfg.perm_subset = cc.subset;
    cfg.perm_seed = 3;
    cfg.perms = cc.perms;
    cfg.cayley_iters = cc.cayley;
    const ConnSite s = conn_site_make(cfg);
    const cuda::ConnSiteCuda ds = cuda::conn_site_cuda(s);
    const int n = s.n, C = s.C, stride = s.stride;
    std::mt19937_64 rng(100 + n);
    for (const int N : {1, 3, 65}) {
        const std::string at = cc.name + " N=" + std::to_string(N) + ": ";
        const std::vector<float> p = test::random_params<float>(s, rng);
        const std::vector<double> pd = to_double(p);
        std::vector<double> X = test::normal_vec<double>((size_t)N * n * C, rng);
        const std::vector<double> y = test::normal_vec<double>((size_t)N * C, rng);
        if (N == 3)  // a token whose streams are all zero: its norm is clamped (rs at its ceiling)
            std::fill(X.begin() + (long)n * C, X.begin() + 2L * n * C, 0.0);
        const std::vector<double> gu = test::normal_vec<double>((size_t)N * C, rng), gX = test::normal_vec<double>(X.size(), rng);
        // dparams accumulate onto dp0: per tensor 1% of the gradient's RMS, so that overwriting instead
        // of adding shows, and the fp32 sum loses nothing of the gradient.
        std::vector<double> dp0 = test::normal_vec<double>(p.size(), rng);
        {
            test::SiteRun<double, double> r0(s, N);
            r0.forward(pd, X, y);
            r0.backward(pd, X, y, gu, gX);
            for (const ParamTensor& t : s.params) {
                double ss = 0;
                for (long i = 0; i < t.size; i++) ss += r0.dparams[t.offset + i] * r0.dparams[t.offset + i];
                for (long i = 0; i < t.size; i++) dp0[t.offset + i] *= 0.01 * std::sqrt(ss / t.size);
            }
        }

        // One whole site on the GPU against the CPU, with the streams X (and y) stored as TX: fp32, or
        // bf16 (dtype bf16; X and y then hold bf16 values already, and the CPU runs on the same).
        auto site = [&](auto tag, const std::vector<double>& X, const std::vector<double>& y,
                        const std::vector<double>& gX, const std::string& at) {
            using TX = typename decltype(tag)::type;
            constexpr bool half = std::is_same_v<TX, cuda::bf16>;
            test::SiteRun<double, double> rd(s, N);
            test::SiteRun<float, float> rf(s, N);
            rd.forward(pd, X, y);
            rf.forward(p, to_float(X), to_float(y));

            auto d_p = to_dev(p);
            auto d_X = dev_stored<TX>(X), d_y = dev_stored<TX>(y);
            auto d_u = dev_nan((size_t)N * C), d_cache = dev_nan((size_t)N * stride);
            auto d_Xout = dev_nan<TX>(X.size());
            auto d_scratch = dev_nan(cuda::conn_scratch_size_cuda(s, N));
            // What is stored as the streams (Xout, dX): from bf16 streams an fp32 value rounded once, so
            // within bf16's rounding (2^-8 relative) of the CPU's.
            auto check_stored = [&](const std::string& what, const std::vector<float>& gpu,
                                    const std::vector<float>& cpu, const std::vector<double>& exact) {
                if (half) check_tol(what, gpu, cpu, 1.01 / 256);
                else check(what, gpu, cpu, exact);
            };
            cuda::conn_pre_forward(ds, d_p.data(), d_X.data(), d_u.data(), d_cache.data(), d_scratch.data(), N);
            cuda::conn_post_forward(ds, d_cache.data(), d_X.data(), d_y.data(), d_Xout.data(), N);
            check(at + "u", d_u.download(), rf.u, rd.u);
            const std::vector<float> xo = as_floats(d_Xout.download());
            check_stored(at + "Xout", xo, rf.Xout, rd.Xout);
            if (half) {  // exactly the fp32 kernel's values on the same cache and inputs, rounded
                auto d_Xf = to_dev(to_float(X)), d_yf = to_dev(to_float(y));
                auto d_Xo32 = dev_nan(X.size());
                cuda::conn_post_forward(ds, d_cache.data(), d_Xf.data(), d_yf.data(), d_Xo32.data(), N);
                const std::vector<float> xo32 = d_Xo32.download();
                size_t differ = 0;
                for (size_t i = 0; i < xo.size(); i++) differ += xo[i] != __bfloat162float(__float2bfloat16(xo32[i]));
                EXPECT_EQ(differ, 0u) << at << "Xout: values not the fp32 kernel's rounded";
            }
            std::vector<float> gc = d_cache.download();
            auto cache_check = [&](const char* what, int lo, int hi) {
                if (hi > lo) check(at + what, slots(gc, stride, N, lo, hi), slots(rf.cache, stride, N, lo, hi),
                                   slots(rd.cache, stride, N, lo, hi));
            };
            cache_check("H_pre", s.c_hpre, s.c_hpre + n);
            cache_check("H_res", s.c_hres, s.c_hres + n * n);
            cache_check("H_post", s.c_hpost, s.c_hpost + n);
            if (cc.v != Variant::residual) {
                cache_check("projections f", s.c_logit, s.c_logit + s.rpt * s.prow);
                cache_check("row scales rs", s.c_rs, s.c_rs + s.rpt);
                cache_check("mixer values", s.c_extra, s.c_extra + s.n_extra);
            }

            // The streams' sums of squares handed from a post to the next pre: with them the post writes
            // the same Xout and each stream's Σ x² of the stored values (double), and a pre fed X's sums
            // equals one that reads X.
            {
                cuda::DeviceBuffer<double> d_ss((size_t)N * n);
                auto d_Xout2 = dev_nan<TX>(X.size());
                cuda::conn_post_forward(ds, d_cache.data(), d_X.data(), d_y.data(), d_Xout2.data(), N, d_ss.data());
                const std::vector<float> xo2 = as_floats(d_Xout2.download());
                EXPECT_EQ(xo2, xo) << at << "Xout with the sums of squares";
                auto sums = [&](const std::vector<float>& v) {
                    std::vector<double> out((size_t)N * n, 0.0);
                    for (int i = 0; i < N * n; i++)
                        for (int c = 0; c < C; c++) out[i] += (double)v[(size_t)i * C + c] * v[(size_t)i * C + c];
                    return out;
                };
                const std::vector<double> want = sums(xo2), got = d_ss.download();
                for (int i = 0; i < N * n; i++)
                    EXPECT_NEAR(got[i], want[i], 1e-12 * (1 + want[i])) << at << "Σ x² of stream " << i % n;
                d_ss.upload(sums(to_float(X)));
                auto d_u2 = dev_nan((size_t)N * C), d_cache2 = dev_nan((size_t)N * stride);
                cuda::conn_pre_forward(ds, d_p.data(), d_X.data(), d_u2.data(), d_cache2.data(), d_scratch.data(), N,
                                       d_ss.data());
                check(at + "u (norms from the sums)", d_u2.download(), rf.u, rd.u);
                if (cc.v != Variant::residual) {
                    const std::vector<float> gc2 = d_cache2.download();
                    check(at + "rs (norms from the sums)", slots(gc2, stride, N, s.c_rs, s.c_rs + s.rpt),
                          slots(rf.cache, stride, N, s.c_rs, s.c_rs + s.rpt),
                          slots(rd.cache, stride, N, s.c_rs, s.c_rs + s.rpt));
                }
            }

            rd.dparams = dp0;
            rf.dparams = to_float(dp0);
            rd.backward(pd, X, y, gu, gX);
            rf.backward(p, to_float(X), to_float(y), to_float(gu), to_float(gX));
            // The streams' gradients are stored as the streams: from bf16 ones, dX is the post's share
            // rounded, then with the pre's added rounded again (once when deferred, below).
            auto d_gu = to_dev(to_float(gu));
            auto d_gX = dev_stored<TX>(gX), d_dX = dev_nan<TX>(X.size());
            auto d_dy = dev_nan((size_t)N * C), d_dp = to_dev(to_float(dp0));
            cuda::conn_post_backward(ds, d_cache.data(), d_X.data(), d_y.data(), d_gX.data(), d_dX.data(),
                                     d_dy.data(), N);
            check(at + "dy", d_dy.download(), rf.dy, rd.dy);
            {  // dy into bf16 (the branch's c_proj's output gradient): the fp32 dy rounded once
                auto c2 = to_dev(d_cache.download()), dX2 = dev_nan<TX>(X.size());
                cuda::DeviceBuffer<cuda::bf16> dy16((size_t)N * C);
                dy16.fill_bytes(0xFF);
                cuda::conn_post_backward(ds, c2.data(), d_X.data(), d_y.data(), d_gX.data(), dX2.data(), dy16.data(),
                                         N);
                std::vector<float> want = d_dy.download();
                for (float& v : want) v = test::round16(v);
                EXPECT_EQ(test::from_bf16(dy16), want) << at << "dy into bf16";
            }
            cuda::conn_pre_backward(ds, d_p.data(), d_cache.data(), d_X.data(), d_gu.data(), d_dX.data(),
                                    d_dp.data(), d_scratch.data(), N);
            const std::vector<float> dx = as_floats(d_dX.download());
            if (half) check_tol(at + "dX", dx, rf.dX, 2.02 / 256);  // rounded twice
            else check(at + "dX", dx, rf.dX, rd.dX);
            if (cc.v != Variant::residual) {
                gc = d_cache.download();
                cache_check("dH_res", s.c_dhres, s.c_dhres + n * n);
                cache_check("dH_post", s.c_dhpost, s.c_dhpost + n);
            }
            const std::vector<float> gdp = d_dp.download();
            for (const ParamTensor& t : s.params) {
                auto slice = [&](const auto& v) {
                    using V = typename std::decay_t<decltype(v)>::value_type;
                    return std::vector<V>(v.begin() + t.offset, v.begin() + t.offset + t.size);
                };
                check_grad(at + "d" + t.name, slice(gdp), slice(rf.dparams), slice(rd.dparams));
            }
            {  // the post's dX deferred to the pre (conn_cuda.h): the same sums (dX to fp32 rounding: the
               // compiler may contract the products into FMAs differently in the two kernels)
                auto d_dX2 = dev_nan<TX>(X.size());
                auto d_dy2 = dev_nan((size_t)N * C), d_dp2 = to_dev(to_float(dp0));
                cuda::conn_post_backward(ds, d_cache.data(), d_X.data(), d_y.data(), d_gX.data(), (TX*)nullptr,
                                         d_dy2.data(), N);
                cuda::conn_pre_backward(ds, d_p.data(), d_cache.data(), d_X.data(), d_gu.data(), d_dX2.data(),
                                        d_dp2.data(), d_scratch.data(), N, d_gX.data());
                check_stored(at + "dX (the post's share deferred)", as_floats(d_dX2.download()), rf.dX, rd.dX);
                EXPECT_TRUE(same_bits(d_dy2.download(), d_dy.download())) << at << "dy deferred";
                EXPECT_TRUE(same_bits(d_dp2.download(), gdp)) << at << "dparams deferred";
                if constexpr (half) {
                // The bf16 kernel's dX is the fp32 kernel's on the same values and cache, rounded once:
                // within half a bf16 ulp of it (2^-8 relative at most), but for the two kernels' fp32 sums of dZ·Wfᵀ (the
                // tensor cores' split products here, fp32 multiply-adds there): 1e-5 of the RMS. A
                // product of the split's high parts only would be about 2^-9 of E off.
                auto d_Xf = to_dev(to_float(X)), d_yf = to_dev(to_float(y)), d_gXf = to_dev(to_float(gX));
                auto d_dX32 = dev_nan(X.size()), d_dy32 = dev_nan((size_t)N * C), d_dp32 = to_dev(to_float(dp0));
                cuda::conn_post_backward(ds, d_cache.data(), d_Xf.data(), d_yf.data(), d_gXf.data(), (float*)nullptr,
                                         d_dy32.data(), N);
                cuda::conn_pre_backward(ds, d_p.data(), d_cache.data(), d_Xf.data(), d_gu.data(), d_dX32.data(),
                                        d_dp32.data(), d_scratch.data(), N, d_gXf.data());
                const std::vector<float> d16 = as_floats(d_dX2.download()), d32 = d_dX32.download();
                double rms = 0;
                for (const float v : d32) rms += (double)v * v;
                rms = std::sqrt(rms / d32.size());
                size_t off = 0, first = 0;
                double worst = 0;
                for (size_t i = 0; i < d32.size(); i++) {
                    const double err = std::fabs((double)d16[i] - d32[i]);
                    worst = std::max(worst, err / rms);
                    if (!(err <= std::ldexp(std::fabs(d32[i]), -8) * 1.001 + 1e-5 * rms) && !off++) first = i;
                }
                if (std::getenv("MHC_TEST_ERRORS")) std::printf("ERRCHECK %.3e dX16 vs dX32 %s\n", worst, at.c_str());
                EXPECT_EQ(off, 0u) << at << "dX: " << off << " values not the fp32 kernel's rounded, the first ["
                                   << first << "] " << d16[first] << " for " << d32[first];
            }
            }
            // A bf16 branch output y with fp32 streams: the post's forward and backward read it as its
            // fp32 value, so they give the bits the fp32 kernels give for y rounded to bf16.
            if constexpr (!half) {
                const std::vector<cuda::bf16> y16 = test::to_bf16(y);
                const std::vector<float> yr = test::from_bf16(y16);
                auto d_y16 = to_dev(y16);
                auto d_yr = to_dev(yr);
                std::vector<float> outs[2][4];
                for (const bool y_half : {false, true}) {
                    auto c2 = to_dev(gc), o = dev_nan(X.size()), dx = dev_nan(X.size()), dy = dev_nan((size_t)N * C);
                    if (y_half) cuda::conn_post_forward(ds, c2.data(), d_X.data(), d_y16.data(), o.data(), N);
                    else cuda::conn_post_forward(ds, c2.data(), d_X.data(), d_yr.data(), o.data(), N);
                    if (y_half)
                        cuda::conn_post_backward(ds, c2.data(), d_X.data(), d_y16.data(), d_gX.data(), dx.data(),
                                                 dy.data(), N);
                    else cuda::conn_post_backward(ds, c2.data(), d_X.data(), d_yr.data(), d_gX.data(), dx.data(),
                                                  dy.data(), N);
                    outs[y_half][0] = o.download(), outs[y_half][1] = dx.download(), outs[y_half][2] = dy.download();
                    outs[y_half][3] = c2.download();
                }
                const char* names[4] = {"Xout", "dX", "dy", "cache (dH_res, dH_post)"};
                for (int k = 0; k < 4; k++)  // bitwise: the residual's cache has unused (NaN) slots
                    EXPECT_TRUE(same_bits(outs[1][k], outs[0][k])) << at << names[k] << " from a bf16 y";
            }
        };
        site(std::type_identity<float>{}, X, y, gX, at);
        // dtype bf16: the inputs as bf16 holds them
        site(std::type_identity<cuda::bf16>{}, test::bf16_rounded(X), test::bf16_rounded(y), test::bf16_rounded(gX),
             at + "bf16 streams: ");
    }
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaConn, testing::ValuesIn(conn_cases()),
                         [](const testing::TestParamInfo<ConnCase>& i) { return i.param.name; });

class CudaConnDiag : public test::CudaTest {};

// The streams' per-token products for SPEC §6's stream similarity (conn/diag.cu) against the CPU's
// stream_gram, fp32 and bf16 streams, n 1 to 8, C 1, 33 and 100, 1, 3 and 65 tokens, the output
// NaN-poisoned: every product within 1e-12 of the CPU's relative to the norms (another summation
// order), the matrix symmetric to the bit, and the similarity from it within 1e-12 of the CPU's.
TEST_F(CudaConnDiag, StreamGramMatchesCpu) {
    std::mt19937_64 rng(71);
    for (const bool bf16 : {false, true})
        for (const int n : {1, 2, 3, 4, 8})
            for (const int C : {1, 33, 100})
                for (const int N : {1, 3, 65}) {
                    std::vector<double> X = test::normal_vec<double>((size_t)N * n * C, rng);
                    if (bf16) X = test::bf16_rounded(X);
                    const std::vector<float> Xf = to_float(X);
                    std::vector<double> want((size_t)N * n * n);
                    stream_gram(Xf.data(), N, n, C, want.data());
                    auto G = dev_nan<double>(want.size());
                    if (bf16) {
                        auto d = to_dev(test::to_bf16(X));
                        cuda::stream_gram(d.data(), N, n, C, G.data());
                    } else {
                        auto d = to_dev(Xf);
                        cuda::stream_gram(d.data(), N, n, C, G.data());
                    }
                    const std::vector<double> got = G.download();
                    const std::string where = std::string(bf16 ? "bf16" : "fp32") + " n " + std::to_string(n) +
                                              " C " + std::to_string(C) + " N " + std::to_string(N);
                    for (int tok = 0; tok < N; tok++)
                        for (int s = 0; s < n; s++)
                            for (int t = 0; t < n; t++) {
                                const size_t at = ((size_t)tok * n + s) * n + t, d = ((size_t)tok * n + s) * n + s,
                                             e = ((size_t)tok * n + t) * n + t;
                                ASSERT_NEAR(got[at], want[at], 1e-12 * std::sqrt(want[d] * want[e]))
                                    << where << " token " << tok << " (" << s << ", " << t << ")";
                                ASSERT_EQ(got[at], got[((size_t)tok * n + t) * n + s]) << where;
                            }
                    const double sg = stream_similarity_of_gram(got.data(), N, n),
                                 sc = stream_similarity(Xf.data(), N, n, C);
                    if (n < 2) EXPECT_TRUE(std::isnan(sg)) << where;
                    else EXPECT_NEAR(sg, sc, 1e-12) << where;
                }
}

// Runs everywhere: the GPU scratch of a site covers its pieces, grows with N, is 0 for residual.
TEST(CudaConnLayout, ScratchSizes) {
    for (const Variant v : {Variant::residual, Variant::hc, Variant::mhc, Variant::mhc_lite, Variant::kromhc,
                            Variant::jpmhc, Variant::ohc}) {
        ConnConfig c;
        c.variant = v;
        c.n = v == Variant::residual ? 1 : 4;
        c.C = 37;
        c.cayley_iters = 3;
        const ConnSite s = conn_site_make(c);
        if (v == Variant::residual) {
            EXPECT_EQ(cuda::conn_scratch_size_cuda(s, 65), 0);
            continue;
        }
        for (const int N : {1, 3, 65}) {
            const long size = cuda::conn_scratch_size_cuda(s, N);
            const long Nr = (long)N * s.rpt, W = s.rpt * s.prow;
            const long parts = std::max(Nr, (long)s.Dp) * cuda::detail::parts_ld(s.prow);  // bf16 streams
            long need = 2L * s.Dp * s.prow + Nr * s.prow + N * W + 2L * N * s.n + 4L * W + parts + (parts + 1) / 2;
            if (v == Variant::hc) need += Nr * s.Dp;  // dZ · Wfᵀ (the others make it in place)
            if (v == Variant::mhc) need += 4L * c.sinkhorn_iters * s.n * s.n * N;
            if (v == Variant::jpmhc) need += 2L * c.cayley_iters * s.n * s.n * N;
            EXPECT_GE(size, need) << variant_name(v) << " N=" << N;
            EXPECT_LE(size, need + 10 * 64) << variant_name(v) << " N=" << N;  // 256-byte padding of 10 pieces
            EXPECT_EQ(size % 64, 0);
        }
        EXPECT_GT(cuda::conn_scratch_size_cuda(s, 65), cuda::conn_scratch_size_cuda(s, 3));
    }
}

// Which kernels have a stack frame worth a reserve (cuda.h: reserve_stack): on a GPU, ptxas's frames
// (scripts/kernel_resources.sh): jpmhc's and ohc's one-thread kernels past the driver's first 1 KB,
// hc's and kromhc's under it, none for residual and the warp kernels of mhc-lite at n = 4. The
// emulation cannot know a host function's frame: it reports MHC_EMU_STACK_BYTES for every kernel,
// so there only residual's 0 (no coefficient kernel) and the knob's passage are checked.
class CudaConnStack : public test::CudaTest {};

TEST_F(CudaConnStack, FramesOfTheCoefficientKernels) {
    auto frame = [](Variant v, int n) {
        ConnConfig c;
        c.variant = v, c.n = n, c.C = 16;
        return cuda::conn_stack_bytes_cuda(conn_site_make(c));
    };
    EXPECT_EQ(frame(Variant::residual, 1), 0u);
#if MHC_CUDA_EMU
    ASSERT_EQ(setenv("MHC_EMU_STACK_BYTES", "5344", 1), 0);
    EXPECT_EQ(frame(Variant::jpmhc, 4), 5344u);
    EXPECT_EQ(frame(Variant::mhc_lite, 4), 5344u);
    EXPECT_EQ(frame(Variant::residual, 1), 0u);
    unsetenv("MHC_EMU_STACK_BYTES");
    EXPECT_EQ(frame(Variant::jpmhc, 4), 0u);
#else
    EXPECT_GT(frame(Variant::jpmhc, 4), 1024u);
    EXPECT_GT(frame(Variant::ohc, 4), 1024u);
    EXPECT_LE(frame(Variant::hc, 4), 1024u);
    EXPECT_LE(frame(Variant::kromhc, 4), 1024u);
    EXPECT_EQ(frame(Variant::mhc_lite, 4), 0u);
    EXPECT_EQ(frame(Variant::mhc, 4), 0u);
#endif
}

}  // namespace
