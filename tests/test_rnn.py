"""Recurrent cells: PyTorch parity with copied weights, BPTT by finite differences, errors."""
import numpy as np
import pytest
from conftest import available_backends

import convbench as cb
from convbench.ops import RNNProblem
from convbench.ops import reference as ref

RNN_BACKENDS = available_backends("lstm:fwd")


def _torch_layer(cell, I, H):  # noqa: E741 - PyTorch's name for the input size
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[cell]
    return torch, cls(I, H)


@pytest.mark.parametrize("backend", RNN_BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_weights_copied_from_torch_give_the_same_outputs(cell, backend, rng):
    torch, m = _torch_layer(cell, 5, 7)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    h0 = rng.standard_normal((3, 7)).astype(np.float32)
    ws = (sd["weight_ih_l0"], sd["weight_hh_l0"], sd["bias_ih_l0"], sd["bias_hh_l0"])
    with torch.no_grad():
        if cell == "lstm":
            c0 = rng.standard_normal((3, 7)).astype(np.float32)
            state = (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
            yt, (ht, ct) = m(torch.from_numpy(x), state)
            y, (hT, cT) = cb.lstm(x, (h0, c0), *ws, backend=backend)
            np.testing.assert_allclose(cT, ct[0].numpy(), rtol=1e-5, atol=1e-5)
        else:
            yt, ht = m(torch.from_numpy(x), torch.from_numpy(h0)[None])
            y, hT = getattr(cb, cell)(x, h0, *ws, backend=backend)
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hT, ht[0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_reference_bptt_matches_finite_differences(cell, rng):
    p = RNNProblem(cell, 4, 2, 3, 5)
    G = p.gates
    args = [rng.standard_normal(p.x_shape), rng.standard_normal(p.h_shape),
            rng.standard_normal(p.h_shape) if cell == "lstm" else None,
            rng.standard_normal((G * 5, 3)) * 0.5, rng.standard_normal((G * 5, 5)) * 0.5,
            rng.standard_normal(G * 5), rng.standard_normal(G * 5)]
    dy, dhT = rng.standard_normal(p.y_shape), rng.standard_normal(p.h_shape)
    dcT = rng.standard_normal(p.h_shape) if cell == "lstm" else None

    def loss(a):
        y, hT, cT = ref.rnn_fwd(p, *a)
        return np.sum(dy * y) + np.sum(dhT * hT) + (np.sum(dcT * cT) if cT is not None else 0)

    grads = ref.rnn_bwd(p, dy, dhT, dcT, *args)
    # grads: dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh <-> args x, h0, c0, w_ih, w_hh, b_ih, b_hh
    for i, g in enumerate(grads):
        if args[i] is None:
            assert g is None
            continue
        v = rng.standard_normal(args[i].shape)
        h = 1e-6
        plus = list(args)
        minus = list(args)
        plus[i] = args[i] + h * v
        minus[i] = args[i] - h * v
        fd = (loss(plus) - loss(minus)) / (2 * h)
        assert float(np.sum(g * v)) == pytest.approx(fd, rel=1e-6, abs=1e-8), f"gradient {i}"


@pytest.mark.parametrize("backend", available_backends("lstm:bwd"))
def test_lstm_backward_api_matches_torch_autograd(backend, rng):
    torch, m = _torch_layer("lstm", 3, 4)
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    h0, c0 = (rng.standard_normal((2, 4)).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((5, 2, 4)).astype(np.float32)
    ws = (sd["weight_ih_l0"], sd["weight_hh_l0"], sd["bias_ih_l0"], sd["bias_hh_l0"])
    dx, (dh0, dc0), dwi, dwh, dbi, dbh = cb.lstm_backward(dy, None, x, (h0, c0), *ws,
                                                          backend=backend)
    xt = torch.from_numpy(x).requires_grad_()
    y, _ = m(xt, (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    y.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dwi, m.weight_ih_l0.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbh, m.bias_hh_l0.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_single_step_cells_equal_one_step_sequences(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    h = rng.standard_normal((2, 4)).astype(np.float32)
    c = rng.standard_normal((2, 4)).astype(np.float32)
    w = {g: (rng.standard_normal((g * 4, 3)).astype(np.float32),
             rng.standard_normal((g * 4, 4)).astype(np.float32)) for g in (1, 3, 4)}
    h1, c1 = cb.lstm_cell(x, (h, c), *w[4])
    y, (hT, cT) = cb.lstm(x[None], (h, c), *w[4])
    np.testing.assert_array_equal(h1, hT)
    np.testing.assert_array_equal(c1, cT)
    np.testing.assert_array_equal(cb.gru_cell(x, h, *w[3]), cb.gru(x[None], h, *w[3])[1])
    np.testing.assert_array_equal(cb.rnn_tanh_cell(x, h, *w[1]),
                                  cb.rnn_tanh(x[None], h, *w[1])[0][0])


def test_bad_recurrent_arguments_name_the_value(rng):
    x = np.zeros((3, 2, 5), np.float32)
    h = np.zeros((2, 4), np.float32)
    w_ih, w_hh = np.zeros((16, 5), np.float32), np.zeros((16, 4), np.float32)
    with pytest.raises(ValueError,
                       match=r"w_hh.shape\[1\]=4 must equal the hidden size h0.shape\[1\]=6"):
        cb.lstm(x, (np.zeros((2, 6), np.float32),) * 2, w_ih, w_hh)
    with pytest.raises(ValueError,
                       match=r"w_ih.shape\[0\]=16 must be gates\*hidden = 3\*4 = 12 for gru"):
        cb.gru(x, h, w_ih, np.zeros((12, 4), np.float32))
    with pytest.raises(ValueError,
                       match=r"w_ih.shape\[1\]=5 must equal the input size x.shape\[2\]=3"):
        cb.lstm(x[:, :, :3], (h, h), w_ih, w_hh)
    with pytest.raises(ValueError,
                       match=r"h0.shape\[0\]=1 must equal the batch size x.shape\[1\]=2"):
        cb.rnn_tanh(x, h[:1], np.zeros((4, 5), np.float32), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="b_ih and b_hh must be given together"):
        cb.lstm(x, (h, h), w_ih, w_hh, np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="state must be a pair"):
        cb.lstm(x, h, w_ih, w_hh)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_numba_cpu_gates_parallel_and_serial_agree(cell, monkeypatch):
    """Small steps run their fused gates on the calling thread, large ones in parallel over the
    batch: the two forms compute the same numbers, to the last bits LLVM's contraction of
    multiply-adds may differ in between two compilations."""
    import convbench as cb
    from convbench.backends.numba_cpu import rnn as ncpu_rnn
    rng = np.random.default_rng(4)
    T, N, I, H = 4, 5, 3, 7  # noqa: E741 - PyTorch's name for the input size
    G = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[cell]
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    h0 = rng.standard_normal((N, H)).astype(np.float32)
    w_ih = rng.standard_normal((G * H, I)).astype(np.float32)
    w_hh = rng.standard_normal((G * H, H)).astype(np.float32)
    dy = rng.standard_normal((T, N, H)).astype(np.float32)
    state = (h0, h0.copy()) if cell == "lstm" else h0
    fwd, bwd = getattr(cb, cell), getattr(cb, f"{cell}_backward")
    out = []
    for threshold in (1 << 30, 1):        # serial everywhere, then parallel everywhere
        monkeypatch.setattr(ncpu_rnn, "SERIAL_STATE", threshold)
        y = fwd(x, state, w_ih, w_hh, backend="numba-cpu")[0]
        grads = bwd(dy, None, x, state, w_ih, w_hh, backend="numba-cpu")
        out.append([y, grads[0], grads[2], grads[3]])
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
