#!/usr/bin/python3
"""Tests of bench/side_by_side.py and bench/torch_bench.py (run by ctest).

    /usr/bin/python3 tests/cli/test_side_by_side.py [BUILD/mhc]

The table logic runs on hand-written JSON with known ratios. Then the real PyTorch bench runs on a
tiny model; the mhc side is the real `mhc bench` when the binary has it, else a fake JSON.
Prints one line per check and `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys

from harness import MHC, check, path, one_line_error, finish

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "bench")
SBS = os.path.join(BENCH, "side_by_side.py")
TORCH_BENCH = os.path.join(BENCH, "torch_bench.py")

CONFIG = {"n_layer": 6, "n_head": 6, "n_embd": 384, "vocab_size": 256, "block_size": 256, "bias": False,
          "hyper_conn_n": 4, "sinkhorn_iters": 20, "batch_size": 8}
TINY = ["n_layer=1", "n_head=2", "n_embd=32", "block_size=16", "batch_size=2"]


def write(name, doc):
    with open(path(name), "w") as f:
        json.dump(doc, f)
    return path(name)


def run(*args):
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)


def mhc_row(variant, step, rss, phases, mfu, tokens=2048):
    return {"variant": variant, "params": 1, "tokens_per_step": tokens, "step_s_median": step,
            "step_s_min": step, "tokens_per_s": tokens / step, "phases_s": phases,
            "model_gflop_per_step": 1.0, "mfu": mfu, "peak_rss_mb": rss}


def torch_row(variant, step, rss, tokens=2048):
    return {"variant": variant, "params": 1, "tokens_per_step": tokens, "step_s_median": step,
            "step_s_min": step, "tokens_per_s": tokens / step, "peak_rss_mb": rss}


def fake_docs():
    ph = lambda c: {"matmul": 0.3, "attention": 0.1, "connections": c, "optimizer": 0.05, "other": 0.05}
    mdoc = {"threads": 2, "sgemm_peak_gflops": 200.0, "sgemm_shape": [2048, 1536, 384], "steps": 10, "warmup": 2,
            "config": dict(CONFIG, hyper_conn_type="mhc_lite"),
            "results": [mhc_row("residual", 0.5, 400.0, ph(0.0), 0.6),        # aliases accepted
                        mhc_row("mhc-lite", 0.6, 600.0, ph(0.1), 0.5),
                        mhc_row("mhc", 0.66, 700.0, ph(0.16), 0.45)]}
    tdoc = {"threads": 2, "torch_version": "1.13.1", "config": dict(CONFIG), "steps": 10, "warmup": 2,
            "results": [torch_row("none", 2.0, 1000.0), torch_row("mhc_lite", 4.0, 3000.0),
                        torch_row("mhc", 5.0, 3100.0)]}
    return mdoc, tdoc


def test_table_from_fake_json():
    mdoc, tdoc = fake_docs()
    m, t = write("mhc.json", mdoc), write("torch.json", tdoc)
    out = path("report.md")
    r = run(SBS, "--mhc-json", m, "--torch-json", t, "--variants", "none,mhc_lite,mhc,kromhc", "--out", out)
    check("combiner on fake JSON exits 0", r.returncode == 0, r.stderr)
    md = r.stdout
    # tok/s 4096 vs 1024 -> 4.00x; MFU 60%; phases 0.3/0.1/0/0.05/0.05 of 0.5 s
    check("residual row", "| none | 4096 | 1024 | 4.00× | 60.0% | 400 MB | 1000 MB | 60/20/0/10/10 |" in md, md)
    check("mhc-lite row", "| mhc_lite | 3413 | 512 | 6.67× | 50.0% | 600 MB | 3000 MB | 50/17/17/8/8 |" in md, md)
    check("mhc row", "| mhc | 3103 | 410 | 7.58× | 45.0% | 700 MB | 3100 MB | 45/15/24/8/8 |" in md, md)
    check("a variant neither ran is dashes", "| kromhc | — | — | — | — | — | — | — |" in md, md)
    check("mhc-lite/residual step", "mhc-lite step / residual step: mhc 1.20×, PyTorch 2.00×" in md, md)
    check("mhc-lite/residual RSS", "mhc-lite peak RSS / residual peak RSS: mhc 1.50×, PyTorch 3.00×" in md, md)
    check("mhc vs mhc-lite margin", "(positive: mhc slower): mhc +10.0%, PyTorch +25.0%" in md, md)
    check("sgemm peak line", "sgemm peak (mhc's MFU denominator): 200.0 GFLOP/s at M×N×K = 2048×1536×384" in md, md)
    ok = os.path.exists(out) and open(out).read() == md
    check("--out holds the printed Markdown", ok)
    try:
        j = json.load(open(path("report.json")))
        d = j["derived"]
        ok = (abs(d["mhc"]["mhc_lite_over_residual_step"] - 1.2) < 1e-12
              and abs(d["torch"]["mhc_lite_over_residual_rss"] - 3.0) < 1e-12
              and abs(d["mhc"]["mhc_over_mhc_lite_step"] - 1.1) < 1e-12
              and abs(j["rows"][0]["speedup"] - 4.0) < 1e-12 and j["mhc"] == mdoc and j["torch"] == tdoc)
        check("JSON beside --out holds both sides and the ratios", ok, json.dumps(d))
    except (OSError, ValueError, KeyError) as e:
        check("JSON beside --out holds both sides and the ratios", False, e)


def test_gpu_table_from_fake_json():
    """On a GPU the memory columns are each side's peak GPU memory, and the header says how PyTorch ran."""
    mdoc, tdoc = fake_docs()
    mdoc = dict(mdoc, device="cuda")
    for r, mb in zip(mdoc["results"], (100.0, 130.0, 140.0)):
        r["device_peak_mb"], r["device_used_mb"] = mb, mb + 600.0
    tdoc = dict(tdoc, device="cuda", dtype="bf16")
    for r, mb in zip(tdoc["results"], (200.0, 500.0, 520.0)):
        r["device_peak_mb"], r["attention"] = mb, "sdpa"
    r = run(SBS, "--mhc-json", write("gm.json", mdoc), "--torch-json", write("gt.json", tdoc), "--variants",
            "none,mhc_lite,mhc")
    md = r.stdout
    check("GPU: combiner exits 0", r.returncode == 0, r.stderr)
    check("GPU: header says bf16 autocast with fused attention beside mhc fp32",
          "bf16 autocast, sdpa attention, on cuda; mhc fp32 on cuda" in md, md)
    check("GPU: memory columns are peak GPU memory",
          "| mhc peak GPU memory | PyTorch peak GPU memory |" in md
          and "| mhc_lite | 3413 | 512 | 6.67× | 50.0% | 130 MB | 500 MB |" in md, md)
    check("GPU: mhc-lite / residual memory ratio from GPU memory",
          "mhc-lite peak GPU memory / residual peak GPU memory: mhc 1.30×, PyTorch 2.50×" in md, md)
    check("GPU: mhc's device memory in use (dev MB) per variant",
          "- mhc's device memory in use after the steps (CUDA context, cuBLAS workspace and the kernels' local "
          "memory included): none 700 MB, mhc_lite 730 MB, mhc 740 MB" in md, md)
    mdoc16 = dict(mdoc, config=dict(mdoc["config"], dtype="bf16"), bf16_peak_gflops=1000.0)
    for r, mfu in zip(mdoc16["results"], (0.4, 0.35, 0.3)):
        r["mfu_bf16"] = mfu
    md = run(SBS, "--mhc-json", write("gm16.json", mdoc16), "--torch-json", write("gt16.json", tdoc), "--variants",
             "none,mhc_lite,mhc").stdout
    check("GPU: mhc in bf16 is named so, and its MFU16 follows the table",
          "mhc bf16 on cuda" in md and "- mhc MFU16 (model FLOPs over the bf16 peak, 1000 GFLOP/s): none 40.0%, "
          "mhc_lite 35.0%, mhc 30.0%" in md, md)
    r = run(SBS, "--mhc-json", write("gm2.json", mdoc), "--torch-json", write("gt2.json", dict(tdoc, device="cpu")))
    check("GPU: different devices refused", *one_line_error(r, "devices differ"))


def test_mismatches_refused():
    mdoc, tdoc = fake_docs()
    m = write("mhc.json", mdoc)
    bad = dict(tdoc, threads=1)
    r = run(SBS, "--mhc-json", m, "--torch-json", write("t1.json", bad))
    check("different thread counts refused", *one_line_error(r, "thread"))
    bad = dict(tdoc, config=dict(CONFIG, n_embd=512))
    r = run(SBS, "--mhc-json", m, "--torch-json", write("t2.json", bad))
    check("different configs refused", *one_line_error(r, "n_embd"))
    bad = dict(tdoc, results=[torch_row("none", 2.0, 1000.0, tokens=1024)])
    r = run(SBS, "--mhc-json", m, "--torch-json", write("t3.json", bad), "--variants", "none")
    check("different tokens per step refused", *one_line_error(r, "tokens per step"))
    r = run(SBS, "--mhc-json", m, "--torch-json", write("t4.json", tdoc), "--variants", "none,bogus")
    check("unknown variant refused", *one_line_error(r, "bogus"))
    r = run(SBS, "--mhc-json", path("missing.json"), "--torch-json", path("torch.json"))
    check("missing JSON file refused", *one_line_error(r, "missing.json"))
    r = run(SBS, "--torch-json", path("torch.json"))
    check("no --mhc refused", *one_line_error(r, "--mhc"))


def test_torch_bench_errors():
    r = run(TORCH_BENCH, "--set", "no_such_key=1")
    check("torch_bench: unknown key refused", *one_line_error(r, "no_such_key"))
    r = run(TORCH_BENCH, "--set", "n_embd=33", "--set", "n_head=2")
    check("torch_bench: n_embd % n_head refused", *one_line_error(r, "divisible"))
    r = run(TORCH_BENCH, "--dtype", "bf16")
    check("torch_bench: bf16 autocast on the CPU refused", *one_line_error(r, "needs --device cuda"))
    import torch
    if not torch.cuda.is_available():
        r = run(TORCH_BENCH, "--device", "cuda", "--variants", "none", "--steps", "1", "--warmup", "0")
        check("torch_bench: --device cuda without a GPU is one line", *one_line_error(r, "no CUDA device"))


def mhc_has_bench():
    if not MHC or not os.path.exists(MHC):
        return False
    # `mhc bench --help` exits 0 even without the subcommand (CLI11 prints the main help): look
    # for it in the main help's subcommand list instead.
    r = subprocess.run([MHC, "--help"], capture_output=True, text=True)
    return any(l.split()[:1] == ["bench"] for l in r.stdout.splitlines() if l.startswith("  "))


def test_real_torch_bench():
    """The real PyTorch side on a tiny model; mhc real if it has `bench`, else a fake."""
    args = ["--threads", "2", "--steps", "1", "--warmup", "0", "--variants", "residual,mhc-lite"]
    for s in TINY:
        args += ["--set", s]
    tokens = 2 * 16
    if mhc_has_bench():
        src = ["--mhc", MHC]
        print("(mhc bench found: running it for real)")
    else:
        cfg = dict(CONFIG, n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=2)
        ph = {"matmul": 1.0, "attention": 1.0, "connections": 1.0, "optimizer": 1.0, "other": 0.0}
        mdoc = {"threads": 2, "sgemm_peak_gflops": 100.0, "sgemm_shape": [64, 64, 64], "steps": 1, "warmup": 0,
                "config": cfg, "results": [mhc_row("none", 0.001, 10.0, ph, 0.1, tokens),
                                           mhc_row("mhc_lite", 0.002, 20.0, ph, 0.1, tokens)]}
        src = ["--mhc-json", write("mhc_tiny.json", mdoc)]
        print("(no `mhc bench` in %s: fake mhc JSON)" % MHC)
    out = path("tiny.md")
    r = run(SBS, *src, *args, "--out", out)
    check("side by side with the real PyTorch bench exits 0", r.returncode == 0, r.stderr)
    try:
        j = json.load(open(path("tiny.json")))
        t = {x["variant"]: x for x in j["torch"]["results"]}
        m = {x["variant"].replace("-", "_").replace("residual", "none"): x for x in j["mhc"]["results"]}
        keys = {"variant", "params", "tokens_per_step", "step_s_median", "step_s_min", "tokens_per_s", "peak_rss_mb"}
        check("torch_bench results carry the schema's keys",
              set(t) == {"none", "mhc_lite"} and all(keys <= set(x) for x in t.values()), t)
        check("torch_bench tokens/s = tokens per step / median step",
              all(x["tokens_per_step"] == tokens and abs(x["tokens_per_s"] * x["step_s_median"] - tokens) < 1e-6
                  for x in t.values()), t)
        check("torch_bench: a variant's peak RSS is its own process's (> 50 MB, torch loaded)",
              all(x["peak_rss_mb"] > 50 for x in t.values()), t)
        check("torch_bench: mhc-lite has more parameters than residual",
              t["mhc_lite"]["params"] > t["none"]["params"], t)
        for row in j["rows"]:
            v = row["variant"]
            want = m[v]["tokens_per_s"] / t[v]["tokens_per_s"]
            check("speed-up of %s = mhc tok/s / PyTorch tok/s" % v, abs(row["speedup"] - want) < 1e-9 * want,
                  (row, want))
            check("table row of %s shows PyTorch's tok/s" % v,
                  ("| %s | %.0f | %.0f |" % (v, m[v]["tokens_per_s"], t[v]["tokens_per_s"])) in r.stdout, r.stdout)
        want = t["mhc_lite"]["step_s_median"] / t["none"]["step_s_median"]
        check("PyTorch mhc-lite/residual step ratio", abs(j["derived"]["torch"]["mhc_lite_over_residual_step"]
                                                          - want) < 1e-9 * want, j["derived"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        check("side-by-side JSON readable", False, repr(e))


if __name__ == "__main__":
    finish(test_table_from_fake_json, test_gpu_table_from_fake_json, test_mismatches_refused, test_torch_bench_errors, test_real_torch_bench,
           keep_on_failure=True)
