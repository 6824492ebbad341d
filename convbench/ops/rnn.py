"""Recurrent cells with PyTorch's parameter layout and gate order.

Shapes: x (T, N, I); h0, c0 (N, H); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,), with G = 1
(tanh RNN), 4 (LSTM, gates i, f, g, o) or 3 (GRU, gates r, z, n). Per step, with
gi = x_t w_ih^T + b_ih and gh = h w_hh^T + b_hh:

    tanh RNN  h' = tanh(gi + gh)
    LSTM      i, f, g, o = sigma, sigma, tanh, sigma of (gi + gh);  c' = f*c + i*g;  h' = o*tanh(c')
    GRU       r = sigma(gi_r + gh_r);  z = sigma(gi_z + gh_z);  n = tanh(gi_n + r*gh_n);
              h' = (1 - z)*n + z*h

The gate arithmetic below is written once for any dtype; the reference runs it in float64 with
one GEMM per step, the NumPy backend in the input dtype around hoisted GEMMs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.ops.conv import _is_int

GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}


@dataclass(frozen=True)
class RNNProblem:
    """A recurrent layer over a sequence: cell type and sizes."""

    cell: str
    T: int
    N: int
    I: int  # noqa: E741 - PyTorch's name for the input size
    H: int
    bias: bool = True

    def __post_init__(self):
        if self.cell not in GATES:
            raise ValueError(f"cell={self.cell!r} must be one of {', '.join(GATES)}")
        for name in ("T", "N", "I", "H"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def has_cell_state(self) -> bool:
        return self.cell == "lstm"

    @property
    def x_shape(self):
        return (self.T, self.N, self.I)

    @property
    def h_shape(self):
        return (self.N, self.H)

    @property
    def w_ih_shape(self):
        return (self.gates * self.H, self.I)

    @property
    def w_hh_shape(self):
        return (self.gates * self.H, self.H)

    @property
    def y_shape(self):
        return (self.T, self.N, self.H)

    def flops(self, direction: str = "fwd") -> float:
        """The GEMMs: 2*T*N*G*H*(I+H) forward; backward twice that (inputs and weights)."""
        f = 2.0 * self.T * self.N * self.gates * self.H * (self.I + self.H)
        return f if direction == "fwd" else 2 * f

    def min_bytes(self, direction: str = "fwd", itemsize: int = 4) -> float:
        w = self.gates * self.H * (self.I + self.H + 2)
        x = self.T * self.N * self.I
        y = self.T * self.N * self.H
        states = (2 if self.has_cell_state else 1) * 2 * self.N * self.H
        total = w + x + y + states
        return float(itemsize * (total if direction == "fwd" else 2 * total))

    def reduction_length(self, direction: str = "fwd") -> int:
        """A bound on the rounding steps behind an output: each step's GEMMs feed the next."""
        per_step = self.I + self.H + 4
        if direction == "fwd":
            return self.T * per_step
        return self.T * (per_step + self.N + self.gates * self.H)

    def descriptor(self) -> str:
        from convbench.harness.descriptor import format_rnn
        return format_rnn(self)

    def __str__(self) -> str:
        return self.descriptor()


def sigmoid(a):
    # for large |a| both branches are exact to rounding; split avoids overflow in exp
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1 / (1 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1 + e)
    return out


def step_forward(cell: str, gi, gh, h, c):
    """One step's gate arithmetic. gi, gh (N, G*H) -> (h', c' or None, cache for the backward)."""
    H = h.shape[1]
    if cell == "rnn_tanh":
        hn = np.tanh(gi + gh)
        return hn, None, (hn,)
    if cell == "lstm":
        a = gi + gh
        i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 3 * H:])
        g = np.tanh(a[:, 2 * H:3 * H])
        cn = f * c + i * g
        tc = np.tanh(cn)
        return o * tc, cn, (i, f, g, o, c, tc)
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    ghn = gh[:, 2 * H:]
    n = np.tanh(gi[:, 2 * H:] + r * ghn)
    return (1 - z) * n + z * h, None, (r, z, n, ghn, h)


def step_backward(cell: str, dh, dc, cache):
    """Gradients through one step's gate arithmetic.

    dh, dc: gradients w.r.t. h' and c' (dc None unless LSTM) ->
    (d gi, d gh, direct part of d h_prev (None if only through w_hh), d c_prev or None).
    """
    if cell == "rnn_tanh":
        (hn,) = cache
        da = dh * (1 - hn * hn)
        return da, da, None, None
    if cell == "lstm":
        i, f, g, o, c, tc = cache
        dcn = dc + dh * o * (1 - tc * tc)
        da = np.concatenate([dcn * g * i * (1 - i), dcn * c * f * (1 - f),
                             dcn * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        return da, da, None, dcn * f
    r, z, n, ghn, h = cache
    dan = dh * (1 - z) * (1 - n * n)
    dar = dan * ghn * r * (1 - r)
    daz = dh * (h - n) * z * (1 - z)
    dgi = np.concatenate([dar, daz, dan], axis=1)
    dgh = np.concatenate([dar, daz, dan * r], axis=1)
    return dgi, dgh, dh * z, None
