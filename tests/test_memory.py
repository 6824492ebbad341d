"""Memory as a measurement: peak_bytes and workspace_bytes per result, each backend's stated
workspace against what it allocates, the Pareto front of time against memory, and backend="auto"
under a workspace limit."""
import json

import numba
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import convbench as cb
from convbench import autotune
from convbench.backends import backend_names, get_backend
from convbench.cli import main
from convbench.errors import ConvbenchError, UnsupportedError
from convbench.harness import table
from convbench.harness.report import pareto, render
from convbench.memory import get_workspace_limit, traced_peak, workspace_limit
from convbench.ops import (
    RNNProblem,
    conv2d_problem,
    conv_transpose2d_problem,
    get_op,
    ops_of,
    pool2d_problem,
)
from convbench.result import PASSED, Result
from convbench.timing import TimingPolicy
from convbench.train import TrainConfig, trainer
from convbench.train.trainer import ConfigError
from convbench.verify import check_backend

#: The documented agreement of a convbench backend's stated workspace with what one call
#: allocates: (estimate + outputs) within this factor of the measured peak, either way...
FACTOR = 2.0
#: ...give or take this many bytes (Python's own small objects, small per-thread buffers).
SLACK = 8 << 10
#: A peer's estimate follows what the library documents doing (backends.estimates), not arrays
#: convbench can count: on these small shapes oneDNN's scratchpad for a strided input gradient
#: is a few times the estimate (on real layers it is within FACTOR); the guard needs at least
#: this much of the measured peak stated.
PEER_FACTOR = 4.0

PROBLEMS = [
    ("conv2d", conv2d_problem((2, 8, 12, 12), (16, 8, 3, 3), padding=1, bias=True)),
    ("conv2d", conv2d_problem((2, 8, 12, 12), (16, 8, 3, 3), stride=2, padding=1)),
    ("conv2d", conv2d_problem((2, 16, 10, 10), (24, 16, 1, 1))),
    ("conv2d", conv2d_problem((1, 256, 2, 2), (256, 256, 1, 1))),       # the weights dominate
    ("conv2d", conv2d_problem((2, 8, 10, 10), (8, 2, 3, 3), groups=4, padding=1)),
    ("conv_transpose2d", conv_transpose2d_problem((2, 8, 6, 6), (8, 4, 3, 3), stride=2,
                                                  padding=1, output_padding=1)),
    ("max_pool2d", pool2d_problem("max", (2, 8, 12, 12), kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", pool2d_problem("avg", (2, 8, 12, 12), kernel_size=3, stride=2,
                                  padding=((0, 1), (1, 0)))),
    ("lstm", RNNProblem("lstm", 6, 4, 16, 16)),
    ("gru", RNNProblem("gru", 6, 4, 16, 16, reverse=True)),
]


def _cases(name):
    b = get_backend(name)
    for family, p in PROBLEMS:
        for op in ops_of(family):
            try:
                b.check(op, p, np.float32)
            except ConvbenchError:
                continue
            yield op, p


@pytest.mark.parametrize("name", ["im2col", "im2col-numba", "fft", "winograd-f2", "winograd-f4",
                                  "winograd", "numba-cpu", "numpy"])
def test_each_backends_workspace_estimate_is_within_a_factor_of_its_measured_peak(name):
    b = get_backend(name)
    checked = 0
    for op, p in _cases(name):
        r = check_backend(name, op, p, np.float32, memory=True)
        assert r.status == PASSED, (op.name, r.reason)
        stated = b.scratch_bytes(op, p, np.dtype(np.float32)) + op.output_bytes(p, 4)
        where = f"{name} {op.name} {p.descriptor()}: stated {stated}, measured {r.peak_bytes}"
        assert r.peak_bytes <= FACTOR * stated + SLACK, where
        assert stated <= FACTOR * r.peak_bytes + SLACK, where
        assert 0 <= r.workspace_bytes <= r.peak_bytes, where
        checked += 1
    assert checked >= 3


def test_the_torch_estimate_states_a_share_of_the_measured_peak():
    """The memory guard needs a peer's estimate not to understate by much; it may overstate
    (oneDNN often needs no column buffer)."""
    pytest.importorskip("torch")
    b = get_backend("torch")
    for op, p in _cases("torch"):
        r = check_backend("torch", op, p, np.float32, memory=True)
        assert r.peak_bytes is not None and r.peak_bytes > 0, op.name
        stated = b.scratch_bytes(op, p, np.dtype(np.float32)) + op.output_bytes(p, 4)
        assert r.peak_bytes <= PEER_FACTOR * stated + SLACK, (op.name, p.descriptor(), stated,
                                                              r.peak_bytes)


def test_kept_scratch_is_counted_in_the_peak_and_reported_apart():
    p = conv2d_problem((2, 8, 12, 12), (16, 8, 3, 3), padding=1)
    op = get_op("conv2d:fwd")
    policy = TimingPolicy(budget_s=0.01, warmup_budget_s=0.01, min_reps=2, max_reps=3)
    r = check_backend("numba-cpu", op, p, np.float32, policy=policy, memory=True)
    assert r.timed and r.workspace_bytes > 0
    assert r.peak_bytes >= r.workspace_bytes + op.output_bytes(p, 4)
    assert r.workspace_bytes <= r.peak_bytes
    plain = check_backend("numba-cpu", op, p, np.float32)
    assert plain.peak_bytes is None and plain.workspace_bytes is None     # only when asked
    row = Result.from_row(table.to_frame([r]).iloc[0])
    assert (row.peak_bytes, row.workspace_bytes) == (r.peak_bytes, r.workspace_bytes)


def test_runtimes_with_their_own_allocator_report_no_peak():
    for name in ("onnxruntime", "openvino", "jax"):
        if name in backend_names() and get_backend(name).available:
            p = conv2d_problem((1, 2, 6, 6), (2, 2, 3, 3))
            r = check_backend(name, get_op("conv2d:fwd"), p, np.float32, memory=True)
            assert r.status == PASSED and r.peak_bytes is None and r.workspace_bytes is None


def test_traced_peak_sees_numba_allocations_and_what_the_call_leaves():
    @numba.njit
    def scratch(n):
        a = np.ones(n)
        return a.sum()

    scratch(4)                                          # compiled outside the measurement
    assert traced_peak(lambda: scratch(100_000)) >= 800_000   # NRT's array, freed inside
    kept = []
    assert traced_peak(lambda: kept.append(np.ones(50_000))) >= 400_000
    assert traced_peak(lambda: None) < 10_000


def test_numba_cuda_peak_on_the_simulator():
    b = get_backend("numba-cuda")
    if not b.available:
        pytest.skip(b.unavailable_reason())
    p = conv2d_problem((1, 2, 5, 5), (3, 2, 3, 3), padding=1)
    r = check_backend("numba-cuda", get_op("conv2d:fwd"), p, np.float32, memory=True)
    assert r.status == PASSED and r.peak_bytes >= get_op("conv2d:fwd").output_bytes(p, 4)


def _frame(rows):
    return table.to_frame([{"case": c, "direction": "fwd", "backend": b, "status": PASSED,
                            "median_s": t, "peak_bytes": m, "family": "conv2d"}
                           for c, b, t, m in rows])


def test_the_pareto_front_is_faster_than_everything_using_less_memory():
    f = _frame([("a", "small-slow", 3.0, 10), ("a", "mid", 2.0, 20), ("a", "big-slower", 2.5, 40),
                ("a", "big-fast", 1.0, 50), ("a", "tie", 2.0, 20), ("b", "only", 1.0, 5),
                ("b", "unmeasured", 0.5, None)])
    front = pareto(f).set_index(["case", "backend"])["front"]
    assert front[("a", "small-slow")] and front[("a", "big-fast")]
    assert not front[("a", "big-slower")]
    assert front[("a", "mid")] and front[("a", "tie")]        # equal: neither beats the other
    assert front[("b", "only")] and ("b", "unmeasured") not in front.index


def test_the_report_has_a_memory_table_and_plot():
    f = _frame([("a", "x", 1.0, 2 << 20), ("a", "y", 2.0, 1 << 20)])
    page = render(f, {"suite": "t"})
    assert "<h2>Memory</h2>" in page and "time against memory" in page
    assert page.count("title='Pareto front") == 2


# --- auto under a workspace limit -------------------------------------------------------------
@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path))
    return tmp_path


PROBLEM = conv2d_problem((2, 8, 12, 12), (8, 8, 3, 3), padding=1)
FWD = get_op("conv2d:fwd")


def _needs():
    return {n: get_backend(n).scratch_bytes(FWD, PROBLEM, np.dtype(np.float32))
            for n in autotune.candidates(FWD, PROBLEM, np.float32)}


def test_auto_under_a_limit_races_the_candidates_that_fit_and_caches_that_choice(cache_dir,
                                                                                 monkeypatch):
    needs = _needs()
    limit = sorted(needs.values())[1]              # the two smallest fit
    fit = {n for n, b in needs.items() if b <= limit}
    left_out = sorted(set(needs) - fit)
    under = autotune.choose(FWD, PROBLEM, np.float32, budget_s=0.02, workspace_limit=limit)
    assert under["backend"] in fit and set(under["best_s"]) | set(under["rejected"]) == fit
    (section,) = json.loads((cache_dir / "autotune.json").read_text()).values()
    assert list(section["choices"]) == [autotune.problem_key(FWD, PROBLEM, np.float32, left_out)]
    assert list(section["choices"])[0].endswith("|without:" + ",".join(left_out))
    whole = autotune.choose(FWD, PROBLEM, np.float32, budget_s=0.02)
    assert set(whole["best_s"]) | set(whole["rejected"]) == set(needs)

    def no_race(*a, **k):
        raise AssertionError("raced again")
    monkeypatch.setattr(autotune, "measure_choice", no_race)
    autotune._memo.clear()
    same = max(b for b in needs.values() if b <= limit) + 1     # leaves out the same ones
    assert autotune.choose(FWD, PROBLEM, np.float32, workspace_limit=same) == under
    everything = autotune.choose(FWD, PROBLEM, np.float32, workspace_limit=max(needs.values()))
    assert everything == whole                                 # a limit leaving none out
    # retuning a limited key races the fitting ones only
    monkeypatch.setattr(autotune, "measure_choice", lambda *a, names=None, **k: {
        "backend": sorted(names)[0], "best_s": dict.fromkeys(names, 1.0), "rejected": {}})
    key = autotune.problem_key(FWD, PROBLEM, np.float32, left_out)
    assert autotune.retune_key(key) == sorted(fit)[0]


def test_the_limit_reaches_auto_from_every_entry_point(cache_dir, rng):
    needs = _needs()
    smallest = min(needs, key=needs.get)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    ref = cb.conv2d(x, w, padding=1, backend="im2col")
    auto = get_backend("auto")
    y = cb.conv2d(x, w, padding=1, backend="auto", workspace_limit=needs[smallest])
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    with workspace_limit(needs[smallest]):
        assert auto.chosen(FWD, PROBLEM, np.float32) == smallest
    assert get_workspace_limit() is None
    cb.set_workspace_limit(needs[smallest])
    try:
        assert auto.chosen(FWD, PROBLEM, np.float32) == smallest
        r = check_backend("auto", FWD, PROBLEM, np.float32)
        assert r.status == PASSED and r.reason.startswith(f"chose {smallest}")
        with workspace_limit(None):                                # a scope lifts it
            assert get_workspace_limit() is None
    finally:
        cb.set_workspace_limit(None)


def test_no_backend_within_the_limit_is_an_answer_with_the_needs(cache_dir, rng):
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    with pytest.raises(UnsupportedError, match="workspace limit of 1 B .*im2col needs"):
        cb.conv2d(x, w, padding=1, backend="auto", workspace_limit=1)
    with workspace_limit(1):
        r = check_backend("auto", FWD, PROBLEM, np.float32)
    assert r.status == "UNIMPLEMENTED" and "workspace limit" in r.reason


def test_bad_limits_are_errors_naming_the_argument(rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="workspace_limit=-1 must be"):
        cb.set_workspace_limit(-1)
    with pytest.raises(ValueError, match="workspace_limit='16M' must be"):
        cb.conv2d(x, w, backend="auto", workspace_limit="16M")
    with pytest.raises(ValueError, match="applies to backend='auto' only"):
        cb.conv2d(x, w, backend="im2col", workspace_limit=1 << 20)
    with pytest.raises(ConfigError, match="workspace_limit=2.5"):
        TrainConfig(workspace_limit=2.5).validate()
    result = CliRunner().invoke(main, ["run", "--max-workspace", "lots"])
    assert result.exit_code == 2 and "--max-workspace" in result.output
    result = CliRunner().invoke(main, ["train", "--max-workspace", "-3M"])
    assert result.exit_code == 2 and "--max-workspace" in result.output


def test_the_trainer_runs_under_its_limit(monkeypatch):
    """Its layers resolve auto through AutoBackend.chosen, which reads the limit in force."""
    seen = []
    monkeypatch.setattr(trainer, "_train", lambda *a: seen.append(get_workspace_limit()) or {})
    trainer.train(TrainConfig(workspace_limit=8 << 20), verbose=False)
    assert seen == [8 << 20] and get_workspace_limit() is None


def test_a_run_records_memory_and_passes_the_limit(tmp_path, cache_dir):
    suite = tmp_path / "s.txt"
    suite.write_text("mb2ic8ih12oc8kh3ph1\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--backends",
                                       "im2col,numba-cpu,auto", "--budget", "0.01",
                                       "--no-peaks", "--max-workspace", "1k", "--out", str(out)])
    frame = pd.read_csv(out / "results.csv").set_index("backend")
    assert result.exit_code == 0, result.output
    assert frame.loc["im2col", "peak_bytes"] > 0 and frame.loc["numba-cpu", "workspace_bytes"] > 0
    assert frame.loc["auto", "status"] == "UNIMPLEMENTED"             # nothing fits in 1 KiB
    assert json.loads((out / "meta.json").read_text())["workspace_limit"] == 1024
    assert "<h2>Memory</h2>" in (out / "report.html").read_text()
