"""im2col: unfold every receptive field into a column, then one GEMM per group through BLAS.

The unfold and its adjoint (col2im, for the input gradient) are compiled kernels (Numba) run on
the calling thread, and the GEMMs NumPy's BLAS: one thread pool, the BLAS's (a Numba parallel
region before or after a BLAS call would leave one pool's idle workers busy-waiting beside the
other's). im2col-numba is the same with convbench's GEMM and parallel unfolds.

A 1x1 convolution without padding needs no unfolding: each image is already a (C, H*W) matrix,
so it runs as one GEMM per image (strided inputs are subsampled first).

The unfolded buffer holds (C*R*S) x (N*P*Q) values: R*S times the input for a stride-1 layer. A
guard refuses problems whose buffer would exceed `max_column_bytes` (environment variable
CONVBENCH_IM2COL_MAX_BYTES, default 4 GiB) instead of letting the machine swap.
"""
from __future__ import annotations

import os

import numpy as np

from convbench.backends.base import Backend
from convbench.backends.scratch import Lease
from convbench.lazy import LazyModule
from convbench.ops.conv import pad_input, window_view

KERNELS = LazyModule("convbench.backends._numba_im2col_kernels")
DEFAULT_MAX_COLUMN_BYTES = 4 << 30
#: a 1x1 weight gradient with fewer output positions per image runs as one batch-wide GEMM
FOLD_BELOW_POSITIONS = 160


def column_bytes(p, itemsize: int) -> int:
    """Bytes of the unfolded (C*R*S, N*P*Q) column buffer."""
    return p.C * p.R * p.S * p.N * p.P * p.Q * itemsize


def _geometry(p):
    (sh, sw), ((pt, _), (pl, _)), (dh, dw) = p.stride, p.padding, p.dilation
    return p.R, p.S, sh, sw, pt, pl, dh, dw, p.P, p.Q


def unfold(ws: Lease, x, p, parallel: bool = False):
    """x (N, C, H, W) -> columns (G, Cg*R*S, N*P*Q), in a workspace array. A strided
    convolution unfolds with the compiled kernel (in Numba's thread pool with parallel, else on
    the calling thread); at stride 1 NumPy's copy of the window view reads contiguous rows and is
    at least as fast."""
    cols = ws.take((p.C * p.R * p.S, p.N * p.P * p.Q), x.dtype, zero=False)
    if p.stride == (1, 1):
        win = window_view(pad_input(x, p), p)                       # (N, C, R, S, P, Q)
        np.copyto(cols.reshape(p.C, p.R, p.S, p.N, p.P, p.Q), win.transpose(1, 2, 3, 0, 4, 5))
    else:
        (KERNELS.unfold if parallel else KERNELS.unfold_serial)(x, cols, *_geometry(p))
    return cols.reshape(p.groups, p.Cg * p.R * p.S, p.N * p.P * p.Q)


def fold(cols, p, dtype, parallel: bool = False):
    """The adjoint of unfold: columns (G, Cg*R*S, N*P*Q) summed back into x's (N, C, H, W)."""
    dx = np.zeros(p.x_shape, dtype=dtype)
    (KERNELS.fold if parallel else KERNELS.fold_serial)(
        np.ascontiguousarray(cols.reshape(p.C * p.R * p.S, -1)), dx, *_geometry(p))
    return dx


def _pointwise(p) -> bool:
    """A 1x1 convolution without padding or groups: a GEMM per image, nothing to unfold."""
    return (p.R, p.S) == (1, 1) and p.groups == 1 and p.padding == ((0, 0), (0, 0))


def _strided(x, p):
    """The input pixels a strided 1x1 convolution reads, contiguous."""
    if p.stride == (1, 1):
        return x
    return np.ascontiguousarray(x[:, :, :(p.P - 1) * p.stride[0] + 1:p.stride[0],
                                  :(p.Q - 1) * p.stride[1] + 1:p.stride[1]])


def _grouped_dy(dy, p):
    """dy (N, K, P, Q) -> (G, Kg, N*P*Q)."""
    return np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(p.groups, p.Kg, -1)


class Im2colBackend(Backend):
    name = "im2col"
    auto_candidate = True
    blas_threads = True
    description = "unfold to columns + one GEMM per group (BLAS)"

    def __init__(self, max_column_bytes: int | None = None):
        super().__init__()
        env = os.environ.get("CONVBENCH_IM2COL_MAX_BYTES")
        self.max_column_bytes = int(max_column_bytes if max_column_bytes is not None
                                    else env if env else DEFAULT_MAX_COLUMN_BYTES)

    def unsupported(self, op, p, dtype):
        if _pointwise(p):
            return None
        need = column_bytes(p, dtype.itemsize)
        if need > self.max_column_bytes:
            return (f"a column buffer of {need:,} bytes ({need / 2**30:.2f} GiB) over the limit of "
                    f"{self.max_column_bytes:,} bytes (raise CONVBENCH_IM2COL_MAX_BYTES)")
        return None

    def workspace_bytes(self, op, p, dtype):
        """The column buffer, the copies around the GEMMs (a strided or transposed operand, the
        GEMM's own (G, Kg, N*P*Q) result before the transposition that makes the output), and
        at stride 1 the padded input the window view reads."""
        s = dtype.itemsize
        y = p.N * p.K * p.P * p.Q * s
        strided = p.N * p.C * p.P * p.Q * s if p.stride != (1, 1) else 0
        if _pointwise(p):
            if op.direction == "fwd":
                return strided
            if op.direction == "bwd-data":
                return strided               # the GEMM's (N, C, P, Q) before the strided scatter
            if p.P * p.Q < FOLD_BELOW_POSITIONS:
                return strided + y + p.N * p.C * p.P * p.Q * s     # both transposed copies
            return strided + p.K * p.C * s                         # one image's product
        cols = column_bytes(p, s)
        padded = (p.N * p.C * p.Hp * p.Wp * s
                  if p.stride == (1, 1) and p.padding != ((0, 0), (0, 0)) else 0)
        if op.direction == "fwd":
            return cols + padded + y * (2 if p.bias else 1)
        if op.direction == "bwd-data":
            return y + cols                  # dy grouped, the columns of the GEMM to fold
        return y + cols + padded             # dy grouped, the unfolded input

    def conv2d_fwd(self, p, x, w, b):
        if _pointwise(p):
            # 1x1, no padding: each image is already a (C, H*W) matrix; no unfolding at all
            y = np.matmul(w.reshape(p.K, p.C), _strided(x, p).reshape(p.N, p.C, -1))
            y = y.reshape(p.y_shape)
            if b is not None:
                y += b[:, None, None]
            return y
        with self.workspace.lease() as ws:
            y = np.matmul(w.reshape(p.groups, p.Kg, -1), unfold(ws, x, p))   # (G, Kg, N*P*Q)
        y = y.reshape(p.K, p.N, p.P, p.Q).transpose(1, 0, 2, 3)
        if b is not None:
            y = y + b[:, None, None]
        return np.ascontiguousarray(y)

    def conv2d_bwd_data(self, p, dy, w):
        if _pointwise(p):
            g = np.matmul(w.reshape(p.K, p.C).T, dy.reshape(p.N, p.K, -1))
            g = g.reshape(p.N, p.C, p.P, p.Q)
            if p.stride == (1, 1):
                return g
            dx = np.zeros(p.x_shape, dtype=dy.dtype)
            dx[:, :, ::p.stride[0], ::p.stride[1]] = g
            return dx
        wt = w.reshape(p.groups, p.Kg, -1).transpose(0, 2, 1)        # (G, Cg*R*S, Kg)
        return fold(np.matmul(wt, _grouped_dy(dy, p)), p, dy.dtype)

    def conv2d_bwd_weights(self, p, dy, x):
        if _pointwise(p):
            xs = _strided(x, p).reshape(p.N, p.C, -1)
            dys = dy.reshape(p.N, p.K, -1)
            if p.P * p.Q < FOLD_BELOW_POSITIONS:
                # few positions per image: one GEMM over the whole batch, after two transposes,
                # beats many GEMMs too small to keep BLAS busy
                a = np.ascontiguousarray(dys.transpose(1, 0, 2)).reshape(p.K, -1)
                b = np.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(p.C, -1)
                return (a @ b.T).reshape(p.w_shape)
            dw = np.zeros((p.K, p.C), dtype=dy.dtype)
            part = np.empty_like(dw)
            for n in range(p.N):                    # accumulate: no (N, K, C) temporary
                np.matmul(dys[n], xs[n].T, out=part)
                dw += part
            return dw.reshape(p.w_shape)
        with self.workspace.lease() as ws:
            dw = np.matmul(_grouped_dy(dy, p), unfold(ws, x, p).transpose(0, 2, 1))  # G, Kg, CgRS
        return dw.reshape(p.w_shape)
