"""Run, check, time: the one place convbench runs a backend on a problem, checks the answer against
the float64 reference and (when asked) times it. Verification, the runner and `auto` all call
`check_backend`; its answer is a `convbench.result.Result`.

The error of a result is measured as  max |out - ref| / scale,  where scale is the size of the
terms summed to make the outputs (for a convolution: the same convolution of |x| and |w|). A
sum of n float32 products computed in any order is within n*u of that scale (u = 2^-24, the unit
roundoff; Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5), so the tolerance is

    tol = (n + extra + 1) * u

with n the op's reduction length, `extra` the rounding steps an algorithm adds (FFT and Winograd
transforms), and one more for rounding the result. NaN in the reference must be NaN in the result.
A result within tolerance is MISTRUSTED rather than PASSED when its error exceeds half the
tolerance (little margin left) or an output is all zeros where the reference's is not.
"""
from __future__ import annotations

import numpy as np

from convbench.backends import get_backend
from convbench.errors import BackendUnavailableError, UnknownNameError, UnsupportedError
from convbench.ops import OpSpec
from convbench.result import FAILED, MISTRUSTED, PASSED, SKIPPED, UNAVAILABLE, UNIMPLEMENTED, Result
from convbench.stats import summarize
from convbench.threads import get_threads
from convbench.timing import TimingPolicy, cold_copies, measure


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def tolerance(op: OpSpec, problem, dtype, backend=None) -> float:
    extra = backend.extra_rounding(op, problem) if backend is not None else 0.0
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


class Reference:
    """The float64 reference outputs of one problem's inputs, and the scale of their terms, each
    computed on first use and then shared by every backend checked against them. `name` says
    which reference function (ops.reference) it is."""

    def __init__(self, op: OpSpec, problem, inputs):
        self.op, self.problem, self.inputs = op, problem, inputs
        self.function = op.reference_for(problem)
        self.name = f"float64 {self.function.__name__}"
        self._outputs = None
        self._scales = None

    @property
    def outputs(self) -> tuple:
        if self._outputs is None:
            out = self.function(self.problem, *self.inputs)
            self._outputs = out if isinstance(out, tuple) else (out,)
        return self._outputs

    @property
    def scales(self) -> tuple:
        if self._scales is None:
            self._scales = self.op.scale(self.problem, self.inputs, self.outputs)
        return self._scales

    def error(self, outputs) -> float:
        """The worst relative error of a backend's outputs (host arrays) against these."""
        if len(outputs) != len(self.outputs):
            return float("inf")
        errs = [relative_error(o, r, s) if r is not None else (0.0 if o is None else float("inf"))
                for o, r, s in zip(outputs, self.outputs, self.scales)]
        return max(errs) if errs else 0.0

    def doubt(self, outputs, err: float, tol: float) -> str:
        """Why a result within tolerance is not to be trusted outright, or ""."""
        if err > tol / 2:
            return f"relative error {err:.3g} above half the tolerance {tol:.3g}"
        for name, o, r in zip(self.op.output_names, outputs, self.outputs):
            if o is not None and r is not None and o.size and not np.any(o) and np.any(r):
                return f"output {name} is all zeros where the reference's is not"
        return ""


def estimated_call_s(backend, op: OpSpec, problem) -> float | None:
    """Seconds one call should take, from the backend's rate (None: no estimate)."""
    rate = backend.est_macs_per_s
    return None if rate is None else op.flops(problem) / 2 / rate


def check_backend(backend_name: str, op: OpSpec, problem, dtype=np.float32, seed: int = 0, *,
                  inputs=None, reference: Reference | None = None,
                  policy: TimingPolicy | None = None, limit_s: float | None = None,
                  cold_cache: bool = False, keep_outputs: bool = False) -> Result:
    """Run one backend on one problem, check its answer against the reference and, given a
    timing policy, time it.

    inputs, reference: shared by a caller that checks several backends on the same problem
    (made from `seed` otherwise). limit_s: SKIPPED, without running, when the backend's estimated
    time per call exceeds it. cold_cache: time by rotating through copies of the inputs larger
    than the last-level cache. keep_outputs: keep the backend's outputs on the Result.

    Never raises for the backend's own failure: unavailable, unimplemented, an exception or a wrong
    answer is the Result's status, with the reason. Only results within tolerance are timed.
    """
    dtype = np.dtype(dtype)
    flops, nbytes = op.flops(problem), op.min_bytes(problem, dtype.itemsize)
    result = Result(descriptor=problem.descriptor(), family=op.family, direction=op.direction,
                    backend=backend_name, dtype=dtype.name, batch=problem.N,
                    threads=get_threads(), flops=flops, bytes=nbytes,
                    intensity=flops / nbytes if nbytes else None, problem=problem)
    try:
        backend = get_backend(backend_name)
        backend.check(op, problem, dtype)
    except BackendUnavailableError as e:
        return result.replace(status=UNAVAILABLE, reason=str(e))
    except UnsupportedError as e:
        return result.replace(status=UNIMPLEMENTED, reason=str(e))
    except UnknownNameError:
        raise
    except Exception as e:  # noqa: BLE001 - a (user) backend's own checks raising is a result
        return result.replace(status=FAILED, reason=f"checking raised {type(e).__name__}: {e}")
    est = estimated_call_s(backend, op, problem)
    if limit_s is not None and est is not None and est > limit_s:
        return result.replace(status=SKIPPED, reason=f"estimated {est:,.0f} s per call exceeds "
                                                     f"the per-case limit of {limit_s:g} s")
    if inputs is None:
        inputs = op.make_inputs(problem, np.random.default_rng(seed), dtype)
    if reference is None:
        reference = Reference(op, problem, inputs)
    result.reference = reference.name
    dev = [None if a is None else backend.to_device(a) for a in inputs]
    holder = {}

    def call(*args):
        holder["out"] = backend.run(op, problem, *(args or dev))

    try:
        if policy is None:          # checking only: no timer (a simulated device has none)
            call()
        else:
            result.first_call_s = backend.time_call(call)    # compilation included
        out = holder.pop("out")
        out = out if isinstance(out, tuple) else (out,)
        out = tuple(None if o is None else np.asarray(backend.to_host(o)) for o in out)
    except Exception as e:  # a kernel that raises or runs out of memory is a result
        return result.replace(status=FAILED, reason=f"{type(e).__name__}: {e}")
    tol = tolerance(op, problem, dtype, backend)
    err = reference.error(out)
    result.rel_error, result.tolerance = err, tol
    if keep_outputs:
        result.outputs = out
    if not err <= tol:
        return result.replace(status=FAILED, reason=f"relative error {err:.3g} > tolerance "
                                                    f"{tol:.3g} against the {reference.name}")
    doubt = reference.doubt(out, err, tol)
    result.status = MISTRUSTED if doubt else PASSED
    notes = [doubt] if doubt else []
    choice = backend.delegate(op, problem, dtype)
    if choice:
        notes.insert(0, f"chose {choice}")
    if policy is not None:
        try:
            _time(result, backend, call, inputs, policy, cold_cache, notes)
        except Exception as e:  # noqa: BLE001 - as above, while timing
            return result.replace(status=FAILED, reason=f"{type(e).__name__}: {e}")
    result.reason = "; ".join(notes)
    return result


def _time(result: Result, backend, call, inputs, policy: TimingPolicy, cold_cache: bool,
          notes: list) -> None:
    """Fill result's timing fields by measuring `call` under `policy`."""
    cycle = None
    if cold_cache:
        cycle = [tuple(None if a is None else backend.to_device(a.copy()) for a in inputs)
                 for _ in range(cold_copies(inputs))]
    m = measure(call, backend.time_call, policy, cycle, first_call_s=result.first_call_s)
    s = summarize(m.samples_s)
    result.median_s, result.iqr_s, result.min_s, result.mean_s = s.median, s.iqr, s.min, s.mean
    result.ci_low_s, result.ci_high_s = s.ci_low, s.ci_high
    result.n_samples, result.outliers, result.noisy = s.n, s.outliers, s.noisy
    result.gflops = result.flops / s.median / 1e9
    result.gbps = result.bytes / s.median / 1e9
    result.samples_s, result.warmup_s = m.samples_s, m.warmup_s
    if m.gave_up:
        notes.append(f"timed once: {s.median:.3g} s is over the cut-off {policy.give_up_s:.3g} s")
    elif s.noisy:
        notes.append(f"noisy: relative IQR {s.relative_iqr:.0%}")
