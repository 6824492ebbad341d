"""numpy: vectorised NumPy for pooling (strided window views) and recurrent cells (one GEMM per
time step, the input projection hoisted into one GEMM for the whole sequence)."""
from __future__ import annotations

import numpy as np

from convbench.backends import rnn_numpy
from convbench.backends.base import Backend
from convbench.ops.pool import avg_divisors


def _pads(p):
    """((top, bottom), (left, right)): the padding, and on the bottom/right as far as ceil_mode's
    last window reaches."""
    ((pt, pb), (pl, pr)), (kh, kw), (sh, sw), (dh, dw) = p.padding, p.kernel, p.stride, p.dilation
    extra_h = max(0, (p.P - 1) * sh + dh * (kh - 1) + 1 - (p.H + pt + pb))
    extra_w = max(0, (p.Q - 1) * sw + dw * (kw - 1) + 1 - (p.W + pl + pr))
    return (pt, pb + extra_h), (pl, pr + extra_w)


def _padded(x, p, fill):
    """x padded by _pads(p) with `fill`."""
    return np.pad(x, ((0, 0), (0, 0), *_pads(p)), constant_values=fill)


def _pool_workspace(op, p, s: int) -> int:
    """Peak scratch bytes of the pooling methods below, from their arrays: padded copies, the
    window copy and arg-max of the max gradient, the sums and shares of average pooling."""
    (pt, pb), (pl, pr) = _pads(p)
    padded = p.N * p.C * (p.H + pt + pb) * (p.W + pl + pr) * s
    dxp = padded if pt or pb or pl or pr else 0      # else the cropped dx is dxp itself
    out = p.N * p.C * p.P * p.Q
    divisors = p.P * p.Q * (8 + s)
    if op.name == "max_pool2d:fwd":
        return padded
    if op.name == "max_pool2d:bwd":     # window copy, arg-max, padded planes, where's mask
        return out * (p.kernel[0] * p.kernel[1] * s + 8 + 1 + s) + padded + dxp
    if op.name == "avg_pool2d:fwd":     # padded input, the window sums and their quotient
        return padded + 2 * out * s + divisors
    return max(2 * out * s, out * s + padded + dxp) + divisors   # avg bwd: shares, planes


def _windows(xp, p):
    """(N, C, P, Q, kh, kw) view of the padded input."""
    sn, sc, sh_, sw_ = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(p.N, p.C, p.P, p.Q, p.kernel[0], p.kernel[1]),
        strides=(sn, sc, sh_ * p.stride[0], sw_ * p.stride[1], sh_ * p.dilation[0],
                 sw_ * p.dilation[1]), writeable=False)


def _offset_slices(p, i, j):
    """Where window offset (i, j) lands, for every output, in the padded input."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    return (slice(None), slice(None), slice(i * dh, i * dh + (p.P - 1) * sh + 1, sh),
            slice(j * dw, j * dw + (p.Q - 1) * sw + 1, sw))


def _crop(dxp, p):
    ph, pw = p.pad_begin
    return np.ascontiguousarray(dxp[:, :, ph:ph + p.H, pw:pw + p.W])


class NumpyBackend(Backend):
    name = "numpy"
    auto_candidate = True
    blas_threads = True
    description = "vectorised NumPy: strided-window pooling; RNN with one GEMM per step"

    def workspace_bytes(self, op, p, dtype):
        if op.family.endswith("pool2d"):
            return _pool_workspace(op, p, dtype.itemsize)
        return rnn_numpy.workspace_bytes(p, op.direction, dtype.itemsize)

    # --- pooling --------------------------------------------------------------------------------
    def max_pool2d_fwd(self, p, x):
        return np.ascontiguousarray(_windows(_padded(x, p, -np.inf), p).max(axis=(4, 5)))

    def max_pool2d_bwd(self, p, dy, x):
        win = _windows(_padded(x, p, -np.inf), p).reshape(p.N, p.C, p.P, p.Q, -1)
        # first maximum in row-major window order, as PyTorch (np.argmax also stops at a NaN)
        arg = win.argmax(axis=4)
        xp = _padded(x, p, 0)
        dxp = np.zeros_like(xp)
        for i in range(p.kernel[0]):
            for j in range(p.kernel[1]):
                dxp[_offset_slices(p, i, j)] += np.where(arg == i * p.kernel[1] + j, dy, 0)
        return _crop(dxp, p)

    def avg_pool2d_fwd(self, p, x):
        total = _windows(_padded(x, p, 0), p).sum(axis=(4, 5))
        return (total / avg_divisors(p).astype(x.dtype)).astype(x.dtype)

    def avg_pool2d_bwd(self, p, dy, x):
        share = (dy / avg_divisors(p).astype(dy.dtype)).astype(dy.dtype)
        dxp = np.zeros_like(_padded(x, p, 0))
        for i in range(p.kernel[0]):
            for j in range(p.kernel[1]):
                dxp[_offset_slices(p, i, j)] += share
        # ceil_mode windows can reach past the padding; only the input's own cells are kept
        return _crop(dxp, p)

    # --- recurrent cells --------------------------------------------------------------------------
    def lstm_fwd(self, p, *args):
        return rnn_numpy.forward(p, *args)

    def gru_fwd(self, p, *args):
        return rnn_numpy.forward(p, *args)

    def rnn_tanh_fwd(self, p, *args):
        return rnn_numpy.forward(p, *args)

    def lstm_bwd(self, p, *args):
        return rnn_numpy.backward(p, *args)

    def gru_bwd(self, p, *args):
        return rnn_numpy.backward(p, *args)

    def rnn_tanh_bwd(self, p, *args):
        return rnn_numpy.backward(p, *args)
