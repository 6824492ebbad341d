"""The functional interface: results, dtypes, errors that name the argument and value."""
import numpy as np
import pytest
from conftest import available_backends

import convbench as cb

BACKENDS = available_backends("conv2d:fwd")


def _xw(rng, x=(2, 4, 6, 6), w=(3, 4, 3, 3), dtype=np.float32):
    return rng.standard_normal(x).astype(dtype), rng.standard_normal(w).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_matches_torch(backend, rng):
    torch = pytest.importorskip("torch")
    x, w = _xw(rng)
    b = rng.standard_normal(3).astype(np.float32)
    y = cb.conv2d(x, w, b, stride=2, padding=1, backend=backend)
    yt = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                    stride=2, padding=1).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, yt, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", available_backends("conv2d:bwd-data"))
def test_conv2d_backward_matches_torch_autograd(backend, rng):
    torch = pytest.importorskip("torch")
    x, w = _xw(rng, (2, 4, 7, 6), (6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    y = cb.conv2d(x, w, **kw, backend=backend)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = cb.conv2d_backward(dy, x, w, **kw, backend=backend)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.zeros(6, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, bt, **kw).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input(backend, rng):
    x, w = _xw(rng, (2, 6, 6, 4))
    xt = np.swapaxes(x, 2, 3)[:, ::2]          # (2, 3, 4, 6) strided view
    w = w[:, :3]
    assert not xt.flags.c_contiguous
    y = cb.conv2d(xt, np.ascontiguousarray(w), padding=1, backend=backend)
    np.testing.assert_allclose(y, cb.conv2d(np.ascontiguousarray(xt), np.ascontiguousarray(w),
                                            padding=1, backend="naive"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_inputs_pass_through_as_nan(backend, rng):
    x, w = _xw(rng, (1, 2, 6, 6), (2, 2, 3, 3))
    x[0, 1, 2, 2] = np.nan
    y = cb.conv2d(x, w, backend=backend)
    # exactly the outputs whose window holds the NaN are NaN
    expected = np.zeros((1, 2, 4, 4), bool)
    expected[:, :, 0:3, 0:3] = True
    np.testing.assert_array_equal(np.isnan(y), expected)


@pytest.mark.parametrize("backend", available_backends("conv2d:bwd-data"))
def test_conv1d_causal_and_backward(backend, rng):
    x = rng.standard_normal((2, 3, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    y = cb.conv1d(x, w, padding="causal", dilation=2, backend=backend)
    assert y.shape == (2, 4, 10)
    xp = np.concatenate([np.zeros((2, 3, 4), np.float32), x], axis=2)
    np.testing.assert_allclose(y, cb.conv1d(xp, w, dilation=2, backend="naive"), rtol=1e-5,
                               atol=1e-5)
    dx, dw, db = cb.conv1d_backward(np.ones_like(y), x, w, padding="causal", dilation=2,
                                    backend=backend)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (4,)
    np.testing.assert_allclose(db, np.full(4, 20.0))


def test_float64_in_float64_out(rng):
    x, w = _xw(rng, dtype=np.float64)
    assert cb.conv2d(x, w, backend="im2col").dtype == np.float64


@pytest.mark.parametrize("kwargs,match", [
    (dict(padding=-1), r"padding=-1 must be >= 0"),
    (dict(stride=0), r"stride=0 must be >= 1"),
    (dict(dilation=(1, 0)), r"dilation=\(1, 0\) must be >= 1"),
    (dict(groups=3), r"groups=3 must divide the input channels x.shape\[1\]=4"),
    (dict(padding="full"), r"padding='full'"),
    (dict(padding="same", stride=2), r"padding='same' needs stride=1"),
    (dict(stride=1.5), r"stride=1.5 must be an int"),
])
def test_bad_arguments_name_the_argument_and_value(kwargs, match, rng):
    x, w = _xw(rng)
    with pytest.raises(ValueError, match=match):
        cb.conv2d(x, w, **kwargs)


def test_bad_arrays_name_the_array(rng):
    x, w = _xw(rng)
    with pytest.raises(ValueError, match=r"x must be 4-D .*got shape \(4, 6, 6\)"):
        cb.conv2d(x[0], w)
    with pytest.raises(ValueError, match=r"w.shape\[1\]=4 must equal x.shape\[1\]/groups=4/2=2"):
        cb.conv2d(x, w[:2], groups=2)
    with pytest.raises(ValueError, match=r"kernel height 9 .*exceeds the padded input height 8"):
        cb.conv2d(x, rng.standard_normal((3, 4, 9, 3)).astype(np.float32), padding=1)
    with pytest.raises(TypeError, match=r"x.dtype=int64 must be float32 or float64"):
        cb.conv2d(x.astype(np.int64), w)
    with pytest.raises(TypeError, match=r"w.dtype=float64 must match the input dtype float32"):
        cb.conv2d(x, w.astype(np.float64))
    with pytest.raises(ValueError, match=r"bias.shape=\(4,\) must be \(3,\)"):
        cb.conv2d(x, w, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match=r"x must be a numpy.ndarray, got list"):
        cb.conv2d(x.tolist(), w)
    with pytest.raises(ValueError, match=r"dy.shape=\(2, 3, 5, 5\) must be \(2, 3, 4, 4\)"):
        cb.conv2d_backward(np.zeros((2, 3, 5, 5), np.float32), x, w)


def test_unknown_backend_lists_valid_names(rng):
    x, w = _xw(rng)
    with pytest.raises(cb.UnknownNameError,
                       match=r"unknown backend 'cudnn'; valid backends: naive, "):
        cb.conv2d(x, w, backend="cudnn")


def test_im2col_guard_refuses_a_huge_column_buffer(rng):
    from convbench.backends.im2col import Im2colBackend
    from convbench.ops import conv2d_problem, get_op
    b = Im2colBackend(max_column_bytes=1000)
    p = conv2d_problem((2, 4, 6, 6), (3, 4, 3, 3))
    with pytest.raises(cb.UnsupportedError,
                       match=r"column buffer of 4,608 bytes .* limit of 1,000"):
        b.check(get_op("conv2d:fwd"), p, np.float32)
    assert isinstance(cb.UnsupportedError("x"), NotImplementedError)


def test_unsupported_dtype_is_an_unsupported_error(rng):
    from convbench.backends.base import Backend
    from convbench.ops import conv2d_problem, get_op

    class F32Only(Backend):
        name = "f32"
        dtypes = (np.float32,)

        def conv2d_fwd(self, p, x, w, b):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(cb.UnsupportedError, match="does not support dtype float64"):
        F32Only().check(get_op("conv2d:fwd"), conv2d_problem((1, 1, 3, 3), (1, 1, 1, 1)),
                        np.float64)
    with pytest.raises(cb.UnsupportedError, match="f32 does not implement conv2d:bwd-data"):
        F32Only().check(get_op("conv2d:bwd-data"), conv2d_problem((1, 1, 3, 3), (1, 1, 1, 1)),
                        np.float32)
