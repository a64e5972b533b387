#!/usr/bin/python3
"""Write the GPT-level safetensors fixtures (model, optimizer and per-op parity).

    /usr/bin/python3 tests/reference/make_gpt_fixtures.py --out DIR [--quiet]

Float tensors are F64 with fp32-representable inputs and parameters; token ids and mhc-lite
`perms` buffers are I64.

(a) gpt_{type}.safetensors, type in none, hc, mhc, mhc_lite, kromhc, jpmhc, ohc, and
    gpt_mhc_lite_bias, gpt_jpmhc_cayley0 (the exact transform):
    every state_dict entry (SPEC 4 names), idx (B,T), targets (B,T), loss (), logits (B,T,V),
    grad.<param>, f32err.loss, f32err.logits, f32err.grad.<param>.
    Metadata: config (JSON, nanoGPT names + hyper_conn_*), B, T, structural_zero_grads (JSON
    list of grad.* names that are exactly 0 in exact arithmetic, so the stored value is rounding
    noise: compare those with an absolute tolerance; see structural_zero_grads()).
(b) gpt_{type}_adamw.safetensors: initial parameters (and perms), idx (S*G,B,T),
    targets (S*G,B,T), losses (S), grad_norms (S, before clipping), lrs (S), final.<param>.
    Metadata: config, train (JSON), B, T.
(c) op_{layernorm,linear,gelu,attention,crossentropy,encoder}.safetensors: inputs, upstream,
    out, grad.<input> of loss = sum(out * upstream). Metadata: op (+ eps / n_head).
"""

import copy
import json
import os
import sys
import zlib

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt as G  # noqa: E402
import make_conn_fixtures as mk  # noqa: E402
from safetensors_io import write_fixtures  # noqa: E402

F64 = torch.float64
TYPES = ("none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc")
B, T = 2, 16
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, sinkhorn_iters=20)
HC_N = 4

TRAIN = dict(learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=4,
             weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=0.5,
             gradient_accumulation_steps=2, batch_size=B)
STEPS = 5


def seed_of(name):
    return zlib.crc32(name.encode("utf-8"))


def tiny_config(hc_type, bias=False, cayley_iters=2):
    return G.GPTConfig(hyper_conn_type=hc_type, hyper_conn_n=1 if hc_type == "none" else HC_N,
                       bias=bias, cayley_iters=cayley_iters, **TINY)


def round_f32_(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())


def perturb_parameters(model, gen):
    """Move every parameter away from its initial value (so every path matters), then round
    everything to fp32-representable values."""
    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=F64) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".hc_attn." in name or ".hc_mlp." in name:
                continue
            shape = tuple(p.shape)
            if name.endswith(("wte.weight", "wpe.weight")):
                p.add_(normal(shape, 0.01))
            elif name.endswith(("c_attn.weight", "c_fc.weight", "c_proj.weight")):
                p.add_(normal(shape, 0.01))
            elif name.endswith(".bias"):
                p.add_(normal(shape, 0.02))
            elif name.endswith(("0.weight", "ln_f.weight")):          # LayerNorm gains
                p.add_(normal(shape, 0.1))
            else:
                raise RuntimeError("unhandled parameter %s" % name)
        for _, _, site in model.sites():
            mk.randomise_parameters(site, gen)
    round_f32_(model)


def make_model(hc_type, bias, gen, cayley_iters=2):
    cfg = tiny_config(hc_type, bias, cayley_iters)
    model = G.GPT(cfg, dtype=F64)
    G.init_weights(model, gen)
    perturb_parameters(model, gen)
    return model


def token_batch(gen, shape, V):
    """idx = s[..., :T], targets = s[..., 1:] of a random token stream s (..., T+1)."""
    s = torch.randint(0, V, tuple(shape[:-1]) + (shape[-1] + 1,), generator=gen)
    return s[..., :-1].contiguous(), s[..., 1:].contiguous()


def relerr(a, b):
    den = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / den if den > 0 else diff


def run_model(model, idx, targets):
    model.zero_grad(set_to_none=True)
    logits, loss = model(idx, targets)
    loss.backward()
    out = {"loss": loss.detach(), "logits": logits.detach()}
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.detach().clone()
    return out


def structural_zero_grads(cfg):
    """Gradients that are exactly zero in exact arithmetic (autograd returns rounding noise).

    At site 0 every stream holds the same embedding e, so X'_t = (sum_s H_res[s][t]) e + ...;
    with an exactly doubly-stochastic H_res (mhc_lite, kromhc) the column sums are 1 whatever
    the residual logits, so nothing downstream depends on them: residual_scale's gradient is
    0 (the res entries of static_alpha / columns of dynamic_alpha_fn too, but those tensors
    also hold the non-zero H_pre entries)."""
    if cfg.hyper_conn_type in ("mhc_lite", "kromhc") and cfg.n_layer > 0:
        return ["grad.transformer.h.0.hc_attn.residual_scale"]
    return []


def config_meta(cfg):
    return json.dumps(cfg.to_dict())


# ----------------------------------------------------------------------------
# (a) model parity
# ----------------------------------------------------------------------------

def make_model_case(hc_type, bias=False, cayley_iters=2):
    name = "gpt_%s%s%s" % (hc_type, "_bias" if bias else "",
                           "_cayley%d" % cayley_iters if cayley_iters != 2 else "")
    gen = torch.Generator().manual_seed(seed_of(name))
    model = make_model(hc_type, bias, gen, cayley_iters)
    cfg = model.config
    idx, targets = token_batch(gen, (B, T), cfg.vocab_size)

    model.capture = []
    res = run_model(model, idx, targets)
    coeffs = model.capture
    model.capture = None
    if hc_type != "none":                                  # H_res far from identity everywhere
        eye = torch.eye(cfg.hyper_conn_n, dtype=F64)
        for k, (_, H_res, _) in enumerate(coeffs):
            dev = (H_res.detach() - eye).abs().max().item()
            if dev < 0.1:
                raise RuntimeError("%s site %d: H_res too close to identity (%.3g)" % (name, k, dev))
    zero = structural_zero_grads(cfg)
    for k, v in res.items():
        if k.startswith("grad.") and k not in zero and v.abs().max().item() < 1e-10:
            raise RuntimeError("%s: %s vanishes" % (name, k))
        if k in zero and v.abs().max().item() > 1e-14 * res["grad.transformer.wte.weight"].abs().max():
            raise RuntimeError("%s: %s should vanish" % (name, k))

    m32 = copy.deepcopy(model).float()
    res32 = run_model(m32, idx, targets)
    f32err = [("f32err." + k, torch.tensor(relerr(res32[k], v), dtype=F64)) for k, v in res.items()]

    tensors = list(model.state_dict().items())
    tensors += [("idx", idx), ("targets", targets), ("loss", res["loss"]), ("logits", res["logits"])]
    tensors += [(k, v) for k, v in res.items() if k.startswith("grad.")]
    tensors += f32err
    meta = {"config": config_meta(cfg), "B": str(B), "T": str(T),
            "structural_zero_grads": json.dumps(zero)}
    return name, tensors, meta


# ----------------------------------------------------------------------------
# (b) optimizer parity
# ----------------------------------------------------------------------------

def make_adamw_case(hc_type):
    name = "gpt_%s_adamw" % hc_type
    gen = torch.Generator().manual_seed(seed_of(name))
    model = make_model(hc_type, False, gen)
    cfg = model.config
    GA = TRAIN["gradient_accumulation_steps"]
    idx, targets = token_batch(gen, (STEPS * GA, B, T), cfg.vocab_size)
    initial = [(k, v.detach().clone()) for k, v in model.state_dict().items()]

    opt = G.make_optimizer(model, TRAIN)
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        batches = [(idx[GA * s + m], targets[GA * s + m]) for m in range(GA)]
        loss, norm = G.train_step(model, opt, batches, TRAIN, s)
        losses.append(loss)
        norms.append(norm)
        lrs.append(G.get_lr(s, TRAIN))
    if not any(nm > TRAIN["grad_clip"] for nm in norms):
        raise RuntimeError("%s: gradient clipping never triggered (norms %s)" % (name, norms))

    tensors = list(initial)
    tensors += [("idx", idx), ("targets", targets),
                ("losses", torch.tensor(losses, dtype=F64)),
                ("grad_norms", torch.tensor(norms, dtype=F64)),
                ("lrs", torch.tensor(lrs, dtype=F64))]
    tensors += [("final." + k, p.detach().clone()) for k, p in model.named_parameters()]
    meta = {"config": config_meta(cfg), "train": json.dumps(TRAIN), "B": str(B), "T": str(T)}
    return name, tensors, meta


# ----------------------------------------------------------------------------
# (c) per-op fixtures
# ----------------------------------------------------------------------------

def _f32(t):
    """Round to the nearest fp32-representable value (kept as float64)."""
    return t.float().double()


def _randn(gen, *shape, std=1.0):
    return _f32(torch.randn(*shape, generator=gen, dtype=F64) * std)


def _grads(fn, inputs, upstream):
    """out = fn(**inputs); grads of sum(out * upstream) w.r.t. every float input."""
    leaves = {k: (v.clone().requires_grad_(True) if v.is_floating_point() else v)
              for k, v in inputs.items()}
    out = fn(**leaves)
    (out * upstream).sum().backward()
    res = [("upstream", upstream), ("out", out.detach())]
    res += [("grad." + k, v.grad.detach()) for k, v in leaves.items() if v.is_floating_point()]
    return res


def op_layernorm(gen):
    N, C = 6, 8
    x = _f32(_randn(gen, N, C) * 3 + 0.5)
    inputs = {"x": x, "weight": _f32(1.0 + _randn(gen, C, std=0.3)), "bias": _randn(gen, C, std=0.3)}
    up = _randn(gen, N, C)
    fn = lambda x, weight, bias: F.layer_norm(x, (C,), weight, bias, G.LN_EPS)  # noqa: E731
    return list(inputs.items()) + _grads(fn, inputs, up), {"op": "layernorm", "eps": "1e-05"}


def op_linear(gen):
    N, IC, OC = 5, 7, 6
    inputs = {"x": _randn(gen, N, IC), "weight": _randn(gen, OC, IC, std=0.5),
              "bias": _randn(gen, OC, std=0.5)}
    up = _randn(gen, N, OC)
    fn = lambda x, weight, bias: x @ weight.t() + bias  # noqa: E731
    return list(inputs.items()) + _grads(fn, inputs, up), {"op": "linear"}


def op_gelu(gen):
    N = 50
    x = _f32(torch.linspace(-6.0, 6.0, N, dtype=F64) + _randn(gen, N, std=0.05))
    up = _randn(gen, N)
    return [("x", x)] + _grads(G.gelu_exact, {"x": x}, up), {"op": "gelu"}


def op_attention(gen):
    Bq, Tq, C, H = 2, 5, 8, 2
    qkv = _randn(gen, Bq, Tq, 3 * C)
    up = _randn(gen, Bq, Tq, C)
    fn = lambda qkv: G.causal_attention(qkv, H)  # noqa: E731
    return [("qkv", qkv)] + _grads(fn, {"qkv": qkv}, up), {"op": "attention", "n_head": str(H)}


def op_crossentropy(gen):
    N, V = 7, 11
    logits = _randn(gen, N, V, std=2.0)
    targets = torch.randint(0, V, (N,), generator=gen)
    up = torch.tensor(1.0, dtype=F64)
    fn = lambda logits, targets: F.cross_entropy(logits, targets)  # noqa: E731
    res = _grads(fn, {"logits": logits, "targets": targets}, up)
    return [("logits", logits), ("targets", targets)] + res, {"op": "crossentropy"}


def op_encoder(gen):
    V, C, Bq, Tq = 11, 8, 2, 5
    wte, wpe = _randn(gen, V, C), _randn(gen, Tq, C)
    idx = torch.randint(0, V, (Bq, Tq), generator=gen)
    idx[1, 3] = idx[0, 1]                       # repeated tokens: gradient rows accumulate
    idx[1, 4] = idx[0, 1]
    up = _randn(gen, Bq, Tq, C)
    fn = lambda wte, wpe, idx: wte[idx] + wpe[torch.arange(idx.shape[1])]  # noqa: E731
    res = _grads(fn, {"wte": wte, "wpe": wpe, "idx": idx}, up)
    return [("wte", wte), ("wpe", wpe), ("idx", idx)] + res, {"op": "encoder"}


def op_stream_sum(gen):
    N, n, C = 4, 3, 6
    X = _randn(gen, N, n, C)
    up = _randn(gen, N, C)
    fn = lambda X: X.sum(dim=1)  # noqa: E731  (SPEC §3: the streams are summed before the LM head)
    return [("X", X)] + _grads(fn, {"X": X}, up), {"op": "stream_sum"}


OPS = {"layernorm": op_layernorm, "linear": op_linear, "gelu": op_gelu,
       "attention": op_attention, "crossentropy": op_crossentropy, "encoder": op_encoder,
       "stream_sum": op_stream_sum}


def make_op_case(op):
    name = "op_" + op
    gen = torch.Generator().manual_seed(seed_of(name))
    tensors, meta = OPS[op](gen)
    return name, tensors, meta


# ----------------------------------------------------------------------------

def all_cases():
    """(name, thunk) for every fixture, in write order."""
    cases = [("gpt_" + t, (lambda t=t: make_model_case(t))) for t in TYPES]
    cases.append(("gpt_mhc_lite_bias", lambda: make_model_case("mhc_lite", bias=True)))
    cases.append(("gpt_jpmhc_cayley0", lambda: make_model_case("jpmhc", cayley_iters=0)))
    cases += [("gpt_%s_adamw" % t, (lambda t=t: make_adamw_case(t))) for t in TYPES]
    cases += [("op_" + op, (lambda op=op: make_op_case(op))) for op in OPS]
    return cases


def main(argv=None):
    def made(expect, thunk):  # the case's own name must be the one it is listed under
        name, tensors, meta = thunk()
        assert name == expect
        return tensors, meta
    cases = [(name, lambda name=name, thunk=thunk: made(name, thunk)) for name, thunk in all_cases()]
    return write_fixtures(__doc__.splitlines()[0], cases, argv, keep_int=True)


if __name__ == "__main__":
    sys.exit(main())
