"""Reversed and original-GRU recurrent ops on every backend, and the LSTM/GRU/RNN layer classes
against torch.nn (weights loaded from torch.nn's state_dict as they are)."""
import numpy as np
import pytest

import convbench as cb
from convbench.backends import backend_names
from convbench.cases import rnn_variant_cases
from convbench.ops import RNNProblem, descriptor, ops_of
from convbench.ops import reference as ref
from convbench.result import PASSED, UNAVAILABLE, UNIMPLEMENTED
from convbench.train.layers import GRU, LSTM, RNN
from convbench.verify import check_backend

CASES = rnn_variant_cases()
RNN_BACKENDS = ("numpy", "numba-cpu", "torch")


@pytest.mark.parametrize("backend", backend_names())
@pytest.mark.parametrize("label,family,problem", CASES, ids=[c[0] for c in CASES])
def test_backend_matches_reference(backend, label, family, problem):
    for op in ops_of(family):
        c = check_backend(backend, op, problem, np.float32, seed=3)
        if c.status == UNAVAILABLE:
            pytest.skip(c.reason)
        if backend in ("naive", "im2col", "im2col-numba", "fft", "winograd-f2", "winograd-f4",
                       "winograd") or (
                backend == "numba-cuda" and problem.original_gru) or (
                backend in ("onnxruntime", "openvino") and op.direction == "bwd"):
            assert c.status == UNIMPLEMENTED, (op.name, c.status, c.reason)
            continue
        assert c.status == PASSED, f"{op.name} {label}: {c.status} {c.reason}"


def test_reverse_is_the_forward_layer_on_the_flipped_sequence(rng):
    p = RNNProblem("lstm", 6, 2, 3, 4, reverse=True)
    q = RNNProblem("lstm", 6, 2, 3, 4)
    x = rng.standard_normal(p.x_shape)
    args = [rng.standard_normal(s) for s in (p.h_shape, p.h_shape, p.w_ih_shape, p.w_hh_shape)]
    b = [rng.standard_normal(4 * p.H) for _ in range(2)]
    y, h, c = ref.rnn_fwd(p, x, *args, *b)
    y2, h2, c2 = ref.rnn_fwd(q, x[::-1], *args, *b)
    np.testing.assert_allclose(y, y2[::-1], rtol=1e-14)
    np.testing.assert_allclose(h, h2, rtol=1e-14)


@pytest.mark.parametrize("reverse", [False, True])
def test_original_gru_reference_bptt_matches_finite_differences(reverse, rng):
    p = RNNProblem("gru", 4, 2, 3, 3, reverse=reverse, linear_before_reset=False)
    x = rng.standard_normal(p.x_shape)
    h0 = rng.standard_normal(p.h_shape)
    w_ih, w_hh = rng.standard_normal(p.w_ih_shape), rng.standard_normal(p.w_hh_shape)
    b_ih, b_hh = rng.standard_normal(3 * p.H), rng.standard_normal(3 * p.H)
    dy, dhT = rng.standard_normal(p.y_shape), rng.standard_normal(p.h_shape)
    inputs = [x, h0, None, w_ih, w_hh, b_ih, b_hh]

    def loss():
        y, h, _ = ref.rnn_fwd(p, *inputs)
        return np.sum(y * dy) + np.sum(h * dhT)

    grads = ref.rnn_bwd(p, dy, dhT, None, *inputs)
    for k, g in ((0, grads[0]), (1, grads[1]), (3, grads[3]), (4, grads[4]), (5, grads[5]),
                 (6, grads[6])):
        a = inputs[k]
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            keep = a[idx]
            a[idx] = keep + 1e-6
            up = loss()
            a[idx] = keep - 1e-6
            down = loss()
            a[idx] = keep
            num[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7)


def test_rnn_descriptors_round_trip():
    for text in ("gru:t5mb2slc3sic4rev1lbr0", "lstm:t3mb1slc2sic2b0rev1", "gru:t2mb1slc1sic1lbr0"):
        assert descriptor.parse(text)[0].descriptor() == text
    with pytest.raises(ValueError, match="linear_before_reset=False is a GRU variant"):
        descriptor.parse("lstm:t2mb1slc1sic1lbr0")


def _torch_layer(torch, cls, **kw):
    torch.manual_seed(0)
    return {LSTM: torch.nn.LSTM, GRU: torch.nn.GRU, RNN: torch.nn.RNN}[cls](**kw)


@pytest.mark.parametrize("backend", RNN_BACKENDS)
@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("config", [
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=1, bias=False),
    dict(num_layers=3, bidirectional=False, batch_first=False),
], ids=["2-layer bidirectional batch_first", "1-layer no bias", "3-layer"])
def test_layer_equals_torch_nn_outputs_and_gradients(cls, config, backend, rng):
    torch = pytest.importorskip("torch")
    I, H, T, N = 3, 4, 5, 2  # noqa: E741 - PyTorch's name for the input size
    tm = _torch_layer(torch, cls, input_size=I, hidden_size=H, **config)
    layer = cls(I, H, backend=backend, **config)
    layer.load_state_dict(tm.state_dict())
    assert list(layer.state_dict()) == list(tm.state_dict())
    D = 2 if config.get("bidirectional") else 1
    L = config.get("num_layers", 1)
    shape = (N, T, I) if config.get("batch_first") else (T, N, I)
    x = rng.standard_normal(shape).astype(np.float32)
    h0 = rng.standard_normal((L * D, N, H)).astype(np.float32)
    c0 = rng.standard_normal((L * D, N, H)).astype(np.float32)
    state = (h0, c0) if cls is LSTM else h0
    y = layer.forward(x, state=state)
    xt = torch.from_numpy(x).requires_grad_()
    h0t = torch.from_numpy(h0).requires_grad_()
    c0t = torch.from_numpy(c0).requires_grad_()
    yt, st = tm(xt, (h0t, c0t) if cls is LSTM else h0t)
    tol = dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    if cls is LSTM:
        np.testing.assert_allclose(layer.final_state[0], st[0].detach().numpy(), **tol)
        np.testing.assert_allclose(layer.final_state[1], st[1].detach().numpy(), **tol)
    else:
        np.testing.assert_allclose(layer.final_state, st.detach().numpy(), **tol)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dh = rng.standard_normal(h0.shape).astype(np.float32)
    dc = rng.standard_normal(h0.shape).astype(np.float32)
    dx = layer.backward(dy, (dh, dc) if cls is LSTM else dh)
    outs = [yt, st[0], st[1]] if cls is LSTM else [yt, st]
    grads = [dy, dh, dc] if cls is LSTM else [dy, dh]
    torch.autograd.backward(outs, [torch.from_numpy(g) for g in grads])
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    for name, g in zip(layer.names, layer.grads):
        np.testing.assert_allclose(g, dict(tm.named_parameters())[name].grad.numpy(),
                                   err_msg=name, **tol)
    dh0 = layer.state_grad[0] if cls is LSTM else layer.state_grad
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), **tol)
    if cls is LSTM:
        np.testing.assert_allclose(layer.state_grad[1], c0t.grad.numpy(), **tol)


def test_layer_forward_and_backward_on_numba_cuda(rng):
    torch = pytest.importorskip("torch")
    if not cb.get_backend("numba-cuda").available:
        pytest.skip("numba-cuda unavailable")
    layer = GRU(3, 2, num_layers=2, bidirectional=True, backend="numba-cuda")
    tm = _torch_layer(torch, GRU, input_size=3, hidden_size=2, num_layers=2, bidirectional=True)
    layer.load_state_dict(tm.state_dict())
    x = rng.standard_normal((3, 2, 3)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    yt, _ = tm(xt)
    y = layer.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, g in zip(layer.names, layer.grads):
        np.testing.assert_allclose(g, dict(tm.named_parameters())[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_dropout_between_layers_and_its_gradient(rng):
    layer = LSTM(2, 3, num_layers=2, dropout=0.5, backend="numpy")
    x = rng.standard_normal((4, 2, 2)).astype(np.float32)

    def forward(xx):                    # the same masks on every call: the same generator state
        layer.rng = np.random.default_rng(7)
        return layer.forward(xx, training=True)

    y = forward(x)
    assert not np.allclose(y, layer.forward(x, training=False))
    assert layer.masks[0] is None and set(np.unique(forward(x) * 0 + layer.masks[1])) <= {0, 2}
    dy = rng.standard_normal(y.shape).astype(np.float32)
    forward(x)
    dx = layer.backward(dy)
    v = rng.standard_normal(x.shape).astype(np.float32)
    eps = np.float32(1e-2)
    num = (np.sum(forward(x + eps * v) * dy) - np.sum(forward(x - eps * v) * dy)) / (2 * eps)
    assert np.sum(dx * v) == pytest.approx(num, rel=2e-2)


def test_layer_arguments_and_state_dicts_are_checked():
    with pytest.raises(ValueError, match="hidden_size=0 must be a positive int"):
        LSTM(3, 0)
    with pytest.raises(ValueError, match=r"dropout=1.0 must be in \[0, 1\)"):
        GRU(3, 2, dropout=1.0)
    with pytest.raises(ValueError, match="nonlinearity='relu'"):
        RNN(3, 2, nonlinearity="relu")
    layer = LSTM(3, 2, bidirectional=True)
    with pytest.raises(ValueError, match="missing: bias_hh_l0_reverse"):
        sd = layer.state_dict()
        layer.load_state_dict({k: v for k, v in sd.items() if k != "bias_hh_l0_reverse"})
    with pytest.raises(ValueError, match=r"weight_ih_l0: shape \(8, 2\) must be \(8, 3\)"):
        layer.load_state_dict({**layer.state_dict(), "weight_ih_l0": np.zeros((8, 2))})
    assert layer.out_shape((7, 3)) == (7, 4)
