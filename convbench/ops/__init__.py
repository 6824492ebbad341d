"""The op specs: for each (family, direction), its reference, inputs, counts and error scale.

Verification and the benchmark harness work from these specs alone, so a new op joins both by
adding one entry here and a reference in `reference.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from convbench.ops import reference as ref
from convbench.ops.conv import Conv2dProblem, conv1d_problem, conv2d_problem  # noqa: F401


@dataclass(frozen=True)
class OpSpec:
    """What verification and timing need to know about one op in one direction.

    reference(problem, *inputs) -> output or tuple of outputs, float64.
    make_inputs(problem, rng, dtype) -> tuple of inputs, in the order the backends take them.
    scale(problem, inputs, outputs) -> one positive number per output: the size of the terms
        summed to make it, so that error / scale is a relative error that does not blow up where
        the terms cancel.
    reduction(problem) -> the length of the longest sum behind an output (tolerance bound).
    """

    family: str
    direction: str
    reference: Callable
    make_inputs: Callable
    scale: Callable
    reduction: Callable
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

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


def _abs(*arrays):
    return [None if a is None else np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]


def _conv_scale(fn):
    # The convolution is linear in each input, so the same op on absolute values bounds every term.
    def scale(p, inputs, outputs):
        return (float(np.nanmax(fn(p, *_abs(*inputs)), initial=0.0)),)
    return scale


OPS: dict[str, OpSpec] = {}


def _register(spec: OpSpec) -> None:
    OPS[spec.name] = spec


_register(OpSpec("conv2d", "fwd", ref.conv2d_fwd, _conv_inputs("fwd"), _conv_scale(ref.conv2d_fwd),
                 lambda p: p.reduction_length("fwd"), ("x", "w", "b"), ("y",)))
_register(OpSpec("conv2d", "bwd-data", ref.conv2d_bwd_data, _conv_inputs("bwd-data"),
                 _conv_scale(ref.conv2d_bwd_data), lambda p: p.reduction_length("bwd-data"),
                 ("dy", "w"), ("dx",)))
_register(OpSpec("conv2d", "bwd-weights", ref.conv2d_bwd_weights, _conv_inputs("bwd-weights"),
                 _conv_scale(ref.conv2d_bwd_weights), lambda p: p.reduction_length("bwd-weights"),
                 ("dy", "x"), ("dw",)))


def ops_of(family: str) -> list[OpSpec]:
    """The op specs of one family (conv2d, max_pool2d, lstm, ...), in registration order."""
    return [spec for spec in OPS.values() if spec.family == family]


def get_op(name: str) -> OpSpec:
    from convbench.errors import UnknownNameError
    try:
        return OPS[name]
    except KeyError:
        raise UnknownNameError(f"unknown op {name!r}; valid ops: {', '.join(sorted(OPS))}") from None
