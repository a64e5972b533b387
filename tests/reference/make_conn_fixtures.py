#!/usr/bin/python3
"""Write one safetensors fixture per hyper-connection test case.

    /usr/bin/python3 tests/reference/make_conn_fixtures.py --out DIR

Every file holds, in float64: the inputs X (N,n,C), y (N,C), the upstream
gradients g_u (N,C), g_Xout (N,n,C); every parameter of the site under its
SPEC section 4 name (random, non-initial values); `perms` (K,n) for mhc-lite;
the outputs u, Xout, H_pre, H_res (N,n,n, indexed [s][t]), H_post; and the
gradients grad.X, grad.y, grad.<param> of
    loss = sum(u * g_u) + sum(Xout * g_Xout),  u = pre(X), Xout = post(X, y).
"""

import copy
import math
import os
import sys
import zlib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyper_conn import HyperConnection, all_permutations  # noqa: E402
from safetensors_io import write_fixtures  # noqa: E402

N_TOKENS = 6
C_DIM = 8

# (variant, n, site_index, iters, K or None)
#   iters: sinkhorn_iters for mhc, cayley_iters for jpmhc (0: the exact transform), else unused (20).
#   K = None: mhc-lite uses all n! permutations;  K = int: a seeded subset.
CASES = [
    ("residual", 1, 0, 20, None),
    ("hc", 1, 0, 20, None),
    ("hc", 2, 1, 20, None),
    ("hc", 3, 1, 20, None),
    ("hc", 4, 0, 20, None),
    ("mhc", 1, 0, 20, None),
    ("mhc", 2, 0, 20, None),
    ("mhc", 3, 1, 20, None),
    ("mhc", 4, 1, 20, None),
    ("mhc", 4, 0, 5, None),
    ("mhc-lite", 1, 0, 20, None),
    ("mhc-lite", 2, 1, 20, None),
    ("mhc-lite", 3, 1, 20, None),
    ("mhc-lite", 4, 0, 20, None),
    ("mhc-lite", 4, 1, 20, 7),
    ("mhc-lite", 8, 1, 20, 12),
    ("kromhc", 1, 0, 20, None),
    ("kromhc", 2, 1, 20, None),
    ("kromhc", 4, 1, 20, None),
    ("kromhc", 8, 0, 20, None),
    ("jpmhc", 1, 0, 2, None),
    ("jpmhc", 2, 1, 0, None),
    ("jpmhc", 2, 1, 2, None),
    ("jpmhc", 3, 1, 2, None),
    ("jpmhc", 4, 0, 0, None),
    ("jpmhc", 4, 1, 2, None),
    ("jpmhc", 4, 2, 1, None),
    ("jpmhc", 5, 3, 0, None),
    ("jpmhc", 8, 1, 0, None),
    ("jpmhc", 8, 0, 2, None),
    ("ohc", 4, 0, 20, None),
    ("ohc", 4, 1, 20, None),
]


def case_name(variant, n, iters, K, site_index=0):
    name = "conn_%s_n%d" % (variant, n)
    if variant == "ohc":                      # n is fixed: the cases differ by their site
        name += "_site%d" % site_index
    elif variant == "jpmhc":
        name += "_cayley%d" % iters
    elif iters != 20:
        name += "_iters%d" % iters
    if K is not None:
        name += "_K%d" % K
    return name


def random_perm_subset(n, K, gen):
    """Identity first, then K-1 distinct non-identity permutations of range(n)."""
    ident = tuple(range(n))
    chosen = [ident]
    seen = {ident}
    limit = math.factorial(n)
    if K > limit:
        raise ValueError("K=%d > n!=%d" % (K, limit))
    while len(chosen) < K:
        p = tuple(int(i) for i in torch.randperm(n, generator=gen))
        if p not in seen:
            seen.add(p)
            chosen.append(p)
    return chosen


def randomise_parameters(site, gen):
    """Non-initial parameters, so that every path of the site matters."""
    f64 = torch.float64

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=f64) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=f64)

    v, n = site.variant, site.n
    with torch.no_grad():
        for name, p in site.named_parameters():
            shape = tuple(p.shape)
            if name == "norm.gamma":
                p.copy_(normal(shape, 0.3))
            elif name in ("dynamic_alpha_fn", "dynamic_beta_fn"):
                fan_in = shape[0]
                p.copy_(normal(shape, 1.0 / math.sqrt(fan_in)))
            elif name == "residual_scale" and v == "ohc":
                # ohc's logits enter the quaternions undamped (jpmhc's are scaled by alpha = 0.1):
                # a scale near 1 would let one optimizer step turn the rotation by a radian
                p.copy_(uniform(shape, 0.05, 0.15))
            elif name in ("pre_branch_scale", "residual_scale", "h_post_scale",
                          "dynamic_alpha_scale", "dynamic_beta_scale"):
                p.copy_(uniform(shape, 0.5, 1.5))
            elif name == "static_beta":
                p.copy_(p + normal(shape, 0.5))
            elif name == "static_alpha":
                init = p.clone()
                if v == "mhc":
                    # pre column: init + noise; res logits: init/8 (0 / -1) + noise
                    init[:, 1:] = init[:, 1:] / 8.0
                elif v in ("mhc-lite", "kromhc"):
                    init[n:] = init[n:] / 8.0
                elif v == "jpmhc":
                    # M of a few units, so that alpha W / 2 is far from 0 and the exact transform
                    # and the fixed-point iterations differ clearly
                    init[n:] = normal((n * n,), 1.0)
                # hc: B_alpha (one-hot pre, identity res) + noise; ohc: l = 0 + noise
                p.copy_(init + normal(shape, 0.5))
            else:
                raise RuntimeError("unhandled parameter %s" % name)


def evaluate(site, X, y, g_u, g_Xout):
    """Outputs and gradients of loss = sum(u * g_u) + sum(Xout * g_Xout), in the site's dtype."""
    Xg = X.clone().requires_grad_(True)
    yg = y.clone().requires_grad_(True)
    site.zero_grad(set_to_none=True)
    u = site.pre(Xg)
    Xout = site.post(Xg, yg)
    loss = (u * g_u).sum() + (Xout * g_Xout).sum()
    loss.backward()
    out = {"u": u.detach(), "Xout": Xout.detach(), "grad.X": Xg.grad, "grad.y": yg.grad}
    for name, p in site.named_parameters():
        out["grad." + name] = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
    return out


def make_case(variant, n, site_index, iters, K, seed):
    gen = torch.Generator().manual_seed(seed)
    perms = None
    if variant == "mhc-lite":
        perms = all_permutations(n) if K is None else random_perm_subset(n, K, gen)
    sinkhorn_iters, cayley_iters = (20, iters) if variant == "jpmhc" else (iters, 2)
    site = HyperConnection(variant, n, C_DIM, site_index=site_index,
                           sinkhorn_iters=sinkhorn_iters, perms=perms, dtype=torch.float64,
                           cayley_iters=cayley_iters)
    randomise_parameters(site, gen)

    # Every input and parameter is fp32-representable, so the fp32 and fp64 runs of the C++ code
    # (and PyTorch's own fp32 run below) compute on exactly the numbers the fp64 reference used.
    with torch.no_grad():
        for p in site.parameters():
            p.copy_(p.float().double())
    N, C = N_TOKENS, C_DIM
    f64 = torch.float64

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=f64).float().double()

    X, y, g_u, g_Xout = randn(N, n, C), randn(N, C), randn(N, C), randn(N, n, C)
    results = evaluate(site, X, y, g_u, g_Xout)
    with torch.no_grad():
        H_pre, H_res, H_post = site.coefficients(X)
    results.update({"H_pre": H_pre, "H_res": H_res, "H_post": H_post})

    # PyTorch's own fp32 error on the same case: the floor an fp32 computation can reach on an
    # ill-conditioned quantity (a gradient that is a sum with heavy cancellation). The C++ fp32
    # parity test allows max(1e-5, 2 x this) per tensor.
    site32 = copy.deepcopy(site).float()
    res32 = evaluate(site32, X.float(), y.float(), g_u.float(), g_Xout.float())
    with torch.no_grad():
        res32.update(zip(("H_pre", "H_res", "H_post"), site32.coefficients(X.float())))
    f32err = []
    for name, ref in results.items():
        diff = (res32[name].double() - ref).abs().max().item()
        den = ref.abs().max().item()
        f32err.append(("f32err." + name, torch.tensor(diff / den if den > 0 else 0.0, dtype=f64)))

    if variant != "residual":
        dev = (H_res - torch.eye(n, dtype=f64)).abs().max().item()
        if n > 1 and dev < 0.1:
            raise RuntimeError("%s n=%d: H_res too close to identity (%.3g)" % (variant, n, dev))

    tensors = [("X", X), ("y", y), ("g_u", g_u), ("g_Xout", g_Xout)]
    params = list(site.named_parameters())
    for name, p in params:
        tensors.append((name, p.detach()))
    if variant == "mhc-lite":
        tensors.append(("perms", site.perms.to(f64)))
    tensors += list(results.items()) + f32err
    meta = {"variant": variant, "n": str(n), "C": str(C), "N": str(N),
            "site_index": str(site_index), "sinkhorn_iters": str(sinkhorn_iters),
            "cayley_iters": str(cayley_iters), "dtype": "float64"}
    return tensors, meta


def main(argv=None):
    cases = []
    for variant, n, site_index, iters, K in CASES:
        name = case_name(variant, n, iters, K, site_index)
        seed = zlib.crc32(name.encode("utf-8"))
        cases.append((name, lambda c=(variant, n, site_index, iters, K, seed): make_case(*c)))
    return write_fixtures(__doc__.splitlines()[0], cases, argv)


if __name__ == "__main__":
    sys.exit(main())
