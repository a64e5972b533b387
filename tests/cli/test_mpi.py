#!/usr/bin/python3
"""Data-parallel training under mpirun (ctest): equivalence, resumption, failures, sharded memory.

    /usr/bin/python3 tests/cli/test_mpi.py BUILD/mhc

Runs Open MPI's mpirun on this machine only (shared memory, no network), as root if need be, with
one OpenMP thread per rank. Prints one line per check and a last line `N passed, M failed`; exits
non-zero on any failure.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

MHC = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="mhc_mpi_")
RESULTS = {"passed": 0, "failed": 0}
# Small enough for CI, big enough (~200k parameters, 13 blocks of 16384) that shards are near halves.
MODEL = ["--set", "n_layer=2", "--set", "n_head=2", "--set", "n_embd=64", "--set", "block_size=16",
         "--set", "batch_size=4", "--set", "warmup_iters=3", "--set", "eval_interval=10", "--set", "eval_iters=3",
         "--set", "log_interval=1", "--set", "hyper_conn_n=4", "--set", "diag_interval=0"]
# mpirun for a CI container: root allowed, shared memory only, more ranks than cores allowed, no
# binding (ctest runs other tests beside this one). No single-copy (CMA) transfers: when a peer dies
# mid-transfer CMA prints a raw "Read -1, expected N" line of its own.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl": "self,vader",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "OMPI_MCA_hwloc_base_binding_policy": "none", "OMP_NUM_THREADS": "1"}


def check(name, cond, detail=""):
    RESULTS["passed" if cond else "failed"] += 1
    print(("ok    " if cond else "FAIL  ") + name + ("" if cond else "   " + str(detail)[-2000:]), flush=True)


def path(*names):
    return os.path.join(TMP, *names)


def env(**extra):
    e = dict(os.environ, **MPI_ENV, **extra)
    # The sanitized build: Open MPI keeps its allocations to the end, which LeakSanitizer would report.
    if "ASAN_OPTIONS" in e:
        e["ASAN_OPTIONS"] += ":detect_leaks=0"
    return e


def train_args(out, *more, exe=None):
    return [exe or MHC, "train", "--data", path("corpus.txt"), "--out", out, *MODEL, "--quiet", *more]


def mpirun(n, args):
    return ["mpirun", "-q", "-np", str(n), *args]


def run(args, timeout=300, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=kw.pop("env", env()), timeout=timeout, **kw)


def train(n, out, *more, timeout=300):
    args = train_args(out, *more, "--json")
    return run(mpirun(n, args) if n > 1 else args, timeout=timeout)


def result(r):
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def losses(out):
    return {m["step"]: m["loss"] for m in metrics(out)}


def weights(ckpt):
    with open(ckpt, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    out = {}
    for name, t in header.items():
        if name != "__metadata__":
            a, b = t["data_offsets"]
            out[name] = np.frombuffer(body[a:b], dtype=np.float32)
    return out


def max_loss_gap(a, b):
    la, lb = losses(a), losses(b)
    if sorted(la) != sorted(lb):
        return float("inf")
    return max(abs(la[s] - lb[s]) for s in la)


def max_weight_gap(ck_a, ck_b):
    """Per tensor max |a - b| / max |a|, the largest over the tensors."""
    wa, wb = weights(ck_a), weights(ck_b)
    if sorted(wa) != sorted(wb):
        return float("inf")
    return max(float(np.max(np.abs(wa[k] - wb[k])) / max(float(np.max(np.abs(wa[k]))), 1e-30)) for k in wa)


def one_line(r, *words):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    return r.returncode != 0 and len(lines) == 1 and all(w in lines[0] for w in words)


def rank_pid(out, rank):
    """The pid of the `mhc train` rank of this run directory (its environment names its rank)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
            if os.path.basename(cmd[0]) != b"mhc" or out.encode() not in cmd:
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                if ("OMPI_COMM_WORLD_RANK=%d" % rank).encode() in f.read().split(b"\0"):
                    return int(pid)
        except OSError:
            pass
    return None


def mhc_processes(out):
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
            if out.encode() in cmd:
                found.append(int(pid))
        except OSError:
            pass
    return found


def wait_for_step(out, step, proc, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        try:
            if metrics(out) and metrics(out)[-1]["step"] >= step:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return False


def test_two_ranks_equal_one():
    # The config's gradient_accumulation_steps is the global one: 1 rank x 4 micro-batches against
    # 2 ranks x 2, and 1 x 2 against 2 x 1.
    for variant, accum in (("mhc_lite", 4), ("hc", 2)):
        common = ["--set", "hyper_conn_type=" + variant, "--set", "gradient_accumulation_steps=%d" % accum,
                  "--set", "max_iters=30"]
        one, two = path("eq1_" + variant), path("eq2_" + variant)
        r1, r2 = train(1, one, *common), train(2, two, *common)
        check("%s: 1 rank x %d and 2 ranks x %d micro-batches train 30 steps" % (variant, accum, accum // 2),
              r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr)
        if r1.returncode or r2.returncode:
            continue
        gap = max_loss_gap(one, two)
        check("%s: the same losses for 30 steps within 1e-5 (max gap %.2e)" % (variant, gap), gap <= 1e-5)
        wgap = max_weight_gap(path(one, "ckpt_000030.safetensors"), path(two, "ckpt_000030.safetensors"))
        check("%s: the same weights within 1e-5 relative (max %.2e)" % (variant, wgap), wgap <= 1e-5)
        v1, v2 = result(r1).get("val_loss"), result(r2).get("val_loss")
        check("%s: the same validation loss (evaluated on both ranks)" % variant,
              v1 is not None and v2 is not None and abs(v1 - v2) <= 1e-5, (v1, v2))
        b1, b2 = result(r1).get("optimizer_bytes_per_rank", 0), result(r2).get("optimizer_bytes_per_rank", 0)
        # Shards are whole blocks of 16384 values: half, give or take one block of two moments.
        check("%s: AdamW state per rank halves at 2 ranks (%d -> %d bytes)" % (variant, b1, b2),
              b1 > 0 and abs(b2 - b1 / 2) <= 16384 * 8 and b2 < 0.6 * b1 and result(r2).get("world_size") == 2)


def test_resume_on_one_and_two_ranks():
    common = ["--set", "gradient_accumulation_steps=2", "--set", "lr_decay_iters=20", "--set", "checkpoint_interval=5"]
    r = train(2, path("straight"), *common, "--set", "max_iters=20")
    check("2 ranks: 20 steps straight", r.returncode == 0, r.stderr)
    r = train(2, path("half"), *common, "--set", "max_iters=10")
    check("2 ranks: the first 10 steps", r.returncode == 0, r.stderr)
    shutil.copytree(path("half"), path("half_on_1"))
    r = run(mpirun(2, train_args(path("half"), "--resume", "--set", "max_iters=20")))
    check("resume on 2 ranks", r.returncode == 0, r.stderr)
    la, lb = losses(path("straight")), losses(path("half"))
    check("resumed on 2 ranks: bit-identical losses", la == lb, (len(la), len(lb)))
    with open(path("straight", "ckpt_000020.safetensors"), "rb") as f1, \
            open(path("half", "ckpt_000020.safetensors"), "rb") as f2:
        check("resumed on 2 ranks: bit-identical final checkpoint", f1.read() == f2.read())
    r = run(train_args(path("half_on_1"), "--resume", "--set", "max_iters=20"))
    check("resume a 2-rank checkpoint on 1 rank", r.returncode == 0, r.stderr)
    gap = max_loss_gap(path("straight"), path("half_on_1"))
    check("resumed on 1 rank: the same losses within 1e-5 (max gap %.2e)" % gap, gap <= 1e-5)
    # And back: a 1-rank checkpoint (moments whole) re-sharded over 2 ranks.
    r = train(1, path("one_half"), *common, "--set", "max_iters=10")
    r2 = run(mpirun(2, train_args(path("one_half"), "--resume", "--set", "max_iters=20")))
    gap = max_loss_gap(path("straight"), path("one_half")) if r2.returncode == 0 else float("inf")
    check("resume a 1-rank checkpoint on 2 ranks: the same losses within 1e-5 (max gap %.2e)" % gap,
          r.returncode == 0 and gap <= 1e-5, r.stderr + r2.stderr)


def test_killed_rank():
    out = path("killed")
    args = train_args(out, "--set", "max_iters=1000000", "--set", "checkpoint_interval=5", "--set",
                      "gradient_accumulation_steps=2")
    p = subprocess.Popen(mpirun(2, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    reached = wait_for_step(out, 12, p)
    victim = rank_pid(out, 1)
    t0 = time.time()
    if victim:
        os.kill(victim, signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    took = time.time() - t0
    time.sleep(0.2)
    left = mhc_processes(out)
    lines = [l for l in err.splitlines() if l.strip()]
    check("SIGKILL of rank 1: every process gone within 10 s (%.1f s), exit status %s" % (took, p.returncode),
          reached and victim and took < 10 and p.returncode != 0 and not left, (reached, victim, left))
    check("SIGKILL of rank 1: one clear line", len(lines) == 1 and "rank 1" in lines[0] and "died" in lines[0], err)
    with open(os.path.join(out, "latest")) as f:
        step = int(f.read().strip()[5:])
    r = run(mpirun(2, train_args(out, "--resume", "--set", "max_iters=%d" % (step + 5))))
    check("the last checkpoint (step %d) resumes on 2 ranks" % step,
          r.returncode == 0 and metrics(out)[-1]["step"] == step + 5, r.stderr)


def test_ctrl_c():
    # Ctrl-C reaches mpirun, which sends SIGTERM to every rank (and SIGKILL a second later): the
    # ranks agree on the step to stop at and rank 0 writes that checkpoint.
    common = ["--set", "gradient_accumulation_steps=2", "--set", "lr_decay_iters=100000", "--set",
              "checkpoint_interval=100000", "--set", "eval_interval=100000"]
    out = path("sigint")
    p = subprocess.Popen(mpirun(2, train_args(out, *common, "--set", "max_iters=100000")), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env())
    reached = wait_for_step(out, 20, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    step = metrics(out)[-1]["step"]
    latest = open(os.path.join(out, "latest")).read().strip()
    check("Ctrl-C under mpirun: a checkpoint at the step the ranks stopped at (%d), one report" % step,
          reached and latest == "ckpt_%06d" % step and err.count("interrupted at step") == 1 and
          err.count("stopping after this step") == 1, err)
    r = run(mpirun(2, train_args(out, "--resume", "--set", "max_iters=%d" % (step + 5))))
    r2 = train(2, path("sigint_ref"), *common, "--set", "max_iters=%d" % (step + 5))
    check("Ctrl-C + resume: the same losses as an uninterrupted run",
          r.returncode == 0 and r2.returncode == 0 and losses(out) == losses(path("sigint_ref")), r.stderr + r2.stderr)


def test_bad_input():
    t0 = time.time()
    r = train(2, path("bad_accum"), "--set", "gradient_accumulation_steps=3", timeout=60)
    check("gradient_accumulation_steps not divisible by the ranks: one line, non-zero, no run directory",
          one_line(r, "gradient_accumulation_steps = 3", "2 ranks") and not os.path.exists(path("bad_accum")),
          r.stderr)
    accum = ["--set", "gradient_accumulation_steps=2"]
    r = run(mpirun(2, train_args(path("bad_cfg"), *accum)), env=env(MHC_TEST_PERTURB_CONFIG_RANK="1"), timeout=60)
    check("a rank with another config: one line, non-zero, no run directory",
          one_line(r, "rank 1", "another config") and not os.path.exists(path("bad_cfg")), r.stderr)
    other = path("mhc")
    shutil.copy(MHC, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    r = run(["mpirun", "-q", "-np", "1", *train_args(path("bad_exe"), *accum), ":", "-np", "1",
             *train_args(path("bad_exe"), *accum, exe=other)], timeout=60)
    check("a rank running another binary: one line, non-zero", one_line(r, "rank 1", "another mhc binary"), r.stderr)
    r = run(mpirun(2, train_args(path("bad_key"), "--set", "n_embd=-4")), timeout=60)
    check("an error every rank hits is one line, not one per rank", one_line(r, "error", "n_embd"), r.stderr)
    check("bad input under mpirun never hangs (%.0f s for four runs)" % (time.time() - t0), time.time() - t0 < 120)


if __name__ == "__main__":
    try:
        if not shutil.which("mpirun"):
            check("mpirun is installed (Debian's openmpi-bin, scripts/setup.sh)", False)
        else:
            with open(path("corpus.txt"), "wb") as f:
                f.write(b"".join(b"line %d: the quick brown fox jumps over the lazy dog.\n" % i for i in range(3000)))
            test_two_ranks_equal_one()
            test_resume_on_one_and_two_ranks()
            test_killed_rank()
            test_ctrl_c()
            test_bad_input()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
    sys.exit(1 if RESULTS["failed"] else 0)
