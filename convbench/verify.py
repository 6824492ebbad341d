"""Run, check, time: the one place convbench runs a backend on a problem, checks the answer against
the float64 reference and (when asked) times it. Verification, the runner and `auto` all call
`check_backend`; its answer is a `convbench.result.Result`.

The error of a result is measured as  max |out - ref| / scale,  where scale is the size of the
terms summed to make the outputs (for a convolution: the same convolution of |x| and |w|). A
sum of n float32 products computed in any order is within n*u of that scale (u = 2^-24, the unit
roundoff; Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5), so the tolerance is

    tol = (n + extra + 1) * u

with n the op's reduction length, `extra` the rounding steps an algorithm adds (FFT and Winograd
transforms), and one more for rounding the result. Outputs the reference has non-finite are not
measured but compared exactly: NaN must be NaN and +-inf the same infinity (README, "Non-finite
inputs"); the scale is that of the finite terms.
A result within tolerance is MISTRUSTED rather than PASSED when its error exceeds half the
tolerance (little margin left) or an output is all zeros where the reference's is not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.backends import free_workspace, get_backend, held_workspace_bytes
from convbench.errors import BackendUnavailableError, UnknownNameError, UnsupportedError
from convbench.memory import format_bytes
from convbench.ops import Conv2dProblem, OpSpec, plain_reference_bytes
from convbench.ops.reference import CHUNK_ELEMENTS
from convbench.result import FAILED, MISTRUSTED, PASSED, SKIPPED, UNAVAILABLE, UNIMPLEMENTED, Result
from convbench.stats import summarize
from convbench.threads import get_threads
from convbench.timing import TimingPolicy, cold_copies, cold_copies_for, measure


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def tolerance(op: OpSpec, problem, dtype, backend=None) -> float:
    extra = backend.extra_rounding(op, problem) if backend is not None else 0.0
    return (op.reduction(problem) + extra + 1) * unit_roundoff(dtype)


def relative_error(out, ref, scale: float) -> float:
    """max |out - ref| / scale over the outputs where the reference is finite, after checking
    convbench's rule for the others: out must be non-finite exactly where ref is, NaN where ref is
    NaN and +-inf where ref is +-inf (README, "Non-finite inputs").

    Returns inf on a shape mismatch or a non-finite output out of place.
    """
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(out)):
        return float("inf")
    if not np.array_equal(np.isnan(ref), np.isnan(out)):
        return float("inf")
    infinite = np.isinf(ref)
    if not np.array_equal(ref[infinite], out[infinite]):
        return float("inf")
    if not finite.any():
        return 0.0
    err = float(np.abs(out[finite] - ref[finite]).max())
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


def _reference_scratch(op: OpSpec, problem) -> int:
    """Bytes the float64 reference and the error scale allocate beyond their inputs' float64
    copies and their outputs: the padded input and the bounded window copies of a convolution,
    the per-window temporaries of pooling, the per-step values BPTT keeps."""
    if isinstance(problem, Conv2dProblem):
        p = problem
        padded = 8 * p.N * p.C * p.Hp * p.Wp
        if op.reference_for(p) is op.reference:
            return padded + 2 * plain_reference_bytes(p)
        return padded + 2 * 8 * CHUNK_ELEMENTS
    if hasattr(problem, "cell"):
        p = problem
        return 8 * p.T * p.N * p.H * 8 + 8 * 6 * p.N * p.gates * p.H
    return 8 * 6 * op.output_bytes(problem, 1)


@dataclass(frozen=True)
class MemoryNeed:
    """The bytes one backend on one problem needs at its peak, estimated before anything is
    allocated: what every backend of the case shares (the inputs; the float64 reference: its
    copies of the inputs, its outputs and the error scale's; the cold-cache copies), the backend's
    outputs, and its workspace (Backend.scratch_bytes: workspace_bytes, through a lowering)."""

    shared: int
    outputs: int
    workspace: int

    @property
    def total(self) -> int:
        return self.shared + self.outputs + self.workspace

    def __str__(self) -> str:
        return (f"{format_bytes(self.total)} (inputs and reference {format_bytes(self.shared)}, "
                f"outputs {format_bytes(self.outputs)}, workspace {format_bytes(self.workspace)})")


def shared_bytes(op: OpSpec, problem, dtype, cold_cache: bool = False) -> int:
    """MemoryNeed.shared: the part of a case's memory that its backends share."""
    itemsize = np.dtype(dtype).itemsize
    inputs = op.input_bytes(problem, itemsize)
    reference = (op.input_bytes(problem, 8) + 2 * op.output_bytes(problem, 8)
                 + _reference_scratch(op, problem))
    cold = cold_copies_for(inputs) * inputs if cold_cache else 0
    return inputs + reference + cold


def memory_need(backend, op: OpSpec, problem, dtype, cold_cache: bool = False) -> MemoryNeed:
    """What `backend` needs to be checked (and timed) on `problem`; see MemoryNeed."""
    itemsize = np.dtype(dtype).itemsize
    return MemoryNeed(shared_bytes(op, problem, dtype, cold_cache),
                      op.output_bytes(problem, itemsize),
                      int(backend.scratch_bytes(op, problem, np.dtype(dtype))))


def estimated_call_s(backend, op: OpSpec, problem) -> float | None:
    """Seconds one call should take, from the backend's rate (None: no estimate)."""
    rate = backend.est_macs_per_s
    return None if rate is None else op.flops(problem) / 2 / rate


def new_result(backend_name: str, op: OpSpec, problem, dtype) -> Result:
    """The Result of a backend on a problem before anything runs: what was asked, no status."""
    dtype = np.dtype(dtype)
    flops, nbytes = op.flops(problem), op.min_bytes(problem, dtype.itemsize)
    return Result(descriptor=problem.descriptor(), family=op.family, direction=op.direction,
                  backend=backend_name, dtype=dtype.name, batch=problem.N,
                  threads=get_threads(), flops=flops, bytes=nbytes,
                  intensity=flops / nbytes if nbytes else None, problem=problem)


def check_backend(backend_name: str, op: OpSpec, problem, dtype=np.float32, seed: int = 0, *,
                  inputs=None, reference: Reference | None = None,
                  policy: TimingPolicy | None = None, limit_s: float | None = None,
                  max_bytes: int | None = None, cold_cache: bool = False,
                  keep_outputs: bool = False, memory: bool = False) -> Result:
    """Run one backend on one problem, check its answer against the reference and, given a
    timing policy, time it.

    inputs, reference: shared by a caller that checks several backends on the same problem
    (made from `seed` otherwise, after the limits are checked). limit_s: SKIPPED, without running,
    when the backend's estimated time per call exceeds it. max_bytes: SKIPPED, before anything is
    allocated, when the estimated memory (memory_need) exceeds it. cold_cache: time by rotating
    through copies of the inputs larger than the last-level cache. keep_outputs: keep the
    backend's outputs on the Result. memory: measure peak_bytes and workspace_bytes in a call of
    their own after the timed ones (_measure_memory).

    Never raises for the backend's own failure: unavailable, unimplemented, an exception (running
    out of memory included, also in the reference) or a wrong answer is the Result's status, with
    the reason. Only results within tolerance are timed.
    """
    dtype = np.dtype(dtype)
    result = new_result(backend_name, op, problem, dtype)
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
    if max_bytes is not None:
        need = memory_need(backend, op, problem, dtype, cold_cache)
        if need.total > max_bytes:
            return result.replace(status=SKIPPED, reason=f"estimated memory {need} exceeds the "
                                                         f"limit of {format_bytes(max_bytes)}")
    try:
        if inputs is None:
            inputs = op.make_inputs(problem, np.random.default_rng(seed), dtype)
        if reference is None:
            reference = Reference(op, problem, inputs)
        dev = [None if a is None else backend.to_device(a) for a in inputs]
    except MemoryError as e:
        return result.replace(status=FAILED, reason=f"out of memory making the inputs: {e}")
    result.reference = reference.name
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
    try:
        err = reference.error(out)
    except MemoryError as e:
        return result.replace(status=FAILED, reason=f"out of memory in the {reference.name}: {e}")
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
    if memory:
        _measure_memory(result, backend, call, holder, notes)
    result.reason = "; ".join(notes)
    return result


#: A call longer than this is not run again to measure its memory: tracing slows allocation
#: down, and the naive loops allocate per element.
MEMORY_CALL_CAP_S = 10.0


def _measure_memory(result: Result, backend, call, holder: dict, notes: list) -> None:
    """Fill result's peak_bytes (Backend.peak_bytes of one more call, never a timed one) and
    workspace_bytes (what the backends' workspaces keep after it). Every workspace is freed
    first, so the scratch a backend keeps between calls is allocated, and counted, in this
    call; the next timed call of any backend allocates it afresh (its warm-up absorbs that)."""
    took = result.median_s if result.median_s is not None else result.first_call_s
    if took is not None and took > MEMORY_CALL_CAP_S:
        notes.append(f"memory not measured: a call takes {took:.3g} s")
        return
    holder.pop("out", None)          # the last timed call's outputs: not this call's
    free_workspace()
    try:
        peak = backend.peak_bytes(call)
    except Exception as e:  # noqa: BLE001 - the answer was checked: a note, not a failure
        notes.append(f"memory not measured: {type(e).__name__}: {e}")
        return
    finally:
        holder.pop("out", None)
    result.peak_bytes = peak
    result.workspace_bytes = None if peak is None else held_workspace_bytes()


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
