// ohc (SPEC §2, after oHC; n = 4): H_res = L_q · R_r̄, the rotation p ↦ q·p·r̄ of R⁴ = ℍ, from two
// unit quaternions q = ν_q/|ν_q|, r = ν_r/|ν_r| with ν_q = (1 + ℓ_0, ℓ_1, ℓ_2, ℓ_3),
// ν_r = (1 + ℓ_4, ℓ_5, ℓ_6, ℓ_7): orthogonal by construction. The cache keeps the 8 logits ℓ.
#include <cmath>

#include "mixer.h"

namespace mhc {

namespace {

// Entry (i, j) of L_q is sign · q[comp], of R_r̄ sign · r[comp] (SPEC §2's matrices): one table for
// building them and for collecting their gradients into q and r.
struct Entry {
    signed char comp, sign;
};
constexpr Entry kLq[4][4] = {{{0, 1}, {1, -1}, {2, -1}, {3, -1}},
                             {{1, 1}, {0, 1}, {3, -1}, {2, 1}},
                             {{2, 1}, {3, 1}, {0, 1}, {1, -1}},
                             {{3, 1}, {2, -1}, {1, 1}, {0, 1}}};
constexpr Entry kRrbar[4][4] = {{{0, 1}, {1, 1}, {2, 1}, {3, 1}},
                                {{1, -1}, {0, 1}, {3, -1}, {2, 1}},
                                {{2, -1}, {3, 1}, {0, 1}, {1, -1}},
                                {{3, -1}, {2, -1}, {1, 1}, {0, 1}}};

// u = ν/s, s = sqrt(|ν|² + 1e-12), ν = (1 + l_0, l_1, l_2, l_3).
void unit(const double* l, double* nu, double* u, double& s) {
    nu[0] = 1 + l[0], nu[1] = l[1], nu[2] = l[2], nu[3] = l[3];
    s = std::sqrt(nu[0] * nu[0] + nu[1] * nu[1] + nu[2] * nu[2] + nu[3] * nu[3] + 1e-12);
    for (int i = 0; i < 4; i++) u[i] = nu[i] / s;
}

void build(const Entry (&t)[4][4], const double* u, double* M) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) M[i * 4 + j] = t[i][j].sign * u[t[i][j].comp];
}

void layout(ConnSite& s) {  // n = 4 is the table's fixed_n, checked by conn_site_make
    s.res_col.clear();
    for (int k = 0; k < 8; k++) s.res_col.push_back(s.n + k);
    s.n_extra = 8;
}

double init(const ConnSite&, int) { return 0.0; }

void forward(const ConnSite&, const double* l, double* H, double* extra, double (*store)(double)) {
    double ls[8], nu[4], q[4], r[4], s, L[16], R[16];
    for (int k = 0; k < 8; k++) ls[k] = extra[k] = store(l[k]);
    unit(ls, nu, q, s);
    unit(ls + 4, nu, r, s);
    build(kLq, q, L);
    build(kRrbar, r, R);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += L[i * 4 + k] * R[k * 4 + j];
            H[i * 4 + j] = acc;
        }
}

// dL_q = G R_r̄ᵀ, dR_r̄ = L_qᵀ G, collected by the tables into du; then through the normalisation,
// dν = du/s − ν (ν·du)/s³.
void backward(const ConnSite&, const double* extra, const double* dH, double* dl) {
    double nuq[4], nur[4], q[4], r[4], sq, sr, L[16], R[16];
    unit(extra, nuq, q, sq);
    unit(extra + 4, nur, r, sr);
    build(kLq, q, L);
    build(kRrbar, r, R);
    double dq[4] = {}, dr[4] = {};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double gl = 0, gr = 0;
            for (int k = 0; k < 4; k++) {
                gl += dH[i * 4 + k] * R[j * 4 + k];  // (G R_r̄ᵀ)[i][j]
                gr += L[k * 4 + i] * dH[k * 4 + j];  // (L_qᵀ G)[i][j]
            }
            dq[kLq[i][j].comp] += kLq[i][j].sign * gl;
            dr[kRrbar[i][j].comp] += kRrbar[i][j].sign * gr;
        }
    for (int half = 0; half < 2; half++) {
        const double* nu = half ? nur : nuq;
        const double* du = half ? dr : dq;
        const double s = half ? sr : sq;
        const double dot = nu[0] * du[0] + nu[1] * du[1] + nu[2] * du[2] + nu[3] * du[3];
        for (int i = 0; i < 4; i++) dl[4 * half + i] = du[i] / s - nu[i] * dot / (s * s * s);
    }
}

}  // namespace

const detail::Mixer detail::kMixQuat = {layout, init, forward, backward};

}  // namespace mhc
