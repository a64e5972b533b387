#!/usr/bin/python3
"""Self-check of the PyTorch reference (hyper_conn.py, gpt.py, the fixture generators and
ckpt_loss.py) against SPEC.md.

    /usr/bin/python3 tests/reference/test_reference_selfcheck.py

Prints one line per check and a final line "N passed, M failed"; exits
non-zero if anything failed.
"""

import itertools
import math
import os
import sys
import tempfile
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hyper_conn as hc  # noqa: E402
from hyper_conn import HyperConnection, sinkhorn  # noqa: E402
import make_conn_fixtures as mk  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

try:
    from torch.func import functional_call  # torch >= 2.0
except ImportError:  # torch 1.13
    from torch.nn.utils.stateless import functional_call

F64 = torch.float64
RESULTS = {"passed": 0, "failed": 0}


def check(name):
    def deco(fn):
        try:
            fn()
        except Exception:  # noqa: BLE001
            RESULTS["failed"] += 1
            print("FAIL  %s" % name)
            traceback.print_exc(file=sys.stdout)
        else:
            RESULTS["passed"] += 1
            print("ok    %s" % name)
        return fn
    return deco


def close(a, b, tol, what=""):
    a = torch.as_tensor(a, dtype=F64)
    b = torch.as_tensor(b, dtype=F64)
    err = (a - b).abs().max().item()
    assert err <= tol, "%s: max |diff| = %.3g > %.3g\n got %s\n want %s" % (what, err, tol, a, b)


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


# ----------------------------------------------------------------------------
# 8. the GPT model (SPEC 3, 4, 5), its fixtures and ckpt_loss.py
# ----------------------------------------------------------------------------

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

import ckpt_loss  # noqa: E402
import gpt as G  # noqa: E402
import make_gpt_fixtures as mg  # noqa: E402

GPT_TYPES = ("none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc")


def spec4_names(cfg, K_lite=None):
    """Expected state_dict {name: shape} written out from SPEC 4 (+ linear biases)."""
    C, V, Tm, n, L = cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.hyper_conn_n, cfg.n_layer
    want = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (Tm, C)}
    for i in range(L):
        h = "transformer.h.%d." % i
        want[h + "branch_attn.0.weight"] = (C,)
        want[h + "branch_attn.1.c_attn.weight"] = (3 * C, C)
        want[h + "branch_attn.1.c_proj.weight"] = (C, C)
        want[h + "branch_mlp.0.weight"] = (C,)
        want[h + "branch_mlp.1.c_fc.weight"] = (4 * C, C)
        want[h + "branch_mlp.1.c_proj.weight"] = (C, 4 * C)
        if cfg.bias:
            for k, shp in (("branch_attn.0.bias", C), ("branch_attn.1.c_attn.bias", 3 * C),
                           ("branch_attn.1.c_proj.bias", C), ("branch_mlp.0.bias", C),
                           ("branch_mlp.1.c_fc.bias", 4 * C), ("branch_mlp.1.c_proj.bias", C)):
                want[h + k] = (shp,)
        t = cfg.hyper_conn_type
        if t == "none":
            continue
        nC = n * C
        if t == "hc":
            site = {"norm.gamma": (C,), "static_alpha": (n, 1 + n), "dynamic_alpha_fn": (C, 1 + n),
                    "dynamic_alpha_scale": (), "static_beta": (n,), "dynamic_beta_fn": (C,),
                    "dynamic_beta_scale": ()}
        else:
            if t == "mhc":
                sa, W = (n, 1 + n), (nC, n * (1 + n))
            elif t == "mhc_lite":
                K = math.factorial(n) if K_lite is None else K_lite
                sa, W = (n + K,), (nC, n + K)
            elif t == "jpmhc":
                sa, W = (n + n * n,), (nC, n + n * n)
            elif t == "ohc":
                sa, W = (n + 8,), (nC, n + 8)
            else:
                Kb = n.bit_length() - 1
                sa, W = (n + 2 * Kb,), (nC, n + 2 * Kb)
            site = {"norm.gamma": (nC,), "static_alpha": sa, "dynamic_alpha_fn": W,
                    "pre_branch_scale": (1,), "residual_scale": (1,), "static_beta": (n,),
                    "dynamic_beta_fn": (nC, n), "h_post_scale": ()}
            if t == "mhc_lite":
                site["perms"] = (K, n)
        for s in ("hc_attn", "hc_mlp"):
            for k, shp in site.items():
                want[h + s + "." + k] = shp
    want["transformer.ln_f.weight"] = (C,)
    if cfg.bias:
        want["transformer.ln_f.bias"] = (C,)
    return want


def small_cfg(t, **kw):
    d = dict(n_layer=2, n_head=2, n_embd=8, vocab_size=16, block_size=6, bias=False,
             hyper_conn_type=t, hyper_conn_n=1 if t == "none" else 4)
    d.update(kw)
    return G.GPTConfig(**d)


def random_gpt(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    m = G.GPT(cfg)
    G.init_weights(m, gen)
    mg.perturb_parameters(m, gen)
    return m, gen


@check("GPT state_dict names and shapes = SPEC 4 for every type (bias on/off, n = 2/4); no lm_head")
def _():
    for t in GPT_TYPES:
        for bias in (False, True):
            for n in ((4,) if t == "ohc" else (2, 4)):          # ohc rotates exactly 4 streams
                cfg = small_cfg(t, bias=bias, hyper_conn_n=n)
                m = G.GPT(cfg)
                got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
                want = spec4_names(cfg)
                assert got == want, (t, bias, n, set(got) ^ set(want),
                                     {k: (got.get(k), want.get(k)) for k in want if got.get(k) != want[k]})
                assert not any(k.startswith("lm_head") for k in got)
                for k, v in m.state_dict().items():
                    assert v.dtype == (torch.int64 if k.endswith(".perms") else F64), k
    assert G.GPTConfig(hyper_conn_type="none", hyper_conn_n=4).hyper_conn_n == 1
    assert G.GPTConfig(hyper_conn_type="mhc-lite").hyper_conn_type == "mhc_lite"
    assert G.GPTConfig(hyper_conn_type="residual").hyper_conn_type == "none"


@check("GPT lm_head tied to wte; load_mhc_state_dict: either head name, strict keys, perm subsets")
def _():
    cfg = small_cfg("mhc_lite", hyper_conn_n=3)
    m, gen = random_gpt(cfg, 200)
    idx = torch.randint(0, 16, (2, 5), generator=gen)
    logits, _ = m(idx)
    # the head is wte: changing one wte row changes that logit column even if the token is unused
    unused = [v for v in range(16) if v not in idx.flatten().tolist()][0]
    sd = m.state_dict()
    m2 = G.GPT(cfg)
    sd2 = dict(sd)
    sd2["transformer.wte.weight"] = sd["transformer.wte.weight"].clone()
    sd2["transformer.wte.weight"][unused] += 1.0
    G.load_mhc_state_dict(m2, sd2)
    l2, _ = m2(idx)
    diff = (l2 - logits).abs().amax(dim=(0, 1))
    assert diff[unused] > 1e-3 and (diff[torch.arange(16) != unused] == 0).all()
    # lm_head.weight in place of transformer.wte.weight
    sd3 = {("lm_head.weight" if k == "transformer.wte.weight" else k): v for k, v in sd.items()}
    m3 = G.load_mhc_state_dict(G.GPT(cfg), sd3)
    close(m3(idx)[0], logits, 0, "lm_head name")
    sd4 = dict(sd, **{"lm_head.weight": sd["transformer.wte.weight"].clone()})
    G.load_mhc_state_dict(G.GPT(cfg), sd4)                    # both, equal: fine
    bad = dict(sd4)
    bad["lm_head.weight"] = bad["lm_head.weight"] + 1
    for broken in (bad,
                   {k: v for k, v in sd.items() if k != "transformer.ln_f.weight"},   # missing
                   dict(sd, **{"transformer.ln_f.bias": torch.zeros(8)}),            # unexpected
                   dict(sd, **{"transformer.h.0.hc_attn.static_beta": torch.zeros(4)})):  # shape
        try:
            G.load_mhc_state_dict(G.GPT(cfg), broken)
        except (KeyError, ValueError, RuntimeError):
            pass
        else:
            raise AssertionError("broken state_dict accepted")
    # an explicit permutation subset in the tensors rebuilds that site
    perms = [(0, 1, 2), (2, 0, 1), (1, 2, 0)]
    ms = G.GPT(cfg, perms={1: perms})
    gen2 = torch.Generator().manual_seed(5)
    G.init_weights(ms, gen2)
    mg.perturb_parameters(ms, gen2)
    sds = ms.state_dict()
    assert tuple(sds["transformer.h.0.hc_mlp.perms"].shape) == (3, 3)
    assert spec4_names(cfg, K_lite=3)["transformer.h.0.hc_mlp.static_alpha"] == \
        tuple(sds["transformer.h.0.hc_mlp.static_alpha"].shape)
    sdsf = {k: (v.double() if k.endswith("perms") else v) for k, v in sds.items()}  # perms as F64
    ml = G.load_mhc_state_dict(G.GPT(cfg), sdsf)
    close(ml(idx)[0], ms(idx)[0], 0, "perm subset")
    assert ml.transformer.h[0].hc_mlp.perms.tolist() == [list(p) for p in perms]


def plain_gpt2_logits(sd, cfg, idx):
    """nanoGPT / GPT-2 written from scratch: x += attn(ln_1(x)); x += mlp(ln_2(x)); ln_f; wte^T."""
    C, H = cfg.n_embd, cfg.n_head
    hd = C // H

    def ln(x, p):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + 1e-5) * sd[p + ".weight"]
        return y + sd[p + ".bias"] if p + ".bias" in sd else y

    def lin(x, p):
        y = x @ sd[p + ".weight"].t()
        return y + sd[p + ".bias"] if p + ".bias" in sd else y

    Bq, Tq = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:Tq]
    for i in range(cfg.n_layer):
        h = "transformer.h.%d." % i
        qkv = lin(ln(x, h + "branch_attn.0"), h + "branch_attn.1.c_attn")
        out = torch.zeros(Bq, Tq, C, dtype=x.dtype)
        for b in range(Bq):
            for hh in range(H):
                q = qkv[b, :, hh * hd:(hh + 1) * hd]
                k = qkv[b, :, C + hh * hd:C + (hh + 1) * hd]
                v = qkv[b, :, 2 * C + hh * hd:2 * C + (hh + 1) * hd]
                for t in range(Tq):
                    s = (k[:t + 1] @ q[t]) / math.sqrt(hd)
                    w = torch.exp(s - s.max())
                    out[b, t, hh * hd:(hh + 1) * hd] = (w / w.sum()) @ v[:t + 1]
        x = x + lin(out, h + "branch_attn.1.c_proj")
        f = lin(ln(x, h + "branch_mlp.0"), h + "branch_mlp.1.c_fc")
        f = f * 0.5 * (1 + torch.erf(f / math.sqrt(2)))
        x = x + lin(f, h + "branch_mlp.1.c_proj")
    return ln(x, "transformer.ln_f") @ sd["transformer.wte.weight"].t()


@check("GPT 'none' = plain GPT-2 (n = 1, X' = X + y), bias on and off; loss = mean CE")
def _():
    for bias in (False, True):
        cfg = small_cfg("none", bias=bias)
        m, gen = random_gpt(cfg, 210 + bias)
        assert not m.sites()
        idx = torch.randint(0, 16, (2, 6), generator=gen)
        tg = torch.randint(0, 16, (2, 6), generator=gen)
        logits, loss = m(idx, tg)
        want = plain_gpt2_logits(m.state_dict(), cfg, idx)
        close(logits, want, 1e-13, "logits")
        lp = want.log_softmax(-1)
        ce = -lp.gather(-1, tg.unsqueeze(-1)).mean()
        close(loss, ce, 1e-13, "loss")


@check("GPT with hyper-connections: streams = e at entry, ln_f per stream then summed")
def _():
    # Build the forward by hand from the site modules (pre/post of hyper_conn.py).
    for t in ("hc", "mhc", "mhc_lite", "kromhc"):
        cfg = small_cfg(t)
        m, gen = random_gpt(cfg, 220)
        idx = torch.randint(0, 16, (2, 6), generator=gen)
        logits, _ = m(idx)
        tr = m.transformer
        e = tr.wte.weight[idx] + tr.wpe.weight[:6]
        X = torch.stack([e] * 4, dim=-2)
        for blk in tr.h:
            for site, branch in ((blk.hc_attn, blk.branch_attn), (blk.hc_mlp, blk.branch_mlp)):
                u = site.pre(X)
                X = site.post(X, branch(u))
        x = sum(Fn.layer_norm(X[..., s, :], (8,), tr.ln_f.weight, None, 1e-5) for s in range(4))
        close(logits, x @ tr.wte.weight.t(), 1e-12, t)
        # site indices: block i has sites 2i, 2i+1, primary stream r = site mod n
        for si, name, site in m.sites():
            assert site.site_index == si and site.r == si % 4, (name, si)


@check("init_weights: N(0, 0.02), c_proj N(0, 0.02/sqrt(2L)), LN 1/0, biases 0, connections at SPEC 2")
def _():
    for t in ("mhc_lite", "hc"):
        cfg = G.GPTConfig(n_layer=4, n_head=4, n_embd=64, vocab_size=256, block_size=64, bias=True,
                          hyper_conn_type=t, hyper_conn_n=2)
        m = G.GPT(cfg)
        G.init_weights(m, torch.Generator().manual_seed(7))
        proj = 0.02 / math.sqrt(8)
        all_proj, all_other = [], []
        for k, v in m.named_parameters():
            if k.endswith("c_proj.weight"):
                all_proj.append(v.flatten())
            elif k.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
                all_other.append(v.flatten())
                assert abs(v.std().item() - 0.02) < 0.1 * 0.02, (k, v.std())
                assert abs(v.mean().item()) < 0.01 * 0.2 + 3 * 0.02 / math.sqrt(v.numel()), k
            elif k.endswith(".bias"):
                assert (v == 0).all(), k
            elif k.endswith(("0.weight", "ln_f.weight")):
                assert (v == 1).all(), k
        p = torch.cat(all_proj)
        assert abs(p.std().item() - proj) < 0.05 * proj, p.std()
        assert abs(torch.cat(all_other).std().item() - 0.02) < 0.02 * 0.02
        for si, name, site in m.sites():
            fresh = HyperConnection(site.variant, site.n, site.C, site_index=si)
            for k, v in fresh.state_dict().items():
                close(site.state_dict()[k], v, 0, name + "." + k)
    # init is reproducible from the generator
    cfg = small_cfg("kromhc")
    a = G.init_weights(G.GPT(cfg), torch.Generator().manual_seed(3)).state_dict()
    b = G.init_weights(G.GPT(cfg), torch.Generator().manual_seed(3)).state_dict()
    for k in a:
        close(a[k], b[k], 0, k)


@check("param_groups: decay = c_attn/c_proj/c_fc weights, wte, wpe, dynamic_alpha_fn, dynamic_beta_fn")
def _():
    for t in GPT_TYPES:
        for bias in (False, True):
            cfg = small_cfg(t, bias=bias)
            m = G.GPT(cfg)
            want = set()
            for k in spec4_names(cfg):
                last = k.split(".")
                if k in ("transformer.wte.weight", "transformer.wpe.weight"):
                    want.add(k)
                elif last[-2] in ("c_attn", "c_proj", "c_fc") and last[-1] == "weight":
                    want.add(k)
                elif last[-1] in ("dynamic_alpha_fn", "dynamic_beta_fn"):
                    want.add(k)
            groups = G.param_groups(m, 0.1)
            ids = {id(p): k for k, p in m.named_parameters()}
            dec = {ids[id(p)] for p in groups[0]["params"]}
            nod = {ids[id(p)] for p in groups[1]["params"]}
            assert dec == want, (t, dec ^ want)
            assert nod == set(ids.values()) - want and not (dec & nod)
            assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
            for k in nod:
                assert not k.endswith(("_fn", "c_attn.weight", "c_fc.weight", "c_proj.weight"))


@check("get_lr: nanoGPT warm-up, cosine, floor")
def _():
    c = dict(learning_rate=6e-4, min_lr=6e-5, warmup_iters=10, lr_decay_iters=110)
    close(G.get_lr(0, c), 6e-4 / 11, 1e-20)
    close(G.get_lr(9, c), 6e-4 * 10 / 11, 1e-20)
    close(G.get_lr(10, c), 6e-4, 1e-20)
    close(G.get_lr(60, c), 6e-5 + 0.5 * (6e-4 - 6e-5), 1e-18)
    close(G.get_lr(35, c), 6e-5 + 0.5 * (1 + math.cos(math.pi * 0.25)) * 5.4e-4, 1e-18)
    close(G.get_lr(110, c), 6e-5, 1e-18)
    close(G.get_lr(111, c), 6e-5, 0)
    close(G.get_lr(10 ** 6, c), 6e-5, 0)
    lrs = [G.get_lr(i, mg.TRAIN) for i in range(5)]
    close(lrs, [1e-3, 2e-3, 3e-3, 3e-4 + 0.5 * 2.7e-3, 3e-4], 1e-18, "fixture schedule")


def gradcheck_gpt(t, n, seed, **kw):
    cfg = small_cfg(t, n_layer=1, n_embd=4, n_head=2, vocab_size=8, block_size=3,
                    hyper_conn_n=n, **kw)
    m, gen = random_gpt(cfg, seed)
    idx = torch.randint(0, 8, (2, 3), generator=gen)
    tg = torch.randint(0, 8, (2, 3), generator=gen)
    R = torch.randn(2, 3, 8, generator=gen, dtype=F64)
    names = [k for k, _ in m.named_parameters()]
    ps = [p.detach().clone().requires_grad_(True) for _, p in m.named_parameters()]

    def f(*params):
        logits, loss = functional_call(m, dict(zip(names, params)), (idx, tg))
        return loss, (logits * R).sum()

    assert torch.autograd.gradcheck(f, tuple(ps), eps=1e-6, atol=1e-8, rtol=1e-6)


@check("gradcheck f64 of the whole tiny GPT (mhc_lite n=2 with biases, mhc n=2 iters 4)")
def _():
    gradcheck_gpt("mhc_lite", 2, 230, bias=True)
    gradcheck_gpt("mhc", 2, 231, sinkhorn_iters=4)


def adamw_by_hand(init, grads_fn, train, steps):
    """AdamW written out (PyTorch's formula): decoupled decay p *= 1 - lr wd, then
    p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps); global-norm clipping with coef
    max_norm/(norm + 1e-6) clamped to 1."""
    params = {k: v.clone() for k, v in init.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    b1, b2 = train["beta1"], train["beta2"]
    out = []
    for s in range(steps):
        loss, grads = grads_fn(params, s)
        norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
        coef = min(1.0, train["grad_clip"] / (norm + 1e-6))
        lr = G.get_lr(s, train)
        for k in params:
            g = grads[k] * coef
            wd = train["weight_decay"] if G.is_decayed(k) else 0.0
            params[k] = params[k] * (1 - lr * wd)
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            bc1, bc2 = 1 - b1 ** (s + 1), 1 - b2 ** (s + 1)
            params[k] = params[k] - lr / bc1 * m[k] / (v2[k].sqrt() / math.sqrt(bc2) + 1e-8)
        out.append((loss, norm, lr))
    return params, out


with tempfile.TemporaryDirectory() as _gfx_dir:
    _t0 = time.time()
    _gfx_ok = mg.main(["--out", _gfx_dir, "--quiet"]) == 0
    _gfx_time = time.time() - _t0

    @check("make_gpt_fixtures writes every file (%.2f s)" % _gfx_time)
    def _():
        assert _gfx_ok
        want = {n + ".safetensors" for n, _ in mg.all_cases()}
        assert set(os.listdir(_gfx_dir)) == want, set(os.listdir(_gfx_dir)) ^ want
        assert len(want) == 9 + 7 + 7      # models (+ mhc_lite bias, exact jpmhc), AdamW, ops

    def _raw_dtypes(path):
        raw = open(path, "rb").read()
        hlen = int.from_bytes(raw[:8], "little")
        h = json.loads(raw[8:8 + hlen])
        h.pop("__metadata__", None)
        return {k: v["dtype"] for k, v in h.items()}

    @check("GPT model fixtures: names, dtypes, metadata; reload and reproduce loss, logits, grads")
    def _():
        for t, bias in [(t, False) for t in GPT_TYPES] + [("mhc_lite", True)]:
            name = "gpt_%s%s" % (t, "_bias" if bias else "")
            path = os.path.join(_gfx_dir, name + ".safetensors")
            ts, meta = read_safetensors(path)
            assert set(meta) == {"config", "B", "T", "structural_zero_grads"}, meta
            cfg, unknown = G.GPTConfig.from_json(meta["config"], strict=True)
            assert list(json.loads(meta["config"])) == [
                "n_layer", "n_head", "n_embd", "vocab_size", "block_size", "bias",
                "hyper_conn_type", "hyper_conn_n", "sinkhorn_iters", "cayley_iters"]
            assert cfg == mg.tiny_config(t, bias) and meta["B"] == "2" and meta["T"] == "16"
            m = G.GPT(cfg)
            sdn = spec4_names(cfg)
            pnames = [k for k, _ in m.named_parameters()]
            want = (set(sdn) | {"idx", "targets", "loss", "logits"}
                    | {"grad." + k for k in pnames}
                    | {"f32err." + k for k in ["loss", "logits"] + ["grad." + p for p in pnames]})
            assert set(ts) == want, set(ts) ^ want
            dts = _raw_dtypes(path)
            for k, d in dts.items():
                assert d == ("I64" if k in ("idx", "targets") or k.endswith(".perms") else "F64"), (k, d)
            for k in sdn:
                assert tuple(ts[k].shape) == sdn[k], k
                if ts[k].is_floating_point():
                    close(ts[k].float().double(), ts[k], 0, "fp32-representable " + k)
            G.load_mhc_state_dict(m, {k: ts[k] for k in sdn})
            logits, loss = m(ts["idx"], ts["targets"])
            loss.backward()
            assert ts["logits"].shape == (2, 16, 64) and ts["loss"].shape == ()
            close(loss, ts["loss"], 1e-13, name + " loss")
            close(logits, ts["logits"], 1e-12, name + " logits")
            zero = json.loads(meta["structural_zero_grads"])
            for k, p in m.named_parameters():
                g, ref = p.grad, ts["grad." + k]
                close(g, ref, 1e-12 * max(1.0, ref.abs().max().item()), name + " grad." + k)
                if "grad." + k not in zero:
                    assert ref.abs().max() > 1e-10, (name, k)
                else:
                    assert ref.abs().max() < 1e-14, (name, k)
            for k in want:
                if k.startswith("f32err."):
                    e = float(ts[k])
                    if k[len("f32err."):] in zero:
                        continue
                    assert 0 <= e < 2e-3, (name, k, e)
            # float32 and the SPEC 4 reload through lm_head.weight agree
            sd3 = {("lm_head.weight" if k == "transformer.wte.weight" else k): ts[k] for k in sdn}
            m32 = G.load_mhc_state_dict(G.GPT(cfg, dtype=torch.float32), sd3)
            l32, _ = m32(ts["idx"])
            assert l32.dtype == torch.float32
            close(l32.double(), ts["logits"], 1e-4 * ts["logits"].abs().max().item(), name + " f32")

    @check("GPT AdamW fixtures: names, metadata, clipping happened, reproduced by a hand-written AdamW")
    def _():
        for t in GPT_TYPES:
            name = "gpt_%s_adamw" % t
            path = os.path.join(_gfx_dir, name + ".safetensors")
            ts, meta = read_safetensors(path)
            assert set(meta) == {"config", "train", "B", "T"}, meta
            cfg, _u = G.GPTConfig.from_json(meta["config"], strict=True)
            train = json.loads(meta["train"])
            assert train == mg.TRAIN
            assert set(train) == {"learning_rate", "min_lr", "warmup_iters", "lr_decay_iters",
                                  "weight_decay", "beta1", "beta2", "grad_clip",
                                  "gradient_accumulation_steps", "batch_size"}
            m = G.GPT(cfg)
            sdn = spec4_names(cfg)
            pnames = [k for k, _ in m.named_parameters()]
            want = (set(sdn) | {"idx", "targets", "losses", "grad_norms", "lrs"}
                    | {"final." + k for k in pnames})
            assert set(ts) == want, set(ts) ^ want
            assert ts["idx"].shape == (10, 2, 16) and ts["idx"].dtype == torch.int64
            assert ts["losses"].shape == (5,) and ts["grad_norms"].shape == (5,)
            close(ts["lrs"], [G.get_lr(s, train) for s in range(5)], 0, "lrs")
            assert (ts["grad_norms"] > train["grad_clip"]).any()
            G.load_mhc_state_dict(m, {k: ts[k] for k in sdn})
            init = {k: p.detach().clone() for k, p in m.named_parameters()}

            def grads_fn(params, s):
                for k, p in m.named_parameters():
                    with torch.no_grad():
                        p.copy_(params[k])
                m.zero_grad(set_to_none=True)
                tot = 0.0
                for mb in range(2):
                    _, loss = m(ts["idx"][2 * s + mb], ts["targets"][2 * s + mb])
                    (loss / 2).backward()
                    tot += loss.item() / 2
                return tot, {k: p.grad.detach().clone() for k, p in m.named_parameters()}

            final, hist = adamw_by_hand(init, grads_fn, train, 5)
            close([h[0] for h in hist], ts["losses"], 1e-12, name + " losses")
            close([h[1] for h in hist], ts["grad_norms"], 1e-11, name + " grad_norms")
            for k in pnames:
                close(final[k], ts["final." + k], 1e-11, name + " final." + k)
            moved = max((ts["final." + k] - ts[k]).abs().max().item() for k in pnames)
            assert moved > 1e-3

    def _indep_op(op, ts):
        """The ops written independently of make_gpt_fixtures (autograd for the gradients)."""
        if op == "layernorm":
            def ln(x, weight, bias):
                xc = x - x.mean(-1, keepdim=True)
                return xc / torch.sqrt((xc * xc).mean(-1, keepdim=True) + 1e-5) * weight + bias
            return ln, ("x", "weight", "bias")
        if op == "linear":
            return lambda x, weight, bias: torch.einsum("ni,oi->no", x, weight) + bias, ("x", "weight", "bias")
        if op == "gelu":
            return lambda x: x * (1 + torch.erf(x / math.sqrt(2))) / 2, ("x",)
        if op == "attention":
            def att(qkv):
                Bq, Tq, C3 = qkv.shape
                C, H = C3 // 3, 2
                hd = C // H
                rows = []
                for b in range(Bq):
                    for t in range(Tq):
                        heads = []
                        for h in range(H):
                            q = qkv[b, t, h * hd:(h + 1) * hd]
                            k = qkv[b, :t + 1, C + h * hd:C + (h + 1) * hd]
                            v = qkv[b, :t + 1, 2 * C + h * hd:2 * C + (h + 1) * hd]
                            w = torch.softmax(k @ q / math.sqrt(hd), 0)
                            heads.append(w @ v)
                        rows.append(torch.cat(heads))
                return torch.stack(rows).reshape(Bq, Tq, C)
            return att, ("qkv",)
        if op == "crossentropy":
            tg = ts["targets"]
            return (lambda logits: (torch.logsumexp(logits, -1)
                                    - logits[torch.arange(logits.shape[0]), tg]).mean()), ("logits",)
        if op == "encoder":
            idx = ts["idx"]
            V = ts["wte"].shape[0]
            oh = torch.nn.functional.one_hot(idx, V).to(F64)
            return lambda wte, wpe: oh @ wte + wpe.unsqueeze(0), ("wte", "wpe")
        if op == "stream_sum":  # an explicit loop over the streams
            return lambda X: sum(X[:, s, :] for s in range(X.shape[1])), ("X",)
        raise KeyError(op)

    @check("op fixtures: names, shapes, dtypes; reproduced by independent formulas")
    def _():
        shapes = {"layernorm": {"x": (6, 8), "weight": (8,), "bias": (8,), "out": (6, 8)},
                  "linear": {"x": (5, 7), "weight": (6, 7), "bias": (6,), "out": (5, 6)},
                  "gelu": {"x": (50,), "out": (50,)},
                  "attention": {"qkv": (2, 5, 24), "out": (2, 5, 8)},
                  "crossentropy": {"logits": (7, 11), "targets": (7,), "out": ()},
                  "encoder": {"wte": (11, 8), "wpe": (5, 8), "idx": (2, 5), "out": (2, 5, 8)},
                  "stream_sum": {"X": (4, 3, 6), "out": (4, 6)}}
        for op, shp in shapes.items():
            path = os.path.join(_gfx_dir, "op_%s.safetensors" % op)
            ts, meta = read_safetensors(path)
            assert meta["op"] == op
            fn, inputs = _indep_op(op, ts)
            want = set(shp) | {"upstream"} | {"grad." + k for k in inputs}
            assert set(ts) == want, (op, set(ts) ^ want)
            for k, s in shp.items():
                assert tuple(ts[k].shape) == s, (op, k)
            assert tuple(ts["upstream"].shape) == shp["out"]
            for k, d in _raw_dtypes(path).items():
                assert d == ("I64" if k in ("idx", "targets") else "F64"), (op, k, d)
            leaves = {k: ts[k].clone().requires_grad_(True) for k in inputs}
            for k in inputs:
                close(ts[k].float().double(), ts[k], 0, op + " fp32-representable " + k)
            out = fn(**leaves)
            (out * ts["upstream"]).sum().backward()
            close(out, ts["out"], 1e-13, op + " out")
            for k in inputs:
                close(leaves[k].grad, ts["grad." + k], 1e-13, op + " grad." + k)
        x = read_safetensors(os.path.join(_gfx_dir, "op_gelu.safetensors"))[0]["x"]
        assert x.min() < -5.5 and x.max() > 5.5
        ts = read_safetensors(os.path.join(_gfx_dir, "op_encoder.safetensors"))[0]
        assert len(set(ts["idx"].flatten().tolist())) < ts["idx"].numel()
        assert float(read_safetensors(os.path.join(_gfx_dir, "op_crossentropy.safetensors"))[0]["upstream"]) == 1.0


@check("ckpt_loss.py: F32 checkpoint (lm_head name, perm subset) on uint16 / llm.c / .txt tokens")
def _():
    cfg = G.GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=256, block_size=8, bias=False,
                      hyper_conn_type="mhc_lite", hyper_conn_n=3)
    m = G.GPT(cfg, perms={0: [(0, 1, 2), (1, 2, 0)]})
    gen = torch.Generator().manual_seed(240)
    G.init_weights(m, gen)
    mg.perturb_parameters(m, gen)
    sd = m.state_dict()
    sd = {("lm_head.weight" if k == "transformer.wte.weight" else k): v for k, v in sd.items()}
    meta_cfg = dict(cfg.to_dict(), dropout=0.0)      # nanoGPT configs carry extra keys
    B_, T_, K_ = 2, 5, 3
    toks = torch.randint(0, 256, (B_ * T_ * K_ + 7,), generator=gen).numpy().astype(np.uint16)
    m32 = G.GPT(cfg, dtype=torch.float32, perms={0: [(0, 1, 2), (1, 2, 0)]})
    m32.load_state_dict({k: v for k, v in m.state_dict().items()})
    with torch.no_grad():
        ls = []
        for b in range(K_):
            w = [toks[j * T_:j * T_ + T_ + 1].astype(np.int64) for j in range(b * B_, b * B_ + B_)]
            w = torch.from_numpy(np.stack(w))
            ls.append(float(m32(w[:, :-1], w[:, 1:])[1]))
    want = sum(ls) / K_
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, "ck.safetensors")
        write_safetensors(ck, sd, {"config": json.dumps(meta_cfg)}, keep_int=True, float_dtype="F32")
        raw = os.path.join(d, "toks.bin")
        toks.astype("<u2").tofile(raw)
        shard = os.path.join(d, "shard.bin")
        hdr = np.zeros(256, dtype="<i4")
        hdr[:3] = [20240520, 1, len(toks)]
        with open(shard, "wb") as f:
            f.write(hdr.tobytes())
            f.write(toks.astype("<u2").tobytes())
        txt = os.path.join(d, "toks.txt")
        with open(txt, "wb") as f:
            f.write(toks.astype(np.uint8).tobytes())
        for path in (raw, shard, txt):
            buf, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
                rc = ckpt_loss.main(["--ckpt", ck, "--tokens", path, "--batch", str(B_),
                                     "--seq", str(T_), "--batches", str(K_)])
            assert rc == 0
            last = buf.getvalue().strip().splitlines()[-1]
            got = json.loads(last)["loss"]
            assert set(json.loads(last)) == {"loss"}
            close(got, want, 1e-6, path)
        assert ckpt_loss.read_tokens(shard)[1] == "llm.c" and ckpt_loss.read_tokens(txt)[1] == "bytes"
        # default --batches 1
        with contextlib.redirect_stdout(io.StringIO()) as buf, contextlib.redirect_stderr(io.StringIO()):
            ckpt_loss.main(["--ckpt", ck, "--tokens", raw, "--batch", str(B_), "--seq", str(T_)])
        close(json.loads(buf.getvalue().strip().splitlines()[-1])["loss"], ls[0], 1e-6, "K=1")


print("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
sys.exit(1 if RESULTS["failed"] else 0)
