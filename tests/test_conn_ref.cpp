// Parity with the independent PyTorch reference (tests/reference/hyper_conn.py): for every fixture
// written by make_conn_fixtures.py, the C++ forward outputs, coefficients and every gradient agree
// with the reference. Error measure per tensor: max |ours - ref| / max |ref| (normwise relative).
// fp64 (T = R = double): <= 1e-10. fp32 (T = R = float): <= 1e-5, except where PyTorch's own fp32
// run of the same case is itself above 1e-5 (a gradient summed with heavy cancellation, e.g. a
// scale parameter's): there the bound is 4x PyTorch's fp32 error (f32err.* in the fixture), as in
// test_gpt_ref.cpp: such an error depends on the summation order, which the compiler's
// vectorisation changes with the host (-march=native), so one fp32 sample only estimates it. On
// an AVX-512 host (2026-12-01) jpmhc n = 5's pre_branch_scale (exact Cayley) came out 2.11e-5
// against PyTorch's 9.28e-6, 2.3 times; on the AVX2 hosts before, within 2 times.
// The fixtures' inputs are fp32-representable, so both precisions see the same numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <type_traits>

#include "conn_util.h"
#include "mhc/safetensors.h"

using namespace mhc;
using namespace mhc::test;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> fixture_files() {
    const char* dir = std::getenv("MHC_FIXTURES_DIR");
    if (!dir) return {};
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().rfind("conn_", 0) == 0 && e.path().extension() == ".safetensors")
            out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
}

double rel_err(const std::vector<double>& ours, const std::vector<double>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        num = std::max(num, std::fabs(ours[i] - ref[i]));
        den = std::max(den, std::fabs(ref[i]));
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;  // an exactly-zero reference must be matched exactly
    return num / den;
}

template <typename V> std::vector<double> to_d(const V* p, size_t n) {
    return std::vector<double>(p, p + n);
}

ConnSite site_of(const SafeTensors& st) {
    ConnConfig cfg;
    cfg.variant = variant_from_string(st.metadata.at("variant"));
    cfg.n = std::stoi(st.metadata.at("n"));
    cfg.C = std::stoi(st.metadata.at("C"));
    cfg.site_index = std::stoi(st.metadata.at("site_index"));
    cfg.sinkhorn_iters = std::stoi(st.metadata.at("sinkhorn_iters"));
    cfg.cayley_iters = std::stoi(st.metadata.at("cayley_iters"));
    if (st.has("perms"))
        for (double v : st.at("perms").to_double()) cfg.perms.push_back((int)v);
    return conn_site_make(cfg);
}

// Runs one fixture with T = R = Real and returns the worst relative error over all tensors.
template <typename Real> void check_fixture(const SafeTensors& st, double tol, int* relaxed) {
    const ConnSite s = site_of(st);
    const int N = std::stoi(st.metadata.at("N"));
    auto load = [&](const std::string& name) {
        auto d = st.at(name).to_double();
        return std::vector<Real>(d.begin(), d.end());
    };
    std::vector<Real> p(conn_param_count(s));
    for (const auto& t : s.params) {
        const StTensor& ref = st.at(t.name);
        ASSERT_EQ(ref.shape, std::vector<int64_t>(t.shape.begin(), t.shape.end())) << t.name;
        auto v = ref.to_double();
        std::copy(v.begin(), v.end(), p.begin() + t.offset);
    }
    auto X = load("X"), y = load("y"), gu = load("g_u"), gX = load("g_Xout");
    SiteRun<Real, Real> run(s, N);
    run.forward(p, X, y);
    std::vector<double> hpre, hres, hpost;
    for (int tok = 0; tok < N; tok++) {
        auto a = cache_hpre(s, run.cache.data(), tok), b = cache_hres(s, run.cache.data(), tok),
             c = cache_hpost(s, run.cache.data(), tok);
        hpre.insert(hpre.end(), a, a + s.n);
        hres.insert(hres.end(), b, b + s.n * s.n);
        hpost.insert(hpost.end(), c, c + s.n);
    }
    run.backward(p, X, y, gu, gX);
    auto expect = [&](const std::string& name, const std::vector<double>& ours) {
        const auto ref = st.at(name).to_double();
        ASSERT_EQ(ours.size(), ref.size()) << name;
        double bound = tol;
        if (std::is_same_v<Real, float>) {
            const double torch32 = st.at("f32err." + name).to_double()[0];
            if (4 * torch32 > bound) bound = 4 * torch32, ++*relaxed;
        }
        const double err = rel_err(ours, ref);
        EXPECT_LE(err, bound) << name;
        if (bound > tol)
            std::printf("  %s %s: error %.2e, PyTorch fp32 %.2e (bound %.2e)\n",
                        st.metadata.at("variant").c_str(), name.c_str(), err, bound / 4, bound);
    };
    expect("u", to_d(run.u.data(), run.u.size()));
    expect("Xout", to_d(run.Xout.data(), run.Xout.size()));
    expect("H_pre", hpre);
    expect("H_res", hres);
    expect("H_post", hpost);
    expect("grad.X", to_d(run.dX.data(), run.dX.size()));
    expect("grad.y", to_d(run.dy.data(), run.dy.size()));
    for (const auto& t : s.params)
        expect("grad." + t.name, to_d(run.dparams.data() + t.offset, t.size));
}

TEST(Parity, FixturesCoverEveryVariant) {
    const auto files = fixture_files();
    ASSERT_FALSE(files.empty()) << "no fixtures: set MHC_FIXTURES_DIR (ctest does this)";
    std::set<std::string> seen;
    for (const auto& f : files) {
        const auto st = safetensors_read(f);
        seen.insert(st.metadata.at("variant") + "/" + st.metadata.at("n"));
    }
    for (const char* want : {"residual/1", "hc/1", "hc/2", "hc/3", "hc/4", "mhc/1", "mhc/2", "mhc/3",
                             "mhc/4", "mhc-lite/1", "mhc-lite/2", "mhc-lite/3", "mhc-lite/4",
                             "mhc-lite/8", "kromhc/2", "kromhc/4", "kromhc/8", "jpmhc/1", "jpmhc/2", "jpmhc/3",
                             "jpmhc/4", "jpmhc/5", "jpmhc/8", "ohc/4"})
        EXPECT_TRUE(seen.count(want)) << "missing fixture for " << want;
}

TEST(Parity, Float32Within1e5) {
    const auto files = fixture_files();
    ASSERT_FALSE(files.empty());
    int relaxed = 0, total = 0;
    for (const auto& f : files) {
        SCOPED_TRACE(f);
        const auto st = safetensors_read(f);
        check_fixture<float>(st, 1e-5, &relaxed);
        for (const auto& [name, t] : st.tensors) total += name.rfind("f32err.", 0) == 0;
    }
    std::printf("%d of %d tensors within 1e-5; %d ill-conditioned ones within 4x PyTorch fp32\n",
                total - relaxed, total, relaxed);
    EXPECT_LE(relaxed * 20, total) << "the relaxed bound must stay the rare exception";
}

TEST(Parity, Float64Within1e10) {
    const auto files = fixture_files();
    ASSERT_FALSE(files.empty());
    for (const auto& f : files) {
        SCOPED_TRACE(f);
        int unused = 0;
        check_fixture<double>(safetensors_read(f), 1e-10, &unused);
    }
}

}  // namespace
