#!/usr/bin/python3
"""Self-check of the PyTorch GPT reference (gpt.py, make_gpt_fixtures.py and ckpt_loss.py)
against SPEC.md §3-5: parameter names and shapes, plain GPT-2 logits, gradcheck, AdamW by hand,
the fixtures' contents and ckpt_loss.py's loss. The connections are checked by
test_reference_selfcheck.py.

    /usr/bin/python3 tests/reference/test_reference_selfcheck_gpt.py

Prints one line per check and a final line "N passed, M failed"; exits
non-zero if anything failed.
"""

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as Fn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ckpt_loss  # noqa: E402
import gpt as G  # noqa: E402
from hyper_conn import HyperConnection  # noqa: E402
import make_gpt_fixtures as mg  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from selfcheck_harness import F64, check, close, finish, functional_call  # noqa: E402

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


finish()
