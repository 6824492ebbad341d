"""Recurrent layers in NumPy, in the input's dtype: the input projection of the whole sequence is
one GEMM, each step one GEMM for the hidden state plus the gate arithmetic of ops.rnn; in the
backward pass only dh needs a GEMM per step, the input and weight gradients are one GEMM each."""
from __future__ import annotations

import numpy as np

from convbench.ops import rnn as gates


def _bias(b, n, dtype):
    return np.zeros(n, dtype) if b is None else b


def _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, keep, step_forward):
    GH = w_ih.shape[0]
    gi_all = (x.reshape(-1, p.I) @ w_ih.T + _bias(b_ih, GH, x.dtype)).reshape(p.T, p.N, GH)
    b_hh = _bias(b_hh, GH, x.dtype)
    y = np.empty(p.y_shape, dtype=x.dtype)
    h, c, caches = h0, c0, []
    for t in range(p.T):
        h, c, cache = step_forward(p.cell, gi_all[t], h @ w_hh.T + b_hh, h, c)
        y[t] = h
        if keep:
            caches.append(cache)
    return y, h, c, caches


def forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, steps=gates):
    """steps: a module or object with step_forward/step_backward (ops.rnn's, or fused kernels)."""
    y, h, c, _ = _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, False, steps.step_forward)
    return y, h, c


def backward(p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, steps=gates):
    y, _, _, caches = _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, True, steps.step_forward)
    GH = w_ih.shape[0]
    dgi_all = np.empty((p.T, p.N, GH), dtype=x.dtype)
    dgh_all = np.empty((p.T, p.N, GH), dtype=x.dtype)
    dh = np.zeros(p.h_shape, x.dtype) if dhT is None else dhT
    dc = (np.zeros(p.h_shape, x.dtype) if dcT is None else dcT) if p.has_cell_state else None
    for t in reversed(range(p.T)):
        dgi, dgh, dh_direct, dc = steps.step_backward(p.cell, dy[t] + dh, dc, caches[t])
        dgi_all[t], dgh_all[t] = dgi, dgh
        dh = dgh @ w_hh
        if dh_direct is not None:
            dh += dh_direct
    h_prev = np.concatenate([h0[None], y[:-1]]).reshape(-1, p.H)
    dgi2, dgh2 = dgi_all.reshape(-1, GH), dgh_all.reshape(-1, GH)
    dx = (dgi2 @ w_ih).reshape(p.x_shape)
    if b_ih is None:
        db_ih = db_hh = None
    else:
        db_ih, db_hh = dgi2.sum(axis=0), dgh2.sum(axis=0)
    return dx, dh, dc, dgi2.T @ x.reshape(-1, p.I), dgh2.T @ h_prev, db_ih, db_hh
