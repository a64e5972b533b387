// The diagnostics that `mhc train` logs and `mhc info` prints (gpt_diagnostics, SPEC §6), on models
// whose H_res are set by hand through the parameters. The expected values are computed here with
// small independent code (no call to the library's ds_error / gains / CompositeGain).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numeric>
#include <string>
#include <vector>

#include "conn_util.h"
#include "gpt_util.h"
#include "mhc/diag.h"

using namespace mhc;
using Mat = std::vector<double>;  // n x n, row-major, H[s][t]

namespace {

// ---- the hand computations ------------------------------------------------------------------------
double ds_err(const Mat& H, int n) {  // max |row sum - 1|, |col sum - 1|, and the most negative entry
    double e = 0;
    for (int a = 0; a < n; a++) {
        double row = 0, col = 0;
        for (int b = 0; b < n; b++) row += H[a * n + b], col += H[b * n + a], e = std::max(e, -H[a * n + b]);
        e = std::max({e, std::fabs(row - 1), std::fabs(col - 1)});
    }
    return e;
}
Mat transpose(const Mat& H, int n) {
    Mat A(n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) A[i * n + j] = H[j * n + i];
    return A;
}
double max_abs_row_sum(const Mat& A, int n) {
    double g = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += std::fabs(A[i * n + j]);
        g = std::max(g, s);
    }
    return g;
}
double fwd_gain(const Mat& A, int n) { return max_abs_row_sum(A, n); }
double bwd_gain(const Mat& A, int n) { return max_abs_row_sum(transpose(A, n), n); }
Mat matmul(const Mat& X, const Mat& Y, int n) {
    Mat Z(n * n, 0.0);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++)
            for (int j = 0; j < n; j++) Z[i * n + j] += X[i * n + k] * Y[k * n + j];
    return Z;
}
Mat identity(int n) {
    Mat I(n * n, 0.0);
    for (int i = 0; i < n; i++) I[i * n + i] = 1;
    return I;
}
double orth_err(const Mat& H, int n) {  // max |HᵀH − I|
    const Mat G = matmul(transpose(H, n), H, n), I = identity(n);
    double e = 0;
    for (int i = 0; i < n * n; i++) e = std::max(e, std::fabs(G[i] - I[i]));
    return e;
}
// σ_1, σ_2 of A: power iteration on S = AᵀA, then on S deflated by the first eigenpair (a method
// independent of the library's Jacobi rotations). σ_2 = 0 for n = 1.
std::pair<double, double> top_two_sv(const Mat& A, int n) {
    Mat S = matmul(transpose(A, n), A, n);
    auto power = [n](const Mat& M, std::vector<double> v) {
        double lambda = 0;
        for (int it = 0; it < 20000; it++) {
            std::vector<double> w(n, 0.0);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) w[i] += M[i * n + j] * v[j];
            double norm = 0, rq = 0;
            for (int i = 0; i < n; i++) norm += w[i] * w[i], rq += v[i] * w[i];
            lambda = rq;
            if (norm == 0) break;
            for (int i = 0; i < n; i++) v[i] = w[i] / std::sqrt(norm);
        }
        return std::make_pair(lambda, v);
    };
    std::vector<double> v0(n), v1(n);
    for (int i = 0; i < n; i++) v0[i] = 1.0 + 0.37 * i, v1[i] = (i % 2 ? -1.0 : 0.5) + 0.1 * i;
    const auto [l1, u] = power(S, v0);
    if (n == 1) return {std::sqrt(l1), 0.0};
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) S[i * n + j] -= l1 * u[i] * u[j];
    double d = 0;
    for (int i = 0; i < n; i++) d += v1[i] * u[i];
    for (int i = 0; i < n; i++) v1[i] -= d * u[i];
    const double l2 = power(S, v1).first;
    return {std::sqrt(l1), std::sqrt(std::max(l2, 0.0))};
}
// Mean over tokens of the mean pairwise cosine similarity of the n streams of X [N, n, C].
double similarity(const float* X, int N, int n, int C) {
    double total = 0;
    for (int tok = 0; tok < N; tok++) {
        double sum = 0;
        for (int s = 0; s < n; s++)
            for (int t = s + 1; t < n; t++) {
                double dot = 0, a = 0, b = 0;
                for (int c = 0; c < C; c++) {
                    const double x = X[(tok * n + s) * C + c], y = X[(tok * n + t) * C + c];
                    dot += x * y, a += x * x, b += y * y;
                }
                sum += dot / std::sqrt(a * b);
            }
        total += sum / (n * (n - 1) / 2.0);
    }
    return total / N;
}
// Plain Sinkhorn (SPEC §2, mhc): exp(L), then `iters` times columns then rows normalised.
Mat sinkhorn(const Mat& L, int n, int iters) {
    Mat H(n * n);
    for (int i = 0; i < n * n; i++) H[i] = std::exp(L[i]);
    for (int it = 0; it < iters; it++) {
        for (int t = 0; t < n; t++) {
            double c = 0;
            for (int s = 0; s < n; s++) c += H[s * n + t];
            for (int s = 0; s < n; s++) H[s * n + t] /= c;
        }
        for (int s = 0; s < n; s++) {
            double r = 0;
            for (int t = 0; t < n; t++) r += H[s * n + t];
            for (int t = 0; t < n; t++) H[s * n + t] /= r;
        }
    }
    return H;
}

// Expected per-site records when every token has the same H_res (dynamic scales 0): site k's
// matrices, and the composite map A_k ⋯ A_1 (A = H_resᵀ) for the depth gains and spectrum.
struct Want { double ds, fwd, bwd, dfwd, dbwd, orth, s1, s2; };
std::vector<Want> expected(const std::vector<Mat>& H, int n) {
    std::vector<Want> w;
    Mat comp = identity(n);
    for (const Mat& h : H) {
        const Mat A = transpose(h, n);
        comp = matmul(A, comp, n);
        const auto [s1, s2] = top_two_sv(comp, n);
        w.push_back({ds_err(h, n), fwd_gain(A, n), bwd_gain(A, n), fwd_gain(comp, n), bwd_gain(comp, n),
                     orth_err(h, n), s1, s2});
    }
    return w;
}

// ---- the model --------------------------------------------------------------------------------------
ModelConfig config(const std::string& type, int n) {
    ModelConfig c = test::tiny_config(type);
    c.hyper_conn_n = n;
    return c;
}

float* param(GPT<float>& m, int site, const std::string& name) {
    const std::string full =
        "transformer.h." + std::to_string(site / 2) + (site % 2 ? ".hc_mlp." : ".hc_attn.") + name;
    for (const auto& p : m.params)
        if (p.name == full) return m.param.data() + p.offset;
    ADD_FAILURE() << "no parameter " << full;
    static float dummy[64];
    return dummy;
}

// A forward on fixed tokens, then the diagnostics.
nlohmann::json forward_and_diag(GPT<float>& m, int B = 2, int T = 4) {
    std::vector<int32_t> in(B * T), tg(B * T);
    for (int i = 0; i < B * T; i++) in[i] = (3 * i + 1) % m.V, tg[i] = (5 * i + 2) % m.V;
    gpt_forward(m, in.data(), tg.data(), B, T);
    return gpt_diagnostics(m);
}

void near(const nlohmann::json& site, const char* key, double want) {
    const double got = site.at(key).get<double>();
    EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::fabs(want))) << "site " << site["site"] << " " << key;
}

void check_sites(const nlohmann::json& d, const std::vector<Want>& want) {
    ASSERT_EQ(d["sites"].size(), want.size());
    for (size_t k = 0; k < want.size(); k++) {
        const nlohmann::json& s = d["sites"][k];
        EXPECT_EQ(s["site"], (int)k);
        EXPECT_EQ(s["block"], (int)k / 2);
        EXPECT_EQ(s["kind"], k % 2 ? "mlp" : "attn");
        near(s, "ds_error_mean", want[k].ds), near(s, "ds_error_max", want[k].ds);
        near(s, "fwd_gain_mean", want[k].fwd), near(s, "fwd_gain_max", want[k].fwd);
        near(s, "bwd_gain_mean", want[k].bwd), near(s, "bwd_gain_max", want[k].bwd);
        near(s, "depth_fwd_gain_mean", want[k].dfwd), near(s, "depth_fwd_gain_max", want[k].dfwd);
        near(s, "depth_bwd_gain_mean", want[k].dbwd), near(s, "depth_bwd_gain_max", want[k].dbwd);
        near(s, "orth_error_mean", want[k].orth), near(s, "orth_error_max", want[k].orth);
        near(s, "depth_sigma1_mean", want[k].s1), near(s, "depth_sigma1_max", want[k].s1);
        near(s, "depth_sigma2_mean", want[k].s2), near(s, "depth_sigma2_max", want[k].s2);
    }
}

// The streams after each site of the last forward: their similarity by hand, per site.
void check_similarity(const GPT<float>& m, const nlohmann::json& d) {
    for (size_t k = 0; k < d["sites"].size(); k++)
        near(d["sites"][k], "stream_similarity", similarity(m.X[k + 1], m.B * m.Tn, m.n, m.C));
}

}  // namespace

// hc: H_res = dynamic_alpha_scale · tanh(…) + static_alpha[s][1+t]; with the scale 0 it is the
// static matrix, whatever the (perturbed) rest of the model. Identity, a doubly-stochastic
// permutation mixture and two non-stochastic matrices, so the composite drifts from 1.
TEST(DiagLog, HcStaticMatrices) {
    const int n = 3;
    GPT<float> m;
    test::make_perturbed(m, config("hc", n), 7);
    const std::vector<Mat> H = {
        identity(n),
        {0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 0.5},  // (I + cyclic shift) / 2
        {1.2, -0.1, 0.0, 0.3, 0.9, 0.2, 0.0, 0.5, 0.7},
        {2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5},
    };
    for (int k = 0; k < 4; k++) {
        *param(m, k, "dynamic_alpha_scale") = 0.0f;
        float* sa = param(m, k, "static_alpha");  // (n, 1+n): column 0 is H_pre, then H_res[s][·]
        for (int s = 0; s < n; s++)
            for (int t = 0; t < n; t++) sa[s * (1 + n) + 1 + t] = (float)H[k][s * n + t];
    }
    std::vector<Mat> Hf = H;  // as stored (fp32)
    for (Mat& h : Hf)
        for (double& v : h) v = (double)(float)v;
    const nlohmann::json d = forward_and_diag(m);
    EXPECT_EQ(d["tokens"], 8);
    check_sites(d, expected(Hf, n));
    // Site 2 by hand: rows 1.1 1.4 1.2, columns 1.5 1.3 0.9, min -0.1 -> DS error 0.5;
    // A = Hᵀ: abs row sums 1.5 1.5 0.9 (fwd 1.5), abs column sums 1.3 1.4 1.2 (bwd 1.4).
    near(d["sites"][2], "ds_error_max", 0.5);
    near(d["sites"][2], "fwd_gain_max", 1.5);
    near(d["sites"][2], "bwd_gain_max", 1.4);
    // Site 3 = diag(2, 1, 0.5): DS error 1, gains 2; the composite through sites 0..3 then has
    // a forward gain above 2 (checked exactly against the product above).
    near(d["sites"][3], "ds_error_max", 1.0);
    near(d["sites"][3], "fwd_gain_max", 2.0);
    EXPECT_GT(d["sites"][3]["depth_fwd_gain_max"].get<double>(), 2.0);
    EXPECT_FALSE(d["sites"][0].contains("log_inv_nu_mean"));  // mhc only
    check_similarity(m, d);
}

// mhc-lite: a = softmax(residual_scale · w + static_alpha[n + k]); with the scale 0 the weights are
// the softmax of the chosen logits, and H_res = Σ_k a_k P_k is exactly doubly stochastic.
TEST(DiagLog, MhcLiteKnownPermutationMixture) {
    const int n = 3;
    GPT<float> m;
    test::make_perturbed(m, config("mhc_lite", n), 11);
    // itertools.permutations(range(3)): 012 021 102 120 201 210
    const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const double logits[4][6] = {{0, -8, -8, -8, -8, -8}, {0, 0, 0, 0, 0, 0},
                                 {1.0, -0.5, 2.0, 0.25, -3.0, 0.75}, {-20, -20, -20, 5, -20, -20}};
    std::vector<Mat> H;
    for (int k = 0; k < 4; k++) {
        *param(m, k, "residual_scale") = 0.0f;
        float* sa = param(m, k, "static_alpha");  // [b_pre (n) | b_res (n!)]
        double w[6], z = 0;
        for (int j = 0; j < 6; j++) sa[n + j] = (float)logits[k][j], z += w[j] = std::exp((double)sa[n + j]);
        Mat h(n * n, 0.0);
        for (int j = 0; j < 6; j++)
            for (int i = 0; i < n; i++) h[i * n + perms[j][i]] += w[j] / z;
        H.push_back(h);
    }
    const nlohmann::json d = forward_and_diag(m);
    check_sites(d, expected(H, n));
    // The coefficients really are that mixture (site 2, token 5), and the gains are 1.
    const float* hres = cache_hres(m.sites[2], m.s_act[2].cache, 5);
    for (int i = 0; i < n * n; i++) EXPECT_NEAR(hres[i], H[2][i], 1e-6);
    for (const auto& s : d["sites"]) {
        EXPECT_LT(s["ds_error_max"].get<double>(), 1e-6);
        EXPECT_NEAR(s["depth_fwd_gain_max"].get<double>(), 1.0, 1e-6);
    }
}

// mhc: L = residual_scale · w + static logits; with the scale 0, L is chosen. Site 1 is SPEC §2's
// Sinkhorn-gap matrix (column sums 1.8197, 0.5901, 0.5901 after 20 iterations: DS error 0.8197);
// log(1/ν) = max − min of L, and the fraction of tokens above 30.
TEST(DiagLog, MhcSinkhornGapAndNu) {
    const int n = 3;
    GPT<float> m;
    test::make_perturbed(m, config("mhc", n), 13);
    const double a = 1e-13;
    const double gap[9] = {0.5, a, a, 0.5, a, a, a, 1, 1};
    std::vector<Mat> L(4, Mat(n * n));
    for (int i = 0; i < n * n; i++) {
        L[0][i] = i % (n + 1) == 0 ? 0.0 : -8.0;  // the initial logits
        L[1][i] = std::log(gap[i]);
        L[2][i] = 0.1 * i - 0.3;
        L[3][i] = i == 4 ? 35.0 : 0.0;  // range 35 > 30
    }
    std::vector<Mat> H;
    for (int k = 0; k < 4; k++) {
        *param(m, k, "residual_scale") = 0.0f;
        float* sa = param(m, k, "static_alpha");  // (n, 1+n): [pre_s, res_{s,0..n-1}]
        for (int s = 0; s < n; s++)
            for (int t = 0; t < n; t++) {
                sa[s * (1 + n) + 1 + t] = (float)L[k][s * n + t];
                L[k][s * n + t] = sa[s * (1 + n) + 1 + t];  // as stored
            }
        H.push_back(sinkhorn(L[k], n, 20));
    }
    const nlohmann::json d = forward_and_diag(m);
    check_sites(d, expected(H, n));
    EXPECT_NEAR(d["sites"][1]["ds_error_max"].get<double>(), 0.8197, 1e-4);
    for (int k = 0; k < 4; k++) {
        const double nu = *std::max_element(L[k].begin(), L[k].end()) - *std::min_element(L[k].begin(), L[k].end());
        near(d["sites"][k], "log_inv_nu_mean", nu);
        near(d["sites"][k], "log_inv_nu_max", nu);
        near(d["sites"][k], "frac_nu_above_30", nu > 30 ? 1.0 : 0.0);
    }
    near(d["sites"][0], "log_inv_nu_max", 8.0);
    near(d["sites"][3], "frac_nu_above_30", 1.0);
}

// jpmhc with M set by hand in two 2x2 blocks (streams 0–1 and 2–3): B = αW/2 acts on each block as
// the complex number i·b, b = 0.05·(M[i][j] − M[j][i]), so the exact transform is (1 + ib)/(1 − ib)
// and the paper's iteration z_0 = 1 + 2ib, z ← 1 + ib(1 + z); block [[Re z, Im z], [−Im z, Re z]].
// Site 1 is SPEC's Cayley gap (M[0][1] = 10): orthogonality error 0 exact, 0.1875 with 2 iterations.
TEST(DiagLog, JpmhcHandSetBlocksInBothModes) {
    const int n = 4;
    // per site: M[0][1], M[1][0], M[2][3], M[3][2]
    const double M[4][4] = {{0, 0, 0, 0}, {10, 0, 0, 0}, {-2, 4, 0, 3}, {7, -8, -12, 2}};
    for (int iters : {0, 2}) {
        SCOPED_TRACE("cayley_iters " + std::to_string(iters));
        ModelConfig c = config("jpmhc", n);
        c.cayley_iters = iters;
        GPT<float> m;
        test::make_perturbed(m, c, 23);
        std::vector<Mat> H;
        for (int k = 0; k < 4; k++) {
            *param(m, k, "residual_scale") = 0.0f;
            float* sa = param(m, k, "static_alpha");  // [b_pre (n) | M (n*n), row-major]
            for (int i = 0; i < n * n; i++) sa[n + i] = 0.0f;
            sa[n + 0 * n + 1] = (float)M[k][0], sa[n + 1 * n + 0] = (float)M[k][1];
            sa[n + 2 * n + 3] = (float)M[k][2], sa[n + 3 * n + 2] = (float)M[k][3];
            Mat h(n * n, 0.0);
            for (int blk = 0; blk < 2; blk++) {
                const double b = 0.05 * (M[k][2 * blk] - M[k][2 * blk + 1]);
                const std::complex<double> ib(0, b);
                std::complex<double> z = (1.0 + ib) / (1.0 - ib);
                if (iters) {
                    z = 1.0 + 2.0 * ib;
                    for (int it = 0; it < iters; it++) z = 1.0 + ib * (1.0 + z);
                }
                const int o = 2 * blk;
                h[o * n + o] = h[(o + 1) * n + o + 1] = z.real();
                h[o * n + o + 1] = z.imag();
                h[(o + 1) * n + o] = -z.imag();
            }
            H.push_back(h);
        }
        const nlohmann::json d = forward_and_diag(m);
        check_sites(d, expected(H, n));
        near(d["sites"][1], "orth_error_max", iters ? 0.1875 : 0.0);
        near(d["sites"][1], "fwd_gain_max", iters ? 1.25 : 1.4);  // |0.5| + |0.75|, |0.6| + |0.8|
        if (!iters)
            for (const auto& s : d["sites"]) {
                EXPECT_LT(s["orth_error_max"].get<double>(), 1e-6);
                EXPECT_NEAR(s["depth_sigma2_max"].get<double>(), 1.0, 1e-6);
            }
        check_similarity(m, d);
    }
}

// ohc with the 8 res logits set by hand: H_res = the rotation p ↦ q·p·r̄ (quaternion products).
TEST(DiagLog, OhcHandSetRotations) {
    const int n = 4;
    GPT<float> m;
    test::make_perturbed(m, config("ohc", n), 29);
    const double l[4][8] = {{0, 0, 0, 0, 0, 0, 0, 0},
                            {0.5, -1, 0.25, 2, 0, 0, 0, 0},
                            {-0.5, 0.75, 1.5, -2, 3, -1, 0.5, 0.25},
                            {-2, 0, 0, 1, -1, 1, 1, 1}};
    std::vector<Mat> H;
    for (int k = 0; k < 4; k++) {
        *param(m, k, "residual_scale") = 0.0f;
        float* sa = param(m, k, "static_alpha");  // [b_pre (4) | l (8)]
        for (int i = 0; i < 8; i++) sa[n + i] = (float)l[k][i];
        Mat h(16);
        test::ohc_by_quaternions(l[k], h.data());
        H.push_back(h);
    }
    const nlohmann::json d = forward_and_diag(m);
    check_sites(d, expected(H, n));
    for (const auto& s : d["sites"]) {
        EXPECT_LT(s["orth_error_max"].get<double>(), 1e-6);
        EXPECT_NEAR(s["depth_sigma1_max"].get<double>(), 1.0, 1e-6);
        EXPECT_NEAR(s["depth_sigma2_mean"].get<double>(), 1.0, 1e-6);
    }
    check_similarity(m, d);
}

// With the dynamic paths on, H_res differs per token: the statistics are the mean and max over
// tokens, and the depth gains are of each token's own composite. The per-token H_res are read from
// the coefficient cache (computed and tested elsewhere); the statistics are recomputed here.
TEST(DiagLog, PerTokenMeanAndMaxWithDynamicCoefficients) {
    for (const char* type : {"hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc", "none"}) {
        SCOPED_TRACE(type);
        const int n = std::string(type) == "none" ? 1 : std::string(type) == "hc" ? 3 : 4;
        GPT<float> m;
        test::make_perturbed(m, config(type, n), 17);
        for (int k = 0; k < 4 && n > 1; k++) *param(m, k, std::string(type) == "hc" ? "dynamic_alpha_scale"
                                                                                   : "residual_scale") = 3.0f;
        const int B = 3, T = 4, N = B * T;
        const nlohmann::json d = forward_and_diag(m, B, T);
        EXPECT_EQ(d["tokens"], N);
        std::vector<Mat> comp(N, identity(n));
        for (int k = 0; k < 4; k++) {
            constexpr int K = 8;
            double sum[K] = {}, mx[K] = {};
            for (int tok = 0; tok < N; tok++) {
                const float* h = cache_hres(m.sites[k], m.s_act[k].cache, tok);
                const Mat H(h, h + n * n), A = transpose(H, n);
                comp[tok] = matmul(A, comp[tok], n);
                const auto [s1, s2] = top_two_sv(comp[tok], n);
                const double v[K] = {ds_err(H, n), fwd_gain(A, n), bwd_gain(A, n), fwd_gain(comp[tok], n),
                                     bwd_gain(comp[tok], n), orth_err(H, n), s1, s2};
                for (int i = 0; i < K; i++) sum[i] += v[i], mx[i] = tok ? std::max(mx[i], v[i]) : v[i];
            }
            const nlohmann::json& s = d["sites"][k];
            const char* keys[K] = {"ds_error", "fwd_gain", "bwd_gain", "depth_fwd_gain", "depth_bwd_gain",
                                   "orth_error", "depth_sigma1", "depth_sigma2"};
            for (int i = 0; i < (n > 1 ? K : K - 1); i++) {
                near(s, (std::string(keys[i]) + "_mean").c_str(), sum[i] / N);
                near(s, (std::string(keys[i]) + "_max").c_str(), mx[i]);
            }
            if (n > 1) near(s, "stream_similarity", similarity(m.X[k + 1], N, n, m.C));
            else EXPECT_FALSE(s.contains("depth_sigma2_mean") || s.contains("stream_similarity"));
            if (std::string(type) == "hc" && k == 3) {  // unconstrained: the tokens really differ
                EXPECT_GT(s["fwd_gain_max"].get<double>() - s["fwd_gain_mean"].get<double>(), 1e-4);
            }
        }
    }
}

// The diagnostics read the model only, and survive a backward (dH lives in its own cache slots).
// The tokens' values are made in parallel and added in token order: one thread or several, the
// same bits in every statistic (mhc's log(1/ν) included), over enough tokens to split.
TEST(DiagLog, SameBitsOnAnyNumberOfThreads) {
    for (const char* type : {"mhc", "mhc_lite", "jpmhc"}) {
        GPT<float> m;
        test::make_perturbed(m, config(type, 4), 23);
        const int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        const nlohmann::json one = forward_and_diag(m, 37, 3);
        omp_set_num_threads(4);
        const nlohmann::json four = gpt_diagnostics(m);
        omp_set_num_threads(threads);
        EXPECT_EQ(one, four) << type;
        EXPECT_EQ(one["tokens"], 3 * 37);
    }
}

TEST(DiagLog, ReadOnlyAndUnchangedByBackward) {
    GPT<float> m;
    test::make_perturbed(m, config("mhc", 4), 19);
    const nlohmann::json before = forward_and_diag(m);
    const std::vector<float> params = m.param;
    gpt_backward(m);
    EXPECT_EQ(gpt_diagnostics(m), before);
    EXPECT_EQ(m.param, params);
    GPT<float> fresh;
    gpt_build(fresh, config("mhc", 4));
    EXPECT_THROW(gpt_diagnostics(fresh), std::logic_error);  // no forward yet
}
