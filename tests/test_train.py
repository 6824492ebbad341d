"""The trainer: layer gradients, optimiser rules, reproducibility, early stopping, data, errors."""
import json
import pickle

import numpy as np
import pytest

from convbench.train import (
    SGD,
    Adagrad,
    Adam,
    RMSprop,
    TrainConfig,
    evaluate_checkpoint,
    train,
    tune,
)
from convbench.train import layers as L
from convbench.train.data import augment, load, read_idx
from convbench.train.init import init_weight
from convbench.train.model import build_model


def _f64(layer):
    """The layer with float64 parameters, for finite differences."""
    for part in getattr(layer, "parts", [layer]):
        if hasattr(part, "w"):
            part.w = part.w.astype(np.float64)
            part.b = part.b.astype(np.float64)
            part.params = [part.w, part.b]
    if hasattr(layer, "parts"):
        layer.params = [q for part in layer.parts for q in part.params]
    return layer


LAYERS = [
    ("conv", lambda: L.Conv2d(2, 3, 3, 2, 1, "im2col"), (2, 2, 7, 7)),
    ("conv numba", lambda: L.Conv2d(2, 3, 3, 1, 1, "numba-cpu"), (2, 2, 5, 5)),
    ("maxpool", lambda: L.MaxPool2d(2, backend="numpy"), (2, 2, 6, 6)),
    ("avgpool", lambda: L.AvgPool2d(3, 2, 1, backend="numba-cpu"), (2, 2, 7, 7)),
    ("gap", lambda: L.GlobalAvgPool(), (2, 3, 4, 5)),
    ("linear", lambda: L.Linear(6, 4), (3, 6)),
    ("relu", lambda: L.ReLU(), (3, 5)),
    ("flatten", lambda: L.Flatten(), (2, 3, 2, 2)),
    ("residual", lambda: L.ResidualBlock(2, 3, 2, "im2col"), (2, 2, 6, 6)),
    ("residual identity", lambda: L.ResidualBlock(3, 3, 1, "numba-cpu"), (1, 3, 5, 5)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[x[0] for x in LAYERS])
def test_layer_backward_matches_finite_differences(name, make, shape, rng):
    layer = _f64(make())
    x = rng.standard_normal(shape)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    h = 1e-6
    v = rng.standard_normal(shape)
    fd = (np.sum(dy * layer.forward(x + h * v, True))
          - np.sum(dy * layer.forward(x - h * v, True))) / (2 * h)
    assert float(np.sum(dx * v)) == pytest.approx(fd, rel=1e-5, abs=1e-7)
    layer.forward(x, True)
    layer.backward(dy)
    for p, g in zip(layer.params, layer.grads):
        vp = rng.standard_normal(p.shape)
        p += h * vp
        plus = np.sum(dy * layer.forward(x, True))
        p -= 2 * h * vp
        minus = np.sum(dy * layer.forward(x, True))
        p += h * vp
        assert float(np.sum(g * vp)) == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-7)


def test_dropout_scales_kept_units_and_is_identity_in_evaluation(rng):
    d = L.Dropout(0.5, np.random.default_rng(1))
    x = np.ones((1000,), np.float32)
    y = d.forward(x, True)
    assert set(np.unique(y)) == {0.0, 2.0} and 400 < (y == 0).sum() < 600
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), y)
    np.testing.assert_array_equal(d.forward(x, False), x)


def test_softmax_cross_entropy_gradient(rng):
    logits = rng.standard_normal((4, 5))
    labels = np.array([0, 3, 4, 1])
    loss, d = L.softmax_cross_entropy(logits, labels)
    v = rng.standard_normal(logits.shape)
    h = 1e-6
    fd = (L.softmax_cross_entropy(logits + h * v, labels)[0]
          - L.softmax_cross_entropy(logits - h * v, labels)[0]) / (2 * h)
    assert float(np.sum(d * v)) == pytest.approx(fd, rel=1e-6)


# --- optimisers: hand-computed steps -------------------------------------------------------------
def _run(opt_cls, grads, **kw):
    p = np.array([1.0, -2.0], np.float64)
    opt = opt_cls([p], **kw)
    for g in grads:
        opt.step([np.array(g, np.float64)])
    return p


def test_sgd_momentum_nesterov_weight_decay_by_hand():
    np.testing.assert_allclose(_run(SGD, [[1, 1]], lr=0.1), [0.9, -2.1])
    # momentum 0.9: buf1 = g1 = 1; buf2 = 0.9*1 + 2 = 2.9; p = 1 - 0.1*1 - 0.1*2.9
    np.testing.assert_allclose(_run(SGD, [[1, 0], [2, 0]], lr=0.1, momentum=0.9), [0.61, -2.0])
    # nesterov: step1 g = 1 + 0.9*1 = 1.9; step2 buf = 2.9, g = 2 + 0.9*2.9 = 4.61
    np.testing.assert_allclose(_run(SGD, [[1, 0], [2, 0]], lr=0.1, momentum=0.9, nesterov=True),
                               [1 - 0.19 - 0.461, -2.0])
    # weight decay 0.5 adds 0.5 * p to the gradient: 1 + 0.5 = 1.5 and 0 - 1 = -1
    np.testing.assert_allclose(_run(SGD, [[1, 0]], lr=0.1, weight_decay=0.5), [0.85, -1.9])


def test_adam_adagrad_rmsprop_by_hand():
    # Adam, first step: m = 0.1 g, v = 0.001 g^2, bias-corrected ratio = g/|g| -> p -= lr*sign(g)
    np.testing.assert_allclose(_run(Adam, [[3, -4]], lr=0.01), [0.99, -1.99], rtol=1e-6)
    # Adagrad: sum = g^2 = 4 -> p -= 0.1 * 2 / 2
    np.testing.assert_allclose(_run(Adagrad, [[2, 0]], lr=0.1), [0.9, -2.0])
    # RMSprop: v = 0.01 * 4 = 0.04 -> p -= 0.01 * 2 / 0.2
    np.testing.assert_allclose(_run(RMSprop, [[2, 0]], lr=0.01), [0.9, -2.0], rtol=1e-6)


@pytest.mark.parametrize("name,ours,kw", [
    ("SGD", SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adagrad", Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=0.01)),
    ("RMSprop", RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    ("Adam", Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
])
def test_optimisers_match_torch_step_by_step(name, ours, kw, rng):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    p = p0.copy()
    opt = ours([p], **kw)
    pt = torch.tensor(p0, requires_grad=True)
    topt = getattr(torch.optim, name)([pt], **kw)
    for g in grads:
        opt.step([g])
        pt.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, pt.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_bad_optimiser_arguments():
    p = [np.zeros(2, np.float32)]
    with pytest.raises(ValueError, match=r"lr=-0.1 must be a finite number >= 0"):
        SGD(p, lr=-0.1)
    with pytest.raises(ValueError, match=r"lr=inf must be a finite number >= 0"):
        Adam(p, lr=float("inf"))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\]=1.0 must be < 1"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError,
                       match=r"grads\[0\].shape=\(3,\) must equal params\[0\].shape=\(2,\)"):
        SGD(p, lr=0.1).step([np.zeros(3)])


# --- whole models ---------------------------------------------------------------------------
def test_training_step_gradients_agree_across_conv_backends(rng):
    x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    grads = {}
    for backend in ("im2col", "numba-cpu", "fft", "torch"):
        model = build_model("resnet-mini", (1, 8, 8), 10, backend, dropout=0.0, seed=3)
        _, d = L.softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(d)
        grads[backend] = [g.copy() for g in model.grads]
    for backend, gs in grads.items():
        for g, r in zip(gs, grads["im2col"]):
            np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-6, err_msg=backend)


def test_model_that_does_not_fit_the_data_names_the_layer():
    with pytest.raises(ValueError, match=r"layer 7 \(MaxPool2d\(2\)\) does not fit input "
                                         r"shape \(64, 1, 1\)"):
        build_model("small-cnn", (1, 2, 2), 10, "im2col")
    with pytest.raises(ValueError, match="model='vgg' must be one of small-cnn, resnet-mini"):
        build_model("vgg", (1, 8, 8), 10)


def test_zero_initialisation_is_refused():
    with pytest.raises(ValueError, match="no symmetry breaking"):
        init_weight((4, 3, 3, 3), "zeros", np.random.default_rng(0))


def test_he_and_xavier_follow_pytorch_formulas():
    rng = np.random.default_rng(0)
    w = init_weight((256, 128, 3, 3), "he_normal", rng)
    assert w.std() == pytest.approx(np.sqrt(2 / (128 * 9)), rel=0.02)
    w = init_weight((300, 200), "xavier_uniform", rng)
    assert np.abs(w).max() <= np.sqrt(6 / 500) and np.abs(w).max() > 0.99 * np.sqrt(6 / 500)


FAST = dict(epochs=2, backend="im2col", batch_size=128)


def test_seeded_run_reproduces_its_numbers(tmp_path):
    a = train(TrainConfig(**FAST), tmp_path / "a", verbose=False)
    b = train(TrainConfig(**FAST), tmp_path / "b", verbose=False)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["test_accuracy"] == b["test_accuracy"]
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    for key in ("test_accuracy", "best_epoch", "epochs_run", "seconds", "backends"):
        assert key in s
    assert (tmp_path / "a" / "curves.png").exists() and (tmp_path / "a" / "log.csv").exists()
    ev = evaluate_checkpoint(tmp_path / "a" / "best.npz")
    assert ev["epoch"] == s["best_epoch"] and 0 <= ev["test_accuracy"] <= 1


def test_early_stopping_restores_the_best_epoch(tmp_path, monkeypatch):
    from convbench.train import trainer
    scripted = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])
    real = trainer.evaluate_arrays
    snapshots = {}

    def fake(model, x, y, batch):
        if len(y) == 270:                       # the validation split
            loss = next(scripted)
            snapshots[len(snapshots)] = [p.copy() for p in model.params]
            return loss, 0.5
        return real(model, x, y, batch)
    monkeypatch.setattr(trainer, "evaluate_arrays", fake)
    s = train(TrainConfig(**{**FAST, "epochs": 10, "patience": 2}), tmp_path, verbose=False)
    assert s["best_epoch"] == 2 and s["epochs_run"] == 4
    model, *_ = trainer.load_checkpoint(tmp_path / "best.npz")
    for p, q in zip(model.params, snapshots[1]):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("kw,match", [
    (dict(optimizer="lbfgs"), "optimizer='lbfgs' must be one of"),
    (dict(lr=-1.0), r"lr=-1.0 must be a finite number > 0"),
    (dict(lr=float("inf")), r"lr=inf must be a finite number > 0"),
    (dict(lr=float("nan")), r"lr=nan must be a finite number > 0"),
    (dict(dropout=1.5), r"dropout=1.5 must be in \[0, 1\)"),
    (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
    (dict(init="bogus"), "init='bogus' must be one of xavier_uniform"),
    (dict(data="imagenet"), "data='imagenet' must be 'digits', 'mnist:PATH'"),
    (dict(data="mnist:/nonexistent"), "'/nonexistent' is not a folder"),
    (dict(momentum=float("nan")), "momentum=nan must be a finite number >= 0"),
    (dict(epochs=0), "epochs=0 must be a positive int"),
    (dict(backend="cudnn"), "unknown backend 'cudnn'"),
    (dict(schedule="warm"), "schedule='warm'"),
])
def test_bad_configuration_names_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        train(TrainConfig(**kw), verbose=False)


def test_resume_from_a_checkpoint_continues(tmp_path):
    train(TrainConfig(**FAST), tmp_path / "a", verbose=False)
    s = train(TrainConfig(**{**FAST, "epochs": 3}), tmp_path / "b", verbose=False,
              resume=str(tmp_path / "a" / "best.npz"))
    assert s["history"][0]["epoch"] == 2 and s["epochs_run"] == 1


def test_tune_random_and_grid(tmp_path):
    base = TrainConfig(**{**FAST, "epochs": 1})
    res = tune(base, {"lr": (1e-3, 1e-2), "optimizer": ["adam", "rmsprop"]}, "random", 2, 0,
               tmp_path, log=lambda m: None)
    assert len(res) == 2 and res[0]["val_acc"] >= res[1]["val_acc"]
    assert 1e-3 <= res[0]["lr"] <= 1e-2 and (tmp_path / "tune.csv").exists()
    res = tune(base, {"lr": [1e-3, 3e-3], "optimizer": ["adam"]}, "grid", log=lambda m: None)
    assert sorted(r["lr"] for r in res) == [1e-3, 3e-3]


# --- data -------------------------------------------------------------------------------------
def test_mnist_idx_and_cifar_batches_load(tmp_path):
    import struct
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        b"\0\0\x08\x03" + struct.pack(">III", 3, 28, 28) + imgs.tobytes())
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        b"\0\0\x08\x01" + struct.pack(">I", 3) + bytes([7, 1, 4]))
    ds = load(f"mnist:{tmp_path}")
    assert ds.x.shape == (3, 1, 28, 28) and list(ds.y) == [7, 1, 4]
    np.testing.assert_allclose(ds.x[0, 0], imgs[0] / 255.0, rtol=1e-6)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    for i in range(1, 6):
        with open(tmp_path / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": np.full((2, 3072), i, np.uint8), b"labels": [i, i]}, f)
    c = load(f"cifar10:{tmp_path}")
    assert c.x.shape == (10, 3, 32, 32) and c.flips and list(c.y[:2]) == [1, 1]
    with pytest.raises(ValueError, match="data='imagenet'"):
        load("imagenet")


def test_augment_shifts_keep_the_content(rng):
    x = np.zeros((50, 1, 5, 5), np.float32)
    x[:, 0, 2, 2] = 1
    out = augment(x, rng, shift=1)
    assert out.shape == x.shape and np.all(out.sum(axis=(1, 2, 3)) == 1)
    assert len({tuple(np.argwhere(o[0])[0]) for o in out}) > 1
