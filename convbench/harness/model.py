"""The layers of a user's model as convbench problems: read from an ONNX graph (after ONNX's shape
inference) or recorded from a torch module through forward hooks.

Collected: Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LSTM, GRU
and RNN nodes (torch: Conv1d/2d, ConvTranspose1d/2d, MaxPool1d/2d, AvgPool1d/2d, adaptive
pooling to one output, LSTM, GRU, RNN modules). Identical problems are merged, with the number
of times the model runs them. Every other node is left out: the whole-model view of a report is
the sum over these layers only.

ONNX's attributes are translated where convbench can express them: pads (begin..., end...) as
((top, bottom), (left, right)), auto_pad SAME_UPPER / SAME_LOWER / VALID, ceil_mode,
count_include_pad, dilations, groups, ConvTranspose's output_padding and output_shape, and for
recurrent nodes the direction (forward, reverse, bidirectional: one problem per direction, the
reverse one with reverse=True), layout (batch first or not) and GRU's linear_before_reset. The
gate orders differ (ONNX: LSTM i o f c, GRU z r h; convbench as PyTorch: i f g o, r z n), which
changes where each gate's rows sit in the weights but not the problem; `onnx_rnn_weights`
reorders them. What convbench cannot express is an error that names the node and the attribute:
peepholes, activations other than the defaults, clip, input_forget, per-sequence lengths, 3-D
convolution and pooling, negative padding.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from convbench.ops import (
    ConvTranspose2dProblem,
    RNNProblem,
    conv1d_problem,
    conv2d_problem,
    pool1d_problem,
    pool2d_problem,
)
from convbench.ops.pool import same_pool_padding

#: ONNX ops collected, and the problem family each becomes
ONNX_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
            "GlobalMaxPool", "LSTM", "GRU", "RNN")
#: convbench gate g takes ONNX's gate ONNX_GATE_ORDER[cell][g] (row blocks of W, R, B)
ONNX_GATE_ORDER = {"lstm": (0, 2, 3, 1),      # i o f c -> i f g(c) o
                   "gru": (1, 0, 2),          # z r h -> r z n
                   "rnn_tanh": (0,)}
DEFAULT_ACTIVATIONS = {"lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh"),
                       "rnn_tanh": ("Tanh",)}


class ModelError(ValueError):
    """A model convbench cannot read, or a layer it cannot express; the message says which."""


def merge(items) -> list[tuple[str, object, int]]:
    """(name, problem) in model order -> (name of the first, problem, count), identical problems
    merged, names made unique."""
    counts = Counter(p for _, p in items)
    first, seen = {}, set()
    for name, p in items:
        if p not in first:
            unique, k = name, 2
            while unique in seen:
                unique, k = f"{name} ({k})", k + 1
            seen.add(unique)
            first[p] = unique
    return [(first[p], p, counts[p]) for p in first]


# --- ONNX -----------------------------------------------------------------------------------------
def _onnx():
    try:
        import onnx  # lazy: an optional extra (pip install "convbench[onnx]"), needed only here
    except ImportError as e:
        raise ModelError(f"reading an ONNX model needs the onnx package ({e}); "
                         f"pip install 'convbench[onnx]'") from None
    return onnx


def load_onnx(source):
    """An onnx.ModelProto from a path, bytes or a ModelProto; ModelError if it is not ONNX."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    try:
        model = onnx.load_model_from_string(source) if isinstance(source, bytes) else \
            onnx.load(str(source))
    except Exception as e:  # noqa: BLE001 - protobuf raises several kinds on a foreign file
        raise ModelError(f"{source}: not an ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise ModelError(f"{source}: not an ONNX model (no graph nodes; is it an ONNX file?)")
    return model


def _dims(type_proto):
    """A tensor type's dimensions: ints, or the dim_param name (or None) where not fixed."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ModelError(f"input shape {text!r} must be integers separated by commas "
                         f"(1,3,224,224)") from None
    if not dims or min(dims) < 1:
        raise ModelError(f"input shape {text!r} must be positive integers")
    return dims


def parse_input_shapes(specs) -> dict:
    """['x:1,3,224,224', '1,3,32,32'] -> {'x': (1, 3, 224, 224), None: (1, 3, 32, 32)}; None
    stands for the model's only input."""
    out = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition(":")
        out[name if sep else None] = _parse_shape(dims)
    return out


def _fix_inputs(model, batch: int | None, input_shapes: dict, source) -> None:
    """Set every graph input's shape: from input_shapes, else its own fixed dimensions with a
    dynamic first (batch) dimension set to `batch` (1 if None). ModelError where a dimension
    stays dynamic."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    unnamed = input_shapes.get(None)
    if unnamed is not None and len(inputs) != 1:
        raise ModelError(f"{source}: the model has {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}); name each in --input-shape "
                         f"(NAME:1,3,224,224)")
    unknown = set(input_shapes) - {None} - {i.name for i in inputs}
    if unknown:
        raise ModelError(f"{source}: --input-shape names {', '.join(sorted(unknown))}, not inputs "
                         f"of the model (inputs: {', '.join(i.name for i in inputs)})")
    for inp in inputs:
        given = input_shapes.get(inp.name, unnamed)
        dims = _dims(inp.type)
        if given is None:
            if dims is None:
                raise ModelError(f"{source}: input {inp.name!r} has no shape in the model; give "
                                 f"--input-shape {inp.name}:...")
            fixed = list(dims)
            if fixed and not isinstance(fixed[0], int):
                fixed[0] = batch or 1
            dynamic = [(k, d) for k, d in enumerate(fixed) if not isinstance(d, int)]
            if dynamic:
                what = ", ".join(f"axis {k} ({d or '?'})" for k, d in dynamic)
                hint = ",".join(str(d) if isinstance(d, int) else "N" for d in fixed)
                raise ModelError(f"{source}: input {inp.name!r} has dynamic dimensions {what}; "
                                 f"give its shape with --input-shape {inp.name}:{hint}")
        else:
            if dims is not None and len(dims) != len(given):
                raise ModelError(f"{source}: --input-shape for {inp.name!r} has {len(given)} "
                                 f"dimensions, the model's input has {len(dims)}")
            fixed = list(given)
        shape = inp.type.tensor_type.shape
        del shape.dim[:]
        for d in fixed:
            shape.dim.add().dim_value = int(d)


class _Node:
    """One ONNX node's attributes and input shapes, and errors that name it."""

    def __init__(self, onnx, node, shapes, index):
        self.node, self.op = node, node.op_type
        self.name = node.name or f"{node.op_type} #{index}"
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.shapes = shapes

    def error(self, what: str) -> ModelError:
        return ModelError(f"node {self.name!r} ({self.op}): {what}")

    def attr(self, key, default=None):
        v = self.attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    def has_input(self, k: int) -> bool:
        return len(self.node.input) > k and self.node.input[k] != ""

    def shape(self, k: int):
        name = self.node.input[k]
        dims = self.shapes.get(name)
        if dims is None or any(not isinstance(d, int) for d in dims):
            raise self.error(f"the shape of input {name!r} is unknown after shape inference "
                             f"({dims}); fix the model's input shapes with --input-shape")
        return tuple(dims)

    def ints(self, key, default):
        v = self.attr(key)
        return tuple(int(a) for a in v) if v is not None else default


def _spatial(node, x_shape, what):
    n = len(x_shape) - 2
    if n not in (1, 2):
        raise node.error(f"{n}-D {what} (input shape {x_shape}); convbench's are 1-D and 2-D")
    return n


def _pads(node, n, kernel, stride, dilation, sizes):
    """ONNX's pads / auto_pad -> per spatial axis (begin, end)."""
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return [same_pool_padding(sz, k, s, d, auto == "SAME_LOWER")
                for sz, k, s, d in zip(sizes, kernel, stride, dilation)]
    if auto == "VALID":
        return [(0, 0)] * n
    if auto != "NOTSET":
        raise node.error(f"auto_pad={auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    pads = node.ints("pads", (0,) * (2 * n))
    if len(pads) != 2 * n:
        raise node.error(f"pads={list(pads)} must have {2 * n} values")
    if min(pads) < 0:
        raise node.error(f"negative pads={list(pads)} (a crop) cannot be expressed")
    return [(pads[i], pads[n + i]) for i in range(n)]


def _as_2d(n, values):
    """1-D parameters become the width axis of a 2-D problem."""
    return tuple(values) if n == 2 else (1,) + tuple(values)


def _conv(node):
    x, w = node.shape(0), node.shape(1)
    n = _spatial(node, x, "convolution")
    kernel = node.ints("kernel_shape", tuple(w[2:]))
    stride = node.ints("strides", (1,) * n)
    dilation = node.ints("dilations", (1,) * n)
    group = int(node.attr("group", 1))
    pads = _pads(node, n, kernel, stride, dilation, x[2:])
    bias = node.has_input(2)
    try:
        if n == 1:
            return conv1d_problem(x, w, stride=stride[0], padding=pads[0], dilation=dilation[0],
                                  groups=group, bias=bias)
        return conv2d_problem(x, w, stride=stride, padding=tuple(pads), dilation=dilation,
                              groups=group, bias=bias)
    except ValueError as e:
        raise node.error(str(e)) from None


def _conv_transpose(node):
    x, w = node.shape(0), node.shape(1)
    n = _spatial(node, x, "transposed convolution")
    kernel = node.ints("kernel_shape", tuple(w[2:]))
    stride = node.ints("strides", (1,) * n)
    dilation = node.ints("dilations", (1,) * n)
    out_pad = node.ints("output_padding", (0,) * n)
    group = int(node.attr("group", 1))
    auto = node.attr("auto_pad", "NOTSET")
    out_shape = node.ints("output_shape", None)
    if out_shape is not None and len(out_shape) > n:
        out_shape = out_shape[-n:]
    if auto in ("SAME_UPPER", "SAME_LOWER") and out_shape is None:
        out_shape = tuple(sz * s for sz, s in zip(x[2:], stride))
    if out_shape is not None:
        # ONNX: total = stride*(in-1) + output_padding + extent - out, split by auto_pad
        pads = []
        for sz, k, s, d, o, out in zip(x[2:], kernel, stride, dilation, out_pad, out_shape):
            total = s * (sz - 1) + o + (k - 1) * d + 1 - out
            half = total // 2
            pads.append((half, total - half) if auto != "SAME_LOWER" else (total - half, half))
    elif auto == "VALID" or auto == "NOTSET":
        pads = _pads(node, n, kernel, stride, dilation, x[2:])
    else:
        raise node.error(f"auto_pad={auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    pads2, out2 = [], []
    for (begin, end), o in zip(pads, out_pad):
        if begin < 0:
            raise node.error(f"output_shape larger than the transposed convolution reaches at "
                             f"the start (padding {begin})")
        crop = end - o              # the end crop, less the output padding (ops.conv_transpose)
        pads2.append((begin, max(crop, 0)))
        out2.append(max(-crop, 0))
    try:
        return ConvTranspose2dProblem(
            int(x[0]), int(x[1]), *(_as_2d(n, x[2:])), int(w[1]) * group, *_as_2d(n, kernel),
            _as_2d(n, stride), tuple(pads2) if n == 2 else ((0, 0), pads2[0]),
            _as_2d(n, out2) if n == 2 else (0, out2[0]), _as_2d(n, dilation), group,
            node.has_input(2))
    except ValueError as e:
        raise node.error(str(e)) from None


def _pool(node):
    x = node.shape(0)
    n = _spatial(node, x, "pooling")
    kind = "max" if node.op in ("MaxPool", "GlobalMaxPool") else "avg"
    try:
        if node.op.startswith("Global"):
            return pool2d_problem(kind, x if n == 2 else (x[0], x[1], 1, x[2]),
                                  _as_2d(n, x[2:]))
        kernel = node.ints("kernel_shape", None)
        if kernel is None:
            raise node.error("kernel_shape is missing")
        stride = node.ints("strides", (1,) * n)            # ONNX's default stride is 1
        dilation = node.ints("dilations", (1,) * n)
        if kind == "avg" and any(d != 1 for d in dilation):
            raise node.error(f"dilations={list(dilation)}: average pooling with dilation")
        pads = _pads(node, n, kernel, stride, dilation, x[2:])
        ceil = bool(node.attr("ceil_mode", 0))
        cip = bool(node.attr("count_include_pad", 0))       # ONNX's default: not counted
        if n == 1:
            return pool1d_problem(kind, x, kernel[0], stride[0], pads[0], dilation[0], ceil, cip)
        return pool2d_problem(kind, x, kernel, stride, tuple(pads), dilation, ceil, cip)
    except ValueError as e:
        if isinstance(e, ModelError):
            raise
        raise node.error(str(e)) from None


def _rnn(node):
    cell = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn_tanh"}[node.op]
    x = node.shape(0)
    if len(x) != 3:
        raise node.error(f"input of shape {x} (expected 3-D)")
    layout = int(node.attr("layout", 0))
    T, N, I = (x[1], x[0], x[2]) if layout == 1 else x     # noqa: E741
    H = node.attr("hidden_size")
    if H is None:
        H = node.shape(2)[2] if node.has_input(2) else None
    if H is None:
        raise node.error("hidden_size is missing")
    direction = node.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.error(f"direction={direction!r}")
    D = 2 if direction == "bidirectional" else 1
    acts = node.attr("activations")
    if acts is not None:
        acts = tuple(a.decode() if isinstance(a, bytes) else a for a in acts)
        want = DEFAULT_ACTIVATIONS[cell] * D
        if tuple(a.lower() for a in acts) != tuple(a.lower() for a in want):
            raise node.error(f"activations={list(acts)}: convbench's cells use "
                             f"{list(DEFAULT_ACTIVATIONS[cell])} only (custom activations "
                             f"cannot be expressed)")
    for key in ("activation_alpha", "activation_beta"):
        if node.attr(key) is not None:
            raise node.error(f"{key}: activations with parameters cannot be expressed")
    if node.attr("clip") is not None:
        raise node.error(f"clip={node.attr('clip')}: cell clipping cannot be expressed")
    if cell == "lstm" and int(node.attr("input_forget", 0)):
        raise node.error("input_forget=1 (coupled input and forget gates) cannot be expressed")
    if cell == "lstm" and node.has_input(7):
        raise node.error("peepholes (input P) cannot be expressed")
    if node.has_input(4):
        raise node.error("per-sequence lengths (input sequence_lens) cannot be expressed: "
                         "convbench's layers run every sequence for all the steps")
    lbr = bool(node.attr("linear_before_reset", 0)) if cell == "gru" else True
    bias = node.has_input(3)
    dirs = [direction == "reverse"] if D == 1 else [False, True]
    try:
        return [RNNProblem(cell, int(T), int(N), int(I), int(H), bias, rev, lbr) for rev in dirs]
    except ValueError as e:
        raise node.error(str(e)) from None


def onnx_problems(source, batch: int | None = None, input_shapes=None):
    """(name, problem) for every collected node of an ONNX model, in graph order (a
    bidirectional recurrent node gives two). input_shapes: {input name or None: shape}."""
    onnx = _onnx()
    model = load_onnx(source)
    model = onnx.ModelProto.FromString(model.SerializeToString())      # ours to modify
    _fix_inputs(model, batch, input_shapes or {}, source)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # noqa: BLE001 - onnx's own inference errors
        raise ModelError(f"{source}: ONNX shape inference failed ({type(e).__name__}: "
                         f"{e})") from None
    g = model.graph
    shapes = {t.name: [int(d) for d in t.dims] for t in g.initializer}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dims = _dims(v.type)
        if dims is not None:
            shapes.setdefault(v.name, dims)
    items = []
    for index, raw in enumerate(g.node):
        if raw.op_type not in ONNX_OPS or raw.domain not in ("", "ai.onnx"):
            continue
        node = _Node(onnx, raw, shapes, index)
        if node.op == "Conv":
            items.append((node.name, _conv(node)))
        elif node.op == "ConvTranspose":
            items.append((node.name, _conv_transpose(node)))
        elif node.op in ("LSTM", "GRU", "RNN"):
            probs = _rnn(node)
            for k, p in enumerate(probs):
                suffix = "" if len(probs) == 1 else (" forward", " reverse")[k]
                items.append((node.name + suffix, p))
        else:
            items.append((node.name, _pool(node)))
    if not items:
        ops = Counter(n.op_type for n in g.node)
        raise ModelError(f"{source}: no layer convbench can time (it collects "
                         f"{', '.join(ONNX_OPS)}; the model has "
                         f"{', '.join(f'{k} x{v}' for k, v in ops.most_common(8))})")
    return items


def onnx_rnn_weights(W, R, B=None, cell: str = "lstm"):
    """An ONNX LSTM/GRU/RNN node's W (D, G*H, I), R (D, G*H, H) and B (D, 2*G*H) as convbench's
    (w_ih, w_hh, b_ih, b_hh) for each direction, gate blocks reordered to PyTorch's order."""
    G = len(ONNX_GATE_ORDER[cell])
    H = R.shape[2]

    def reorder(a):
        blocks = a.reshape(G, H, *a.shape[1:])
        return np.ascontiguousarray(blocks[list(ONNX_GATE_ORDER[cell])].reshape(a.shape))

    out = []
    for d in range(W.shape[0]):
        b_ih = b_hh = None
        if B is not None:
            b_ih, b_hh = reorder(B[d][:G * H]), reorder(B[d][G * H:])
        out.append((reorder(W[d]), reorder(R[d]), b_ih, b_hh))
    return out


# --- torch ----------------------------------------------------------------------------------------
def _torch_padding(module, n):
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ModelError(f"{module!r}: padding_mode={module.padding_mode!r} (convbench pads "
                         f"with zeros)")
    pad = module.padding
    if isinstance(pad, str):
        return pad
    return tuple(pad) if n == 2 else pad[0]


def _torch_problems(module, args, output):
    """The problems of one module call (empty for modules convbench does not collect)."""
    import torch  # lazy: from_torch is only for torch users

    nn = torch.nn
    x = args[0] if args else None
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise ModelError(f"{module!r}: a PackedSequence (per-sequence lengths) cannot be "
                         f"expressed")
    if not isinstance(x, torch.Tensor):
        return []
    shape = tuple(x.shape)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        n = 1 if isinstance(module, nn.Conv1d) else 2
        make = conv1d_problem if n == 1 else conv2d_problem
        kw = dict(stride=module.stride if n == 2 else module.stride[0],
                  dilation=module.dilation if n == 2 else module.dilation[0])
        return [make(shape, tuple(module.weight.shape), padding=_torch_padding(module, n),
                     groups=module.groups, bias=module.bias is not None, **kw)]
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        n = 1 if isinstance(module, nn.ConvTranspose1d) else 2
        out = tuple(output.shape[2:])
        pads, out_pads = [], []
        for axis in range(n):
            k = module.kernel_size[axis]
            s, d, p = module.stride[axis], module.dilation[axis], module.padding[axis]
            full = (shape[2 + axis] - 1) * s + d * (k - 1) + 1
            crop = full - p - out[axis]              # output_size= can change the far end
            pads.append((p, max(crop, 0)))
            out_pads.append(max(-crop, 0))
        w = tuple(module.weight.shape)
        if n == 1:
            return [ConvTranspose2dProblem(shape[0], shape[1], 1, shape[2], w[1] * module.groups,
                                           1, w[2], (1, module.stride[0]), ((0, 0), pads[0]),
                                           (0, out_pads[0]), (1, module.dilation[0]),
                                           module.groups, module.bias is not None)]
        return [ConvTranspose2dProblem(*shape, w[1] * module.groups, w[2], w[3], module.stride,
                                       tuple(pads), tuple(out_pads), module.dilation,
                                       module.groups, module.bias is not None)]
    pools = {nn.MaxPool1d: ("max", 1), nn.MaxPool2d: ("max", 2), nn.AvgPool1d: ("avg", 1),
             nn.AvgPool2d: ("avg", 2)}
    for cls, (kind, n) in pools.items():
        if isinstance(module, cls):
            if kind == "avg" and getattr(module, "divisor_override", None):
                raise ModelError(f"{module!r}: divisor_override cannot be expressed")
            kw = dict(ceil_mode=module.ceil_mode)
            if kind == "avg":
                kw["count_include_pad"] = module.count_include_pad
            else:
                kw["dilation"] = module.dilation
            if n == 1:
                one = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
                if kind == "max":
                    kw["dilation"] = one(kw["dilation"])
                return [pool1d_problem(kind, shape, one(module.kernel_size), one(module.stride),
                                       one(module.padding), **kw)]
            return [pool2d_problem(kind, shape, module.kernel_size, module.stride,
                                   module.padding, **kw)]
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        kind = "avg" if isinstance(module, nn.AdaptiveAvgPool2d) else "max"
        out = tuple(output.shape[2:])
        if any(size % o for size, o in zip(shape[2:], out)):
            raise ModelError(f"{module!r}: adaptive pooling of {shape[2:]} to {out} has windows "
                             f"of different sizes; convbench's pooling windows are uniform")
        k = tuple(size // o for size, o in zip(shape[2:], out))
        return [pool2d_problem(kind, shape, k, k)]
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        cell = ("lstm" if isinstance(module, nn.LSTM) else
                "gru" if isinstance(module, nn.GRU) else "rnn_tanh")
        if getattr(module, "proj_size", 0):
            raise ModelError(f"{module!r}: proj_size={module.proj_size} (projected LSTM) cannot "
                             f"be expressed")
        if cell == "rnn_tanh" and module.nonlinearity != "tanh":
            raise ModelError(f"{module!r}: nonlinearity={module.nonlinearity!r} (convbench's "
                             f"recurrent cell is tanh)")
        if len(shape) == 2:
            shape = (shape[0], 1, shape[1])            # unbatched input
        T, N = (shape[1], shape[0]) if module.batch_first else (shape[0], shape[1])
        out, D = [], 2 if module.bidirectional else 1
        for layer in range(module.num_layers):
            size = shape[2] if layer == 0 else module.hidden_size * D
            for d in range(D):
                out.append(RNNProblem(cell, T, N, size, module.hidden_size, module.bias,
                                      bool(d)))
        return out
    return []


def torch_problems(module, example_input):
    """(name, problem) for every collected submodule call when `module` runs on example_input
    (a tensor or a tuple of arguments), recorded through forward hooks. Calls of functions
    (torch.nn.functional.conv2d, ...) rather than modules are not seen."""
    import torch  # lazy: from_torch is only for torch users

    names = {m: name or type(m).__name__ for name, m in module.named_modules()}
    items, errors, handles = [], [], []

    def hook(mod, args, output):
        try:
            probs = _torch_problems(mod, args, output)
        except ModelError as e:
            errors.append(ModelError(f"module {names.get(mod, '?')!r}: {e}"))
            return
        except ValueError as e:
            errors.append(ModelError(f"module {names.get(mod, '?')!r} ({mod!r}): {e}"))
            return
        for k, p in enumerate(probs):
            suffix = ""
            if isinstance(p, RNNProblem) and len(probs) > 1:
                D = 2 if mod.bidirectional else 1
                suffix = f" l{k // D}" + (" reverse" if k % D else " forward")
            items.append((names.get(mod, type(mod).__name__) + suffix, p))

    for m in module.modules():
        handles.append(m.register_forward_hook(hook))
    try:
        # a tuple of arguments, but a PackedSequence (a named tuple) is one argument
        args = example_input if type(example_input) is tuple else (example_input,)
        with torch.no_grad():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    if errors:
        raise errors[0]
    if not items:
        raise ModelError(f"{type(module).__name__}: no layer convbench can time was called")
    return items
