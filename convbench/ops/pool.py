"""The pooling problem: PyTorch's max_pool2d and avg_pool2d semantics, with any padding.

x (N, C, H, W) -> y (N, C, P, Q) with, per axis (kernel k, stride s, padding b before and e
after, dilation d):

    P = floor_or_ceil((H + b + e - d*(k-1) - 1) / s) + 1

and, with ceil_mode, the last window dropped if it would start in the bottom/right padding
((P-1)*s - b >= H). Max pooling pads with minus infinity (padding never wins); average pooling
pads with zeros, and divides by the window clipped to the padded input (count_include_pad=True)
or to the input itself (count_include_pad=False).

Padding is ((top, bottom), (left, right)), up to the dilated kernel extent - 1 on each side
(PyTorch's own limit of half the kernel is a rule of its implementation, not of the operation).
A window whose taps all lie in the padding is an error for max pooling, and for average pooling
without count_include_pad (it has nothing to divide by). "same" is TensorFlow's and ONNX's
SAME_UPPER (output ceil(H / s), the odd pixel of padding at the end), "same_lower" puts it at the
start (ONNX's SAME_LOWER).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.ops.conv import Pad2, _is_int, pair


def pooled_size(size: int, k: int, s: int, before: int, after: int, d: int,
                ceil_mode: bool) -> int:
    span = size + before + after - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s - before >= size:
        out -= 1
    return out


def same_pool_padding(size: int, k: int, s: int, d: int, lower: bool) -> tuple[int, int]:
    """TensorFlow's/ONNX's SAME padding of one axis: output ceil(size / s); the odd pixel at the
    end (SAME_UPPER) or, with lower, at the start (SAME_LOWER)."""
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def normalize_pool_padding(padding, size: tuple[int, int], kernel: tuple[int, int],
                           stride: tuple[int, int], dilation: tuple[int, int]) -> Pad2:
    """padding as int, (ph, pw), ((top, bottom), (left, right)), 'valid', 'same' or
    'same_lower' -> ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding in ("same", "same_lower"):
            return tuple(same_pool_padding(n, k, s, d, padding == "same_lower")
                         for n, k, s, d in zip(size, kernel, stride, dilation))
        raise ValueError(f"padding={padding!r} must be 'valid', 'same', 'same_lower', an int or "
                         f"pairs of ints")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(q, (tuple, list)) for q in padding)):
        return tuple(pair("padding", q, 0) for q in padding)  # type: ignore[return-value]
    ph, pw = pair("padding", padding, 0)
    return ((ph, ph), (pw, pw))


def _as_pad2(padding) -> Pad2:
    """A problem's padding field: ((top, bottom), (left, right)); a pair (ph, pw) of ints, the
    symmetric form, is accepted too."""
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(q, (tuple, list)) for q in padding)):
        return tuple(pair("padding", q, 0) for q in padding)  # type: ignore[return-value]
    ph, pw = pair("padding", padding, 0)
    return ((ph, ph), (pw, pw))


@dataclass(frozen=True)
class Pool2dProblem:
    """One 2D pooling: kind 'max' or 'avg', sizes and parameters. padding is
    ((top, bottom), (left, right)); (ph, pw) is taken as the symmetric ((ph, ph), (pw, pw))."""

    kind: str
    N: int
    C: int
    H: int
    W: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: Pad2 = ((0, 0), (0, 0))
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
        object.__setattr__(self, "padding", _as_pad2(self.padding))
        k = pair("kernel_size", self.kernel, 1)
        s = pair("stride", self.stride, 1)
        d = pair("dilation", self.dilation, 1)
        if self.kind == "avg" and tuple(self.dilation) != (1, 1):
            raise ValueError(f"dilation={self.dilation} is not defined for average pooling")
        for axis, size, kk, ss, (before, after), dd in (
                ("height", self.H, k[0], s[0], self.padding[0], d[0]),
                ("width", self.W, k[1], s[1], self.padding[1], d[1])):
            extent = dd * (kk - 1) + 1
            if max(before, after) > extent - 1:
                raise ValueError(f"padding={self.padding} must be at most the kernel extent - 1 "
                                 f"({axis}: padding {max(before, after)} > {extent - 1})")
            if extent > size + before + after:
                raise ValueError(f"kernel {axis} {kk} (dilated extent {extent}) exceeds the "
                                 f"padded input {axis} {size + before + after}")
            if self.kind == "max" or not self.count_include_pad:
                empty = _empty_window(size, kk, ss, before, after, dd, self.ceil_mode)
                if empty is not None:
                    raise ValueError(
                        f"{self.kind} pooling window {empty} along the {axis} lies entirely in "
                        f"the padding (padding {(before, after)}, kernel {kk}, stride {ss}, "
                        f"dilation {dd}, input {size}): it has no input to "
                        + ("take the maximum of" if self.kind == "max" else "average"))

    @property
    def pad_begin(self) -> tuple[int, int]:
        """(top, left): where the windows start, -pad_begin + i*stride."""
        return (self.padding[0][0], self.padding[1][0])

    @property
    def pad_end(self) -> tuple[int, int]:
        """(bottom, right)."""
        return (self.padding[0][1], self.padding[1][1])

    @property
    def P(self) -> int:
        return pooled_size(self.H, self.kernel[0], self.stride[0], *self.padding[0],
                           self.dilation[0], self.ceil_mode)

    @property
    def Q(self) -> int:
        return pooled_size(self.W, self.kernel[1], self.stride[1], *self.padding[1],
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

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        """(ph, pw) when the padding is the same before and after on each axis, else None."""
        (t, b), (left, r) = self.padding
        return (t, left) if (t == b and left == r) else None

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
        """This problem in benchdnn's syntax (ops.descriptor parses it back); bottom/right
        padding unlike the top/left is written pb/pr (convbench's keys, as for convolutions)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad_begin
        pb, pr = self.pad_end
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
        if pb != ph:
            parts.append(f"pb{pb}")
        if pr != pw:
            parts.append(f"pr{pr}")
        return "".join(parts)

    def __str__(self) -> str:
        return self.descriptor()


def _empty_window(size, k, s, before, after, d, ceil_mode) -> int | None:
    """The index of the first output window along one axis whose taps all fall in the padding,
    or None."""
    n = pooled_size(size, k, s, before, after, d, ceil_mode)
    taps = np.arange(n)[:, None] * s - before + np.arange(k)[None, :] * d
    inside = ((taps >= 0) & (taps < size)).any(axis=1)
    return None if inside.all() else int(np.argmin(inside))


def pool2d_problem(kind: str, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                   ceil_mode: bool = False, count_include_pad: bool = True) -> Pool2dProblem:
    """Validate PyTorch-style pooling arguments; stride defaults to the kernel size. padding:
    int, (ph, pw), ((top, bottom), (left, right)), 'valid', 'same' or 'same_lower'."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    k = pair("kernel_size", kernel_size, 1)
    s = k if stride is None else pair("stride", stride, 1)
    d = pair("dilation", dilation, 1)
    pad = normalize_pool_padding(padding, tuple(int(v) for v in x_shape[2:]), k, s, d)
    return Pool2dProblem(kind, *(int(v) for v in x_shape), k, s, pad, d, bool(ceil_mode),
                         bool(count_include_pad))


def pool1d_problem(kind: str, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                   ceil_mode: bool = False, count_include_pad: bool = True) -> Pool2dProblem:
    """1D pooling as 2D pooling with H = 1: x (N, C, L); padding an int, (left, right), 'valid',
    'same' or 'same_lower'."""
    if len(x_shape) != 3:
        raise ValueError(f"x must be 3-D (N, C, L), got shape {tuple(x_shape)}")
    for name, v in (("kernel_size", kernel_size), ("dilation", dilation)) + (
            (("stride", stride),) if stride is not None else ()):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{name}={v!r} must be an int >= 1")
    pad = padding if isinstance(padding, str) else ((0, 0), pair("padding", padding, 0))
    return pool2d_problem(kind, (x_shape[0], x_shape[1], 1, x_shape[2]), (1, kernel_size),
                          None if stride is None else (1, stride), pad, (1, dilation), ceil_mode,
                          count_include_pad)


def window_starts(p: Pool2dProblem, axis: int) -> np.ndarray:
    """Input index where each output's window starts along axis 0 (H) or 1 (W); may be < 0."""
    n = p.P if axis == 0 else p.Q
    return np.arange(n) * p.stride[axis] - p.pad_begin[axis]


def avg_divisors(p: Pool2dProblem) -> np.ndarray:
    """(P, Q) divisor of each average-pooling window, as PyTorch computes it."""
    out = []
    for axis, size in ((0, p.H), (1, p.W)):
        start = window_starts(p, axis)
        end = np.minimum(start + p.kernel[axis], size + p.pad_end[axis])
        if p.count_include_pad:
            out.append(end - start)
        else:
            out.append(np.minimum(end, size) - np.maximum(start, 0))
    return np.outer(out[0], out[1]).astype(np.float64)
