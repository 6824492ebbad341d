"""numba-cpu recurrent cells: convbench's own GEMM (convbench.kernels, the recurrent weights
packed once per call) around fused gate kernels, in backends.rnn_numpy's driver.

No BLAS runs inside: the GEMMs and the gate kernels share Numba's thread pool. A BLAS's worker
threads, which busy-wait for a while after each call, would otherwise take the cores from the
Numba kernel of every step that follows (how long they wait is read from the environment when
the BLAS loads, so it cannot be set from here)."""
from __future__ import annotations

import numpy as np

from convbench import kernels
from convbench.backends import rnn_numpy
from convbench.lazy import LazyModule

KERNELS = LazyModule("convbench.backends._numba_rnn_kernels")
#: Steps with fewer state elements (batch x hidden) run their gates on the calling thread: a
#: parallel launch costs about what the gates of such a step take.
SERIAL_STATE = 1 << 15


def _kernel(name: str, h):
    return getattr(KERNELS, name if h.size >= SERIAL_STATE else name + "_serial")


class FusedSteps(rnn_numpy.ExactSteps):
    """rnn_numpy.ExactSteps' interface on the fused Numba kernels (float32 only). The original
    GRU's split gates (gru0_*) are ExactSteps' NumPy ones, around the same BLAS GEMMs."""

    @staticmethod
    def step_forward(cell, gi, gh, h, c):
        hn = np.empty_like(h)
        if cell == "lstm":
            cn, act, tc = np.empty_like(c), np.empty_like(gi), np.empty_like(h)
            _kernel("lstm_fwd", h)(gi, gh, c, hn, cn, act, tc)
            return hn, cn, (act, c, tc)
        if cell == "gru":
            act = np.empty_like(gi)
            _kernel("gru_fwd", h)(gi, gh, h, hn, act)
            return hn, None, (act, gh, h)
        _kernel("tanh_fwd", h)(gi, gh, hn)
        return hn, None, (hn,)

    @staticmethod
    def step_backward(cell, dh, dc, cache):
        dh = np.ascontiguousarray(dh)
        if cell == "lstm":
            act, c_prev, tc = cache
            da, dc_prev = np.empty_like(act), np.empty_like(dh)
            _kernel("lstm_bwd", dh)(dh, dc, act, c_prev, tc, da, dc_prev)
            return da, da, None, dc_prev
        if cell == "gru":
            act, gh, h_prev = cache
            dgi, dgh, direct = np.empty_like(act), np.empty_like(act), np.empty_like(dh)
            _kernel("gru_bwd", dh)(dh, act, gh, h_prev, dgi, dgh, direct)
            return dgi, dgh, direct, None
        (hn,) = cache
        da = np.empty_like(dh)
        _kernel("tanh_bwd", dh)(dh, hn, da)
        return da, da, None, None


class OwnProducts:
    """rnn_numpy.BlasProducts' interface on convbench's GEMM: the right operand of the per-step
    products is packed once (kernels.pack) and reused by every step."""

    @staticmethod
    def right(w, trans: bool, rows: int):
        return kernels.pack(w, "b", other=rows, trans=trans)

    @staticmethod
    def mm(x, r, trans_x: bool = False):
        return kernels.gemm(x, r, trans_a=trans_x)


def _steps(dtype):
    """The fused kernels are float32 (their tanh fit is float32-accurate); float64 runs the exact
    gate arithmetic around the same GEMMs."""
    return FusedSteps if dtype == np.float32 else rnn_numpy.ExactSteps


def workspace_bytes(p, direction: str, dtype) -> int:
    return rnn_numpy.workspace_bytes(p, direction, np.dtype(dtype).itemsize,
                                     fused=_steps(dtype) is FusedSteps)


def forward(p, x, *args):
    return rnn_numpy.forward(p, x, *args, steps=_steps(x.dtype), products=OwnProducts)


def backward(p, dy, *args):
    return rnn_numpy.backward(p, dy, *args, steps=_steps(dy.dtype), products=OwnProducts)
