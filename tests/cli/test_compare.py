#!/usr/bin/python3
"""End-to-end tests of `mhc compare` (run by ctest).

    /usr/bin/python3 tests/cli/test_compare.py BUILD/mhc

Two tiny real runs (a few seconds), their report (table rows, valid PNGs, HTML), reuse of finished
runs, continuation of a partial one, Ctrl-C, bad input, and --report-only on hand-written run
directories whose metrics carry `diag` records (the composite-gain, DS-error, orthogonality-error,
σ_2 and stream-similarity plots); every variant of the table in one tiny comparison. Prints one
line per check and a last line `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import MHC, check, path, one_line_error, finish

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAVE_GNUPLOT = shutil.which("gnuplot") is not None

TINY_TOML = """n_layer = 1
n_head = 2
n_embd = 16
block_size = 16
batch_size = 2
max_iters = 6
warmup_iters = 2
eval_interval = 3
eval_iters = 1
log_interval = 1
"""


def run(*args, env=None, timeout=300):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([MHC, *args], capture_output=True, text=True, env=e, timeout=timeout)


def table_rows(md_path):
    """First cells of the report's table rows (not the header or the separator)."""
    rows = []
    with open(md_path) as f:
        for line in f:
            if line.startswith("|") and not line.startswith("|---") and not line.startswith("| variant "):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def png_ok(p):
    with open(p, "rb") as f:
        head = f.read(24)
    size = os.path.getsize(p)
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and size > 2048 and width > 100 and height > 100


def check_report(out, label, expect_plots):
    """The PNGs are valid, non-trivial and referenced by report.html and report.md; returns their names."""
    with open(os.path.join(out, "report.html")) as f:
        html = f.read()
    with open(os.path.join(out, "report.md")) as f:
        md = f.read()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    pngs = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    check("%s: the HTML shows every PNG in the directory" % label, sorted(srcs) == pngs and pngs, (srcs, pngs))
    check("%s: report.md shows them too" % label, all("(%s)" % p in md for p in pngs), md)
    bad = [p for p in pngs if not png_ok(os.path.join(out, p))]
    check("%s: every PNG is a valid image > 2 KiB" % label, not bad, bad)
    missing = [p for p in expect_plots if p + ".png" not in pngs]
    check("%s: plots %s drawn" % (label, ", ".join(expect_plots)), not missing, missing)
    for p in pngs:  # the scripts stay, for restyling
        stem = p[:-4]
        ok = os.path.exists(os.path.join(out, stem + ".gp")) and os.path.exists(os.path.join(out, stem + ".dat"))
        if not ok:
            check("%s: %s.gp and %s.dat kept" % (label, stem, stem), False)
    return pngs


def write_inputs():
    text = b"".join(b"The quick brown fox %d jumps over the lazy dog; pack my box with five dozen jugs.\n" % i
                    for i in range(300))
    with open(path("corpus.txt"), "wb") as f:
        f.write(text)
    with open(path("tiny.toml"), "w") as f:
        f.write(TINY_TOML)


def compare(out, *extra, env=None):
    return run("compare", "--config", path("tiny.toml"), "--data", path("corpus.txt"), "--variants", "none,mhc_lite",
               "--seeds", "1", "--out", out, *extra, env=env)


def ckpt_mtimes(out):
    m = {}
    for d in os.listdir(os.path.join(out, "runs")):
        for n in os.listdir(os.path.join(out, "runs", d)):
            if n.startswith("ckpt_") or n == "metrics.jsonl":
                m[d + "/" + n] = os.stat(os.path.join(out, "runs", d, n)).st_mtime_ns
    return m


def test_two_tiny_runs():
    out = path("cmp")
    t0 = time.time()
    r = compare(out, "--json")
    first_s = time.time() - t0
    check("compare trains two tiny runs", r.returncode == 0, r.stderr)
    check("their progress lines carry the run's name", "[none-s1] step" in r.stderr and "[mhc_lite-s1] step" in r.stderr,
          r.stderr)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    check("--json: one object with both runs trained", [x["status"] for x in j["runs"]] == ["trained", "trained"], j)
    rows = table_rows(os.path.join(out, "report.md"))
    check("the table has exactly the rows none, mhc_lite", [x[0] for x in rows] == ["none", "mhc_lite"], rows)
    with open(os.path.join(out, "report.md")) as f:
        check("the header says the runs trained one after another",
              "runs: executed one after another on this machine (2 runs)" in f.read())
    check("each row: 1 run and a final val loss", all(x[1] == "1" and re.match(r"^\d+\.\d{4}$", x[2]) for x in rows),
          rows)
    for p in ("none-s1", "mhc_lite-s1"):
        with open(os.path.join(out, "runs", p, "config.toml")) as f:
            cfg = f.read()
        check("%s trained with its variant and seed" % p,
              'hyper_conn_type = "%s"' % p.split("-")[0] in cfg and re.search(r"^seed = 1$", cfg, re.M), cfg)
    if HAVE_GNUPLOT:
        pngs = check_report(out, "two tiny runs", ["val_loss", "val_loss_time", "train_loss", "grad_norm"])
        check("--json lists the PNGs", sorted(j["plots"]) == pngs, j["plots"])
    else:
        check("without gnuplot: report written, warning given", "gnuplot not found" in r.stderr, r.stderr)

    # Again: nothing is retrained.
    before = ckpt_mtimes(out)
    t0 = time.time()
    r = compare(out)
    again_s = time.time() - t0
    check("a second compare reuses both runs", r.returncode == 0 and r.stderr.count("reused (complete at step 6)") == 2,
          r.stderr)
    check("... without touching their checkpoints or metrics", ckpt_mtimes(out) == before)
    check("... and without training (no step lines; %.2f s vs %.2f s)" % (again_s, first_s),
          "] step" not in r.stderr, r.stderr)
    check("the table is printed on stdout", "| none |" in r.stdout and "| mhc_lite |" in r.stdout, r.stdout)

    # The same directory with another config is refused, naming the difference.
    r = compare(out, "--set", "max_iters=8")
    ok, msg = one_line_error(r)
    check("a run directory with another config -> one-line error naming the key",
          ok and "max_iters 6 in the run, 8 requested" in msg, msg)
    check("... and it trained nothing", ckpt_mtimes(out) == before)


def test_failed_run_then_resume():
    # A run that stops early (non-finite steps at its step 4) is reported as incomplete; the next
    # compare continues it with --resume instead of starting over.
    out = path("partial")
    r = compare(out, "--set", "max_nonfinite_steps=1", env={"MHC_TEST_NONFINITE_STEPS": "4"})
    check("a failed run makes compare exit non-zero", r.returncode == 1 and "2 run(s) failed" in r.stderr, r.stderr)
    rows = table_rows(os.path.join(out, "report.md"))
    check("... the report still lists both, incomplete", [x[1] for x in rows] == ["1 (1 incomplete)"] * 2, rows)
    steps = [open(os.path.join(out, "runs", d, "latest")).read().strip() for d in ("none-s1", "mhc_lite-s1")]
    check("... each kept its checkpoint at step 4", steps == ["ckpt_000004"] * 2, steps)
    r = compare(out, "--set", "max_nonfinite_steps=1")
    check("the next compare resumes both at step 4",
          r.returncode == 0 and r.stderr.count("resuming at step 4 of 6") == 2, r.stderr)
    with open(os.path.join(out, "runs", "none-s1", "metrics.jsonl")) as f:
        last = [json.loads(l) for l in f if l.strip()][-1]
    check("... and completes them", last["step"] == 6 and "val_loss" in last, last)
    rows = table_rows(os.path.join(out, "report.md"))
    check("... now complete in the table", [x[1] for x in rows] == ["1", "1"], rows)


def test_interrupt():
    out = path("interrupt")
    p = subprocess.Popen([MHC, "compare", "--config", path("tiny.toml"), "--data", path("corpus.txt"), "--variants",
                          "none", "--set", "max_iters=100000", "--set", "eval_interval=100000", "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    err = ""
    while "[none-s1] step 2/" not in err:
        line = p.stderr.readline()
        if not line:
            break
        err += line
    p.send_signal(signal.SIGINT)
    try:
        _, rest = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        _, rest = p.communicate()
    err += rest
    check("SIGINT: compare exits 130 saying how to continue",
          p.returncode == 130 and "Run the same command again" in err, "rc %s: %s" % (p.returncode, err[-800:]))
    latest = os.path.join(out, "runs", "none-s1", "latest")
    step = int(open(latest).read().strip()[5:]) if os.path.exists(latest) else -1
    check("... the run stopped with a checkpoint (step %d)" % step, 2 <= step < 100000, err[-800:])
    check("... and no report was written", not os.path.exists(os.path.join(out, "report.md")))
    r = run("compare", "--report-only", "--out", out)
    rows = table_rows(os.path.join(out, "report.md"))
    check("--report-only after the interrupt: the partial run, marked incomplete",
          r.returncode == 0 and rows and rows[0][:2] == ["none", "1 (1 incomplete)"], r.stderr + str(rows))


def test_bad_input():
    cases = [
        ("unknown variant", ["--variants", "none,mhc_light"], "unknown variant 'mhc_light'"),
        ("duplicate seed", ["--seeds", "1,1"], "listed twice"),
        ("bad seed", ["--seeds", "1,x"], "bad seed 'x'"),
        ("seed in --set", ["--set", "seed=3"], "--seeds"),
        ("a config key rejected for one variant", ["--variants", "none,kromhc", "--set", "hyper_conn_n=3"],
         "none-s1: hyper_conn_n"),
    ]
    for name, extra, fragment in cases:
        r = run("compare", "--config", path("tiny.toml"), "--data", path("corpus.txt"), "--out", path("bad"), *extra)
        ok, msg = one_line_error(r)
        check("bad input: %s -> one-line error" % name, ok and fragment in msg, "rc %d: %s" % (r.returncode, msg))
    for name, args, fragment in [
        ("missing config file", ["--config", path("nope.toml"), "--data", path("corpus.txt")], "nope.toml: no such file"),
        ("no --config", ["--data", path("corpus.txt")], "--config is required"),
        ("missing data file", ["--config", path("tiny.toml"), "--data", path("nope.txt")], "nope.txt: no such file"),
    ]:
        r = run("compare", *args, "--out", path("bad"))
        ok, msg = one_line_error(r)
        check("bad input: %s -> one-line error" % name, ok and fragment in msg, "rc %d: %s" % (r.returncode, msg))
    check("bad input trains nothing", not os.path.exists(path("bad", "runs")))
    r = run("compare", "--report-only", "--out", path("nothing_here"))
    ok, msg = one_line_error(r)
    check("--report-only without runs -> one-line error", ok and "nothing to report" in msg, msg)


# ---- hand-written run directories with diagnostics (schemas.md) ----

def diag_record(variant, n_layer, step):
    sites = []
    for k in range(2 * n_layer):
        growth = {"hc": 1.3 ** (k + 1), "mhc": 1 + 1e-3 * (k + 1)}.get(variant, 1.0)
        ds = {"hc": 0.2, "mhc": 1e-4 * (k + 1), "mhc_lite": 0.0 if k % 2 else 1.2e-7}.get(variant, 0.0)
        s = {"site": k, "block": k // 2, "kind": "mlp" if k % 2 else "attn",
             "ds_error_mean": ds / 2, "ds_error_max": ds, "fwd_gain_mean": 1.0, "fwd_gain_max": 1.0,
             "bwd_gain_mean": 1.0, "bwd_gain_max": 1.0,
             "depth_fwd_gain_mean": growth, "depth_fwd_gain_max": growth * 1.1,
             "depth_bwd_gain_mean": growth, "depth_bwd_gain_max": growth * 1.05}
        if variant == "mhc":
            s.update({"log_inv_nu_mean": 3.0, "log_inv_nu_max": 5.0, "frac_nu_above_30": 0.0})
        orth = {"hc": 0.3, "mhc": 0.01 * (k + 1), "mhc_lite": 0.012}.get(variant, 0.0)
        sigma2 = {"hc": 1.2 ** (k + 1), "mhc": 0.99 ** (k + 1), "mhc_lite": 0.992 ** (k + 1)}.get(variant, 1.0)
        s.update({"orth_error_mean": orth / 2, "orth_error_max": orth, "depth_sigma1_mean": growth,
                  "depth_sigma1_max": growth})
        if variant != "none":  # one stream: no sigma_2, no pairs of streams
            s.update({"depth_sigma2_mean": sigma2, "depth_sigma2_max": sigma2 * 1.01,
                      "stream_similarity": 1.0 - 0.05 * (k + 1) if variant != "hc" else 0.5})
        sites.append(s)
    return {"tokens": 512, "sites": sites}


def write_fixture_run(out, variant, seed, spike_at=None):
    d = os.path.join(out, "runs", "%s-s%d" % (variant, seed))
    os.makedirs(d)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for step in range(1, 41):
            loss = 5.0 * 0.97 ** step + 0.01 * seed
            rec = {"step": step, "tokens": step * 64, "loss": loss, "lr": 1e-3, "grad_norm": 1.0 + 0.1 * seed,
                   "tokens_per_s": 1000.0 + 10 * seed, "peak_rss_mb": 100.0 + seed, "time_s": step * (1.0 + 0.1 * seed)}
            if step == spike_at:
                rec["loss"] = loss * 2  # a loss spike: 100% above the recent median
            if step % 10 == 0:
                rec["val_loss"] = loss + 0.1
            if step % 20 == 0:
                rec["diag"] = diag_record(variant, 2, step)
            f.write(json.dumps(rec) + "\n")


def test_report_only_fixtures():
    out = path("fixtures")
    for v, s in [("mhc_lite", 1), ("mhc_lite", 2), ("hc", 1), ("mhc", 1), ("none", 1)]:
        write_fixture_run(out, v, s, spike_at=25 if v == "hc" else None)
    r = run("compare", "--report-only", "--out", out, "--json")
    check("--report-only on hand-written runs", r.returncode == 0, r.stderr)
    rows = table_rows(os.path.join(out, "report.md"))
    check("rows in the canonical order", [x[0] for x in rows] == ["none", "hc", "mhc", "mhc_lite"], rows)
    byv = {x[0]: x for x in rows}
    check("two seeds: mean ± spread", byv["mhc_lite"][1] == "2" and "±" in byv["mhc_lite"][2], byv["mhc_lite"])
    check("one seed: the value alone", "±" not in byv["hc"][2], byv["hc"])
    check("the loss spike is counted (hc 1, others 0)",
          byv["hc"][7] == "1" and all(byv[v][7] == "0" for v in ("none", "mhc", "mhc_lite")), rows)
    check("peak RSS and tokens/s columns", byv["mhc_lite"][5] == "102" and byv["mhc_lite"][4] == "1015", byv["mhc_lite"])
    if HAVE_GNUPLOT:
        check_report(out, "fixtures", ["val_loss", "val_loss_time", "train_loss", "grad_norm", "depth_gain", "ds_error",
                                       "orth_error", "depth_sigma2", "stream_similarity"])
    with open(os.path.join(out, "val_loss_time.dat")) as f:
        vt = f.read().split("# index 3: mhc_lite")[-1]
    # mhc_lite's seeds 1 and 2 reach step 10 at 11 s and 12 s: the mean line is drawn at 11.5 s.
    check("val loss vs wall-clock time: seeds at the mean of their times", "\n11.5 " in vt, vt[:300])
    with open(os.path.join(out, "ds_error.dat")) as f:
        ds = f.read()
    check("DS error: mhc-lite's exact zeros are drawn at 1e-16", "1e-16" in ds and "# index 1: mhc_lite" in ds, ds)
    check("DS error: only the doubly stochastic variants (mhc, mhc_lite here)", "hc (" not in ds.replace("mhc (", ""), ds)
    with open(os.path.join(out, "report.md")) as f:
        md = f.read()
    check("the DS-error caption says how zeros are drawn", "exact zeros included, are drawn at 1e-16" in md, md)
    check("--report-only's header does not say how the runs were trained",
          "runs: 5, trained before this report (written with --report-only)" in md and "one after another on" not in md,
          md[:600])
    with open(os.path.join(out, "depth_sigma2.dat")) as f:
        s2 = f.read()
    check("sigma_2: one line per variant with streams, none (one stream) left out",
          re.findall(r"# index \d+: (\w+)", s2) == ["hc", "mhc", "mhc_lite"], s2)
    check("sigma_2: mhc-lite's values through depth (mean over seeds)",
          "\n3 0.968" in s2.split("mhc_lite")[1], s2)
    with open(os.path.join(out, "orth_error.dat")) as f:
        oe = f.read()
    check("orthogonality error: every variant, none's exact zeros at 1e-16",
          re.findall(r"# index \d+: (\w+)", oe) == ["none", "hc", "mhc", "mhc_lite"] and "0 1e-16 1e-16" in oe, oe)
    with open(os.path.join(out, "stream_similarity.gp")) as f:
        gp = f.read()
    check("stream similarity: a linear axis up to 1.05", "logscale" not in gp and ":1.05]" in gp, gp)

    r = run("compare", "--report-only", "--out", out, "--variants", "mhc_lite,hc", "--seeds", "1")
    rows = table_rows(os.path.join(out, "report.md"))
    check("--report-only with --variants/--seeds: those rows, in that order",
          r.returncode == 0 and [x[0] for x in rows] == ["mhc_lite", "hc"] and rows[0][1] == "1", r.stderr + str(rows))
    r = run("compare", "--report-only", "--out", out, "--variants", "kromhc")
    ok, msg = one_line_error(r)
    check("--report-only naming a missing run -> one-line error", ok and "kromhc-s1" in msg, msg)

    # Runs without diagnostics: those two plots are skipped with a note.
    nodiag = path("nodiag")
    write_fixture_run(nodiag, "none", 1)
    lines = open(os.path.join(nodiag, "runs", "none-s1", "metrics.jsonl")).read().splitlines()
    with open(os.path.join(nodiag, "runs", "none-s1", "metrics.jsonl"), "w") as f:
        for l in lines:
            rec = json.loads(l)
            rec.pop("diag", None)
            rec.pop("peak_rss_mb", None)
            f.write(json.dumps(rec) + "\n")
    r = run("compare", "--report-only", "--out", nodiag)
    md = open(os.path.join(nodiag, "report.md")).read()
    check("no diag records: report written, gain plot skipped with a note",
          r.returncode == 0 and "No composite-gain plot" in md and not os.path.exists(os.path.join(nodiag, "depth_gain.png")),
          r.stderr + md)
    check("no peak_rss_mb: shown as —", table_rows(os.path.join(nodiag, "report.md"))[0][5] == "—", md)

    # Without gnuplot: exit 0, a warning, the text report and the scripts.
    r = run("compare", "--report-only", "--out", nodiag, env={"PATH": "/nonexistent"})
    check("without gnuplot: exit 0 and a one-line warning",
          r.returncode == 0 and "warning: gnuplot not found" in r.stderr, r.stderr)
    check("... report.md/html and the .gp scripts still written, no PNG",
          os.path.exists(os.path.join(nodiag, "report.html")) and os.path.exists(os.path.join(nodiag, "val_loss.gp"))
          and not [n for n in os.listdir(nodiag) if n.endswith(".png")])


def test_every_variant():
    """`mhc compare` over every variant of the table on a tiny config, end to end."""
    out = path("seven")
    variants = ["none", "hc", "mhc", "mhc_lite", "kromhc", "jpmhc", "ohc"]
    r = run("compare", "--config", path("tiny.toml"), "--data", path("corpus.txt"), "--variants", ",".join(variants),
            "--seeds", "1", "--set", "max_iters=4", "--set", "eval_interval=2", "--out", out, "--json")
    check("compare over all seven variants", r.returncode == 0, r.stderr)
    if r.returncode != 0:
        return
    rows = table_rows(os.path.join(out, "report.md"))
    check("seven rows, in the table's order", [x[0] for x in rows] == variants, rows)
    if HAVE_GNUPLOT:
        check_report(out, "seven variants", ["val_loss", "train_loss", "grad_norm", "depth_gain", "ds_error",
                                             "orth_error", "depth_sigma2", "stream_similarity"])
    with open(os.path.join(out, "depth_sigma2.dat")) as f:
        s2 = f.read()
    check("sigma_2 plot: the six variants with streams",
          re.findall(r"# index \d+: (\w+)", s2) == variants[1:], s2)
    ohc = s2.split("ohc")[1]
    check("sigma_2 plot: ohc's composite keeps sigma_2 = 1 at every site",
          all(abs(float(l.split()[1]) - 1) < 1e-5 for l in ohc.splitlines()[1:] if l.strip()), ohc)


if __name__ == "__main__":
    finish(write_inputs, test_bad_input, test_report_only_fixtures, test_two_tiny_runs, test_failed_run_then_resume,
           test_interrupt, test_every_variant)
