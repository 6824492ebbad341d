"""Scratch estimates for the peers whose allocators convbench cannot see (torch, ONNX Runtime,
OpenVINO, JAX): they follow what these libraries document doing, not arrays convbench can count.

Convolutions: reordered (blocked-layout) copies of the operands and of the result, an explicitly
padded input where the library cannot pad, or a per-image column buffer per thread (the im2col
these libraries fall back to), whichever is larger. Pooling gradients: the forward's output and
arg-max indices that autograd keeps. Recurrent cells: the layer's copy of the weights and what
a step-by-step backward keeps (as backends.rnn_numpy).
"""
from __future__ import annotations

from convbench.backends import rnn_numpy
from convbench.threads import get_threads


def _symmetric(p) -> bool:
    (pt, pb), (pl, pr) = p.padding
    return pt == pb and pl == pr


def runtime_bytes(op, p, itemsize: int) -> int:
    """The estimate above for one call of `op` on `p` in a dtype of `itemsize` bytes."""
    s = itemsize
    if op.family == "conv_transpose2d":
        x, y, w = (p.N * p.C * p.H * p.W * s, p.N * p.K * p.P * p.Q * s,
                   p.C * p.Kg * p.R * p.S * s)
        return x + w + 2 * y                    # reorders, and a crop of padding not expressed
    if op.family == "conv2d":
        x, y, w = (p.N * p.C * p.H * p.W * s, p.N * p.K * p.P * p.Q * s,
                   p.K * p.Cg * p.R * p.S * s)
        padded = 0 if _symmetric(p) else p.N * p.C * p.Hp * p.Wp * s
        columns = get_threads() * p.C * p.R * p.S * p.P * p.Q * s
        return max(x + y + w + padded, columns)
    if op.family.endswith("pool2d"):
        if op.direction == "fwd":
            return 0
        return p.N * p.C * p.P * p.Q * (s + (8 if op.family == "max_pool2d" else 0))
    weights = p.gates * p.H * (p.I + p.H + 2) * s
    return weights + rnn_numpy.workspace_bytes(p, op.direction, s)
