"""What the reference self-checks share: the check decorator that counts and reports, close(),
the final summary, and functional_call from wherever this torch version keeps it. Used by
test_reference_selfcheck.py (the connections) and test_reference_selfcheck_gpt.py (the GPT model,
its fixtures and ckpt_loss.py)."""

import sys
import traceback

import torch

try:
    from torch.func import functional_call  # torch >= 2.0
except ImportError:  # torch 1.13
    from torch.nn.utils.stateless import functional_call

__all__ = ["F64", "RESULTS", "check", "close", "finish", "functional_call"]

F64 = torch.float64
RESULTS = {"passed": 0, "failed": 0}


def check(name):
    """Runs the decorated function at once; an exception is a failure, printed with its traceback."""
    def deco(fn):
        try:
            fn()
        except Exception:  # noqa: BLE001
            RESULTS["failed"] += 1
            print("FAIL  %s" % name)
            traceback.print_exc(file=sys.stdout)
        else:
            RESULTS["passed"] += 1
            print("ok    %s" % name)
        return fn
    return deco


def close(a, b, tol, what=""):
    a = torch.as_tensor(a, dtype=F64)
    b = torch.as_tensor(b, dtype=F64)
    err = (a - b).abs().max().item()
    assert err <= tol, "%s: max |diff| = %.3g > %.3g\n got %s\n want %s" % (what, err, tol, a, b)


def finish():
    """The final line "N passed, M failed", and the exit status (non-zero if anything failed)."""
    print("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
    sys.exit(1 if RESULTS["failed"] else 0)
