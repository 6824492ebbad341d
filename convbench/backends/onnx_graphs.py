"""Single-node ONNX graphs for the inference runtimes that read ONNX (ONNX Runtime, OpenVINO).

Each op becomes a one-node graph built with `onnx.helper`, with every array an input: weights
too, since every backend here takes them per call (no runtime gets to prepack constant weights
that the others must transform on each call). A graph is built and compiled on a problem's first
call, so that cost lands in the first-call time, and kept per (op, problem, thread count).

convbench's semantics in ONNX's terms:
  - Conv: pads [top, left, bottom, right] take asymmetric padding as is; dilations, group.
  - ConvTranspose: the same pads, output_padding, dilations, group; weights (C, K/group, R, S)
    as PyTorch's.
  - MaxPool/AveragePool: pads [top, left, bottom, right] (any padding convbench takes),
    dilations (max), ceil_mode (both drop a last window that would start in the right or bottom
    padding, as PyTorch does), count_include_pad (the divisor of a window clipped by ceil_mode is
    checked by verification).
    Not PyTorch's: a NaN in a MaxPool window does not always win (ONNX Runtime: in some
    positions; OpenVINO: never), which finite inputs never show.
  - LSTM/GRU/RNN: ONNX orders the gates i, o, f, c (LSTM) and z, r, h (GRU) where PyTorch has i,
    f, g, o and r, z, n; the weights are reordered per call. PyTorch's GRU applies the reset
    gate after the recurrent product: linear_before_reset=1 (0 for the original GRU). B is
    [b_ih, b_hh] in one row; a reversed layer is direction="reverse".
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from convbench.backends.base import Backend
from convbench.backends.estimates import runtime_bytes
from convbench.backends.nonfinite import all_finite, exact
from convbench.lazy import LazyModule
from convbench.threads import get_threads

ONNX = LazyModule("onnx")
#: ONNX opset of the graphs: every attribute used here exists in it, and both runtimes read it.
OPSET = 17
#: PyTorch's gate blocks in ONNX's order (ONNX gate k is PyTorch's block ORDER[k]).
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,)}
ONNX_CELL = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}


def model(node, inputs: list[tuple[str, np.ndarray]], outputs: list[str]) -> bytes:
    """A serialised one-node float32 model: its inputs with their shapes, its outputs unshaped."""
    onnx = ONNX.load()
    helper, f32 = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "convbench", [helper.make_tensor_value_info(n, f32, list(a.shape))
                              for n, a in inputs],
        [helper.make_tensor_value_info(n, f32, None) for n in outputs])
    m = helper.make_model(graph, producer_name="convbench",
                          opset_imports=[helper.make_opsetid("", OPSET)])
    return m.SerializeToString()


def conv_node(p, with_bias: bool):
    (pt, pb), (pl, pr) = p.padding
    return ONNX.load().helper.make_node(
        "Conv", ["x", "w"] + (["b"] if with_bias else []), ["y"], kernel_shape=[p.R, p.S],
        strides=list(p.stride), pads=[pt, pl, pb, pr], dilations=list(p.dilation),
        group=p.groups)


def conv_transpose_node(p, with_bias: bool):
    (pt, pb), (pl, pr) = p.padding
    return ONNX.load().helper.make_node(
        "ConvTranspose", ["x", "w"] + (["b"] if with_bias else []), ["y"],
        kernel_shape=[p.R, p.S], strides=list(p.stride), pads=[pt, pl, pb, pr],
        output_padding=list(p.output_padding), dilations=list(p.dilation), group=p.groups)


def pool_node(p):
    (pt, pb), (pl, pr) = p.padding
    kw = dict(kernel_shape=list(p.kernel), strides=list(p.stride), pads=[pt, pl, pb, pr],
              ceil_mode=int(p.ceil_mode))
    if p.kind == "max":
        return ONNX.load().helper.make_node("MaxPool", ["x"], ["y"], dilations=list(p.dilation),
                                            **kw)
    return ONNX.load().helper.make_node("AveragePool", ["x"], ["y"],
                                        count_include_pad=int(p.count_include_pad), **kw)


def rnn_outputs(p) -> list[str]:
    return ["Y", "Y_h"] + (["Y_c"] if p.has_cell_state else [])


def rnn_node(p, with_bias: bool):
    inputs = ["X", "W", "R", "B" if with_bias else "", "", "initial_h"]
    kw = {"hidden_size": p.H, "direction": "reverse" if p.reverse else "forward"}
    if p.has_cell_state:
        inputs.append("initial_c")
    if p.cell == "gru":
        kw["linear_before_reset"] = int(p.linear_before_reset)
    return ONNX.load().helper.make_node(ONNX_CELL[p.cell], inputs, rnn_outputs(p), **kw)


POOLS = ("max_pool2d", "avg_pool2d")


def onnx_pooled_size(size: int, k: int, s: int, pads: tuple[int, int], d: int,
                     ceil_mode: bool) -> int:
    """ONNX's own output size of a pooling axis: floor or ceil, with no rule for a last window
    that would start in the padding (PyTorch drops it; ONNX Runtime follows PyTorch)."""
    span = size + pads[0] + pads[1] - d * (k - 1) - 1
    return (-(-span // s) if ceil_mode else span // s) + 1


def onnx_gates(p, a):
    """PyTorch's gate blocks (G*H, ...) in ONNX's order, with ONNX's leading direction axis."""
    blocks = a.reshape(p.gates, p.H, *a.shape[1:])[list(GATE_ORDER[p.cell])]
    return blocks.reshape(1, p.gates * p.H, *a.shape[1:])


class OnnxGraphBackend(Backend):
    """An inference runtime that runs single-node ONNX graphs. Subclasses say how a serialised
    model is compiled (`compile`); this class builds the graphs and keeps the compiled ones.
    Forward only: inference runtimes have no gradients."""

    dtypes = (np.float32,)
    peer = True
    #: Compiled graphs kept, least recently used dropped first beyond this many (a suite of a few
    #: hundred problems must not keep a few hundred sessions).
    max_compiled = 32

    def __init__(self):
        super().__init__()
        self._compiled: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def workspace_bytes(self, op, p, dtype):
        return runtime_bytes(op, p, dtype.itemsize)       # an estimate (backends.estimates)

    def peak_bytes(self, fn):
        """None: the runtime allocates through its own allocator, which no counter here sees
        (tracemalloc would see the NumPy copies alone and understate the peak)."""
        return None

    def compile(self, model_bytes: bytes, input_names: list[str], threads: int):
        """A function list-of-input-arrays -> list of fresh output arrays, for this model."""
        raise NotImplementedError

    def _run(self, key, node, inputs: list[tuple[str, np.ndarray]], outputs: list[str]):
        """Run the graph of (key, node) on the inputs, compiling it first if it is new here."""
        threads = get_threads()
        full = (key, threads)
        with self._lock:
            fn = self._compiled.get(full)
            if fn is not None:
                self._compiled.move_to_end(full)
        if fn is None:
            fn = self.compile(model(node(), inputs, outputs), [n for n, _ in inputs], threads)
            with self._lock:
                self._compiled[full] = fn
                while len(self._compiled) > self.max_compiled:
                    self._compiled.popitem(last=False)
        return fn([a for _, a in inputs])

    # the runtimes skip padded taps, where convbench's rule counts a product with zero: NaN and
    # infinite weights go through `exact` (backends.nonfinite)
    @exact("fwd", check=(1,))
    def conv2d_fwd(self, p, x, w, b):
        inputs = [("x", x), ("w", w)] + ([] if b is None else [("b", b)])
        (y,) = self._run(("conv2d_fwd", p, b is not None),
                         lambda: conv_node(p, b is not None), inputs, ["y"])
        return y

    @exact("bwd-data", check=(1,))        # a transposed convolution is an input gradient
    def conv_transpose2d_fwd(self, p, x, w, b):
        inputs = [("x", x), ("w", w)] + ([] if b is None else [("b", b)])
        (y,) = self._run(("conv_transpose2d_fwd", p, b is not None),
                         lambda: conv_transpose_node(p, b is not None), inputs, ["y"])
        return y

    def _pool_fwd(self, p, x):
        (y,) = self._run((f"{p.kind}_pool2d_fwd", p), lambda: pool_node(p), [("x", x)], ["y"])
        if p.kind == "max" and not all_finite(x) and np.isnan(x).any():
            # the runtimes' maximum passes over NaN, where convbench's (PyTorch's) takes it: the
            # same pooling of a NaN indicator says which windows hold one
            (hit,) = self._run((f"{p.kind}_pool2d_fwd", p), lambda: pool_node(p),
                               [("x", np.isnan(x).astype(x.dtype))], ["y"])
            y = np.array(y)
            y[hit > 0] = np.nan
        return y

    max_pool2d_fwd = avg_pool2d_fwd = _pool_fwd

    def _rnn_fwd(self, p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        with_bias = b_ih is not None or b_hh is not None
        inputs = [("X", x), ("W", onnx_gates(p, w_ih)), ("R", onnx_gates(p, w_hh))]
        if with_bias:
            zero = np.zeros(p.gates * p.H, dtype=x.dtype)
            inputs.append(("B", np.concatenate(
                [onnx_gates(p, b_ih if b_ih is not None else zero),
                 onnx_gates(p, b_hh if b_hh is not None else zero)], axis=1)))
        inputs.append(("initial_h", h0[None]))
        if p.has_cell_state:
            inputs.append(("initial_c", c0[None]))
        out = self._run((f"{p.cell}_fwd", p, with_bias), lambda: rnn_node(p, with_bias),
                        inputs, rnn_outputs(p))
        y, hT = out[0][:, 0], out[1][0]
        return y, hT, (out[2][0] if p.has_cell_state else None)

    lstm_fwd = gru_fwd = rnn_tanh_fwd = _rnn_fwd
