"""A temporal convolutional network block (Bai, Kolter and Koltun 2018), built from conv1d:

    h1 = relu(conv1d(x, w1, b1, causal, dilation))
    h2 = relu(conv1d(h1, w2, b2, causal, dilation))
    y  = relu(h2 + res),  res = x, or a 1x1 conv1d of x when the channel counts differ

Causal padding keeps output t from seeing inputs after t; stacking blocks with dilations 1, 2, 4,
... grows the receptive field exponentially. Weight normalisation and dropout of the paper are
left to the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.api import DEFAULT_BACKEND, conv1d, conv1d_backward


@dataclass
class TCNParams:
    """w1 (K, C, S), b1 (K,), w2 (K, K, S), b2 (K,), and w_down (K, C, 1), b_down (K,) when
    C != K."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w_down: np.ndarray | None = None
    b_down: np.ndarray | None = None


def receptive_field(kernel_size: int, dilations) -> int:
    """How many past steps (itself included) the last output of a stack of blocks sees."""
    return 1 + sum(2 * (kernel_size - 1) * d for d in dilations)


def tcn_block(x, params: TCNParams, dilation: int = 1, backend: str = DEFAULT_BACKEND):
    """x (N, C, L) -> (y (N, K, L), cache for tcn_block_backward)."""
    kw = dict(padding="causal", dilation=dilation, backend=backend)
    z1 = conv1d(x, params.w1, params.b1, **kw)
    h1 = np.maximum(z1, 0)
    z2 = conv1d(h1, params.w2, params.b2, **kw)
    h2 = np.maximum(z2, 0)
    if params.w_down is not None:
        res = conv1d(x, params.w_down, params.b_down, backend=backend)
    elif x.shape[1] != params.w1.shape[0]:
        raise ValueError(f"x has {x.shape[1]} channels and the block {params.w1.shape[0]}: "
                         "give w_down and b_down for the residual")
    else:
        res = x
    out = h2 + res
    return np.maximum(out, 0), (x, z1, h1, z2, out)


def tcn_block_backward(dy, cache, params: TCNParams, dilation: int = 1,
                       backend: str = DEFAULT_BACKEND) -> tuple[np.ndarray, TCNParams]:
    """dy (N, K, L) -> (dx, gradients as a TCNParams)."""
    x, z1, h1, z2, out = cache
    kw = dict(padding="causal", dilation=dilation, backend=backend)
    dout = dy * (out > 0)
    dz2 = dout * (z2 > 0)
    dh1, dw2, db2 = conv1d_backward(dz2, h1, params.w2, **kw)
    dz1 = dh1 * (z1 > 0)
    dx, dw1, db1 = conv1d_backward(dz1, x, params.w1, **kw)
    dwd = dbd = None
    if params.w_down is not None:
        dxr, dwd, dbd = conv1d_backward(dout, x, params.w_down, backend=backend)
        dx = dx + dxr
    else:
        dx = dx + dout
    return dx, TCNParams(dw1, db1, dw2, db2, dwd, dbd)
