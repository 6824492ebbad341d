"""Optimisers with PyTorch's update rules and defaults (torch.optim), usable on their own:

    opt = Adam(params, lr=1e-3)      # params: a list of float32 arrays
    opt.step(grads)                  # updates the arrays in place

Weight decay is L2 added to the gradient, as torch.optim does (not AdamW's decoupled decay).
"""
from __future__ import annotations

import math

import numpy as np


def _check(name, value, low=0.0, strict=False):
    if (not isinstance(value, (int, float)) or not math.isfinite(value) or value < low
            or (strict and value == low)):
        raise ValueError(f"{name}={value!r} must be a finite number {'>' if strict else '>='} "
                         f"{low}")


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"params[{i}] must be a numpy.ndarray, got {type(p).__name__}")
        _check("lr", lr, 0.0)
        self.lr = float(lr)
        self.t = 0
        self.state: dict[str, list] = {}

    def _buffers(self, name, fill=0.0):
        if name not in self.state:
            self.state[name] = [np.full_like(p, fill) for p in self.params]
        return self.state[name]

    def step(self, grads) -> None:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}].shape={g.shape} must equal "
                                 f"params[{i}].shape={p.shape}")
            self._update(i, p, g.astype(p.dtype, copy=False))

    def _update(self, i, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        out = {"t": np.array(self.t), "lr": np.array(self.lr)}
        for name, bufs in self.state.items():
            for i, b in enumerate(bufs):
                out[f"{name}.{i}"] = b
        return out

    def load_state_dict(self, d) -> None:
        self.t = int(d["t"])
        self.lr = float(d["lr"])
        names = {k.rsplit(".", 1)[0] for k in d if "." in k}
        for name in names:
            self.state[name] = [np.array(d[f"{name}.{i}"]) for i in range(len(self.params))]


class SGD(Optimizer):
    """SGD with optional momentum (dampening) and Nesterov: buf = m*buf + (1-d)*g (buf = g on the
    first step); g <- g + m*buf if nesterov else buf; p -= lr * g."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        for n, v in (("momentum", momentum), ("dampening", dampening),
                     ("weight_decay", weight_decay)):
            _check(n, v)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.wd = weight_decay

    def _update(self, i, p, g):
        if self.wd:
            g = g + self.wd * p
        if self.momentum:
            buf = self._buffers("momentum_buffer")
            if self.t == 1:
                buf[i][...] = g
            else:
                buf[i] *= self.momentum
                buf[i] += (1 - self.dampening) * g
            g = g + self.momentum * buf[i] if self.nesterov else buf[i]
        p -= np.asarray(self.lr * g, dtype=p.dtype)


class Adagrad(Optimizer):
    """sum += g^2; p -= lr / (1 + (t-1)*lr_decay) * g / (sqrt(sum) + eps)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, lr)
        for n, v in (("lr_decay", lr_decay), ("weight_decay", weight_decay),
                     ("initial_accumulator_value", initial_accumulator_value), ("eps", eps)):
            _check(n, v)
        self.lr_decay, self.wd, self.eps = lr_decay, weight_decay, eps
        self._buffers("sum", initial_accumulator_value)

    def _update(self, i, p, g):
        if self.wd:
            g = g + self.wd * p
        clr = self.lr / (1 + (self.t - 1) * self.lr_decay)
        s = self.state["sum"][i]
        s += g * g
        p -= (clr * g / (np.sqrt(s) + self.eps)).astype(p.dtype)


class RMSprop(Optimizer):
    """v = alpha*v + (1-alpha)*g^2; avg = sqrt(v - gbar^2 if centered else v) + eps;
    with momentum: buf = m*buf + g/avg, p -= lr*buf; else p -= lr * g/avg."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, lr)
        for n, v in (("alpha", alpha), ("eps", eps), ("weight_decay", weight_decay),
                     ("momentum", momentum)):
            _check(n, v)
        self.alpha, self.eps, self.wd = alpha, eps, weight_decay
        self.momentum, self.centered = momentum, centered

    def _update(self, i, p, g):
        if self.wd:
            g = g + self.wd * p
        v = self._buffers("square_avg")[i]
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        if self.centered:
            ga = self._buffers("grad_avg")[i]
            ga *= self.alpha
            ga += (1 - self.alpha) * g
            avg = np.sqrt(v - ga * ga) + self.eps
        else:
            avg = np.sqrt(v) + self.eps
        if self.momentum > 0:
            buf = self._buffers("momentum_buffer")[i]
            buf *= self.momentum
            buf += g / avg
            p -= (self.lr * buf).astype(p.dtype)
        else:
            p -= (self.lr * g / avg).astype(p.dtype)


class Adam(Optimizer):
    """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) (amsgrad: the running max of v)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(params, lr)
        b1, b2 = betas
        for n, v in (("betas[0]", b1), ("betas[1]", b2)):
            _check(n, v)
            if v >= 1:
                raise ValueError(f"{n}={v} must be < 1")
        _check("eps", eps)
        _check("weight_decay", weight_decay)
        self.b1, self.b2, self.eps, self.wd, self.amsgrad = b1, b2, eps, weight_decay, amsgrad

    def _update(self, i, p, g):
        if self.wd:
            g = g + self.wd * p
        m = self._buffers("exp_avg")[i]
        v = self._buffers("exp_avg_sq")[i]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        if self.amsgrad:
            vmax = self._buffers("max_exp_avg_sq")[i]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        bc1 = 1 - self.b1 ** self.t
        bc2 = 1 - self.b2 ** self.t
        denom = np.sqrt(v) / math.sqrt(bc2) + self.eps
        p -= ((self.lr / bc1) * m / denom).astype(p.dtype)


OPTIMIZERS = {
    "sgd": lambda params, lr, momentum=0.0, weight_decay=0.0:
        SGD(params, lr, weight_decay=weight_decay),
    "momentum": lambda params, lr, momentum=0.9, weight_decay=0.0:
        SGD(params, lr, momentum, weight_decay=weight_decay),
    "nesterov": lambda params, lr, momentum=0.9, weight_decay=0.0:
        SGD(params, lr, momentum, nesterov=True, weight_decay=weight_decay),
    "adagrad": lambda params, lr, momentum=0.0, weight_decay=0.0:
        Adagrad(params, lr, weight_decay=weight_decay),
    "rmsprop": lambda params, lr, momentum=0.0, weight_decay=0.0:
        RMSprop(params, lr, momentum=momentum, weight_decay=weight_decay),
    "adam": lambda params, lr, momentum=0.0, weight_decay=0.0:
        Adam(params, lr, weight_decay=weight_decay),
}


def make_optimizer(name: str, params, lr: float, momentum: float | None = None,
                   weight_decay: float = 0.0) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} must be one of {', '.join(OPTIMIZERS)}")
    _check("lr", lr, 0.0, strict=True)
    kw = {"weight_decay": weight_decay}
    if momentum is not None:
        kw["momentum"] = momentum
    return OPTIMIZERS[name](params, lr, **kw)


class LRSchedule:
    """Learning rate per epoch: 'constant', 'step' (x gamma every step_size epochs), or 'cosine'
    (eta_min + (lr0 - eta_min) * (1 + cos(pi * epoch / T_max)) / 2)."""

    def __init__(self, kind: str, lr0: float, epochs: int, step_size: int = 10, gamma: float = 0.1,
                 eta_min: float = 0.0):
        if kind not in ("constant", "step", "cosine"):
            raise ValueError(f"schedule={kind!r} must be constant, step or cosine")
        self.kind, self.lr0, self.epochs = kind, lr0, max(epochs, 1)
        self.step_size, self.gamma, self.eta_min = step_size, gamma, eta_min

    def lr(self, epoch: int) -> float:
        if self.kind == "step":
            return self.lr0 * self.gamma ** (epoch // self.step_size)
        if self.kind == "cosine":
            cos = math.cos(math.pi * epoch / self.epochs)
            return self.eta_min + (self.lr0 - self.eta_min) * (1 + cos) / 2
        return self.lr0
