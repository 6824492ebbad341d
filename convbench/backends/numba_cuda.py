"""numba-cuda: CUDA kernels written in Numba (numba-cuda package), forward and both gradients.

Without a GPU the kernels still run under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which
the tests use on tiny shapes; the simulator is far too slow to time anything.

Padding is handled inside the kernels by bounds checks, so inputs stay on the device untouched.
Accumulators start from a zero of the data's dtype passed in by the host (`zero`), so float32
kernels hold no float64 arithmetic.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from convbench.backends.base import Backend, LazyModule
from convbench.ops.pool import avg_divisors


@contextmanager
def _row_stack_alias():
    """numba-cuda 0.30.4 registers an overload of np.row_stack, which numpy 2.5 removed. Where it
    is missing, alias it to np.vstack for the import only, and import the module that registers
    it now (numba-cuda would otherwise import it at the first kernel compilation, after the alias
    is gone); the alias is removed again, so no one else sees a patched numpy."""
    if hasattr(np, "row_stack"):
        yield
        return
    np.row_stack = np.vstack
    try:
        yield
        import numba.cuda.np.arrayobj  # noqa: F401 - numba-cuda: registers its overloads now
    finally:
        del np.row_stack


CUDA = LazyModule("numba.cuda", prepare=_row_stack_alias)
KERNELS = LazyModule("convbench.backends._numba_cuda_kernels", prepare=_row_stack_alias)


def _cuda():
    """numba.cuda, imported on first use."""
    return CUDA.load()


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


THREADS = 128


def _grid(n: int) -> int:
    return max(1, min((n + THREADS - 1) // THREADS, 65535 * 4))


def kernels():
    """The kernel module (numba-cuda compiles each kernel on its first launch)."""
    return KERNELS.load()


class NumbaCUDABackend(Backend):
    name = "numba-cuda"
    auto_candidate = True
    description = "CUDA kernels in Numba (one thread per output); the CPU simulator in tests"
    device = "cuda"
    dtypes = (np.float32, np.float64)

    def unavailable_reason(self):
        try:
            cuda = _cuda()
        except ImportError as e:
            return f"numba-cuda is not installed ({e}); pip install 'convbench[cuda]'"
        try:
            if not cuda.is_available():
                return "no CUDA GPU found (set NUMBA_ENABLE_CUDASIM=1 to run on the simulator)"
        except Exception as e:  # driver present but broken
            return f"CUDA driver error: {e}"
        return None

    def device_info(self) -> dict | None:
        """The GPU for the machine fingerprint: name, compute capability, driver; None when the
        backend is unavailable."""
        if not self.available:
            return None
        if simulated():
            return {"name": "Numba CUDA simulator"}
        cuda = _cuda()
        dev = cuda.get_current_device()
        return {"name": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
                "compute_capability": ".".join(map(str, dev.compute_capability)),
                "driver": str(cuda.cudadrv.driver.driver.get_version())}

    # --- data movement --------------------------------------------------------------------------
    def to_device(self, a):
        return _cuda().to_device(np.ascontiguousarray(a))

    def to_host(self, a):
        return a.copy_to_host() if hasattr(a, "copy_to_host") else a

    def synchronize(self):
        _cuda().synchronize()

    def time_call(self, fn):
        """Device events around the launches, one synchronisation: kernel time, no host copies."""
        cuda = _cuda()
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cuda.event_elapsed_time(start, end) * 1e-3

    def _launch(self, name, n, *args):
        getattr(kernels(), name)[_grid(n), THREADS](*args)

    def _geom(self, p, dtype):
        (sh, sw), ((pt, _), (pl, _)), (dh, dw) = p.stride, p.padding, p.dilation
        return sh, sw, pt, pl, dh, dw, p.groups, np.dtype(dtype).type(0)

    def conv2d_fwd(self, p, x, w, b):
        cuda = _cuda()
        y = cuda.device_array(p.y_shape, dtype=x.dtype)
        bias = b if b is not None else cuda.device_array(1, dtype=x.dtype)
        self._launch("conv_fwd", int(np.prod(p.y_shape)), x, w, bias, b is not None, y,
                     *self._geom(p, y.dtype))
        return y

    def conv2d_bwd_data(self, p, dy, w):
        dx = _cuda().device_array(p.x_shape, dtype=dy.dtype)
        self._launch("conv_bwd_data", int(np.prod(p.x_shape)), dy, w, dx, *self._geom(p, dy.dtype))
        return dx

    def conv2d_bwd_weights(self, p, dy, x):
        dwt = _cuda().device_array(p.w_shape, dtype=dy.dtype)
        self._launch("conv_bwd_weights", int(np.prod(p.w_shape)), dy, x, dwt,
                     *self._geom(p, dy.dtype))
        return dwt

    # --- pooling ----------------------------------------------------------------------------------
    def _pool_geom(self, p):
        return (*p.kernel, *p.stride, *p.padding)

    def _divisors(self, p, dtype):
        return _cuda().to_device(avg_divisors(p).astype(dtype))

    def max_pool2d_fwd(self, p, x):
        y = _cuda().device_array(p.y_shape, dtype=x.dtype)
        self._launch("max_pool_fwd", int(np.prod(p.y_shape)), x, y, *self._pool_geom(p),
                     *p.dilation)
        return y

    def max_pool2d_bwd(self, p, dy, x):
        dx = _cuda().device_array(p.x_shape, dtype=dy.dtype)
        self._launch("max_pool_bwd", int(np.prod(p.x_shape)), dy, x, dx, *self._pool_geom(p),
                     *p.dilation, np.dtype(dy.dtype).type(0))
        return dx

    def avg_pool2d_fwd(self, p, x):
        y = _cuda().device_array(p.y_shape, dtype=x.dtype)
        self._launch("avg_pool_fwd", int(np.prod(p.y_shape)), x, y, self._divisors(p, x.dtype),
                     *self._pool_geom(p), np.dtype(x.dtype).type(0))
        return y

    def avg_pool2d_bwd(self, p, dy, x):
        dx = _cuda().device_array(p.x_shape, dtype=dy.dtype)
        self._launch("avg_pool_bwd", int(np.prod(p.x_shape)), dy, dx, self._divisors(p, dy.dtype),
                     *self._pool_geom(p), np.dtype(dy.dtype).type(0))
        return dx

    # --- recurrent cells (forward): tiled GEMM + fused gates per step -----------------------------
    def _gemm(self, a, b, bias, out):
        k = kernels().matmul_bt_bias
        T = kernels().TILE
        grid = ((out.shape[1] + T - 1) // T, (out.shape[0] + T - 1) // T)
        k[grid, (T, T)](a, b, bias, out, np.dtype(out.dtype).type(0))

    def _rnn_fwd(self, p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cuda = _cuda()
        dt = x.dtype
        GH = p.gates * p.H
        zeros = cuda.to_device(np.zeros(GH, dtype=dt))
        b_ih = zeros if b_ih is None else b_ih
        b_hh = zeros if b_hh is None else b_hh
        gi = cuda.device_array((p.T * p.N, GH), dtype=dt)
        self._gemm(x.reshape(p.T * p.N, p.I), w_ih, b_ih, gi)
        gi = gi.reshape(p.T, p.N, GH)
        gh = cuda.device_array((p.N, GH), dtype=dt)
        y = cuda.device_array(p.y_shape, dtype=dt)
        one = np.dtype(dt).type(1)
        h, c = h0, c0
        for t in range(p.T):
            self._gemm(h, w_hh, b_hh, gh)
            hn = y[t]
            if p.cell == "lstm":
                cn = cuda.device_array(p.h_shape, dtype=dt)
                self._launch("lstm_gates", p.N * p.H, gi[t], gh, c, hn, cn, one)
                c = cn
            else:
                self._launch("gru_gates" if p.cell == "gru" else "tanh_gates", p.N * p.H,
                             gi[t], gh, h, hn, one)
            h = hn
        return y, h, c

    lstm_fwd = gru_fwd = rnn_tanh_fwd = _rnn_fwd
