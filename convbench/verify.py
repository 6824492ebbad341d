"""Cross-checks: every backend against the float64 reference, with a tolerance from the arithmetic.

The error of a result is measured as  max |out - ref| / scale,  where scale is the size of the
terms summed to make the outputs (for a convolution: the same convolution of |x| and |w|). A
sum of n float32 products computed in any order is within n*u of that scale (u = 2^-24, the unit
roundoff; Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5), so the tolerance is

    tol = (n + extra + 1) * u

with n the op's reduction length, `extra` the rounding steps an algorithm adds (FFT and Winograd
transforms), and one more for rounding the result. NaN in the reference must be NaN in the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convbench.backends import get_backend
from convbench.errors import BackendUnavailableError, UnsupportedError
from convbench.ops import OpSpec

PASSED, FAILED, UNSUPPORTED, UNAVAILABLE, ERROR = "PASSED", "FAILED", "UNSUPPORTED", "UNAVAILABLE", "ERROR"


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def tolerance(op: OpSpec, problem, dtype, backend=None) -> float:
    extra = backend.tolerance_terms(op, problem) if backend is not None else 0.0
    return (op.reduction(problem) + extra + 1) * unit_roundoff(dtype)


def relative_error(out, ref, scale: float) -> float:
    """max |out - ref| / scale, with NaN where the reference is NaN required to match.

    Returns inf on a shape mismatch or a NaN that should not be there (or is missing).
    """
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    ref_nan, out_nan = np.isnan(ref), np.isnan(out)
    if np.any(ref_nan != out_nan):
        return float("inf")
    ok = ~ref_nan
    if not ok.any():
        return 0.0
    diff = np.abs(out[ok] - ref[ok])
    same_inf = np.isinf(ref[ok]) & (out[ok] == ref[ok])
    diff[same_inf] = 0.0
    err = float(diff.max(initial=0.0))
    return err / scale if scale > 0 else err


@dataclass
class Check:
    """The outcome of one backend on one op and problem."""

    backend: str
    op: str
    problem: object
    dtype: str
    status: str
    error: float = float("nan")
    tol: float = float("nan")
    reason: str = ""
    outputs: tuple = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.status in (PASSED, UNSUPPORTED, UNAVAILABLE)


def reference_outputs(op: OpSpec, problem, inputs):
    out = op.reference(problem, *inputs)
    return out if isinstance(out, tuple) else (out,)


#: Above this many FLOPs a conv problem is checked against im2col run in float64 (itself checked
#: against the plain reference in the tests) instead of the einsum reference, to save time.
REFERENCE_FLOP_LIMIT = 5e8


def reference_for(op: OpSpec, problem, inputs):
    """(reference outputs, label): the float64 reference, or im2col in float64 for large convs."""
    if op.family == "conv2d" and op.flops(problem) > REFERENCE_FLOP_LIMIT:
        b = get_backend("im2col")
        out = b.run(op, problem, *[None if a is None else a.astype(np.float64) for a in inputs])
        return (out,), "im2col float64"
    return reference_outputs(op, problem, inputs), "float64 reference"


def compare(op: OpSpec, problem, inputs, outputs, ref_outputs, tol: float):
    """(worst relative error, passed) of outputs against ref_outputs."""
    scales = op.scale(problem, inputs, ref_outputs)
    if len(outputs) != len(ref_outputs):
        return float("inf"), False
    errs = [relative_error(o, r, s) if r is not None else (0.0 if o is None else float("inf"))
            for o, r, s in zip(outputs, ref_outputs, scales)]
    worst = max(errs) if errs else 0.0
    return worst, worst <= tol


def check_backend(backend_name: str, op: OpSpec, problem, dtype=np.float32, seed: int = 0,
                  inputs=None, ref_outputs=None, keep_outputs: bool = False) -> Check:
    """Run one backend on one problem and compare with the reference. Never raises for a
    backend's own failure: that is recorded as ERROR with the message."""
    dname = np.dtype(dtype).name
    try:
        backend = get_backend(backend_name)
        backend.check(op, problem, dtype)
    except BackendUnavailableError as e:
        return Check(backend_name, op.name, problem, dname, UNAVAILABLE, reason=str(e))
    except UnsupportedError as e:
        return Check(backend_name, op.name, problem, dname, UNSUPPORTED, reason=str(e))
    if inputs is None:
        inputs = op.make_inputs(problem, np.random.default_rng(seed), dtype)
    if ref_outputs is None:
        ref_outputs = reference_outputs(op, problem, inputs)
    try:
        dev = [None if a is None else backend.to_device(a) for a in inputs]
        out = backend.run(op, problem, *dev)
        out = out if isinstance(out, tuple) else (out,)
        out = tuple(None if o is None else np.asarray(backend.to_host(o)) for o in out)
    except Exception as e:  # a kernel that crashes is a result, not the end of the sweep
        return Check(backend_name, op.name, problem, dname, ERROR, reason=f"{type(e).__name__}: {e}")
    tol = tolerance(op, problem, dtype, backend)
    err, passed = compare(op, problem, inputs, out, ref_outputs, tol)
    return Check(backend_name, op.name, problem, dname, PASSED if passed else FAILED, err, tol,
                 "" if passed else f"relative error {err:.3g} > tolerance {tol:.3g}",
                 out if keep_outputs else ())
