"""jax: JAX on XLA's CPU backend as a peer, forward and backward.

Convolution is `lax.conv_general_dilated`, pooling `lax.reduce_window`, the recurrent cells a
`lax.scan` over the steps (the input projections of all steps as one GEMM first); gradients are
`jax.vjp` of the same functions. Each function is jitted with the problem as a static argument,
so XLA compiles it on a problem's first call (the first-call time) and reuses it after.
Precision is HIGHEST (float32 throughout, never a bf16 pass).

Threads: XLA sizes its CPU thread pool once, when JAX's CPU backend starts, from the NPROC
environment variable (else the cores this process may use). convbench starts it with NPROC set to
its thread count (`--threads`); the pool cannot be resized after that, so in a process whose
thread count later changes, jax is UNAVAILABLE with that reason (run the other count in a new
process). If JAX was started before convbench first used it, the pool has whatever size it got
then. float32 only: float64 needs JAX's process-wide jax_enable_x64 switch.
Available with `pip install "convbench[jax]"`.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from functools import partial

import numpy as np

from convbench.backends.base import Backend, package_version
from convbench.backends.estimates import runtime_bytes
from convbench.backends.nonfinite import exact
from convbench.lazy import LazyModule
from convbench.ops.pool import avg_divisors
from convbench.threads import cpu_count, get_threads

JAX = LazyModule("jax")
#: XLA's CPU client reads it for the size of its thread pools (tsl's DefaultThreadPoolSize).
THREADS_VARIABLE = "NPROC"


@contextmanager
def _environment(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


class _Functions:
    """The jitted functions, made once JAX is imported; `p` (the problem) is static in each."""

    def __init__(self, jax):
        self.jax, self.jnp, self.lax = jax, jax.numpy, jax.lax
        jit = partial(jax.jit, static_argnums=0)
        self.conv_fwd = jit(self._conv_fwd)
        self.conv_bwd_data = jit(self._conv_bwd_data)
        self.conv_bwd_weights = jit(self._conv_bwd_weights)
        self.pool_fwd = jit(self._pool)
        self.pool_bwd = jit(self._pool_bwd)
        self.rnn_fwd = jit(self._rnn)
        self.rnn_bwd = jit(self._rnn_bwd)

    # --- convolution ------------------------------------------------------------------------------
    def _conv(self, p, x, w):
        lax = self.lax
        return lax.conv_general_dilated(
            x, w, window_strides=p.stride, padding=[tuple(q) for q in p.padding],
            rhs_dilation=p.dilation, dimension_numbers=("NCHW", "OIHW", "NCHW"),
            feature_group_count=p.groups, precision=lax.Precision.HIGHEST)

    def _conv_fwd(self, p, x, w, b):
        y = self._conv(p, x, w)
        return y if b is None else y + b[None, :, None, None]

    def _conv_bwd_data(self, p, dy, w):
        # the forward at a zero input is dead code once only the pullback is used
        _, pullback = self.jax.vjp(lambda x: self._conv(p, x, w), self.jnp.zeros(p.x_shape,
                                                                                  dy.dtype))
        return pullback(dy)[0]

    def _conv_bwd_weights(self, p, dy, x):
        _, pullback = self.jax.vjp(lambda w: self._conv(p, x, w), self.jnp.zeros(p.w_shape,
                                                                                  dy.dtype))
        return pullback(dy)[0]

    # --- pooling ----------------------------------------------------------------------------------
    def _pool(self, p, x):
        """reduce_window pads with the reduction's identity (-inf for max, 0 for the sum). The
        far side gets what ceil_mode's last window needs, at least nothing, which with PyTorch's
        rule for that window yields exactly P x Q outputs."""
        lax = self.lax
        pads = [(0, 0), (0, 0)]
        for k, s, (before, _), d, size, out in zip(p.kernel, p.stride, p.padding, p.dilation,
                                                   (p.H, p.W), (p.P, p.Q)):
            pads.append((before, max(0, (out - 1) * s + d * (k - 1) + 1 - size - before)))
        window, strides = (1, 1, *p.kernel), (1, 1, *p.stride)
        if p.kind == "max":
            return lax.reduce_window(x, -np.inf, lax.max, window, strides, pads,
                                     window_dilation=(1, 1, *p.dilation))
        total = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
        return total / avg_divisors(p).astype(np.float32)

    def _pool_bwd(self, p, dy, x):
        _, pullback = self.jax.vjp(lambda a: self._pool(p, a), x)
        return pullback(dy)[0]

    # --- recurrent cells --------------------------------------------------------------------------
    def _rnn(self, p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        jnp, lax, jax = self.jnp, self.lax, self.jax
        H, hi = p.H, lax.Precision.HIGHEST
        gi_all = jnp.matmul(x, w_ih.T, precision=hi)          # (T, N, G*H), one GEMM
        if b_ih is not None:
            gi_all = gi_all + b_ih

        def step(carry, gi):
            h, c = carry
            gh = jnp.matmul(h, w_hh.T, precision=hi)
            if b_hh is not None:
                gh = gh + b_hh
            if p.cell == "rnn_tanh":
                h = jnp.tanh(gi + gh)
            elif p.cell == "lstm":
                a = gi + gh
                i, f = jax.nn.sigmoid(a[:, :H]), jax.nn.sigmoid(a[:, H:2 * H])
                g, o = jnp.tanh(a[:, 2 * H:3 * H]), jax.nn.sigmoid(a[:, 3 * H:])
                c = f * c + i * g
                h = o * jnp.tanh(c)
            else:
                r = jax.nn.sigmoid(gi[:, :H] + gh[:, :H])
                z = jax.nn.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                if p.linear_before_reset:       # PyTorch's: r scales the recurrent product
                    hn = r * gh[:, 2 * H:]
                else:                           # the original GRU: r scales h before it
                    hn = jnp.matmul(r * h, w_hh[2 * H:].T, precision=hi)
                    if b_hh is not None:
                        hn = hn + b_hh[2 * H:]
                n = jnp.tanh(gi[:, 2 * H:] + hn)
                h = (1 - z) * n + z * h
            return (h, c), h

        # reverse: the last step first; y stays in time order (y[t] has seen x[t:])
        (hT, cT), y = lax.scan(step, (h0, c0), gi_all, reverse=p.reverse)
        return y, hT, cT

    def _rnn_bwd(self, p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        primals = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        (y, hT, cT), pullback = self.jax.vjp(lambda *a: self._rnn(p, *a), *primals)
        zeros = self.jnp.zeros_like
        cotangents = (dy, zeros(hT) if dhT is None else dhT,
                      None if cT is None else (zeros(cT) if dcT is None else dcT))
        return pullback(cotangents)


class JaxBackend(Backend):
    name = "jax"
    description = "JAX/XLA on the CPU: conv_general_dilated, reduce_window, scan, jitted: a peer"
    dtypes = (np.float32,)
    peer = True

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._functions: _Functions | None = None
        self._cpu = None
        #: the size of XLA's thread pool in this process, once JAX's CPU backend has started
        self.xla_threads: int | None = None

    def _start(self) -> _Functions:
        """Import JAX and start its CPU backend with convbench's thread count (see the module
        docstring); the jitted functions."""
        if self._functions is None:
            with self._lock:
                if self._functions is None:
                    already = "jax" in sys.modules and _backends_started(sys.modules["jax"])
                    threads = get_threads()
                    with _environment(THREADS_VARIABLE, str(threads)):
                        jax = JAX.load()
                        self._cpu = jax.devices("cpu")[0]    # starts the backend: pool sized
                    if already:     # started by someone else: NPROC as it was, else the cores
                        env = os.environ.get(THREADS_VARIABLE, "")
                        threads = int(env) if env.isdigit() and int(env) > 0 else cpu_count()
                    self.xla_threads = threads
                    self._functions = _Functions(jax)
        return self._functions

    def unavailable_reason(self):
        try:
            self._start()
        except ImportError as e:
            return f"jax is not installed ({e}); pip install 'convbench[jax]'"
        if self.xla_threads != get_threads():
            return (f"XLA's CPU thread pool has {self.xla_threads} threads in this process (sized "
                    f"when JAX started) and cannot be resized to {get_threads()}: run with "
                    f"--threads {self.xla_threads}, or in a new process")
        return None

    def unsupported(self, op, problem, dtype):
        if op.family == "max_pool2d" and op.direction == "bwd" and problem.dilation != (1, 1):
            return (f"dilation={problem.dilation}: JAX has no gradient for a max-pooling window "
                    "with dilation (select_and_gather)")
        return None

    def workspace_bytes(self, op, p, dtype):
        return runtime_bytes(op, p, dtype.itemsize)       # an estimate (backends.estimates)

    def peak_bytes(self, fn):
        """None: the runtime allocates through its own allocator, which no counter here sees
        (tracemalloc would see the NumPy copies alone and understate the peak)."""
        return None

    def _call(self, fn, p, *arrays):
        f = self._start()
        put = f.jax.device_put
        out = fn(p, *(None if a is None else put(a, self._cpu) for a in arrays))
        if isinstance(out, tuple):
            return tuple(None if o is None else np.asarray(o) for o in out)
        return np.asarray(out)

    def conv2d_fwd(self, p, x, w, b):
        return self._call(self._start().conv_fwd, p, x, w, b)

    # XLA's input gradient multiplies the zeros between and around a strided output gradient by
    # the weights: NaN and infinite weights go through `exact` (backends.nonfinite)
    @exact("bwd-data", check=(1,))
    def conv2d_bwd_data(self, p, dy, w):
        return self._call(self._start().conv_bwd_data, p, dy, w)

    def conv2d_bwd_weights(self, p, dy, x):
        return self._call(self._start().conv_bwd_weights, p, dy, x)

    def _pool_fwd(self, p, x):
        return self._call(self._start().pool_fwd, p, x)

    def _pool_bwd(self, p, dy, x):
        return self._call(self._start().pool_bwd, p, dy, x)

    max_pool2d_fwd = avg_pool2d_fwd = _pool_fwd
    max_pool2d_bwd = avg_pool2d_bwd = _pool_bwd

    def _rnn_fwd(self, p, *inputs):
        return self._call(self._start().rnn_fwd, p, *inputs)

    def _rnn_bwd(self, p, *inputs):
        return self._call(self._start().rnn_bwd, p, *inputs)

    lstm_fwd = gru_fwd = rnn_tanh_fwd = _rnn_fwd
    lstm_bwd = gru_bwd = rnn_tanh_bwd = _rnn_bwd

    def record(self):
        return {"version": package_version("jax"), "jaxlib": package_version("jaxlib"),
                "xla_threads": self.xla_threads if self.xla_threads is not None
                else get_threads(), "started": self.xla_threads is not None,
                "precision": "HIGHEST (float32)"}


def _backends_started(jax) -> bool:
    """Whether JAX's backends are running already (its private xla_bridge says; when it cannot,
    assume they are: the pool size is then derived, not set)."""
    bridge = getattr(getattr(jax, "_src", None), "xla_bridge", None)
    started = getattr(bridge, "backends_are_initialized", None)
    return started() if callable(started) else True
