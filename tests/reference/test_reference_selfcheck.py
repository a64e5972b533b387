#!/usr/bin/python3
"""Self-check of the PyTorch connection reference (hyper_conn.py, make_conn_fixtures.py and the
safetensors writer) against SPEC.md. The GPT model, its fixtures and ckpt_loss.py are checked by
test_reference_selfcheck_gpt.py.

    /usr/bin/python3 tests/reference/test_reference_selfcheck.py

Prints one line per check and a final line "N passed, M failed"; exits
non-zero if anything failed.
"""

import itertools
import math
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hyper_conn as hc  # noqa: E402
from hyper_conn import HyperConnection, sinkhorn  # noqa: E402
import make_conn_fixtures as mk  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from selfcheck_harness import F64, check, close, finish, functional_call  # noqa: E402


def offdiag(M):
    n = M.shape[-1]
    return M[..., ~torch.eye(n, dtype=torch.bool)]


def diag(M):
    return torch.diagonal(M, dim1=-2, dim2=-1)


def rand_site(variant, n, C, seed, site_index=0, iters=20, perms=None, dtype=F64, cayley_iters=2):
    gen = torch.Generator().manual_seed(seed)
    m = HyperConnection(variant, n, C, site_index=site_index, sinkhorn_iters=iters, perms=perms,
                        cayley_iters=cayley_iters)
    mk.randomise_parameters(m, gen)
    return m.to(dtype), gen


TOL6 = 6e-7   # SPEC values are rounded to 6 decimals

# ----------------------------------------------------------------------------
# 1. values at initialisation, n = 4 (SPEC 2 table)
# ----------------------------------------------------------------------------

X_INIT = torch.randn(5, 4, 8, dtype=F64, generator=torch.Generator().manual_seed(1))

for _dtype, _tol in ((F64, TOL6), (torch.float32, 2e-6)):
    _tag = "f64" if _dtype == F64 else "f32"

    @check("init n=4 mhc-lite a_0 = 0.992343, others 3.3e-4 (%s)" % _tag)
    def _(dtype=_dtype, tol=_tol):
        m = HyperConnection("mhc-lite", 4, 8, site_index=1, dtype=dtype)
        a = torch.softmax(m.res_logits(X_INIT.to(dtype)), dim=-1)
        assert a.shape == (5, 24)
        close(a[:, 0], torch.full((5,), 0.992343), tol, "a_0")
        close(a[:, 1:], torch.full((5, 23), 3.3e-4), 0.05e-4, "a_k>0")

    @check("init n=4 mhc-lite H_res diag 0.994008 off 0.001997 (%s)" % _tag)
    def _(dtype=_dtype, tol=_tol):
        m = HyperConnection("mhc-lite", 4, 8, site_index=1, dtype=dtype)
        _, H, _ = m.coefficients(X_INIT.to(dtype))
        assert H.dtype == dtype
        close(diag(H), torch.full((5, 4), 0.994008), tol, "diag")
        close(offdiag(H), torch.full((5, 12), 0.001997), tol, "off")

    @check("init n=4 mhc H_res (20 iters) diag 0.998995 off 0.000335 (%s)" % _tag)
    def _(dtype=_dtype, tol=_tol):
        m = HyperConnection("mhc", 4, 8, site_index=1, dtype=dtype)
        _, H, _ = m.coefficients(X_INIT.to(dtype))
        close(diag(H), torch.full((5, 4), 0.998995), tol, "diag")
        close(offdiag(H), torch.full((5, 12), 0.000335), tol, "off")

    @check("init n=4 kromhc H_res diag 0.999329 (%s)" % _tag)
    def _(dtype=_dtype, tol=_tol):
        m = HyperConnection("kromhc", 4, 8, site_index=1, dtype=dtype)
        _, H, _ = m.coefficients(X_INIT.to(dtype))
        close(diag(H), torch.full((5, 4), 0.999329), tol, "diag")

    @check("init n=4 jpmhc (both modes) and ohc H_res = I (%s)" % _tag)
    def _(dtype=_dtype, tol=_tol):
        for variant, iters in (("jpmhc", 0), ("jpmhc", 2), ("ohc", 2)):
            m = HyperConnection(variant, 4, 8, site_index=1, dtype=dtype, cayley_iters=iters)
            _, H, _ = m.coefficients(X_INIT.to(dtype))
            want = torch.eye(4, dtype=F64).expand(5, 4, 4)
            if dtype == torch.float32:
                assert torch.equal(H.double(), want), (variant, H)     # exactly, in fp32
            else:
                close(H, want, 1.5e-12, variant)                         # 1/(1 + 1e-12) for ohc

    @check("init n=4 H_pre 0.731059/0.268941, H_post 1.462117/0.537883 (%s)" % _tag)
    def _(dtype=_dtype, tol=_tol):
        for variant in ("mhc", "mhc-lite", "kromhc", "jpmhc", "ohc"):
            for site_index in range(8):
                r = site_index % 4
                m = HyperConnection(variant, 4, 8, site_index=site_index, dtype=dtype)
                Hp, _, Hq = m.coefficients(X_INIT.to(dtype))
                want_pre = torch.full((5, 4), 0.268941)
                want_pre[:, r] = 0.731059
                want_post = torch.full((5, 4), 0.537883)
                want_post[:, r] = 1.462117
                close(Hp, want_pre, tol, "%s H_pre site %d" % (variant, site_index))
                close(Hq, want_post, 2 * tol, "%s H_post site %d" % (variant, site_index))

    @check("init n=4 hc: H_pre one-hot, H_res = I, H_post = 1 (%s)" % _tag)
    def _(dtype=_dtype):
        for site_index in range(8):
            r = site_index % 4
            m = HyperConnection("hc", 4, 8, site_index=site_index, dtype=dtype)
            Hp, H, Hq = m.coefficients(X_INIT.to(dtype))
            oh = torch.zeros(5, 4)
            oh[:, r] = 1
            close(Hp, oh, 0, "H_pre")
            close(H, torch.eye(4).expand(5, 4, 4), 0, "H_res")
            close(Hq, torch.ones(5, 4), 0, "H_post")


@check("init: parameter values as SPEC 2 (mhc static_alpha layout, biases, scales, zeros)")
def _():
    m = HyperConnection("mhc", 3, 5, site_index=4)   # r = 1
    want = torch.tensor([[-1, 0, -8, -8], [1, -8, 0, -8], [-1, -8, -8, 0]], dtype=F64)
    close(m.static_alpha, want, 0, "mhc static_alpha")
    close(m.static_beta, [-1, 1, -1], 0, "static_beta")
    for v in ("mhc", "mhc-lite", "kromhc"):
        m = HyperConnection(v, 4, 5, site_index=2)
        close(m.pre_branch_scale, [0.01], 0)
        close(m.residual_scale, [0.01], 0)
        close(m.h_post_scale, 0.01, 0)
        assert (m.dynamic_alpha_fn == 0).all() and (m.dynamic_beta_fn == 0).all()
        assert (m.norm.gamma == 0).all()
        b_pre = m.static_alpha[:, 0] if v == "mhc" else m.static_alpha[:4]
        close(b_pre, [-1, -1, 1, -1], 0, v + " b_pre")
    m = HyperConnection("mhc-lite", 3, 5)
    close(m.static_alpha[3:], [0, -8, -8, -8, -8, -8], 0, "b_res")
    m = HyperConnection("kromhc", 8, 5)
    close(m.static_alpha[8:], [0, -8] * 3, 0, "kromhc b")
    m = HyperConnection("hc", 3, 5, site_index=2)
    want = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], dtype=F64)
    close(m.static_alpha, want, 0, "hc B_alpha")
    close(m.static_beta, [1, 1, 1], 0)
    close(m.dynamic_alpha_scale, 0.01, 0)
    close(m.dynamic_beta_scale, 0.01, 0)


# ----------------------------------------------------------------------------
# 2. state_dict names and shapes (SPEC 4)
# ----------------------------------------------------------------------------

@check("state_dict names and shapes as SPEC 4")
def _():
    n, C = 4, 6
    nC = n * C
    fam = lambda sa, W: {"norm.gamma": (nC,), "static_alpha": sa, "dynamic_alpha_fn": W,  # noqa: E731
                         "pre_branch_scale": (1,), "residual_scale": (1,),
                         "static_beta": (n,), "dynamic_beta_fn": (nC, n), "h_post_scale": ()}
    want = {
        "residual": {},
        "hc": {"norm.gamma": (C,), "static_alpha": (n, 1 + n), "dynamic_alpha_fn": (C, 1 + n),
               "dynamic_alpha_scale": (), "static_beta": (n,), "dynamic_beta_fn": (C,),
               "dynamic_beta_scale": ()},
        "mhc": fam((n, 1 + n), (nC, n * (1 + n))),
        "mhc-lite": dict(fam((n + 24,), (nC, n + 24)), perms=(24, n)),
        "kromhc": fam((n + 4,), (nC, n + 4)),
        "jpmhc": fam((n + n * n,), (nC, n + n * n)),
        "ohc": fam((n + 8,), (nC, n + 8)),
    }
    for v, w in want.items():
        m = HyperConnection(v, 1 if v == "residual" else n, C)
        got = {k: tuple(t.shape) for k, t in m.state_dict().items()}
        assert got == w, "%s: got %s want %s" % (v, got, w)
    m = HyperConnection("mhc-lite", 4, C, perms=[(0, 1, 2, 3), (1, 0, 3, 2), (3, 2, 1, 0)])
    got = {k: tuple(t.shape) for k, t in m.state_dict().items()}
    assert got["static_alpha"] == (7,) and got["dynamic_alpha_fn"] == (nC, 7) and got["perms"] == (3, 4)
    assert m.state_dict()["perms"].dtype == torch.int64


@check("mhc-lite default perms = itertools.permutations order, P_0 = I, P_k[i][pi_k(i)] = 1")
def _():
    for n in (1, 2, 3, 4):
        m = HyperConnection("mhc-lite", n, 2)
        assert [tuple(r) for r in m.perms.tolist()] == list(itertools.permutations(range(n)))
        P = hc.permutation_matrices(m.perms, n)
        close(P[0], torch.eye(n), 0, "P_0")
        for k, p in enumerate(itertools.permutations(range(n))):
            for i in range(n):
                assert P[k, i, p[i]] == 1 and P[k, i].sum() == 1


# ----------------------------------------------------------------------------
# 3. the Sinkhorn gap (SPEC 2)
# ----------------------------------------------------------------------------

@check("Sinkhorn gap: column sums [1.8197, 0.5901, 0.5901] after 20 iterations, rows exact")
def _():
    a = 1e-13
    M = torch.tensor([[0.5, a, a], [0.5, a, a], [a, 1, 1]], dtype=F64)
    S = sinkhorn(M.log(), 20)
    close(S.sum(dim=0), [1.8197, 0.5901, 0.5901], 5e-5, "col sums")
    close(S.sum(dim=1), [1, 1, 1], 1e-14, "row sums")
    S100 = sinkhorn(M.log(), 100)
    close(S100.sum(dim=0), [1, 1, 1], 1e-3, "col sums after 100")
    d = hc.ds_error(S)
    assert abs(d["ds_error"].item() - 0.8197) < 1e-4


@check("sinkhorn: batched over leading dims, iters=0 returns exp(logits)")
def _():
    L = torch.randn(3, 2, 4, 4, dtype=F64)
    S = sinkhorn(L, 7)
    for i in range(3):
        for j in range(2):
            close(S[i, j], sinkhorn(L[i, j], 7), 1e-15)
    close(sinkhorn(L, 0), L.exp(), 0)


# ----------------------------------------------------------------------------
# 4. double stochasticity, formulas, conventions
# ----------------------------------------------------------------------------

@check("mhc-lite and kromhc H_res exactly doubly stochastic (random params, f64 & f32)")
def _():
    for dtype, tol in ((F64, 1e-13), (torch.float32, 1e-6)):
        cases = [("mhc-lite", n, None) for n in (1, 2, 3, 4)]
        cases += [("mhc-lite", 8, mk.random_perm_subset(8, 12, torch.Generator().manual_seed(3)))]
        cases += [("kromhc", n, None) for n in (1, 2, 4, 8, 16)]
        for v, n, perms in cases:
            m, gen = rand_site(v, n, 4, seed=10 + n, perms=perms, dtype=dtype)
            X = torch.randn(7, n, 4, generator=gen, dtype=F64).to(dtype)
            _, H, _ = m.coefficients(X)
            d = hc.ds_error(H.to(F64))
            assert d["ds_error"].max().item() < tol, (v, n, dtype, d)
            assert d["min_entry"].min().item() >= 0
            fg, bg = hc.site_gains(H.to(F64))
            close(fg, torch.ones_like(fg), 10 * tol)
            close(bg, torch.ones_like(bg), 10 * tol)


@check("mhc H_res rows sum to 1, columns only approximately (random params)")
def _():
    m, gen = rand_site("mhc", 4, 4, seed=5, iters=3)
    with torch.no_grad():
        m.static_alpha[:, 1:] *= 6.0     # make the logits spread so 3 iterations do not converge
    X = torch.randn(20, 4, 4, generator=gen, dtype=F64)
    _, H, _ = m.coefficients(X)
    close(H.sum(-1), torch.ones(20, 4), 1e-13, "rows")
    assert (H.sum(-2) - 1).abs().max().item() > 1e-6
    v, frac = hc.log_inv_nu(m.res_logits(X))
    assert v.shape == (20,) and 0.0 <= frac <= 1.0


@check("mhc-lite: explicit sum_k a_k P_k equals H_res[i][j] = sum_{k: pi_k(i)=j} a_k")
def _():
    for n, perms in ((3, None), (4, None), (4, mk.random_perm_subset(4, 7, torch.Generator().manual_seed(9)))):
        m, gen = rand_site("mhc-lite", n, 3, seed=21, perms=perms)
        X = torch.randn(4, n, 3, generator=gen, dtype=F64)
        _, H, _ = m.coefficients(X)
        a = torch.softmax(m.res_logits(X), -1)
        H2 = torch.zeros(4, n, n, dtype=F64)
        for k, p in enumerate(m.perms.tolist()):
            for i in range(n):
                H2[:, i, p[i]] += a[:, k]
        close(H, H2, 1e-15)


@check("mhc-lite: closed-form dL/da_k = sum_i dL/dH[i][pi_k(i)] matches autograd")
def _():
    m, gen = rand_site("mhc-lite", 4, 3, seed=22)
    X = torch.randn(3, 4, 3, generator=gen, dtype=F64)
    a = torch.softmax(m.res_logits(X), -1).detach().requires_grad_(True)
    P = hc.permutation_matrices(m.perms, 4)
    H = torch.einsum("tk,kij->tij", a, P)
    G = torch.randn(3, 4, 4, generator=gen, dtype=F64)
    (H * G).sum().backward()
    closed = torch.zeros(3, 24, dtype=F64)
    for k, p in enumerate(m.perms.tolist()):
        for i in range(4):
            closed[:, k] += G[:, i, p[i]]
    close(a.grad, closed, 1e-14)


@check("kromhc: H_res[i][j] = prod_k (p_k if bit_k(i) == bit_k(j) else 1-p_k), U_1 on the MSB")
def _():
    for n in (2, 4, 8):
        Kb = n.bit_length() - 1
        m, gen = rand_site("kromhc", n, 3, seed=30 + n)
        with torch.no_grad():   # make the factors clearly different from each other
            m.static_alpha[n:] = torch.tensor([[0.0, -0.2 - 1.3 * k] for k in range(Kb)]).reshape(-1)
        X = torch.randn(3, n, 3, generator=gen, dtype=F64)
        _, H, _ = m.coefficients(X)
        p = torch.softmax(m.res_logits(X), -1)[..., 0]     # (3, Kb), factor 1 first
        H2 = torch.ones(3, n, n, dtype=F64)
        for i in range(n):
            for j in range(n):
                for k in range(Kb):
                    bit = Kb - 1 - k                        # factor k+1 <-> bit (Kb-1-k)
                    same = ((i >> bit) & 1) == ((j >> bit) & 1)
                    H2[:, i, j] *= p[:, k] if same else 1 - p[:, k]
        close(H, H2, 1e-15)


@check("mhc dynamic_alpha_fn column layout [pre_s, res_s0..res_s(n-1)] per stream")
def _():
    n, C = 3, 2
    m = HyperConnection("mhc", n, C)
    X = torch.randn(2, n, C, dtype=F64)
    with torch.no_grad():
        m.residual_scale.fill_(1.0)
        m.pre_branch_scale.fill_(1.0)
        m.dynamic_alpha_fn[:, 1 * (1 + n) + 1 + 2] = 1.0     # res_{1,2}
        m.dynamic_alpha_fn[:, 2 * (1 + n)] = 1.0             # pre_2
    xh = X.reshape(2, -1) / X.reshape(2, -1).norm(dim=-1, keepdim=True) * math.sqrt(n * C)
    L = m.res_logits(X)
    want = m.static_alpha[:, 1:].expand(2, n, n).clone()
    want[:, 1, 2] += xh.sum(-1)
    close(L, want, 1e-14)
    Hp, _, _ = m.coefficients(X)
    close(Hp[:, 2], torch.sigmoid(xh.sum(-1) - 1), 1e-14)


@check("normalisation: stream-major v, x_hat = v/max(|v|,1e-12)*sqrt(nC)*(1+gamma); hc per stream")
def _():
    n, C = 2, 3
    m, gen = rand_site("mhc-lite", n, C, seed=40)
    X = torch.randn(2, n, C, generator=gen, dtype=F64)
    with torch.no_grad():
        m.dynamic_beta_fn.zero_()
        m.dynamic_beta_fn[1 * C + 2, 0] = 1.0               # picks x_hat of X_1[2]
        m.h_post_scale.fill_(1.0)
        m.static_beta.zero_()
    _, _, Hq = m.coefficients(X)
    v = X.reshape(2, -1)
    xh = v / v.norm(dim=-1, keepdim=True) * math.sqrt(n * C) * (1 + m.norm.gamma.detach())
    close(Hq[:, 0], 2 * torch.sigmoid(xh[:, 1 * C + 2]), 1e-14)
    close(Hq[:, 1], torch.ones(2), 1e-15)
    # zero input: the 1e-12 clamp keeps everything finite
    Hp, H, Hq = m.coefficients(torch.zeros(1, n, C, dtype=F64))
    assert torch.isfinite(Hp).all() and torch.isfinite(H).all() and torch.isfinite(Hq).all()
    # hc: each stream normalised separately with sqrt(C)
    m, gen = rand_site("hc", n, C, seed=41)
    with torch.no_grad():
        m.dynamic_beta_fn.zero_()
        m.dynamic_beta_fn[1] = 1.0
        m.dynamic_beta_scale.fill_(1.0)
        m.static_beta.zero_()
    _, _, Hq = m.coefficients(X)
    xs = X / X.norm(dim=-1, keepdim=True) * math.sqrt(C) * (1 + m.norm.gamma.detach())
    close(Hq, torch.tanh(xs[..., 1]), 1e-14)


@check("pre/post definitions: u = sum_s H_pre[s] X_s, X'_t = sum_s H_res[s][t] X_s + H_post[t] y")
def _():
    for v, n in (("hc", 3), ("mhc", 3), ("mhc-lite", 3), ("kromhc", 4), ("residual", 1)):
        m, gen = rand_site(v, n, 5, seed=50)
        X = torch.randn(4, n, 5, generator=gen, dtype=F64)
        y = torch.randn(4, 5, generator=gen, dtype=F64)
        Hp, H, Hq = m.coefficients(X)
        u = m.pre(X)
        Xo = m.post(X, y)
        for tok in range(4):
            uu = sum(Hp[tok, s] * X[tok, s] for s in range(n))
            close(u[tok], uu, 1e-14, v)
            for t in range(n):
                xt = sum(H[tok, s, t] * X[tok, s] for s in range(n)) + Hq[tok, t] * y[tok]
                close(Xo[tok, t], xt, 1e-14, v)
        if v == "residual":
            close(u, X[:, 0], 0)
            close(Xo, X + y[:, None], 0)
            close(Hp, torch.ones(4, 1), 0)
            close(H, torch.ones(4, 1, 1), 0)
            close(Hq, torch.ones(4, 1), 0)


@check("float32 computation agrees with float64 (module .float(), and f32 inputs)")
def _():
    for v, n in (("hc", 3), ("mhc", 4), ("mhc-lite", 3), ("kromhc", 4)):
        m, gen = rand_site(v, n, 6, seed=60)
        X = torch.randn(3, n, 6, generator=gen, dtype=F64)
        y = torch.randn(3, 6, generator=gen, dtype=F64)
        u64, x64 = m(X, y)
        m32 = m.float()
        u32, x32 = m32(X.float(), y.float())
        assert u32.dtype == torch.float32 and x32.dtype == torch.float32
        close(u32, u64, 1e-4, v)
        close(x32, x64, 1e-4, v)


# ----------------------------------------------------------------------------
# 5. gradcheck (float64) on pre + post
# ----------------------------------------------------------------------------

def gradcheck_site(m, N, seed):
    gen = torch.Generator().manual_seed(seed)
    n, C = m.n, m.C
    names = [k for k, _ in m.named_parameters()]
    X = torch.randn(N, n, C, generator=gen, dtype=F64).requires_grad_(True)
    y = torch.randn(N, C, generator=gen, dtype=F64).requires_grad_(True)
    ps = [p.detach().clone().requires_grad_(True) for _, p in m.named_parameters()]

    def f(X, y, *params):
        d = dict(zip(names, params))
        u, Xo = functional_call(m, d, (X, y))
        return u, Xo

    ok = torch.autograd.gradcheck(f, (X, y, *ps), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert ok


GRADCHECK_CASES = [
    ("residual", 1, 0, 20, None),
    ("hc", 1, 0, 20, None),
    ("hc", 3, 1, 20, None),
    ("mhc", 1, 0, 20, None),
    ("mhc", 3, 1, 20, None),
    ("mhc", 2, 0, 5, None),
    ("mhc-lite", 1, 0, 20, None),
    ("mhc-lite", 3, 1, 20, None),
    ("mhc-lite", 4, 1, 20, [(0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 1, 0, 2)]),
    ("kromhc", 1, 0, 20, None),
    ("kromhc", 2, 1, 20, None),
    ("kromhc", 4, 0, 20, None),
    ("jpmhc", 3, 1, 0, None),      # iters: cayley_iters for jpmhc
    ("jpmhc", 3, 2, 2, None),
    ("jpmhc", 4, 0, 1, None),
    ("ohc", 4, 1, 20, None),
]

for _v, _n, _si, _it, _perms in GRADCHECK_CASES:
    @check("gradcheck f64 %s n=%d site %d iters %d%s" % (_v, _n, _si, _it,
                                                          "" if _perms is None else " K=%d" % len(_perms)))
    def _(v=_v, n=_n, si=_si, it=_it, perms=_perms):
        if v == "jpmhc":
            m, _g = rand_site(v, n, 3, seed=70 + n, site_index=si, perms=perms, cayley_iters=it)
        else:
            m, _g = rand_site(v, n, 3, seed=70 + n, site_index=si, iters=it, perms=perms)
        gradcheck_site(m, N=2, seed=80 + n)


@check("gradcheck f64 at initialisation (mhc, mhc-lite, kromhc, hc; n = 2)")
def _():
    for v in ("hc", "mhc", "mhc-lite", "kromhc"):
        m = HyperConnection(v, 2, 3, site_index=1)
        gradcheck_site(m, N=2, seed=90)


@check("the Cayley gap (SPEC 2): M[0][1] = 10, exact [[.6, .8], [-.8, .6]], 2 iterations [[.5, .75], [-.75, .5]]")
def _():
    m = HyperConnection("jpmhc", 4, 3, cayley_iters=0)
    for iters, (a, b), err in ((0, (0.6, 0.8), 0.0), (2, (0.5, 0.75), 0.1875)):
        m.cayley_iters = iters
        with torch.no_grad():
            m.residual_scale.zero_()
            m.static_alpha[4:] = 0
            m.static_alpha[4 + 0 * 4 + 1] = 10.0
        _, H, _ = m.coefficients(torch.randn(2, 4, 3, dtype=F64))
        want = torch.eye(4, dtype=F64)
        want[:2, :2] = torch.tensor([[a, b], [-b, a]], dtype=F64)
        close(H, want.expand(2, 4, 4), 1e-15, "H_res, cayley_iters %d" % iters)
        close(hc.orth_error(H), [err, err], 1e-15, "orthogonality error")
    # the iteration's fixed point is the exact transform
    W = torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(4))
    W = W - W.T
    close(hc.cayley(W, 60), hc.cayley(W, 0), 1e-12, "fixed point")


@check("exact jpmhc and ohc H_res orthogonal for logits up to +-50 (f64 & f32); jpmhc iterations are not")
def _():
    for variant, n, iters in [("jpmhc", n, 0) for n in range(2, 9)] + [("ohc", 4, 2)]:
        for dtype, tol in ((F64, 1e-12), (torch.float32, 2e-5)):
            m, gen = rand_site(variant, n, 3, seed=110 + n, cayley_iters=iters)
            with torch.no_grad():
                m.static_alpha[n:] = 100 * torch.rand(m.static_alpha[n:].shape, generator=gen, dtype=F64) - 50
            m = m.to(dtype)
            _, H, _ = m.coefficients(torch.randn(7, n, 3, generator=gen, dtype=F64).to(dtype))
            assert torch.isfinite(H).all()
            e = hc.orth_error(H.double()).max().item()
            assert e <= tol, (variant, n, dtype, e)
    m, gen = rand_site("jpmhc", 4, 3, seed=120, cayley_iters=2)
    _, H, _ = m.coefficients(torch.randn(7, 4, 3, generator=gen, dtype=F64))
    assert hc.orth_error(H).max().item() > 1e-6


@check("ohc H_res p = q p rbar (Hamilton products), a rotation (det +1)")
def _():
    def qmul(a, b):
        w1, x1, y1, z1 = a
        w2, x2, y2, z2 = b
        return torch.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])
    gen = torch.Generator().manual_seed(130)
    for _i in range(5):
        l = torch.randn(8, generator=gen, dtype=F64)
        q, r = hc.unit_quaternion(l[:4]), hc.unit_quaternion(l[4:])
        rbar = r * torch.tensor([1.0, -1, -1, -1], dtype=F64)
        H = hc.quaternion_rotation(q, r)
        for j in range(4):
            e = torch.zeros(4, dtype=F64)
            e[j] = 1
            close(H[:, j], qmul(qmul(q, e), rbar), 1e-15, "column %d" % j)
        close(torch.det(H), 1.0, 1e-10, "det")      # |q|^2 = |nu|^2 / (|nu|^2 + 1e-12)


# ----------------------------------------------------------------------------
# 6. diagnostics
# ----------------------------------------------------------------------------

@check("diagnostics: ds_error, gains of A = H_res^T, composite gains")
def _():
    M = torch.tensor([[0.5, 0.7], [-0.1, 0.2]], dtype=F64)
    d = hc.ds_error(M)
    close(d["sum_error"], 0.9, 1e-15)      # col 0: 0.4 -> 0.6 ; row 1: 0.1 -> 0.9
    close(d["min_entry"], -0.1, 0)
    H = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=F64)   # A = H^T = [[1, .5], [-2, .25]]
    fg, bg = hc.site_gains(H)
    close(fg, 2.25, 1e-15)   # rows of A: 1.5, 2.25
    close(bg, 3.0, 1e-15)    # cols of A: 3.0, 0.75
    fg2, bg2 = hc.site_gains(H, abs_entries=False)
    close(fg2, 1.75, 1e-15)
    close(bg2, 1.0, 1e-15)
    # composite through depth: mhc-lite stays exactly 1, a scaled identity grows
    mats = []
    for l in range(6):
        m, gen = rand_site("mhc-lite", 3, 4, seed=100 + l)
        mats.append(m.coefficients(torch.randn(5, 3, 4, generator=gen, dtype=F64))[1].detach())
    g = hc.composite_gains(mats)
    for e in g:
        for k in ("forward_mean", "forward_max", "backward_mean", "backward_max"):
            assert abs(e[k] - 1.0) < 1e-13, g
    g = hc.composite_gains([1.1 * torch.eye(3, dtype=F64).expand(5, 3, 3)] * 4)
    close([e["forward_max"] for e in g], [1.1, 1.21, 1.331, 1.4641], 1e-13)
    # composite order A_2 A_1 with A = H^T
    H1 = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]], dtype=F64)
    H2 = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]], dtype=F64)
    g = hc.composite_gains([H1, H2])
    comp = H2[0].T @ H1[0].T
    close(g[1]["forward_max"], comp.abs().sum(-1).max(), 0)
    close(g[1]["backward_max"], comp.abs().sum(-2).max(), 0)


# ----------------------------------------------------------------------------
# 7. fixture generator and safetensors writer
# ----------------------------------------------------------------------------

@check("safetensors writer: header layout, alignment, round trip")
def _():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        ts = [("a", torch.arange(6, dtype=F64).reshape(2, 3)), ("s", torch.tensor(2.5, dtype=F64)),
              ("b.c", torch.tensor([1, 0, 2]))]
        write_safetensors(p, ts, {"variant": "mhc", "n": 3})
        raw = open(p, "rb").read()
        hlen = int.from_bytes(raw[:8], "little")
        assert hlen % 8 == 0 and raw[8 + hlen - 1:8 + hlen] in (b"}", b" ")
        assert len(raw) == 8 + hlen + 8 * (6 + 1 + 3)
        t, meta = read_safetensors(p)
        assert meta == {"variant": "mhc", "n": "3"}
        assert list(t) == ["a", "s", "b.c"]
        close(t["a"], ts[0][1], 0)
        assert t["s"].shape == () and t["s"].item() == 2.5
        assert t["b.c"].dtype == F64
        close(t["b.c"], [1, 0, 2], 0)


@check("fixtures: every case writes, reloads into a module and reproduces outputs and gradients")
def _():
    with tempfile.TemporaryDirectory() as d:
        assert mk.main(["--out", d, "--quiet"]) == 0
        files = sorted(os.listdir(d))
        assert len(files) == len(mk.CASES), files
        for variant, n, si, iters, K in mk.CASES:
            name = mk.case_name(variant, n, iters, K, si) + ".safetensors"
            t, meta = read_safetensors(os.path.join(d, name))
            sk, cay = (20, iters) if variant == "jpmhc" else (iters, 2)
            assert meta == {"variant": variant, "n": str(n), "C": str(mk.C_DIM), "N": str(mk.N_TOKENS),
                            "site_index": str(si), "sinkhorn_iters": str(sk), "cayley_iters": str(cay),
                            "dtype": "float64"}
            perms = None
            if variant == "mhc-lite":
                perms = [tuple(int(x) for x in row) for row in t["perms"].tolist()]
                assert perms[0] == tuple(range(n))
                assert len(perms) == (K if K is not None else math.factorial(n))
            m = HyperConnection(variant, n, mk.C_DIM, site_index=si, sinkhorn_iters=sk, perms=perms,
                                cayley_iters=cay)
            sd = {k: t[k] for k in m.state_dict()}
            if "perms" in sd:
                sd["perms"] = sd["perms"].long()
            m.load_state_dict(sd)
            X = t["X"].clone().requires_grad_(True)
            y = t["y"].clone().requires_grad_(True)
            u, Xo = m(X, y)
            ((u * t["g_u"]).sum() + (Xo * t["g_Xout"]).sum()).backward()
            close(u, t["u"], 0, name + " u")
            close(Xo, t["Xout"], 0, name + " Xout")
            close(X.grad, t["grad.X"], 0, name + " grad.X")
            close(y.grad, t["grad.y"], 0, name + " grad.y")
            for k, p in m.named_parameters():
                g = p.grad if p.grad is not None else torch.zeros_like(p)   # unused (kromhc n=1)
                close(g, t["grad." + k], 0, name + " grad." + k)
            expected = ({"X", "y", "g_u", "g_Xout", "u", "Xout", "H_pre", "H_res", "H_post",
                         "grad.X", "grad.y"}
                        | {k for k in m.state_dict()}
                        | {"grad." + k for k, _ in m.named_parameters()})
            outputs = expected - {"X", "y", "g_u", "g_Xout"} - set(m.state_dict())
            expected |= {"f32err." + k for k in outputs}
            assert set(t) == expected, set(t) ^ expected
            for k in outputs:  # PyTorch's own fp32 error: a small, finite relative error
                e = float(t["f32err." + k])
                assert 0 <= e < 1e-3, (name, k, e)
            assert t["H_res"].shape == (mk.N_TOKENS, n, n)
            # every parameter gradient must be non-trivial (all paths matter);
            # with n = 1, H_res = [[1]] whatever its logits, so s_res has no effect
            for k, p in m.named_parameters():
                if n == 1 and k == "residual_scale":
                    assert t["grad." + k].abs().max() == 0
                    continue
                assert t["grad." + k].abs().max() > 1e-8, (name, k)


finish()
