"""Convolution as one matrix: conv2d is a linear map of the input, so it is a (sparse) matrix.

For an input of shape x_shape = (N, C, H, W) and weights w (K, C/groups, R, S) the matrix M has
N*K*P*Q rows (the output, raveled in C order) and N*C*H*W columns (the input, raveled):

    M @ x.ravel() == conv2d(x, w, ...).ravel()        (no bias: it is not linear in x)
    M.T @ dy.ravel() == conv2d_bwd_data(dy, w).ravel()  (the transpose is the input gradient)

Row (n, k, i, j) holds w[k, c, r, s] in the column of input pixel
(n, g*Cg + c, i*stride_h + r*dilation_h - pad_top, j*stride_w + s*dilation_w - pad_left) for every
tap that lands inside the image (taps on padding read zeros and have no column). The batch is
block diagonal: N copies of one image's matrix. Every tap is a stored entry, zero weights
included, so the sparsity pattern is the layer's connectivity and M.nnz is the number of
multiply-adds that read a real pixel (at most the problem's MAC count).
"""
from __future__ import annotations

import numpy as np

from convbench.ops.conv import conv2d_problem


def conv2d_matrix(x_shape, w, stride=1, padding=0, dilation=1, groups=1):
    """The CSR matrix M (N*K*P*Q, N*C*H*W) with M @ x.ravel() == conv2d(x, w).ravel().

    x_shape: (N, C, H, W); w: (K, C/groups, R, S) float32 or float64 (M has w's dtype);
    stride, padding, dilation, groups as for conv2d.
    """
    import scipy.sparse as sp  # slower to import than all of convbench; only this needs it

    if not isinstance(w, np.ndarray):
        raise TypeError(f"w must be a numpy.ndarray, got {type(w).__name__}")
    if w.dtype not in (np.float32, np.float64):
        raise TypeError(f"w.dtype={w.dtype} must be float32 or float64")
    p = conv2d_problem(tuple(x_shape), w.shape, stride=stride, padding=padding,
                       dilation=dilation, groups=groups)
    (sh, sw), (dh, dw) = p.stride, p.dilation
    (pt, _), (pl, _) = p.padding
    # one image: tap (k, c, r, s) at output (k, i, j) reads input pixel (g*Cg + c, ih, iw)
    k = np.arange(p.K)[:, None, None, None, None, None]
    c = np.arange(p.Cg)[None, :, None, None, None, None]
    r = np.arange(p.R)[None, None, :, None, None, None]
    s = np.arange(p.S)[None, None, None, :, None, None]
    i = np.arange(p.P)[None, None, None, None, :, None]
    j = np.arange(p.Q)[None, None, None, None, None, :]
    shape = (p.K, p.Cg, p.R, p.S, p.P, p.Q)
    ih = np.broadcast_to(i * sh + r * dh - pt, shape)
    iw = np.broadcast_to(j * sw + s * dw - pl, shape)
    inside = (ih >= 0) & (ih < p.H) & (iw >= 0) & (iw < p.W)
    cin = (k // p.Kg) * p.Cg + c
    rows = np.broadcast_to((k * p.P + i) * p.Q + j, shape)[inside]
    cols = (np.broadcast_to(cin, shape)[inside] * p.H + ih[inside]) * p.W + iw[inside]
    vals = np.broadcast_to(w[:, :, :, :, None, None], shape)[inside]
    m1 = sp.csr_matrix((vals, (rows, cols)), shape=(p.K * p.P * p.Q, p.C * p.H * p.W),
                       dtype=w.dtype)
    if p.N == 1:
        return m1
    return sp.block_diag([m1] * p.N, format="csr", dtype=w.dtype)
