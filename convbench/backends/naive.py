"""naive: loops that slide each filter over the image, computing one dot product per output.

The textbook algorithm, kept as readable as the definition. Only the dot product itself is left to
NumPy; everything else is a Python loop, so it is slow (the harness skips it on large problems).
"""
from __future__ import annotations

import numpy as np

from convbench.backends.base import Backend
from convbench.ops.conv import crop_padding, pad_input


def _window(p, k, i, j):
    """Index of the input window (channels of k's group, dilated rows, dilated columns) that
    output (k, i, j) is computed from, in the padded input of one image."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    c0 = (k // p.Kg) * p.Cg
    return (slice(c0, c0 + p.Cg), slice(i * sh, i * sh + (p.R - 1) * dh + 1, dh),
            slice(j * sw, j * sw + (p.S - 1) * dw + 1, dw))


class NaiveBackend(Backend):
    name = "naive"
    description = "Python loops over outputs, one dot product each (the definition)"
    est_macs_per_s = 2e7

    def conv2d_fwd(self, p, x, w, b):
        xp = pad_input(x, p)
        y = np.empty(p.y_shape, dtype=x.dtype)
        for n in range(p.N):
            for k in range(p.K):
                for i in range(p.P):
                    for j in range(p.Q):
                        y[n, k, i, j] = np.sum(xp[n][_window(p, k, i, j)] * w[k])
                if b is not None:
                    y[n, k] += b[k]
        return y

    def conv2d_bwd_data(self, p, dy, w):
        # Each output's gradient flows back through the window it was computed from.
        dxp = np.zeros((p.N, p.C, p.Hp, p.Wp), dtype=dy.dtype)
        for n in range(p.N):
            for k in range(p.K):
                for i in range(p.P):
                    for j in range(p.Q):
                        dxp[n][_window(p, k, i, j)] += dy[n, k, i, j] * w[k]
        return np.ascontiguousarray(crop_padding(dxp, p))

    def conv2d_bwd_weights(self, p, dy, x):
        xp = pad_input(x, p)
        dwt = np.zeros(p.w_shape, dtype=dy.dtype)
        for n in range(p.N):
            for k in range(p.K):
                for i in range(p.P):
                    for j in range(p.Q):
                        dwt[k] += dy[n, k, i, j] * xp[n][_window(p, k, i, j)]
        return dwt
