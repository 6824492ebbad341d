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

    def workspace_bytes(self, op, p, dtype):
        s = dtype.itemsize
        if op.family != "conv2d":
            # pooling scans one window at a time; avg's gradient keeps two index ranges
            return 8 * (p.H + p.W) if op.name == "avg_pool2d:bwd" else 0
        # pad_input's copy of x, or the padded dxp of which dx is the cropped copy: either only
        # with padding (without, they are x itself and dx itself)
        padded = p.N * p.C * p.Hp * p.Wp * s if p.padding != ((0, 0), (0, 0)) else 0
        return padded + 2 * p.Cg * p.R * p.S * s           # and one window's product and sum

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

    # --- pooling: each output scans its window ------------------------------------------------
    def _pool_scan(self, p, x, n, c, i, j):
        """(max, its (h, w), sum, divisor) of one window, by the definition: a row-major scan of
        the positions inside the input; the divisor counts padding when count_include_pad."""
        best, arg, total, inside = -np.inf, None, 0.0, 0
        (pt, pb), (pl, pr) = p.padding
        h0, w0 = i * p.stride[0] - pt, j * p.stride[1] - pl
        for a in range(p.kernel[0]):
            h = h0 + a * p.dilation[0]
            for b in range(p.kernel[1]):
                w = w0 + b * p.dilation[1]
                if 0 <= h < p.H and 0 <= w < p.W:
                    v = x[n, c, h, w]
                    inside += 1
                    total += v
                    if arg is None or v > best or np.isnan(v):
                        best, arg = v, (h, w)
        if p.count_include_pad:
            rows = min(h0 + p.kernel[0], p.H + pb) - h0
            cols = min(w0 + p.kernel[1], p.W + pr) - w0
            divisor = rows * cols
        else:
            divisor = inside
        return best, arg, total, divisor

    def _pool_loops(self, p, x, visit):
        for n in range(p.N):
            for c in range(p.C):
                for i in range(p.P):
                    for j in range(p.Q):
                        visit(n, c, i, j, *self._pool_scan(p, x, n, c, i, j))

    def max_pool2d_fwd(self, p, x):
        y = np.empty(p.y_shape, dtype=x.dtype)

        def visit(n, c, i, j, best, arg, total, divisor):
            y[n, c, i, j] = best
        self._pool_loops(p, x, visit)
        return y

    def max_pool2d_bwd(self, p, dy, x):
        dx = np.zeros(p.x_shape, dtype=dy.dtype)

        def visit(n, c, i, j, best, arg, total, divisor):
            dx[n, c, arg[0], arg[1]] += dy[n, c, i, j]
        self._pool_loops(p, x, visit)
        return dx

    def avg_pool2d_fwd(self, p, x):
        y = np.empty(p.y_shape, dtype=x.dtype)

        def visit(n, c, i, j, best, arg, total, divisor):
            y[n, c, i, j] = total / divisor
        self._pool_loops(p, x, visit)
        return y

    def avg_pool2d_bwd(self, p, dy, x):
        dx = np.zeros(p.x_shape, dtype=dy.dtype)
        h_idx = np.arange(p.H)
        w_idx = np.arange(p.W)

        def visit(n, c, i, j, best, arg, total, divisor):
            h0, w0 = i * p.stride[0] - p.pad_begin[0], j * p.stride[1] - p.pad_begin[1]
            rows = h_idx[(h_idx >= h0) & (h_idx < h0 + p.kernel[0])]
            cols = w_idx[(w_idx >= w0) & (w_idx < w0 + p.kernel[1])]
            dx[n, c, rows[:, None], cols[None, :]] += dy[n, c, i, j] / divisor
        self._pool_loops(p, x, visit)
        return dx
