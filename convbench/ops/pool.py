"""The pooling problem: PyTorch's max_pool2d and avg_pool2d semantics.

x (N, C, H, W) -> y (N, C, P, Q) with, per axis (kernel k, stride s, padding p, dilation d):

    P = floor_or_ceil((H + 2p - d*(k-1) - 1) / s) + 1

and, with ceil_mode, the last window dropped if it would start in the right/bottom padding
((P-1)*s >= H + p). Max pooling pads with minus infinity (padding never wins); average pooling
pads with zeros, and divides by the window clipped to the padded input (count_include_pad=True)
or to the input itself (count_include_pad=False).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.ops.conv import _is_int, pair


def pooled_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@dataclass(frozen=True)
class Pool2dProblem:
    """One 2D pooling: kind 'max' or 'avg', sizes and parameters."""

    kind: str
    N: int
    C: int
    H: int
    W: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise ValueError(f"kind={self.kind!r} must be 'max' or 'avg'")
        for name in ("N", "C", "H", "W"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        k = pair("kernel_size", self.kernel, 1)
        pair("stride", self.stride, 1)
        pad = pair("padding", self.padding, 0)
        pair("dilation", self.dilation, 1)
        if self.kind == "avg" and tuple(self.dilation) != (1, 1):
            raise ValueError(f"dilation={self.dilation} is not defined for average pooling")
        for axis, kk, pp in (("height", k[0], pad[0]), ("width", k[1], pad[1])):
            if pp > kk // 2:
                raise ValueError(f"padding={self.padding} must be at most half the kernel "
                                 f"({axis}: padding {pp} > kernel {kk} // 2)")
        for axis, size, kk, pp, dd in (("height", self.H, k[0], pad[0], self.dilation[0]),
                                       ("width", self.W, k[1], pad[1], self.dilation[1])):
            if dd * (kk - 1) + 1 > size + 2 * pp:
                raise ValueError(f"kernel {axis} {kk} (dilated extent {dd * (kk - 1) + 1}) exceeds "
                                 f"the padded input {axis} {size + 2 * pp}")

    @property
    def P(self) -> int:
        return pooled_size(self.H, self.kernel[0], self.stride[0], self.padding[0],
                           self.dilation[0], self.ceil_mode)

    @property
    def Q(self) -> int:
        return pooled_size(self.W, self.kernel[1], self.stride[1], self.padding[1],
                           self.dilation[1], self.ceil_mode)

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self):
        return (self.N, self.C, self.P, self.Q)

    @property
    def window(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def flops(self, direction: str = "fwd") -> float:
        """One compare (max) or add (avg) per window element."""
        return float(self.N * self.C * self.P * self.Q * self.window)

    def min_bytes(self, direction: str = "fwd", itemsize: int = 4) -> float:
        x = self.N * self.C * self.H * self.W
        y = self.N * self.C * self.P * self.Q
        return float(itemsize * ((x + y) if direction == "fwd" else (2 * x + y)))

    def overlap(self) -> int:
        """Most windows any one input element falls in."""
        return int(np.prod([-(-(d * (k - 1) + 1) // s) for k, s, d in
                            zip(self.kernel, self.stride, self.dilation)]))

    def descriptor(self) -> str:
        """This problem in benchdnn's syntax (ops.descriptor parses it back)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        dh, dw = self.dilation[0] - 1, self.dilation[1] - 1
        parts = [f"{self.kind}:mb{self.N}", f"ic{self.C}", f"ih{self.H}"]
        if self.W != self.H:
            parts.append(f"iw{self.W}")
        parts.append(f"kh{kh}")
        if kw != kh:
            parts.append(f"kw{kw}")
        if (sh, sw) != (kh, kw):
            parts.append(f"sh{sh}")
            if sw != sh:
                parts.append(f"sw{sw}")
        for key, value, default in (("ph", ph, 0), ("pw", pw, ph), ("dh", dh, 0), ("dw", dw, dh)):
            if value != default:
                parts.append(f"{key}{value}")
        if self.ceil_mode:
            parts.append("cm1")
        if self.kind == "avg" and not self.count_include_pad:
            parts.append("cip0")
        return "".join(parts)

    def __str__(self) -> str:
        return self.descriptor()


def pool2d_problem(kind: str, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                   ceil_mode: bool = False, count_include_pad: bool = True) -> Pool2dProblem:
    """Validate PyTorch-style pooling arguments; stride defaults to the kernel size."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    k = pair("kernel_size", kernel_size, 1)
    s = k if stride is None else pair("stride", stride, 1)
    return Pool2dProblem(kind, *(int(v) for v in x_shape), k, s, pair("padding", padding, 0),
                         pair("dilation", dilation, 1), bool(ceil_mode), bool(count_include_pad))


def window_starts(p: Pool2dProblem, axis: int) -> np.ndarray:
    """Input index where each output's window starts along axis 0 (H) or 1 (W); may be < 0."""
    n = p.P if axis == 0 else p.Q
    return np.arange(n) * p.stride[axis] - p.padding[axis]


def avg_divisors(p: Pool2dProblem) -> np.ndarray:
    """(P, Q) divisor of each average-pooling window, as PyTorch computes it."""
    out = []
    for axis, size in ((0, p.H), (1, p.W)):
        start = window_starts(p, axis)
        end = np.minimum(start + p.kernel[axis], size + p.padding[axis])
        if p.count_include_pad:
            out.append(end - start)
        else:
            out.append(np.minimum(end, size) - np.maximum(start, 0))
    return np.outer(out[0], out[1]).astype(np.float64)
