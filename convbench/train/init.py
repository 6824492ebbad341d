"""Weight initialisers with PyTorch's formulas (torch.nn.init).

fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field;
Xavier/Glorot: std = gain * sqrt(2 / (fan_in + fan_out)); He/Kaiming: std = gain / sqrt(fan),
gain sqrt(2) for ReLU; a uniform initialiser draws from +-sqrt(3) * std.
"""
from __future__ import annotations

import math

import numpy as np

INITIALISERS = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal")


def fans(shape) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight of at least 2 dimensions, got {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_weight(shape, method: str, rng: np.random.Generator, gain: float | None = None,
                dtype=np.float32) -> np.ndarray:
    """A weight of `shape` drawn by `method` (one of INITIALISERS). 'zeros' is refused: every
    unit of a layer would then compute the same function and receive the same gradient."""
    if method == "zeros":
        raise ValueError("init='zeros' must not be used for weights: identical units get identical "
                         "gradients and never differ (no symmetry breaking); use one of "
                         + ", ".join(INITIALISERS))
    if method not in INITIALISERS:
        raise ValueError(f"init={method!r} must be one of {', '.join(INITIALISERS)}")
    fan_in, fan_out = fans(shape)
    if method.startswith("xavier"):
        std = (1.0 if gain is None else gain) * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        std = (math.sqrt(2.0) if gain is None else gain) / math.sqrt(fan_in)
    if method.endswith("uniform"):
        bound = math.sqrt(3.0) * std
        return rng.uniform(-bound, bound, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * std).astype(dtype)


def init_bias(fan_in: int, n: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """PyTorch's default bias: uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=n).astype(dtype)
