"""The op specs: for each (family, direction), its reference, inputs, counts and error scale.

Verification and the benchmark harness work from these specs alone, so a new op joins both by
adding one entry here and a reference in `reference.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from convbench.errors import UnknownNameError
from convbench.ops import reference as ref
from convbench.ops.conv import Conv2dProblem, conv1d_problem, conv2d_problem
from convbench.ops.conv_transpose import (
    ConvTranspose2dProblem,
    conv_transpose1d_problem,
    conv_transpose2d_problem,
)
from convbench.ops.pool import Pool2dProblem, pool1d_problem, pool2d_problem
from convbench.ops.rnn import RNNProblem

__all__ = ["OPS", "OpSpec", "array_shape", "get_op", "ops_of", "Conv2dProblem",
           "ConvTranspose2dProblem", "Pool2dProblem", "RNNProblem", "conv1d_problem",
           "conv2d_problem", "conv_transpose1d_problem", "conv_transpose2d_problem",
           "pool1d_problem", "pool2d_problem"]


@dataclass(frozen=True)
class OpSpec:
    """What verification and timing need to know about one op in one direction.

    reference(problem, *inputs) -> output or tuple of outputs, float64.
    make_inputs(problem, rng, dtype) -> tuple of inputs, in the order the backends take them.
    scale(problem, inputs, outputs) -> one positive number per output: the size of the terms
        summed to make it, so that error / scale is a relative error that does not blow up where
        the terms cancel.
    reduction(problem) -> the length of the longest sum behind an output (tolerance bound).
    chunked_reference: the same function as `reference`, computed in pieces of bounded memory;
        `reference_for` picks it for problems too large for the plain one.
    """

    family: str
    direction: str
    reference: Callable
    make_inputs: Callable
    scale: Callable
    reduction: Callable
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    chunked_reference: Callable | None = None

    def reference_for(self, problem) -> Callable:
        """The reference to check `problem` against: the plain one, or the chunked one where the
        plain one would copy more than PLAIN_REFERENCE_BYTES of input windows at once."""
        if self.chunked_reference is not None and plain_reference_bytes(problem) > \
                PLAIN_REFERENCE_BYTES:
            return self.chunked_reference
        return self.reference

    @property
    def name(self) -> str:
        return f"{self.family}:{self.direction}"

    @property
    def method(self) -> str:
        """The backend method that implements it: conv2d_fwd, conv2d_bwd_data, ..."""
        return f"{self.family}_{self.direction.replace('-', '_')}"

    def flops(self, problem) -> float:
        return problem.flops(self.direction)

    def min_bytes(self, problem, itemsize: int = 4) -> float:
        return problem.min_bytes(self.direction, itemsize)

    def input_bytes(self, problem, itemsize: int) -> int:
        """Bytes of the inputs that make_inputs gives (absent optional ones count nothing)."""
        return sum(_nbytes(array_shape(problem, n), itemsize) for n in self.input_names)

    def output_bytes(self, problem, itemsize: int) -> int:
        """Bytes of the outputs a backend returns."""
        return sum(_nbytes(array_shape(problem, n), itemsize) for n in self.output_names)


def _nbytes(shape, itemsize: int) -> int:
    return 0 if shape is None else int(np.prod(shape, dtype=np.int64)) * itemsize


#: Input and output names by the problem's shape they take; a gradient (a leading d) takes its
#: variable's. Optional arrays are None when the problem has none (no bias, no cell state).
_SHAPES = {"x": "x_shape", "y": "y_shape", "w": "w_shape", "w_ih": "w_ih_shape",
           "w_hh": "w_hh_shape", "h0": "h_shape", "hT": "h_shape"}


def array_shape(problem, name: str):
    """The shape of the input or output called `name` of an op on `problem`, or None where the
    problem has no such array (a bias of a layer without one, LSTM's cell state elsewhere)."""
    base = name[1:] if name not in _SHAPES and name[:1] == "d" else name
    if base in ("c0", "cT"):
        return problem.h_shape if problem.has_cell_state else None
    if base == "b":
        return (problem.K,) if problem.bias else None
    if base in ("b_ih", "b_hh"):
        return (problem.gates * problem.H,) if problem.bias else None
    if base in _SHAPES:
        return getattr(problem, _SHAPES[base])
    raise UnknownNameError(f"no shape known for the array {name!r} of {problem!r}")


#: See OpSpec.reference_for.
PLAIN_REFERENCE_BYTES = 64 << 20


def plain_reference_bytes(problem) -> int:
    """Bytes of the window copy the plain conv references make per group (einsum over the
    (N, C/groups, R, S, P, Q) window view); 0 for ops without one."""
    if not isinstance(problem, Conv2dProblem):
        return 0
    p = problem
    return 8 * p.N * p.Cg * p.R * p.S * p.P * p.Q


def _uniform(rng, shape, dtype, scale=1.0):
    return (rng.uniform(-scale, scale, size=shape)).astype(dtype)


def _conv_inputs(direction):
    def make(p: Conv2dProblem, rng, dtype):
        x = _uniform(rng, p.x_shape, dtype)
        w = _uniform(rng, p.w_shape, dtype, 1.0 / np.sqrt(p.Cg * p.R * p.S))
        dy = _uniform(rng, p.y_shape, dtype)
        if direction == "fwd":
            return (x, w, _uniform(rng, (p.K,), dtype) if p.bias else None)
        if direction == "bwd-data":
            return (dy, w)
        return (dy, x)
    return make


def finite_max(a) -> float:
    """The largest finite value of `a` (0 if none): an error scale measures the finite terms; the
    non-finite outputs are compared position by position instead."""
    a = np.asarray(a, dtype=np.float64)
    return float(np.max(a, where=np.isfinite(a), initial=0.0))


def _abs(*arrays):
    return [None if a is None else np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]


def _conv_scale(direction):
    # The convolution is linear in each input, so the same op on absolute values bounds every term.
    def scale(p, inputs, outputs):
        fn = OPS[f"conv2d:{direction}"].reference_for(p)
        return (finite_max(fn(p, *_abs(*inputs))),)
    return scale


OPS: dict[str, OpSpec] = {}


def _register(spec: OpSpec) -> None:
    OPS[spec.name] = spec


_register(OpSpec("conv2d", "fwd", ref.conv2d_fwd, _conv_inputs("fwd"), _conv_scale("fwd"),
                 lambda p: p.reduction_length("fwd"), ("x", "w", "b"), ("y",),
                 ref.conv2d_fwd_chunked))
_register(OpSpec("conv2d", "bwd-data", ref.conv2d_bwd_data, _conv_inputs("bwd-data"),
                 _conv_scale("bwd-data"), lambda p: p.reduction_length("bwd-data"),
                 ("dy", "w"), ("dx",), ref.conv2d_bwd_data_chunked))
_register(OpSpec("conv2d", "bwd-weights", ref.conv2d_bwd_weights, _conv_inputs("bwd-weights"),
                 _conv_scale("bwd-weights"), lambda p: p.reduction_length("bwd-weights"),
                 ("dy", "x"), ("dw",), ref.conv2d_bwd_weights_chunked))


def _conv_transpose_inputs(direction):
    def make(p: ConvTranspose2dProblem, rng, dtype):
        x = _uniform(rng, p.x_shape, dtype)
        w = _uniform(rng, p.w_shape, dtype, 1.0 / np.sqrt(p.Cg * p.R * p.S))
        if direction == "fwd":
            return (x, w, _uniform(rng, (p.K,), dtype) if p.bias else None)
        dy = _uniform(rng, p.y_shape, dtype)
        return (dy, w) if direction == "bwd-data" else (dy, x)
    return make


def _conv_transpose_scale(direction):
    # linear in each input, as the convolution: the same op on absolute values bounds every term
    def scale(p, inputs, outputs):
        fn = OPS[f"conv_transpose2d:{direction}"].reference
        return (finite_max(fn(p, *_abs(*inputs))),)
    return scale


for _direction, _names in (("fwd", (("x", "w", "b"), ("y",))),
                           ("bwd-data", (("dy", "w"), ("dx",))),
                           ("bwd-weights", (("dy", "x"), ("dw",)))):
    _register(OpSpec("conv_transpose2d", _direction,
                     getattr(ref, f"conv_transpose2d_{_direction.replace('-', '_')}"),
                     _conv_transpose_inputs(_direction), _conv_transpose_scale(_direction),
                     (lambda d: lambda p: p.reduction_length(d))(_direction), *_names))


def _pool_inputs(direction):
    def make(p, rng, dtype):
        x = _uniform(rng, p.x_shape, dtype)
        if direction == "fwd":
            return (x,)
        return (_uniform(rng, p.y_shape, dtype), x)
    return make


def _max_abs_scale(index):
    def scale(p, inputs, outputs):
        return (finite_max(np.abs(np.asarray(inputs[index], dtype=np.float64)))
                * (1 if index == 0 else p.overlap()),)
    return scale


def _max_pool_bwd_scale(p, inputs, outputs):
    # dx sums the dy of every window whose maximum an input is (up to p.overlap() of them, as
    # many as the padding lets a corner take): the same sums of |dy| bound the terms
    dy, x = inputs
    return (finite_max(ref.max_pool2d_bwd(p, _abs(dy)[0], x)),)


for _kind in ("max", "avg"):
    _fam = f"{_kind}_pool2d"
    _register(OpSpec(_fam, "fwd", getattr(ref, f"{_fam}_fwd"), _pool_inputs("fwd"),
                     _max_abs_scale(0),
                     (lambda p: 1) if _kind == "max" else (lambda p: p.window + 1), ("x",), ("y",)))
    _register(OpSpec(_fam, "bwd", getattr(ref, f"{_fam}_bwd"), _pool_inputs("bwd"),
                     _max_pool_bwd_scale if _kind == "max" else _max_abs_scale(0),
                     lambda p: p.overlap() + 1, ("dy", "x"), ("dx",)))


def _rnn_inputs(direction):
    def make(p, rng, dtype):
        k = 1.0 / np.sqrt(p.H)        # PyTorch's initialisation range
        state = lambda: _uniform(rng, p.h_shape, dtype)  # noqa: E731
        fwd = (_uniform(rng, p.x_shape, dtype), state(),
               state() if p.has_cell_state else None,
               _uniform(rng, p.w_ih_shape, dtype, k), _uniform(rng, p.w_hh_shape, dtype, k),
               _uniform(rng, (p.gates * p.H,), dtype, k) if p.bias else None,
               _uniform(rng, (p.gates * p.H,), dtype, k) if p.bias else None)
        if direction == "fwd":
            return fwd
        return (_uniform(rng, p.y_shape, dtype), state(),
                state() if p.has_cell_state else None) + fwd
    return make


def _rnn_scale(p, inputs, outputs):
    # the outputs are bounded by their own size: tanh and sigmoid contract
    return tuple(1.0 if o is None else max(finite_max(np.abs(o)), 1e-30)
                 for o in outputs)


_RNN_FWD_IN = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
for _cell in ("rnn_tanh", "lstm", "gru"):
    _register(OpSpec(_cell, "fwd", ref.rnn_fwd, _rnn_inputs("fwd"), _rnn_scale,
                     lambda p: p.reduction_length("fwd"), _RNN_FWD_IN, ("y", "hT", "cT")))
    _register(OpSpec(_cell, "bwd", ref.rnn_bwd, _rnn_inputs("bwd"), _rnn_scale,
                     lambda p: p.reduction_length("bwd"), ("dy", "dhT", "dcT") + _RNN_FWD_IN,
                     ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")))


def ops_of(family: str) -> list[OpSpec]:
    """The op specs of one family (conv2d, max_pool2d, lstm, ...), in registration order."""
    return [spec for spec in OPS.values() if spec.family == family]


def get_op(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError:
        raise UnknownNameError(f"unknown op {name!r}; valid ops: "
                               f"{', '.join(sorted(OPS))}") from None
