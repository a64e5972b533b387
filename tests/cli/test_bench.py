#!/usr/bin/python3
"""End-to-end tests of `mhc bench` (run by ctest).

    /usr/bin/python3 tests/cli/test_bench.py BUILD/mhc

A tiny model, 2 timed steps per variant: the figures are noise, the test checks their presence,
their consistency and the error handling. Prints one line per check and a last line
`N passed, M failed`; exits non-zero on any failure.
"""
import os
import subprocess

from harness import MHC, TMP, check, last_json, one_line_error, finish

VARIANTS = ["none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc"]
PHASES = ["matmul", "attention", "connections", "other", "optimizer"]
TINY = ["--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2", "--set", "block_size=16",
        "--set", "batch_size=2"]
FAST = ["--steps", "2", "--warmup", "1"]


def run(*args, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive", **(env or {}))
    return subprocess.run([MHC, "bench", *args], capture_output=True, text=True, env=e)


def test_json_all_variants():
    r = run(*TINY, *FAST, "--json")
    check("bench --json runs", r.returncode == 0, r.stderr)
    d = last_json(r)
    res = {x.get("variant"): x for x in d.get("results", [])}
    check("all seven variants, in order", [x.get("variant") for x in d.get("results", [])] == VARIANTS, list(res))
    check("top level: threads, sgemm peak and its shape, steps, warmup, config, flops_note",
          d.get("threads") == 2 and d.get("sgemm_peak_gflops", 0) > 0 and len(d.get("sgemm_shape", [])) == 3
          and d.get("steps") == 2 and d.get("warmup") == 1 and d.get("config", {}).get("n_embd") == 32
          and d.get("config", {}).get("batch_size") == 2 and "6*P_matmul" in d.get("flops_note", ""),
          {k: v for k, v in d.items() if k != "results"})
    # P_matmul = 12*L*C^2 + V*C = 12*32*32 + 256*32; attention 6*L*C*T per token; 32 tokens.
    flops = (6 * (12 * 32 * 32 + 256 * 32) * 32 + 6 * 1 * 32 * 16 * 32) * 1e-9
    params = set()
    for v in VARIANTS:
        x = res.get(v, {})
        ph = x.get("phases_s", {})
        med, mean = x.get("step_s_median", 0), x.get("step_s_mean", 0)
        total = sum(ph.get(p, 0) for p in PHASES)
        params.add(x.get("params"))
        check("%s: tokens_per_step 32, positive tokens/s = tokens / median step" % v,
              x.get("tokens_per_step") == 32 and x.get("tokens_per_s", 0) > 0 and med > 0
              and abs(x["tokens_per_s"] * med - 32) < 1e-6 * 32 and len(x.get("step_s", [])) == 2
              and 0 < x.get("step_s_min", 0) <= med, x)
        check("%s: mfu in (0, 1.5) and = model FLOPs / median / peak" % v,
              0 < x.get("mfu", 0) < 1.5 and abs(x.get("model_gflop_per_step", 0) - flops) < 1e-9
              and abs(x["mfu"] - flops / med / d.get("sgemm_peak_gflops", 1)) < 1e-6 * x["mfu"], x)
        check("%s: the five phases, non-negative, sum = mean step, within 25%% of the median" % v,
              sorted(ph) == sorted(PHASES) and all(t >= 0 for t in ph.values())
              and abs(total - mean) <= 1e-6 * mean and abs(total - med) <= 0.25 * med, (ph, med, mean))
        check("%s: the phase timers see most of the step (untimed part < 50%%)" % v,
              0 <= x.get("untimed_s", -1) < 0.5 * mean, (x.get("untimed_s"), mean))
        check("%s: the matmul phase is timed, and connections too where there are any" % v,
              ph.get("matmul", 0) > 0 and (v == "none" or ph.get("connections", 0) > 0), ph)
        ops = x.get("ops_s", {})
        conn = sum(t for op, t in ops.items() if op.startswith("conn_"))
        model = sum(ph.get(p, 0) for p in ["matmul", "attention", "connections"])
        check("%s: ops_s splits the phases by op: the four conn ops sum to the connections phase, "
              "all ops to at least matmul + attention + connections" % v,
              all(t >= 0 for t in ops.values()) and "matmul_forward" in ops and "matmul_backward" in ops
              and abs(conn - ph.get("connections", 0)) <= 1e-9 + 1e-6 * conn
              and (v == "none" or {"conn_pre_forward", "conn_post_forward", "conn_post_backward",
                                   "conn_pre_backward"} <= set(ops))
              and sum(ops.values()) >= model * (1 - 1e-6), (ops, ph))
        check("%s: peak_rss_mb > 0" % v, x.get("peak_rss_mb", 0) > 0, x.get("peak_rss_mb"))
    # mhc and jpmhc both have n + n² = n(1 + n) alpha columns (SPEC §4): the others all differ.
    check("variants differ in parameter count (mhc = jpmhc)", len(params) == 6, params)
    check("mhc and jpmhc have the same parameter count", res.get("mhc", {}).get("params") == res.get("jpmhc", {}).get("params"))
    # The human table comes first on stdout, one row per variant.
    out = r.stdout
    check("human output: sgemm peak line and the table header",
          "sgemm peak:" in out and "tok/s" in out and "MFU" in out and "RSS MB" in out, out)
    rows = [w[0] for w in map(str.split, out.splitlines()) if len(w) > 1 and w[0] in VARIANTS and w[1].isdigit()]
    check("human output: one table row per variant", rows == VARIANTS, out)


def test_options():
    corpus = os.path.join(TMP, "corpus.txt")
    with open(corpus, "wb") as f:
        f.write(b"The quick brown fox jumps over the lazy dog.\n" * 50)
    cfg = os.path.join(TMP, "tiny.toml")
    with open(cfg, "w") as f:
        f.write("n_layer = 1\nn_embd = 32\nn_head = 2\nblock_size = 16\nbatch_size = 2\nvocab_size = 0\n"
                "gradient_accumulation_steps = 2\n")
    r = run("--config", cfg, "--variants", "residual,mhc-lite", "--data", corpus, "--threads", "1",
            "--steps", "3", "--warmup", "0", "--json")
    d = last_json(r)
    res = d.get("results", [])
    check("--config, aliases, --data, --threads, accumulation", r.returncode == 0
          and [x.get("variant") for x in res] == ["none", "mhc_lite"] and d.get("threads") == 1
          and d.get("config", {}).get("vocab_size") == 256 and d.get("data") == corpus
          and all(x.get("tokens_per_step") == 64 and len(x.get("step_s", [])) == 3 for x in res), r.stderr or d)
    r = run(*TINY, *FAST, "--variants", "hc")
    check("human output without --json has no JSON line", r.returncode == 0 and "{" not in r.stdout
          and "hc" in r.stdout, r.stdout + r.stderr)
    r = run(*TINY, *FAST, "--variants", "none,mhc_lite", "--ops")
    lines = r.stdout.splitlines()
    at = next((i for i, l in enumerate(lines) if l.startswith("ms per step by op")), -1)
    rows = {w[0]: w[1:] for w in map(str.split, lines[at + 2:] if at >= 0 else [])}
    check("--ops: a table of ms per step by op, one column per variant",
          r.returncode == 0 and at >= 0 and lines[at + 1].split() == ["op", "none", "mhc_lite"]
          and all(len(v) == 2 for v in rows.values()) and "matmul_forward" in rows
          and float(rows.get("conn_pre_forward", ["0", "0"])[1]) > 0, r.stdout + r.stderr)
    r = run(*TINY, *FAST, "--variants", "mhc_lite", "--no-op-times", "--json")
    d = last_json(r)
    x = (d.get("results") or [{}])[0]
    ph = x.get("phases_s", {})
    check("--no-op-times: no op timed, so only the optimizer's phase and other, which is the rest of the step",
          r.returncode == 0 and d.get("ops_timed") is False and not x.get("ops_s")
          and all(ph.get(p, 1) == 0 for p in ("matmul", "attention", "connections")) and ph.get("other", 0) > 0
          and "the ops are not timed" in r.stdout, r.stdout + r.stderr)
    r = run("--help")
    check("--help gives the FLOP formula", r.returncode == 0 and "6*P_matmul*tokens" in r.stdout, r.stdout)


def test_bad_input():
    small = os.path.join(TMP, "small.txt")
    with open(small, "wb") as f:
        f.write(b"abc")
    cases = [
        ("unknown variant", ["--variants", "none,bogus"], "bogus"),
        ("--steps 0", ["--steps", "0"], "--steps"),
        ("negative --warmup", ["--warmup", "-1"], "--warmup"),
        ("negative --threads", ["--threads", "-3"], "--threads"),
        ("missing --config file", ["--config", os.path.join(TMP, "nope.toml")], "nope.toml"),
        ("missing --data file", ["--data", os.path.join(TMP, "nope.txt")], "nope.txt"),
        ("data shorter than one window", ["--data", small], "small.txt"),
        ("unknown config key", ["--set", "n_embed=32"], "n_embed"),
        ("impossible config for one variant", ["--variants", "kromhc", "--set", "hyper_conn_n=3"], "kromhc"),
        ("a model no machine holds", ["--set", "n_layer=2000", "--set", "n_embd=8192", "--set", "n_head=8"],
         "needs about"),
    ]
    for name, args, fragment in cases:
        r = run(*TINY, *args)  # each is refused before anything runs
        ok, msg = one_line_error(r)
        check("bad input: %s -> one-line error" % name, ok and fragment in msg, "rc %d: %s" % (r.returncode, msg))
    r = run(*TINY, *FAST, "--variants", "none,hc", env={"MHC_TEST_BENCH_ABORT": "hc"})
    ok, msg = one_line_error(r)
    check("a variant whose process crashes -> one-line error naming it", ok and "variant hc" in msg, msg)


if __name__ == "__main__":
    finish(test_json_all_variants, test_options, test_bad_input)
