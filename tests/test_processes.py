"""run --processes K: each case in K worker processes, merged into one row per backend. A real run
on tiny cases (each process imports NumPy and convbench afresh: a few seconds), and the merge on
synthetic Results. No test looks at a real timing's value."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from convbench.cli import main
from convbench.harness.processes import ProcessGroup, merge_results
from convbench.harness.runner import load_run
from convbench.result import COLUMNS, FAILED, PASSED, UNIMPLEMENTED, Result

USER_BACKEND = '''
import os
import numpy as np
import convbench as cb


class Mine(cb.Backend):
    name = "mine"
    description = "im2col under another name, from a --backend-file"
    dtypes = (np.float32,)

    def conv2d_fwd(self, p, x, w, b):
        return cb.conv2d(x, w, b, stride=p.stride, padding=p.padding, dilation=p.dilation,
                         groups=p.groups, backend="im2col")


class Crash(cb.Backend):
    name = "crash"
    description = "takes its process down"
    dtypes = (np.float32,)

    def conv2d_fwd(self, p, x, w, b):
        os._exit(3)
'''


def _timed(median, first=1.0, n=5, status=PASSED, reason=""):
    return Result(case="c", descriptor="d", direction="fwd", backend="b", status=status,
                  reason=reason, median_s=median, first_call_s=first, flops=2e9, bytes=1e6,
                  rel_error=0.1, samples_s=[median] * n, warmup_s=[median], n_samples=n)


def test_merge_keeps_every_process_median_and_first_call():
    r = merge_results([_timed(1.0, 5.0, reason="noisy: relative IQR 12%"), _timed(2.0, 0.5),
                       _timed(4.0, 0.4)])
    assert r.status == PASSED and r.processes == 3
    assert r.median_s == 2.0 and r.process_medians_s == [1.0, 2.0, 4.0]
    assert r.process_spread == pytest.approx(np.std(np.log([1, 2, 4]), ddof=1))
    assert (r.ci_low_s, r.ci_high_s) == (1.0, 4.0)        # three medians: their full range
    assert r.process_first_call_s == [5.0, 0.5, 0.4] and r.first_call_s == 0.5
    assert r.n_samples == 15 and len(r.samples_s) == 15 and r.min_s == 1.0
    assert r.gflops == pytest.approx(1.0)                 # from the median of the medians
    assert "noisy: relative IQR" in r.reason and "over 3 processes" in r.reason


def test_merge_a_failure_in_any_process_fails_the_row():
    bad = _timed(1.0).replace(status=FAILED, reason="boom", median_s=None)
    r = merge_results([_timed(1.0), bad])
    assert r.status == FAILED and r.reason == "in process 2 of 2: boom" and r.processes == 2
    r = merge_results([_timed(1.0).replace(status=UNIMPLEMENTED, reason="no", median_s=None)])
    assert r.status == UNIMPLEMENTED and r.reason == "no"


def test_a_run_in_fresh_processes(tmp_path):
    suite = tmp_path / "tiny.txt"
    suite.write_text("mb1ic2ih6oc2kh3ph1\nmb1ic2ih5oc3kh1\n")
    plugin = tmp_path / "mine.py"
    plugin.write_text(USER_BACKEND)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--backends", "mine,numpy",
                                  "--backend-file", str(plugin), "--processes", "2",
                                  "--budget", "0.01", "--no-peaks", "--threads", "1",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "each case in 2 worker processes" in r.output
    rows, meta = load_run(out)
    assert meta["processes"] == 2
    assert list(rows["processes"]) == [2, 1, 2, 1]          # numpy: UNIMPLEMENTED in the first
    mine = rows[rows["backend"] == "mine"].iloc[0]
    assert mine["status"] == PASSED
    assert len(mine["process_medians_s"]) == 2 and len(mine["process_first_call_s"]) == 2
    assert mine["median_s"] == pytest.approx(np.median(mine["process_medians_s"]))
    numpy_row = rows[rows["backend"] == "numpy"].iloc[0]
    assert numpy_row["status"] == UNIMPLEMENTED and numpy_row["processes"] == 1
    # samples.jsonl keeps the lists; a rebuild from results.csv finds them again
    line = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert len(line["process_medians_s"]) == 2
    (out / "results.json").unlink()
    again, _ = load_run(out)
    assert list(again["process_medians_s"].iloc[0]) == list(mine["process_medians_s"])
    assert "Between processes" in (out / "report.html").read_text()
    # a results.csv from before the processes columns is read with them empty
    old = tmp_path / "old"
    old.mkdir()
    frame = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    frame[list(COLUMNS[:COLUMNS.index("processes")])].to_csv(old / "results.csv", index=False)
    assert load_run(old)[0]["processes"].isna().all()
    # the run against itself: the between-process test, no alarm
    r = CliRunner().invoke(main, ["compare", str(out), str(out)])
    assert r.exit_code == 0 and "2/2" in r.output, r.output
    # a kernel that takes its process down fails that case, and the run goes on
    suite.write_text("mb1ic2ih6oc2kh3ph1\n")
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--backends", "crash",
                                  "--backend-file", str(plugin), "--processes", "2",
                                  "--budget", "0.01", "--no-peaks", "--threads", "1",
                                  "--out", str(tmp_path / "crash")])
    assert r.exit_code == 1, r.output
    rows, _ = load_run(tmp_path / "crash")
    assert rows["status"].tolist() == [FAILED]
    assert "process 1 of 2" in rows["reason"].iloc[0] and "died" in rows["reason"].iloc[0]


def test_processes_must_be_at_least_one(tmp_path):
    r = CliRunner().invoke(main, ["run", "--processes", "0", "--no-peaks",
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "'--processes'" in r.output and "0" in r.output
    with pytest.raises(ValueError, match="processes=0 must be >= 1"):
        ProcessGroup(0)


def test_merge_of_many_samples():
    # six processes of 200 samples: the order statistics of 1200 (2.0 ** 1200 would overflow)
    rng = np.random.default_rng(0)
    results = [_timed(1.0).replace(samples_s=list(1 + 0.01 * rng.standard_normal(200)))
               for _ in range(6)]
    r = merge_results(results)
    assert r.n_samples == 1200 and r.processes == 6 and r.status == PASSED


def test_processes_are_not_for_a_cluster(tmp_path):
    r = CliRunner().invoke(main, ["run", "--processes", "2", "--cluster", "local:1", "--no-peaks",
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--processes" in r.output and "--cluster" in r.output, r.output
