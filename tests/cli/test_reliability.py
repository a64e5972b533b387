#!/usr/bin/python3
"""Never lose a run: signals, kills, a full disk, corrupt checkpoints and non-finite steps (ctest).

    /usr/bin/python3 tests/cli/test_reliability.py BUILD/mhc

Prints one line per check and a last line `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import random
import resource
import select
import signal
import struct
import subprocess
import time

from harness import wait_for_step, MHC, check, path, metrics, finish

# A model big enough that a run lasts a few seconds, small enough for CI.
MODEL = ["--set", "n_layer=2", "--set", "n_head=2", "--set", "n_embd=64", "--set", "block_size=32",
         "--set", "batch_size=8", "--set", "warmup_iters=5", "--set", "eval_iters=2", "--set", "log_interval=1"]


def env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="2", **extra)


def train_args(out, *more):
    return [MHC, "train", "--data", path("corpus.txt"), "--out", out, *MODEL, "--quiet", *more]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=kw.pop("env", env()), **kw)


def key(ms):
    return [(m["step"], m["loss"], m.get("val_loss"), m["grad_norm"]) for m in ms]


def loadable(out):
    """The checkpoint `latest` names loads (checksums verified): mhc info succeeds on it."""
    with open(os.path.join(out, "latest")) as f:
        ck = os.path.join(out, f.read().strip() + ".safetensors")
    r = run([MHC, "info", "--ckpt", ck, "--batch", "1", "--seq", "8"])
    return r.returncode == 0, ck, r.stderr


def read_st(p):
    with open(p, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_st(p, header, body, hlen=None):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", hlen if hlen is not None else len(h)) + h + body)


def test_sigint_then_resume_equals_uninterrupted():
    common = ["--set", "max_iters=60", "--set", "eval_interval=20", "--set", "checkpoint_interval=20"]
    r = run(train_args(path("straight"), *common))
    check("uninterrupted 60-step run", r.returncode == 0, r.stderr)
    p = subprocess.Popen(train_args(path("sigint"), *common), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env())
    reached = wait_for_step(path("sigint"), 27, p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    stopped = metrics(path("sigint"))[-1]["step"]
    check("SIGINT: finishes the step, writes a checkpoint, exits 0 and says how to resume",
          reached and p.returncode == 0 and "--resume" in err and stopped < 60 and
          open(path("sigint", "latest")).read().strip() == "ckpt_%06d" % stopped,
          "rc %s, stopped at %s: %s" % (p.returncode, stopped, err))
    r = run(train_args(path("sigint"), "--resume"))
    check("resume after SIGINT completes", r.returncode == 0, r.stderr)
    check("SIGINT + resume gives the same losses as the uninterrupted run",
          key(metrics(path("straight"))) == key(metrics(path("sigint"))))


def stderr_shows(p, text, limit=60):
    """Reads p's stderr (a pipe) until `text` appears; False if p ends or `limit` seconds pass.
    Reads the pipe itself, not through p.stderr's buffer, so that communicate() gets the rest."""
    fd, seen, t0 = p.stderr.fileno(), b"", time.time()
    while text.encode() not in seen and time.time() - t0 < limit:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    return text.encode() in seen


def test_second_signal_exits_at_once():
    # Steps of ~0.3 s, so the second signal lands while the step after the first one runs. The
    # batch that makes them so is measured here, since a sanitized build is ten times slower than
    # the fast one: a fixed model would be either too fast there or slow here.
    r = run(train_args(path("calibrate"), "--set", "max_iters=6", "--set", "eval_interval=6"))
    check("a 6-step run measures the speed", r.returncode == 0, r.stderr)
    tps = sorted(m["tokens_per_s"] for m in metrics(path("calibrate"))[1:])
    batch = max(8, min(4096, int(0.3 * tps[len(tps) // 2] / 32)))  # MODEL's block_size is 32
    p = subprocess.Popen(train_args(path("twice"), "--set", "max_iters=400", "--set", "eval_interval=4",
                                    "--set", "checkpoint_interval=4", "--set", "batch_size=%d" % batch),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    # past the step-4 checkpoint, however slow the build (sanitizers) or the machine
    reached = wait_for_step(path("twice"), 5, p)
    p.send_signal(signal.SIGINT)
    # Ordinary signals do not queue: two sent before the first is handled are one. A fixed pause
    # (50 ms, until 2026-12-02) was too short once on a loaded CI machine (the run stopped
    # gracefully, exit 0), so the second goes when the handler's message has come.
    handled = stderr_shows(p, "stopping after this step")
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    ok, ck, err = loadable(path("twice"))
    check("a second signal exits at once (code 130) and the last checkpoint is intact",
          reached and handled and p.returncode == 130 and ok,
          "batch %d, reached %s, first handled %s, rc %s %s %s" % (batch, reached, handled, p.returncode, ck, err))


def test_sigkill_at_random_moments():
    out = path("killed")
    args = ["--set", "max_iters=120", "--set", "eval_interval=7", "--set", "checkpoint_interval=7",
            "--set", "keep_checkpoints=2"]
    rng = random.Random(1234)
    first = True
    for attempt in range(6):
        p = subprocess.Popen(train_args(out, *args, *([] if first else ["--resume"])),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        if first:  # the first kill comes after the first checkpoint exists
            t0 = time.time()
            while not os.path.exists(os.path.join(out, "latest")) and time.time() - t0 < 60 and p.poll() is None:
                time.sleep(0.01)
            first = False
        time.sleep(rng.uniform(0.05, 1.5))
        p.kill()
        p.wait()
        ok, ck, err = loadable(out)
        check("SIGKILL #%d at a random moment: 'latest' names a loadable checkpoint (%s)"
              % (attempt + 1, os.path.basename(ck)), ok, err)
    r = run(train_args(out, *args, "--resume"))
    ms = metrics(out)
    check("after the kills, --resume runs to the end", r.returncode == 0 and ms[-1]["step"] == 120, r.stderr)
    leftovers = [f for f in os.listdir(out) if ".tmp." in f]
    models = [f for f in os.listdir(out) if f.startswith("ckpt_") and not f.endswith(".optim.safetensors")]
    check("no temporary files left, and only keep_checkpoints = 2 checkpoints kept",
          not leftovers and len(models) == 2, "%s %s" % (leftovers, models))
    steps = [m["step"] for m in ms]
    check("metrics.jsonl has each step once, in order, after the kills", steps == sorted(set(steps)))


def test_full_disk_keeps_the_old_checkpoint():
    out = path("full")
    r = run(train_args(out, "--set", "max_iters=5", "--set", "eval_interval=5"))
    ck_size = os.path.getsize(os.path.join(out, "ckpt_000005.safetensors"))
    limit = ck_size // 2  # config.toml and metrics fit; no checkpoint does: like a disk filling up

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r2 = subprocess.run(train_args(out, "--resume", "--set", "max_iters=10", "--set", "eval_interval=5"),
                        capture_output=True, text=True, env=env(), preexec_fn=small_disk)
    lines = [l for l in r2.stderr.splitlines() if l.strip()]
    ok, ck, err = loadable(out)
    check("a checkpoint write that fails (file too large) is a one-line error",
          r.returncode == 0 and r2.returncode != 0 and len(lines) == 1 and "write failed" in lines[0], r2.stderr)
    check("... and the previous checkpoint is intact and still 'latest'",
          ok and ck.endswith("ckpt_000005.safetensors") and
          not [f for f in os.listdir(out) if ".tmp." in f], "%s %s" % (ck, err))
    r3 = run(train_args(out, "--resume", "--set", "max_iters=10", "--set", "eval_interval=5"))
    check("... and the run resumes once there is space", r3.returncode == 0 and metrics(out)[-1]["step"] == 10,
          r3.stderr)


def test_corrupt_checkpoints_are_rejected():
    good = path("full", "ckpt_000010.safetensors")
    header, body = read_st(good)
    names = sorted(k for k in header if k != "__metadata__")
    w = "transformer.h.0.branch_attn.1.c_attn.weight"
    cases = []

    def case(name, fragment, make):
        p = path("bad_" + name + ".safetensors")
        make(p)
        cases.append((name, p, fragment))

    def flip(p, pos):
        data = bytearray(open(good, "rb").read())
        data[pos] ^= 0x10
        open(p, "wb").write(bytes(data))

    case("flipped-data-byte", "checksum mismatch", lambda p: flip(p, os.path.getsize(good) - 1000))
    case("flipped-header-byte", "", lambda p: flip(p, 8 + 2))
    case("truncated", "outside the data", lambda p: open(p, "wb").write(open(good, "rb").read()[:-4000]))
    case("absurd-header-length", "header length", lambda p: write_st(p, header, body, hlen=1 << 62))

    def overlap(p):
        h = json.loads(json.dumps(header))
        a, b = h[names[0]]["data_offsets"], h[names[1]]["data_offsets"]
        h[names[1]]["data_offsets"] = [a[0], a[0] + (b[1] - b[0])]
        write_st(p, h, body)
    case("overlapping-offsets", "overlap", overlap)

    def out_of_range(p):
        h = json.loads(json.dumps(header))
        h[w]["data_offsets"] = [len(body) - 4, len(body) + 4092]
        write_st(p, h, body)
    case("offset-out-of-range", "outside the data", out_of_range)

    def wrong_dtype(p):
        h = json.loads(json.dumps(header))
        h[w]["dtype"] = "I32"
        del h["__metadata__"]["checksum"]
        write_st(p, h, body)
    case("wrong-dtype", "dtype", wrong_dtype)

    def wrong_shape(p):
        h = json.loads(json.dumps(header))
        s = h[w]["shape"]
        h[w]["shape"] = [s[1], s[0]]  # same size, other shape
        write_st(p, h, body)
    case("wrong-shape", "shape", wrong_shape)

    for name, p, fragment in cases:
        r = run([MHC, "info", "--ckpt", p])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        check("corrupt checkpoint (%s) rejected with a one-line message" % name,
              r.returncode != 0 and len(lines) == 1 and p in lines[0] and fragment in lines[0], r.stderr)


def test_nonfinite_steps():
    out = path("nan")
    r = run(train_args(out, "--set", "max_iters=8", "--set", "eval_interval=4", "--set", "checkpoint_interval=1",
                       "--set", "keep_checkpoints=20", "--json"), env=env(MHC_TEST_NONFINITE_STEPS="3"))
    res = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
    skipped = [m for m in metrics(out) if m.get("skipped")]
    same = [read_st(path("nan", "ckpt_%06d%s.safetensors" % (s, x)))[0]["__metadata__"]["checksum"]
            for x in ("", ".optim") for s in (2, 3)]
    check("a forced NaN step is skipped, counted and logged; the run completes",
          r.returncode == 0 and res.get("skipped_steps") == 1 and [m["step"] for m in skipped] == [3], r.stderr)
    check("... and weights and optimizer state are unchanged by it (step 3 checkpoint == step 2's)",
          same[0] == same[1] and same[2] == same[3], same)
    out = path("nan_stop")
    r = run(train_args(out, "--set", "max_iters=10", "--set", "eval_interval=5", "--set", "checkpoint_interval=1",
                       "--set", "keep_checkpoints=20", "--set", "max_nonfinite_steps=3"),
            env=env(MHC_TEST_NONFINITE_STEPS="3,4,5"))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    ok, ck, err = loadable(out)
    good = read_st(path("nan_stop", "ckpt_000002.safetensors"))[0]["__metadata__"]["checksum"]
    last = read_st(ck)[0]["__metadata__"]["checksum"] if ok else None
    check("repeated NaNs stop the run with a clear message and a checkpoint of the last good state",
          r.returncode != 0 and "3 steps in a row" in lines[-1] and ck.endswith("ckpt_000005.safetensors")
          and last == good, r.stderr)


def test_fuzz_reproducers_are_refused():
    # Every input the fuzzers found a problem with (fuzz/README.md) is now a one-line refusal.
    repro = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz", "repro")
    for f in sorted(os.listdir(repro)):
        p = os.path.join(repro, f)
        if f.endswith(".safetensors"):
            r = run([MHC, "info", "--ckpt", p])
        else:
            r = run([MHC, "train", "--config", p, "--data", path("corpus.txt"), "--out", path("repro_" + f)])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        check("fuzz reproducer %s refused with a one-line error" % f,
              r.returncode == 1 and len(lines) == 1 and "error" in lines[0], r.stderr[-300:])


def write_corpus():
    with open(path("corpus.txt"), "wb") as f:
        f.write(b"".join(b"line %d: the quick brown fox jumps over the lazy dog.\n" % i for i in range(3000)))


if __name__ == "__main__":
    finish(write_corpus, test_sigint_then_resume_equals_uninterrupted, test_second_signal_exits_at_once,
           test_sigkill_at_random_moments, test_full_disk_keeps_the_old_checkpoint,
           test_corrupt_checkpoints_are_rejected, test_nonfinite_steps, test_fuzz_reproducers_are_refused)
