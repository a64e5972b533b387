#!/usr/bin/python3
"""End-to-end tests of the `mhc` command line (run by ctest).

    /usr/bin/python3 tests/cli/test_cli.py BUILD/mhc

Trains tiny models, so the whole file runs in well under a minute. Prints one line per check and
a last line `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import struct
import subprocess

from harness import MHC, check, ckpt_metadata, path, metrics, one_line_error, finish, llmc_shard, last_json

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "reference", "ckpt_loss.py")

TINY = ["--set", "n_layer=2", "--set", "n_head=2", "--set", "n_embd=32", "--set", "block_size=16",
        "--set", "batch_size=4", "--set", "warmup_iters=2", "--set", "eval_interval=5",
        "--set", "eval_iters=2", "--set", "log_interval=1", "--set", "hyper_conn_n=4"]


def run(*args, env_threads="2"):
    env = dict(os.environ, OMP_NUM_THREADS=env_threads)
    return subprocess.run([MHC, *args], capture_output=True, text=True, env=env)


def write_corpus():
    text = b""
    for i in range(400):
        text += b"The quick brown fox %d jumps over the lazy dog; pack my box with five dozen jugs.\n" % i
    with open(path("corpus.txt"), "wb") as f:
        f.write(text)
    toks = list(text[:20000])
    with open(path("tokens.bin"), "wb") as f:  # nanoGPT uint16
        f.write(struct.pack("<%dH" % len(toks), *toks))
    with open(path("shard.bin"), "wb") as f:
        f.write(llmc_shard(toks))
    other = b"".join(b"%d bottles of beer on the wall, %d bottles of beer; take one down.\n" % (i, i) for i in range(300))
    with open(path("other.txt"), "wb") as f:  # a second corpus, to fine-tune on
        f.write(other)


def test_resume_is_bit_identical():
    # Both runs pin lr_decay_iters, so the schedule of the first half matches the straight run's.
    # Samples every 3 steps, which read the model only: the runs must not notice them.
    common = ["--data", path("corpus.txt"), *TINY, "--set", "lr_decay_iters=20", "--set", "checkpoint_interval=5",
              "--set", "gradient_accumulation_steps=2", "--quiet", "--set", "sample_interval=3", "--set", "sample_tokens=12"]
    r = run("train", *common, "--set", "max_iters=20", "--out", path("straight"))
    check("train 20 steps straight", r.returncode == 0, r.stderr)
    r = run("train", *common, "--set", "max_iters=20", "--set", "sample_interval=0", "--out", path("no_samples"))
    check("the same without samples: the same losses", r.returncode == 0 and
          [(m["step"], m["loss"]) for m in metrics(path("no_samples"))] ==
          [(m["step"], m["loss"]) for m in metrics(path("straight"))], r.stderr)
    r = run("train", *common, "--set", "max_iters=10", "--out", path("split"))
    check("train the first 10 steps", r.returncode == 0, r.stderr)
    r = run("train", "--data", path("corpus.txt"), "--out", path("split"), "--resume", "--set", "max_iters=20",
            "--quiet")
    check("resume for the last 10 steps", r.returncode == 0, r.stderr)
    key = lambda ms: [(m["step"], m["loss"], m.get("val_loss"), m["grad_norm"]) for m in ms]
    a, b = metrics(path("straight")), metrics(path("split"))
    check("resumed losses identical to an uninterrupted run", len(a) == 20 and key(a) == key(b),
          "%s\nvs\n%s" % (key(a)[-3:], key(b)[-3:]))
    sa = {m["step"]: m["sample"] for m in a if "sample" in m}
    sb = {m["step"]: m["sample"] for m in b if "sample" in m}
    check("samples at steps 3, 6, .. 18 and the last; the resumed run's the same (and one where it stopped)",
          sorted(sa) == [3, 6, 9, 12, 15, 18, 20] and sorted(sb) == sorted(list(sa) + [10]) and
          all(sb[k] == sa[k] for k in sa) and all(0 < len(s["tokens"]) <= 12 and "text" in s for s in sa.values()),
          "%s\nvs\n%s" % (sa, sb))
    with open(path("straight/ckpt_000020.safetensors"), "rb") as f1, \
            open(path("split/ckpt_000020.safetensors"), "rb") as f2:
        check("resumed final weights bit-identical", f1.read() == f2.read())
    r = run("train", *common, "--set", "max_iters=20", "--out", path("straight"))
    check("a second run into the same --out is refused", one_line_error(r)[0] and "--resume" in r.stderr,
          r.stderr)


def test_formats_and_eval_against_reference():
    for name, fmt in (("corpus.txt", "text"), ("tokens.bin", "u16"), ("shard.bin", "llmc")):
        out = path("fmt_" + fmt)
        r = run("train", "--data", path(name), *TINY, "--set", "max_iters=6", "--set", "vocab_size=256",
                "--out", out, "--json", "--quiet")
        ok = r.returncode == 0
        res = json.loads(r.stdout.strip().splitlines()[-1]) if ok else {}
        check("train on %s data, --json result" % fmt, ok and res.get("steps") == 6, r.stderr)
    ck = path("fmt_text/ckpt_000006.safetensors")
    r = run("eval", "--ckpt", ck, "--data", path("tokens.bin"), "--batch", "2", "--seq", "16",
            "--order", "sequential", "--batches", "3", "--json")
    ours = json.loads(r.stdout.strip().splitlines()[-1])["loss"] if r.returncode == 0 else None
    ref = subprocess.run(["/usr/bin/python3", REF, "--ckpt", ck, "--tokens", path("tokens.bin"), "--batch", "2",
                          "--seq", "16", "--batches", "3"], capture_output=True, text=True)
    theirs = json.loads(ref.stdout.strip().splitlines()[-1])["loss"] if ref.returncode == 0 else None
    check("checkpoint loads into the PyTorch reference and gives the same loss (sequential windows)",
          ours is not None and theirs is not None and abs(ours - theirs) <= 1e-5 * abs(theirs),
          "mhc %s vs reference %s %s" % (ours, theirs, r.stderr + ref.stderr))
    r = run("info", "--ckpt", ck, "--json")
    info = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
    sites = info.get("sites", [])
    check("info: 2 sites per layer, mhc-lite exactly doubly stochastic, composite gain 1",
          len(sites) == 4 and all(s["ds_error_max"] < 1e-6 and abs(s["depth_fwd_gain_max"] - 1) < 1e-5
                                  for s in sites), r.stderr)


def test_bad_input():
    ck = path("fmt_text/ckpt_000006.safetensors")
    cases = [
        ("missing data file", ["train", "--data", path("nope.txt"), "--out", path("bad1")], "nope.txt"),
        ("unknown config key", ["train", "--data", path("corpus.txt"), "--set", "n_embed=32", "--out", path("bad2")],
         "n_embd"),
        ("n_embd not divisible by n_head", ["train", "--data", path("corpus.txt"), "--set", "n_embd=30",
                                            "--set", "n_head=4", "--out", path("bad3")], "divisible"),
        ("zero steps", ["train", "--data", path("corpus.txt"), "--set", "max_iters=0", "--out", path("bad4")],
         "max_iters"),
        ("negative learning rate", ["train", "--data", path("corpus.txt"), "--set", "learning_rate=-1",
                                    "--out", path("bad5")], "learning_rate"),
        ("data shorter than one window", ["train", "--data", path("short.txt"), *TINY, "--out", path("bad6")],
         "window"),
        ("odd-length uint16 file", ["train", "--data", path("odd.bin"), "--format", "u16", "--out", path("bad7")],
         "odd"),
        ("missing checkpoint", ["eval", "--ckpt", path("nope.safetensors"), "--data", path("corpus.txt")], "nope"),
        ("truncated checkpoint", ["eval", "--ckpt", path("trunc.safetensors"), "--data", path("corpus.txt")],
         "trunc"),
        ("not a checkpoint", ["info", "--ckpt", path("corpus.txt")], "corpus.txt"),
        ("token id beyond the model's vocabulary", ["eval", "--ckpt", path("v64/ckpt_000002.safetensors"),
                                                    "--data", path("tokens.bin")], "vocab"),
        ("resume with another model shape", ["train", "--data", path("corpus.txt"), "--out", path("fmt_text"),
                                             "--resume", "--set", "n_embd=64", "--set", "max_iters=8"], "differs"),
        ("resume with another variant", ["train", "--data", path("corpus.txt"), "--out", path("fmt_text"),
                                         "--resume", "--set", "hyper_conn_type=hc", "--set", "max_iters=8"],
         "differs"),
        ("resume without a run", ["train", "--data", path("corpus.txt"), "--out", path("empty"), "--resume"],
         "no checkpoint"),
        ("eval --seq beyond block_size", ["eval", "--ckpt", ck, "--data", path("corpus.txt"), "--seq", "64"],
         "block_size"),
    ]
    with open(path("short.txt"), "wb") as f:
        f.write(b"too short")
    with open(path("odd.bin"), "wb") as f:
        f.write(b"\x01\x02\x03")
    with open(ck, "rb") as f:
        data = f.read()
    with open(path("trunc.safetensors"), "wb") as f:
        f.write(data[: len(data) // 2])
    r = run("train", "--data", path("corpus.txt"), *TINY, "--set", "vocab_size=64", "--set", "max_iters=2",
            "--out", path("v64"), "--quiet", "--format", "u16")
    # corpus bytes exceed 64: training itself must refuse
    check("training data with a token beyond vocab_size is refused", one_line_error(r)[0] and "vocab" in r.stderr,
          r.stderr)
    with open(path("small.bin"), "wb") as f:
        f.write(struct.pack("<200H", *[i % 64 for i in range(200)]))
    r = run("train", "--data", path("small.bin"), *TINY, "--set", "vocab_size=64", "--set", "max_iters=2",
            "--set", "train_split=0.5", "--out", path("v64"), "--quiet")
    check("train a vocab-64 model on uint16 tokens", r.returncode == 0, r.stderr)
    before = sorted(os.listdir(path("fmt_text")))
    for name, args, fragment in cases:
        r = run(*args)
        ok, msg = one_line_error(r)
        check("bad input: %s -> one-line error" % name, ok and fragment in msg, "rc %d: %s" % (r.returncode, msg))
    for d in ("bad1", "bad2", "bad3", "bad4", "bad5", "bad6", "bad7", "empty"):
        check("no run directory left behind by a refused run (%s)" % d, not os.path.exists(path(d)))
    check("a refused resume leaves the run directory as it was", sorted(os.listdir(path("fmt_text"))) == before)


def test_sample():
    ck = path("fmt_text/ckpt_000006.safetensors")
    outs = []
    for seed in ("1", "1", "2"):
        r = run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "40", "--seed", seed, "--json")
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {})
    check("sample --json: 40 byte tokens and their text",
          len(outs[0].get("tokens", [])) == 40 and len(outs[0].get("text", "")) > 0, str(outs[0]))
    check("sample is deterministic for a seed and differs for another",
          outs[0].get("tokens") == outs[1].get("tokens") and outs[0].get("tokens") != outs[2].get("tokens"))
    r = run("sample", "--ckpt", ck, "--prompt", "ab", "--max-new-tokens", "5", "--temperature", "0")
    check("sample streams the prompt and the text to stdout", r.returncode == 0 and r.stdout.startswith("ab"),
          r.stderr)
    # --num-samples: sample i is the run of seed --seed + i alone; the text lists them under headers.
    many = last_json(run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "40", "--seed", "1",
                         "--num-samples", "3", "--json"))
    got = [x.get("tokens") for x in many.get("samples", [])]
    check("sample --num-samples 3: seeds 1, 2, 3, each as sampled alone",
          len(got) == 3 and got[0] == outs[0].get("tokens") and got[1] == outs[2].get("tokens") and got[2] != got[1] and
          [x.get("seed") for x in many["samples"]] == [1, 2, 3], str(many)[:300])
    r = run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "10", "--num-samples", "2")
    check("sample --num-samples 2 as text: a header before each sample",
          r.returncode == 0 and r.stdout.count("--- sample ") == 2 and "--- sample 2 of 2 (seed 2) ---" in r.stdout, r.stdout)
    # --top-p: a tiny nucleus is greedy; the full one is plain sampling.
    greedy = last_json(run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "40", "--temperature", "0",
                           "--json"))
    tiny_p = last_json(run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "40", "--top-p", "1e-9",
                           "--json"))
    full_p = last_json(run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "40", "--seed", "1",
                           "--top-p", "1", "--json"))
    check("sample --top-p: 1e-9 keeps the most likely token only (greedy), 1 changes nothing",
          greedy.get("tokens") and tiny_p.get("tokens") == greedy.get("tokens") and
          full_p.get("tokens") == outs[0].get("tokens") and full_p.get("finish_reason") == "length", (greedy, tiny_p))
    # Samples while training: text for a model with a tokenizer (bytes here), ids for one without.
    for data, extra, name, want in ((path("corpus.txt"), [], "train_samples_text", "text"),
                                    (path("small.bin"), ["--set", "vocab_size=64", "--set", "train_split=0.5"],
                                     "train_samples_ids", "ids")):
        r = run("train", "--data", data, *TINY, *extra, "--set", "max_iters=2", "--set", "sample_interval=1",
                "--set", "sample_tokens=16", "--out", path(name))
        ss = [m.get("sample", {}) for m in metrics(path(name))] if r.returncode == 0 else []
        check("train with sample_interval=1 (%s): a sample at each step, in metrics and on stderr" % want,
              len(ss) == 2 and all(0 < len(s.get("tokens", [])) <= 16 and ("text" in s) == (want == "text") for s in ss)
              and "sample at step 1:\n" in r.stderr and "sample at step 2:\n" in r.stderr, (ss, r.stderr[-300:]))
    v64 = path("v64/ckpt_000002.safetensors")
    r = run("sample", "--ckpt", v64, "--prompt-tokens", "1,2,3", "--max-new-tokens", "8", "--json")
    res = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
    check("sample a token model from --prompt-tokens",
          len(res.get("tokens", [])) == 8 and all(0 <= t < 64 for t in res["tokens"]), r.stderr)
    for name, args, fragment in (
            ("text prompt for a non-byte model", ["--ckpt", v64, "--prompt", "hi"], "--prompt-tokens"),
            ("malformed --prompt-tokens", ["--ckpt", v64, "--prompt-tokens", "1,x"], "'x'"),
            ("prompt token beyond the vocabulary", ["--ckpt", v64, "--prompt-tokens", "64"], "64"),
            ("--top-p 0", ["--ckpt", ck, "--top-p", "0"], "(0, 1]"),
            ("--top-p 1.5", ["--ckpt", ck, "--top-p", "1.5"], "(0, 1]"),
            ("--num-samples 0", ["--ckpt", ck, "--num-samples", "0"], ">= 1")):
        r = run("sample", *args)
        ok, msg = one_line_error(r)
        check("sample bad input: %s -> one-line error" % name, ok and fragment in msg, msg)


VARIANTS = ("none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc")


def test_every_variant():
    """Each variant of the table trains, evaluates (the same loss as the PyTorch reference), samples
    and reports its diagnostics; the orthogonal ones' guarantees show in `info`."""
    tiny = TINY[:-2]  # without its hyper_conn_n=4: unset, n is 4, and 1 for none
    for v, extra in [(v, []) for v in VARIANTS] + [("jpmhc", ["--set", "cayley_iters=0"])]:
        name = v + ("_exact" if extra else "")
        out = path("var_" + name)
        r = run("train", "--data", path("corpus.txt"), *tiny, "--set", "hyper_conn_type=" + v, *extra,
                "--set", "max_iters=3", "--out", out, "--quiet", "--json")
        check("%s: train" % name, r.returncode == 0, r.stderr)
        ck = os.path.join(out, "ckpt_000003.safetensors")
        r = run("eval", "--ckpt", ck, "--data", path("tokens.bin"), "--batch", "2", "--seq", "16",
                "--order", "sequential", "--batches", "2", "--json")
        ours = json.loads(r.stdout.strip().splitlines()[-1])["loss"] if r.returncode == 0 else None
        ref = subprocess.run(["/usr/bin/python3", REF, "--ckpt", ck, "--tokens", path("tokens.bin"), "--batch", "2",
                              "--seq", "16", "--batches", "2"], capture_output=True, text=True)
        theirs = json.loads(ref.stdout.strip().splitlines()[-1])["loss"] if ref.returncode == 0 else None
        check("%s: eval = the PyTorch reference's loss on the checkpoint" % name,
              ours is not None and theirs is not None and abs(ours - theirs) <= 1e-5 * abs(theirs),
              "mhc %s vs reference %s %s" % (ours, theirs, r.stderr + ref.stderr))
        r = run("sample", "--ckpt", ck, "--prompt", "The ", "--max-new-tokens", "8", "--seed", "1", "--json")
        res = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
        check("%s: sample" % name, len(res.get("tokens", [])) == 8, r.stderr)
        r = run("info", "--ckpt", ck)
        check("%s: info (text) names the variant and has a row per site" % name,
              r.returncode == 0 and (" %s n=" % v) in r.stdout and "orth err" in r.stdout
              and sum(1 for l in r.stdout.splitlines() if l.split()[:1] and l.split()[0].isdigit()) == 4, r.stdout)
        r = run("info", "--ckpt", ck, "--json")
        info = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
        sites = info.get("sites", [])
        check("%s: info --json has the config's variant and 4 sites" % name,
              info.get("config", {}).get("hyper_conn_type") == v and len(sites) == 4, r.stderr)
        if v == "ohc" or extra:
            check("%s: info: orthogonal H_res, composite sigma_1 = sigma_2 = 1" % name,
                  all(s["orth_error_max"] < 1e-6 and abs(s["depth_sigma1_max"] - 1) < 1e-5
                      and abs(s["depth_sigma2_mean"] - 1) < 1e-5 for s in sites), str(sites))
        if v == "jpmhc" and not extra:
            check("jpmhc: the checkpoint keeps cayley_iters = 2 (the paper's default)",
                  info.get("config", {}).get("cayley_iters") == 2, str(info.get("config")))
    for name, sets, fragment in (
            ("ohc with hyper_conn_n 3", ["hyper_conn_type=ohc", "hyper_conn_n=3"], "hyper_conn_n must be 4"),
            ("negative cayley_iters", ["hyper_conn_type=jpmhc", "cayley_iters=-1"], "cayley_iters")):
        args = ["train", "--data", path("corpus.txt"), "--out", path("bad_orth")]
        for s in sets:
            args += ["--set", s]
        ok, msg = one_line_error(run(*args))
        check("bad input: %s -> one-line error" % name, ok and fragment in msg, msg)
    check("no run directory left behind by the refused runs", not os.path.exists(path("bad_orth")))


def test_init_from():
    # A new run from the weights of test_resume_is_bit_identical's 20-step run, on other text.
    base = path("straight")
    ev = lambda ck: last_json(run("eval", "--ckpt", ck, "--data", path("other.txt"), "--order", "sequential",
                                  "--batch", "4", "--seq", "16", "--batches", "10", "--json")).get("loss")
    # At a learning rate of 1e-30 no weight can move: the new run's model is the checkpoint's.
    r = run("train", "--data", path("other.txt"), "--init-from", base, *TINY, "--set", "max_iters=2",
            "--set", "learning_rate=1e-30", "--set", "min_lr=0", "--set", "warmup_iters=1", "--out", path("ft_still"))
    check("train --init-from a run directory (the same model keys given): starts from its weights, says so",
          r.returncode == 0 and "starting from the weights of %s/ckpt_000020.safetensors" % base in r.stderr, r.stderr)
    loss_base, loss_still = ev(base), ev(path("ft_still"))
    check("... its model is the checkpoint's: the same loss on the other text (%r, %r)" % (loss_base, loss_still),
          loss_base is not None and loss_base == loss_still)
    meta = ckpt_metadata(path("ft_still", "ckpt_000002.safetensors"))
    check("... and its checkpoints name the weights it started from", json.loads(meta.get("init_from", "{}")).get("file")
          == base + "/ckpt_000020.safetensors" and json.loads(meta["init_from"]).get("checksum", "").startswith("crc32:"), meta)
    # Fine-tuning proper, without a config (the model keys are the checkpoint's), then resumed.
    r = run("train", "--data", path("other.txt"), "--init-from", path("straight", "ckpt_000020.safetensors"),
            "--set", "max_iters=4", "--set", "warmup_iters=1", "--set", "batch_size=8", "--set", "eval_interval=4",
            "--set", "eval_iters=2", "--out", path("ft"), "--quiet")
    r2 = run("train", "--data", path("other.txt"), "--out", path("ft"), "--resume", "--set", "max_iters=8", "--quiet")
    check("fine-tune 4 steps on the other text, resume to 8: its loss there falls (%r -> %r)" % (loss_base, ev(path("ft"))),
          r.returncode == 0 and r2.returncode == 0 and ev(path("ft")) < loss_base, r.stderr + r2.stderr)
    check("... the resumed run's checkpoints name the same start",
          ckpt_metadata(path("ft", "ckpt_000008.safetensors")).get("init_from") == meta.get("init_from"),
          (ckpt_metadata(path("ft", "ckpt_000008.safetensors")).get("init_from"), meta.get("init_from")))
    # A fine-tuning config that leaves the model out: the checkpoint's; one that sets a model key
    # other than the checkpoint's is refused naming it.
    with open(path("finetune.toml"), "w") as f:
        f.write("max_iters = 2\nwarmup_iters = 1\nbatch_size = 4\neval_interval = 2\neval_iters = 2\n")
    with open(path("finetune_wide.toml"), "w") as f:
        f.write("max_iters = 2\nwarmup_iters = 1\nn_embd = 64\n")
    r = run("train", "--config", path("finetune.toml"), "--data", path("other.txt"), "--init-from", base,
            "--out", path("ft_cfg"), "--quiet")
    check("--init-from with a --config of training keys only: the model is the checkpoint's", r.returncode == 0, r.stderr)
    r = run("train", "--config", path("finetune_wide.toml"), "--data", path("other.txt"), "--init-from", base,
            "--out", path("ft_cfg_wide"))
    ok, msg = one_line_error(r)
    check("--init-from with a --config setting n_embd = 64: refused naming it",
          ok and "n_embd 32 in the checkpoint, 64 in the config" in msg and not os.path.exists(path("ft_cfg_wide")), msg)
    with open(path("ft", "config.toml")) as f:
        check("... its config.toml holds the checkpoint's model", "n_embd = 32" in f.read())
    for name, args, fragment in (
            ("a model key that differs", ["--set", "n_embd=64"], "n_embd 32 in the checkpoint, 64 in the config"),
            ("with --resume", ["--resume"], "--init-from"),
            ("a checkpoint that is not there", ["--set", "max_iters=2"], "nowhere"),
            ("a directory without a checkpoint", ["--set", "max_iters=2"], "without a checkpoint")):
        os.makedirs(path("empty_dir"), exist_ok=True)
        src = {"a checkpoint that is not there": path("nowhere.safetensors"),
               "a directory without a checkpoint": path("empty_dir")}.get(name, base)
        r = run("train", "--data", path("other.txt"), "--init-from", src, "--out", path("ft_bad"), *args)
        ok, msg = one_line_error(r)
        check("--init-from, %s: one-line error, no run directory" % name,
              ok and fragment in msg and not os.path.exists(path("ft_bad")), msg)


def test_help():
    for sub in ("train", "eval", "sample", "info"):
        r = run(sub, "--help")
        check("%s --help" % sub, r.returncode == 0 and ("%s [OPTIONS]" % sub) in r.stdout, r.stderr)


if __name__ == "__main__":
    finish(write_corpus, test_resume_is_bit_identical, test_formats_and_eval_against_reference, test_bad_input,
           test_sample, test_init_from, test_every_variant, test_help)
