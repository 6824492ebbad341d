"""Ops a CPU backend runs through its own kernels for another op: the transposed convolution is
the input gradient of a convolution (ops.conv_transpose), so

    conv_transpose2d fwd          = conv2d bwd-data    of problem.conv, with dy = x
    conv_transpose2d bwd-data     = conv2d fwd         of problem.conv, on dy
    conv_transpose2d bwd-weights  = conv2d bwd-weights of problem.conv, with the roles of input
                                    and output gradient swapped (dy = x, x = the op's dy)

plus the output padding's rows (which no term reaches: zeros, then the bias) and the bias.
`Backend` (backends.base) runs these for any CPU backend that has the convolution kernel and no
method of its own for the op; its checks and tolerances are the convolution's on problem.conv.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _extended(y, p):
    """y (N, K, Hc, Wc) with the output padding's zero rows and columns appended."""
    eh, ew = p.extra
    if eh == ew == 0:
        return y
    out = np.zeros(p.y_shape, dtype=y.dtype)
    out[:, :, :y.shape[2], :y.shape[3]] = y
    return out


def _cropped(dy, p):
    """dy without the output padding's rows (no term of them depends on x or w)."""
    eh, ew = p.extra
    if eh == ew == 0:
        return dy
    return np.ascontiguousarray(dy[:, :, :p.P - eh, :p.Q - ew])


def conv_transpose2d_fwd(backend, p, x, w, b):
    y = _extended(backend.conv2d_bwd_data(p.conv, x, w), p)
    if b is not None:
        y = y + b[:, None, None]
    return y


def conv_transpose2d_bwd_data(backend, p, dy, w):
    return backend.conv2d_fwd(p.conv, _cropped(dy, p), w, None)


def conv_transpose2d_bwd_weights(backend, p, dy, x):
    return backend.conv2d_bwd_weights(p.conv, x, _cropped(dy, p))


def _fwd_copies(p, s: int) -> tuple[int, int]:
    """The inner input gradient's result, when the output padding or the bias makes a new array
    of it (it ends the inner call), and then the extended array beside it when the bias makes
    yet another."""
    eh, ew = p.extra
    inner = p.N * p.K * (p.P - eh) * (p.Q - ew) * s if (eh or ew or p.bias) else 0
    return inner, inner + (p.N * p.K * p.P * p.Q * s if (eh or ew) and p.bias else 0)


def _cropped_copy(p, s: int) -> tuple[int, int]:
    """The output gradient without the output padding's rows, held through the inner call."""
    eh, ew = p.extra
    return (p.N * p.K * (p.P - eh) * (p.Q - ew) * s if (eh or ew) else 0), 0


@dataclass(frozen=True)
class Lowering:
    """op `name` runs as op `inner` on `problem(p)`, through `run(backend, p, *inputs)`;
    `copies(p, itemsize)` is the bytes of the arrays `run` makes around the inner op: (those
    alive when the inner op's own scratch is, those alive at most after it)."""

    inner: str
    problem: Callable
    run: Callable
    copies: Callable


LOWERINGS: dict[str, Lowering] = {
    "conv_transpose2d:fwd": Lowering("conv2d:bwd-data", lambda p: p.conv, conv_transpose2d_fwd,
                                     _fwd_copies),
    "conv_transpose2d:bwd-data": Lowering("conv2d:fwd", lambda p: p.conv,
                                          conv_transpose2d_bwd_data, _cropped_copy),
    "conv_transpose2d:bwd-weights": Lowering("conv2d:bwd-weights", lambda p: p.conv,
                                             conv_transpose2d_bwd_weights, _cropped_copy),
}
