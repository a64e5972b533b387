#!/usr/bin/python3
"""A run you can trust (issue 15), end to end (run by ctest).

    /usr/bin/python3 tests/cli/test_trust.py BUILD/mhc

One writer per run directory (two trainers started at the same instant, a lock released by
SIGKILL, two compares on one --out), the NaN guard (a diverging run names a state that evaluates
and resumes), non-finite models refused by eval/info/sample, the fixed validation set, the newest
intact checkpoint after a corrupt one, wall-clock time in metrics.jsonl, data identity in compare
(and of a pattern of llm.c shards), and the one-line messages. Prints one line per check and a last line `N passed, M failed`; exits
non-zero on any failure.
"""
import json
import os
import signal
import struct
import subprocess
import time

from harness import last_json, MHC, check, path, metrics, one_line_error, stderr_lines, finish, llmc_shard

TINY = ["--set", "n_layer=2", "--set", "n_head=2", "--set", "n_embd=32", "--set", "block_size=16",
        "--set", "batch_size=4", "--set", "warmup_iters=2", "--set", "eval_iters=2", "--set", "log_interval=1",
        "--set", "diag_interval=0"]


def env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1", **extra)


def run(*args, **kw):
    return subprocess.run([MHC, *args], capture_output=True, text=True, env=kw.pop("env", env()), **kw)


def train(out, *more, **kw):
    return run("train", "--data", path("corpus.txt"), "--out", out, *TINY, "--quiet", *more, **kw)


def latest(out):
    with open(os.path.join(out, "latest")) as f:
        return f.read().strip()


# ---- safetensors by hand (the checksum as src/io/checkpoint.cpp computes it) ----

DTYPE_CODE = {"F64": 0, "F32": 1, "F16": 2, "BF16": 3, "I64": 4, "I32": 5}


def read_st(p):
    with open(p, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), bytearray(data[8 + n:])


def write_st(p, header, body):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(body))


def drop_checksum(header):
    header.get("__metadata__", {}).pop("checksum", None)  # files without one are accepted
    return header


def scaled_checkpoint(src, dst, factor=None, nan=False):
    """A copy of a checkpoint with every F32 tensor multiplied by factor, or its first one set to NaN."""
    header, body = read_st(src)
    first = True
    for name, t in sorted(header.items()):
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        vals = list(struct.unpack("<%df" % ((b - a) // 4), body[a:b]))
        if nan and first:
            vals[0] = float("nan")
        elif factor is not None:
            vals = [max(-3e38, min(3e38, v * factor)) for v in vals]
        body[a:b] = struct.pack("<%df" % len(vals), *vals)
        first = False
    write_st(dst, drop_checksum(header), body)


def test_two_trainers_at_the_same_instant():
    out = path("race")
    start = time.time() + 0.5  # both processes exec at this instant

    def at_start():
        time.sleep(max(0.0, start - time.time()))

    procs = [subprocess.Popen([MHC, "train", "--data", path("corpus.txt"), "--out", out, *TINY, "--quiet",
                               "--set", "max_iters=40", "--set", "eval_interval=10", "--set", "seed=%d" % seed],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                              preexec_fn=at_start) for seed in (11, 22)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    winner = codes.index(0) if codes.count(0) == 1 else None
    check("two trainers started at the same instant on one --out: exactly one runs", winner is not None,
          "exit codes %s: %s" % (codes, results))
    if winner is None:
        return
    loser = 1 - winner
    err = [l for l in results[loser][1].splitlines() if l.strip()]
    check("... the other is refused in one line naming the holder's pid",
          codes[loser] != 0 and len(err) == 1 and ("process %d" % procs[winner].pid) in err[0] and "in use" in err[0],
          results[loser][1])
    steps = [m["step"] for m in metrics(out)]
    check("... metrics.jsonl holds each step once, in order (no interleaving)", steps == list(range(1, 41)), steps)
    with open(os.path.join(out, "config.toml")) as f:
        cfg = f.read()
    check("... config.toml names the winner's seed", ("seed = %d" % (11, 22)[winner]) in cfg, cfg)
    check("... and no lock file is left after a clean exit", not os.path.exists(os.path.join(out, "lock")))


def test_lock_released_by_sigkill():
    out = path("killed")
    p = subprocess.Popen([MHC, "train", "--data", path("corpus.txt"), "--out", out, *TINY, "--quiet",
                          "--set", "max_iters=100000", "--set", "eval_interval=5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    t0 = time.time()
    while not os.path.exists(os.path.join(out, "latest")) and time.time() - t0 < 60 and p.poll() is None:
        time.sleep(0.01)
    r = train(out, "--resume", "--set", "max_iters=100000", "--set", "eval_interval=5")
    check("while a trainer runs, a second one (--resume) is refused naming its pid",
          one_line_error(r, "process %d" % p.pid)[0], r.stderr)
    p.kill()
    p.wait()
    stale = os.path.exists(os.path.join(out, "lock"))
    step = int(latest(out)[5:])
    r = train(out, "--resume", "--set", "max_iters=%d" % (step + 3), "--set", "eval_interval=5")
    check("after SIGKILL the lock is gone with the process: a new trainer resumes at once (the stale lock file "
          "is taken over)", stale and r.returncode == 0 and metrics(out)[-1]["step"] == step + 3, r.stderr)


def test_two_compares_on_one_out():
    cfg = path("tiny.toml")
    with open(cfg, "w") as f:
        f.write("n_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\nbatch_size = 2\nwarmup_iters = 2\n"
                "eval_interval = 100000\neval_iters = 1\nlog_interval = 1\n")
    out = path("cmp_lock")
    p = subprocess.Popen([MHC, "compare", "--config", cfg, "--data", path("corpus.txt"), "--variants", "none",
                          "--set", "max_iters=100000", "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    err = ""
    while "[none-s1] step" not in err:
        line = p.stderr.readline()
        if not line:
            break
        err += line
    r = run("compare", "--config", cfg, "--data", path("corpus.txt"), "--variants", "none", "--set",
            "max_iters=100000", "--out", out)
    check("a second compare on the same --out is refused naming the first's pid",
          one_line_error(r, "process %d" % p.pid)[0], r.stderr)
    r = train(os.path.join(out, "runs", "none-s1"), "--resume")
    check("... and so is a trainer on one of its run directories (its child trainer holds it)",
          one_line_error(r, "in use by process")[0], r.stderr)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    check("... the first compare stops as usual (exit 130)", p.returncode == 130, p.returncode)


def find_diverging_run():
    """A learning rate far too high for the model: finite for a few steps, then NaN. Weight decay at
    lr * weight_decay = 10 flips and grows the weights each step: finite weights whose loss overflows."""
    out = path("diverge")
    r = train(out, "--set", "max_iters=60", "--set", "learning_rate=100", "--set", "warmup_iters=0",
              "--set", "min_lr=0", "--set", "eval_interval=4", "--set", "checkpoint_interval=2",
              "--set", "keep_checkpoints=100", "--set", "max_nonfinite_steps=3")
    return out, r


def test_nan_guard():
    out, r = find_diverging_run()
    lines = stderr_lines(r)
    check("a diverging run stops with a one-line message naming the last good state",
          r.returncode != 0 and lines and "steps in a row" in lines[-1] and "last good state is" in lines[-1],
          r.stderr)
    if not os.path.exists(os.path.join(out, "latest")):
        check("... which is a checkpoint", False, r.stderr)
        return
    ck = os.path.join(out, latest(out) + ".safetensors")
    check("... and 'latest' names it", ck in lines[-1], "%s vs %s" % (ck, lines[-1]))
    # Every checkpoint on disk evaluates to a finite loss: none was written from a non-finite state.
    bad = []
    for f in sorted(os.listdir(out)):
        if f.startswith("ckpt_") and f.endswith(".safetensors") and ".optim" not in f:
            e = run("eval", "--ckpt", os.path.join(out, f), "--data", path("corpus.txt"), "--batch", "2",
                    "--batches", "2", "--json")
            if e.returncode != 0 or not isinstance(last_json(e).get("loss"), float):
                bad.append((f, e.stderr.strip()))
    check("... every checkpoint written evaluates to a finite loss", not bad, bad)
    e = run("eval", "--ckpt", out, "--data", path("corpus.txt"), "--batch", "2", "--batches", "2", "--json")
    check("... the named state evaluates to a finite loss (eval --ckpt RUN_DIR takes it)",
          e.returncode == 0 and isinstance(last_json(e).get("loss"), float), e.stderr)
    s = run("sample", "--ckpt", ck, "--max-new-tokens", "8", "--json")
    check("... and samples", s.returncode == 0 and len(last_json(s).get("tokens", [])) == 8, s.stderr)
    step = int(latest(out)[5:])
    r2 = train(out, "--resume", "--set", "learning_rate=1e-3", "--set", "min_lr=1e-4")
    ms = metrics(out)
    check("the advice works: --resume with a lower learning rate runs to the end",
          r2.returncode == 0 and ms[-1]["step"] == 60 and isinstance(ms[-1].get("val_loss"), float), r2.stderr)
    first = [m for m in ms if m["step"] == step + 1]
    check("... and the step after the named state (%d) is finite" % step,
          first and isinstance(first[0]["loss"], float) and not first[0].get("skipped"), first)


def test_nonfinite_model_refused():
    out = path("good")
    r = train(out, "--set", "max_iters=4", "--set", "eval_interval=4")
    check("train a tiny model to spoil", r.returncode == 0, r.stderr)
    ck = os.path.join(out, "ckpt_000004.safetensors")
    nan_ck, big_ck = path("nan.safetensors"), path("overflow.safetensors")
    scaled_checkpoint(ck, nan_ck, nan=True)
    scaled_checkpoint(ck, big_ck, factor=1e30)
    for name, c in (("NaN weights", nan_ck), ("weights that overflow", big_ck)):
        for args in (["eval", "--ckpt", c, "--data", path("corpus.txt"), "--batches", "2"],
                     ["eval", "--ckpt", c, "--data", path("corpus.txt"), "--batches", "2", "--json"],
                     ["info", "--ckpt", c], ["sample", "--ckpt", c, "--max-new-tokens", "4", "--json"],
                     ["train", "--data", path("corpus.txt"), "--init-from", c, "--out", path("from_bad")]):
            r = run(*args)
            ok, msg = one_line_error(r, c)
            check("%s: %s exits non-zero with one line naming the checkpoint" % (name, " ".join(args[:1] + args[-1:])),
                  ok and "null" not in r.stdout and "nan" not in r.stdout, "rc %d: %s | %s" % (r.returncode, msg,
                                                                                                r.stdout[-200:]))


def test_validation_is_fixed():
    outs = []
    for interval in (5, 10):
        out = path("val_%d" % interval)
        r = train(out, "--set", "max_iters=10", "--set", "eval_interval=%d" % interval,
                  "--set", "checkpoint_interval=10")
        check("train with eval_interval %d" % interval, r.returncode == 0, r.stderr)
        outs.append({m["step"]: m for m in metrics(out)})
    a, b = outs[0].get(10, {}).get("val_loss"), outs[1].get(10, {}).get("val_loss")
    check("val loss at step 10 is bit-identical with eval_interval 5 and 10 (%r, %r)" % (a, b),
          a is not None and a == b)
    check("... and so are the training losses", [m["loss"] for m in outs[0].values()] ==
          [m["loss"] for m in outs[1].values()])
    # The held-out part of a file, as train splits it: eval --split val on the file = eval on that part.
    with open(path("corpus.txt"), "rb") as f:
        data = f.read()
    with open(path("corpus_val.txt"), "wb") as f:
        f.write(data[int(len(data) * 0.9):])
    ck = path("val_5")
    common = ["--batch", "2", "--order", "sequential", "--batches", "3", "--json"]
    r1 = run("eval", "--ckpt", ck, "--data", path("corpus.txt"), "--split", "val", *common)
    r2 = run("eval", "--ckpt", ck, "--data", path("corpus_val.txt"), *common)
    l1, l2 = last_json(r1).get("loss"), last_json(r2).get("loss")
    check("eval --split val evaluates only the held-out part (the run's train_split) (%r, %r)" % (l1, l2),
          l1 is not None and l1 == l2 and "train_split of" in r1.stderr, r1.stderr + r2.stderr)


def test_corrupt_newest_checkpoint():
    out = path("corrupt")
    r = train(out, "--set", "max_iters=10", "--set", "eval_interval=5", "--set", "checkpoint_interval=5")
    check("train 10 steps with checkpoints at 5 and 10", r.returncode == 0, r.stderr)
    newest = os.path.join(out, "ckpt_000010.safetensors")
    data = bytearray(open(newest, "rb").read())
    data[-100] ^= 0x10
    open(newest, "wb").write(bytes(data))
    r = train(out, "--resume", "--set", "max_iters=15")
    ok, msg = one_line_error(r, "ckpt_000010.safetensors", "corrupt", "ckpt_000005", "--resume-from-intact")
    check("a corrupt newest checkpoint: --resume says so and names the newest intact one", ok, msg)
    check("... and changes nothing", latest(out) == "ckpt_000010" and metrics(out)[-1]["step"] == 10)
    r = train(out, "--resume-from-intact", "--set", "max_iters=15")
    steps = [m["step"] for m in metrics(out)]
    check("--resume-from-intact resumes from ckpt_000005, saying so, and runs to the end",
          r.returncode == 0 and "resuming from ckpt_000005" in r.stderr and steps == list(range(1, 16)),
          r.stderr + str(steps))


def test_time_in_metrics():
    out = path("timed")
    r = train(out, "--set", "max_iters=6", "--set", "eval_interval=3")
    first = metrics(out)
    r2 = train(out, "--resume", "--set", "max_iters=9", "--set", "eval_interval=3")
    ms = metrics(out)
    times = [m.get("time_s") for m in ms]
    check("metrics.jsonl records time_s, increasing over a resume",
          r.returncode == 0 and r2.returncode == 0 and all(isinstance(t, float) for t in times) and
          times == sorted(times) and times[6] > first[-1]["time_s"] * 0.999, times)


def test_messages():
    out = path("msg")
    r = run("train", "--data", path("corpus.txt"), "--out", out, *TINY, "--set", "max_iters=3",
            "--set", "eval_interval=3")
    lines = stderr_lines(r)
    head = [l for l in lines if l.startswith("data: ")]
    check("the train header names the data's format (and how it was chosen), vocabulary and each split's tokens",
          r.returncode == 0 and head and "text (guessed from the file name), vocab 256" in head[0] and
          "training tokens" in head[0] and "validation tokens (the last 10%" in head[0], r.stderr)

    r = train(out, "--resume", "--set", "n_embd=64", "--set", "n_head=4")
    check("a resume with another model names each differing key",
          one_line_error(r, "n_embd 32 in the checkpoint, 64 in the config",
                         "n_head 2 in the checkpoint, 4 in the config")[0], r.stderr)

    os.remove(os.path.join(out, "config.toml"))
    r = run("train", "--data", path("corpus.txt"), "--out", out, "--resume", "--set", "max_iters=5", "--quiet")
    with open(os.path.join(out, "config.toml")) as f:
        cfg = f.read()
    check("a resume without config.toml takes the checkpoint's config, saying so",
          r.returncode == 0 and "config stored in" in r.stderr and "n_embd = 32" in cfg, r.stderr + cfg)

    r = run("eval", "--ckpt", os.path.join(out, "ckpt_000005.safetensors"), "--data", path("corpus.txt"),
            "--batch", "0")
    ok, msg = one_line_error(r, "--batch", "must be >= 1, got 0")
    check("a numeric range is worded in one short line (no 310-digit bound)", ok and len(msg) < 200, msg)
    # A batch past the machine's memory: refused from the estimate, before the tokens or the engine
    # take any (without it only an allocation that fails outright was caught; one the kernel grants
    # on overcommit but cannot back ends in its OOM killer, with no message).
    for sub, more, use in (("eval", ["--data", path("corpus.txt")], "to evaluate"), ("info", [], "diagnostics")):
        r = run(sub, "--ckpt", out, "--batch", "100000000", *more)
        check("%s with a batch past the machine's memory: one line with the estimate" % sub,
              one_line_error(r, "a batch of 100000000 x", "needs about", use, "a smaller --batch")[0], r.stderr)
    r = run("sample", "--ckpt", out, "--temperature", "-1")
    check("... --temperature -1 too", one_line_error(r, "--temperature", ">= 0")[0] and len(r.stderr) < 200,
          r.stderr)
    r = run("trian", "--data", path("corpus.txt"))
    check("a misspelled subcommand: named, with the one it resembles",
          one_line_error(r, "unknown subcommand 'trian'", "did you mean 'train'")[0], r.stderr)
    r = run("sample", "--ckpt", out, "--prompt", "ab", "--prompt-tokens", "1,2")
    check("--prompt with --prompt-tokens is refused", one_line_error(r, "--prompt")[0], r.stderr)
    r = run("sample", "--ckpt", out, "--max-new-tokens", "4", "--json")
    check("--ckpt takes a run directory (its latest checkpoint)",
          r.returncode == 0 and len(last_json(r).get("tokens", [])) == 4, r.stderr)
    r = run("bench", "--threads", "-1")
    check("bench --threads: the error and the help agree (0 = OpenMP's default)",
          one_line_error(r, "--threads", "must be >= 0")[0] and "0: OpenMP's default" in run("bench", "--help").stdout,
          r.stderr)

    toks = open(path("corpus.txt"), "rb").read()[:4000]
    with open(path("val.bin"), "wb") as f:
        f.write(struct.pack("<%dH" % len(toks), *toks))
    r = run("train", "--data", path("corpus.txt"), "--val-data", path("val.bin"), "--out", path("mixed"), *TINY)
    check("text training data with u16 validation data is refused, naming both formats",
          one_line_error(r, "reads as text", "as u16", "--format")[0], r.stderr)
    check("... leaving no run directory", not os.path.exists(path("mixed")))

    r = run("train", "--data", path("corpus.txt"), "--out", path("huge"), "--set", "n_layer=2000",
            "--set", "n_embd=8192", "--set", "n_head=8")
    check("an impossible model is refused before allocating, with its estimated memory",
          one_line_error(r, "needs about", "GiB", "parameters")[0], r.stderr)
    check("... leaving no run directory", not os.path.exists(path("huge")))

    for sub, shown in (("train", "--format"), ("eval", "--batch"), ("sample", "--top-k"), ("info", "--batch"),
                       ("bench", "--steps"), ("compare", "--seeds")):
        h = run(sub, "--help").stdout
        line = [l for l in h.splitlines() if l.strip().startswith(shown)]
        check("%s --help shows the defaults (%s)" % (sub, shown), bool(line) and "=" in line[0], line)
    h = run("compare", "--help").stdout
    check("compare --help marks --config required (except with --report-only)",
          "required, except with --report-only" in h, h)


def test_compare_data_identity():
    cfg = path("tiny2.toml")
    with open(cfg, "w") as f:
        f.write("n_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\nbatch_size = 2\nwarmup_iters = 2\n"
                "max_iters = 4\neval_interval = 2\neval_iters = 1\nlog_interval = 1\n")
    out = path("cmp_data")
    other = path("other.txt")
    with open(other, "wb") as f:
        f.write(open(path("corpus.txt"), "rb").read()[::-1])
    r = run("compare", "--config", cfg, "--data", path("corpus.txt"), "--variants", "none", "--out", out)
    check("compare trains a run", r.returncode == 0, r.stderr)
    rec = json.load(open(os.path.join(out, "runs", "none-s1", "data.json")))
    check("the run directory records its data (path, size, content hash, format)",
          rec["train"]["path"] == path("corpus.txt") and rec["train"]["bytes"] == os.path.getsize(path("corpus.txt"))
          and rec["train"]["hash"].startswith("crc32:") and rec["val"] is None and rec["format"] == "text", rec)
    r = run("compare", "--config", cfg, "--data", other, "--variants", "none", "--out", out)
    check("compare on other data refuses to reuse the run, naming both files",
          one_line_error(r, "trained on other data", "corpus.txt", "other.txt", "--retrain-other-data")[0], r.stderr)
    r = run("compare", "--config", cfg, "--data", other, "--variants", "none", "--out", out, "--retrain-other-data",
            "--json")
    rec = json.load(open(os.path.join(out, "runs", "none-s1", "data.json")))
    check("--retrain-other-data trains it again on the new data",
          r.returncode == 0 and [x["status"] for x in last_json(r).get("runs", [])] == ["retrained"] and
          rec["train"]["path"] == other, r.stderr)
    r = run("train", "--data", path("corpus.txt"), "--out", os.path.join(out, "runs", "none-s1"), "--resume",
            "--set", "max_iters=6")
    check("mhc train --resume on other data than the run's is refused too",
          one_line_error(r, "trained on other data")[0], r.stderr)


def test_shards_by_pattern():
    d = path("shards")
    os.makedirs(d)
    text = open(path("corpus.txt"), "rb").read()
    third = len(text) // 3
    for i in range(3):
        with open(os.path.join(d, "train_%06d.bin" % i), "wb") as f:
            f.write(llmc_shard(list(text[i * third:(i + 1) * third])))
    pattern = os.path.join(d, "train_*.bin")
    out = path("shards_run")
    small = ["--set", "vocab_size=256", "--set", "max_iters=4", "--set", "eval_interval=2"]
    r = run("train", "--data", pattern, "--out", out, *TINY, *small)
    check("train reads a quoted pattern of llm.c shards as one stream, the header naming the count",
          r.returncode == 0 and ("data: %s (3 files): llmc" % pattern) in r.stdout + r.stderr, r.stdout + r.stderr)
    rec = json.load(open(os.path.join(out, "data.json"))) if r.returncode == 0 else {}
    check("data.json records the pattern, its file count, total size and a hash over the files",
          rec.get("train", {}).get("path") == pattern and rec["train"].get("files") == 3 and
          rec["train"].get("bytes") == sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)) and
          rec["train"].get("hash", "").startswith("files-crc32:"), rec)
    r = run("eval", "--ckpt", out, "--data", pattern, "--json")
    check("eval takes the pattern", r.returncode == 0 and last_json(r).get("loss", 0) > 0, r.stderr)
    r = run("train", "--data", pattern, "--out", out, "--resume", "--set", "max_iters=6", "--quiet")
    check("a run on a pattern resumes on the same files", r.returncode == 0 and latest(out) == "ckpt_000006", r.stderr)
    with open(os.path.join(d, "train_000001.bin"), "r+b") as f:
        f.seek(1024)
        f.write(b"\x00\x00")
    r = run("train", "--data", pattern, "--out", out, "--resume", "--set", "max_iters=8", "--quiet")
    check("one shard changed: the resume is refused as other data",
          one_line_error(r, "trained on other data", pattern)[0], r.stderr)
    shards = sorted(os.path.join(d, n) for n in os.listdir(d))
    r = run("train", "--data", *shards, "--out", path("unquoted_run"))
    check("a pattern the shell expanded (many files after --data) is one line saying to quote it",
          one_line_error(r, "not expected", "quote it, as in --data 'dir/train_*.bin'")[0] and
          not os.path.exists(path("unquoted_run")), r.stderr)
    for cmd in (["train", "--out", path("none_run")], ["eval", "--ckpt", out],
                ["compare", "--config", path("tiny2.toml"), "--out", path("none_cmp")]):
        r = run(*cmd, "--data", os.path.join(d, "val_*.bin"))
        check("%s: a pattern that matches nothing is one line naming it" % cmd[0],
              one_line_error(r, os.path.join(d, "val_*.bin") + ": no file matches this pattern")[0], r.stderr)


def write_corpus():
    with open(path("corpus.txt"), "wb") as f:
        f.write(b"".join(b"line %d: the quick brown fox jumps over the lazy dog.\n" % i for i in range(600)))


if __name__ == "__main__":
    finish(write_corpus, test_two_trainers_at_the_same_instant, test_lock_released_by_sigkill,
           test_two_compares_on_one_out, test_nan_guard, test_nonfinite_model_refused, test_validation_is_fixed,
           test_corrupt_newest_checkpoint, test_time_in_metrics, test_messages, test_compare_data_identity,
           test_shards_by_pattern)
