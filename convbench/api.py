"""The public functional interface, in the style of torch.nn.functional, with a `backend=`.

Each function validates its arguments (errors name the argument and the value), builds the
problem, asks the backend whether it can run it (UnsupportedError with a reason if not), and runs
it. NumPy arrays in, NumPy arrays out, in the input's dtype.
"""
from __future__ import annotations

import numpy as np

from convbench.backends import get_backend
from convbench.ops import conv1d_problem, conv2d_problem, get_op

#: The backend used when none is named: BLAS-backed, no compilation, every conv parameter.
DEFAULT_BACKEND = "im2col"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(name: str, a, layout: str | None = None, dtype=None) -> np.ndarray:
    """a as a C-contiguous ndarray, after checking its type, its number of dimensions against
    `layout` (like "N, C, H, W") and its dtype (no silent casts)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if layout is not None and a.ndim != layout.count(",") + 1:
        raise ValueError(f"{name} must be {layout.count(',') + 1}-D ({layout}), got shape {a.shape}")
    if dtype is None:
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}.dtype={a.dtype} must be float32 or float64")
    elif a.dtype != dtype:
        raise TypeError(f"{name}.dtype={a.dtype} must match the input dtype {np.dtype(dtype)}")
    return np.ascontiguousarray(a)


def check_shape(name: str, a: np.ndarray, shape) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}.shape={tuple(a.shape)} must be {tuple(shape)}")


def execute(op_name: str, backend: str, problem, inputs):
    """Run one op on one backend with host arrays, returning host arrays."""
    op = get_op(op_name)
    b = get_backend(backend)
    dtype = next(a.dtype for a in inputs if a is not None)
    b.check(op, problem, dtype)
    dev = [None if a is None else b.to_device(a) for a in inputs]
    out = b.run(op, problem, *dev)
    if isinstance(out, tuple):
        return tuple(None if o is None else np.asarray(b.to_host(o)) for o in out)
    return np.asarray(b.to_host(out))


def _bias_grad(dy: np.ndarray) -> np.ndarray:
    return dy.sum(axis=(0, 2, 3), dtype=np.float64).astype(dy.dtype)


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, backend=DEFAULT_BACKEND):
    """2D cross-correlation, PyTorch's conv2d.

    x (N, C, H, W), w (K, C/groups, R, S), bias (K,) or None -> (N, K, P, Q), where
    P = (H + pad_top + pad_bottom - dilation*(R-1) - 1) // stride + 1 (Q likewise).
    padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same".
    """
    x = check_array("x", x, "N, C, H, W")
    w = check_array("w", w, "K, C/groups, R, S", x.dtype)
    p = conv2d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups, bias=bias is not None)
    if bias is not None:
        bias = check_array("bias", bias, "K", x.dtype)
        check_shape("bias", bias, (p.K,))
    return execute("conv2d:fwd", backend, p, (x, w, bias))


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1,
                    backend=DEFAULT_BACKEND):
    """Gradients of conv2d: dy (N, K, P, Q), x, w as in the forward -> (dx, dw, db).

    dx has x's shape, dw has w's shape, db (K,) is dy summed over batch and positions.
    """
    x = check_array("x", x, "N, C, H, W")
    w = check_array("w", w, "K, C/groups, R, S", x.dtype)
    dy = check_array("dy", dy, "N, K, P, Q", x.dtype)
    p = conv2d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups)
    check_shape("dy", dy, p.y_shape)
    dx = execute("conv2d:bwd-data", backend, p, (dy, w))
    dw = execute("conv2d:bwd-weights", backend, p, (dy, x))
    return dx, dw, _bias_grad(dy)


def conv1d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, backend=DEFAULT_BACKEND):
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
    y = execute("conv2d:fwd", backend, p, (x[:, :, None, :], w[:, :, None, :], bias))
    return y[:, :, 0, :]


def conv1d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1,
                    backend=DEFAULT_BACKEND):
    """Gradients of conv1d: dy (N, K, L'), x (N, C, L), w (K, C/groups, S) -> (dx, dw, db)."""
    x = check_array("x", x, "N, C, L")
    w = check_array("w", w, "K, C/groups, S", x.dtype)
    dy = check_array("dy", dy, "N, K, L'", x.dtype)
    p = conv1d_problem(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                       groups=groups)
    check_shape("dy", dy, (p.N, p.K, p.Q))
    dy4 = dy[:, :, None, :]
    dx = execute("conv2d:bwd-data", backend, p, (dy4, w[:, :, None, :]))
    dw = execute("conv2d:bwd-weights", backend, p, (dy4, x[:, :, None, :]))
    return dx[:, :, 0, :], dw[:, :, 0, :], _bias_grad(dy4)
