"""The convolution problem: argument normalisation, validation, shapes, FLOP and byte counts.

Layouts follow PyTorch: input x is (N, C, H, W), weights w are (K, C/groups, R, S), output y is
(N, K, P, Q) with

    P = (H + pad_top + pad_bottom - dilation_h * (R - 1) - 1) // stride_h + 1
    Q = (W + pad_left + pad_right - dilation_w * (S - 1) - 1) // stride_w + 1

Dilation 1 means no dilation. conv1d is the same problem with H = R = 1.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral

import numpy as np

Pad2 = tuple[tuple[int, int], tuple[int, int]]


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair; errors name the argument."""
    if _is_int(value):
        out = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name}={value!r} must be an int or a pair of ints")
    for v in out:
        if v < minimum:
            raise ValueError(f"{name}={value!r} must be >= {minimum}")
    return out


def same_padding(extent: int) -> tuple[int, int]:
    """Padding for 'same' output size at stride 1: PyTorch puts the odd pixel at the end."""
    total = extent - 1
    return total // 2, total - total // 2


def normalize_padding2d(padding, kernel: tuple[int, int], dilation: tuple[int, int],
                        stride: tuple[int, int]) -> Pad2:
    """padding as int, (ph, pw), ((top, bottom), (left, right)), 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride=1, got stride={stride}")
            return tuple(same_padding(d * (k - 1) + 1) for k, d in zip(kernel, dilation))
        raise ValueError(f"padding={padding!r} must be 'valid', 'same', an int or pairs of ints")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        out = tuple(pair("padding", p, 0) for p in padding)
        return out  # type: ignore[return-value]
    ph, pw = pair("padding", padding, 0)
    return ((ph, ph), (pw, pw))


def normalize_padding1d(padding, kernel: int, dilation: int, stride: int) -> tuple[int, int]:
    """conv1d padding: int, (left, right), 'valid', 'same' or 'causal' (left only)."""
    if padding == "causal":
        return (dilation * (kernel - 1), 0)
    if isinstance(padding, str):
        return normalize_padding2d(padding, (1, kernel), (1, dilation), (1, stride))[1]
    return pair("padding", padding, 0)


@dataclass(frozen=True)
class Conv2dProblem:
    """One 2D convolution: sizes and parameters, everything needed to run or count it."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple[int, int] = (1, 1)
    padding: Pad2 = ((0, 0), (0, 0))
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False

    def __post_init__(self):
        for name in ("N", "C", "H", "W", "K", "R", "S", "groups"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        pair("stride", self.stride, 1)
        pair("dilation", self.dilation, 1)
        for p in self.padding:
            pair("padding", p, 0)
        g = self.groups
        if self.C % g:
            raise ValueError(f"groups={g} must divide the input channels C={self.C}")
        if self.K % g:
            raise ValueError(f"groups={g} must divide the output channels K={self.K}")
        for axis, size, pad, k, d in (("height", self.H, self.padding[0], self.R, self.dilation[0]),
                                      ("width", self.W, self.padding[1], self.S, self.dilation[1])):
            extent = d * (k - 1) + 1
            if extent > size + pad[0] + pad[1]:
                raise ValueError(
                    f"kernel {axis} {k} (dilated extent {extent}) exceeds the padded input {axis} "
                    f"{size + pad[0] + pad[1]} (input {size} + padding {pad[0]}+{pad[1]})")

    # --- shapes -------------------------------------------------------------------------------
    @property
    def Hp(self) -> int:
        return self.H + self.padding[0][0] + self.padding[0][1]

    @property
    def Wp(self) -> int:
        return self.W + self.padding[1][0] + self.padding[1][1]

    @property
    def P(self) -> int:
        return (self.Hp - self.dilation[0] * (self.R - 1) - 1) // self.stride[0] + 1

    @property
    def Q(self) -> int:
        return (self.Wp - self.dilation[1] * (self.S - 1) - 1) // self.stride[1] + 1

    @property
    def Cg(self) -> int:
        return self.C // self.groups

    @property
    def Kg(self) -> int:
        return self.K // self.groups

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.Cg, self.R, self.S)

    @property
    def y_shape(self):
        return (self.N, self.K, self.P, self.Q)

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.C and self.groups > 1

    # --- counts -------------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        return self.N * self.K * self.P * self.Q * self.Cg * self.R * self.S

    def flops(self, direction: str = "fwd") -> float:
        """2 x multiply-accumulates of the direct algorithm; the same for all three directions."""
        return 2.0 * self.macs

    def min_bytes(self, direction: str = "fwd", itemsize: int = 4) -> float:
        """Bytes each operand must move at least once: inputs read, output written."""
        x = self.N * self.C * self.H * self.W
        w = self.K * self.Cg * self.R * self.S
        y = self.N * self.K * self.P * self.Q
        b = self.K if self.bias else 0
        if direction == "bwd-weights":
            b = self.K
        return float(itemsize * (x + w + y + b))

    def reduction_length(self, direction: str = "fwd") -> int:
        """Length of the longest sum behind one output element (for error bounds)."""
        if direction == "fwd":
            return self.Cg * self.R * self.S + (1 if self.bias else 0)
        if direction == "bwd-data":
            return self.Kg * self.R * self.S
        return self.N * self.P * self.Q

    def descriptor(self) -> str:
        """This problem in benchdnn's syntax (ops.descriptor parses it back)."""
        (ph, pb), (pw, pr) = self.padding
        (sh, sw), (dh, dw) = self.stride, (self.dilation[0] - 1, self.dilation[1] - 1)
        parts = [f"g{self.groups}"] if self.groups != 1 else []
        parts += [f"mb{self.N}", f"ic{self.C}", f"ih{self.H}"]
        if self.W != self.H:
            parts.append(f"iw{self.W}")
        parts.append(f"oc{self.K}")
        far = []
        # bottom/right padding unlike the top/left: as oh/ow where the output size implies it,
        # else as pb/pr after everything else
        for size, k, s, near, d, out, pad, okey, pkey in (
                (self.H, self.R, sh, ph, dh, self.P, pb, "oh", "pb"),
                (self.W, self.S, sw, pw, dw, self.Q, pr, "ow", "pr")):
            if pad != near:
                implied = (out - 1) * s + (k - 1) * (d + 1) + 1 - size - near
                if implied == pad:
                    parts.append(f"{okey}{out}")
                else:
                    far.append(f"{pkey}{pad}")
        parts.append(f"kh{self.R}")
        for key, value, default in (("kw", self.S, self.R), ("sh", sh, 1), ("sw", sw, sh),
                                    ("ph", ph, 0), ("pw", pw, ph), ("dh", dh, 0), ("dw", dw, dh)):
            if value != default:
                parts.append(f"{key}{value}")
        return "".join(parts + far)

    def __str__(self) -> str:
        return self.descriptor()


def conv2d_problem(x_shape, w_shape, *, stride=1, padding=0, dilation=1, groups=1,
                   bias: bool = False) -> Conv2dProblem:
    """Validate PyTorch-style conv2d arguments against the array shapes and build the problem."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"w must be 4-D (K, C/groups, R, S), got shape {tuple(w_shape)}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive int")
    N, C, H, W = (int(v) for v in x_shape)
    K, Cg, R, S = (int(v) for v in w_shape)
    if C % groups:
        raise ValueError(f"groups={groups} must divide the input channels x.shape[1]={C}")
    if Cg != C // groups:
        raise ValueError(f"w.shape[1]={Cg} must equal x.shape[1]/groups={C}/{groups}={C // groups}")
    stride = pair("stride", stride, 1)
    dilation = pair("dilation", dilation, 1)
    pad = normalize_padding2d(padding, (R, S), dilation, stride)
    return Conv2dProblem(N, C, H, W, K, R, S, stride, pad, dilation, groups, bias)


def conv1d_problem(x_shape, w_shape, *, stride=1, padding=0, dilation=1, groups=1,
                   bias: bool = False) -> Conv2dProblem:
    """conv1d as a conv2d with H = R = 1: x (N, C, L), w (K, C/groups, S)."""
    if len(x_shape) != 3:
        raise ValueError(f"x must be 3-D (N, C, L), got shape {tuple(x_shape)}")
    if len(w_shape) != 3:
        raise ValueError(f"w must be 3-D (K, C/groups, S), got shape {tuple(w_shape)}")
    for name, v, low in (("stride", stride, 1), ("dilation", dilation, 1)):
        if not _is_int(v) or v < low:
            raise ValueError(f"{name}={v!r} must be an int >= {low}")
    pad = normalize_padding1d(padding, int(w_shape[2]), dilation, stride)
    return conv2d_problem((x_shape[0], x_shape[1], 1, x_shape[2]),
                          (w_shape[0], w_shape[1], 1, w_shape[2]),
                          stride=(1, stride), padding=((0, 0), pad), dilation=(1, dilation),
                          groups=groups, bias=bias)


def input_gradient_problem(p: Conv2dProblem) -> Conv2dProblem | None:
    """The input gradient of a stride-1 convolution as a forward convolution: dy (N, K, P, Q),
    padded by (dilated extent - 1 - padding) on each side and convolved with flip_transpose(w),
    gives dx (N, C, H, W). None where that does not hold (strides, padding beyond the extent)."""
    if p.stride != (1, 1):
        return None
    (pt, pb), (pl, pr) = p.padding
    eh, ew = (p.R - 1) * p.dilation[0], (p.S - 1) * p.dilation[1]
    pads = ((eh - pt, eh - pb), (ew - pl, ew - pr))
    if min(min(q) for q in pads) < 0:
        return None
    return dataclasses.replace(p, C=p.K, H=p.P, W=p.Q, K=p.C, padding=pads, bias=False)


def flip_transpose(w: np.ndarray, groups: int) -> np.ndarray:
    """w (K, C/g, R, S) -> (C, K/g, R, S) with the taps reversed: the weights of
    input_gradient_problem."""
    K, Cg, R, S = w.shape
    wg = w.reshape(groups, K // groups, Cg, R, S)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(wg.transpose(0, 2, 1, 3, 4)).reshape(groups * Cg, K // groups, R, S)


def pad_input(x: np.ndarray, p: Conv2dProblem) -> np.ndarray:
    """x zero-padded to (N, C, Hp, Wp); x itself when there is no padding."""
    (pt, pb), (pl, pr) = p.padding
    if pt == pb == pl == pr == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def window_view(xp: np.ndarray, p: Conv2dProblem) -> np.ndarray:
    """A read-only view of the padded input as (N, C, R, S, P, Q) windows, no copy:

    view[n, c, r, s, i, j] = xp[n, c, i*stride_h + r*dilation_h, j*stride_w + s*dilation_w]
    """
    sn, sc, sh, sw = xp.strides
    (dh, dw), (th, tw) = p.dilation, p.stride
    return np.lib.stride_tricks.as_strided(
        xp, shape=(p.N, p.C, p.R, p.S, p.P, p.Q),
        strides=(sn, sc, sh * dh, sw * dw, sh * th, sw * tw), writeable=False)


def crop_padding(xp: np.ndarray, p: Conv2dProblem) -> np.ndarray:
    """The inverse of pad_input for gradients: the (N, C, H, W) interior of a padded array."""
    (pt, _), (pl, _) = p.padding
    return xp[:, :, pt:pt + p.H, pl:pl + p.W]
