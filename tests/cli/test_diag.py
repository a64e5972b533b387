#!/usr/bin/python3
"""The SPEC §6 diagnostics that `mhc train` writes into metrics.jsonl (run by ctest).

    /usr/bin/python3 tests/cli/test_diag.py BUILD/mhc

Tiny runs: diag records every diag_interval steps and at the last step (whatever log_interval),
2L sites with the keys of the shared schema, none with diag_interval=0, peak_rss_mb in every
record, a one-line error for a negative interval, the same diagnostics after --resume.
Prints one line per check and a last line `N passed, M failed`; exits non-zero on any failure.
"""
import os
import subprocess

from harness import MHC, check, path, metrics, one_line_error, finish

LAYERS = 2
TINY = ["--set", "n_layer=%d" % LAYERS, "--set", "n_head=2", "--set", "n_embd=16", "--set", "block_size=8",
        "--set", "batch_size=2", "--set", "warmup_iters=2", "--set", "eval_interval=100", "--set", "eval_iters=1",
        "--set", "log_interval=100", "--quiet"]
KEYS = {"site", "block", "kind", "ds_error_mean", "ds_error_max", "fwd_gain_mean", "fwd_gain_max", "bwd_gain_mean",
        "bwd_gain_max", "depth_fwd_gain_mean", "depth_fwd_gain_max", "depth_bwd_gain_mean", "depth_bwd_gain_max",
        "orth_error_mean", "orth_error_max", "depth_sigma1_mean", "depth_sigma1_max",
        # n >= 2 only (every run here has 4 streams)
        "depth_sigma2_mean", "depth_sigma2_max", "stream_similarity"}
NU_KEYS = {"log_inv_nu_mean", "log_inv_nu_max", "frac_nu_above_30"}


def run(*args):
    return subprocess.run([MHC, *args], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def train(out, *sets):
    args = ["train", "--data", path("corpus.txt"), "--out", path(out), *TINY]
    for s in sets:
        args += ["--set", s]
    r = run(*args)
    check("train %s %s" % (out, " ".join(sets)), r.returncode == 0, r.stderr)
    return metrics(path(out)) if r.returncode == 0 else []


def test_diagnostics():
    with open(path("corpus.txt"), "wb") as f:
        f.write(b"".join(b"%d bottles of beer on the wall, %d bottles of beer.\n" % (i, i) for i in range(300)))

    for variant in ("mhc_lite", "mhc", "hc", "jpmhc", "ohc"):
        recs = train(variant, "hyper_conn_type=" + variant, "max_iters=7", "diag_interval=3",
                     *(["cayley_iters=0"] if variant == "jpmhc" else []))
        diag_steps = [r["step"] for r in recs if "diag" in r]
        check(variant + ": diag at steps 3, 6 and the last (7), though log_interval is 100",
              diag_steps == [3, 6, 7], diag_steps)
        check(variant + ": peak_rss_mb in every record",
              recs and all(isinstance(r.get("peak_rss_mb"), float) and r["peak_rss_mb"] > 1 for r in recs),
              [r.get("peak_rss_mb") for r in recs])
        for r in (r for r in recs if "diag" in r):
            d = r["diag"]
            sites = d["sites"]
            want = KEYS | (NU_KEYS if variant == "mhc" else set())
            check("%s step %d: %d sites with the schema's keys, over %d tokens" % (variant, r["step"], 2 * LAYERS, 16),
                  d["tokens"] == 16 and len(sites) == 2 * LAYERS and all(set(s) == want for s in sites)
                  and [(s["site"], s["block"], s["kind"]) for s in sites] ==
                  [(k, k // 2, "mlp" if k % 2 else "attn") for k in range(2 * LAYERS)],
                  (d["tokens"], [sorted(set(s) ^ want) for s in sites]))
            if variant == "mhc_lite":
                check("mhc_lite step %d: exactly doubly stochastic, composite gain 1" % r["step"],
                      all(s["ds_error_max"] < 1e-6 and abs(s["depth_fwd_gain_max"] - 1) < 1e-5 for s in sites))
            if variant in ("jpmhc", "ohc"):  # jpmhc with cayley_iters = 0: the exact transform
                check("%s step %d: orthogonal, composite sigma_1 = sigma_2 = 1" % (variant, r["step"]),
                      all(s["orth_error_max"] < 1e-6 and abs(s["depth_sigma1_max"] - 1) < 1e-5
                          and abs(s["depth_sigma2_mean"] - 1) < 1e-5 for s in sites), sites)
            check("%s step %d: stream similarity in [-1, 1], sigma_2 <= sigma_1" % (variant, r["step"]),
                  all(-1 <= s["stream_similarity"] <= 1 + 1e-9 and s["depth_sigma2_max"] <= s["depth_sigma1_max"] + 1e-9
                      for s in sites), sites)

    recs = train("single", "hyper_conn_type=none", "max_iters=3", "diag_interval=3")
    sites = [s for r in recs if "diag" in r for s in r["diag"]["sites"]]
    check("none (one stream): no sigma_2 or stream similarity, the other keys present",
          sites and all(set(s) == KEYS - {"depth_sigma2_mean", "depth_sigma2_max", "stream_similarity"}
                        for s in sites), sites)

    recs = train("never", "max_iters=4", "diag_interval=0")
    check("diag_interval=0: no diag record", recs and not any("diag" in r for r in recs), recs)
    check("diag_interval=0: only the first and last step logged (log_interval 100)",
          [r["step"] for r in recs] == [1, 4], [r["step"] for r in recs])

    r = run("train", "--data", path("corpus.txt"), "--out", path("bad"), *TINY, "--set", "diag_interval=-1")
    check("diag_interval=-1: a one-line error naming the key", *one_line_error(r, "diag_interval"))

    # Diagnostics read the model only: a resumed run logs the same ones as an uninterrupted run.
    common = ["hyper_conn_type=mhc", "diag_interval=2", "lr_decay_iters=8", "checkpoint_interval=4"]
    straight = train("straight", *common, "max_iters=8")
    train("split", *common, "max_iters=4")
    r = run("train", "--data", path("corpus.txt"), "--out", path("split"), "--resume", "--set", "max_iters=8",
            "--quiet")
    check("resume the split run", r.returncode == 0, r.stderr)
    key = lambda recs: [(r["step"], r["loss"], r.get("diag")) for r in recs if "diag" in r]
    split = metrics(path("split"))
    check("resumed run: same diag records (steps 2, 4, 6, 8) as the uninterrupted run",
          [s for s, _, _ in key(straight)] == [2, 4, 6, 8] and key(straight) == key(split),
          ([s for s, _, _ in key(straight)], [s for s, _, _ in key(split)]))


if __name__ == "__main__":
    finish(test_diagnostics)
