"""Named lists of small problems for verification: edge cases and seeded random ones.

A case is (label, family, problem), or (label, family, problem, values) where `values` puts
particular values into the inputs made for it ({input name: {index: value}}: NaN and infinity in
the `nonfinite` list); verification runs every direction of the family's ops (with values: those
that take one of the named inputs).
"""
from __future__ import annotations

import numpy as np

from convbench.errors import UnknownNameError
from convbench.ops.conv import Conv2dProblem, conv1d_problem, conv2d_problem
from convbench.ops.conv_transpose import conv_transpose1d_problem, conv_transpose2d_problem
from convbench.ops.pool import pool1d_problem, pool2d_problem
from convbench.ops.rnn import RNNProblem


def _c(label, x, w, **kw):
    return (label, "conv2d", conv2d_problem(x, w, **kw))


def conv_edge_cases():
    return [
        _c("1x1 kernel", (2, 3, 5, 5), (4, 3, 1, 1)),
        _c("kernel = padded input", (2, 2, 3, 3), (3, 2, 5, 5), padding=1),
        _c("stride > kernel", (2, 3, 9, 8), (2, 3, 2, 2), stride=3),
        _c("asymmetric padding", (2, 3, 6, 5), (4, 3, 3, 3), padding=((1, 0), (2, 1))),
        _c("non-square input and kernel", (2, 3, 5, 8), (4, 3, 3, 2), padding=(1, 0)),
        _c("dilation 2", (2, 3, 9, 9), (4, 3, 3, 3), dilation=2, padding=2),
        _c("stride 2, dilation (2,1)", (1, 2, 9, 10), (3, 2, 3, 2), stride=2, dilation=(2, 1),
           padding=1),
        _c("groups 2", (2, 4, 6, 6), (6, 2, 3, 3), groups=2, padding=1),
        _c("depthwise", (2, 4, 7, 7), (4, 1, 3, 3), groups=4, padding=1),
        _c("depthwise x2 multiplier, stride 2", (1, 3, 8, 8), (6, 1, 3, 3), groups=3, stride=2,
           padding=1),
        _c("batch 1, one channel", (1, 1, 6, 6), (1, 1, 3, 3)),
        _c("padding 'same', even kernel", (2, 2, 5, 6), (3, 2, 4, 2), padding="same"),
        _c("3x3 stride 2 odd input", (2, 4, 7, 7), (5, 4, 3, 3), stride=2, padding=1),
        _c("7x7 stride 2 (conv1 shape)", (1, 3, 16, 16), (4, 3, 7, 7), stride=2, padding=3),
        _c("bias", (2, 3, 5, 5), (4, 3, 3, 3), padding=1, bias=True),
        ("conv1d causal dilated", "conv2d",
         conv1d_problem((2, 3, 16), (4, 3, 3), padding="causal", dilation=2)),
        ("conv1d stride 2", "conv2d", conv1d_problem((2, 3, 15), (2, 3, 4), stride=2, padding=1)),
    ]


def random_conv_problem(rng: np.random.Generator, max_spatial: int = 12,
                        max_channels: int = 8) -> Conv2dProblem:
    """One random valid conv2d problem (every parameter drawn; invalid draws are redrawn)."""
    while True:
        groups = int(rng.choice([1, 1, 1, 2, 3]))
        C = groups * int(rng.integers(1, max(2, max_channels // groups) + 1))
        K = groups * int(rng.integers(1, max(2, max_channels // groups) + 1))
        R, S = (int(v) for v in rng.integers(1, 6, size=2))
        H, W = (int(v) for v in rng.integers(1, max_spatial + 1, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
        pad = tuple(tuple(int(v) for v in rng.integers(0, 3, size=2)) for _ in range(2))
        try:
            return Conv2dProblem(int(rng.integers(1, 4)), C, H, W, K, R, S, stride, pad, dilation,
                                 groups, bool(rng.integers(0, 2)))
        except ValueError:
            continue


def random_conv_cases(count: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(f"random #{i} (seed {seed})", "conv2d", random_conv_problem(rng))
            for i in range(count)]


def _t(label, x, w, **kw):
    return (label, "conv_transpose2d", conv_transpose2d_problem(x, w, **kw))


def deconv_edge_cases():
    """Transposed convolutions: PyTorch's padding and output_padding, ONNX's asymmetric pads,
    groups, dilation, 1D."""
    return [
        _t("4x4 stride 2 padding 1 (DCGAN)", (2, 4, 4, 4), (4, 3, 4, 4), stride=2, padding=1),
        _t("2x2 stride 2 (U-Net up-conv)", (2, 4, 3, 5), (4, 2, 2, 2), stride=2),
        _t("3x3 stride 2 padding 1 output_padding 1", (2, 3, 4, 5), (3, 4, 3, 3), stride=2,
           padding=1, output_padding=1),
        _t("output_padding beyond the padding", (1, 2, 3, 3), (2, 3, 3, 3), stride=2,
           output_padding=(1, 0)),
        _t("output_padding < dilation at stride 1", (1, 2, 5, 4), (2, 2, 3, 2), dilation=2,
           output_padding=1, padding=1),
        _t("3x3 stride 1 padding 1", (2, 3, 6, 6), (3, 4, 3, 3), padding=1),
        _t("1x1", (2, 5, 3, 4), (5, 3, 1, 1)),
        _t("asymmetric padding (ONNX pads)", (2, 3, 5, 4), (3, 2, 3, 3), stride=2,
           padding=((2, 0), (0, 1))),
        _t("groups 2, dilation 2, stride 3", (1, 4, 4, 3), (4, 3, 3, 2), stride=3, dilation=2,
           groups=2, padding=1),
        _t("depthwise stride 2", (2, 3, 4, 4), (3, 1, 3, 3), stride=2, groups=3, padding=1,
           output_padding=1),
        _t("bias", (2, 3, 4, 4), (3, 5, 3, 3), stride=2, padding=1, bias=True),
        ("conv_transpose1d stride 2", "conv_transpose2d",
         conv_transpose1d_problem((2, 3, 7), (3, 4, 5), stride=2, padding=2, output_padding=1)),
    ]


def _pool(label, kind, x, **kw):
    return (label, f"{kind}_pool2d", pool2d_problem(kind, x, **kw))


def pool_edge_cases():
    out = []
    for kind in ("max", "avg"):
        out += [
            _pool(f"{kind} 3x3 s2 p1", kind, (2, 3, 9, 9), kernel_size=3, stride=2, padding=1),
            _pool(f"{kind} kernel = input", kind, (1, 2, 5, 4), kernel_size=(5, 4)),
            _pool(f"{kind} padding = half kernel", kind, (2, 2, 6, 6), kernel_size=(5, 3),
                  stride=1, padding=(2, 1)),
            _pool(f"{kind} ceil_mode window starts in padding", kind, (1, 2, 6, 6), kernel_size=2,
                  stride=2, padding=1, ceil_mode=True),
            _pool(f"{kind} ceil_mode partial last window", kind, (2, 2, 7, 8), kernel_size=3,
                  stride=2, ceil_mode=True),
            _pool(f"{kind} non-square, stride > kernel", kind, (1, 3, 9, 11), kernel_size=(2, 3),
                  stride=(3, 4)),
            _pool(f"{kind} batch 1, one channel", kind, (1, 1, 4, 4), kernel_size=2),
        ]
    out += [
        _pool("max dilation 2", "max", (2, 2, 9, 9), kernel_size=3, stride=2, padding=1,
              dilation=2),
        _pool("avg count_include_pad=False", "avg", (2, 2, 7, 7), kernel_size=3, stride=2,
              padding=1, ceil_mode=True, count_include_pad=False),
    ]
    return out + pool_padding_cases()


def _pool1d(label, kind, x, **kw):
    return (label, f"{kind}_pool2d", pool1d_problem(kind, x, **kw))


def pool_padding_cases():
    """Padding beyond PyTorch's: asymmetric, SAME_UPPER/SAME_LOWER, up to kernel - 1; 1D and
    global pooling."""
    out = []
    for kind in ("max", "avg"):
        out += [
            _pool(f"{kind} asymmetric padding", kind, (2, 2, 7, 8), kernel_size=3, stride=2,
                  padding=((2, 0), (1, 2))),
            _pool(f"{kind} padding 'same' stride 2", kind, (1, 2, 7, 6), kernel_size=3, stride=2,
                  padding="same"),
            _pool(f"{kind} padding 'same_lower' even kernel", kind, (1, 2, 5, 6), kernel_size=4,
                  stride=1, padding="same_lower"),
            _pool(f"{kind} padding = kernel - 1", kind, (2, 2, 5, 5), kernel_size=3, stride=1,
                  padding=2),
            _pool(f"{kind} asymmetric padding, ceil_mode", kind, (1, 2, 6, 7), kernel_size=3,
                  stride=2, padding=((0, 2), (2, 1)), ceil_mode=True),
            _pool1d(f"{kind} 1d stride 2 padding (2, 1)", kind, (2, 3, 9), kernel_size=3,
                    stride=2, padding=(2, 1)),
            _pool1d(f"{kind} 1d padding 'same'", kind, (1, 2, 10), kernel_size=4, stride=3,
                    padding="same"),
            _pool(f"{kind} global", kind, (2, 3, 4, 5), kernel_size=(4, 5)),
        ]
    out += [
        _pool("max dilation 2, padding 3 > half the kernel", "max", (1, 2, 8, 8), kernel_size=3,
              stride=2, padding=3, dilation=2),
        _pool("avg 'same', count_include_pad=False (TensorFlow)", "avg", (2, 2, 7, 7),
              kernel_size=3, stride=2, padding="same", count_include_pad=False),
        _pool("avg padding = kernel - 1, count_include_pad=False", "avg", (1, 2, 5, 4),
              kernel_size=(3, 2), stride=1, padding=((2, 2), (1, 1)), count_include_pad=False),
    ]
    return out


def rnn_edge_cases():
    out = []
    for cell in ("rnn_tanh", "lstm", "gru"):
        out += [
            (f"{cell} T=5 N=3 I=4 H=6", cell, RNNProblem(cell, 5, 3, 4, 6)),
            (f"{cell} T=1", cell, RNNProblem(cell, 1, 2, 3, 4)),
            (f"{cell} batch 1", cell, RNNProblem(cell, 4, 1, 3, 5)),
            (f"{cell} hidden 1", cell, RNNProblem(cell, 4, 2, 3, 1)),
            (f"{cell} no bias", cell, RNNProblem(cell, 3, 2, 5, 3, bias=False)),
        ]
    return out


def rnn_variant_cases():
    """Reversed layers (the backward half of a bidirectional layer) and the original GRU
    (linear_before_reset=False)."""
    out = []
    for cell in ("rnn_tanh", "lstm", "gru"):
        out += [(f"{cell} reverse T=5 N=3 I=4 H=6", cell, RNNProblem(cell, 5, 3, 4, 6,
                                                                      reverse=True)),
                (f"{cell} reverse no bias", cell, RNNProblem(cell, 3, 2, 5, 3, bias=False,
                                                             reverse=True))]
    out += [("gru linear_before_reset=False", "gru",
             RNNProblem("gru", 5, 3, 4, 6, linear_before_reset=False)),
            ("gru linear_before_reset=False reverse no bias", "gru",
             RNNProblem("gru", 4, 2, 3, 5, bias=False, reverse=True, linear_before_reset=False)),
            ("gru linear_before_reset=False T=1", "gru",
             RNNProblem("gru", 1, 2, 3, 4, linear_before_reset=False))]
    return out


NAN, INF = float("nan"), float("inf")


def nonfinite_cases():
    """NaN and +-inf in the inputs, where convbench's rule says exactly which outputs are NaN and
    which +-inf (those of the float64 reference; README, "Non-finite inputs"): at a corner, where
    they meet the zero padding; in the weights, which meet it in every direction; beside a zero
    weight (inf * 0 is NaN); with both signs in one window; in a strided layer whose last rows no
    window reaches. Recurrent cells get NaN only: an infinity saturates their gates, and whether a
    gradient is then inf * 0 depends on the precision (float32's sigmoid reaches 1 exactly).
    Tiny, so that numba-cuda runs them on the simulator."""
    conv = conv2d_problem((1, 2, 5, 5), (2, 2, 3, 3), padding=1, bias=True)
    strided = conv2d_problem((1, 2, 6, 6), (2, 2, 3, 3), stride=2, padding=1)
    deconv = conv_transpose2d_problem((1, 2, 4, 4), (2, 2, 3, 3), stride=2, padding=1,
                                      output_padding=1, bias=True)
    pool = dict(kernel_size=3, stride=2, padding=1)
    out = [
        ("NaN in x at a corner", "conv2d", conv, {"x": {(0, 0, 0, 0): NAN}}),
        ("+inf and -inf in one window of x", "conv2d", conv,
         {"x": {(0, 1, 2, 2): INF, (0, 0, 1, 1): -INF}}),
        ("+inf in x beside a zero weight", "conv2d", conv,
         {"x": {(0, 1, 4, 3): INF}, "w": {(0, 1, 0, 1): 0.0}}),
        ("NaN weight (meets the padding)", "conv2d", conv, {"w": {(0, 0, 0, 0): NAN}}),
        ("+inf and -inf weights", "conv2d", conv,
         {"w": {(1, 1, 2, 2): INF, (0, 0, 1, 1): -INF}}),
        ("NaN output gradient at a corner", "conv2d", conv, {"dy": {(0, 0, 0, 0): NAN}}),
        ("+inf and -inf output gradient", "conv2d", conv,
         {"dy": {(0, 1, 4, 4): INF, (0, 0, 2, 2): -INF}}),
        ("+inf bias", "conv2d", conv, {"b": {(1,): INF}}),
        ("NaN weight, stride 2", "conv2d", strided, {"w": {(1, 0, 2, 2): NAN}}),
        ("-inf in x, stride 2", "conv2d", strided, {"x": {(0, 1, 5, 5): -INF}}),
        ("transposed: NaN weight, stride 2, output padding", "conv_transpose2d", deconv,
         {"w": {(0, 1, 0, 0): NAN}}),
        ("transposed: +inf in x, -inf output gradient", "conv_transpose2d", deconv,
         {"x": {(0, 0, 2, 1): INF}, "dy": {(0, 1, 0, 0): -INF}}),
    ]
    for kind in ("max", "avg"):
        p = pool2d_problem(kind, (1, 2, 5, 5), **pool)
        out += [(f"{kind} pool NaN in x", f"{kind}_pool2d", p, {"x": {(0, 0, 2, 2): NAN}}),
                (f"{kind} pool +inf and -inf in x", f"{kind}_pool2d", p,
                 {"x": {(0, 1, 0, 0): INF, (0, 1, 1, 1): -INF}}),
                (f"{kind} pool NaN output gradient", f"{kind}_pool2d", p,
                 {"dy": {(0, 0, 1, 1): NAN}})]
    for cell in ("rnn_tanh", "lstm", "gru"):
        p = RNNProblem(cell, 3, 2, 3, 2)
        out += [(f"{cell} NaN in x", cell, p, {"x": {(1, 0, 2): NAN}}),
                (f"{cell} NaN in w_hh", cell, p, {"w_hh": {(0, 1): NAN}}),
                (f"{cell} NaN output gradient", cell, p, {"dy": {(2, 1, 0): NAN}})]
    return out


def with_values(inputs, input_names, values) -> tuple:
    """The inputs with the case's `values` put in (copies of the arrays changed)."""
    out = list(inputs)
    for name, at in (values or {}).items():
        if name in input_names and out[input_names.index(name)] is not None:
            a = out[input_names.index(name)].copy()
            for index, v in at.items():
                a[index] = v
            out[input_names.index(name)] = a
    return tuple(out)


#: name -> function returning the cases. Other op families add their lists here.
CASE_LISTS = {
    "conv-edge": conv_edge_cases,
    "conv-random": random_conv_cases,
    "deconv-edge": deconv_edge_cases,
    "pool-edge": pool_edge_cases,
    "rnn-edge": rnn_edge_cases,
    "rnn-variants": rnn_variant_cases,
    "nonfinite": nonfinite_cases,
}


def case_list(name: str, seed: int = 0):
    """The named list; `seed` draws the random lists (conv-random)."""
    def make(key):
        return random_conv_cases(seed=seed) if key == "conv-random" else CASE_LISTS[key]()
    if name == "all":
        return [c for key in CASE_LISTS for c in make(key)]
    if name not in CASE_LISTS:
        raise UnknownNameError(f"unknown case list {name!r}; valid: all, {', '.join(CASE_LISTS)}")
    return make(name)
