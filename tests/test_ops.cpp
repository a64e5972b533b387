// The transformer ops: finite-difference checks in double for every input of every op.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops/ops.h"

using namespace mhc;

namespace {

using Vec = std::vector<double>;

Vec randn(size_t n, std::mt19937_64& rng, double scale = 1.0) {
    std::normal_distribution<double> nd(0, scale);
    Vec v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

double dotv(const Vec& a, const Vec& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// Checks the analytic gradient `an` of loss() w.r.t. every element of x by central differences.
void check_grad(Vec& x, const Vec& an, const std::function<double()>& loss, const char* what) {
    ASSERT_EQ(x.size(), an.size()) << what;
    const double h = 1e-6;
    double worst = 0, gmax = 0;
    for (size_t i = 0; i < x.size(); i++) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss();
        x[i] = x0 - h;
        const double lm = loss();
        x[i] = x0;
        const double fd = (lp - lm) / (2 * h);
        worst = std::max(worst, std::fabs(fd - an[i]) / std::max(1.0, std::fabs(fd)));
        gmax = std::max(gmax, std::fabs(an[i]));
    }
    EXPECT_LT(worst, 1e-6) << what;
    EXPECT_GT(gmax, 1e-3) << what << ": gradient trivially zero";
}

TEST(OpsFiniteDiff, LayerNorm) {
    std::mt19937_64 rng(1);
    const int N = 4, C = 7;
    Vec x = randn(N * C, rng), w = randn(C, rng), b = randn(C, rng), G = randn(N * C, rng);
    Vec out(N * C), mean(N), rstd(N);
    auto loss = [&] {
        layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
        return dotv(out, G);
    };
    loss();
    Vec dx(N * C, 7.0), dw(C, 0.0), db(C, 0.0);  // dx is overwritten: prefill with garbage
    layernorm_backward(dx.data(), dw.data(), db.data(), G.data(), x.data(), w.data(), mean.data(),
                       rstd.data(), N, C);
    check_grad(x, dx, loss, "x");
    check_grad(w, dw, loss, "w");
    check_grad(b, db, loss, "b");
}

TEST(OpsFiniteDiff, Matmul) {
    std::mt19937_64 rng(2);
    const int N = 5, IC = 6, OC = 4;
    Vec x = randn(N * IC, rng), W = randn(OC * IC, rng), bias = randn(OC, rng), G = randn(N * OC, rng);
    Vec out(N * OC);
    auto loss = [&] {
        matmul_forward(out.data(), x.data(), W.data(), bias.data(), N, IC, OC);
        return dotv(out, G);
    };
    loss();
    Vec dx(N * IC, 7.0), dW(OC * IC, 0.0), db(OC, 0.0);
    matmul_backward(dx.data(), dW.data(), db.data(), G.data(), x.data(), W.data(), N, IC, OC);
    check_grad(x, dx, loss, "x");
    check_grad(W, dW, loss, "W");
    check_grad(bias, db, loss, "bias");
}

TEST(OpsFiniteDiff, Gelu) {
    std::mt19937_64 rng(3);
    const int N = 40;
    Vec x(N), G = randn(N, rng), out(N);
    for (int i = 0; i < N; i++) x[i] = -6 + 12.0 * i / (N - 1) + 0.01;
    auto loss = [&] {
        gelu_forward(out.data(), x.data(), N);
        return dotv(out, G);
    };
    loss();
    EXPECT_NEAR(out[N - 1], x[N - 1], 1e-8);    // GELU(x) ≈ x for large x
    EXPECT_NEAR(out[0], 0.0, 1e-8);             // and ≈ 0 for very negative x
    Vec dx(N, 7.0);
    gelu_backward(dx.data(), x.data(), G.data(), N);
    check_grad(x, dx, loss, "x");
}

TEST(OpsFiniteDiff, Attention) {
    std::mt19937_64 rng(4);
    const int B = 2, Tn = 5, C = 8, H = 2;
    Vec qkv = randn(B * Tn * 3 * C, rng), G = randn(B * Tn * C, rng);
    Vec out(B * Tn * C), att(B * H * Tn * Tn);
    auto loss = [&] {
        attention_forward(out.data(), att.data(), qkv.data(), B, Tn, C, H);
        return dotv(out, G);
    };
    loss();
    for (int bh = 0; bh < B * H; bh++)  // causal: row t attends to j <= t only; rows sum to 1
        for (int t = 0; t < Tn; t++) {
            double s = 0;
            for (int j = 0; j < Tn; j++) {
                const double p = att[((size_t)bh * Tn + t) * Tn + j];
                if (j > t) {
                    EXPECT_EQ(p, 0.0);
                }
                s += p;
            }
            EXPECT_NEAR(s, 1.0, 1e-12);
        }
    Vec dqkv(qkv.size(), 7.0), datt(att.size());
    attention_backward(dqkv.data(), datt.data(), G.data(), qkv.data(), att.data(), B, Tn, C, H);
    check_grad(qkv, dqkv, loss, "qkv");
}

// Straightforward causal attention (full T x T scores, softmax over j <= t) for the blocked op to match.
void naive_attention(Vec& out, Vec& att, const Vec& qkv, int B, int Tn, int C, int H) {
    const int hs = C / H;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < Tn; t++) {
                const double* q = &qkv[((size_t)b * Tn + t) * 3 * C + h * hs];
                std::vector<double> s(t + 1);
                double m = -1e300, z = 0;
                for (int j = 0; j <= t; j++) {
                    const double* k = &qkv[((size_t)b * Tn + j) * 3 * C + C + h * hs];
                    s[j] = 0;
                    for (int c = 0; c < hs; c++) s[j] += q[c] * k[c] / std::sqrt((double)hs);
                    m = std::max(m, s[j]);
                }
                for (int j = 0; j <= t; j++) z += (s[j] = std::exp(s[j] - m));
                double* o = &out[((size_t)b * Tn + t) * C + h * hs];
                for (int c = 0; c < hs; c++) o[c] = 0;
                for (int j = 0; j <= t; j++) {
                    att[(((size_t)b * H + h) * Tn + t) * Tn + j] = s[j] / z;
                    const double* v = &qkv[((size_t)b * Tn + j) * 3 * C + 2 * C + h * hs];
                    for (int c = 0; c < hs; c++) o[c] += s[j] / z * v[c];
                }
            }
}

// Sequence lengths around the query blocks (kAttBlock rows): one position, a partial block, exactly
// one block, several with a partial last one. att and datt start as NaN: the entries the blocked op
// leaves untouched must never be read (a NaN would reach the loss or the gradient).
TEST(OpsFiniteDiff, AttentionBlocksMatchNaiveAndGradients) {
    std::mt19937_64 rng(7);
    for (const int Tn : {1, 3, kAttBlock, kAttBlock + 1, 2 * kAttBlock + 3}) {
        const int B = Tn > kAttBlock ? 1 : 2, C = 4, H = 2;
        Vec qkv = randn((size_t)B * Tn * 3 * C, rng), G = randn((size_t)B * Tn * C, rng);
        const double nan = std::nan("");
        Vec out(B * Tn * C), att((size_t)B * H * Tn * Tn, nan);
        auto loss = [&] {
            attention_forward(out.data(), att.data(), qkv.data(), B, Tn, C, H);
            return dotv(out, G);
        };
        loss();
        Vec ref_out(out.size()), ref_att(att.size(), 0.0);
        naive_attention(ref_out, ref_att, qkv, B, Tn, C, H);
        double worst = 0;
        for (size_t i = 0; i < out.size(); i++) worst = std::max(worst, std::fabs(out[i] - ref_out[i]));
        for (int bh = 0; bh < B * H; bh++)
            for (int t = 0; t < Tn; t++)
                for (int j = 0; j < std::min(Tn, (t / kAttBlock + 1) * kAttBlock); j++) {
                    const size_t at = ((size_t)bh * Tn + t) * Tn + j;
                    worst = std::max(worst, std::fabs(att[at] - ref_att[at]));  // 0 above the diagonal
                }
        EXPECT_LT(worst, 1e-13) << "T = " << Tn;
        Vec dqkv(qkv.size(), 7.0), datt(att.size(), nan);
        attention_backward(dqkv.data(), datt.data(), G.data(), qkv.data(), att.data(), B, Tn, C, H);
        if (Tn == 1) {  // one position: out = v, so q and k get no gradient
            for (int b = 0; b < B; b++)
                for (int c = 0; c < 2 * C; c++) EXPECT_EQ(dqkv[(size_t)b * 3 * C + c], 0.0);
        }
        check_grad(qkv, dqkv, loss, ("attention qkv, T = " + std::to_string(Tn)).c_str());
    }
}

// The float path (vectorised exp) against the double one, across several blocks.
TEST(OpsFloat, AttentionMatchesDouble) {
    std::mt19937_64 rng(8);
    const int B = 2, Tn = 2 * kAttBlock + 5, C = 32, H = 2;
    Vec qkv = randn((size_t)B * Tn * 3 * C, rng, 2.0), G = randn((size_t)B * Tn * C, rng);
    Vec out(B * Tn * C), att((size_t)B * H * Tn * Tn), datt(att.size()), dqkv(qkv.size());
    attention_forward(out.data(), att.data(), qkv.data(), B, Tn, C, H);
    attention_backward(dqkv.data(), datt.data(), G.data(), qkv.data(), att.data(), B, Tn, C, H);
    auto f = [](const Vec& v) { return std::vector<float>(v.begin(), v.end()); };
    std::vector<float> qf = f(qkv), Gf = f(G), of(out.size()), af(att.size()), daf(att.size()), dqf(qkv.size());
    attention_forward(of.data(), af.data(), qf.data(), B, Tn, C, H);
    attention_backward(dqf.data(), daf.data(), Gf.data(), qf.data(), af.data(), B, Tn, C, H);
    auto rel = [](const std::vector<float>& a, const Vec& b) {
        double d = 0, m = 0;
        for (size_t i = 0; i < a.size(); i++) d = std::max(d, std::fabs(a[i] - b[i])), m = std::max(m, std::fabs(b[i]));
        return d / m;
    };
    EXPECT_LT(rel(of, out), 1e-5);
    EXPECT_LT(rel(dqf, dqkv), 1e-5);
}

// The float GELU (vectorisable Φ) against libm's erf in double, over [-12, 12] and its far tails.
TEST(OpsFloat, GeluMatchesExactErf) {
    std::vector<float> x;
    for (int i = 0; i <= 240000; i++) x.push_back(-12.0f + 1e-4f * (float)i);
    for (float v : {-1e4f, -100.0f, -30.0f, 0.0f, -0.0f, 1e-30f, 30.0f, 100.0f, 1e4f}) x.push_back(v);
    const long N = (long)x.size();
    std::vector<float> out(N), din(N), ones(N, 1.0f);
    gelu_forward(out.data(), x.data(), N);
    gelu_backward(din.data(), x.data(), ones.data(), N);
    double worst_f = 0, worst_b = 0;
    for (long i = 0; i < N; i++) {
        const double v = x[i], cdf = 0.5 * std::erfc(-v * M_SQRT1_2);
        const double pdf = std::exp(-0.5 * v * v) * 0.3989422804014327;
        worst_f = std::max(worst_f, std::fabs(out[i] - v * cdf) / std::max(1.0, std::fabs(v)));
        worst_b = std::max(worst_b, std::fabs(din[i] - (cdf + v * pdf)));
    }
    EXPECT_LT(worst_f, 3e-7);  // measured 1.4e-7: about 2 ulp
    EXPECT_LT(worst_b, 4e-7);  // measured 2.1e-7
}

// The float cross-entropy (vectorised exp) against the double one.
TEST(OpsFloat, CrossEntropyMatchesDouble) {
    std::mt19937_64 rng(9);
    const int N = 7, V = 300;  // V not a multiple of the lanes
    Vec logits = randn((size_t)N * V, rng, 3.0), losses(N);
    std::vector<int32_t> tg = {0, 299, 5, 17, 150, 16, 1};
    std::vector<float> lf(logits.begin(), logits.end()), lossf(N);
    const double L = crossentropy_forward(logits.data(), losses.data(), tg.data(), N, V);
    const double Lf = crossentropy_forward(lf.data(), lossf.data(), tg.data(), N, V);
    EXPECT_NEAR(Lf, L, 1e-6 * L);
    crossentropy_backward(logits.data(), tg.data(), N, V, 1.0);
    crossentropy_backward(lf.data(), tg.data(), N, V, 1.0);
    for (size_t i = 0; i < lf.size(); i++) EXPECT_NEAR(lf[i], logits[i], 1e-6) << i;
}

TEST(OpsFiniteDiff, EncoderIntoStreams) {
    std::mt19937_64 rng(5);
    const int V = 7, B = 2, Tn = 4, C = 3, n = 3;
    Vec wte = randn(V * C, rng), wpe = randn(Tn * C, rng), G = randn(B * Tn * n * C, rng);
    std::vector<int32_t> idx = {1, 3, 3, 0, 6, 1, 1, 2};  // repeated tokens: a scatter-add
    Vec X(B * Tn * n * C);
    auto loss = [&] {
        encoder_forward(X.data(), idx.data(), wte.data(), wpe.data(), B, Tn, C, n);
        return dotv(X, G);
    };
    loss();
    for (int s = 1; s < n; s++) EXPECT_EQ(X[s * C], X[0]);  // every stream starts as the embedding
    Vec dwte(V * C, 0.0), dwpe(Tn * C, 0.0);
    encoder_backward(dwte.data(), dwpe.data(), G.data(), idx.data(), B, Tn, C, n);
    check_grad(wte, dwte, loss, "wte");
    check_grad(wpe, dwpe, loss, "wpe");
}

TEST(OpsFiniteDiff, CrossEntropy) {
    std::mt19937_64 rng(6);
    const int N = 5, V = 9;
    Vec logits = randn(N * V, rng, 2.0), probs(N * V), losses(N);
    std::vector<int32_t> tg = {0, 8, 3, 3, 5};
    auto loss = [&] {
        probs = logits;
        return crossentropy_forward(probs.data(), losses.data(), tg.data(), N, V);
    };
    const double L = loss();
    double manual = 0;
    for (int i = 0; i < N; i++) {
        double z = 0;
        for (int v = 0; v < V; v++) z += std::exp(logits[i * V + v]);
        manual += (std::log(z) - logits[i * V + tg[i]]) / N;
    }
    EXPECT_NEAR(L, manual, 1e-12);
    crossentropy_backward(probs.data(), tg.data(), N, V, 1.0 / N);
    Vec dlogits = probs;
    check_grad(logits, dlogits, loss, "logits");
    // A hopeless target (probability ~e^-200) still gives a finite loss.
    Vec far(V, 0.0);
    far[0] = 200;
    std::vector<int32_t> t1 = {1};
    Vec l1(1);
    EXPECT_NEAR(crossentropy_forward(far.data(), l1.data(), t1.data(), 1, V), 200.0, 1e-9);
}

TEST(OpsFiniteDiff, StreamSum) {
    std::mt19937_64 rng(7);
    const int N = 3, n = 4, C = 5;
    Vec X = randn(N * n * C, rng), G = randn(N * C, rng), out(N * C);
    auto loss = [&] {
        stream_sum_forward(out.data(), X.data(), N, n, C);
        return dotv(out, G);
    };
    loss();
    EXPECT_DOUBLE_EQ(out[C + 2], X[(n + 0) * C + 2] + X[(n + 1) * C + 2] + X[(n + 2) * C + 2] + X[(n + 3) * C + 2]);
    Vec dX(N * n * C, NAN);  // overwritten
    stream_sum_backward(dX.data(), G.data(), N, n, C);
    check_grad(X, dX, loss, "X");
}

// The one-position attention over a KV cache gives the full causal attention's row at every
// position, fed one position at a time (T = 1, 3 and 65: across a query block of kAttBlock).
TEST(OpsCached, AttentionMatchesFullRowByRow) {
    for (const int Tn : {1, 3, 65}) {
        SCOPED_TRACE("T = " + std::to_string(Tn));
        std::mt19937_64 rng(8 + Tn);
        const int C = 12, H = 3;
        Vec qkv = randn((size_t)Tn * 3 * C, rng), full((size_t)Tn * C), att((size_t)H * Tn * Tn, 0.0);
        attention_forward(full.data(), att.data(), qkv.data(), 1, Tn, C, H);
        Vec K((size_t)Tn * C, NAN), V((size_t)Tn * C, NAN), out(C), patt((size_t)H * Tn);
        for (int pos = 0; pos < Tn; pos++) {
            std::fill(out.begin(), out.end(), NAN);
            attention_cached_forward(out.data(), patt.data(), qkv.data() + (size_t)pos * 3 * C, K.data(), V.data(),
                                     pos, C, H, Tn);
            for (int c = 0; c < C; c++) EXPECT_NEAR(out[c], full[(size_t)pos * C + c], 1e-12) << pos << " " << c;
        }
        for (int c = 0; c < C; c++) EXPECT_EQ(K[(size_t)(Tn - 1) * C + c], qkv[(size_t)(Tn - 1) * 3 * C + C + c]);
    }
}

}  // namespace
