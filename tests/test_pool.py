"""Pooling semantics: PyTorch's output sizes, padding, ceil_mode, divisors, arg-max ties."""
import numpy as np
import pytest
from conftest import available_backends

import convbench as cb
from convbench.cases import pool_edge_cases
from convbench.ops import reference as ref

POOL_BACKENDS = available_backends("max_pool2d:fwd")


def _torch_pads(p):
    """torch's pooling takes symmetric padding up to half the kernel (test_pool_padding checks
    the rest against explicitly padded inputs)."""
    pad = p.symmetric_padding
    return pad is not None and all(q <= k // 2 for q, k in zip(pad, p.kernel))


NATIVE = [c for c in pool_edge_cases() if _torch_pads(c[2])]


@pytest.mark.parametrize("label,family,p", NATIVE, ids=[c[0] for c in NATIVE])
def test_reference_matches_torch(label, family, p, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal(p.x_shape)
    dy = rng.standard_normal(p.y_shape)
    xt = torch.from_numpy(x).requires_grad_()
    kw = dict(kernel_size=p.kernel, stride=p.stride, padding=p.symmetric_padding,
              ceil_mode=p.ceil_mode)
    if p.kind == "max":
        yt = F.max_pool2d(xt, dilation=p.dilation, **kw)
    else:
        yt = F.avg_pool2d(xt, count_include_pad=p.count_include_pad, **kw)
    yt.backward(torch.from_numpy(dy))
    fwd = getattr(ref, f"{p.kind}_pool2d_fwd")(p, x)
    bwd = getattr(ref, f"{p.kind}_pool2d_bwd")(p, dy, x)
    np.testing.assert_allclose(fwd, yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bwd, xt.grad.numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", available_backends("max_pool2d:bwd"))
def test_ties_go_to_the_first_maximum_in_row_major_order(backend):
    x = np.zeros((1, 1, 4, 4), np.float32)          # every window is a tie
    dx = cb.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), x, 2, backend=backend)
    expected = np.zeros((4, 4), np.float32)
    expected[0::2, 0::2] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


#: ONNX Runtime's and OpenVINO's MaxPool let a NaN win only in some window positions, or never
#: (README, Peers): a documented difference from PyTorch that finite inputs never show.
NAN_IGNORED = ("onnxruntime", "openvino")


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("where", [(0, 0), (1, 1)])
def test_max_pool_nan_wins(backend, where, rng):
    if backend in NAN_IGNORED:
        pytest.skip(f"{backend}'s MaxPool does not propagate NaN (documented)")
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    x[0, 1, where[0], where[1]] = np.nan
    y = cb.max_pool2d(x, 2, backend=backend)
    assert np.isnan(y[0, 1, 0, 0]) and np.isnan(y).sum() == 1


@pytest.mark.parametrize("backend", available_backends("avg_pool2d:bwd"))
def test_global_avg_pool(backend, rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    y = cb.global_avg_pool2d(x, backend=backend)
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    dx = cb.global_avg_pool2d_backward(np.ones_like(y), x, backend=backend)
    np.testing.assert_allclose(dx, np.full_like(x, 1 / 20), rtol=1e-6)


def test_stride_defaults_to_kernel():
    y = cb.max_pool2d(np.zeros((1, 1, 6, 6), np.float32), 3)
    assert y.shape == (1, 1, 2, 2)


def test_bad_pooling_arguments_name_the_value():
    x = np.zeros((1, 1, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"padding=\(\(3, 3\), \(3, 3\)\) must be at most the "
                                         r"kernel extent - 1 \(height: padding 3 > 2\)"):
        cb.max_pool2d(x, 3, padding=3)
    with pytest.raises(ValueError, match=r"kernel height 7 .* exceeds the padded input height 6"):
        cb.avg_pool2d(x, 7)
    with pytest.raises(ValueError, match=r"stride=0 must be >= 1"):
        cb.max_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match=r"dy.shape=\(1, 1, 2, 2\) must be \(1, 1, 3, 3\)"):
        cb.max_pool2d_backward(np.zeros((1, 1, 2, 2), np.float32), x, 2)
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        cb.max_pool2d(x[0], 2)


def test_numba_cpu_parallel_pool_drivers_match_the_serial_loops(monkeypatch, rng):
    """Small problems take the serial loops; force the parallel drivers too."""
    from convbench.backends.numba_cpu import pool as numba_cpu_pool
    from convbench.ops import get_op
    from convbench.result import PASSED
    from convbench.verify import check_backend
    monkeypatch.setattr(numba_cpu_pool, "SERIAL_POOL_WORK", 0)
    for _, family, p in pool_edge_cases():
        for direction in ("fwd", "bwd"):
            c = check_backend("numba-cpu", get_op(f"{family}:{direction}"), p, np.float32, seed=2)
            assert c.status == PASSED, (family, direction, p, c.reason)
