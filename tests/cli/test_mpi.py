#!/usr/bin/python3
"""Data-parallel training under mpirun (ctest): equivalence, resumption, failures, sharded memory,
and the run directory's guarantees (docs/RELIABILITY.md) with several ranks: one writer, the NaN
guard, the fixed validation set, time_s, --resume-from-intact, data identity.

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
import time

import numpy as np

from harness import last_json, wait_for_step, MHC, check, path, metrics, one_line_error, finish
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
    if any((la[s] is None) != (lb[s] is None) for s in la):  # a non-finite loss is null in metrics.jsonl
        return float("inf")
    return max(abs(la[s] - lb[s]) for s in la if la[s] is not None)


def max_weight_gap(ck_a, ck_b):
    """Per tensor max |a - b| / max |a|, the largest over the tensors."""
    wa, wb = weights(ck_a), weights(ck_b)
    if sorted(wa) != sorted(wb):
        return float("inf")
    return max(float(np.max(np.abs(wa[k] - wb[k])) / max(float(np.max(np.abs(wa[k]))), 1e-30)) for k in wa)


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


def test_two_ranks_equal_one():
    # The config's gradient_accumulation_steps is the global one: 1 rank x 4 micro-batches against
    # 2 ranks x 2, and 1 x 2 against 2 x 1.
    for variant, accum in (("mhc_lite", 4), ("hc", 2)):
        common = ["--set", "hyper_conn_type=" + variant, "--set", "gradient_accumulation_steps=%d" % accum,
                  "--set", "max_iters=30", "--set", "sample_interval=%d" % (10 if variant == "mhc_lite" else 0)]
        one, two = path("eq1_" + variant), path("eq2_" + variant)
        r1, r2 = train(1, one, *common), train(2, two, *common)
        check("%s: 1 rank x %d and 2 ranks x %d micro-batches train 30 steps" % (variant, accum, accum // 2),
              r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr)
        if r1.returncode or r2.returncode:
            continue
        if variant == "mhc_lite":  # rank 0 samples while the other waits at the next step
            with open(path(two, "metrics.jsonl")) as f:
                steps = [m["step"] for m in map(json.loads, f) if "tokens" in m.get("sample", {})]
            check("2 ranks: rank 0's samples of the model at steps 10, 20, 30", steps == [10, 20, 30], steps)
        gap = max_loss_gap(one, two)
        check("%s: the same losses for 30 steps within 1e-5 (max gap %.2e)" % (variant, gap), gap <= 1e-5)
        wgap = max_weight_gap(path(one, "ckpt_000030.safetensors"), path(two, "ckpt_000030.safetensors"))
        check("%s: the same weights within 1e-5 relative (max %.2e)" % (variant, wgap), wgap <= 1e-5)
        v1, v2 = last_json(r1).get("val_loss"), last_json(r2).get("val_loss")
        check("%s: the same validation loss (evaluated on both ranks)" % variant,
              v1 is not None and v2 is not None and abs(v1 - v2) <= 1e-5, (v1, v2))
        check("%s: the run directories hold the same files (rank 0 alone writes; no lock left)" % variant,
              sorted(os.listdir(one)) == sorted(os.listdir(two)) and "lock" not in os.listdir(two),
              (sorted(os.listdir(one)), sorted(os.listdir(two))))
        # The fixed validation set (val_set.h: eval_iters random windows of the held-out part, seed
        # ^ 0x5A5A5A5A), dealt over 2 ranks, against `mhc eval` of the same checkpoint in one process.
        ev = run([MHC, "eval", "--ckpt", path(two, "ckpt_000030.safetensors"), "--data", path("corpus.txt"),
                  "--split", "val", "--batch", "4", "--order", "random", "--seed", str(1337 ^ 0x5A5A5A5A),
                  "--batches", "3", "--json"])
        ve = last_json(ev).get("loss")
        check("%s: val_loss of 2 ranks = mhc eval in one process on the same weights, bit for bit (%r, %r)" %
              (variant, v2, ve), v2 is not None and v2 == ve, ev.stderr)
        b1, b2 = last_json(r1).get("optimizer_bytes_per_rank", 0), last_json(r2).get("optimizer_bytes_per_rank", 0)
        # Shards are whole blocks of 16384 values: half, give or take one block of two moments.
        check("%s: AdamW state per rank halves at 2 ranks (%d -> %d bytes)" % (variant, b1, b2),
              b1 > 0 and abs(b2 - b1 / 2) <= 16384 * 8 and b2 < 0.6 * b1 and last_json(r2).get("world_size") == 2)


def test_init_from_on_two_ranks():
    # A new run from test_two_ranks_equal_one's 1-rank checkpoint: every rank loads it and checks it;
    # 2 ranks train on from it as 1 process does.
    more = ["--init-from", path("eq1_mhc_lite"), "--set", "hyper_conn_type=mhc_lite", "--set", "max_iters=6",
            "--set", "gradient_accumulation_steps=2", "--set", "warmup_iters=1"]
    r1, r2 = train(1, path("from1"), *more), train(2, path("from2"), *more)
    check("--init-from on 1 and 2 ranks: both train", r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr)
    if r1.returncode == 0 and r2.returncode == 0:
        gap = max_loss_gap(path("from1"), path("from2"))
        check("... to the same losses within 1e-5 (max gap %.2e)" % gap, gap <= 1e-5)


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
    times = [m.get("time_s") for m in metrics(path("half"))]
    check("time_s in every record, increasing over the resume",
          all(isinstance(t, float) for t in times) and times == sorted(times), times)
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


def test_one_writer():
    out = path("locked")
    p = subprocess.Popen(train_args(out, "--set", "max_iters=1000000", "--set", "checkpoint_interval=5"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    reached = wait_for_step(out, 6, p)
    t0 = time.time()
    r = run(mpirun(2, train_args(out, "--resume", "--set", "gradient_accumulation_steps=2")), timeout=60)
    took = time.time() - t0
    p.kill()
    p.wait()
    check("a run directory in use: 2 ranks refused in one line naming its process, at once (%.1f s)" % took,
          reached and one_line_error(r, "in use by process %d" % p.pid)[0] and took < 10, r.stderr)
    r = train(2, out, "--set", "gradient_accumulation_steps=2", timeout=60)
    check("a run directory that holds a run: 2 ranks refused in one line",
          one_line_error(r, "already holds a run")[0], r.stderr)


def test_nan_guard():
    # Steps 3 and 4 made non-finite (the test hook): skipped on both ranks, reported once, and the
    # run goes on as one process does.
    common = ["--set", "gradient_accumulation_steps=2", "--set", "max_iters=8", "--set", "checkpoint_interval=4"]
    hook = env(MHC_TEST_NONFINITE_STEPS="3,4")
    r1 = run(train_args(path("nan1"), *common, "--json"), env=hook)
    r2 = run(mpirun(2, train_args(path("nan2"), *common, "--json")), env=hook)
    skipped = [m["step"] for m in metrics(path("nan2")) if m.get("skipped")] if r2.returncode == 0 else None
    gap = max_loss_gap(path("nan1"), path("nan2")) if r1.returncode == 0 and r2.returncode == 0 else float("inf")
    check("non-finite steps on 2 ranks: the same steps skipped as in one process (%s), losses within 1e-5 "
          "(%.2e), one report each" % (skipped, gap),
          skipped == [3, 4] and gap <= 1e-5 and r2.stderr.count("update skipped") == 2 and
          last_json(r2).get("skipped_steps") == 2, r1.stderr + r2.stderr)
    # An update that overflows on rank 1's shard alone (the test hook: a gradient of 1e30 there, so
    # v = g² is inf) skips the step on both ranks: afterwards they train as the run above whose
    # steps 3 and 4 were skipped.
    hook = env(MHC_TEST_NONFINITE_STEPS="3,4", MHC_TEST_NONFINITE_UPDATE_RANK="1")
    r3 = run(mpirun(2, train_args(path("nan3"), *common, "--json")), timeout=120, env=hook)
    ok = r3.returncode == 0 and r1.returncode == 0
    skipped = [m["step"] for m in metrics(path("nan3")) if m.get("skipped")] if ok else None
    l1, l3 = (losses(path("nan1")), losses(path("nan3"))) if ok else ({}, {})
    gap = max([abs(l1[s] - l3[s]) for s in l1 if s not in (3, 4)] or [float("inf")]) if ok else float("inf")
    wgap = max_weight_gap(path("nan1", "ckpt_000008.safetensors"), path("nan3", "ckpt_000008.safetensors")) \
        if ok else float("inf")
    # The weights within 5e-5: the two runs add the micro-batches' gradients in different orders, and
    # Adam's normalised first steps move a weight whose gradient is fp32 noise by up to lr; OpenBLAS
    # picks its kernels by the host at run time, so the gap depends on the host (1.12e-5 on an
    # AVX-512 host in the sanitized build, 2026-12-01). An update applied on one rank only would move
    # that shard's weights by an Adam step each, about the learning rate (up to 2e-3 here): far
    # above this bound.
    check("an update that overflows on one rank's shard is skipped on both (%s), reported once each, then the "
          "same training as one process skipping those steps (losses %.2e, weights %.2e)" % (skipped, gap, wgap),
          skipped == [3, 4] and r3.stderr.count("non-finite update, update skipped") == 2 and gap <= 1e-5 and
          wgap <= 5e-5, r3.stderr)
    # max_nonfinite_steps in a row: every rank gives up at the same step; the state before is saved
    # and named in one line.
    hook = env(MHC_TEST_NONFINITE_STEPS="5,6,7")
    out = path("nan_give_up")
    r = run(mpirun(2, train_args(out, *common, "--set", "max_nonfinite_steps=3")), env=hook, timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check("3 non-finite steps in a row on 2 ranks: one last line naming the saved state, non-zero",
          r.returncode != 0 and len(lines) == 4 and "3 steps in a row" in lines[-1] and
          "ckpt_000007" in lines[-1] and open(os.path.join(out, "latest")).read().strip() == "ckpt_000007",
          r.stderr)
    r = run(train_args(out, "--resume", "--set", "max_iters=10"))
    check("... which resumes in one process", r.returncode == 0 and metrics(out)[-1]["step"] == 10, r.stderr)


def test_diverging_run():
    # A learning rate far too high (tests/cli/test_trust.py): finite for a few steps, then weights
    # that overflow the next forward; the NaN guard runs on both ranks before each checkpoint.
    common = ["--set", "gradient_accumulation_steps=2", "--set", "max_iters=60", "--set", "learning_rate=100",
              "--set", "warmup_iters=0", "--set", "min_lr=0", "--set", "eval_interval=4", "--set",
              "checkpoint_interval=2", "--set", "keep_checkpoints=100", "--set", "max_nonfinite_steps=3"]
    out = path("diverge2")
    r = run(mpirun(2, train_args(out, *common)), timeout=120)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check("a diverging run on 2 ranks stops with one last line naming the last good state",
          r.returncode != 0 and lines and "steps in a row" in lines[-1] and
          sum("steps in a row" in l for l in lines) == 1, r.stderr)
    bad = []
    for f in sorted(os.listdir(out)):
        if f.startswith("ckpt_") and f.endswith(".safetensors") and ".optim" not in f:
            e = run([MHC, "eval", "--ckpt", os.path.join(out, f), "--data", path("corpus.txt"), "--batches", "2",
                     "--json"])
            if e.returncode != 0 or not isinstance(last_json(e).get("loss"), float):
                bad.append((f, e.stderr.strip()))
    check("... and every checkpoint it wrote evaluates to a finite loss", not bad, bad)


def test_resume_from_intact():
    common = ["--set", "gradient_accumulation_steps=2", "--set", "lr_decay_iters=20", "--set", "checkpoint_interval=5"]
    out = path("intact")
    r = train(2, out, *common, "--set", "max_iters=10")
    newest = os.path.join(out, "ckpt_000010.safetensors")
    data = bytearray(open(newest, "rb").read())
    data[-100] ^= 0x10
    open(newest, "wb").write(bytes(data))
    r = run(mpirun(2, train_args(out, "--resume", "--set", "max_iters=20")), timeout=60)
    check("a corrupt newest checkpoint on 2 ranks: one line naming the newest intact one",
          one_line_error(r, "ckpt_000010.safetensors", "ckpt_000005", "--resume-from-intact")[0], r.stderr)
    r = run(mpirun(2, train_args(out, "--resume-from-intact", "--set", "max_iters=20")), timeout=120)
    check("--resume-from-intact on 2 ranks: said once, from ckpt_000005, the same losses as a straight run",
          r.returncode == 0 and r.stderr.count("resuming from ckpt_000005") == 1 and
          losses(out) == losses(path("straight")), r.stderr)


def test_other_data_refused():
    other = path("other.txt")
    with open(other, "wb") as f:
        f.write(b"".join(b"row %d: pack my box with five dozen liquor jugs.\n" % i for i in range(3000)))
    args = train_args(path("half"), "--resume", "--set", "max_iters=25")
    args[args.index("--data") + 1] = other
    r = run(mpirun(2, args), timeout=60)
    check("resuming on 2 ranks with other data: one line, non-zero", one_line_error(r, "trained on other data")[0],
          r.stderr)


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
          one_line_error(r, "gradient_accumulation_steps = 3", "2 ranks")[0] and
          not os.path.exists(path("bad_accum")),
          r.stderr)
    accum = ["--set", "gradient_accumulation_steps=2"]
    r = run(mpirun(2, train_args(path("bad_cfg"), *accum)), env=env(MHC_TEST_PERTURB_CONFIG_RANK="1"), timeout=60)
    check("a rank with another config: one line, non-zero, no run directory",
          one_line_error(r, "rank 1", "another config")[0] and not os.path.exists(path("bad_cfg")), r.stderr)
    other = path("mhc")
    shutil.copy(MHC, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    r = run(["mpirun", "-q", "-np", "1", *train_args(path("bad_exe"), *accum), ":", "-np", "1",
             *train_args(path("bad_exe"), *accum, exe=other)], timeout=60)
    check("a rank running another binary: one line, non-zero",
          one_line_error(r, "rank 1", "another mhc binary")[0], r.stderr)
    r = run(mpirun(2, train_args(path("bad_key"), "--set", "n_embd=-4")), timeout=60)
    check("an error every rank hits is one line, not one per rank", one_line_error(r, "error", "n_embd")[0], r.stderr)
    check("bad input under mpirun never hangs (%.0f s for four runs)" % (time.time() - t0), time.time() - t0 < 120)


if __name__ == "__main__":
    if not shutil.which("mpirun"):
        check("mpirun is installed (Debian's openmpi-bin, scripts/setup.sh)", False)
        finish()
    with open(path("corpus.txt"), "wb") as f:
        f.write(b"".join(b"line %d: the quick brown fox jumps over the lazy dog.\n" % i for i in range(3000)))
    # In order: later tests resume the runs of earlier ones.
    finish(test_two_ranks_equal_one, test_init_from_on_two_ranks, test_resume_on_one_and_two_ranks, test_resume_from_intact,
           test_other_data_refused, test_one_writer, test_nan_guard, test_diverging_run, test_killed_rank,
           test_ctrl_c, test_bad_input)
