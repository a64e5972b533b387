"""Independent PyTorch reference of the GPT model of SPEC section 3 with hyper-connections.

Written from /work/shared/SPEC.md (sections 3, 4, 5) and hyper_conn.py only; a test oracle
for the C++ engine, so it favours the plainest formulation and relies on autograd.

    GPTConfig               nanoGPT field names + hyper_conn_type / hyper_conn_n / sinkhorn_iters /
                            cayley_iters
    GPT                     the model; state_dict() names and shapes are exactly SPEC section 4
    load_mhc_state_dict     strict load that also accepts the tied head under 'lm_head.weight'
    init_weights            SPEC section 3 initialisation
    param_groups            AdamW groups, decay set of SPEC section 5
    get_lr, train_step      nanoGPT's schedule, one optimizer step with gradient accumulation

Layout (nanoGPT names):

    transformer.wte, transformer.wpe          embeddings (the LM head is tied to wte)
    transformer.h.{i}.branch_attn = [LayerNorm, CausalSelfAttention(c_attn, c_proj)]
    transformer.h.{i}.branch_mlp  = [LayerNorm, MLP(c_fc, c_proj)]
    transformer.h.{i}.hc_attn / hc_mlp        HyperConnection sites 2i and 2i+1
    transformer.ln_f                          applied to every stream, then the streams are summed
"""

import dataclasses
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyper_conn import HyperConnection  # noqa: E402

HYPER_CONN_TYPES = ("none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc")
# GPTConfig type -> hyper_conn.py variant name
_VARIANT = {"none": "residual", "hc": "hc", "mhc": "mhc", "mhc_lite": "mhc-lite",
            "kromhc": "kromhc", "jpmhc": "jpmhc", "ohc": "ohc"}
_ALIASES = {"residual": "none", "mhc-lite": "mhc_lite", "mhclite": "mhc_lite"}

LN_EPS = 1e-5
INIT_STD = 0.02


def canonical_type(t):
    t = str(t).strip().lower()
    t = _ALIASES.get(t, t)
    if t not in HYPER_CONN_TYPES:
        raise ValueError("unknown hyper_conn_type %r (one of %s)" % (t, ", ".join(HYPER_CONN_TYPES)))
    return t


def _as_bool(v):
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "1", "yes"):
            return True
        if s in ("false", "0", "no", ""):
            return False
        raise ValueError("not a boolean: %r" % (v,))
    return bool(v)


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------

@dataclasses.dataclass
class GPTConfig:
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    vocab_size: int = 64
    block_size: int = 16
    bias: bool = False
    hyper_conn_type: str = "mhc_lite"
    hyper_conn_n: int = 4
    sinkhorn_iters: int = 20
    cayley_iters: int = 2              # jpmhc: the paper's fixed-point iterations; 0 = exact

    def __post_init__(self):
        self.hyper_conn_type = canonical_type(self.hyper_conn_type)
        self.n_layer = int(self.n_layer)
        self.n_head = int(self.n_head)
        self.n_embd = int(self.n_embd)
        self.vocab_size = int(self.vocab_size)
        self.block_size = int(self.block_size)
        self.bias = _as_bool(self.bias)
        self.hyper_conn_n = int(self.hyper_conn_n)
        self.sinkhorn_iters = int(self.sinkhorn_iters)
        self.cayley_iters = int(self.cayley_iters)
        if self.hyper_conn_type == "none":
            self.hyper_conn_n = 1          # plain residual: one stream, whatever was asked
        if self.n_embd % self.n_head != 0:
            raise ValueError("n_embd %d not divisible by n_head %d" % (self.n_embd, self.n_head))
        if self.hyper_conn_n < 1:
            raise ValueError("hyper_conn_n must be >= 1")

    @property
    def n_streams(self):
        return self.hyper_conn_n

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d, strict=False):
        """Build from a dict (e.g. a checkpoint's metadata). Unknown keys are ignored unless
        strict (nanoGPT configs carry e.g. 'dropout'); they are returned as the second value."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = {k: v for k, v in d.items() if k not in names}
        if strict and unknown:
            raise ValueError("unknown config keys: %s" % sorted(unknown))
        return cls(**{k: v for k, v in d.items() if k in names}), unknown

    @classmethod
    def from_json(cls, s, strict=False):
        return cls.from_dict(json.loads(s), strict=strict)


# ----------------------------------------------------------------------------
# Building blocks (also used by the per-op fixtures)
# ----------------------------------------------------------------------------

class LayerNorm(nn.Module):
    """LayerNorm over the last dim with an optional bias (torch 1.13's nn.LayerNorm has no
    bias=False). eps 1e-5, biased variance."""

    def __init__(self, ndim, bias, dtype=torch.float64):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(ndim, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, LN_EPS)


def gelu_exact(x):
    """0.5 x (1 + erf(x / sqrt 2))"""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def causal_attention(qkv, n_head):
    """qkv (B, T, 3C) -> (B, T, C): causal multi-head attention before c_proj.

    q, k, v are the consecutive C-wide chunks of the last dim, in that order; head h uses
    channels [h*hd, (h+1)*hd) of each (hd = C / n_head); scores scaled by 1/sqrt(hd);
    the heads' outputs are concatenated in head order.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    hd = C // n_head
    q, k, v = qkv.split(C, dim=-1)
    q = q.reshape(B, T, n_head, hd).transpose(1, 2)          # (B, H, T, hd)
    k = k.reshape(B, T, n_head, hd).transpose(1, 2)
    v = v.reshape(B, T, n_head, hd).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # (B, H, T, T)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=qkv.device))
    att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1)
    y = att @ v                                               # (B, H, T, hd)
    return y.transpose(1, 2).reshape(B, T, C)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, dtype=torch.float64):
        super().__init__()
        C = cfg.n_embd
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(C, 3 * C, bias=cfg.bias, dtype=dtype)
        self.c_proj = nn.Linear(C, C, bias=cfg.bias, dtype=dtype)

    def forward(self, x):
        return self.c_proj(causal_attention(self.c_attn(x), self.n_head))


class MLP(nn.Module):
    def __init__(self, cfg, dtype=torch.float64):
        super().__init__()
        C = cfg.n_embd
        self.c_fc = nn.Linear(C, 4 * C, bias=cfg.bias, dtype=dtype)
        self.c_proj = nn.Linear(4 * C, C, bias=cfg.bias, dtype=dtype)

    def forward(self, x):
        return self.c_proj(gelu_exact(self.c_fc(x)))


def apply_site(site, X, branch):
    """One hyper-connection site: u = sum_s H_pre[s] X_s, y = branch(u),
    X'_t = sum_s H_res[s][t] X_s + H_post[t] y.  site None = plain residual (n = 1).
    Returns (X', (H_pre, H_res, H_post) or None)."""
    if site is None:
        return X + branch(X[..., 0, :]).unsqueeze(-2), None
    H_pre, H_res, H_post = site.coefficients(X)          # coefficients computed once per site
    dt = H_res.dtype
    Xc = X.to(dt)
    u = torch.einsum("...s,...sc->...c", H_pre, Xc)
    y = branch(u).to(dt)
    Xo = torch.einsum("...st,...sc->...tc", H_res, Xc) + H_post.unsqueeze(-1) * y.unsqueeze(-2)
    return Xo, (H_pre, H_res, H_post)


class Block(nn.Module):
    def __init__(self, cfg, layer, perms=None, dtype=torch.float64):
        super().__init__()
        C = cfg.n_embd
        self.branch_attn = nn.Sequential(LayerNorm(C, cfg.bias, dtype), CausalSelfAttention(cfg, dtype))
        self.branch_mlp = nn.Sequential(LayerNorm(C, cfg.bias, dtype), MLP(cfg, dtype))
        perms = perms or {}
        if cfg.hyper_conn_type == "none":
            self.hc_attn = None
            self.hc_mlp = None
        else:
            self.hc_attn = make_gpt_site(cfg, 2 * layer, perms.get(2 * layer), dtype)
            self.hc_mlp = make_gpt_site(cfg, 2 * layer + 1, perms.get(2 * layer + 1), dtype)

    def forward(self, X, capture=None):
        X, c1 = apply_site(self.hc_attn, X, self.branch_attn)
        X, c2 = apply_site(self.hc_mlp, X, self.branch_mlp)
        if capture is not None:
            capture.extend([c1, c2])
        return X


def make_gpt_site(cfg, site_index, perms=None, dtype=torch.float64):
    variant = _VARIANT[cfg.hyper_conn_type]
    if variant != "mhc-lite":
        perms = None
    return HyperConnection(variant, cfg.hyper_conn_n, cfg.n_embd, site_index=site_index,
                           sinkhorn_iters=cfg.sinkhorn_iters, perms=perms, dtype=dtype,
                           cayley_iters=cfg.cayley_iters)


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------

class GPT(nn.Module):
    """GPT of SPEC section 3.

    perms: optional {site_index: list of permutations} for mhc_lite (default: all n!).
    The LM head is tied to transformer.wte.weight and has no state_dict entry of its own.
    """

    def __init__(self, cfg, perms=None, dtype=torch.float64):
        super().__init__()
        if isinstance(cfg, dict):
            cfg, _ = GPTConfig.from_dict(cfg)
        self.config = cfg
        C = cfg.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, C, dtype=dtype),
            wpe=nn.Embedding(cfg.block_size, C, dtype=dtype),
            h=nn.ModuleList([Block(cfg, i, perms, dtype) for i in range(cfg.n_layer)]),
            ln_f=LayerNorm(C, cfg.bias, dtype),
        ))
        self.capture = None   # set to a list to record (H_pre, H_res, H_post) of every site

    @property
    def lm_head_weight(self):
        return self.transformer.wte.weight

    def sites(self):
        """[(site_index, 'transformer.h.{i}.hc_attn', module), ...] (empty for 'none')."""
        out = []
        for i, blk in enumerate(self.transformer.h):
            if blk.hc_attn is not None:
                out.append((2 * i, "transformer.h.%d.hc_attn" % i, blk.hc_attn))
                out.append((2 * i + 1, "transformer.h.%d.hc_mlp" % i, blk.hc_mlp))
        return out

    def set_site_perms(self, site_index, perms):
        """Rebuild the mhc_lite site with an explicit permutation list (parameters reset to
        their initial values; load a state_dict afterwards)."""
        if self.config.hyper_conn_type != "mhc_lite":
            raise ValueError("permutation lists exist only for mhc_lite")
        blk = self.transformer.h[site_index // 2]
        old = blk.hc_attn if site_index % 2 == 0 else blk.hc_mlp
        dtype = old.static_alpha.dtype
        new = make_gpt_site(self.config, site_index, perms, dtype).to(old.static_alpha.device)
        if site_index % 2 == 0:
            blk.hc_attn = new
        else:
            blk.hc_mlp = new

    def forward(self, idx, targets=None):
        cfg = self.config
        B, T = idx.shape
        if T > cfg.block_size:
            raise ValueError("sequence length %d > block_size %d" % (T, cfg.block_size))
        wte = self.transformer.wte.weight
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        e = self.transformer.wte(idx) + self.transformer.wpe(pos)         # (B, T, C)
        n = cfg.hyper_conn_n
        X = e.unsqueeze(-2).expand(B, T, n, cfg.n_embd)                   # X_s = e for every s
        for blk in self.transformer.h:
            X = blk(X, self.capture)
        x = self.transformer.ln_f(X).sum(dim=-2)                          # ln_f per stream, summed
        logits = x.to(wte.dtype) @ wte.t()                                # tied LM head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


# ----------------------------------------------------------------------------
# Loading (strict, tied head under either name)
# ----------------------------------------------------------------------------

def _perm_rows(t, n):
    tf = torch.as_tensor(t)
    if tf.is_floating_point():
        if not torch.equal(tf, tf.round()):
            raise ValueError("perms buffer holds non-integer values")
    tl = tf.to(torch.long)
    if tl.dim() != 2 or tl.shape[1] != n:
        raise ValueError("perms buffer must be (K, %d), got %s" % (n, tuple(tl.shape)))
    return tl


def load_mhc_state_dict(model, tensors):
    """Strict load of a SPEC section 4 tensor dict into model.

    - 'lm_head.weight' is accepted in place of 'transformer.wte.weight' (both may be present
      only if they are equal).
    - mhc_lite 'perms' buffers (any numeric dtype, integral values) may hold a different
      permutation list than the model's: the site is rebuilt with that list first.
    - Any missing or unexpected key, or a shape mismatch, is an error.
    """
    sd = dict(tensors)
    if "lm_head.weight" in sd:
        head = sd.pop("lm_head.weight")
        if "transformer.wte.weight" in sd:
            if not torch.equal(torch.as_tensor(sd["transformer.wte.weight"]).double(),
                               torch.as_tensor(head).double()):
                raise ValueError("lm_head.weight and transformer.wte.weight both present and differ")
        else:
            sd["transformer.wte.weight"] = head
    n = model.config.hyper_conn_n
    for site_index, prefix, site in model.sites():
        key = prefix + ".perms"
        if key in sd:
            if not hasattr(site, "perms"):
                raise KeyError("unexpected key %s" % key)
            p = _perm_rows(sd[key], n)
            sd[key] = p
            if p.shape != site.perms.shape or not torch.equal(p, site.perms.cpu()):
                model.set_site_perms(site_index, [tuple(int(i) for i in row) for row in p.tolist()])
    missing, unexpected = [], []
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise KeyError("state_dict mismatch: missing %s, unexpected %s" % (missing, unexpected))
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError("%s: shape %s, model has %s" % (k, tuple(sd[k].shape), tuple(v.shape)))
    model.load_state_dict(sd, strict=True)
    return model


def gpt_from_tensors(cfg, tensors, dtype=torch.float64):
    """Build a GPT for cfg and load tensors into it (mhc_lite perms taken from the tensors)."""
    model = GPT(cfg, dtype=dtype)
    return load_mhc_state_dict(model, tensors)


# ----------------------------------------------------------------------------
# Initialisation (SPEC 3)
# ----------------------------------------------------------------------------

def init_weights(model, generator):
    """Linear and embedding weights N(0, 0.02), every c_proj.weight N(0, 0.02/sqrt(2 n_layer)),
    linear biases 0, LayerNorm weight 1 / bias 0, connection parameters at their SPEC 2 values.
    Draws in float64 from `generator`, in named_parameters order, then casts."""
    L = model.config.n_layer
    proj_std = INIT_STD / math.sqrt(2 * L)
    with torch.no_grad():
        for site_index, prefix, site in model.sites():
            perms = None
            if hasattr(site, "perms"):
                perms = [tuple(int(i) for i in r) for r in site.perms.tolist()]
            fresh = HyperConnection(site.variant, site.n, site.C, site_index=site.site_index,
                                    sinkhorn_iters=site.sinkhorn_iters, perms=perms,
                                    cayley_iters=site.cayley_iters)
            for name, p in site.named_parameters():
                p.copy_(dict(fresh.named_parameters())[name])
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                std = proj_std if name.endswith("c_proj") else INIT_STD
                w = torch.randn(mod.weight.shape, generator=generator, dtype=torch.float64) * std
                mod.weight.copy_(w)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.Embedding):
                w = torch.randn(mod.weight.shape, generator=generator, dtype=torch.float64) * INIT_STD
                mod.weight.copy_(w)
            elif isinstance(mod, LayerNorm):
                mod.weight.fill_(1.0)
                if mod.bias is not None:
                    mod.bias.zero_()
    return model


# ----------------------------------------------------------------------------
# Optimizer groups and schedule (SPEC 5, nanoGPT)
# ----------------------------------------------------------------------------

_DECAY_SUFFIXES = ("c_attn.weight", "c_proj.weight", "c_fc.weight",
                   "dynamic_alpha_fn", "dynamic_beta_fn")
_DECAY_EXACT = ("transformer.wte.weight", "transformer.wpe.weight")
_NODECAY_SUFFIXES = (".bias", "0.weight", "ln_f.weight", "static_alpha", "static_beta",
                     "norm.gamma", "pre_branch_scale", "residual_scale", "h_post_scale",
                     "dynamic_alpha_scale", "dynamic_beta_scale")


def is_decayed(name):
    if name in _DECAY_EXACT or name.endswith(_DECAY_SUFFIXES):
        return True
    if name.endswith(_NODECAY_SUFFIXES):
        return False
    raise ValueError("parameter %s is in no known class" % name)


def decay_split(model):
    """(decay names, no-decay names) in named_parameters order."""
    dec, nodec = [], []
    for name, _ in model.named_parameters():
        (dec if is_decayed(name) else nodec).append(name)
    return dec, nodec


def param_groups(model, weight_decay=0.1):
    """[{params: decayed, weight_decay}, {params: the rest, weight_decay: 0}] (SPEC 5): decay the
    transformer's weight matrices (c_attn / c_proj / c_fc weights), the embeddings (wte, wpe)
    and the connections' dynamic_alpha_fn / dynamic_beta_fn; nothing else."""
    params = dict(model.named_parameters())
    dec, nodec = decay_split(model)
    return [{"params": [params[k] for k in dec], "weight_decay": float(weight_decay)},
            {"params": [params[k] for k in nodec], "weight_decay": 0.0}]


def _get(cfg, key):
    return cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)


def get_lr(it, cfg):
    """nanoGPT's schedule: linear warm-up, cosine decay to min_lr, then min_lr."""
    learning_rate = _get(cfg, "learning_rate")
    min_lr = _get(cfg, "min_lr")
    warmup_iters = _get(cfg, "warmup_iters")
    lr_decay_iters = _get(cfg, "lr_decay_iters")
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def make_optimizer(model, cfg):
    """torch.optim.AdamW over param_groups, betas (beta1, beta2), eps 1e-8 (single-tensor path)."""
    groups = param_groups(model, _get(cfg, "weight_decay"))
    return torch.optim.AdamW(groups, lr=_get(cfg, "learning_rate"),
                             betas=(_get(cfg, "beta1"), _get(cfg, "beta2")), eps=1e-8,
                             foreach=False)


def global_grad_norm(model):
    gs = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not gs:
        return 0.0
    return torch.norm(torch.stack([torch.norm(g, 2.0) for g in gs]), 2.0).item()


def train_step(model, optimizer, batches, cfg, it):
    """One optimizer step: gradient accumulation over `batches` [(idx, targets), ...] (each loss
    divided by len(batches)), clip_grad_norm_ (skipped if grad_clip == 0), lr = get_lr(it) in
    every group, optimizer.step(). Returns (mean micro-batch loss, grad norm before clipping)."""
    optimizer.zero_grad(set_to_none=True)
    nb = len(batches)
    total = 0.0
    for idx, targets in batches:
        _, loss = model(idx, targets)
        loss = loss / nb
        loss.backward()
        total += loss.item()
    grad_clip = _get(cfg, "grad_clip")
    if grad_clip and grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    else:
        norm = global_grad_norm(model)
    lr = get_lr(it, cfg)
    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm
