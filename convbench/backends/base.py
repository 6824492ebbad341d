"""What every backend is: a name, the ops it implements, and what it cannot do, with reasons.
Backends reach their compiled kernels, torch and numba-cuda through `convbench.lazy.LazyModule`."""
from __future__ import annotations

from importlib import metadata

import numpy as np

from convbench.backends.lowering import LOWERINGS
from convbench.backends.scratch import Workspace
from convbench.errors import BackendUnavailableError, UnsupportedError
from convbench.memory import traced_peak
from convbench.ops import get_op
from convbench.timing import cpu_time_call


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (read from its metadata: nothing is imported), or
    None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


class Backend:
    """A backend: a `name`, a `description`, and one method per op it implements, named after the
    op (`OpSpec.method`) and taking the problem and the op's inputs in the order of
    `OpSpec.input_names`:

        conv2d_fwd(problem, x, w, b)             -> y       (b is None without bias)
        conv2d_bwd_data(problem, dy, w)          -> dx
        conv2d_bwd_weights(problem, dy, x)       -> dw
        max_pool2d_fwd(problem, x), avg_pool2d_fwd(problem, x)          -> y
        max_pool2d_bwd(problem, dy, x), avg_pool2d_bwd(problem, dy, x)  -> dx
        lstm_fwd(problem, x, h0, c0, w_ih, w_hh, b_ih, b_hh)  -> (y, hT, cT)  (gru_fwd and
            rnn_tanh_fwd likewise, with c0 and cT None)
        lstm_bwd(problem, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
            -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)

    (`convbench.ops.OPS` lists every op with its method, inputs and outputs.) The problem is a
    frozen dataclass (`ops.Conv2dProblem`, `Pool2dProblem`, `RNNProblem`) with every size and
    parameter; arrays arrive validated (shapes, dtype) and C-contiguous, in PyTorch's layouts.
    An op without its method is UNIMPLEMENTED for this backend. To refuse one problem, return a
    reason from `unsupported` (or raise `convbench.UnsupportedError` with one); to refuse them
    all on this machine (a missing package, no device), return one from `unavailable_reason`.

    Registering one: `convbench.register_backend(cls)`, `convbench run --backend-file FILE.py`, or
    an entry point in the group `convbench.backends` (see the README). Every result is checked
    against the float64 reference before it is timed, built-in or not.

    GPU backends override `to_device`, `to_host` and `synchronize`; their kernels take and return
    device arrays. Scratch memory a backend keeps between calls lives in its `workspace`
    (backends.scratch).
    """

    name: str = ""
    description: str = ""
    dtypes: tuple = (np.float32, np.float64)
    device: str = "cpu"
    #: Multiply-accumulates per second this backend sustains, roughly. The harness divides a
    #: problem's multiply-accumulates by it to estimate a call's time and skips the backend where
    #: that exceeds its per-case limit. None: no estimate, never skipped.
    est_macs_per_s: float | None = None
    #: backend="auto" may choose it (after verifying and timing it on the problem). Opt-in:
    #: convbench's own algorithms set it; a user backend sets it to race in auto.
    auto_candidate: bool = False
    #: its calls run the BLAS's thread pool, whose workers busy-wait for a while after each call
    #: (autotune's race lets them settle before timing a candidate that does not use them)
    blas_threads: bool = False
    #: An outside library convbench is measured against (torch, ONNX Runtime, ...): the report
    #: names the fastest peer per case, and a peer is never an auto candidate.
    peer: bool = False

    def __init__(self):
        self.workspace = Workspace()

    # --- availability ---------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else a one-line reason."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    # --- capability -----------------------------------------------------------------------------
    def implements(self, op) -> bool:
        return callable(getattr(self, op.method, None)) or self.lowering(op) is not None

    def lowering(self, op):
        """How this backend runs `op` through its kernels for another op (backends.lowering):
        for a CPU backend without a method of its own for op but with one for the inner op;
        else None."""
        low = LOWERINGS.get(op.name)
        if low is None or self.device != "cpu" or callable(getattr(self, op.method, None)):
            return None
        return low if callable(getattr(self, get_op(low.inner).method, None)) else None

    def unsupported(self, op, problem, dtype) -> str | None:
        """A reason this backend cannot run this problem, or None. Override for parameter limits."""
        return None

    def check(self, op, problem, dtype) -> None:
        """Raise UnsupportedError (or BackendUnavailableError) unless this backend can run it."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"{self.name}: {reason}")
        if not self.implements(op):
            raise UnsupportedError(f"{self.name} does not implement {op.name}")
        if np.dtype(dtype) not in [np.dtype(d) for d in self.dtypes]:
            names = ", ".join(np.dtype(d).name for d in self.dtypes)
            raise UnsupportedError(f"{self.name} does not support dtype {np.dtype(dtype).name} "
                                   f"(supports {names})")
        low = self.lowering(op)
        if low is None:
            why = self.unsupported(op, problem, np.dtype(dtype))
        else:
            why = self.unsupported(get_op(low.inner), low.problem(problem), np.dtype(dtype))
        if why:
            via = f" (as {low.inner})" if low is not None else ""
            raise UnsupportedError(f"{self.name} does not support {op.name}{via} with {why}")

    def run(self, op, problem, *inputs):
        """Run op on host or device arrays as given (no checks: call `check` first)."""
        low = self.lowering(op)
        if low is not None:
            return low.run(self, problem, *inputs)
        return getattr(self, op.method)(problem, *inputs)

    def workspace_bytes(self, op, problem, dtype) -> int:
        """The scratch bytes one call of `op` on `problem` in `dtype` allocates beyond its inputs
        and outputs, at its peak: padded and unfolded copies, transforms, temporaries (device
        memory for a device backend). The harness adds it to a case's memory estimate before
        allocating anything (verify.memory_need), so derive it from the allocations the code
        makes. Asked only where `check` passes. The default, 0, is for a backend that allocates
        only its outputs."""
        return 0

    def scratch_bytes(self, op, problem, dtype) -> int:
        """workspace_bytes of the kernel that runs op: for an op lowered onto another
        (backends.lowering), the inner op's on its problem plus the copies the lowering makes."""
        low = self.lowering(op)
        if low is None:
            return self.workspace_bytes(op, problem, np.dtype(dtype))
        during, after = low.copies(problem, np.dtype(dtype).itemsize)
        inner = self.workspace_bytes(get_op(low.inner), low.problem(problem), np.dtype(dtype))
        return max(inner + during, after)

    def tolerance_terms(self, op, problem) -> float:
        """Extra rounding steps this algorithm adds beyond the direct sum (transforms, FFT)."""
        return 0.0

    def record(self) -> dict | None:
        """What the machine record (convbench.machine.fingerprint) keeps about this backend: the
        versions and thread settings of the libraries it runs, without importing them. None:
        nothing beyond the common fingerprint."""
        return None

    def extra_rounding(self, op, problem) -> float:
        """tolerance_terms of the kernel that runs op: the inner op's for a lowered one."""
        low = self.lowering(op)
        if low is not None:
            return self.tolerance_terms(get_op(low.inner), low.problem(problem))
        return self.tolerance_terms(op, problem)

    def delegate(self, op, problem, dtype) -> str | None:
        """The backend this one hands `problem` to, for backends that choose among others
        (auto); None for a backend that computes itself."""
        return None

    # --- data movement (identity on the CPU) ----------------------------------------------------
    def to_device(self, a):
        return a

    def to_host(self, a):
        return a

    def synchronize(self) -> None:
        pass

    def time_call(self, fn) -> float:
        """Seconds one call of fn takes (perf_counter_ns here; device events on a GPU)."""
        return cpu_time_call(fn)

    def peak_bytes(self, fn) -> int | None:
        """The most bytes allocated at once while one call fn() runs, above what was allocated
        before it, its outputs included (device memory for a device backend); None where this
        backend's allocations cannot be seen. Here: what tracemalloc sees (NumPy and Numba).
        A backend whose library allocates elsewhere overrides it. Never around a timed call."""
        return traced_peak(fn)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"
