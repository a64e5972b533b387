"""What every CLI test script shares: the binary under test, a scratch directory, the counted checks,
the one-line-error rule, metrics.jsonl read back, llm.c shards written, and the run of the tests
with the summary line.

A script is run as `python3 tests/cli/test_NAME.py path/to/mhc` (CTest does so); it imports this
module by name, from its own directory.
"""
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import traceback

MHC = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
TMP = tempfile.mkdtemp(prefix="mhc_%s_" % os.path.splitext(os.path.basename(sys.argv[0]))[0])
RESULTS = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    """Counts one check; a failure prints the end of `detail` (where the error message is)."""
    RESULTS["passed" if cond else "failed"] += 1
    print(("ok    " if cond else "FAIL  ") + name + ("" if cond else "   " + str(detail)[-2000:]))


def path(*names):
    return os.path.join(TMP, *names)


def llmc_shard(tokens):
    """The bytes of an llm.c GPT-2 shard (magic 20240520, version 1, the count, in a 1024-byte
    header) holding `tokens` as uint16."""
    return struct.pack("<3i", 20240520, 1, len(tokens)) + bytes(1012) + struct.pack("<%dH" % len(tokens), *tokens)


def metrics(run_dir):
    """The records of a run's metrics.jsonl."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def wait_for_step(out, step, proc, limit=600):
    """True once the run in `out` has logged `step` (polling its metrics.jsonl); False if the
    process ends first or `limit` seconds pass (generous: sanitized builds on a loaded machine)."""
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        try:
            if metrics(out) and metrics(out)[-1]["step"] >= step:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return False


def ckpt_metadata(ck):
    """A checkpoint's safetensors metadata ({} when it cannot be read)."""
    try:
        with open(ck, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            return json.loads(f.read(n)).get("__metadata__", {})
    except (OSError, ValueError, struct.error):
        return {}


def last_json(r):
    """The JSON object on the last line of a successful run's stdout, text or bytes ({} when the run
    failed or printed none, so a check on its fields fails)."""
    if r.returncode != 0:
        return {}
    out = r.stdout.decode("utf-8", "replace") if isinstance(r.stdout, bytes) else (r.stdout or "")
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}


def stderr_text(r):
    """The stderr of a completed process, whether it was captured as text or as bytes."""
    e = r.stderr
    return e.decode("utf-8", "replace") if isinstance(e, bytes) else (e or "")


def stderr_lines(r):
    return [l for l in stderr_text(r).splitlines() if l.strip()]


def one_line_error(r, *fragments):
    """(ok, stderr): mhc's rule for bad input, a non-zero exit and exactly one line that says
    `error` (and holds each of `fragments`)."""
    lines = stderr_lines(r)
    ok = r.returncode != 0 and len(lines) == 1 and "error" in lines[0] and all(f in lines[0] for f in fragments)
    return ok, stderr_text(r).strip()


def finish(*tests, keep_on_failure=False):
    """Runs the tests in order (an exception in one is a failed check, not the end of the run),
    removes TMP (kept after a failure with keep_on_failure), prints the summary and exits 1 when
    anything failed. Each test's wall time is printed after it, for watching CI's time budget."""
    try:
        for t in tests:
            t0 = time.time()
            try:
                t()
            except Exception:
                check(t.__name__ + " ran to its end", False, traceback.format_exc())
            print("time  %s %.1f s" % (t.__name__, time.time() - t0))
    finally:
        failed = RESULTS["failed"] > 0
        if failed and keep_on_failure:
            print("files kept in " + TMP)
        else:
            shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
    sys.exit(1 if RESULTS["failed"] else 0)
