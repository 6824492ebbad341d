"""Layers with forward and backward on convbench's kernels, and softmax cross-entropy.

Each layer keeps what its backward needs from the last forward. `params` and `grads` are lists of
float32 arrays in the same order; optimisers update `params` in place.
"""
from __future__ import annotations

import numpy as np

from convbench.api import DEFAULT_POOL_BACKEND, bias_grad, execute
from convbench.autotune import GEMM_PROVIDERS, choose_gemm, gemm_call
from convbench.backends import get_backend
from convbench.ops import RNNProblem, conv2d_problem, get_op, pool2d_problem
from convbench.train.init import init_bias, init_weight


class Layer:
    def __init__(self):
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.need_input_grad = True

    def forward(self, x, training: bool):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def out_shape(self, shape: tuple) -> tuple:
        """Output shape of one sample (without the batch), or ValueError if it cannot fit."""
        return shape

    def backends(self) -> dict:
        """The backend chosen for each direction (layers that call kernels)."""
        return {}

    def __repr__(self):
        return type(self).__name__


class _KernelUser(Layer):
    """Resolves backend='auto' once per exact problem and direction, then calls it directly."""

    def __init__(self, backend: str):
        super().__init__()
        get_backend(backend)            # unknown names fail at construction, listing valid ones
        self.backend = backend
        self._resolved: dict = {}
        self.chosen: dict[str, str] = {}

    def _run(self, op_name, problem, inputs):
        name = self.backend
        if name != "auto" and not get_backend(name).implements(get_op(op_name)):
            # a fixed conv backend (im2col, fft) without pooling: pooling uses its own default
            name = DEFAULT_POOL_BACKEND
        if name == "auto":
            key = (op_name, problem)
            if key not in self._resolved:
                dtype = next(a.dtype for a in inputs if a is not None)
                self._resolved[key] = get_backend("auto").chosen(get_op(op_name), problem, dtype)
            name = self._resolved[key]
        self.chosen[op_name.split(":")[1]] = name
        return execute(op_name, name, problem, inputs)

    def backends(self):
        return dict(self.chosen)


class Conv2d(_KernelUser):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, backend="auto",
                 init="he_uniform", rng=None):
        super().__init__(backend)
        rng = rng or np.random.default_rng(0)
        self.cin, self.cout, self.k = cin, cout, kernel_size
        self.stride, self.padding = stride, padding
        self.w = init_weight((cout, cin, kernel_size, kernel_size), init, rng)
        self.b = init_bias(cin * kernel_size * kernel_size, cout, rng)
        self.params = [self.w, self.b]

    def _problem(self, x_shape):
        return conv2d_problem(x_shape, self.w.shape, stride=self.stride, padding=self.padding,
                              bias=True)

    def out_shape(self, shape):
        if shape[0] != self.cin:
            raise ValueError(f"{self!r} expects {self.cin} input channels, got {shape[0]}")
        p = self._problem((1,) + tuple(shape))
        return (self.cout, p.P, p.Q)

    def forward(self, x, training):
        self.x = np.ascontiguousarray(x)
        self.p = self._problem(x.shape)
        return self._run("conv2d:fwd", self.p, (self.x, self.w, self.b))

    def backward(self, dy):
        dy = np.ascontiguousarray(dy)
        self.grads = [self._run("conv2d:bwd-weights", self.p, (dy, self.x)), bias_grad(dy)]
        if self.need_input_grad:
            return self._run("conv2d:bwd-data", self.p, (dy, self.w))
        return None

    def __repr__(self):
        return (f"Conv2d({self.cin}->{self.cout}, {self.k}x{self.k}, stride {self.stride}, "
                f"pad {self.padding})")


class MaxPool2d(_KernelUser):
    def __init__(self, kernel_size, stride=None, padding=0, backend="auto"):
        super().__init__(backend)
        self.k, self.stride, self.padding = kernel_size, stride, padding

    def _problem(self, shape):
        return pool2d_problem("max", shape, self.k, self.stride, self.padding)

    def out_shape(self, shape):
        p = self._problem((1,) + tuple(shape))
        return (shape[0], p.P, p.Q)

    def forward(self, x, training):
        self.x = np.ascontiguousarray(x)
        self.p = self._problem(x.shape)
        return self._run("max_pool2d:fwd", self.p, (self.x,))

    def backward(self, dy):
        return self._run("max_pool2d:bwd", self.p, (np.ascontiguousarray(dy), self.x))

    def __repr__(self):
        return f"MaxPool2d({self.k})"


class AvgPool2d(MaxPool2d):
    def _problem(self, shape):
        return pool2d_problem("avg", shape, self.k, self.stride, self.padding)

    def forward(self, x, training):
        self.x = np.ascontiguousarray(x)
        self.p = self._problem(x.shape)
        return self._run("avg_pool2d:fwd", self.p, (self.x,))

    def backward(self, dy):
        return self._run("avg_pool2d:bwd", self.p, (np.ascontiguousarray(dy), self.x))

    def __repr__(self):
        return f"AvgPool2d({self.k})"


class GlobalAvgPool(Layer):
    """(N, C, H, W) -> (N, C): the mean of each plane."""

    def out_shape(self, shape):
        return (shape[0],)

    def forward(self, x, training):
        self.shape = x.shape
        return x.mean(axis=(2, 3), dtype=np.float64).astype(x.dtype)

    def backward(self, dy):
        N, C, H, W = self.shape
        return np.broadcast_to((dy / (H * W))[:, :, None, None], self.shape).astype(dy.dtype)


class Linear(Layer):
    """y = x w^T + b. Its three products (forward, weight and input gradients) run on NumPy's BLAS
    or convbench's own GEMM: gemm='auto' takes, per product shape, whichever autotune measured
    faster on this machine (autotune.choose_gemm, cached like the backends' choices)."""

    def __init__(self, fin, fout, init="he_uniform", rng=None, gemm="auto"):
        super().__init__()
        if gemm not in ("auto",) + GEMM_PROVIDERS:
            raise ValueError(f"gemm={gemm!r} must be one of auto, {', '.join(GEMM_PROVIDERS)}")
        rng = rng or np.random.default_rng(0)
        self.fin, self.fout = fin, fout
        self.gemm = gemm
        self.w = init_weight((fout, fin), init, rng)
        self.b = init_bias(fin, fout, rng)
        self.params = [self.w, self.b]
        self._providers: dict = {}

    def _mm(self, a, b, trans_a=False, trans_b=False):
        m = a.shape[1] if trans_a else a.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        k = a.shape[0] if trans_a else a.shape[1]
        provider = self.gemm
        if provider == "auto":
            key = (m, n, k, a.dtype, trans_a, trans_b)
            if key not in self._providers:
                self._providers[key] = choose_gemm(m, n, k, a.dtype, trans_a, trans_b)
            provider = self._providers[key]
        return gemm_call(provider, np.ascontiguousarray(a), np.ascontiguousarray(b),
                         np.empty((m, n), np.result_type(a, b)), trans_a, trans_b)

    def out_shape(self, shape):
        if shape != (self.fin,):
            raise ValueError(f"{self!r} expects {self.fin} features, got shape {shape}")
        return (self.fout,)

    def forward(self, x, training):
        self.x = x
        y = self._mm(x, self.w, trans_b=True)
        y += self.b
        return y

    def backward(self, dy):
        self.grads = [self._mm(dy, self.x, trans_a=True), dy.sum(axis=0)]
        return self._mm(dy, self.w) if self.need_input_grad else None

    def __repr__(self):
        return f"Linear({self.fin}->{self.fout})"


class ReLU(Layer):
    def forward(self, x, training):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability p and scale the rest by
    1/(1-p); the identity in evaluation."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p={p} must be in [0, 1)")
        self.p = p
        self.rng = rng or np.random.default_rng(0)

    def forward(self, x, training):
        if not training or self.p == 0:
            self.mask = None
            return x
        self.mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / np.float32(1 - self.p)
        return x * self.mask

    def backward(self, dy):
        return dy if self.mask is None else dy * self.mask

    def __repr__(self):
        return f"Dropout({self.p})"


class Flatten(Layer):
    def out_shape(self, shape):
        return (int(np.prod(shape)),)

    def forward(self, x, training):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.shape)


class ResidualBlock(Layer):
    """relu(conv3x3(relu(conv3x3(x))) + skip), skip = x or a strided 1x1 projection.

    drop_path (stochastic depth, Huang et al. 2016, per sample as timm's DropPath): in training
    each sample's residual branch is dropped with probability drop_path (the block passes only
    relu(skip)) and kept branches are scaled by 1/(1 - drop_path), so the expected input of the
    final ReLU is the same as in evaluation, where the branch is always kept and unscaled.
    """

    def __init__(self, cin, cout, stride=1, backend="auto", init="he_uniform", rng=None,
                 drop_path=0.0):
        super().__init__()
        if not 0 <= drop_path < 1:
            raise ValueError(f"drop_path={drop_path} must be in [0, 1)")
        rng = rng or np.random.default_rng(0)
        self.drop_path, self.rng, self.keep = drop_path, rng, None
        self.conv1 = Conv2d(cin, cout, 3, stride, 1, backend, init, rng)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(cout, cout, 3, 1, 1, backend, init, rng)
        self.proj = Conv2d(cin, cout, 1, stride, 0, backend, init, rng) \
            if (cin != cout or stride != 1) else None
        self.parts = [self.conv1, self.conv2] + ([self.proj] if self.proj else [])
        self.params = [q for part in self.parts for q in part.params]

    def out_shape(self, shape):
        out = self.conv2.out_shape(self.conv1.out_shape(shape))
        if self.proj is not None and self.proj.out_shape(shape) != out:
            raise ValueError(f"{self!r}: projection and main path disagree on {shape}")
        return out

    def forward(self, x, training):
        h = self.relu1.forward(self.conv1.forward(x, training), training)
        h = self.conv2.forward(h, training)
        skip = self.proj.forward(x, training) if self.proj else x
        self.keep = None
        if training and self.drop_path > 0:
            # one draw per sample: 0 drops the whole branch, else 1/(1-p) keeps its expectation
            kept = self.rng.random(x.shape[0]) >= self.drop_path
            self.keep = (kept / (1 - self.drop_path)).astype(h.dtype)[:, None, None, None]
            h = h * self.keep
        self.out = h + skip
        return np.maximum(self.out, 0)

    def backward(self, dy):
        d = dy * (self.out > 0)
        self.conv1.need_input_grad = self.need_input_grad
        dh = d if self.keep is None else d * self.keep
        dx = self.conv1.backward(self.relu1.backward(self.conv2.backward(dh)))
        if self.proj is not None:
            self.proj.need_input_grad = self.need_input_grad
            dskip = self.proj.backward(d)
        else:
            dskip = d
        self.grads = [g for part in self.parts for g in part.grads]
        return None if dx is None else dx + dskip

    def backends(self):
        return {f"{name}.{k}": v for name, part in (("conv1", self.conv1), ("conv2", self.conv2),
                                                   ("proj", self.proj)) if part
                for k, v in part.backends().items()}

    def __repr__(self):
        drop = f", drop_path {self.drop_path}" if self.drop_path else ""
        return (f"ResidualBlock({self.conv1.cin}->{self.conv1.cout}, "
                f"stride {self.conv1.stride}{drop})")


def softmax_cross_entropy(logits, labels):
    """(mean loss, d loss / d logits). logits (N, classes), labels (N,) ints."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = -np.log(np.maximum(prob[np.arange(n), labels], 1e-30)).mean()
    d = prob.copy()
    d[np.arange(n), labels] -= 1
    return float(loss), (d / n).astype(logits.dtype)


class _Recurrent(_KernelUser):
    """A stack of recurrent layers, torch.nn's interface and parameters: see LSTM."""

    cell = ""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, backend="auto", rng=None,
                 linear_before_reset=True):
        super().__init__(backend)
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), dropout
        self.bidirectional = bool(bidirectional)
        if not linear_before_reset and self.cell != "gru":
            raise ValueError(f"linear_before_reset=False is a GRU variant, not for {self.cell}")
        self.linear_before_reset = bool(linear_before_reset)
        self.rng = rng or np.random.default_rng(0)
        self.directions = 2 if self.bidirectional else 1
        G = RNNProblem(self.cell, 1, 1, 1, 1).gates
        k = 1.0 / np.sqrt(hidden_size)          # torch.nn's initialisation: U(-k, k) for all
        self.names, self.params = [], []
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else hidden_size * self.directions
            for d in range(self.directions):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes = [("weight_ih", (G * hidden_size, fan_in)),
                          ("weight_hh", (G * hidden_size, hidden_size))]
                if self.bias:
                    shapes += [("bias_ih", (G * hidden_size,)), ("bias_hh", (G * hidden_size,))]
                for name, shape in shapes:
                    self.names.append(name + sfx)
                    self.params.append(self.rng.uniform(-k, k, shape).astype(np.float32))
        self.grads = []
        self.final_state = None
        self.state_grad = None

    # --- torch.nn's parameter names -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Parameter name -> array (the arrays themselves), in torch.nn's names and order."""
        return dict(zip(self.names, self.params))

    def load_state_dict(self, state) -> None:
        """Copy parameters in from a mapping of torch.nn's names (NumPy arrays or CPU torch
        tensors, e.g. torch.nn.LSTM(...).state_dict()); every name must be present."""
        missing = [n for n in self.names if n not in state]
        extra = [n for n in state if n not in self.names]
        if missing or extra:
            raise ValueError(f"{self!r}: state dict does not match (missing: "
                             f"{', '.join(missing) or '-'}; unexpected: {', '.join(extra) or '-'})")
        for name, p in zip(self.names, self.params):
            v = state[name]
            v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            if v.shape != p.shape:
                raise ValueError(f"{name}: shape {v.shape} must be {p.shape}")
            p[...] = v

    def _weights(self, layer, d):
        per = 4 if self.bias else 2
        i = (layer * self.directions + d) * per
        w = self.params[i:i + per]
        return (w[0], w[1], w[2], w[3]) if self.bias else (w[0], w[1], None, None)

    def _problem(self, T, N, layer, d):
        size = self.input_size if layer == 0 else self.hidden_size * self.directions
        return RNNProblem(self.cell, T, N, size, self.hidden_size, self.bias, bool(d),
                          self.linear_before_reset)

    def out_shape(self, shape):
        """(T, input_size) -> (T, D * hidden_size) per sequence."""
        if len(shape) != 2 or shape[1] != self.input_size:
            raise ValueError(f"{self!r} expects (steps, {self.input_size}) per sequence, "
                             f"got {shape}")
        return (shape[0], self.directions * self.hidden_size)

    # --- forward and backward -------------------------------------------------------------------
    def _states(self, state, N, dtype):
        shape = (self.num_layers * self.directions, N, self.hidden_size)
        cells = self.cell == "lstm"
        if state is None:
            zeros = np.zeros(shape, dtype)
            return zeros, (zeros if cells else None)
        if cells:
            if not (isinstance(state, (tuple, list)) and len(state) == 2):
                raise ValueError("state must be a pair (h0, c0) for an LSTM")
            h0, c0 = state
        else:
            h0, c0 = state, None
        for name, a in (("h0", h0), ("c0", c0)):
            if a is not None and tuple(np.shape(a)) != shape:
                raise ValueError(f"{name}.shape={tuple(np.shape(a))} must be {shape}")
        return (np.ascontiguousarray(h0, dtype),
                None if c0 is None else np.ascontiguousarray(c0, dtype))

    def forward(self, x, training=False, state=None):
        """x (T, N, input_size), or (N, T, input_size) with batch_first; state h0 (or (h0, c0)
        for an LSTM), each (num_layers * directions, N, hidden_size), zeros if None -> the last
        layer's outputs (T, N, directions * hidden_size) (batch first likewise). The final
        states are kept in `final_state`, in torch.nn's shapes."""
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D, got shape {x.shape}")
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        x = np.ascontiguousarray(x)
        T, N, _ = x.shape
        h0, c0 = self._states(state, N, x.dtype)
        self.saved, self.masks = [], []
        hT, cT = np.empty_like(h0), None if c0 is None else np.empty_like(c0)
        out = x
        for layer in range(self.num_layers):
            if layer > 0 and training and self.dropout > 0:
                mask = ((self.rng.random(out.shape) >= self.dropout)
                        / np.float32(1 - self.dropout)).astype(out.dtype)
                out = out * mask
            else:
                mask = None
            self.masks.append(mask)
            ys = []
            for d in range(self.directions):
                j = layer * self.directions + d
                p = self._problem(T, N, layer, d)
                args = (out, h0[j], None if c0 is None else c0[j]) + self._weights(layer, d)
                y, hT[j], c = self._run(f"{self.cell}:fwd", p, args)
                if cT is not None:
                    cT[j] = c
                self.saved.append((p, args))
                ys.append(y)
            out = ys[0] if len(ys) == 1 else np.ascontiguousarray(np.concatenate(ys, axis=2))
        self.final_state = (hT, cT) if self.cell == "lstm" else hT
        return out.transpose(1, 0, 2) if self.batch_first else out

    def backward(self, dy, dstate=None):
        """dy w.r.t. forward's output (its shape), dstate w.r.t. its final state (h or (h, c),
        either may be None) -> dx; parameter gradients in `grads` (the order of `params`), the
        initial state's in `state_grad`."""
        dy = np.asarray(dy)
        if self.batch_first:
            dy = dy.transpose(1, 0, 2)
        dy = np.ascontiguousarray(dy)
        if self.cell == "lstm":
            dhT, dcT = (None, None) if dstate is None else dstate
        else:
            dhT, dcT = dstate, None
        H, D = self.hidden_size, self.directions
        grads = [None] * len(self.params)
        per = 4 if self.bias else 2
        dh0 = np.zeros((self.num_layers * D,) + dy.shape[1:2] + (H,), dy.dtype)
        dc0 = np.zeros_like(dh0) if self.cell == "lstm" else None
        for layer in reversed(range(self.num_layers)):
            dx_layer = None
            for d in range(D):
                j = layer * D + d
                p, args = self.saved[j]
                g = (np.ascontiguousarray(dy[:, :, d * H:(d + 1) * H]),
                     None if dhT is None else np.ascontiguousarray(dhT[j]),
                     None if dcT is None else np.ascontiguousarray(dcT[j]))
                dx, dh, dc, dwi, dwh, dbi, dbh = self._run(f"{self.cell}:bwd", p, g + args)
                dh0[j] = dh
                if dc0 is not None:
                    dc0[j] = dc
                grads[j * per:(j + 1) * per] = [dwi, dwh] + ([dbi, dbh] if self.bias else [])
                dx_layer = dx if dx_layer is None else dx_layer + dx
            if self.masks[layer] is not None:
                dx_layer = dx_layer * self.masks[layer]
            dy = dx_layer
        self.grads = grads
        self.state_grad = (dh0, dc0) if self.cell == "lstm" else dh0
        return dy.transpose(1, 0, 2) if self.batch_first else dy

    def __repr__(self):
        extra = "".join([f", num_layers={self.num_layers}" if self.num_layers > 1 else "",
                         ", bias=False" if not self.bias else "",
                         ", batch_first=True" if self.batch_first else "",
                         f", dropout={self.dropout}" if self.dropout else "",
                         ", bidirectional=True" if self.bidirectional else ""])
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"


class LSTM(_Recurrent):
    """torch.nn.LSTM on convbench's kernels: (input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False), with torch.nn's parameters by name and
    shape (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ..._reverse, ..._l1), so a
    torch.nn.LSTM(...).state_dict() loads as it is (load_state_dict). dropout applies to each
    layer's output but the last, in training. Each layer and direction runs the lstm op (the
    reverse direction with reverse=True) on `backend`."""

    cell = "lstm"


class GRU(_Recurrent):
    """torch.nn.GRU on convbench's kernels (see LSTM). linear_before_reset=False (a keyword
    torch.nn.GRU does not have) makes it the original GRU of Cho et al. (2014), as ONNX's
    default and Keras's reset_after=False; the parameters keep their names and shapes."""

    cell = "gru"


class RNN(_Recurrent):
    """torch.nn.RNN with its default tanh nonlinearity on convbench's kernels (see LSTM)."""

    cell = "rnn_tanh"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, nonlinearity="tanh", **kw):
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity={nonlinearity!r}: convbench's recurrent cell is "
                             f"tanh only")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, **kw)
