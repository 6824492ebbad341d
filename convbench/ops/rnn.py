"""Recurrent cells with PyTorch's parameter layout and gate order.

Shapes: x (T, N, I); h0, c0 (N, H); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,), with G = 1
(tanh RNN), 4 (LSTM, gates i, f, g, o) or 3 (GRU, gates r, z, n). Per step, with
gi = x_t w_ih^T + b_ih and gh = h w_hh^T + b_hh:

    tanh RNN  h' = tanh(gi + gh)
    LSTM      i, f, g, o = sigma, sigma, tanh, sigma of (gi + gh);  c' = f*c + i*g;  h' = o*tanh(c')
    GRU       r = sigma(gi_r + gh_r);  z = sigma(gi_z + gh_z);  n = tanh(gi_n + r*gh_n);
              h' = (1 - z)*n + z*h

That GRU is PyTorch's and cuDNN's (linear_before_reset=True: the reset gate multiplies the
hidden product). The original GRU of Cho et al. (2014), ONNX's default and Keras's
reset_after=False, applies it before the product (linear_before_reset=False):

              n = tanh(gi_n + (r*h) w_hn^T + b_hn)

with w_hn, b_hn the n rows of w_hh, b_hh. reverse=True runs the sequence from its last step to
its first (the backward half of a bidirectional layer): the state after step t, y[t], has seen
x[t:], and hT is the state after x[0].

The float64 reference (ops.reference.rnn_fwd, rnn_bwd) states these equations on its own; the
backends have their own implementations (backends.rnn_numpy, the fused Numba kernels).
"""
from __future__ import annotations

from dataclasses import dataclass

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
    reverse: bool = False
    linear_before_reset: bool = True

    def __post_init__(self):
        if self.cell not in GATES:
            raise ValueError(f"cell={self.cell!r} must be one of {', '.join(GATES)}")
        for name in ("T", "N", "I", "H"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if not self.linear_before_reset and self.cell != "gru":
            raise ValueError(f"linear_before_reset=False is a GRU variant, not for {self.cell}")

    @property
    def original_gru(self) -> bool:
        """The GRU of Cho et al. (2014): the reset gate applied before the hidden product."""
        return self.cell == "gru" and not self.linear_before_reset

    @property
    def steps(self) -> range:
        """The time steps in the order the layer runs them."""
        return range(self.T - 1, -1, -1) if self.reverse else range(self.T)

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
        """This problem in benchdnn's syntax (ops.descriptor parses it back)."""
        return (f"{self.cell}:t{self.T}mb{self.N}slc{self.I}sic{self.H}"
                + ("" if self.bias else "b0") + ("rev1" if self.reverse else "")
                + ("" if self.linear_before_reset else "lbr0"))

    def __str__(self) -> str:
        return self.descriptor()
