"""Layers with forward and backward on convbench's kernels, and softmax cross-entropy.

Each layer keeps what its backward needs from the last forward. `params` and `grads` are lists of
float32 arrays in the same order; optimisers update `params` in place.
"""
from __future__ import annotations

import numpy as np

from convbench.api import DEFAULT_POOL_BACKEND, bias_grad, execute
from convbench.backends import get_backend
from convbench.ops import conv2d_problem, get_op, pool2d_problem
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
    def __init__(self, fin, fout, init="he_uniform", rng=None):
        super().__init__()
        rng = rng or np.random.default_rng(0)
        self.fin, self.fout = fin, fout
        self.w = init_weight((fout, fin), init, rng)
        self.b = init_bias(fin, fout, rng)
        self.params = [self.w, self.b]

    def out_shape(self, shape):
        if shape != (self.fin,):
            raise ValueError(f"{self!r} expects {self.fin} features, got shape {shape}")
        return (self.fout,)

    def forward(self, x, training):
        self.x = x
        return x @ self.w.T + self.b

    def backward(self, dy):
        self.grads = [dy.T @ self.x, dy.sum(axis=0)]
        return dy @ self.w if self.need_input_grad else None

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
