"""backend="auto": verified, timed once, cached per machine in a file, reused without timing."""
import json

import numpy as np
import pytest

import convbench as cb
from convbench import autotune


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_auto_picks_a_verified_backend_caches_it_and_reuses_it(cache_dir, rng, monkeypatch):
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    y = cb.conv2d(x, w, padding=1, backend="auto")
    np.testing.assert_allclose(y, cb.conv2d(x, w, padding=1, backend="naive"), rtol=1e-4, atol=1e-4)
    data = json.loads((cache_dir / "autotune.json").read_text())
    (entries,) = data.values()
    (key, entry) = next(iter(entries.items()))
    assert key.startswith("conv2d:fwd|mb2ic4ih8oc6kh3ph1|float32")
    assert entry["backend"] in entry["median_s"] and "naive" not in entry["median_s"]
    assert entry["backend"] == min(entry["best_s"], key=entry["best_s"].get)
    assert all(entry["best_s"][k] <= entry["median_s"][k] for k in entry["best_s"])

    def no_timing(*a, **k):
        raise AssertionError("timed again despite the cache")
    monkeypatch.setattr("convbench.autotune.check_backend", no_timing)
    np.testing.assert_array_equal(cb.conv2d(x, w, padding=1, backend="auto"), y)


def test_auto_never_chooses_a_backend_that_fails_verification(cache_dir, monkeypatch):
    from convbench.backends import get_backend
    from convbench.ops import conv2d_problem, get_op
    monkeypatch.setattr(type(get_backend("fft")), "conv2d_fwd",
                        lambda self, p, x, w, b: np.zeros(p.y_shape, x.dtype))
    entry = autotune.choose(get_op("conv2d:fwd"), conv2d_problem((1, 2, 6, 6), (2, 2, 3, 3)),
                            np.float32)
    assert entry["backend"] != "fft" and "relative error" in entry["rejected"]["fft"]


def test_auto_covers_every_conv_entry_point_and_pooling(rng):
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    dy = np.ones((1, 2, 4, 4), np.float32)
    dx, dw, db = cb.conv2d_backward(dy, x, w, backend="auto")
    rdx, rdw, rdb = cb.conv2d_backward(dy, x, w, backend="naive")
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, rdw, rtol=1e-4, atol=1e-5)
    y1 = cb.conv1d(x[:, :, 0], w[:, :, 0], padding="causal", backend="auto")
    assert y1.shape == (1, 2, 6)
    assert cb.max_pool2d(x, 2, backend="auto").shape == (1, 3, 3, 3)


def test_cache_file_is_per_machine_key(cache_dir, monkeypatch, rng):
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    cb.conv2d(x, w, backend="auto")
    monkeypatch.setattr(autotune, "machine_key", lambda: "other-machine")
    cb.conv2d(x, w, backend="auto")
    keys = set(json.loads((cache_dir / "autotune.json").read_text()))
    assert "other-machine" in keys and len(keys) == 2


def test_a_hopeless_candidate_is_timed_once_not_measured(cache_dir, monkeypatch):
    import time

    from convbench.backends import get_backend
    from convbench.ops import conv2d_problem, get_op
    fft = type(get_backend("fft"))
    calls = []
    original = fft.conv2d_fwd

    def slow(self, p, x, w, b):
        calls.append(1)
        time.sleep(0.05)
        return original(self, p, x, w, b)
    monkeypatch.setattr(fft, "conv2d_fwd", slow)
    entry = autotune.choose(get_op("conv2d:fwd"), conv2d_problem((1, 2, 7, 7), (2, 2, 3, 3)),
                            np.float32)
    assert entry["backend"] != "fft" and entry["best_s"]["fft"] >= 0.05
    assert len(calls) == 2          # the verifying call and one timed call
