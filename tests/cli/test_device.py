#!/usr/bin/python3
"""End-to-end tests of `--device` (run by ctest).

    /usr/bin/python3 tests/cli/test_device.py BUILD/mhc BUILD/mhc_emu
    /usr/bin/python3 tests/cli/test_device.py BUILD/mhc --refusals-only

BUILD/mhc is the real program; BUILD/mhc_emu is the same command line linked with the CPU emulation of
CUDA (src/cuda/emu.h), so `--device cuda` runs the GPU code end to end without a GPU. On a GPU machine
(scripts/gpu_check.sh) both are the real mhc. --refusals-only: only the checks that need no GPU path
(a build without CUDA, or a machine without a GPU, refuses --device cuda in one line). Checks: every
variant trains on the (emulated) GPU to the CPU's losses; a GPU checkpoint evaluates on the CPU to the
GPU's loss; the same GPU run twice is bit-identical; a run resumes across devices; sample, info, bench and compare take --device; the
kernels' stack reserve is in the memory check and in bench's device memory (emulated); without a
usable GPU (or without CUDA in the build) --device cuda is one line and a non-zero exit. Prints one
line per check and a last line `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import shutil
import subprocess
import sys

from harness import MHC, TMP, check, last_json, one_line_error, finish

REFUSALS_ONLY = sys.argv[2] == "--refusals-only"
EMU = None if REFUSALS_ONLY else os.path.abspath(sys.argv[2])
VARIANTS = ["none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc"]
CONFIG = """n_layer = 2
n_head = 2
n_embd = 16
block_size = 16
batch_size = 4
max_iters = 6
eval_interval = 3
eval_iters = 2
log_interval = 1
diag_interval = 3
warmup_iters = 2
learning_rate = 3e-3
"""


def run(exe, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=TMP)


def metrics_of(run_dir):
    with open(os.path.join(TMP, run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(run_dir):
    return {rec["step"]: (rec["loss"], rec.get("val_loss")) for rec in metrics_of(run_dir) if "loss" in rec}


def close(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b)) and len(a) == len(b)


def setup():
    text = "".join("%s fortune number %d: the quick brown fox jumps over the lazy dog\n" % ("ab"[i % 2], i)
                   for i in range(400))
    with open(os.path.join(TMP, "data.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(TMP, "tiny.toml"), "w") as f:
        f.write(CONFIG)


def train(exe, out, *extra):
    return run(exe, "train", "--config", "tiny.toml", "--data", "data.txt", "--out", out, "--quiet", "--json", *extra)


def test_no_gpu_is_one_line():
    r = train(MHC, "nogpu", "--device", "cuda")
    if r.returncode == 0:  # this machine has a usable GPU and the build has CUDA: nothing to refuse
        check("mhc train --device cuda ran on a real GPU (no refusal to check)", True)
        return
    ok, detail = one_line_error(r, "--device cuda")
    check("without a usable GPU or CUDA, train --device cuda: one line naming the problem, exit 1",
          ok and r.returncode == 1 and ("no CUDA device" in r.stderr or "built without CUDA" in r.stderr), detail)
    check("... and no run directory is made", not os.path.exists(os.path.join(TMP, "nogpu")))
    for cmd in (["eval", "--ckpt", "x.safetensors", "--data", "data.txt"], ["info", "--ckpt", "x.safetensors"],
                ["sample", "--ckpt", "x.safetensors"], ["bench", "--steps", "1"]):
        r = run(MHC, *cmd, "--device", "cuda")
        ok, detail = one_line_error(r, "--device cuda")
        check("mhc %s --device cuda without a GPU: one line" % cmd[0], ok, detail)


def test_bad_device():
    ok, detail = one_line_error(train(EMU, "bad", "--device", "tpu"), "--device")
    check("--device tpu is refused in one line", ok, detail)
    ok, detail = one_line_error(train(EMU, "bad", "--set", "device=tpu"), "device", "tpu")
    check("config device = tpu is refused in one line", ok, detail)


def test_variants_train_alike():
    for v in VARIANTS:
        g = train(EMU, "gpu_" + v, "--device", "cuda", "--set", "hyper_conn_type=" + v)
        c = train(EMU, "cpu_" + v, "--set", "hyper_conn_type=" + v)
        check("%s: trains on the emulated GPU and on the CPU" % v, g.returncode == 0 and c.returncode == 0,
              g.stderr + c.stderr)
        if g.returncode or c.returncode:
            continue
        lg, lc = losses("gpu_" + v), losses("cpu_" + v)
        steps = sorted(lc)
        check("%s: every step's loss within 1e-4 of the CPU's" % v,
              sorted(lg) == steps and close([lg[s][0] for s in steps], [lc[s][0] for s in steps], 1e-4), (lg, lc))
        check("%s: validation losses within 1e-4" % v,
              close([lg[s][1] for s in steps if lg[s][1] is not None],
                    [lc[s][1] for s in steps if lc[s][1] is not None], 1e-4), (lg, lc))
        with open(os.path.join(TMP, "gpu_" + v, "metrics.jsonl")) as f:
            diags = [json.loads(l)["diag"] for l in f if '"diag"' in l]
        check("%s: the GPU run logs SPEC §6 diagnostics for every site" % v,
              len(diags) == 2 and all(len(d["sites"]) == 4 for d in diags), diags[:1])
        # The GPU's checkpoint on the CPU (mhc eval) and on the GPU (mhc_emu eval --device cuda).
        ec = last_json(run(MHC, "eval", "--ckpt", "gpu_" + v, "--data", "data.txt", "--json"))
        eg = last_json(run(EMU, "eval", "--ckpt", "gpu_" + v, "--data", "data.txt", "--device", "cuda", "--json"))
        check("%s: the GPU's checkpoint evaluates on the CPU to the GPU's loss (1e-5)" % v,
              "loss" in ec and "loss" in eg and abs(ec["loss"] - eg["loss"]) <= 1e-5 and eg["device"] == "cuda",
              (ec, eg))


def test_resume_across_devices():
    half = ["--set", "max_iters=3", "--set", "lr_decay_iters=6"]
    r = [train(EMU, "gc", "--device", "cuda", *half), train(EMU, "gc", "--resume", "--device", "cpu"),
         train(EMU, "cg", *half), train(EMU, "cg", "--resume", "--device", "cuda"), train(EMU, "cc")]
    check("runs that change device at resume train", all(x.returncode == 0 for x in r), [x.stderr for x in r])
    if any(x.returncode for x in r):
        return
    a, b, c = losses("gc"), losses("cg"), losses("cc")
    steps = sorted(c)
    check("GPU then CPU: the losses of one CPU run (1e-4)", close([a[s][0] for s in steps], [c[s][0] for s in steps], 1e-4),
          (a, c))
    check("CPU then GPU: likewise", close([b[s][0] for s in steps], [c[s][0] for s in steps], 1e-4), (b, c))
    with open(os.path.join(TMP, "cg", "config.toml")) as f:
        check("the resumed run's config.toml names its new device", 'device = "cuda"' in f.read())
    # A new run from the CPU run's weights (--init-from) on each device: the same losses.
    more = ["--init-from", "cc", "--set", "max_iters=3", "--set", "lr_decay_iters=3", "--set", "warmup_iters=1"]
    r = [train(EMU, "from_cc_gpu", "--device", "cuda", *more), train(EMU, "from_cc_cpu", *more)]
    check("--init-from a CPU run, on the GPU and on the CPU: both train", all(x.returncode == 0 for x in r),
          [x.stderr for x in r])
    if all(x.returncode == 0 for x in r):
        g, c = losses("from_cc_gpu"), losses("from_cc_cpu")
        check("... to the same losses (1e-4), below the first of a run from scratch",
              close([g[s][0] for s in sorted(c)], [c[s][0] for s in sorted(c)], 1e-4) and len(c) == 3 and
              c[1][0] < losses("cc")[1][0], (g, c))


def test_repeatable():
    r = train(EMU, "gpu_mhc_lite_again", "--device", "cuda", "--set", "hyper_conn_type=mhc_lite")
    if r.returncode or not os.path.exists(os.path.join(TMP, "gpu_mhc_lite")):
        check("the same GPU run twice", False, r.stderr)
        return
    a, b = losses("gpu_mhc_lite"), losses("gpu_mhc_lite_again")
    check("the same GPU run twice: bit-identical losses and validation losses", a == b and len(a) == 6, (a, b))
    same = open(os.path.join(TMP, "gpu_mhc_lite", "ckpt_000006.safetensors"), "rb").read() == \
        open(os.path.join(TMP, "gpu_mhc_lite_again", "ckpt_000006.safetensors"), "rb").read()
    check("... and byte-identical final checkpoints", same)
    # Activation recompute changes where the intermediates live, not the arithmetic: the same bits.
    for exe, base, dev in ((EMU, "gpu_mhc_lite", ["--device", "cuda"]), (EMU, "cpu_mhc_lite", [])):
        r = train(exe, base + "_recompute", *dev, "--set", "hyper_conn_type=mhc_lite", "--set", "recompute=true")
        check("%s with recompute = true: trains" % base, r.returncode == 0, r.stderr)
        if r.returncode == 0:
            check("%s with recompute = true: bit-identical losses and validation losses" % base,
                  losses(base) == losses(base + "_recompute"), (losses(base), losses(base + "_recompute")))
    # CUDA graphs replay the same work: the same bits, and no capture refused on the way (evaluations,
    # diagnostics, samples of the model and checkpoints between the steps); the CPU refuses the key
    # in one line.
    r = train(EMU, "gpu_mhc_lite_graphs", "--device", "cuda", "--set", "hyper_conn_type=mhc_lite",
              "--set", "cuda_graphs=true", "--set", "sample_interval=2", "--set", "sample_tokens=8")
    check("cuda_graphs = true: trains, nothing refused", r.returncode == 0 and "cuda_graphs off" not in r.stderr,
          r.stderr)
    samples = [m["sample"] for m in metrics_of("gpu_mhc_lite_graphs") if "sample" in m] if r.returncode == 0 else []
    check("samples of the model on the GPU at steps 2, 4, 6", len(samples) == 3 and
          all(0 < len(s.get("tokens", [])) <= 8 and "text" in s for s in samples), samples)
    if r.returncode == 0:
        check("cuda_graphs = true: bit-identical losses and validation losses",
              losses("gpu_mhc_lite") == losses("gpu_mhc_lite_graphs"), (losses("gpu_mhc_lite"), losses("gpu_mhc_lite_graphs")))
        same = open(os.path.join(TMP, "gpu_mhc_lite", "ckpt_000006.safetensors"), "rb").read() == \
            open(os.path.join(TMP, "gpu_mhc_lite_graphs", "ckpt_000006.safetensors"), "rb").read()
        check("... and a byte-identical final checkpoint", same)
    ok, detail = one_line_error(train(EMU, "graphs_cpu", "--set", "cuda_graphs=true"), "cuda_graphs needs device cuda")
    check("cuda_graphs = true on the CPU is refused in one line", ok, detail)


def test_bf16():
    # dtype bf16: the linear layers' products in bf16 on the GPU; the CPU refuses it in one line.
    ok, detail = one_line_error(train(EMU, "bf16_cpu", "--set", "dtype=bf16"), "dtype bf16 needs device cuda")
    check("dtype bf16 on the CPU is refused in one line", ok, detail)
    r = train(EMU, "gpu_mhc_lite_bf16", "--device", "cuda", "--set", "hyper_conn_type=mhc_lite", "--set", "dtype=bf16")
    check("dtype bf16 trains on the (emulated) GPU", r.returncode == 0, r.stderr)
    if r.returncode or not os.path.exists(os.path.join(TMP, "gpu_mhc_lite")):
        return
    a, b = losses("gpu_mhc_lite"), losses("gpu_mhc_lite_bf16")
    check("bf16: every loss within 1% of the fp32 GPU run's, and not all equal to them (bf16 ran)",
          sorted(a) == sorted(b) and all(abs(a[s][0] - b[s][0]) <= 0.01 * a[s][0] for s in a) and a != b, (a, b))
    with open(os.path.join(TMP, "gpu_mhc_lite_bf16", "metrics.jsonl")) as f:
        ds = [s["ds_error_max"] for l in f if '"diag"' in l for s in json.loads(l)["diag"]["sites"]]
    check("bf16: mhc_lite's mixing matrices stay doubly stochastic (SPEC §6 ds_error_max <= 1e-6, every site)",
          len(ds) == 8 and max(ds) <= 1e-6, ds)
    ec = last_json(run(MHC, "eval", "--ckpt", "gpu_mhc_lite_bf16", "--data", "data.txt", "--json"))
    check("bf16: the checkpoint (fp32 weights) evaluates on the CPU", "loss" in ec and ec["loss"] > 0, ec)


def test_mpi_refused():
    # Here (CI) with mpirun and the emulated GPU. Not on a GPU machine (both programs the real mhc,
    # scripts/gpu_check.sh): its pack is built without MPI, and its mpirun, if any, is not ours.
    if not shutil.which("mpirun") or EMU == MHC:
        check("data-parallel refusal of --device cuda (skipped: %s)" % ("no mpirun" if EMU != MHC else "GPU machine"),
              True)
        return
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,vader",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_hwloc_base_binding_policy="none", OMP_NUM_THREADS="1")
    r = subprocess.run(["mpirun", "-q", "-np", "2", EMU, "train", "--config", "tiny.toml", "--data", "data.txt", "--out",
                        "mpi_gpu", "--quiet", "--device", "cuda", "--set", "gradient_accumulation_steps=2"],
                       capture_output=True, text=True, env=env, cwd=TMP, timeout=120)
    ok, detail = one_line_error(r, "data parallelism", "--device cuda")
    check("mpirun -np 2 with --device cuda: one line (several ranks train on the CPU), no run directory",
          ok and not os.path.exists(os.path.join(TMP, "mpi_gpu")), detail)


def test_sample_info_bench():
    ckpt = "gpu_mhc_lite"
    sc = last_json(run(MHC, "sample", "--ckpt", ckpt, "--max-new-tokens", "40", "--temperature", "0", "--json"))
    sg = last_json(run(EMU, "sample", "--ckpt", ckpt, "--max-new-tokens", "40", "--temperature", "0", "--device",
                       "cuda", "--json"))
    check("greedy sampling on the GPU (its KV cache, past block_size) gives the CPU's tokens",
          sc.get("tokens") and sc.get("tokens") == sg.get("tokens") and sg.get("device") == "cuda", (sc, sg))
    ic = last_json(run(MHC, "info", "--ckpt", ckpt, "--json"))
    ig = last_json(run(EMU, "info", "--ckpt", ckpt, "--device", "cuda", "--json"))
    ok = ig.get("device") == "cuda" and len(ig.get("sites", [])) == len(ic.get("sites", [])) == 4
    for a, b in zip(ic.get("sites", []), ig.get("sites", [])):
        for k in ("ds_error_max", "fwd_gain_max", "orth_error_max", "depth_sigma1_max", "stream_similarity"):
            ok = ok and abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k]))
    check("info --device cuda: the CPU's diagnostics (1e-5)", ok, (ic, ig))
    if os.path.basename(EMU) == "mhc_emu":  # a batch past the emulation's 16 GiB (a GPU's is larger)
        r = run(EMU, "eval", "--ckpt", ckpt, "--data", "data.txt", "--device", "cuda", "--batch", "2000000")
        ok, detail = one_line_error(r, "a batch of 2000000 x", "needs about", "to evaluate",
                                    "free memory on the cuda device", "a smaller --batch")
        check("eval --device cuda of a batch the device cannot hold: refused from the estimate, in one line", ok,
              detail)
    r = run(EMU, "bench", "--device", "cuda", "--variants", "none,mhc_lite,ohc", "--steps", "2", "--warmup", "1",
            "--set", "n_layer=1", "--set", "n_embd=16", "--set", "n_head=2", "--set", "block_size=16",
            "--set", "batch_size=2", "--json")
    d = last_json(r)
    res = d.get("results", [])
    check("bench --device cuda: the three variants, device cuda, a positive peak and tokens/s",
          d.get("device") == "cuda" and [x.get("variant") for x in res] == ["none", "mhc_lite", "ohc"]
          and d.get("sgemm_peak_gflops", 0) > 0 and all(x.get("tokens_per_s", 0) > 0 for x in res)
          and "cuBLAS" in r.stdout, (r.stderr, d))
    # The GPU's phases come from CUDA events per op (cuda/phase_timer.h): matmul, attention and the
    # connections each get time, and none is more than the step.
    ph = [x.get("phases_s", {}) for x in res]
    check("bench --device cuda: every model phase timed on the device (matmul, attention; connections "
          "for mhc_lite and ohc), none longer than the step",
          len(ph) == 3 and all(p.get("matmul", 0) > 0 and p.get("attention", 0) > 0 for p in ph)
          and all(p.get("connections", 0) > 0 for p in ph[1:])
          and all(v <= x.get("step_s_mean", 0) for p, x in zip(ph, res) for v in p.values()), res)
    check("bench --device cuda: a bf16 peak from cuBLAS and each variant's MFU against it",
          d.get("bf16_peak_gflops", 0) > 0 and all(0 < x.get("mfu_bf16", 0) < 1 for x in res)
          and "bf16 peak" in r.stdout and "MFU16" in r.stdout, (d.get("bf16_peak_gflops"), res))
    check("bench --device cuda: each variant's peak GPU memory, more for mhc_lite's 4 streams than for none's 1",
          len(res) == 3 and all((x.get("device_peak_mb") or 0) > 0 for x in res)
          and res[1]["device_peak_mb"] > res[0]["device_peak_mb"] and "GPU MB" in r.stdout, res)
    check("bench --device cuda: each variant's device memory in use after its steps (cudaMemGetInfo)",
          len(res) == 3 and all((x.get("device_used_mb") or 0) > 0 for x in res) and "dev MB" in r.stdout, res)
    # Activation recompute: less GPU memory for the same model (2 blocks: one stream state fewer).
    peaks = []
    for rc in ("false", "true"):
        d = last_json(run(EMU, "bench", "--device", "cuda", "--variants", "mhc_lite", "--steps", "1", "--warmup", "0",
                          "--set", "n_layer=2", "--set", "n_embd=16", "--set", "n_head=2", "--set", "block_size=16",
                          "--set", "batch_size=2", "--set", "recompute=" + rc, "--json"))
        peaks.append((d.get("results") or [{}])[0].get("device_peak_mb") or 0)
    check("bench --device cuda: recompute = true lowers mhc_lite's peak GPU memory", 0 < peaks[1] < peaks[0], peaks)
    # A model no GPU holds (1.6e12 parameters): the memory check's line, as train gives it, not an
    # allocation failing midway.
    r = run(EMU, "bench", "--device", "cuda", "--variants", "mhc_lite", "--steps", "1", "--warmup", "0",
            "--set", "n_layer=2000", "--set", "n_embd=8192", "--set", "n_head=64")
    ok, detail = one_line_error(r, "variant mhc_lite", "needs about", "free memory on the cuda device")
    check("bench --device cuda of a model the device cannot hold: the memory check's one line", ok, detail)


def test_stack_reserve():
    """The driver's local memory for the kernels' stack frames counts in the memory check and is taken
    when the engine is built. Emulation only: its kernels report MHC_EMU_STACK_BYTES as their frame, on
    a device of 16 GiB and 2,048 threads (src/cuda/emu.h); a GPU's frames are ptxas's."""
    if os.path.basename(EMU) != "mhc_emu":
        return
    def with_frames(frame, *args):
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive", MHC_EMU_STACK_BYTES=str(frame))
        return subprocess.run([EMU, *args], capture_output=True, text=True, env=env, cwd=TMP)
    jp = ("train", "--config", "tiny.toml", "--data", "data.txt", "--device", "cuda", "--quiet",
          "--set", "hyper_conn_type=jpmhc")
    r = with_frames(16 << 20, *jp, "--out", "stack_none")  # 32 GiB of stack
    ok, detail = one_line_error(r, "stack frames cannot be reserved", "cudaDeviceSetLimit")
    check("train --device cuda whose kernels' stack frames exceed the device: one line, no run directory",
          ok and r.returncode == 1 and not os.path.exists(os.path.join(TMP, "stack_none")), detail)
    big = ("--set", "batch_size=8", "--set", "block_size=1024", "--set", "n_embd=512", "--set", "n_head=8",
           "--set", "n_layer=4")
    r = with_frames(7 << 20, *jp, *big, "--out", "stack_big")  # 14 GiB of stack, 2 GiB left; the model needs 2.5
    ok, detail = one_line_error(r, "needs about", "reserved for the kernels' stack frames")
    check("... a model that fits the device but not beside that reserve: the memory check's line names it",
          ok and not os.path.exists(os.path.join(TMP, "stack_big")), detail)
    d = last_json(with_frames(4 << 20, "bench", "--device", "cuda", "--variants", "none,ohc", "--steps", "1",
                              "--warmup", "0", "--set", "n_layer=1", "--set", "n_embd=16", "--set", "n_head=2",
                              "--set", "block_size=16", "--set", "batch_size=2", "--json"))
    used = [x.get("device_used_mb") or 0 for x in d.get("results", [])]
    check("bench --device cuda: ohc's engine reserves its kernels' stack (8 GiB here, in dev MB), none's nothing",
          len(used) == 2 and used[0] < 1024 and 8192 <= used[1] < 8192 + 1024, used)


def test_compare():
    args = ["compare", "--config", "tiny.toml", "--data", "data.txt", "--variants", "none,ohc", "--out", "cmp", "--json"]
    g = run(EMU, *args, "--device", "cuda", "--set", "max_iters=3")
    d = last_json(g)
    check("compare --device cuda trains its runs and writes the report",
          g.returncode in (0, 1) and os.path.exists(os.path.join(TMP, "cmp", "report.md"))
          and len(d.get("runs", [])) == 2 and all(r.get("status") == "trained" for r in d.get("runs", [])), (g.stderr[-2000:], d))
    cfg = os.path.join(TMP, "cmp", "runs", "ohc-s1", "config.toml")
    check("... on the GPU (the runs' config.toml)", os.path.exists(cfg) and 'device = "cuda"' in open(cfg).read())
    c = run(EMU, *args, "--device", "cpu", "--set", "max_iters=3", "--set", "recompute=true")
    d = last_json(c)
    check("the same compare on the CPU with recompute reuses those runs (neither is a config difference)",
          c.returncode in (0, 1) and len(d.get("runs", [])) == 2
          and all(r.get("status") == "reused" for r in d.get("runs", [])), (c.stderr[-2000:], d))


def main():
    setup()
    tests = (test_no_gpu_is_one_line, test_bad_device, test_variants_train_alike, test_repeatable, test_bf16,
             test_resume_across_devices, test_mpi_refused, test_sample_info_bench, test_stack_reserve, test_compare)
    finish(*(tests[:1] if REFUSALS_ONLY else tests))


if __name__ == "__main__":
    main()
