// The orthogonal mixers on the GPU, per token in double (included by conn/coef.cu only): the device
// twins of mix_cayley.cpp (jpmhc) and mix_quat.cpp (ohc), with their order of operations, so that
// H_res and the logits' gradients agree with the CPU's to the last fp32 bit but for rare roundings.
// Matrices are n x n row-major in local arrays of 64; a trace (jpmhc's fixed-point iterates) lives
// in device scratch with a token stride ts, value i of iterate k at tr[(k·n² + i)·ts].
#pragma once
#include "cuda/device.cuh"

namespace mhc::cuda::detail {

// ---- jpmhc: Cayley transform of B = αW/2, W = M − Mᵀ ----------------------------------------------
constexpr double kCayleyAlpha = 0.1;  // mix_cayley.cpp's kAlpha

// B [n,n] from W's upper triangle w (n(n−1)/2 values, row by row).
MHC_DEV void cayley_skew(const double* w, int n, double* B) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        B[i * n + i] = 0;
        for (int j = i + 1; j < n; j++, k++) {
            B[i * n + j] = 0.5 * kCayleyAlpha * w[k];
            B[j * n + i] = -0.5 * kCayleyAlpha * w[k];
        }
    }
}

// Solves P X = Y (Y overwritten with X, P destroyed): Gaussian elimination with partial pivoting,
// the CPU's order of operations (P = I ± B, every singular value ≥ 1: well conditioned).
MHC_DEV void cayley_solve(double* P, double* Y, int n) {
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(P[r * n + c]) > fabs(P[piv * n + c])) piv = r;
        if (piv != c)
            for (int j = 0; j < n; j++) {
                const double p = P[c * n + j], y = Y[c * n + j];
                P[c * n + j] = P[piv * n + j], P[piv * n + j] = p;
                Y[c * n + j] = Y[piv * n + j], Y[piv * n + j] = y;
            }
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

// Z = X Y, or X Yᵀ (ty), or Xᵀ Y (tx); Y's element (r, c) at Y[(r·n + c)·ys] (a trace or a local).
MHC_DEV void cayley_matmul(const double* X, const double* Y, long ys, double* Z, int n, bool tx, bool ty) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k < n; k++)
                acc += (tx ? X[k * n + i] : X[i * n + k]) * (ty ? Y[(long)(j * n + k) * ys] : Y[(long)(k * n + j) * ys]);
            Z[i * n + j] = acc;
        }
}

// H = (I − B)⁻¹ (I + B).
MHC_DEV void cayley_exact(const double* B, int n, double* H) {
    double P[64];
    for (int i = 0; i < n * n; i++) P[i] = -B[i], H[i] = B[i];
    for (int i = 0; i < n; i++) P[i * n + i] += 1, H[i * n + i] += 1;
    cayley_solve(P, H, n);
}

// Y_0 = I + 2B, `iters` times Y ← I + B (I + Y); H = the last Y. With a trace, Y_0 … Y_{iters−1}.
MHC_DEV void cayley_iterate(const double* B, int n, int iters, double* H, double* tr, long ts) {
    const int nn = n * n;
    double Y[64];
    for (int i = 0; i < nn; i++) Y[i] = 2 * B[i];
    for (int i = 0; i < n; i++) Y[i * n + i] += 1;
    for (int it = 0; it < iters; it++) {
        if (tr)
            for (int i = 0; i < nn; i++) tr[((long)it * nn + i) * ts] = Y[i];
        for (int i = 0; i < n; i++) Y[i * n + i] += 1;  // I + Y
        cayley_matmul(B, Y, 1, H, n, false, false);     // H as the temporary
        for (int i = 0; i < nn; i++) Y[i] = H[i];
        for (int i = 0; i < n; i++) Y[i * n + i] += 1;
    }
    for (int i = 0; i < nn; i++) H[i] = Y[i];
}

// H [n,n] from the res logits' stored gaps w (the cache's extra values, already rounded to fp32).
MHC_DEV void cayley_forward(const double* w, int n, int iters, double* H) {
    double B[64];
    cayley_skew(w, n, B);
    if (iters == 0) cayley_exact(B, n, H);
    else cayley_iterate(B, n, iters, H, nullptr, 0);
}

// dl [n·n] (the gradients of the logits M[i][j]) from dH [n,n] and the stored w; tr: iters·n² values
// of scratch with token stride ts (unused when iters = 0).
MHC_DEV void cayley_backward(const double* w, int n, int iters, const double* dH, double* dl, double* tr, long ts) {
    const int nn = n * n;
    double B[64], dB[64], T[64];
    cayley_skew(w, n, B);
    if (iters == 0) {  // dL/dB = (I − B)⁻ᵀ G (I + H)ᵀ
        double P[64], H[64];
        cayley_exact(B, n, H);
        for (int i = 0; i < nn; i++) P[i] = B[i], T[i] = dH[i];  // (I − B)ᵀ = I + B
        for (int i = 0; i < n; i++) P[i * n + i] += 1, H[i * n + i] += 1;
        cayley_solve(P, T, n);
        cayley_matmul(T, H, 1, dB, n, false, true);
    } else {  // the unrolled iterations, last first: Y_{k+1} = I + B (I + Y_k)
        double H[64], G[64];
        cayley_iterate(B, n, iters, H, tr, ts);
        for (int i = 0; i < nn; i++) dB[i] = 0, G[i] = dH[i];
        for (int it = iters - 1; it >= 0; it--) {
            double* Y = tr + (long)it * nn * ts;
            for (int i = 0; i < n; i++) Y[(long)(i * n + i) * ts] += 1;  // I + Y_k (the trace is ours)
            cayley_matmul(G, Y, ts, T, n, false, true);
            for (int i = 0; i < nn; i++) dB[i] += T[i];
            cayley_matmul(B, G, 1, T, n, true, false);  // dY_k = Bᵀ G
            for (int i = 0; i < nn; i++) G[i] = T[i];
        }
        for (int i = 0; i < nn; i++) dB[i] += 2 * G[i];  // Y_0 = I + 2B
    }
    for (int i = 0; i < n; i++) {  // dW = (α/2) dB; dM = dW − dWᵀ
        dl[i * n + i] = 0;
        for (int j = i + 1; j < n; j++) {
            const double dw = 0.5 * kCayleyAlpha * (dB[i * n + j] - dB[j * n + i]);
            dl[i * n + j] = dw;
            dl[j * n + i] = -dw;
        }
    }
}

// ---- ohc: H = L_q · R_r̄ from two unit quaternions (n = 4) -----------------------------------------
// Entry (i, j) of L_q is sign · q[comp], of R_r̄ sign · r[comp]: mix_quat.cpp's tables, packed as
// comp + 4·(sign < 0).
MHC_DEV int quat_lq(int i, int j) {
    constexpr unsigned char t[16] = {0, 5, 6, 7, 1, 0, 7, 2, 2, 3, 0, 5, 3, 6, 1, 0};
    return t[i * 4 + j];
}
MHC_DEV int quat_rrbar(int i, int j) {
    constexpr unsigned char t[16] = {0, 1, 2, 3, 5, 0, 7, 2, 6, 3, 0, 5, 7, 6, 1, 0};
    return t[i * 4 + j];
}
MHC_DEV double quat_sign(int e) { return e & 4 ? -1.0 : 1.0; }

// u = ν/s, s = sqrt(|ν|² + 1e-12), ν = (1 + l_0, l_1, l_2, l_3).
MHC_DEV void quat_unit(const double* l, double* nu, double* u, double& s) {
    nu[0] = 1 + l[0], nu[1] = l[1], nu[2] = l[2], nu[3] = l[3];
    s = sqrt(nu[0] * nu[0] + nu[1] * nu[1] + nu[2] * nu[2] + nu[3] * nu[3] + 1e-12);
    for (int i = 0; i < 4; i++) u[i] = nu[i] / s;
}

MHC_DEV void quat_build(bool left, const double* u, double* M) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            const int e = left ? quat_lq(i, j) : quat_rrbar(i, j);
            M[i * 4 + j] = quat_sign(e) * u[e & 3];
        }
}

// H [4,4] from the 8 stored logits l.
MHC_DEV void quat_forward(const double* l, double* H) {
    double nu[4], q[4], r[4], s, L[16], R[16];
    quat_unit(l, nu, q, s);
    quat_unit(l + 4, nu, r, s);
    quat_build(true, q, L);
    quat_build(false, r, R);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += L[i * 4 + k] * R[k * 4 + j];
            H[i * 4 + j] = acc;
        }
}

// dl [8] from dH [4,4]: dL_q = G R_r̄ᵀ, dR_r̄ = L_qᵀ G collected into du, then through the
// normalisation, dν = du/s − ν (ν·du)/s³.
MHC_DEV void quat_backward(const double* l, const double* dH, double* dl) {
    double nuq[4], nur[4], q[4], r[4], sq, sr, L[16], R[16];
    quat_unit(l, nuq, q, sq);
    quat_unit(l + 4, nur, r, sr);
    quat_build(true, q, L);
    quat_build(false, r, R);
    double dq[4] = {0, 0, 0, 0}, dr[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double gl = 0, gr = 0;
            for (int k = 0; k < 4; k++) {
                gl += dH[i * 4 + k] * R[j * 4 + k];
                gr += L[k * 4 + i] * dH[k * 4 + j];
            }
            const int el = quat_lq(i, j), er = quat_rrbar(i, j);
            dq[el & 3] += quat_sign(el) * gl;
            dr[er & 3] += quat_sign(er) * gr;
        }
    for (int half = 0; half < 2; half++) {
        const double* nu = half ? nur : nuq;
        const double* du = half ? dr : dq;
        const double s = half ? sr : sq;
        const double dot = nu[0] * du[0] + nu[1] * du[1] + nu[2] * du[2] + nu[3] * du[3];
        for (int i = 0; i < 4; i++) dl[4 * half + i] = du[i] / s - nu[i] * dot / (s * s * s);
    }
}

}  // namespace mhc::cuda::detail
