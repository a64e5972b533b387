// jpmhc (SPEC §2, after JPmHC): H_res from the skew-symmetric W = M − Mᵀ of the res logits M [n,n]
// (row-major, column n + i·n + j), with B = αW/2, α = 0.1:
//   cayley_iters = 0: the exact Cayley transform H = (I − B)⁻¹ (I + B), orthogonal;
//   cayley_iters = s: the paper's fixed point, Y_0 = I + 2B, s times Y ← I + B (I + Y); H = Y_s,
//                     orthogonal only approximately (error about 4‖B‖⁴ for s = 2).
// The cache keeps W's upper triangle (w_ij, i < j); the backward recomputes the rest from it.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "mixer.h"

namespace mhc {

namespace {

constexpr double kAlpha = 0.1;  // fixed, as in the paper

// B = αW/2 [n,n] from W's stored upper triangle.
void skew_from_extra(const double* w, int n, double* B) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        B[i * n + i] = 0;
        for (int j = i + 1; j < n; j++, k++) {
            B[i * n + j] = 0.5 * kAlpha * w[k];
            B[j * n + i] = -0.5 * kAlpha * w[k];
        }
    }
}

// Solves P X = Y for X [n,n] (Y overwritten with X; P destroyed) by Gaussian elimination with
// partial pivoting. The P here are I ∓ B or their transposes with B skew-symmetric: every singular
// value is sqrt(1 + λ²) >= 1, so the solve is well conditioned for any logits.
void solve(double* P, double* Y, int n) {
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (std::fabs(P[r * n + c]) > std::fabs(P[piv * n + c])) piv = r;
        if (piv != c)
            for (int j = 0; j < n; j++) std::swap(P[c * n + j], P[piv * n + j]), std::swap(Y[c * n + j], Y[piv * n + j]);
        for (int r = c + 1; r < n; r++) {
            const double f = P[r * n + c] / P[c * n + c];
            if (f == 0) continue;
            for (int j = c; j < n; j++) P[r * n + j] -= f * P[c * n + j];
            for (int j = 0; j < n; j++) Y[r * n + j] -= f * Y[c * n + j];
        }
    }
    for (int c = n - 1; c >= 0; c--)
        for (int j = 0; j < n; j++) {
            double acc = Y[c * n + j];
            for (int k = c + 1; k < n; k++) acc -= P[c * n + k] * Y[k * n + j];
            Y[c * n + j] = acc / P[c * n + c];
        }
}

// Z = X Y, or X Yᵀ (ty), or Xᵀ Y (tx), all [n,n].
void matmul(const double* X, const double* Y, double* Z, int n, bool tx = false, bool ty = false) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k < n; k++) acc += (tx ? X[k * n + i] : X[i * n + k]) * (ty ? Y[j * n + k] : Y[k * n + j]);
            Z[i * n + j] = acc;
        }
}

// H = (I − B)⁻¹ (I + B).
void cayley_exact(const double* B, int n, double* H) {
    double P[64];
    for (int i = 0; i < n * n; i++) P[i] = -B[i], H[i] = B[i];
    for (int i = 0; i < n; i++) P[i * n + i] += 1, H[i * n + i] += 1;
    solve(P, H, n);
}

// The fixed-point iteration; trace (iters*n*n, or null) receives Y_0 … Y_{iters−1}.
void cayley_iterate(const double* B, int n, int iters, double* H, double* trace) {
    double Y[64], T[64];
    for (int i = 0; i < n * n; i++) Y[i] = 2 * B[i];
    for (int i = 0; i < n; i++) Y[i * n + i] += 1;
    for (int it = 0; it < iters; it++) {
        if (trace) std::copy(Y, Y + n * n, trace + (size_t)it * n * n);
        for (int i = 0; i < n; i++) Y[i * n + i] += 1;  // I + Y
        matmul(B, Y, T, n);
        for (int i = 0; i < n * n; i++) Y[i] = T[i];
        for (int i = 0; i < n; i++) Y[i * n + i] += 1;
    }
    std::copy(Y, Y + n * n, H);
}

void layout(ConnSite& s) {
    const int n = s.n;
    if (s.cfg.cayley_iters < 0)
        throw std::invalid_argument("jpmhc needs cayley_iters >= 0 (0: the exact Cayley transform), got " +
                                    std::to_string(s.cfg.cayley_iters));
    s.res_col.clear();
    for (int k = 0; k < n * n; k++) s.res_col.push_back(n + k);  // M[i][j]: column n + i·n + j
    s.n_extra = n * (n - 1) / 2;  // w_ij = M[i][j] − M[j][i], i < j
}

double init(const ConnSite&, int) { return 0.0; }

void forward(const ConnSite& s, const double* l, double* H, double* extra, double (*store)(double)) {
    const int n = s.n;
    double w[28], B[64];
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++, k++) w[k] = extra[k] = store(l[i * n + j] - l[j * n + i]);
    skew_from_extra(w, n, B);
    if (s.cfg.cayley_iters == 0) cayley_exact(B, n, H);
    else cayley_iterate(B, n, s.cfg.cayley_iters, H, nullptr);
}

// dL/dB = (I − B)⁻ᵀ G (I + H)ᵀ (exact), or the unrolled iterations' gradient; then dW = (α/2) dB
// and dM = dW − dWᵀ: dl_ij = dw_ij, dl_ji = −dw_ij with dw_ij = dW_ij − dW_ji.
void backward(const ConnSite& s, const double* extra, const double* dH, double* dl) {
    const int n = s.n, iters = s.cfg.cayley_iters;
    double B[64], dB[64], T[64];
    skew_from_extra(extra, n, B);
    if (iters == 0) {
        double P[64], H[64];
        cayley_exact(B, n, H);
        for (int i = 0; i < n * n; i++) P[i] = B[i], T[i] = dH[i];  // (I − B)ᵀ = I + B
        for (int i = 0; i < n; i++) P[i * n + i] += 1, H[i * n + i] += 1;
        solve(P, T, n);              // T = (I − B)⁻ᵀ G
        matmul(T, H, dB, n, false, true);  // dB = T (I + H)ᵀ
    } else {
        thread_local std::vector<double> trace;  // Y_0 … Y_{s−1}; grows once per thread
        trace.resize((size_t)iters * n * n);
        double H[64], G[64];
        cayley_iterate(B, n, iters, H, trace.data());
        std::fill(dB, dB + n * n, 0.0);
        std::copy(dH, dH + n * n, G);
        for (int it = iters - 1; it >= 0; it--) {  // Y_{it+1} = I + B (I + Y_it)
            double* Y = &trace[(size_t)it * n * n];
            for (int i = 0; i < n; i++) Y[i * n + i] += 1;  // I + Y_it (the trace is ours to change)
            matmul(G, Y, T, n, false, true);
            for (int i = 0; i < n * n; i++) dB[i] += T[i];
            matmul(B, G, T, n, true, false);  // dY_it = Bᵀ G
            std::copy(T, T + n * n, G);
        }
        for (int i = 0; i < n * n; i++) dB[i] += 2 * G[i];  // Y_0 = I + 2B
    }
    for (int i = 0; i < n; i++) {
        dl[i * n + i] = 0;
        for (int j = i + 1; j < n; j++) {
            const double dw = 0.5 * kAlpha * (dB[i * n + j] - dB[j * n + i]);
            dl[i * n + j] = dw;
            dl[j * n + i] = -dw;
        }
    }
}

}  // namespace

const detail::Mixer detail::kMixCayley = {layout, init, forward, backward};

}  // namespace mhc
