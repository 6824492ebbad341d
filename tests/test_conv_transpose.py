"""Transposed convolution: the float64 reference against torch, every CPU backend against the
reference (through its convolution kernels), the API, descriptors and bad arguments."""
import numpy as np
import pytest

import convbench as cb
from convbench.backends import backend_names, get_backend
from convbench.cases import deconv_edge_cases
from convbench.ops import ConvTranspose2dProblem, conv_transpose2d_problem, descriptor, ops_of
from convbench.ops import reference as ref
from convbench.result import PASSED, UNAVAILABLE, UNIMPLEMENTED
from convbench.verify import check_backend

CASES = deconv_edge_cases()
IDS = [c[0] for c in CASES]


def _torch_args(p):
    """PyTorch's (padding, output_padding) for a problem, or None where torch's symmetric
    padding cannot express it."""
    (pt, pb), (pl, pr) = p.padding
    out_pad = (pt - pb + p.output_padding[0], pl - pr + p.output_padding[1])
    if any(not 0 <= o < max(s, d) for o, s, d in zip(out_pad, p.stride, p.dilation)):
        return None
    return (pt, pl), out_pad


@pytest.mark.parametrize("label,family,p", CASES, ids=IDS)
def test_reference_matches_torch_autograd(label, family, p, rng):
    torch = pytest.importorskip("torch")
    args = _torch_args(p)
    if args is None:
        pytest.skip("padding torch's conv_transpose2d cannot express")
    x = torch.from_numpy(rng.standard_normal(p.x_shape)).requires_grad_()
    w = torch.from_numpy(rng.standard_normal(p.w_shape)).requires_grad_()
    b = torch.from_numpy(rng.standard_normal(p.K)) if p.bias else None
    y = torch.nn.functional.conv_transpose2d(x, w, b, stride=p.stride, padding=args[0],
                                             output_padding=args[1], groups=p.groups,
                                             dilation=p.dilation)
    dy = rng.standard_normal(p.y_shape)
    y.backward(torch.from_numpy(dy))
    xn, wn = x.detach().numpy(), w.detach().numpy()
    tol = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv_transpose2d_fwd(p, xn, wn, None if b is None else
                                                        b.numpy()), y.detach().numpy(), **tol)
    np.testing.assert_allclose(ref.conv_transpose2d_bwd_data(p, dy, wn), x.grad.numpy(), **tol)
    np.testing.assert_allclose(ref.conv_transpose2d_bwd_weights(p, dy, xn), w.grad.numpy(), **tol)


def test_reference_is_the_adjoint_of_the_conv_input_gradient(rng):
    """<conv_transpose(x), y> = <x, conv(y)> for the convolution it is the gradient of, with the
    output padding's rows zero."""
    for _, _, p in CASES:
        x = rng.standard_normal(p.x_shape)
        w = rng.standard_normal(p.w_shape)
        y = rng.standard_normal(p.y_shape)
        y[:, :, p.P - p.extra[0]:] = 0
        y[:, :, :, p.Q - p.extra[1]:] = 0
        c = p.conv
        lhs = np.sum(ref.conv_transpose2d_fwd(p, x, w) * y)
        rhs = np.sum(x * ref.conv2d_fwd(c, y[:, :, :c.H, :c.W], w))
        assert lhs == pytest.approx(rhs, rel=1e-12)


def _expected(backend, p, op):
    """Why a backend is expected not to run it: None if it should."""
    b = get_backend(backend)
    if b.device != "cpu" or not b.implements(ops_of("conv2d")[0]):
        return "does not implement"
    if backend in ("onnxruntime", "openvino") and op.direction == "bwd-weights":
        return "does not implement"     # inference runtimes: no weight gradient to run it on
    if backend.startswith("winograd") and (p.R, p.S, p.stride, p.dilation, p.groups) != (
            3, 3, (1, 1), (1, 1), 1):
        return "does not support"
    return None


@pytest.mark.parametrize("backend", backend_names())
@pytest.mark.parametrize("label,family,p", CASES, ids=IDS)
def test_backend_matches_reference(backend, label, family, p):
    for op in ops_of("conv_transpose2d"):
        c = check_backend(backend, op, p, np.float32, seed=5)
        if c.status == UNAVAILABLE:
            pytest.skip(c.reason)
        why = _expected(backend, p, op)
        if why:
            assert c.status == UNIMPLEMENTED and why in c.reason, (op.name, c.reason)
            continue
        assert c.status == PASSED, f"{op.name} {label}: {c.status} {c.reason}"


def test_winograd_runs_the_stride_1_3x3_case_through_its_input_gradient_kernel():
    p = next(c[2] for c in CASES if c[0] == "3x3 stride 1 padding 1")
    for op in ops_of("conv_transpose2d"):
        assert check_backend("winograd-f4", op, p, np.float32).status == PASSED


def test_api_matches_torch_and_bias_gradient(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    y = cb.conv_transpose2d(x, w, b, backend="numba-cpu", **kw)
    yt = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw)
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = cb.conv_transpose2d_backward(dy, x, w, **kw)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-5)
    assert dx.shape == x.shape and dw.shape == w.shape
    # 1D
    x1 = rng.standard_normal((2, 3, 7)).astype(np.float32)
    w1 = rng.standard_normal((3, 4, 5)).astype(np.float32)
    y1 = cb.conv_transpose1d(x1, w1, stride=2, padding=2, output_padding=1, backend="fft")
    yt1 = F.conv_transpose1d(torch.from_numpy(x1), torch.from_numpy(w1), stride=2, padding=2,
                             output_padding=1)
    np.testing.assert_allclose(y1, yt1.numpy(), rtol=1e-5, atol=1e-5)
    xt = torch.from_numpy(x1).requires_grad_()
    wt = torch.from_numpy(w1).requires_grad_()
    dy1 = rng.standard_normal(y1.shape).astype(np.float32)
    F.conv_transpose1d(xt, wt, stride=2, padding=2, output_padding=1).backward(
        torch.from_numpy(dy1))
    dx1, dw1, _ = cb.conv_transpose1d_backward(dy1, x1, w1, stride=2, padding=2,
                                               output_padding=1, backend="naive")
    np.testing.assert_allclose(dx1, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw1, wt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_one_form_per_function_and_descriptors_round_trip(rng):
    # PyTorch's padding 1 with output_padding 1 crops nothing at the end
    a = conv_transpose2d_problem((1, 2, 4, 4), (2, 3, 3, 3), stride=2, padding=1,
                                 output_padding=1)
    b = conv_transpose2d_problem((1, 2, 4, 4), (2, 3, 3, 3), stride=2, padding=((1, 0), (1, 0)))
    assert a == b and a.y_shape == (1, 3, 8, 8)
    count = 0
    while count < 300:
        g = int(rng.choice([1, 2]))
        try:
            p = ConvTranspose2dProblem(
                int(rng.integers(1, 3)), g * int(rng.integers(1, 3)), int(rng.integers(1, 9)),
                int(rng.integers(1, 9)), g * int(rng.integers(1, 3)), int(rng.integers(1, 5)),
                int(rng.integers(1, 5)), tuple(int(v) for v in rng.integers(1, 4, 2)),
                tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2)),
                tuple(int(v) for v in rng.integers(0, 3, 2)),
                tuple(int(v) for v in rng.integers(1, 3, 2)), g)
        except ValueError:
            continue
        text = p.descriptor()
        assert text.startswith("deconv:")
        assert descriptor.parse(text)[0] == p, text
        count += 1


def test_bad_arguments_name_the_value():
    x = np.zeros((1, 2, 4, 4), np.float32)
    w = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"output_padding=\(2, 2\) must be smaller than the "
                                         r"stride or the dilation"):
        cb.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"w.shape\[0\]=3 must equal the input channels"):
        cb.conv_transpose2d(x, np.zeros((3, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"crops the whole output"):
        cb.conv_transpose2d(x[:, :, :1, :1], w[:, :, :1, :1], padding=1)
    with pytest.raises(ValueError, match=r"descriptor .*: a deconvolution gives its output size"):
        descriptor.parse("deconv:mb1ic1ih4oc1kh3pb1")
