"""What every backend is: a name, the ops it implements, and what it cannot do, with reasons."""
from __future__ import annotations

import numpy as np

from convbench.errors import BackendUnavailableError, UnsupportedError


class Backend:
    """Base class. A backend implements an op by defining the method the op spec names
    (`conv2d_fwd(problem, x, w, b)`, `conv2d_bwd_data(problem, dy, w)`, ...), and may refuse a
    particular problem by overriding `unsupported`.

    Arrays arrive already validated (shapes, dtype) and C-contiguous. GPU backends override
    `to_device`, `to_host` and `synchronize`; their kernels take and return device arrays.
    """

    name: str = ""
    description: str = ""
    dtypes: tuple = (np.float32, np.float64)
    device: str = "cpu"
    #: Largest problem (multiply-accumulates per second, roughly) this backend sustains; the harness
    #: uses it to skip cases that would run for hours. None: no estimate needed.
    est_macs_per_s: float | None = None

    # --- availability ---------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else a one-line reason."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    # --- capability -----------------------------------------------------------------------------
    def implements(self, op) -> bool:
        return callable(getattr(self, op.method, None))

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
        why = self.unsupported(op, problem, np.dtype(dtype))
        if why:
            raise UnsupportedError(f"{self.name} does not support {op.name} with {why}")

    def run(self, op, problem, *inputs):
        """Run op on host or device arrays as given (no checks: call `check` first)."""
        return getattr(self, op.method)(problem, *inputs)

    def tolerance_terms(self, op, problem) -> float:
        """Extra rounding steps this algorithm adds beyond the direct sum (transforms, FFT)."""
        return 0.0

    # --- data movement (identity on the CPU) ----------------------------------------------------
    def to_device(self, a):
        return a

    def to_host(self, a):
        return a

    def synchronize(self) -> None:
        pass

    def time_call(self, fn) -> float:
        """Seconds one call of fn takes (perf_counter_ns here; device events on a GPU)."""
        from convbench.harness.timing import cpu_time_call
        return cpu_time_call(fn)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"
