"""Independent PyTorch reference for the hyper-connection sites of mhc.

Written from /work/shared/SPEC.md (sections 1, 2, 4 and 6) only; it is a test
oracle for the C++ engine, so it favours the plainest formulation of the maths
over speed, and it relies on torch autograd for every gradient.

One module = one site.  Conventions (SPEC section 1):

    X        (..., n, C)   the n streams of every token
    H_pre    (..., n)      u = sum_s H_pre[s] * X_s
    H_res    (..., n, n)   indexed H_res[s][t]
    H_post   (..., n)      X'_t = sum_s H_res[s][t] * X_s + H_post[t] * y

Variants: residual, hc, mhc, mhc-lite, kromhc, jpmhc, ohc.
"""

import itertools
import math

import torch
import torch.nn as nn

VARIANTS = ("residual", "hc", "mhc", "mhc-lite", "kromhc", "jpmhc", "ohc")

NORM_EPS = 1e-12          # SPEC 2.2: v / max(||v||_2, 1e-12)
INIT_SCALE = 0.01         # s_pre, s_res, s_post, s_alpha, s_beta at init
OFF_LOGIT = -8.0          # the "-8" bias of non-identity entries / permutations
CAYLEY_ALPHA = 0.1        # jpmhc's fixed alpha (SPEC 2)
QUAT_EPS = 1e-12          # ohc: q = nu / sqrt(|nu|^2 + 1e-12)


# ----------------------------------------------------------------------------
# Standalone pieces
# ----------------------------------------------------------------------------

def sinkhorn(logits, iters=20):
    """Log-domain Sinkhorn-Knopp (SPEC 2, mhc).

    logits: (..., n, n), indexed L[s][t].  Each iteration first subtracts
    from every column its log-sum-exp over s (the row index, dim -2), then
    from every row its log-sum-exp over t (dim -1).  Returns exp(L).
    Rows sum to 1 exactly (up to rounding) when iters >= 1.
    """
    L = logits
    for _ in range(int(iters)):
        L = L - torch.logsumexp(L, dim=-2, keepdim=True)   # column step
        L = L - torch.logsumexp(L, dim=-1, keepdim=True)   # row step
    return torch.exp(L)


def cayley(W, iters=2, alpha=CAYLEY_ALPHA):
    """jpmhc (SPEC 2): H_res from a skew-symmetric W (..., n, n).

    iters = 0: the exact Cayley transform (I - alpha W / 2)^-1 (I + alpha W / 2).
    iters = s > 0: the paper's fixed point, Y_0 = I + alpha W, then s times
    Y <- I + (alpha / 2) W (I + Y).
    """
    n = W.shape[-1]
    eye = torch.eye(n, dtype=W.dtype, device=W.device).expand(W.shape)
    if int(iters) == 0:
        return torch.linalg.solve(eye - 0.5 * alpha * W, eye + 0.5 * alpha * W)
    Y = eye + alpha * W
    for _ in range(int(iters)):
        Y = eye + 0.5 * alpha * W @ (eye + Y)
    return Y


def unit_quaternion(l):
    """ohc (SPEC 2): nu = (1 + l_0, l_1, l_2, l_3), q = nu / sqrt(|nu|^2 + 1e-12)."""
    nu = torch.cat([1.0 + l[..., :1], l[..., 1:]], dim=-1)
    return nu / torch.sqrt((nu * nu).sum(dim=-1, keepdim=True) + QUAT_EPS)


def quaternion_rotation(q, r):
    """ohc (SPEC 2): H_res = L_q R_rbar, the map p -> q p rbar, for unit q, r (..., 4)."""
    w, x, y, z = q.unbind(-1)
    w2, x2, y2, z2 = r.unbind(-1)
    L = torch.stack([torch.stack([w, -x, -y, -z], -1), torch.stack([x, w, -z, y], -1),
                     torch.stack([y, z, w, -x], -1), torch.stack([z, -y, x, w], -1)], -2)
    R = torch.stack([torch.stack([w2, x2, y2, z2], -1), torch.stack([-x2, w2, -z2, y2], -1),
                     torch.stack([-y2, z2, w2, -x2], -1), torch.stack([-z2, -y2, x2, w2], -1)], -2)
    return L @ R


def all_permutations(n):
    """All n! permutations of range(n), in itertools.permutations order."""
    return [tuple(p) for p in itertools.permutations(range(n))]


def permutation_matrices(perms, n, dtype=torch.float64, device=None):
    """P[k][i][j] = 1 iff j = perms[k][i]  (SPEC 2, mhc-lite)."""
    perms = torch.as_tensor(perms, dtype=torch.long, device=device).reshape(-1, n)
    # one_hot: row i of matrix k has its 1 in column perms[k][i] (no per-element reads, which on a
    # GPU would each wait for the device).
    return torch.nn.functional.one_hot(perms, n).to(dtype)


def log2_exact(n):
    """K with n = 2**K, or raise."""
    if n < 1 or (n & (n - 1)) != 0:
        raise ValueError("kromhc needs n to be a power of two, got %d" % n)
    return n.bit_length() - 1


def primary_bias(n, r, dtype=torch.float64):
    """b_pre = b_post: +1 on the primary stream r, -1 elsewhere."""
    b = -torch.ones(n, dtype=dtype)
    b[r] = 1.0
    return b


# ----------------------------------------------------------------------------
# Diagnostics (SPEC 6)
# ----------------------------------------------------------------------------

def ds_error(M):
    """Doubly-stochastic error of matrices M (..., n, n).

    Returns a dict of tensors with the leading shape of M:
      'sum_error': max over rows and columns of |sum - 1|
      'min_entry': the most negative (smallest) entry
      'ds_error' : max(sum_error, max(0, -min_entry)), i.e. the sum error,
                   widened by the size of the most negative entry if any.
    """
    rows = (M.sum(dim=-1) - 1.0).abs().amax(dim=-1)
    cols = (M.sum(dim=-2) - 1.0).abs().amax(dim=-1)
    sum_err = torch.maximum(rows, cols)
    min_entry = M.amin(dim=(-2, -1))
    neg = torch.clamp(-min_entry, min=0.0)
    return {"sum_error": sum_err, "min_entry": min_entry,
            "ds_error": torch.maximum(sum_err, neg)}


def map_of(H_res):
    """The map a site applies to the streams: A = H_res^T (per token)."""
    return H_res.transpose(-2, -1)


def forward_gain(A, abs_entries=True):
    """Forward gain of a map A (..., n, n): max absolute row sum.

    abs_entries=True  : max_i sum_j |A[i][j]|   (the infinity norm)
    abs_entries=False : max_i |sum_j A[i][j]|
    Both agree for non-negative maps.
    """
    if abs_entries:
        return A.abs().sum(dim=-1).amax(dim=-1)
    return A.sum(dim=-1).abs().amax(dim=-1)


def backward_gain(A, abs_entries=True):
    """Backward gain of a map A (..., n, n): max absolute column sum."""
    if abs_entries:
        return A.abs().sum(dim=-2).amax(dim=-1)
    return A.sum(dim=-2).abs().amax(dim=-1)


def site_gains(H_res, abs_entries=True):
    """(forward, backward) gain of A = H_res^T, per token."""
    A = map_of(H_res)
    return forward_gain(A, abs_entries), backward_gain(A, abs_entries)


def composite_gains(H_res_list, abs_entries=True):
    """Amax gain magnitude through depth (SPEC 6).

    H_res_list: per site l = 1..L, a tensor (N, n, n) of H_res for the same N
    tokens.  The composite after site l is A_l A_{l-1} ... A_1, A = H_res^T.
    Returns a list (one entry per depth) of dicts with the mean and max over
    tokens of the forward and backward gains of the composite map.
    """
    out = []
    comp = None
    for H in H_res_list:
        A = map_of(H)
        comp = A if comp is None else A @ comp
        fg = forward_gain(comp, abs_entries)
        bg = backward_gain(comp, abs_entries)
        out.append({"forward_mean": fg.mean().item(), "forward_max": fg.max().item(),
                    "backward_mean": bg.mean().item(), "backward_max": bg.max().item()})
    return out


def orth_error(M):
    """Orthogonality error of matrices M (..., n, n): max |(M^T M - I)[i][j]| (SPEC 6)."""
    n = M.shape[-1]
    eye = torch.eye(n, dtype=M.dtype, device=M.device)
    return (M.transpose(-2, -1) @ M - eye).abs().amax(dim=(-2, -1))


def composite_spectrum(H_res_list):
    """Singular values (largest first) of the composite map A_l ... A_1 after each site,
    A = H_res^T: a list (one per depth) of tensors (N, n)."""
    out, comp = [], None
    for H in H_res_list:
        A = map_of(H)
        comp = A if comp is None else A @ comp
        out.append(torch.linalg.svdvals(comp))
    return out


def stream_similarity(X):
    """Mean over tokens of the mean pairwise cosine similarity of the n streams X (N, n, C)."""
    n = X.shape[-2]
    Xn = X / X.norm(dim=-1, keepdim=True)
    S = Xn @ Xn.transpose(-2, -1)                       # (N, n, n) cosines
    iu = torch.triu_indices(n, n, offset=1)
    return S[..., iu[0], iu[1]].mean(dim=-1).mean().item()


def log_inv_nu(res_logits, threshold=30.0):
    """mhc: log(1/nu) = max - min of the pre-Sinkhorn logits per token.

    res_logits: (N, n, n).  Returns (values (N,), fraction of tokens > threshold).
    """
    flat = res_logits.reshape(res_logits.shape[0], -1)
    v = flat.amax(dim=-1) - flat.amin(dim=-1)
    return v, (v > threshold).to(torch.float64).mean().item()


# ----------------------------------------------------------------------------
# The site module
# ----------------------------------------------------------------------------

class RMSNormGain(nn.Module):
    """Holds the learned gain gamma, so the state_dict name is 'norm.gamma'.

    x_hat = v / max(||v||_2, 1e-12) * sqrt(D) * (1 + gamma), D = len(v).
    """

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.gamma = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def forward(self, v, gamma=None):
        g = self.gamma if gamma is None else gamma
        norm = torch.linalg.vector_norm(v, ord=2, dim=-1, keepdim=True)
        norm = torch.clamp(norm, min=NORM_EPS)
        return v / norm * math.sqrt(self.dim) * (1.0 + g.to(v.dtype))


class HyperConnection(nn.Module):
    """One hyper-connection site (SPEC 1, 2, 4)."""

    def __init__(self, variant, n, C, site_index=0, sinkhorn_iters=20, perms=None,
                 dtype=torch.float64, cayley_iters=2):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError("unknown variant %r" % (variant,))
        self.variant = variant
        self.n = int(n)
        self.C = int(C)
        self.site_index = int(site_index)
        self.r = self.site_index % self.n
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.cayley_iters = int(cayley_iters)
        n, C, r = self.n, self.C, self.r
        f64 = torch.float64
        P = nn.Parameter

        if variant == "residual":
            if n != 1:
                raise ValueError("residual needs n = 1")
        elif variant == "hc":
            self.norm = RMSNormGain(C)
            B_alpha = torch.zeros(n, 1 + n, dtype=f64)
            B_alpha[r, 0] = 1.0
            for s in range(n):
                B_alpha[s, 1 + s] = 1.0
            self.static_alpha = P(B_alpha)
            self.dynamic_alpha_fn = P(torch.zeros(C, 1 + n, dtype=f64))
            self.dynamic_alpha_scale = P(torch.tensor(INIT_SCALE, dtype=f64))
            self.static_beta = P(torch.ones(n, dtype=f64))
            self.dynamic_beta_fn = P(torch.zeros(C, dtype=f64))
            self.dynamic_beta_scale = P(torch.tensor(INIT_SCALE, dtype=f64))
        else:
            nC = n * C
            b_pre = primary_bias(n, r)
            if variant == "mhc-lite":
                if perms is None:
                    perms = all_permutations(n)
                perms = [tuple(int(i) for i in p) for p in perms]
                for p in perms:
                    if sorted(p) != list(range(n)):
                        raise ValueError("not a permutation of range(%d): %r" % (n, p))
                if len(set(perms)) != len(perms):
                    raise ValueError("permutations must be distinct")
                K = len(perms)
                self.K = K
                self.register_buffer("perms", torch.tensor(perms, dtype=torch.long).reshape(K, n))
                b_res = torch.full((K,), OFF_LOGIT, dtype=f64)
                b_res[0] = 0.0
                static_alpha = torch.cat([b_pre, b_res])
                ncols = n + K
            elif variant == "mhc":
                static_alpha = torch.zeros(n, 1 + n, dtype=f64)
                for s in range(n):
                    static_alpha[s, 0] = b_pre[s]
                    for t in range(n):
                        static_alpha[s, 1 + t] = 0.0 if s == t else OFF_LOGIT
                ncols = n * (1 + n)
            elif variant == "kromhc":
                Kb = log2_exact(n)
                self.K = Kb
                b_f = torch.tensor([0.0, OFF_LOGIT], dtype=f64).repeat(Kb)
                static_alpha = torch.cat([b_pre, b_f])
                ncols = n + 2 * Kb
            elif variant == "jpmhc":
                if self.cayley_iters < 0:
                    raise ValueError("jpmhc needs cayley_iters >= 0, got %d" % self.cayley_iters)
                static_alpha = torch.cat([b_pre, torch.zeros(n * n, dtype=f64)])   # b_res = 0: W = 0
                ncols = n + n * n
            else:  # ohc
                if n != 4:
                    raise ValueError("ohc needs n = 4, got %d" % n)
                static_alpha = torch.cat([b_pre, torch.zeros(8, dtype=f64)])       # q = r = 1
                ncols = n + 8
            self.norm = RMSNormGain(nC)
            self.static_alpha = P(static_alpha)
            self.dynamic_alpha_fn = P(torch.zeros(nC, ncols, dtype=f64))
            self.pre_branch_scale = P(torch.full((1,), INIT_SCALE, dtype=f64))
            self.residual_scale = P(torch.full((1,), INIT_SCALE, dtype=f64))
            self.static_beta = P(primary_bias(n, r))
            self.dynamic_beta_fn = P(torch.zeros(nC, n, dtype=f64))
            self.h_post_scale = P(torch.tensor(INIT_SCALE, dtype=f64))

        if dtype != f64:
            self.to(dtype)

    # -- helpers -------------------------------------------------------------

    def _dtype_for(self, X):
        ps = list(self.parameters())
        if not ps:
            return X.dtype
        return torch.promote_types(X.dtype, ps[0].dtype)

    def _p(self, name, dtype):
        return getattr(self, name).to(dtype)

    def _check(self, X):
        if X.shape[-2:] != (self.n, self.C):
            raise ValueError("X must be (..., n=%d, C=%d), got %s"
                             % (self.n, self.C, tuple(X.shape)))

    def _mhc_family_common(self, X, dt):
        """x_hat, w = x_hat W, z = x_hat W_beta for mhc / mhc-lite / kromhc."""
        n, C = self.n, self.C
        v = X.reshape(*X.shape[:-2], n * C)            # stream-major: v[s*C + c] = X_s[c]
        xh = self.norm(v.to(dt), self.norm.gamma.to(dt))
        w = xh @ self._p("dynamic_alpha_fn", dt)
        z = xh @ self._p("dynamic_beta_fn", dt)
        return xh, w, z

    def res_logits(self, X):
        """Pre-softmax / pre-Sinkhorn H_res logits s_res * w_res + b_res.

        mhc: (..., n, n) indexed [s][t];  mhc-lite: (..., K);  kromhc: (..., K, 2);
        jpmhc: M (..., n, n);  ohc: l (..., 8).
        """
        self._check(X)
        dt = self._dtype_for(X)
        X = X.to(dt)
        n = self.n
        _, w, _ = self._mhc_family_common(X, dt)
        sa = self._p("static_alpha", dt)
        s_res = self._p("residual_scale", dt)
        if self.variant == "mhc":
            wr = w.reshape(*w.shape[:-1], n, 1 + n)
            return s_res * wr[..., 1:] + sa[:, 1:]
        if self.variant == "mhc-lite":
            return s_res * w[..., n:] + sa[n:]
        if self.variant == "kromhc":
            f = s_res * w[..., n:] + sa[n:]
            return f.reshape(*f.shape[:-1], self.K, 2)
        if self.variant == "jpmhc":
            f = s_res * w[..., n:] + sa[n:]
            return f.reshape(*f.shape[:-1], n, n)
        if self.variant == "ohc":
            return s_res * w[..., n:] + sa[n:]
        raise ValueError("res_logits is defined for mhc, mhc-lite, kromhc, jpmhc, ohc")

    # -- the coefficients ------------------------------------------------------

    def coefficients(self, X):
        """H_pre (..., n), H_res (..., n, n) [s][t], H_post (..., n)."""
        self._check(X)
        dt = self._dtype_for(X)
        X = X.to(dt)
        n, C = self.n, self.C
        lead = X.shape[:-2]

        if self.variant == "residual":
            one = torch.ones(*lead, 1, dtype=dt, device=X.device)
            return one, one.unsqueeze(-1), one.clone()

        if self.variant == "hc":
            norms = torch.clamp(torch.linalg.vector_norm(X, ord=2, dim=-1, keepdim=True),
                                min=NORM_EPS)
            xh = X / norms * math.sqrt(C) * (1.0 + self.norm.gamma.to(dt))   # (..., n, C)
            alpha = (self._p("dynamic_alpha_scale", dt)
                     * torch.tanh(xh @ self._p("dynamic_alpha_fn", dt))
                     + self._p("static_alpha", dt))                          # (..., n, 1+n)
            beta = (self._p("dynamic_beta_scale", dt)
                    * torch.tanh(xh @ self._p("dynamic_beta_fn", dt))
                    + self._p("static_beta", dt))                            # (..., n)
            return alpha[..., 0], alpha[..., 1:], beta

        # mhc family
        _, w, z = self._mhc_family_common(X, dt)
        sa = self._p("static_alpha", dt)
        s_pre = self._p("pre_branch_scale", dt)
        s_res = self._p("residual_scale", dt)
        s_post = self._p("h_post_scale", dt)
        H_post = 2.0 * torch.sigmoid(s_post * z + self._p("static_beta", dt))

        if self.variant == "mhc":
            wr = w.reshape(*lead, n, 1 + n)
            H_pre = torch.sigmoid(s_pre * wr[..., 0] + sa[:, 0])
            L = s_res * wr[..., 1:] + sa[:, 1:]
            H_res = sinkhorn(L, self.sinkhorn_iters)
            return H_pre, H_res, H_post

        H_pre = torch.sigmoid(s_pre * w[..., :n] + sa[:n])
        if self.variant == "mhc-lite":
            a = torch.softmax(s_res * w[..., n:] + sa[n:], dim=-1)      # (..., K)
            Pm = permutation_matrices(self.perms, n, dtype=dt, device=X.device)
            H_res = torch.einsum("...k,kij->...ij", a, Pm)
            return H_pre, H_res, H_post

        if self.variant == "jpmhc":
            M = (s_res * w[..., n:] + sa[n:]).reshape(*lead, n, n)          # M[i][j]: column n + i n + j
            W = M - M.transpose(-2, -1)
            return H_pre, cayley(W, self.cayley_iters), H_post

        if self.variant == "ohc":
            l = s_res * w[..., n:] + sa[n:]                                  # (..., 8)
            q, r = unit_quaternion(l[..., :4]), unit_quaternion(l[..., 4:])
            return H_pre, quaternion_rotation(q, r), H_post

        # kromhc
        Kb = self.K
        f = (s_res * w[..., n:] + sa[n:]).reshape(*lead, Kb, 2)
        p = torch.softmax(f, dim=-1)[..., 0]                              # (..., Kb)
        if Kb == 0:                                                       # n = 1: empty product
            H_res = torch.ones(*lead, 1, 1, dtype=dt, device=X.device)
            return H_pre, H_res, H_post
        flat_p = p.reshape(-1, Kb)
        mats = []
        for tok in range(flat_p.shape[0]):
            H = torch.ones(1, 1, dtype=dt, device=X.device)
            for k in range(Kb):                                           # U_1 first: MSB
                pk = flat_p[tok, k]
                U = torch.stack([torch.stack([pk, 1.0 - pk]),
                                 torch.stack([1.0 - pk, pk])])
                H = torch.kron(H, U)
            mats.append(H)
        H_res = torch.stack(mats).reshape(*lead, n, n)
        return H_pre, H_res, H_post

    # -- the site update -------------------------------------------------------

    def pre(self, X):
        """u = sum_s H_pre[s] X_s   -> (..., C)"""
        if self.variant == "residual":
            self._check(X)
            return X[..., 0, :]
        H_pre, _, _ = self.coefficients(X)
        return torch.einsum("...s,...sc->...c", H_pre, X.to(H_pre.dtype))

    def post(self, X, y):
        """X'_t = sum_s H_res[s][t] X_s + H_post[t] y   -> (..., n, C)"""
        if self.variant == "residual":
            self._check(X)
            return X + y.unsqueeze(-2)
        _, H_res, H_post = self.coefficients(X)
        dt = H_res.dtype
        return (torch.einsum("...st,...sc->...tc", H_res, X.to(dt))
                + H_post.unsqueeze(-1) * y.to(dt).unsqueeze(-2))

    def forward(self, X, y):
        return self.pre(X), self.post(X, y)

    # -- misc -----------------------------------------------------------------

    def param_names(self):
        return [name for name, _ in self.named_parameters()]


def make_site(variant, n, C, site_index=0, sinkhorn_iters=20, perms=None,
              dtype=torch.float64, cayley_iters=2):
    return HyperConnection(variant, n, C, site_index=site_index,
                           sinkhorn_iters=sinkhorn_iters, perms=perms, dtype=dtype,
                           cayley_iters=cayley_iters)
