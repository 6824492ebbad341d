"""Pooling padding beyond PyTorch's own: asymmetric, SAME_UPPER / SAME_LOWER, up to kernel - 1;
1D and global max pooling; the rule that no max-pooling window may lie entirely in padding."""
import numpy as np
import pytest
from conftest import available_backends

import convbench as cb
from convbench.cases import pool_padding_cases
from convbench.ops import descriptor, pool2d_problem
from convbench.ops import reference as ref

POOL_BACKENDS = available_backends("max_pool2d:fwd")


def _loops(p, x, kind):
    """The definition, one window at a time, in float64: taps inside the input, the divisor the
    window clipped to the padded input (count_include_pad) or to the input."""
    (pt, pb), (pl, pr) = p.padding
    y = np.empty(p.y_shape)
    for i in range(p.P):
        for j in range(p.Q):
            h0, w0 = i * p.stride[0] - pt, j * p.stride[1] - pl
            hs = [h0 + a * p.dilation[0] for a in range(p.kernel[0])]
            ws = [w0 + b * p.dilation[1] for b in range(p.kernel[1])]
            inside = [(h, w) for h in hs for w in ws if 0 <= h < p.H and 0 <= w < p.W]
            vals = np.stack([x[:, :, h, w] for h, w in inside], axis=-1)
            if kind == "max":
                y[:, :, i, j] = vals.max(axis=-1)
                continue
            if p.count_include_pad:
                rows = min(h0 + p.kernel[0], p.H + pb) - h0
                cols = min(w0 + p.kernel[1], p.W + pr) - w0
                div = rows * cols
            else:
                div = len(inside)
            y[:, :, i, j] = vals.sum(axis=-1) / div
    return y


@pytest.mark.parametrize("label,family,p", pool_padding_cases(),
                         ids=[c[0] for c in pool_padding_cases()])
def test_reference_matches_the_definition_window_by_window(label, family, p, rng):
    x = rng.standard_normal(p.x_shape)
    kind = family.split("_")[0]
    np.testing.assert_allclose(getattr(ref, f"{family}_fwd")(p, x), _loops(p, x, kind),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("label,family,p", pool_padding_cases(),
                         ids=[c[0] for c in pool_padding_cases()])
def test_reference_matches_torch_on_explicitly_padded_input(label, family, p, rng):
    """torch pooling with F.pad: minus infinity for the maximum; for the average, zeros and the
    window sums divided by the counted cells (themselves pooled from an indicator)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal(p.x_shape)
    dy = rng.standard_normal(p.y_shape)
    (pt, pb), (pl, pr) = p.padding
    eh = max(0, (p.P - 1) * p.stride[0] + p.dilation[0] * (p.kernel[0] - 1) + 1 - (p.H + pt + pb))
    ew = max(0, (p.Q - 1) * p.stride[1] + p.dilation[1] * (p.kernel[1] - 1) + 1 - (p.W + pl + pr))
    xt = torch.from_numpy(x).requires_grad_()
    if family == "max_pool2d":
        yt = F.max_pool2d(F.pad(xt, (pl, pr + ew, pt, pb + eh), value=-np.inf), p.kernel,
                          p.stride, 0, p.dilation)
    else:
        ones = torch.ones(1, 1, p.H, p.W, dtype=torch.float64)
        counted = (F.pad(F.pad(ones, (pl, pr, pt, pb), value=1.0), (0, ew, 0, eh))
                   if p.count_include_pad else F.pad(ones, (pl, pr + ew, pt, pb + eh)))
        sums = F.avg_pool2d(F.pad(xt, (pl, pr + ew, pt, pb + eh)), p.kernel, p.stride,
                            divisor_override=1)
        yt = sums / F.avg_pool2d(counted, p.kernel, p.stride, divisor_override=1)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(getattr(ref, f"{family}_fwd")(p, x), yt.detach().numpy(),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(getattr(ref, f"{family}_bwd")(p, dy, x), xt.grad.numpy(),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("size,k,s", [(7, 3, 2), (6, 3, 2), (5, 4, 1), (10, 4, 3), (1, 1, 1),
                                      (9, 2, 4)])
def test_same_padding_is_onnx_same_upper_and_same_lower(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    upper = pool2d_problem("max", (1, 1, size, size), k, s, "same")
    lower = pool2d_problem("max", (1, 1, size, size), k, s, "same_lower")
    assert upper.P == lower.P == out
    assert upper.padding[0] == (total // 2, total - total // 2)
    assert lower.padding[0] == (total - total // 2, total // 2)


@pytest.mark.parametrize("backend", available_backends("max_pool2d:bwd"))
def test_one_dimensional_pooling_matches_torch(backend, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 11)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 6)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    F.max_pool1d(xt, 3, 2, 1).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(cb.max_pool1d(x, 3, 2, 1, backend=backend),
                               F.max_pool1d(torch.from_numpy(x), 3, 2, 1).numpy())
    np.testing.assert_allclose(cb.max_pool1d_backward(dy, x, 3, 2, 1, backend=backend),
                               xt.grad.numpy())
    xt.grad = None
    F.avg_pool1d(xt, 3, 2, 1, count_include_pad=False).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(cb.avg_pool1d(x, 3, 2, 1, count_include_pad=False,
                                             backend=backend),
                               F.avg_pool1d(torch.from_numpy(x), 3, 2, 1,
                                            count_include_pad=False).numpy(), rtol=1e-6)
    np.testing.assert_allclose(cb.avg_pool1d_backward(dy, x, 3, 2, 1, count_include_pad=False,
                                                      backend=backend),
                               xt.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("backend", available_backends("max_pool2d:bwd"))
def test_global_max_pool_and_its_gradient(backend, rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    y = cb.global_max_pool2d(x, backend=backend)
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(y[..., 0, 0], x.max(axis=(2, 3)))
    dx = cb.global_max_pool2d_backward(np.ones_like(y), x, backend=backend)
    expected = (x == x.max(axis=(2, 3), keepdims=True)).astype(np.float32)
    np.testing.assert_array_equal(dx, expected)


def test_a_window_entirely_in_padding_is_an_error():
    # dilation 3 over a 2-pixel input padded by 2 before: the second window reads -1 and 2
    with pytest.raises(ValueError, match="max pooling window 1 along the width lies entirely "
                                         "in the padding"):
        pool2d_problem("max", (1, 1, 4, 2), (1, 2), 1, ((0, 0), (2, 1)), (1, 3))
    # (without dilation, padding up to kernel - 1 always leaves an input cell in every window)
    assert pool2d_problem("max", (1, 1, 4, 2), (1, 2), 1, ((0, 0), (1, 1))).Q == 3


def test_padding_limits_and_errors_name_the_value():
    x = np.zeros((1, 1, 6, 6), np.float32)
    assert cb.max_pool2d(x, 3, 1, 2).shape == (1, 1, 8, 8)      # kernel - 1: beyond PyTorch's
    with pytest.raises(ValueError, match=r"padding 3 > 2"):
        cb.avg_pool2d(x, 3, 1, ((0, 3), (0, 0)))
    with pytest.raises(ValueError, match=r"padding='full' must be 'valid', 'same', 'same_lower'"):
        cb.max_pool2d(x, 3, padding="full")
    with pytest.raises(ValueError, match=r"x must be 3-D \(N, C, L\)"):
        cb.max_pool1d(x, 3)
    with pytest.raises(ValueError, match=r"dy.shape=\(1, 1, 3\) must be \(1, 6, 2\)"):
        cb.max_pool1d_backward(np.zeros((1, 1, 3), np.float32), x[0], 3)


@pytest.mark.parametrize("text", ["max:mb2ic2ih7iw8kh3sh2ph2pw1pb0pr2",
                                  "avg:mb1ic2ih6iw7kh3sh2pw2cm1cip0pb2pr1",
                                  "max:mb1ic2ih1iw10kh1kw4sh1sw3pw1pr2"])
def test_asymmetric_pool_descriptors_round_trip(text):
    assert descriptor.parse(text)[0].descriptor() == text


def test_pool_output_size_in_a_descriptor_sets_the_far_padding():
    p = descriptor.parse("max:mb1ic1ih7oh4kh3sh2")[0]
    assert p.padding[0] == (0, 2) and p.P == 4
