"""numba-cuda: CUDA kernels written in Numba (numba-cuda package), for every op convbench has.

Convolutions run as implicit GEMMs (shared-memory tiles, a register block of outputs per thread,
double-buffered loads; tile shapes are parameters), depthwise convolutions as direct kernels;
pooling as bandwidth-bound element-wise kernels; recurrent layers as one input-projection GEMM
and one fused GEMM-plus-gates kernel per step, forward and backward. The kernels live in
_numba_cuda_{gemm,conv,pool,rnn}.py (reached through KERNELS, loaded on first use), their tile
shapes in _numba_cuda_tiles.py (Tiles and the sweep's candidates are named here for callers
outside the package), the float32 PTX check in _numba_cuda_ptx.py.

Without a GPU the kernels still run under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which
the tests use on tiny shapes with tiny tiles; the simulator is far too slow to time anything.
Its allocation of shared arrays races between a block's threads; _numba_cuda_sim fixes that.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

from convbench.backends._numba_cuda_tiles import (
    GPU_CONV,
    GPU_GEMM,
    GPU_STEP,
    GPU_THREADS,
    SIM,
    SIM_THREADS,
    Tiles,
    default_tiles,
    forward_table,
    input_gradient_phases,
    weight_grad_splits,
)
from convbench.backends.base import Backend
from convbench.lazy import LazyModule

__all__ = ["CUDA", "GPU_CONV", "GPU_GEMM", "GPU_STEP", "KERNELS", "SIM", "NumbaCUDABackend",
           "Tiles", "default_tiles", "simulated"]


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
#: The kernel modules by kind, each loaded on first use (numba-cuda compiles each kernel on its
#: first launch); they import numba.cuda, so they load inside the same workaround.
KERNELS = SimpleNamespace(**{
    kind: LazyModule(f"convbench.backends._numba_cuda_{kind}", prepare=_row_stack_alias)
    for kind in ("gemm", "conv", "pool", "rnn", "ptx")})


def _cuda():
    """numba.cuda, imported on first use."""
    return CUDA.load()


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _flat(a):
    return a.reshape(a.size)


class NumbaCUDABackend(Backend):
    name = "numba-cuda"
    auto_candidate = True
    description = ("CUDA kernels in Numba: tiled implicit-GEMM convolutions, fused recurrent "
                   "steps; the CPU simulator in tests")
    device = "cuda"
    dtypes = (np.float32, np.float64)

    def __init__(self):
        super().__init__()
        #: Tile shapes by kernel kind ('conv', 'gemm', 'step'); unset kinds use default_tiles.
        self.tiles: dict = {}
        self._plans = None

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

    def unsupported(self, op, p, dtype):
        if getattr(p, "original_gru", False):
            return ("linear_before_reset=False (the GRU kernel applies the reset gate after the "
                    "hidden product)")
        return None

    def workspace_bytes(self, op, p, dtype):
        """Device bytes beyond the inputs' device copies and the outputs: the convolutions' tap
        tables and the weight gradient's reduction slices, max pooling's arg-max, and the
        recurrent layers' input projection, state sequences, per-step caches and gate
        gradients (with a reversed layer's flipped copies)."""
        s = dtype.itemsize
        if op.family == "conv2d":
            if p.is_depthwise:
                return 0
            if op.direction == "bwd-weights":
                rows, cols = p.Kg, p.Cg * p.R * p.S
                slices = weight_grad_splits(p, self.tiles_for("conv", rows, cols),
                                            self.multiprocessors())
                rows_per = -(-(p.N * p.P) // slices)
                slices = -(-(p.N * p.P) // rows_per)
                return slices * p.K * p.Cg * p.R * p.S * s if slices > 1 else 0
            if op.direction == "fwd":
                return forward_table(p).nbytes
            return sum(max(ph.table.nbytes, 16) for ph in input_gradient_phases(p))
        if op.family.endswith("pool2d"):
            return 4 * p.N * p.C * p.P * p.Q if op.name == "max_pool2d:bwd" else 0
        T, N, H, GH = p.T, p.N, p.H, p.gates * p.H
        states = (T + 1) * N * H * (2 if p.has_cell_state else 1)
        flips = (T * N * p.I + T * N * H) if p.reverse else 0       # x in, y out (and dy in)
        if op.direction == "fwd":
            return (T * N * GH + states + flips + 1) * s
        cache = T * N * {"rnn_tanh": 0, "lstm": 4, "gru": 4}[p.cell] * H
        grads = T * N * GH * (2 if p.cell == "gru" else 1) + N * H
        return (T * N * GH + states + cache + grads + 2 * flips) * s

    # --- data movement --------------------------------------------------------------------------
    def to_device(self, a):
        return _cuda().to_device(np.ascontiguousarray(a))

    def to_host(self, a):
        return a.copy_to_host() if hasattr(a, "copy_to_host") else a

    def synchronize(self):
        _cuda().synchronize()

    def time_call(self, fn):
        """Device events around the launches, one synchronisation: kernel time, no host copies.
        The simulator runs kernels synchronously and its events record no time: a host clock."""
        if simulated():
            return super().time_call(fn)
        cuda = _cuda()
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3

    def peak_bytes(self, fn):
        """Device bytes one call allocates: the sizes Numba asks the context for while fn runs,
        with Numba's deallocations held back to the end (cuda.defer_cleanup), so that the sum is
        what the call holds at once at its end, a bound on its peak. cudaMemGetInfo's counters
        move in pages of the driver's allocation granularity (2 MiB), too coarse for small
        buffers. On the simulator device arrays are host arrays: tracemalloc sees them."""
        if simulated():
            return super().peak_bytes(fn)
        cuda = _cuda()
        ctx = cuda.current_context()
        sizes = []
        real = ctx.memalloc

        def counting(size):
            sizes.append(int(size))
            return real(size)

        ctx.memalloc = counting            # this context only, for this call only
        try:
            with cuda.defer_cleanup():
                fn()
                cuda.synchronize()
        finally:
            del ctx.memalloc
        return sum(sizes)

    # --- launch settings ------------------------------------------------------------------------
    def tiles_for(self, kind: str, rows: int | None = None, columns: int | None = None) -> Tiles:
        return self.tiles.get(kind) or default_tiles(kind, simulated(), rows, columns)

    @property
    def threads(self) -> int:
        return SIM_THREADS if simulated() else GPU_THREADS

    def multiprocessors(self) -> int:
        if simulated():
            return 1
        return int(_cuda().get_current_device().MULTIPROCESSOR_COUNT)

    def _empty(self, shape, dtype):
        return _cuda().device_array(int(np.prod(shape)), dtype=dtype)

    def plans(self):
        if self._plans is None:
            self._plans = KERNELS.conv.ConvPlans(_cuda())
        return self._plans

    # --- convolution ------------------------------------------------------------------------------
    def conv2d_fwd(self, p, x, w, b):
        conv = KERNELS.conv
        y = self._empty(p.y_shape, x.dtype)
        bf = None if b is None else _flat(b)
        if p.is_depthwise:
            conv.depthwise_fwd(p, _flat(x), _flat(w), bf, y, self.threads)
        else:
            conv.conv_fwd(self.plans(), p, _flat(x), _flat(w), bf, y,
                          self.tiles_for("conv", p.N * p.P * p.Q, p.Kg))
        return y.reshape(p.y_shape)

    def conv2d_bwd_data(self, p, dy, w):
        conv = KERNELS.conv
        dx = self._empty(p.x_shape, dy.dtype)
        if p.is_depthwise:
            conv.depthwise_bwd_data(p, _flat(dy), _flat(w), dx, self.threads)
        else:
            conv.conv_bwd_data(self.plans(), p, _flat(dy), _flat(w), dx,
                               self.tiles_for("conv", p.N * p.H * p.W, p.Cg))
        return dx.reshape(p.x_shape)

    def conv2d_bwd_weights(self, p, dy, x):
        conv = KERNELS.conv
        dw = self._empty(p.w_shape, dy.dtype)
        if p.is_depthwise:
            conv.depthwise_bwd_weights(p, _flat(dy), _flat(x), dw, self.threads)
        else:
            conv.conv_bwd_weights(p, _flat(dy), _flat(x), dw,
                                  self.tiles_for("conv", p.Kg, p.Cg * p.R * p.S),
                                  self.multiprocessors(), self.threads)
        return dw.reshape(p.w_shape)

    # --- pooling ----------------------------------------------------------------------------------
    def max_pool2d_fwd(self, p, x):
        y = self._empty(p.y_shape, x.dtype)
        KERNELS.pool.max_pool_fwd(p, _flat(x), y, self.threads)
        return y.reshape(p.y_shape)

    def max_pool2d_bwd(self, p, dy, x):
        dx = self._empty(p.x_shape, dy.dtype)
        arg = _cuda().device_array(dy.size, dtype=np.int32)
        KERNELS.pool.max_pool_bwd(p, _flat(dy), _flat(x), dx, arg, self.threads)
        return dx.reshape(p.x_shape)

    def avg_pool2d_fwd(self, p, x):
        y = self._empty(p.y_shape, x.dtype)
        KERNELS.pool.avg_pool_fwd(p, _flat(x), y, self.threads)
        return y.reshape(p.y_shape)

    def avg_pool2d_bwd(self, p, dy, x):
        dx = self._empty(p.x_shape, dy.dtype)
        KERNELS.pool.avg_pool_bwd(p, _flat(dy), dx, self.threads)
        return dx.reshape(p.x_shape)

    # --- recurrent layers -----------------------------------------------------------------------
    @staticmethod
    def _flats(*arrays):
        return [None if a is None else _flat(a) for a in arrays]

    def _steps_in_order(self, p, a, width):
        """A flat (T, N, width) sequence in the order the layer runs it: flipped when reversed
        (the kernels run steps 0..T-1; the flip is one bandwidth-bound copy)."""
        return KERNELS.rnn.flip_steps(a, p.T, p.N * width, self.threads) if p.reverse else a

    def _rnn_fwd(self, p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        x = self._steps_in_order(p, _flat(x), p.I)
        hs, cs, _ = KERNELS.rnn.forward(p, x, *self._flats(h0, c0, w_ih, w_hh, b_ih, b_hh),
                                          self.tiles_for("gemm"), self.tiles_for("step"))
        NH = p.N * p.H
        y = self._steps_in_order(p, hs[NH:], p.H).reshape(p.y_shape)
        hT = hs[p.T * NH:].reshape(p.h_shape)
        cT = None if cs is None else cs[p.T * NH:].reshape(p.h_shape)
        return y, hT, cT

    def _rnn_bwd(self, p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        dy = self._steps_in_order(p, _flat(dy), p.H)
        x = self._steps_in_order(p, _flat(x), p.I)
        out = list(KERNELS.rnn.backward(
            p, dy, *self._flats(dhT, dcT), x, *self._flats(h0, c0, w_ih, w_hh, b_ih, b_hh),
            self.tiles_for("gemm"), self.tiles_for("step"), self.threads))
        out[0] = self._steps_in_order(p, out[0], p.I)
        shapes = (p.x_shape, p.h_shape, p.h_shape, p.w_ih_shape, p.w_hh_shape,
                  (p.gates * p.H,), (p.gates * p.H,))
        return tuple(None if a is None else a.reshape(s) for a, s in zip(out, shapes))

    lstm_fwd = gru_fwd = rnn_tanh_fwd = _rnn_fwd
    lstm_bwd = gru_bwd = rnn_tanh_bwd = _rnn_bwd
