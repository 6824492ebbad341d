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
    (section,) = data.values()
    assert section["machine"] == autotune.machine_parts()
    (key, entry) = next(iter(section["choices"].items()))
    assert key.startswith("conv2d:fwd|mb2ic4ih8oc6kh3ph1|float32")
    assert entry["backend"] in entry["median_s"] and "naive" not in entry["median_s"]
    assert entry["rounds"] >= 1 and entry["why"]
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
    assert len(calls) == 3          # the verifying call, the warm-up round and one round


def test_machine_key_changes_with_threads_blas_and_environment(monkeypatch):
    from convbench.threads import set_threads
    for name in ("OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "OMP_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    parts = autotune.machine_parts()
    assert parts["cpu"] and "blas=" in parts["blas"] and parts["threads"]
    base = autotune.machine_key()
    assert autotune.machine_key() == base
    seen = {base}
    for name, value in (("OPENBLAS_CORETYPE", "Haswell"), ("NUMBA_CPU_NAME", "generic"),
                        ("NUMBA_CPU_FEATURES", "+avx2"), ("OMP_NUM_THREADS", "1"),
                        ("OPENBLAS_NUM_THREADS", "1")):
        monkeypatch.setenv(name, value)
        key = autotune.machine_key()
        assert key not in seen, name
        seen.add(key)
        monkeypatch.delenv(name)
    assert autotune.machine_key() == base
    try:
        set_threads(1)
        one = autotune.machine_key()
        set_threads(2)
        assert one != autotune.machine_key()
    finally:
        set_threads(None)


class FakeTimer:
    """Each candidate takes the next of its preset durations; calls and a clock are recorded."""

    def __init__(self, durations):
        self.durations = {k: list(v) for k, v in durations.items()}
        self.order, self.now = [], 0.0
        self.calls = {name: (lambda name=name: self.order.append(name)) for name in durations}

    def time_call(self, fn):
        fn()
        name = self.order[-1]
        t = self.durations[name].pop(0) if len(self.durations[name]) > 1 \
            else self.durations[name][0]
        self.now += t
        return t

    def clock(self):
        return self.now


def test_race_interleaves_in_rotating_order_and_stops_once_separated():
    fake = FakeTimer({"a": [1.0], "b": [2.0], "c": [3.0]})
    samples, hopeless, rounds = autotune.race(fake.calls, fake.time_call, budget_s=1e9,
                                              clock=fake.clock)
    # a warm-up round, then rotating rounds
    assert fake.order[:12] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    # a was faster in every round: 6 rounds is the first with a sign test below 2%
    assert rounds == 6 and hopeless == []
    assert samples == {"a": [1.0] * 6, "b": [2.0] * 6, "c": [3.0] * 6}


def test_race_on_noise_runs_until_the_budget_and_drops_the_hopeless():
    # a and b alternate which is faster: never separated; c is 10x behind after one round
    fake = FakeTimer({"a": [1.0] + [1.0, 1.2] * 50, "b": [1.0] + [1.2, 1.0] * 50, "c": [12.0]})
    samples, hopeless, rounds = autotune.race(fake.calls, fake.time_call, budget_s=30.0,
                                              clock=fake.clock)
    assert hopeless == ["c"] and len(samples["c"]) == 1
    # the budget (from the end of the first counted round, which c was still in) is checked
    # after each round: the race ends in the round that crosses it
    spent = fake.clock() - (1.0 + 1.0 + 12.0) - (1.0 + 1.2 + 12.0)
    assert 30.0 < spent <= 30.0 + 2.2 + 1e-9 and rounds < autotune.MAX_ROUNDS
    assert len(samples["a"]) == len(samples["b"]) == rounds


def test_race_lets_the_blas_threads_settle_before_a_candidate_that_does_not_use_them():
    fake = FakeTimer({"blas": [1.0], "numba": [2.0], "other-blas": [3.0]})
    waits = []

    def settle(s):
        waits.append((fake.order[-1], s))
    autotune.race(fake.calls, fake.time_call, budget_s=1e9, clock=fake.clock,
                  blas={"blas", "other-blas"}, settle=settle)
    # only a switch from a BLAS candidate to one that is not waits; each such switch does
    switches = [(a, b) for a, b in zip(fake.order, fake.order[1:])
                if a in ("blas", "other-blas") and b == "numba"]
    assert len(waits) == len(switches) > 0
    assert all(prev in ("blas", "other-blas") and s == autotune.SETTLE_S for prev, s in waits)


def test_ties_within_noise_go_to_the_more_accurate_algorithm():
    noisy = {"winograd-f4": [1.0, 1.1, 0.95, 1.05, 1.0, 1.1],
             "numba-cpu": [1.05, 1.0, 1.0, 1.0, 1.1, 1.05]}
    accuracy = {"winograd-f4": (40.0, 1e-6), "numba-cpu": (0.0, 1e-7)}
    best, ties, why = autotune.pick(noisy, accuracy)
    assert best == "numba-cpu" and "tied within noise" in why
    # separated: the faster wins however inaccurate
    clear = {"winograd-f4": [1.0] * 8, "numba-cpu": [1.3] * 8}
    assert autotune.pick(clear, accuracy)[0] == "winograd-f4"
    # not separated (too few rounds) but far behind: speed is not given away for accuracy
    far = {"winograd-f4": [1.0, 1.0], "numba-cpu": [2.0, 0.9]}
    assert autotune.pick(far, accuracy)[0] == "winograd-f4"
    # equal rounding steps: one input's measured error is luck, the lower median decides
    same = {"im2col": [1.0, 1.1, 1.0, 1.0], "im2col-numba": [1.1, 1.0, 1.05, 1.05]}
    assert autotune.pick(same, {"im2col": (0.0, 3e-7), "im2col-numba": (0.0, 2e-7)})[0] \
        == "im2col"


def test_autotune_command_shows_clears_and_retunes(cache_dir, rng):
    from click.testing import CliRunner

    from convbench.cli import main
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    cb.conv2d(x, w, backend="auto")
    r = CliRunner().invoke(main, ["autotune", "show"])
    assert r.exit_code == 0 and "conv2d:fwd|mb1ic2ih5oc2kh3|float32" in r.output, r.output
    before = json.loads((cache_dir / "autotune.json").read_text())
    r = CliRunner().invoke(main, ["autotune", "retune", "--budget", "0.01"])
    assert r.exit_code == 0 and "1 problem" in r.output, r.output
    after = json.loads((cache_dir / "autotune.json").read_text())
    (mkey,) = after
    assert before[mkey]["choices"].keys() == after[mkey]["choices"].keys()
    suite = cache_dir / "suite.txt"
    suite.write_text("mb1ic2ih6oc3kh1\n")
    r = CliRunner().invoke(main, ["autotune", "retune", "--suite", str(suite),
                                  "--direction", "fwd", "--budget", "0.01"])
    assert r.exit_code == 0 and "conv2d:fwd|mb1ic2ih6oc3kh1|float32" in \
        json.dumps(json.loads((cache_dir / "autotune.json").read_text())), r.output
    r = CliRunner().invoke(main, ["autotune", "clear"])
    assert r.exit_code == 0 and "2 choices" in r.output, r.output
    assert autotune.cached_problems() == []


def test_gemm_provider_choice_is_raced_cached_and_retuned(cache_dir, monkeypatch):
    choice = autotune.choose_gemm(7, 5, 3, np.float32, trans_b=True, budget_s=0.01)
    assert choice in autotune.GEMM_PROVIDERS
    (key,) = autotune.cached_problems()
    assert key == "gemm|7x5x3|NT|float32"
    autotune._memo.clear()
    monkeypatch.setattr(autotune, "race", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("raced again despite the cache")))
    assert autotune.choose_gemm(7, 5, 3, np.float32, trans_b=True) == choice
    monkeypatch.undo()
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(cache_dir))
    assert autotune.retune_key(key, 0.01) in autotune.GEMM_PROVIDERS


def test_linear_layer_gives_the_same_products_on_either_provider(rng):
    from convbench.train.layers import Linear
    x = rng.standard_normal((9, 6)).astype(np.float32)
    dy = rng.standard_normal((9, 4)).astype(np.float32)
    out = {}
    for provider in ("blas", "convbench", "auto"):
        layer = Linear(6, 4, gemm=provider)
        y = layer.forward(x, True)
        dx = layer.backward(dy)
        out[provider] = (y, dx, layer.grads[0])
        np.testing.assert_allclose(y, x @ layer.w.T + layer.b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx, dy @ layer.w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.grads[0], dy.T @ x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="gemm='mkl'"):
        Linear(6, 4, gemm="mkl")
