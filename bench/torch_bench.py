#!/usr/bin/python3
"""Training throughput of the PyTorch reference model (tests/reference/gpt.py), the yardstick
for `mhc bench` (bench/side_by_side.py runs both).

    /usr/bin/python3 bench/torch_bench.py --threads 2 --steps 10 --warmup 2 \
        --variants none,mhc_lite --set n_layer=6 [--json]

Each variant runs in its own subprocess, so its peak RSS (getrusage ru_maxrss) is its own.
A step is exactly gpt.train_step: float32, AdamW over gpt.param_groups, clipping, the lr
schedule; the batches are seeded random tokens. tokens/s = tokens per step / median step time.
step_cpu_s_median (CPU seconds of all threads per step) shows how much of a busy machine a
variant actually got: wall time near CPU time / threads means it had its cores.
The default config is the mHC-lite authors' (6 layers, 6 heads, 384 wide, block 256, batch 8,
vocab 256, n = 4, no bias). The last line with --json is one JSON object (docs: schemas).

On a GPU (--device cuda) the model and batches live on the device, each step is timed between
two torch.cuda.synchronize() calls, device_peak_mb is torch.cuda.max_memory_allocated(), and the
attention is PyTorch's fused one (F.scaled_dot_product_attention, causal) where this PyTorch has
it. --dtype bf16 runs the forward under torch.autocast(bfloat16) with float32 weights, AdamW and
gradients: PyTorch's usual mixed precision (on the GPU only).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "tests", "reference")

VARIANTS = ("none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc")
ALIASES = {"residual": "none", "mhc-lite": "mhc_lite", "mhclite": "mhc_lite"}

# The authors' config; model keys as GPTConfig / model_config_to_json spells them.
MODEL_DEFAULTS = {"n_layer": 6, "n_head": 6, "n_embd": 384, "vocab_size": 256, "block_size": 256,
                  "bias": False, "hyper_conn_n": 4, "sinkhorn_iters": 20, "cayley_iters": 2}
# Training keys that shape a step (the lr only moves numbers, not time). mhc's defaults.
TRAIN_DEFAULTS = {"batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 2e-3,
                  "min_lr": 2e-4, "warmup_iters": 100, "lr_decay_iters": 2000, "weight_decay": 0.1,
                  "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "seed": 1337}
# Accepted so one --set list serves both programs, but must keep these values here.
FIXED = {"hyper_conn_perm_subset": 0}


class UsageError(Exception):
    pass


def canonical_variant(v):
    v = ALIASES.get(v.strip().lower(), v.strip().lower())
    if v not in VARIANTS:
        raise UsageError("unknown variant '%s' (one of %s, residual, mhc-lite)" % (v, ", ".join(VARIANTS)))
    return v


def parse_variants(text):
    out = []
    for v in text.split(","):
        if not v.strip():
            continue
        v = canonical_variant(v)
        if v not in out:
            out.append(v)
    if not out:
        raise UsageError("--variants is empty")
    return out


def parse_value(key, text, default):
    """The --set value in the type of the default."""
    try:
        if isinstance(default, bool):
            t = text.strip().lower()
            if t not in ("true", "false", "1", "0"):
                raise ValueError
            return t in ("true", "1")
        if isinstance(default, int):
            return int(text)
        return float(text)
    except ValueError:
        raise UsageError("the value of config key '%s' is not a %s: '%s'"
                         % (key, type(default).__name__, text)) from None


def resolve_config(sets):
    """--set key=value list -> (model dict, train dict); unknown keys and bad values are errors."""
    model, train = dict(MODEL_DEFAULTS), dict(TRAIN_DEFAULTS)
    for s in sets:
        if "=" not in s:
            raise UsageError("--set expects key=value, got '%s'" % s)
        key, text = (x.strip() for x in s.split("=", 1))
        if key == "hyper_conn_type":
            raise UsageError("hyper_conn_type is chosen by --variants, not --set")
        if key in FIXED:
            if parse_value(key, text, FIXED[key]) != FIXED[key]:
                raise UsageError("config key '%s' must be %r here (the reference has no such mode)"
                                 % (key, FIXED[key]))
            continue
        target = model if key in model else train if key in train else None
        if target is None:
            raise UsageError("unknown config key '%s'" % key)
        target[key] = parse_value(key, text, target[key])
    for key in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "hyper_conn_n",
                "batch_size", "gradient_accumulation_steps"):
        v = model.get(key, train.get(key))
        if v < 1:
            raise UsageError("config key '%s' must be >= 1, got %d" % (key, v))
    if model["n_embd"] % model["n_head"]:
        raise UsageError("n_embd %d is not divisible by n_head %d" % (model["n_embd"], model["n_head"]))
    if train["lr_decay_iters"] <= train["warmup_iters"]:
        raise UsageError("lr_decay_iters must exceed warmup_iters")
    return model, train


# ----------------------------------------------------------------------------
# One variant (the child process)
# ----------------------------------------------------------------------------

def fused_attention(torch):
    """PyTorch's fused causal attention in the reference's signature, or None where it has none."""
    F = torch.nn.functional
    if not hasattr(F, "scaled_dot_product_attention"):
        return None

    def attend(qkv, n_head):
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = (t.reshape(B, T, n_head, C // n_head).transpose(1, 2) for t in qkv.split(C, dim=-1))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    return attend


def run_variant(variant, model_cfg, train_cfg, threads, steps, warmup, device="cpu", dtype="fp32"):
    import torch
    sys.path.insert(0, REFERENCE)
    import gpt

    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device for PyTorch %s" % torch.__version__)
    attention = "reference"
    if cuda and fused_attention(torch):
        gpt.causal_attention = fused_attention(torch)   # the blocks look it up by name at each call
        attention = "sdpa"
    cfg = gpt.GPTConfig(hyper_conn_type=variant, **model_cfg)
    model = gpt.GPT(cfg, dtype=torch.float32)
    gen = torch.Generator().manual_seed(train_cfg["seed"])
    gpt.init_weights(model, gen)
    model.to(dev)
    model.train()
    if dtype == "bf16":
        forward = model.forward

        def autocast_forward(*a, **k):
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                return forward(*a, **k)
        model.forward = autocast_forward    # nn.Module.__call__ finds the instance's forward
    opt = gpt.make_optimizer(model, train_cfg)
    B, T, A = train_cfg["batch_size"], cfg.block_size, train_cfg["gradient_accumulation_steps"]

    def batches():
        out = []
        for _ in range(A):
            tok = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
            out.append((tok[:, :-1].contiguous().to(dev), tok[:, 1:].contiguous().to(dev)))
        return out

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    loss = float("nan")
    for it in range(warmup + steps):
        b = batches()                       # drawn outside the timed region
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = gpt.train_step(model, opt, b, train_cfg, it)
        sync()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if it >= warmup:
            times.append(dt)
            cpu.append(dc)
    tokens = B * T * A
    med = statistics.median(times)
    r = {"variant": variant, "params": sum(p.numel() for p in model.parameters()),
         "tokens_per_step": tokens, "step_s_median": med, "step_s_min": min(times),
         "tokens_per_s": tokens / med, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
         "step_cpu_s_median": statistics.median(cpu), "final_loss": loss, "attention": attention}
    if cuda:
        r["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2.0 ** 20
    return r


def child_main(spec):
    try:
        r = run_variant(spec["variant"], spec["model"], spec["train"], spec["threads"], spec["steps"],
                        spec["warmup"], spec.get("device", "cpu"), spec.get("dtype", "fp32"))
    except RuntimeError as e:
        print(str(e).splitlines()[0] if str(e) else "RuntimeError", file=sys.stderr)
        return 1
    print(json.dumps(r))
    return 0


# ----------------------------------------------------------------------------
# The parent
# ----------------------------------------------------------------------------

def spawn(variant, model_cfg, train_cfg, args):
    spec = {"variant": variant, "model": model_cfg, "train": train_cfg, "threads": args.threads,
            "steps": args.steps, "warmup": args.warmup, "device": args.device, "dtype": args.dtype}
    # Debian's torch calls OpenBLAS (pthreads) for sgemm, which sizes its pool from these.
    n = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                       capture_output=True, text=True, env=env)
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    if p.returncode != 0 or not lines:
        err = [l for l in p.stderr.splitlines() if l.strip()]
        raise RuntimeError("variant %s failed (exit %d): %s"
                           % (variant, p.returncode, err[-1] if err else "no output"))
    return json.loads(lines[-1])


def print_table(doc, out):
    c = doc["config"]
    gpu = doc.get("device", "cpu") != "cpu"
    print("PyTorch %s reference (tests/reference/gpt.py), %s on %s, %d threads: %d layers x %d wide, "
          "%d heads, block %d, batch %d, vocab %d, n=%d; median of %d steps after %d warm-up"
          % (doc["torch_version"], "bf16 autocast" if doc.get("dtype") == "bf16" else "float32",
             doc.get("device", "cpu"), doc["threads"], c["n_layer"], c["n_embd"], c["n_head"],
             c["block_size"], c["batch_size"], c["vocab_size"], c["hyper_conn_n"], doc["steps"],
             doc["warmup"]), file=out)
    print("%-9s %11s %12s %10s %10s %10s %12s" % ("variant", "params", "step s (med)", "step min",
                                                   "CPU s", "tokens/s", "GPU MB" if gpu else "peak RSS MB"),
          file=out)
    for r in doc["results"]:
        print("%-9s %11d %12.3f %10.3f %10.3f %10.1f %12.1f"
              % (r["variant"], r["params"], r["step_s_median"], r["step_s_min"], r["step_cpu_s_median"],
                 r["tokens_per_s"], r["device_peak_mb"] if gpu else r["peak_rss_mb"]), file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma list of none, hc, mhc, mhc_lite, kromhc, jpmhc, ohc (aliases residual, mhc-lite)")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads / OMP_NUM_THREADS")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set n_layer=6 (model keys and batch_size, ...)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model trains")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                    help="fp32, or bf16: the forward under torch.autocast(bfloat16), float32 weights and AdamW")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    try:
        if args.steps < 1 or args.warmup < 0 or args.threads < 1:
            raise UsageError("--steps and --threads must be >= 1, --warmup >= 0")
        if args.dtype == "bf16" and args.device != "cuda":
            # CPU autocast (Debian's PyTorch 1.13) leaves layer_norm's bf16 input beside fp32 weights.
            raise UsageError("--dtype bf16 needs --device cuda")
        variants = parse_variants(args.variants)
        model_cfg, train_cfg = resolve_config(args.sets)
        import torch
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("no CUDA device for PyTorch %s" % torch.__version__)
        results = []
        for v in variants:
            print("torch_bench: %s ..." % v, file=sys.stderr, flush=True)
            results.append(spawn(v, model_cfg, train_cfg, args))
    except (UsageError, RuntimeError) as e:
        print("torch_bench: error: %s" % e, file=sys.stderr)
        return 2
    config = dict(model_cfg, batch_size=train_cfg["batch_size"],
                  gradient_accumulation_steps=train_cfg["gradient_accumulation_steps"])
    doc = {"threads": args.threads, "torch_version": torch.__version__.split("+")[0],
           "device": args.device, "dtype": args.dtype,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "steps": args.steps,
           "warmup": args.warmup, "config": config, "results": results}
    print_table(doc, sys.stdout)
    if args.json:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
