"""The one result record: every status from check_backend, results tables at full precision, and
the runner's measuring function apart from storing (callable in another process)."""
import concurrent.futures
import multiprocessing

import numpy as np
import pandas as pd
import pytest

from convbench.backends import _instances, get_backend
from convbench.backends.base import Backend
from convbench.errors import BackendUnavailableError
from convbench.harness import table
from convbench.harness.runner import RunConfig, Settings, load_results, measure_case, run_suite
from convbench.harness.suites import load_suite
from convbench.ops import conv2d_problem, get_op
from convbench.result import (
    COLUMNS,
    FAILED,
    MISTRUSTED,
    PASSED,
    SKIPPED,
    STATUSES,
    UNAVAILABLE,
    UNIMPLEMENTED,
    Result,
)
from convbench.timing import TimingPolicy
from convbench.verify import Reference, check_backend

FAST = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)
FWD = get_op("conv2d:fwd")


class _Zeros(Backend):
    """Answers every conv2d forward with zeros."""

    name = "zeros"

    def conv2d_fwd(self, p, x, w, b):
        return np.zeros(p.y_shape, x.dtype)


class _Absent(Backend):
    name = "absent"

    def unavailable_reason(self):
        return "its device is not here"

    def conv2d_fwd(self, p, x, w, b):  # pragma: no cover - never reached
        raise AssertionError


@pytest.fixture
def extra_backends(monkeypatch):
    monkeypatch.setitem(_instances, "zeros", _Zeros())
    monkeypatch.setitem(_instances, "absent", _Absent())


def test_every_status_comes_from_check_backend(extra_backends):
    p = conv2d_problem((1, 2, 5, 5), (3, 2, 3, 3), padding=1)
    seen = {check_backend("im2col", FWD, p, policy=FAST).status,
            check_backend("zeros", FWD, p).status,
            check_backend("numpy", FWD, p).status,
            check_backend("naive", FWD, p, limit_s=1e-12).status,
            check_backend("absent", FWD, p).status}
    # a sum that cancels to one float32 ulp: all zeros is within tolerance, but not to be trusted
    x = np.array([1.0, -1.0 + 2.0 ** -23], np.float32).reshape(1, 2, 1, 1)
    q = conv2d_problem((1, 2, 1, 1), (1, 2, 1, 1))
    z = check_backend("zeros", FWD, q, inputs=(x, np.ones((1, 2, 1, 1), np.float32), None))
    assert z.status == MISTRUSTED and "all zeros" in z.reason and z.rel_error <= z.tolerance
    assert seen | {z.status} == set(STATUSES)


def test_statuses_carry_their_reasons(extra_backends):
    p = conv2d_problem((1, 2, 5, 5), (3, 2, 3, 3))
    ok = check_backend("im2col", FWD, p, policy=FAST)
    assert ok.status == PASSED and ok.timed and ok.median_s > 0 and ok.samples_s
    assert ok.reference == "float64 conv2d_fwd" and ok.rel_error <= ok.tolerance / 2
    bad = check_backend("zeros", FWD, p)
    assert bad.status == FAILED and "tolerance" in bad.reason and not bad.timed
    assert "does not implement" in check_backend("numpy", FWD, p).reason
    assert check_backend("naive", FWD, p, limit_s=1e-12).status == SKIPPED
    absent = check_backend("absent", FWD, p)
    assert absent.status == UNAVAILABLE and "not here" in absent.reason
    with pytest.raises(BackendUnavailableError):
        get_backend("absent").check(FWD, p, np.float32)
    assert check_backend("numpy", FWD, p).status == UNIMPLEMENTED


def test_an_error_above_half_the_tolerance_is_mistrusted():
    p = conv2d_problem((1, 2, 5, 5), (3, 2, 3, 3))
    inputs = FWD.make_inputs(p, np.random.default_rng(0), np.float32)
    ref = Reference(FWD, p, inputs)
    assert "above half the tolerance" in ref.doubt(ref.outputs, 0.6, 1.0)
    assert ref.doubt(ref.outputs, 0.4, 1.0) == ""


def _results():
    """Rows with awkward values: NumPy floats, NaN, inf, text with commas and quotes."""
    return [Result(suite="s", case='a, "quoted" case', descriptor="mb1ic1ih3oc1kh1",
                   family="conv2d", direction="fwd", backend="im2col", dtype="float32", batch=1,
                   threads=2, status=PASSED, reason="noisy: relative IQR 12%",
                   reference="float64 conv2d_fwd", rel_error=np.float64(3.67e-05),
                   tolerance=1.0 / 3.0, median_s=np.float64(0.1 + 0.2), n_samples=np.int64(7),
                   noisy=np.bool_(True), first_call_s=float("inf"), flops=2e9,
                   samples_s=[0.1, 0.2]),
            Result(case="b", backend="numpy", status=UNIMPLEMENTED, reason="no")]


def test_csv_round_trip_is_exact(tmp_path):
    rows = _results()
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        table.write_csv(table.to_frame(rows), f, header=True)
    text = path.read_text()
    assert "np.float64" not in text and "0.30000000000000004" in text
    back = table.to_results(table.read_csv(path))
    assert [r.row() for r in back] == [r.replace(samples_s=[]).row() for r in rows]
    assert list(table.read_csv(path).columns) == list(COLUMNS)


def test_runs_read_back_exactly_and_resume_keeps_the_rows(tmp_path):
    cases = load_suite("quick", batch=1)[:1]
    cfg = RunConfig("t", cases, ["im2col", "numpy"], policy=FAST)
    frame, _ = run_suite(cfg, tmp_path, peaks=False, report=False)
    disk = load_results(tmp_path)
    pd.testing.assert_frame_equal(disk, frame)
    again, _ = run_suite(cfg, tmp_path, resume=True, peaks=False, report=False)
    pd.testing.assert_frame_equal(again, frame)


def test_measure_case_runs_in_a_fresh_process():
    """What a cluster worker does: measure one (case, direction) elsewhere, get Results back."""
    case = load_suite("quick", batch=1)[0]
    settings = Settings(suite="t", policy=FAST)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        rows = pool.submit(measure_case, case, "conv2d:fwd", ["im2col", "numpy"], settings).result()
    assert [(r.backend, r.status) for r in rows] == [("im2col", PASSED), ("numpy", UNIMPLEMENTED)]
    assert rows[0].case == case.name and rows[0].suite == "t" and rows[0].median_s > 0
