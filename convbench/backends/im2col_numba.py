"""im2col-numba: im2col's unfold and fold, with convbench's own GEMM (convbench.kernels) in place
of the BLAS.

The same algorithm as `im2col`, so that a run shows the two GEMMs side by side on the machine at
hand and `auto` takes whichever is faster per problem. No BLAS runs inside: the unfold, the fold
and the GEMM share Numba's thread pool (a BLAS's worker threads busy-wait after each call and
would slow the Numba kernel that follows).

The GEMMs run per image, straight into the (N, K, P, Q) output with the weights packed once
(kernels.pack): image n's columns are a strided (C*R*S, P*Q) view of the unfolded buffer, and its
output an (K, P*Q) view of y, so the forward needs no transpose. The weight gradient is one GEMM
over the batch (reduction length N*P*Q).
"""
from __future__ import annotations

import numpy as np

from convbench import kernels
from convbench.backends.im2col import (
    FOLD_BELOW_POSITIONS,
    Im2colBackend,
    _grouped_dy,
    _pointwise,
    _strided,
    fold,
    unfold,
)


def _images(cols, p, g):
    """Group g's columns of each image: (N, Cg*R*S, P*Q) strided view of (G, Cg*R*S, N*P*Q)."""
    PQ = p.P * p.Q
    c = cols[g]
    return np.lib.stride_tricks.as_strided(c, (p.N, c.shape[0], PQ),
                                           (PQ * c.itemsize, c.strides[0], c.itemsize))


class Im2colNumbaBackend(Im2colBackend):
    name = "im2col-numba"
    description = "unfold to columns + convbench's own GEMM (Numba, no BLAS)"

    def workspace_bytes(self, op, p, dtype):
        """im2col's, plus the weights packed for convbench's GEMM in the forward and the input
        gradient (kernels.pack: one group's at a time, two while the next replaces it, rows
        padded to whole register tiles, 64-byte aligned). The GEMM's own packing buffers are
        kept per thread across calls (kernels.gemm), outside this count."""
        base = super().workspace_bytes(op, p, dtype)
        if op.direction not in ("fwd", "bwd-data"):
            return base
        rows, cols = (p.Kg, p.Cg * p.R * p.S) if op.direction == "fwd" else (p.Cg * p.R * p.S,
                                                                            p.Kg)
        packed = (rows + 16) * cols * dtype.itemsize + 64
        return base + min(p.groups, 2) * packed

    def conv2d_fwd(self, p, x, w, b):
        y = np.empty(p.y_shape, x.dtype)
        if _pointwise(p):
            wp = kernels.pack(w.reshape(p.K, p.C), "a", other=p.P * p.Q)
            kernels.gemm_batched(wp, _strided(x, p).reshape(p.N, p.C, -1),
                                 y.reshape(p.N, p.K, -1))
        else:
            wg = w.reshape(p.groups, p.Kg, -1)
            yg = y.reshape(p.N, p.groups, p.Kg, p.P * p.Q)
            with self.workspace.lease() as ws:
                cols = unfold(ws, x, p, parallel=True)                   # (G, CgRS, N*P*Q)
                for g in range(p.groups):
                    wp = kernels.pack(wg[g], "a", other=p.P * p.Q)
                    kernels.gemm_batched(wp, _images(cols, p, g), yg[:, g])
        if b is not None:
            y += b[:, None, None]
        return y

    def conv2d_bwd_data(self, p, dy, w):
        if _pointwise(p):
            wp = kernels.pack(w.reshape(p.K, p.C), "a", other=p.P * p.Q, trans=True)
            g = kernels.gemm_batched(wp, dy.reshape(p.N, p.K, -1)).reshape(p.N, p.C, p.P, p.Q)
            if p.stride == (1, 1):
                return g
            dx = np.zeros(p.x_shape, dtype=dy.dtype)
            dx[:, :, ::p.stride[0], ::p.stride[1]] = g
            return dx
        wg = w.reshape(p.groups, p.Kg, -1)
        dyg = dy.reshape(p.N, p.groups, p.Kg, p.P * p.Q)
        cols = np.empty((p.groups, p.Cg * p.R * p.S, p.N * p.P * p.Q), dy.dtype)
        for g in range(p.groups):
            wp = kernels.pack(wg[g], "a", other=p.P * p.Q, trans=True)
            kernels.gemm_batched(wp, dyg[:, g], _images(cols, p, g))
        return fold(cols, p, dy.dtype, parallel=True)

    def conv2d_bwd_weights(self, p, dy, x):
        if _pointwise(p):
            xs = _strided(x, p).reshape(p.N, p.C, -1)
            dys = dy.reshape(p.N, p.K, -1)
            if p.P * p.Q < FOLD_BELOW_POSITIONS:
                # few positions per image: one GEMM over the whole batch, after two transposes
                a = np.ascontiguousarray(dys.transpose(1, 0, 2)).reshape(p.K, -1)
                b = np.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(p.C, -1)
                return kernels.gemm(a, b, trans_b=True).reshape(p.w_shape)
            dw = np.zeros((p.K, p.C), dtype=dy.dtype)
            for n in range(p.N):
                kernels.gemm(dys[n], xs[n], dw, trans_b=True, accumulate=True)
            return dw.reshape(p.w_shape)
        dw = np.empty((p.groups, p.Kg, p.Cg * p.R * p.S), dy.dtype)
        dyg = _grouped_dy(dy, p)                                          # (G, Kg, N*P*Q)
        with self.workspace.lease() as ws:
            cols = unfold(ws, x, p, parallel=True)
            for g in range(p.groups):
                kernels.gemm(dyg[g], cols[g], dw[g], trans_b=True)
        return dw.reshape(p.w_shape)
