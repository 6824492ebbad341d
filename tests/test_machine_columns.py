"""Every row names the machine that measured it: a local run's rows carry this machine's record,
results.csv files from before those columns are read (not resumed), and `compare` says when rows
were measured on other machines."""
import socket

import pandas as pd
import pytest
from click.testing import CliRunner

from convbench.cli import main
from convbench.harness import table
from convbench.harness.compare import compare_runs
from convbench.harness.runner import RunConfig, RunFolderError, load_run, run_suite
from convbench.harness.suites import load_suite
from convbench.machine import machine_key, machine_record
from convbench.timing import TimingPolicy

FAST = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)


def _run(out, resume=False):
    cases = load_suite("quick", 1)[:2]
    return run_suite(RunConfig("quick", cases, ["im2col"], ("fwd",), threads=1, policy=FAST,
                               batch=1), out, resume, peaks=False, report=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    _run(out)
    return out


def test_rows_name_this_machine(run_dir):
    frame, _ = load_run(run_dir)
    record = machine_record()
    assert set(frame["host"]) == {socket.gethostname()}
    assert set(frame["machine"]) == {record["machine"]} and len(record["machine"]) == 12
    assert set(frame["cpu"]) == {record["cpu"]} and set(frame["worker"]) == {""}
    fp = {"cpu": {"model": "X"}, "cores": 4, "numpy": "2.0"}
    assert machine_key(fp) == machine_key(dict(fp)) != machine_key({**fp, "cores": 8})


def test_a_results_csv_from_before_the_machine_columns(tmp_path, run_dir):
    old = tmp_path / "old"
    old.mkdir()
    frame = pd.read_csv(run_dir / "results.csv", dtype=str, keep_default_na=False)
    frame[list(table.OLD_COLUMNS)].to_csv(old / "results.csv", index=False)
    (old / "meta.json").write_text((run_dir / "meta.json").read_text())
    rows, _ = load_run(old)
    assert len(rows) == 2 and set(rows["machine"]) == {""}
    with pytest.raises(RunFolderError, match="older convbench"):
        _run(old, resume=True)


def test_compare_names_rows_measured_on_other_machines(tmp_path, run_dir):
    other = tmp_path / "other"
    _run(other)
    (other / "results.json").unlink()
    text = (other / "results.csv").read_text()
    key = machine_record()["machine"]
    (other / "results.csv").write_text(text.replace(key, "0123456789ab"))
    _, diffs = compare_runs(run_dir, other)
    assert diffs == [f"machine: 2 rows measured on {socket.gethostname()} ({key}) vs on "
                     f"{socket.gethostname()} (0123456789ab)"]
    r = CliRunner().invoke(main, ["compare", str(run_dir), str(other)])
    assert r.exit_code == 2 and "0123456789ab" in r.output and "--force" in r.output  # refused
    r = CliRunner().invoke(main, ["compare", str(run_dir), str(other), "--force"])
    assert "WARNING" in r.output and "0123456789ab" in r.output
