"""The harness: descriptors, statistics, timing, streaming results, resume, comparison, reports."""
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convbench.harness.compare import compare_runs, compare_samples, regressions
from convbench.harness.runner import RunConfig, Runner, load_results, run_suite
from convbench.harness.suites import SUITES, load_suite
from convbench.ops import Conv2dProblem, descriptor
from convbench.stats import median_ci, summarize
from convbench.timing import TimingPolicy, measure

FAST = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)


# --- descriptors --------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_conv_descriptor_round_trips(seed):
    from convbench.cases import random_conv_problem
    p = random_conv_problem(np.random.default_rng(seed), max_spatial=30, max_channels=12)
    p = Conv2dProblem(**{**vars(p), "bias": False})
    text = p.descriptor()
    assert descriptor.parse(text)[0] == p
    assert descriptor.parse(text)[0].descriptor() == text


@pytest.mark.parametrize("text", ["max:mb8ic64ih112kh3sh2ph1",
                                  "avg:mb1ic3ih7iw9kh3kw2sh2sw1ph1cm1cip0",
                                  "max:mb2ic4ih9kh3sh2dh1", "lstm:t64mb16slc256sic256",
                                  "gru:t5mb2slc3sic4b0", "rnn_tanh:t1mb1slc1sic1",
                                  "g32mb1ic32ih112oc32kh3ph1"])
def test_other_descriptors_round_trip(text):
    assert descriptor.parse(text)[0].descriptor() == text


def test_descriptor_defaults_and_names():
    p, name = descriptor.parse('mb8ic64ih56oc64kh3ph1n"res2 3x3"')
    assert name == "res2 3x3"
    assert (p.W, p.S, p.stride, p.padding, p.dilation, p.groups) == (
        56, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    assert descriptor.parse("ic3ih8oc4kh3")[0].N == 2                  # benchdnn's default batch
    assert descriptor.parse("mb1ic1ih9oc1kh3dh1")[0].dilation == (2, 2)  # benchdnn counts gaps


@pytest.mark.parametrize("text,match", [
    ("mb8ic64ih56oc64kh3zz1", "unknown key 'zz'"),
    ("mb8ic64oc64kh3", "missing ih"),
    ("mb8ic64ih56oc64kh3ph", "cannot parse 'ph'"),
    ("conv2:mb1ic1ih3oc1kh1", "unknown op 'conv2'"),
    ("mb1ic1ih1oc1kh1mb2", "key 'mb' given twice"),
])
def test_bad_descriptors_say_what_is_wrong(text, match):
    with pytest.raises(ValueError, match=match):
        descriptor.parse(text)


# --- statistics -------------------------------------------------------------------------------
def test_summary_of_known_samples():
    s = summarize([5, 1, 4, 2, 3, 100])
    assert s.median == 3.5
    assert s.min == 1 and s.mean == pytest.approx(115 / 6)
    assert s.iqr == pytest.approx(4.75 - 2.25)
    assert s.outliers == 1                                 # 100 is beyond 1.5 IQR
    assert s.noisy


def test_median_confidence_interval_from_order_statistics():
    x = np.arange(1, 21, dtype=float)                      # n = 20: x_(6), x_(15) cover >= 95%
    assert median_ci(x) == (6.0, 15.0)
    assert median_ci(np.array([1.0, 2.0])) == (1.0, 2.0)   # too few samples: the full range


def test_comparison_verdicts_on_synthetic_samples():
    rng = np.random.default_rng(0)
    a = 1.0 + 0.01 * rng.standard_normal(40)
    assert compare_samples(a, a * 1.2).verdict == "slower"
    assert compare_samples(a, a * 0.8).verdict == "faster"
    assert compare_samples(a, 1.0 + 0.01 * rng.standard_normal(40)).verdict == "same"
    # a 2% shift is significant but under the 5% threshold
    c = compare_samples(a, a * 1.02)
    assert c.p_value < 0.01 and c.verdict == "same"


def test_measure_reports_first_call_apart_and_respects_counts():
    calls = []

    def fake_time(fn):
        fn()
        return 10.0 if len(calls) == 1 else 1.0
    m = measure(lambda: calls.append(1), fake_time,
                TimingPolicy(budget_s=10, min_reps=5, max_reps=12))
    assert m.first_call_s == 10.0
    assert 5 <= len(m.samples_s) <= 12 and set(m.samples_s) == {1.0}


# --- suites -----------------------------------------------------------------------------------
def test_builtin_suites_parse_and_batch_overrides():
    for name in SUITES:
        cases = load_suite(name)
        assert cases, name
    res = load_suite("resnet50", batch=4)
    assert len({c.descriptor for c in res}) == len(res) and all(c.problem.N == 4 for c in res)
    assert any(c.problem.stride == (2, 2) and c.problem.R == 7 for c in res)


def test_user_suite_files(tmp_path):
    (tmp_path / "s.txt").write_text("# mine\nmb1ic3ih8oc4kh3ph1 n\"a\"\nmax:mb1ic2ih8kh2\n")
    cases = load_suite(str(tmp_path / "s.txt"))
    assert [c.family for c in cases] == ["conv2d", "max_pool2d"]
    (tmp_path / "d.csv").write_text("N,C,H,W,K,R,S,pad_h,pad_w,stride_h,stride_w\n"
                                    "1,3,8,8,4,3,3,1,1,1,1\n")
    assert load_suite(str(tmp_path / "d.csv"))[0].problem.padding == ((1, 1), (1, 1))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="needs a 'descriptor' column"):
        load_suite(str(tmp_path / "bad.csv"))


def test_unknown_suite_lists_the_valid_names():
    with pytest.raises(ValueError, match="built-in suites: quick, resnet50"):
        load_suite("resnet51")


def test_fuzzer_is_seeded():
    a = [c.descriptor for c in load_suite("fuzz:3:5")]
    assert a == [c.descriptor for c in load_suite("fuzz:3:5")] and len(a) == 5


# --- runner -----------------------------------------------------------------------------------
def _config(cases, backends, **kw):
    return RunConfig("test", cases, backends, policy=FAST, **kw)


def test_rows_stream_to_csv_and_failures_do_not_stop_the_run(tmp_path, monkeypatch):
    from convbench.backends import get_backend
    cases = load_suite("quick", batch=1)[:2]
    broken = get_backend("im2col")
    monkeypatch.setattr(type(broken), "conv2d_fwd",
                        lambda self, p, x, w, b: np.zeros(p.y_shape, x.dtype))
    rows, meta = run_suite(_config(cases, ["numpy", "im2col", "numba-cpu"]), tmp_path, peaks=False,
                           report=False)
    status = dict(zip(zip(rows["case"], rows["backend"]), rows["status"]))
    assert status[(cases[0].name, "im2col")] == "FAILED"          # wrong answer: no speed shown
    assert status[(cases[0].name, "numba-cpu")] == "PASSED"
    assert status[(cases[0].name, "numpy")] == "UNIMPLEMENTED"
    failed = rows[rows["status"] == "FAILED"].iloc[0]
    assert pd.isna(failed["median_s"]) and "tolerance" in failed["reason"]
    disk = load_results(tmp_path)
    assert len(disk) == len(rows) == 6
    ok = disk[disk["status"] == "PASSED"].iloc[0]
    assert ok["samples_s"] and ok["gflops"] > 0 and ok["first_call_s"] > 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["machine"]["cpu"]["model"] and len(data["rows"]) == 6


def test_an_exception_in_a_kernel_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from convbench.backends import get_backend

    def boom(self, p, x, w, b):
        raise MemoryError("out of memory")
    monkeypatch.setattr(type(get_backend("fft")), "conv2d_fwd", boom)
    rows = Runner(_config(load_suite("quick", batch=1)[:1], ["fft", "im2col"]), tmp_path).run()
    assert [r.status for r in rows] == ["FAILED", "PASSED"]
    assert rows[0].reason == "MemoryError: out of memory"


def test_interrupted_run_keeps_rows_and_resume_skips_them(tmp_path):
    cases = load_suite("quick", batch=1)[:3]
    seen = []

    def progress(i, n, case, op, elapsed):
        seen.append(i)
        if i == 2 and case is not None:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_suite(_config(cases, ["im2col"]), tmp_path, progress=progress, peaks=False)
    kept = load_results(tmp_path)
    assert list(kept["case"]) == [c.name for c in cases[:2]]
    assert (tmp_path / "report.html").exists()
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["interrupted"]
    rows, _ = run_suite(_config(cases, ["im2col"]), tmp_path, resume=True, peaks=False,
                        report=False)
    assert list(rows["case"]) == [c.name for c in cases]
    assert load_results(tmp_path)["median_s"][0] == kept["median_s"][0]      # not re-measured


def test_slow_backend_is_skipped_by_its_estimate(tmp_path):
    cases = load_suite("quick")[:1]
    rows = Runner(RunConfig("t", cases, ["naive"], policy=FAST, per_case_limit_s=0.01),
                  tmp_path).run()
    assert rows[0].status == "SKIPPED" and "exceeds the per-case limit" in rows[0].reason


def test_compare_flags_a_regression(tmp_path):
    from convbench.harness.table import to_frame, write_json

    def run(scale):
        rng = np.random.default_rng(1)
        samples = list(scale * (1 + 0.01 * rng.standard_normal(30)))
        return to_frame([dict(case="c", descriptor="d", direction="fwd", backend="b",
                              status="PASSED", median_s=float(np.median(samples)),
                              samples_s=samples)])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_json(tmp_path / "a" / "results.json", run(1.0), {"machine": {"cores": 2}})
    write_json(tmp_path / "b" / "results.json", run(1.3), {"machine": {"cores": 4}})
    lines, diffs = compare_runs(tmp_path / "a", tmp_path / "b")
    assert list(lines["verdict"]) == ["slower"] and len(regressions(lines))
    assert diffs == ["cores: 2 vs 4"]


def test_thread_count_reaches_libraries_imported_later():
    import subprocess
    import sys
    code = ("import convbench.threads as t; t.set_threads(1); import numpy as np; "
            "import convbench as cb; x = np.ones((1, 1, 4, 4), np.float32); "
            "cb.conv2d(x, np.ones((1, 1, 3, 3), np.float32), backend='numba-cpu'); "
            "cb.conv2d(x, np.ones((1, 1, 3, 3), np.float32), backend='torch'); "
            "import numba, torch; print(numba.get_num_threads(), torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_import_sets_no_environment_variable():
    """convbench's speed must not hang on variables set at import (they would change the user's
    other code, and count only where convbench is imported before NumPy)."""
    import subprocess
    import sys
    code = ("import os, json; before = dict(os.environ); import convbench, convbench.cli; "
            "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == {}


def test_reports_and_figures_leave_pyplot_alone(tmp_path):
    """Figures are matplotlib Figure objects: nothing touches pyplot or its global backend."""
    import subprocess
    import sys
    code = f"""
import sys
import numpy as np
from PIL import Image
from convbench.filters import gallery
from convbench.harness.report import write_report
from convbench.harness.table import to_frame
from convbench.train.trainer import _plot
frame = to_frame([dict(case="c", descriptor="d", family="conv2d", direction="fwd", backend=b,
                       status="PASSED", median_s=m, gflops=1 / m, intensity=3.0, first_call_s=1.0,
                       samples_s=[m]) for b, m in (("im2col", 1.0), ("torch", 2.0))])
write_report({str(tmp_path)!r}, frame, {{"suite": "t"}})
Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save({str(tmp_path / "in.png")!r})
gallery({str(tmp_path / "in.png")!r}, {str(tmp_path / "g.png")!r}, crop=8)
_plot({str(tmp_path / "c.png")!r}, [dict(epoch=0, train_loss=1, val_loss=1, train_acc=0,
                                        val_acc=0)], 0)
print("matplotlib.pyplot" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    assert "<img" in (tmp_path / "report.html").read_text()
