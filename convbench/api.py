"""The public functional interface, in the style of torch.nn.functional, with a `backend=`.

Each function validates its arguments (errors name the argument and the value), builds the
problem, asks the backend whether it can run it (UnsupportedError with a reason if not), and runs
it. NumPy arrays in, NumPy arrays out, in the input's dtype.
"""
from __future__ import annotations

import numpy as np

from convbench.backends import get_backend
from convbench.memory import check_limit
from convbench.memory import workspace_limit as limit_scope
from convbench.ops import (
    RNNProblem,
    conv1d_problem,
    conv2d_problem,
    conv_transpose1d_problem,
    conv_transpose2d_problem,
    get_op,
    pool1d_problem,
    pool2d_problem,
)

#: The backend used when none is named: BLAS-backed, no compilation, every conv parameter.
DEFAULT_BACKEND = "im2col"
#: Pooling and recurrent cells default to vectorised NumPy (no compilation).
DEFAULT_POOL_BACKEND = "numpy"
DEFAULT_RNN_BACKEND = "numpy"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(name: str, a, layout: str | None = None, dtype=None) -> np.ndarray:
    """a as a C-contiguous ndarray, after checking its type, its number of dimensions against
    `layout` (like "N, C, H, W") and its dtype (no silent casts)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if layout is not None and a.ndim != layout.count(",") + 1:
        raise ValueError(f"{name} must be {layout.count(',') + 1}-D ({layout}), "
                         f"got shape {a.shape}")
    if dtype is None:
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}.dtype={a.dtype} must be float32 or float64")
    elif a.dtype != dtype:
        raise TypeError(f"{name}.dtype={a.dtype} must match the input dtype {np.dtype(dtype)}")
    return np.ascontiguousarray(a)


def check_shape(name: str, a: np.ndarray, shape) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}.shape={tuple(a.shape)} must be {tuple(shape)}")


def execute(op_name: str, backend: str, problem, inputs, workspace_limit: int | None = None):
    """Run one op on one backend with host arrays, returning host arrays. workspace_limit: for
    backend="auto" only, the most scratch bytes its choice may need in this call (None: the limit
    set by convbench.set_workspace_limit, if any)."""
    if workspace_limit is not None:
        check_limit(workspace_limit)
        if backend != "auto":
            raise ValueError(f"workspace_limit={workspace_limit!r} applies to backend='auto' "
                             f"only, not backend={backend!r}")
        with limit_scope(workspace_limit):
            return execute(op_name, backend, problem, inputs)
    op = get_op(op_name)
    b = get_backend(backend)
    dtype = next(a.dtype for a in inputs if a is not None)
    b.check(op, problem, dtype)
    dev = [None if a is None else b.to_device(a) for a in inputs]
    out = b.run(op, problem, *dev)
    if isinstance(out, tuple):
        return tuple(None if o is None else _own(b.to_host(o)) for o in out)
    return _own(b.to_host(out))


def _own(a) -> np.ndarray:
    """An array the caller may write to: a backend may hand back a read-only view of its own
    buffers (JAX does), which the harness times as is but a caller must not be given."""
    a = np.asarray(a)
    return a if a.flags.writeable else a.copy()


def bias_grad(dy: np.ndarray) -> np.ndarray:
    """db = dy summed over batch and positions, accumulated in float64, in dy's dtype."""
    return dy.sum(axis=(0, 2, 3), dtype=np.float64).astype(dy.dtype)


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, backend=DEFAULT_BACKEND,
           workspace_limit=None):
    """2D cross-correlation, PyTorch's conv2d.

    x (N, C, H, W), w (K, C/groups, R, S), bias (K,) or None -> (N, K, P, Q), where
    P = (H + pad_top + pad_bottom - dilation*(R-1) - 1) // stride + 1 (Q likewise).
    padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same".
    workspace_limit: with backend="auto" only, the most scratch bytes the backend it chooses may
    need (Backend.workspace_bytes): the fastest verified one that fits runs. None: the limit of
    convbench.set_workspace_limit, if any. Every convolution function takes it.
    """
    x = check_array("x", x, "N, C, H, W")
    w = check_array("w", w, "K, C/groups, R, S", x.dtype)
    p = conv2d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups, bias=bias is not None)
    if bias is not None:
        bias = check_array("bias", bias, "K", x.dtype)
        check_shape("bias", bias, (p.K,))
    return execute("conv2d:fwd", backend, p, (x, w, bias), workspace_limit)


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1,
                    backend=DEFAULT_BACKEND, workspace_limit=None):
    """Gradients of conv2d: dy (N, K, P, Q), x, w as in the forward -> (dx, dw, db).

    dx has x's shape, dw has w's shape, db (K,) is dy summed over batch and positions.
    """
    x = check_array("x", x, "N, C, H, W")
    w = check_array("w", w, "K, C/groups, R, S", x.dtype)
    dy = check_array("dy", dy, "N, K, P, Q", x.dtype)
    p = conv2d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups)
    check_shape("dy", dy, p.y_shape)
    dx = execute("conv2d:bwd-data", backend, p, (dy, w), workspace_limit)
    dw = execute("conv2d:bwd-weights", backend, p, (dy, x), workspace_limit)
    return dx, dw, bias_grad(dy)


def conv1d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, backend=DEFAULT_BACKEND,
           workspace_limit=None):
    """1D cross-correlation, PyTorch's conv1d: x (N, C, L), w (K, C/groups, S) -> (N, K, L').

    padding: int, (left, right), "valid", "same", or "causal" (dilation*(S-1) on the left only,
    so output t sees inputs up to t: the temporal convolutional network's convolution).
    """
    x = check_array("x", x, "N, C, L")
    w = check_array("w", w, "K, C/groups, S", x.dtype)
    p = conv1d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups, bias=bias is not None)
    if bias is not None:
        bias = check_array("bias", bias, "K", x.dtype)
        check_shape("bias", bias, (p.K,))
    y = execute("conv2d:fwd", backend, p, (x[:, :, None, :], w[:, :, None, :], bias),
                workspace_limit)
    return y[:, :, 0, :]


def conv1d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1,
                    backend=DEFAULT_BACKEND, workspace_limit=None):
    """Gradients of conv1d: dy (N, K, L'), x (N, C, L), w (K, C/groups, S) -> (dx, dw, db)."""
    x = check_array("x", x, "N, C, L")
    w = check_array("w", w, "K, C/groups, S", x.dtype)
    dy = check_array("dy", dy, "N, K, L'", x.dtype)
    p = conv1d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups)
    check_shape("dy", dy, (p.N, p.K, p.Q))
    dy4 = dy[:, :, None, :]
    dx = execute("conv2d:bwd-data", backend, p, (dy4, w[:, :, None, :]), workspace_limit)
    dw = execute("conv2d:bwd-weights", backend, p, (dy4, x[:, :, None, :]), workspace_limit)
    return dx[:, :, 0, :], dw[:, :, 0, :], bias_grad(dy4)


# --- transposed convolution ----------------------------------------------------------------------
def conv_transpose2d(x, w, bias=None, *, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, backend=DEFAULT_BACKEND, workspace_limit=None):
    """PyTorch's conv_transpose2d (the input gradient of a convolution; "deconvolution").

    x (N, C, H, W), w (C, K/groups, R, S), bias (K,) or None -> (N, K, P, Q), where
    P = (H - 1)*stride - pad_top - pad_bottom + dilation*(R - 1) + output_padding + 1 (Q likewise).
    padding: int, (ph, pw) or ((top, bottom), (left, right)); output_padding < stride or dilation.
    """
    x = check_array("x", x, "N, C, H, W")
    w = check_array("w", w, "C, K/groups, R, S", x.dtype)
    p = conv_transpose2d_problem(x.shape, w.shape, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation, groups=groups,
                                 bias=bias is not None)
    if bias is not None:
        bias = check_array("bias", bias, "K", x.dtype)
        check_shape("bias", bias, (p.K,))
    return execute("conv_transpose2d:fwd", backend, p, (x, w, bias), workspace_limit)


def conv_transpose2d_backward(dy, x, w, *, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, backend=DEFAULT_BACKEND, workspace_limit=None):
    """Gradients of conv_transpose2d: dy (N, K, P, Q), x, w as in the forward -> (dx, dw, db)."""
    x = check_array("x", x, "N, C, H, W")
    w = check_array("w", w, "C, K/groups, R, S", x.dtype)
    dy = check_array("dy", dy, "N, K, P, Q", x.dtype)
    p = conv_transpose2d_problem(x.shape, w.shape, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation, groups=groups)
    check_shape("dy", dy, p.y_shape)
    dx = execute("conv_transpose2d:bwd-data", backend, p, (dy, w), workspace_limit)
    dw = execute("conv_transpose2d:bwd-weights", backend, p, (dy, x), workspace_limit)
    return dx, dw, bias_grad(dy)


def conv_transpose1d(x, w, bias=None, *, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, backend=DEFAULT_BACKEND, workspace_limit=None):
    """PyTorch's conv_transpose1d: x (N, C, L), w (C, K/groups, S) -> (N, K, L'); padding an int
    or (left, right)."""
    x = check_array("x", x, "N, C, L")
    w = check_array("w", w, "C, K/groups, S", x.dtype)
    p = conv_transpose1d_problem(x.shape, w.shape, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation, groups=groups,
                                 bias=bias is not None)
    if bias is not None:
        bias = check_array("bias", bias, "K", x.dtype)
        check_shape("bias", bias, (p.K,))
    y = execute("conv_transpose2d:fwd", backend, p, (x[:, :, None, :], w[:, :, None, :], bias),
                workspace_limit)
    return y[:, :, 0, :]


def conv_transpose1d_backward(dy, x, w, *, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, backend=DEFAULT_BACKEND, workspace_limit=None):
    """Gradients of conv_transpose1d: dy (N, K, L'), x (N, C, L), w (C, K/groups, S)
    -> (dx, dw, db)."""
    x = check_array("x", x, "N, C, L")
    w = check_array("w", w, "C, K/groups, S", x.dtype)
    dy = check_array("dy", dy, "N, K, L'", x.dtype)
    p = conv_transpose1d_problem(x.shape, w.shape, stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation, groups=groups)
    check_shape("dy", dy, (p.N, p.K, p.Q))
    dy4 = dy[:, :, None, :]
    dx = execute("conv_transpose2d:bwd-data", backend, p, (dy4, w[:, :, None, :]), workspace_limit)
    dw = execute("conv_transpose2d:bwd-weights", backend, p, (dy4, x[:, :, None, :]),
                 workspace_limit)
    return dx[:, :, 0, :], dw[:, :, 0, :], bias_grad(dy4)


# --- pooling --------------------------------------------------------------------------------------
POOL_PADDING = ("padding: int, (ph, pw), ((top, bottom), (left, right)), 'valid', 'same' "
                "(TensorFlow's/ONNX's SAME_UPPER) or 'same_lower'; each side up to the kernel's "
                "extent - 1")


def _pool(kind, x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad):
    x = check_array("x", x, "N, C, H, W")
    return x, pool2d_problem(kind, x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                             count_include_pad)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               backend=DEFAULT_POOL_BACKEND):
    """PyTorch's max_pool2d: x (N, C, H, W) -> (N, C, P, Q); padding is minus infinity; stride
    defaults to kernel_size. A window lying entirely in the padding is an error."""
    x, p = _pool("max", x, kernel_size, stride, padding, dilation, ceil_mode, True)
    return execute("max_pool2d:fwd", backend, p, (x,))


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        backend=DEFAULT_POOL_BACKEND):
    """Gradient of max_pool2d w.r.t. x: each dy goes to its window's arg-max, the first maximum
    in row-major window order (PyTorch's rule; a NaN takes it). dy (N, C, P, Q) -> (N, C, H, W)."""
    x, p = _pool("max", x, kernel_size, stride, padding, dilation, ceil_mode, True)
    dy = check_array("dy", dy, "N, C, P, Q", x.dtype)
    check_shape("dy", dy, p.y_shape)
    return execute("max_pool2d:bwd", backend, p, (dy, x))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               backend=DEFAULT_POOL_BACKEND):
    """PyTorch's avg_pool2d: x (N, C, H, W) -> (N, C, P, Q); zero padding, counted in the divisor
    when count_include_pad."""
    x, p = _pool("avg", x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    return execute("avg_pool2d:fwd", backend, p, (x,))


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, backend=DEFAULT_POOL_BACKEND):
    """Gradient of avg_pool2d w.r.t. x: dy (N, C, P, Q) -> (N, C, H, W)."""
    x, p = _pool("avg", x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    dy = check_array("dy", dy, "N, C, P, Q", x.dtype)
    check_shape("dy", dy, p.y_shape)
    return execute("avg_pool2d:bwd", backend, p, (dy, x))


for _f in (max_pool2d, max_pool2d_backward, avg_pool2d, avg_pool2d_backward):
    _f.__doc__ += "\n\n    " + POOL_PADDING + "."


def _pool1d(kind, x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad):
    x = check_array("x", x, "N, C, L")
    return x, pool1d_problem(kind, x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                             count_include_pad)


def _pool1d_grads(dy, x, p):
    """dy and x of a 1D pooling as the 2D problem's (N, C, 1, L') and (N, C, 1, L)."""
    dy = check_array("dy", dy, "N, C, L'", x.dtype)
    check_shape("dy", dy, (p.N, p.C, p.Q))
    return dy[:, :, None, :], x[:, :, None, :]


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               backend=DEFAULT_POOL_BACKEND):
    """PyTorch's max_pool1d: x (N, C, L) -> (N, C, L'). padding: int, (left, right), 'valid',
    'same' or 'same_lower'; stride defaults to kernel_size."""
    x, p = _pool1d("max", x, kernel_size, stride, padding, dilation, ceil_mode, True)
    return execute("max_pool2d:fwd", backend, p, (x[:, :, None, :],))[:, :, 0, :]


def max_pool1d_backward(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        backend=DEFAULT_POOL_BACKEND):
    """Gradient of max_pool1d w.r.t. x: dy (N, C, L') -> (N, C, L)."""
    x, p = _pool1d("max", x, kernel_size, stride, padding, dilation, ceil_mode, True)
    return execute("max_pool2d:bwd", backend, p, _pool1d_grads(dy, x, p))[:, :, 0, :]


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               backend=DEFAULT_POOL_BACKEND):
    """PyTorch's avg_pool1d: x (N, C, L) -> (N, C, L'); padding as max_pool1d's."""
    x, p = _pool1d("avg", x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    return execute("avg_pool2d:fwd", backend, p, (x[:, :, None, :],))[:, :, 0, :]


def avg_pool1d_backward(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, backend=DEFAULT_POOL_BACKEND):
    """Gradient of avg_pool1d w.r.t. x: dy (N, C, L') -> (N, C, L)."""
    x, p = _pool1d("avg", x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    return execute("avg_pool2d:bwd", backend, p, _pool1d_grads(dy, x, p))[:, :, 0, :]


def global_avg_pool2d(x, backend=DEFAULT_POOL_BACKEND):
    """Mean over each plane: x (N, C, H, W) -> (N, C, 1, 1), like adaptive_avg_pool2d(x, 1)."""
    x = check_array("x", x, "N, C, H, W")
    return avg_pool2d(x, x.shape[2:], backend=backend)


def global_avg_pool2d_backward(dy, x, backend=DEFAULT_POOL_BACKEND):
    """Gradient of global_avg_pool2d: dy (N, C, 1, 1) -> (N, C, H, W)."""
    x = check_array("x", x, "N, C, H, W")
    return avg_pool2d_backward(dy, x, x.shape[2:], backend=backend)


def global_max_pool2d(x, backend=DEFAULT_POOL_BACKEND):
    """Maximum over each plane: x (N, C, H, W) -> (N, C, 1, 1), like adaptive_max_pool2d(x, 1)
    (a NaN in a plane gives NaN)."""
    x = check_array("x", x, "N, C, H, W")
    return max_pool2d(x, x.shape[2:], backend=backend)


def global_max_pool2d_backward(dy, x, backend=DEFAULT_POOL_BACKEND):
    """Gradient of global_max_pool2d: dy (N, C, 1, 1) goes to each plane's first maximum in
    row-major order -> (N, C, H, W)."""
    x = check_array("x", x, "N, C, H, W")
    return max_pool2d_backward(dy, x, x.shape[2:], backend=backend)


# --- recurrent cells ------------------------------------------------------------------------------
def _rnn_args(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=False, linear_before_reset=True):
    """Validate a recurrent layer's arrays against each other and build the problem."""
    x = check_array("x", x, "T, N, I")
    h0 = check_array("h0", h0, "N, H", x.dtype)
    w_ih = check_array("w_ih", w_ih, "gates*H, I", x.dtype)
    w_hh = check_array("w_hh", w_hh, "gates*H, H", x.dtype)
    T, N, I = x.shape  # noqa: E741 - PyTorch's name for the input size
    H = h0.shape[1]
    G = RNNProblem(cell, 1, 1, 1, 1).gates
    if h0.shape[0] != N:
        raise ValueError(f"h0.shape[0]={h0.shape[0]} must equal the batch size x.shape[1]={N}")
    if w_hh.shape[1] != H:
        raise ValueError(f"w_hh.shape[1]={w_hh.shape[1]} must equal the hidden size "
                         f"h0.shape[1]={H}")
    for name, w in (("w_ih", w_ih), ("w_hh", w_hh)):
        if w.shape[0] != G * H:
            raise ValueError(f"{name}.shape[0]={w.shape[0]} must be gates*hidden = {G}*{H} = "
                             f"{G * H} for {cell}")
    if w_ih.shape[1] != I:
        raise ValueError(f"w_ih.shape[1]={w_ih.shape[1]} must equal the input size x.shape[2]={I}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must be given together (or both None)")
    if b_ih is not None:
        b_ih = check_array("b_ih", b_ih, "gates*H", x.dtype)
        b_hh = check_array("b_hh", b_hh, "gates*H", x.dtype)
        check_shape("b_ih", b_ih, (G * H,))
        check_shape("b_hh", b_hh, (G * H,))
    if cell == "lstm":
        c0 = check_array("c0", c0, "N, H", x.dtype)
        check_shape("c0", c0, h0.shape)
    for name, v in (("reverse", reverse), ("linear_before_reset", linear_before_reset)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name}={v!r} must be a bool")
    p = RNNProblem(cell, T, N, I, H, b_ih is not None, bool(reverse), bool(linear_before_reset))
    return p, (x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def _check_grads(p, x, dy, dhT, dcT):
    dy = check_array("dy", dy, "T, N, H", x.dtype)
    check_shape("dy", dy, p.y_shape)
    if dhT is not None:
        dhT = check_array("dhT", dhT, "N, H", x.dtype)
        check_shape("dhT", dhT, p.h_shape)
    if dcT is not None:
        dcT = check_array("dcT", dcT, "N, H", x.dtype)
        check_shape("dcT", dcT, p.h_shape)
    return dy, dhT, dcT


def _state_pair(state):
    if not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise ValueError("state must be a pair (h0, c0) for an LSTM")
    return state


def lstm(x, state, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND, *,
         reverse=False):
    """An LSTM layer over a sequence (PyTorch's layout; gates i, f, g, o).

    x (T, N, I), state (h0, c0) each (N, H), w_ih (4H, I), w_hh (4H, H), biases (4H,) or None
    -> (y (T, N, H), (hT, cT)). reverse: run from the last step to the first (the backward half
    of a bidirectional layer); y stays in the input's time order.
    """
    h0, c0 = _state_pair(state)
    p, args = _rnn_args("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse)
    y, hT, cT = execute("lstm:fwd", backend, p, args)
    return y, (hT, cT)


def lstm_backward(dy, dstate, x, state, w_ih, w_hh, b_ih=None, b_hh=None,
                  backend=DEFAULT_RNN_BACKEND, *, reverse=False):
    """Backpropagation through time for lstm. dy (T, N, H); dstate (dhT, dcT) (either may be None)
    -> (dx, (dh0, dc0), dw_ih, dw_hh, db_ih, db_hh); bias gradients None without biases."""
    h0, c0 = _state_pair(state)
    dhT, dcT = (None, None) if dstate is None else _state_pair(dstate)
    p, args = _rnn_args("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse)
    grads = _check_grads(p, args[0], dy, dhT, dcT)
    dx, dh0, dc0, dwi, dwh, dbi, dbh = execute("lstm:bwd", backend, p, grads + args)
    return dx, (dh0, dc0), dwi, dwh, dbi, dbh


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND, *, reverse=False,
        linear_before_reset=True):
    """A GRU layer over a sequence (PyTorch's layout; gates r, z, n). x (T, N, I), h0 (N, H),
    w_ih (3H, I), w_hh (3H, H), biases (3H,) or None -> (y (T, N, H), hT).

    linear_before_reset=True is PyTorch's and cuDNN's GRU, n = tanh(gi_n + r*(h w_hn^T + b_hn));
    False the original of Cho et al. (2014), ONNX's default and Keras's reset_after=False,
    n = tanh(gi_n + (r*h) w_hn^T + b_hn). reverse: run from the last step to the first.
    """
    p, args = _rnn_args("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, reverse, linear_before_reset)
    y, hT, _ = execute("gru:fwd", backend, p, args)
    return y, hT


def gru_backward(dy, dhT, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND,
                 *, reverse=False, linear_before_reset=True):
    """Backpropagation through time for gru: dy (T, N, H), dhT (N, H) or None
    -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)."""
    p, args = _rnn_args("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, reverse, linear_before_reset)
    grads = _check_grads(p, args[0], dy, dhT, None)
    dx, dh0, _, dwi, dwh, dbi, dbh = execute("gru:bwd", backend, p, grads + args)
    return dx, dh0, dwi, dwh, dbi, dbh


def rnn_tanh(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND, *,
             reverse=False):
    """A tanh RNN layer over a sequence (PyTorch's layout). x (T, N, I), h0 (N, H), w_ih (H, I),
    w_hh (H, H), biases (H,) or None -> (y (T, N, H), hT). reverse: last step to first."""
    p, args = _rnn_args("rnn_tanh", x, h0, None, w_ih, w_hh, b_ih, b_hh, reverse)
    y, hT, _ = execute("rnn_tanh:fwd", backend, p, args)
    return y, hT


def rnn_tanh_backward(dy, dhT, x, h0, w_ih, w_hh, b_ih=None, b_hh=None,
                      backend=DEFAULT_RNN_BACKEND, *, reverse=False):
    """Backpropagation through time for rnn_tanh: dy (T, N, H), dhT (N, H) or None
    -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)."""
    p, args = _rnn_args("rnn_tanh", x, h0, None, w_ih, w_hh, b_ih, b_hh, reverse)
    grads = _check_grads(p, args[0], dy, dhT, None)
    dx, dh0, _, dwi, dwh, dbi, dbh = execute("rnn_tanh:bwd", backend, p, grads + args)
    return dx, dh0, dwi, dwh, dbi, dbh


def lstm_cell(x, state, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND):
    """One LSTM step: x (N, I), state (h, c) -> (h', c')."""
    x = check_array("x", x, "N, I")
    _, (h, c) = lstm(x[None], state, w_ih, w_hh, b_ih, b_hh, backend=backend)
    return h, c


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND, *,
             linear_before_reset=True):
    """One GRU step: x (N, I), h (N, H) -> h'."""
    x = check_array("x", x, "N, I")
    return gru(x[None], h, w_ih, w_hh, b_ih, b_hh, backend=backend,
               linear_before_reset=linear_before_reset)[1]


def rnn_tanh_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, backend=DEFAULT_RNN_BACKEND):
    """One tanh-RNN step: x (N, I), h (N, H) -> h'."""
    x = check_array("x", x, "N, I")
    return rnn_tanh(x[None], h, w_ih, w_hh, b_ih, b_hh, backend=backend)[1]
