"""Float64 references: one plain statement of what every op computes.

Every backend is tested against these. They favour clarity over speed, but are vectorised enough
(NumPy over batch and channels) to serve as the reference on the small problems the tests use.
Inputs are converted to float64; outputs are float64.
"""
from __future__ import annotations

import numpy as np

from convbench.ops.conv import Conv2dProblem, crop_padding, pad_input, window_view


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


# --- 2D convolution -------------------------------------------------------------------------------
def conv2d_fwd(p: Conv2dProblem, x, w, b=None):
    """y[n, k, i, j] = b[k] + sum_{c, r, s} w[k, c, r, s] * xpad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw]

    x (N, C, H, W), w (K, C/groups, R, S), b (K,) or None -> y (N, K, P, Q); g = k // (K/groups).
    """
    x, w, b = _f64(x, w, b)
    win = window_view(pad_input(x, p), p)               # (N, C, R, S, P, Q)
    y = np.empty(p.y_shape)
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        y[:, ko] = np.einsum("ncrsij,kcrs->nkij", win[:, ci], w[ko], optimize=True)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_bwd_data(p: Conv2dProblem, dy, w):
    """dx = d(sum dy * y)/dx: each dy[n, k, i, j] * w[k, c, r, s] lands on the input pixel the
    forward pass read, xpad[n, c, i*sh + r*dh, j*sw + s*dw]; the padding is cropped off.

    dy (N, K, P, Q), w (K, C/groups, R, S) -> dx (N, C, H, W).
    """
    dy, w = _f64(dy, w)
    dxp = np.zeros((p.N, p.C, p.Hp, p.Wp))
    (dh, dw_), (sh, sw) = p.dilation, p.stride
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        for r in range(p.R):
            for s in range(p.S):
                contrib = np.einsum("nkij,kc->ncij", dy[:, ko], w[ko, :, r, s])
                dxp[:, ci, r * dh:r * dh + (p.P - 1) * sh + 1:sh,
                    s * dw_:s * dw_ + (p.Q - 1) * sw + 1:sw] += contrib
    return crop_padding(dxp, p).copy()


def conv2d_bwd_weights(p: Conv2dProblem, dy, x):
    """dw[k, c, r, s] = sum_{n, i, j} dy[n, k, i, j] * xpad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw]

    dy (N, K, P, Q), x (N, C, H, W) -> dw (K, C/groups, R, S).
    """
    dy, x = _f64(dy, x)
    win = window_view(pad_input(x, p), p)
    dw = np.empty(p.w_shape)
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        dw[ko] = np.einsum("nkij,ncrsij->kcrs", dy[:, ko], win[:, ci], optimize=True)
    return dw


def conv2d_bwd_bias(dy):
    """db[k] = sum_{n, i, j} dy[n, k, i, j]."""
    return np.asarray(dy, dtype=np.float64).sum(axis=(0, 2, 3))
