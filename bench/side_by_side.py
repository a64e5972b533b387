#!/usr/bin/python3
"""`mhc bench` against the PyTorch reference (bench/torch_bench.py), same config, threads and
steps, in one run; prints a Markdown table of the two and their ratios.

    /usr/bin/python3 bench/side_by_side.py --mhc build/mhc --threads 2 --steps 10 --warmup 2 \
        [--variants none,hc,mhc,mhc_lite,kromhc,jpmhc,ohc] [--set n_layer=6 ...] [--out bench.md]

The config defaults to the mHC-lite authors' (6 layers, 6 heads, 384 wide, block 256, batch 8,
vocab 256, n = 4, no bias); --set overrides go to both programs. --out writes the table to FILE.md
and both programs' JSON plus the derived figures to FILE.json. --mhc-json / --torch-json take a
saved `--json` output instead of running that side (re-rendering, tests).
Set OMP_WAIT_POLICY=passive on a shared machine: spinning OpenMP threads distort both sides.
--device cuda runs both on the GPU: `mhc bench --device cuda` in dtype bf16 (docs/GPU.md;
--mhc-dtype fp32 for fp32) beside the reference in bf16 autocast with PyTorch's fused attention
(--torch-dtype fp32 for float32); the memory columns are each side's peak GPU memory instead of the
peak RSS, and mhc's MFU16 (against the bf16 peak its run measures) follows the table.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_BENCH = os.path.join(HERE, "torch_bench.py")

VARIANTS = ("none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc")
ALIASES = {"residual": "none", "mhc-lite": "mhc_lite", "mhclite": "mhc_lite"}
AUTHORS_CONFIG = ["n_layer=6", "n_head=6", "n_embd=384", "block_size=256", "batch_size=8",
                  "vocab_size=256", "hyper_conn_n=4", "bias=false"]
# Config keys both programs report and that must agree for the comparison to mean anything.
SHARED_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "bias", "hyper_conn_n",
               "sinkhorn_iters", "batch_size")
PHASES = ("matmul", "attention", "connections", "optimizer", "other")


class Failure(Exception):
    pass


def canonical(v):
    v = v.strip().lower()
    return ALIASES.get(v, v)


def parse_variants(text):
    out = []
    for v in text.split(","):
        if v.strip():
            c = canonical(v)
            if c not in VARIANTS:
                raise Failure("unknown variant '%s' (one of %s, residual, mhc-lite)" % (v.strip(), ", ".join(VARIANTS)))
            if c not in out:
                out.append(c)
    if not out:
        raise Failure("--variants is empty")
    return out


def last_json(text, who):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError as e:
                raise Failure("%s: its last JSON line does not parse: %s" % (who, e)) from None
    raise Failure("%s printed no JSON line" % who)


def load_json_file(path, who):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise Failure("cannot read %s: %s" % (path, e.strerror)) from None
    try:
        return json.loads(text)             # a whole JSON file
    except json.JSONDecodeError:
        return last_json(text, who + " (" + path + ")")   # a saved --json run: its last line


def run_side(cmd, who, env):
    print("side_by_side: running %s ..." % who, file=sys.stderr, flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:
        raise Failure("cannot run %s: %s" % (cmd[0], e.strerror)) from None
    if p.returncode != 0:
        err = [l for l in p.stderr.splitlines() if l.strip()]
        raise Failure("%s failed (exit %d): %s" % (who, p.returncode, err[-1] if err else "no message"))
    return last_json(p.stdout, who)


def by_variant(doc, who):
    if not isinstance(doc.get("results"), list):
        raise Failure("%s JSON has no 'results' list" % who)
    out = {}
    for r in doc["results"]:
        out[canonical(str(r.get("variant", "")))] = r
    return out


def is_gpu(doc):
    return doc.get("device", "cpu") != "cpu"


def mem_key(mdoc):
    return "device_peak_mb" if is_gpu(mdoc) else "peak_rss_mb"


def check_same_setup(mdoc, tdoc):
    """Device, threads, config and tokens per step must match, or the ratios compare different work."""
    if mdoc.get("device", "cpu") != tdoc.get("device", "cpu"):
        raise Failure("devices differ: mhc %s, PyTorch %s" % (mdoc.get("device", "cpu"), tdoc.get("device", "cpu")))
    if mdoc.get("threads") != tdoc.get("threads"):
        raise Failure("thread counts differ: mhc %s, PyTorch %s" % (mdoc.get("threads"), tdoc.get("threads")))
    mc, tc = mdoc.get("config", {}), tdoc.get("config", {})
    diff = ["%s (mhc %s, PyTorch %s)" % (k, mc[k], tc[k]) for k in SHARED_KEYS
            if k in mc and k in tc and mc[k] != tc[k]]
    if diff:
        raise Failure("configs differ: " + ", ".join(diff))


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def get(rows, v, key, side):
    r = rows.get(v, {}).get(side)
    return None if r is None else r.get(key)


def derive(variants, mrows, trows, mem="peak_rss_mb"):
    """Per-variant rows and the derived figures (all ratios of measured values); mem: the memory key."""
    rows = []
    for v in variants:
        m, t = mrows.get(v), trows.get(v)
        if m and t and m.get("tokens_per_step") != t.get("tokens_per_step"):
            raise Failure("%s: tokens per step differ: mhc %s, PyTorch %s"
                          % (v, m.get("tokens_per_step"), t.get("tokens_per_step")))
        phases = None
        if m and isinstance(m.get("phases_s"), dict):
            total = sum(m["phases_s"].get(p, 0.0) for p in PHASES)
            if total > 0:
                phases = {p: 100.0 * m["phases_s"].get(p, 0.0) / total for p in PHASES}
        rows.append({"variant": v, "mhc": m, "torch": t,
                     "speedup": ratio(m and m.get("tokens_per_s"), t and t.get("tokens_per_s")),
                     "phases_pct": phases})
    both = {r["variant"]: r for r in rows}
    d = {}
    for side in ("mhc", "torch"):
        d[side] = {
            "mhc_lite_over_residual_step": ratio(get(both, "mhc_lite", "step_s_median", side),
                                                 get(both, "none", "step_s_median", side)),
            "mhc_lite_over_residual_rss": ratio(get(both, "mhc_lite", mem, side),
                                                get(both, "none", mem, side)),
            "mhc_over_mhc_lite_step": ratio(get(both, "mhc", "step_s_median", side),
                                            get(both, "mhc_lite", "step_s_median", side)),
        }
    return rows, d


def fmt(x, spec, suffix=""):
    return "—" if x is None else (spec % x) + suffix


def fmt_ratio(x):
    return fmt(x, "%.2f", "×")


def fmt_margin(x):
    return "—" if x is None else "%+.1f%%" % (100.0 * (x - 1.0))


def render(mdoc, tdoc, rows, d):
    c = dict(tdoc.get("config", {}), **mdoc.get("config", {}))
    gpu, mem = is_gpu(mdoc), mem_key(mdoc)
    mem_name = "peak GPU memory" if gpu else "peak RSS"
    torch_how = "float32"
    if gpu:
        attn = {r.get("attention") for r in tdoc.get("results", [])} - {None}
        torch_how = "%s, %s attention, on %s; mhc %s on %s" % (
            "bf16 autocast" if tdoc.get("dtype") == "bf16" else "float32", "/".join(sorted(attn)) or "?",
            tdoc.get("device"), mdoc.get("config", {}).get("dtype", "fp32"), mdoc.get("device"))
    L = []
    L.append("## mhc bench vs PyTorch reference")
    L.append("")
    L.append("%s layers × %s wide, %s heads, block %s, batch %s, vocab %s, n = %s, bias %s; %s threads; "
             "median of %s steps after %s warm-up; PyTorch %s (tests/reference/gpt.py, %s); "
             "OMP_WAIT_POLICY=%s."
             % (c.get("n_layer"), c.get("n_embd"), c.get("n_head"), c.get("block_size"), c.get("batch_size"),
                c.get("vocab_size"), c.get("hyper_conn_n"), str(c.get("bias")).lower(), mdoc.get("threads"),
                mdoc.get("steps"), mdoc.get("warmup"), tdoc.get("torch_version"), torch_how,
                tdoc.get("omp_wait_policy") or os.environ.get("OMP_WAIT_POLICY") or "unset"))
    L.append("")
    L.append("| variant | mhc tok/s | PyTorch tok/s | speed-up | mhc MFU | mhc %s | PyTorch %s "
             "| mhc phases %% (matmul/attention/connections/optimizer/other) |" % (mem_name, mem_name))
    L.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        m, t = r["mhc"] or {}, r["torch"] or {}
        ph = r["phases_pct"]
        phs = "—" if ph is None else "/".join("%.0f" % ph[p] for p in PHASES)
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["variant"], fmt(m.get("tokens_per_s"), "%.0f"), fmt(t.get("tokens_per_s"), "%.0f"),
            fmt_ratio(r["speedup"]), fmt(m.get("mfu") and 100.0 * m["mfu"], "%.1f", "%"),
            fmt(m.get(mem), "%.0f", " MB"), fmt(t.get(mem), "%.0f", " MB"), phs))
    L.append("")
    dm, dt = d["mhc"], d["torch"]
    L.append("- mhc-lite step / residual step: mhc %s, PyTorch %s"
             % (fmt_ratio(dm["mhc_lite_over_residual_step"]), fmt_ratio(dt["mhc_lite_over_residual_step"])))
    L.append("- mhc-lite %s / residual %s: mhc %s, PyTorch %s"
             % (mem_name, mem_name, fmt_ratio(dm["mhc_lite_over_residual_rss"]), fmt_ratio(dt["mhc_lite_over_residual_rss"])))
    used = [(r["variant"], (r["mhc"] or {}).get("device_used_mb")) for r in rows]
    if gpu and any(mb for _, mb in used):  # mhc bench's dev MB: what the process holds on the device
        L.append("- mhc's device memory in use after the steps (CUDA context, cuBLAS workspace and the "
                 "kernels' local memory included): " + ", ".join("%s %s" % (v, fmt(mb, "%.0f", " MB")) for v, mb in used))
    L.append("- mhc step vs mhc-lite step (positive: mhc slower): mhc %s, PyTorch %s"
             % (fmt_margin(dm["mhc_over_mhc_lite_step"]), fmt_margin(dt["mhc_over_mhc_lite_step"])))
    if gpu and mdoc.get("bf16_peak_gflops"):
        L.append("- mhc MFU16 (model FLOPs over the bf16 peak, %s GFLOP/s): %s" % (
            fmt(mdoc.get("bf16_peak_gflops"), "%.0f"),
            ", ".join("%s %s" % (r["variant"], fmt((r["mhc"] or {}).get("mfu_bf16") and
                                                   100.0 * r["mhc"]["mfu_bf16"], "%.1f", "%")) for r in rows)))
    shape = mdoc.get("sgemm_shape")
    L.append("- sgemm peak (mhc's MFU denominator): %s GFLOP/s%s"
             % (fmt(mdoc.get("sgemm_peak_gflops"), "%.1f"),
                " at M×N×K = %s" % "×".join(str(s) for s in shape) if shape else ""))
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mhc", help="the mhc binary (runs `mhc bench --json`)")
    ap.add_argument("--mhc-json", help="use this saved `mhc bench --json` output instead of running mhc")
    ap.add_argument("--torch-json", help="use this saved torch_bench.py --json output instead of running it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both programs (after the authors' config)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both sides train")
    ap.add_argument("--torch-dtype", choices=("fp32", "bf16"),
                    help="the reference's precision (default: bf16 autocast on cuda, fp32 on the CPU)")
    ap.add_argument("--mhc-dtype", choices=("fp32", "bf16"),
                    help="mhc's dtype (default: the reference's precision)")
    ap.add_argument("--out", help="write the Markdown here and the JSON beside it (.json)")
    args = ap.parse_args(argv)
    try:
        if not args.mhc and not args.mhc_json:
            raise Failure("give --mhc PATH (or --mhc-json FILE)")
        if args.steps < 1 or args.warmup < 0 or args.threads < 1:
            raise Failure("--steps and --threads must be >= 1, --warmup >= 0")
        variants = parse_variants(args.variants)
        sets = AUTHORS_CONFIG + args.sets
        common = ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
                  "--variants", ",".join(variants)]
        for s in sets:
            common += ["--set", s]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        dtype = args.torch_dtype or ("bf16" if args.device == "cuda" else "fp32")
        if args.mhc_json:
            mdoc = load_json_file(args.mhc_json, "mhc bench")
        else:
            mdoc = run_side([args.mhc, "bench", "--json", "--device", args.device, *common, "--set",
                             "dtype=" + (args.mhc_dtype or dtype)], "mhc bench", env)
        if args.torch_json:
            tdoc = load_json_file(args.torch_json, "torch_bench")
        else:
            tdoc = run_side([sys.executable, TORCH_BENCH, "--json", "--device", args.device, "--dtype", dtype, *common],
                            "torch_bench.py", env)
        check_same_setup(mdoc, tdoc)
        rows, derived = derive(variants, by_variant(mdoc, "mhc bench"), by_variant(tdoc, "torch_bench"),
                               mem_key(mdoc))
        md = render(mdoc, tdoc, rows, derived)
        print(md, end="")
        if args.out:
            base = args.out[:-3] if args.out.endswith(".md") else args.out
            doc = {"mhc": mdoc, "torch": tdoc, "rows": [{k: r[k] for k in ("variant", "speedup", "phases_pct")}
                                                      for r in rows], "derived": derived}
            try:
                with open(args.out, "w") as f:
                    f.write(md)
                with open(base + ".json", "w") as f:
                    json.dump(doc, f, indent=1)
                    f.write("\n")
            except OSError as e:
                raise Failure("cannot write %s: %s" % (e.filename, e.strerror)) from None
    except Failure as e:
        print("side_by_side: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
