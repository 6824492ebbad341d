"""The transposed convolution problem (PyTorch's conv_transpose2d, benchdnn's deconvolution).

x (N, C, H, W) with weights w (C, K/groups, R, S) gives y (N, K, P, Q): every input pixel adds
its value times the filter to a patch of the output, at stride spacing (the scatter form), and
the result is cropped by the padding:

    P = (H - 1) * stride_h - pad_top - pad_bottom + dilation_h * (R - 1) + output_padding_h + 1

(Q likewise). PyTorch's padding p crops p on both sides; output_padding adds rows at the end that
only the scatter's far edge reaches. Only the difference pad_bottom - output_padding matters, so
a problem keeps it in one form: output_padding is nonzero only where the bottom/right padding is
0 (PyTorch's padding=1, output_padding=1 is padding ((1, 0), ...), output_padding 0).

A transposed convolution is the input gradient of a convolution (`conv`): the convolution of an
(N, K, Hc, Wc) input by the same weights read as (K_conv=C, C_conv/groups=K/groups, R, S), with
the same stride, dilation and groups and padding ((pad_top, pad_bottom), ...), has output (N, C,
H, W), and its input gradient, given dy = x, is y's first Hc rows and Wc columns. The `extra`
rows and columns beyond (output_padding) hold no term. So a backend's forward is its conv2d
bwd-data, its input gradient conv2d fwd, its weight gradient conv2d bwd-weights with the roles of
input and output swapped (convbench.backends.lowering).
"""
from __future__ import annotations

from dataclasses import dataclass

from convbench.ops.conv import Conv2dProblem, Pad2, _is_int, pair


@dataclass(frozen=True)
class ConvTranspose2dProblem:
    """One 2D transposed convolution: C input channels, K output channels."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple[int, int] = (1, 1)
    padding: Pad2 = ((0, 0), (0, 0))
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False

    def __post_init__(self):
        for name in ("N", "C", "H", "W", "K", "R", "S", "groups"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        stride = pair("stride", self.stride, 1)
        dilation = pair("dilation", self.dilation, 1)
        out_pad = pair("output_padding", self.output_padding, 0)
        pads = tuple(pair("padding", q, 0) for q in self.padding)
        g = self.groups
        if self.C % g:
            raise ValueError(f"groups={g} must divide the input channels C={self.C}")
        if self.K % g:
            raise ValueError(f"groups={g} must divide the output channels K={self.K}")
        # one form for one function: the padding after, less the output padding
        canon = []
        for axis, (before, after), o, s, d in (("height", pads[0], out_pad[0], stride[0],
                                                dilation[0]),
                                               ("width", pads[1], out_pad[1], stride[1],
                                                dilation[1])):
            crop = after - o
            if -crop >= max(s, d):
                raise ValueError(f"output_padding={self.output_padding} must be smaller than the "
                                 f"stride or the dilation ({axis}: {o}, less the padding after "
                                 f"{after}, is {-crop} >= max({s}, {d}))")
            canon.append(((before, max(crop, 0)), max(-crop, 0)))
        object.__setattr__(self, "padding", (canon[0][0], canon[1][0]))
        object.__setattr__(self, "output_padding", (canon[0][1], canon[1][1]))
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "dilation", dilation)
        for axis, out in (("height", self.P), ("width", self.Q)):
            if out < 1:
                raise ValueError(f"the padding {self.padding} crops the whole output {axis} "
                                 f"(output {axis} {out})")

    # --- shapes -------------------------------------------------------------------------------
    def _out(self, axis: int) -> int:
        size = (self.H, self.W)[axis]
        k = (self.R, self.S)[axis]
        before, after = self.padding[axis]
        return ((size - 1) * self.stride[axis] - before - after + self.dilation[axis] * (k - 1)
                + self.output_padding[axis] + 1)

    @property
    def P(self) -> int:
        return self._out(0)

    @property
    def Q(self) -> int:
        return self._out(1)

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
        return (self.C, self.Kg, self.R, self.S)

    @property
    def y_shape(self):
        return (self.N, self.K, self.P, self.Q)

    @property
    def extra(self) -> tuple[int, int]:
        """Rows and columns at the end of y that no term reaches (the output padding)."""
        return self.output_padding

    @property
    def conv(self) -> Conv2dProblem:
        """The convolution whose input gradient this is (see the module's docstring)."""
        (eh, ew) = self.extra
        return Conv2dProblem(self.N, self.K, self.P - eh, self.Q - ew, self.C, self.R, self.S,
                             self.stride, self.padding, self.dilation, self.groups, False)

    # --- counts -------------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        return self.N * self.C * self.H * self.W * self.Kg * self.R * self.S

    def flops(self, direction: str = "fwd") -> float:
        return 2.0 * self.macs

    def min_bytes(self, direction: str = "fwd", itemsize: int = 4) -> float:
        x = self.N * self.C * self.H * self.W
        w = self.C * self.Kg * self.R * self.S
        y = self.N * self.K * self.P * self.Q
        b = self.K if (self.bias or direction == "bwd-weights") else 0
        return float(itemsize * (x + w + y + b))

    def reduction_length(self, direction: str = "fwd") -> int:
        """Length of the longest sum behind one output element (for error bounds)."""
        if direction == "fwd":
            return self.Cg * self.R * self.S + (1 if self.bias else 0)
        if direction == "bwd-data":
            return self.Kg * self.R * self.S
        return self.N * self.H * self.W

    def descriptor(self) -> str:
        """This problem in benchdnn's deconvolution syntax, tagged "deconv:": ic/ih are the
        input, oc the output channels; oh/ow give the output size where the padding after differs
        from the padding before (benchdnn's way), which also expresses the output padding."""
        (ph, _), (pw, _) = self.padding
        (sh, sw), (dh, dw) = self.stride, (self.dilation[0] - 1, self.dilation[1] - 1)
        parts = ["deconv:"] + ([f"g{self.groups}"] if self.groups != 1 else [])
        parts += [f"mb{self.N}", f"ic{self.C}", f"ih{self.H}"]
        if self.W != self.H:
            parts.append(f"iw{self.W}")
        parts.append(f"oc{self.K}")
        for axis, key, near in ((0, "oh", ph), (1, "ow", pw)):
            if self.padding[axis][1] != near or self.output_padding[axis]:
                parts.append(f"{key}{self._out(axis)}")
        parts.append(f"kh{self.R}")
        for key, value, default in (("kw", self.S, self.R), ("sh", sh, 1), ("sw", sw, sh),
                                    ("ph", ph, 0), ("pw", pw, ph), ("dh", dh, 0), ("dw", dw, dh)):
            if value != default:
                parts.append(f"{key}{value}")
        return "".join(parts)

    def __str__(self) -> str:
        return self.descriptor()


def _padding(padding) -> Pad2:
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(q, (tuple, list)) for q in padding)):
        return tuple(pair("padding", q, 0) for q in padding)  # type: ignore[return-value]
    ph, pw = pair("padding", padding, 0)
    return ((ph, ph), (pw, pw))


def conv_transpose2d_problem(x_shape, w_shape, *, stride=1, padding=0, output_padding=0,
                             dilation=1, groups=1, bias: bool = False) -> ConvTranspose2dProblem:
    """Validate PyTorch-style conv_transpose2d arguments against the array shapes. padding: an
    int, (ph, pw) or ((top, bottom), (left, right)) (ONNX's pads)."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"w must be 4-D (C, K/groups, R, S), got shape {tuple(w_shape)}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive int")
    N, C, H, W = (int(v) for v in x_shape)
    Cw, Kg, R, S = (int(v) for v in w_shape)
    if Cw != C:
        raise ValueError(f"w.shape[0]={Cw} must equal the input channels x.shape[1]={C}")
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r} must be an int or pairs of ints")
    return ConvTranspose2dProblem(N, C, H, W, Kg * groups, R, S, pair("stride", stride, 1),
                                  _padding(padding), pair("output_padding", output_padding, 0),
                                  pair("dilation", dilation, 1), groups, bias)


def conv_transpose1d_problem(x_shape, w_shape, *, stride=1, padding=0, output_padding=0,
                             dilation=1, groups=1, bias: bool = False) -> ConvTranspose2dProblem:
    """conv_transpose1d as the 2D problem with H = R = 1: x (N, C, L), w (C, K/groups, S);
    padding an int or (left, right)."""
    if len(x_shape) != 3:
        raise ValueError(f"x must be 3-D (N, C, L), got shape {tuple(x_shape)}")
    if len(w_shape) != 3:
        raise ValueError(f"w must be 3-D (C, K/groups, S), got shape {tuple(w_shape)}")
    for name, v, low in (("stride", stride, 1), ("dilation", dilation, 1),
                         ("output_padding", output_padding, 0)):
        if not _is_int(v) or v < low:
            raise ValueError(f"{name}={v!r} must be an int >= {low}")
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r} must be an int or a pair of ints")
    return conv_transpose2d_problem(
        (x_shape[0], x_shape[1], 1, x_shape[2]), (w_shape[0], w_shape[1], 1, w_shape[2]),
        stride=(1, stride), padding=((0, 0), pair("padding", padding, 0)),
        output_padding=(0, output_padding), dilation=(1, dilation), groups=groups, bias=bias)
