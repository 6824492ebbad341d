"""Nothing silently wrong, nothing lost (issue #15): run folders have an owner, resume is safe,
memory and threads are checked before work, NaN and infinity follow one rule, the trainer stops
on a diverging loss and writes whole files, and every command-line mistake is one clear line.
Faults are injected: a kill in the middle of a CSV row, a full disk (ENOSPC), two processes on
one folder, a corrupt JSON, MemoryError."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from convbench import files
from convbench.backends import free_workspace, get_backend
from convbench.cases import case_list, nonfinite_cases, with_values
from convbench.cli import main
from convbench.harness import table
from convbench.harness.runlock import LOCK_NAME, RunLock, RunLockedError
from convbench.harness.runner import (
    RunConfig,
    RunFolderError,
    Runner,
    check_resumable,
    load_results,
    load_run,
    run_suite,
)
from convbench.harness.suites import load_suite
from convbench.memory import format_bytes, parse_bytes, traced_peak
from convbench.ops import (
    OPS,
    RNNProblem,
    array_shape,
    conv2d_problem,
    conv_transpose2d_problem,
    get_op,
    ops_of,
    pool2d_problem,
)
from convbench.result import FAILED, PASSED, SKIPPED
from convbench.threads import cpu_count
from convbench.timing import TimingPolicy
from convbench.verify import Reference, check_backend, memory_need, relative_error

FAST = TimingPolicy(budget_s=0.01, warmup_budget_s=0.005, min_reps=3, max_reps=4)
SUITE = "mb1ic4ih8oc4kh3ph1\nmax:mb1ic2ih8kh2\n"
RUN = ["--budget", "0.01", "--no-peaks", "--backends", "im2col,numpy"]


@pytest.fixture(autouse=True)
def _own_autotune_cache(tmp_path_factory, monkeypatch):
    """A cache folder of this module's own: the user's autotune.json stays out of these tests."""
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def _suite(tmp_path, text=SUITE, name="suite.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _config(cases, backends=("im2col", "numpy"), **kw):
    return RunConfig("test", list(cases), list(backends), policy=FAST, **kw)


def _digest(folder) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _one_line_error(r, *needles):
    """A click error: exit 2, 'Error: ...' naming what is wrong, no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(line) == 1, r.output
    for n in needles:
        assert n in line[0], (n, line[0])
    return line[0]


# --- 1. a run folder has an owner ---------------------------------------------------------------
def test_a_run_into_a_held_folder_names_the_holder_and_the_lock_goes_with_the_run(tmp_path):
    cases = load_suite(_suite(tmp_path))
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=rf"in use by another run \(process "
                                                 rf"{os.getpid()} on host "):
            run_suite(_config(cases), tmp_path / "run", peaks=False, report=False)
    run_suite(_config(cases), tmp_path / "run", peaks=False, report=False)
    assert not (tmp_path / "run" / LOCK_NAME).exists()        # released at the end


def test_two_processes_on_one_folder_the_second_is_refused_and_the_first_loses_nothing(tmp_path):
    """A second process holds the folder's lock as a run does; the CLI run into that folder is
    refused with the holder's process id, and the holder's files stay as they were."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.csv").write_text("the first run's rows\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from convbench.harness.runlock import RunLock; "
         f"lock = RunLock({str(out)!r}); print('held', flush=True); sys.stdin.read(); "
         "lock.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "held"
        r = CliRunner().invoke(main, ["run", "--suite", _suite(tmp_path), "--out", str(out),
                                      *RUN])
        _one_line_error(r, "in use by another run", f"process {holder.pid} on host")
        assert (out / "results.csv").read_text() == "the first run's rows\n"
    finally:
        holder.communicate("")
    assert not (out / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    heard = []
    run_suite(_config(load_suite(_suite(tmp_path))), out, peaks=False, report=False,
              warn=heard.append)
    assert len(heard) == 1 and "taking over the stale lock" in heard[0] and "gone" in heard[0]


def test_a_lock_from_another_host_is_not_taken(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunLockedError, match="elsewhere.example, which cannot be checked from "
                                             "here: if that run has ended, delete"):
        RunLock(out)


# --- 2. resume is safe --------------------------------------------------------------------------
def test_meta_records_what_makes_rows_comparable(tmp_path):
    cases = load_suite(_suite(tmp_path), batch=2)
    _, meta = run_suite(_config(cases, batch=2), tmp_path / "run", peaks=False, report=False)
    on_disk = json.loads((tmp_path / "run" / "meta.json").read_text())
    for key in ("suite", "suite_hash", "backends", "directions", "dtype", "batch", "threads",
                "cold_cache", "seed"):
        assert on_disk[key] == meta[key], key
    assert on_disk["batch"] == 2 and on_disk["backends"] == ["im2col", "numpy"]


@pytest.mark.parametrize("change,named", [
    (dict(suite_text="mb1ic2ih6oc2kh3ph1\n"), "suite_hash"),
    (dict(backends=("im2col",)), "backends ['im2col', 'numpy'] there, ['im2col'] now"),
    (dict(batch=3), "batch None there, 3 now"),
    (dict(dtype="float64"), "dtype 'float32' there, 'float64' now"),
    (dict(directions=("fwd", "bwd")), "directions"),
])
def test_resume_with_other_settings_names_the_difference_and_touches_nothing(tmp_path, change,
                                                                             named):
    out = tmp_path / "run"
    run_suite(_config(load_suite(_suite(tmp_path))), out, peaks=False, report=False)
    before = _digest(out)
    cases = load_suite(_suite(tmp_path, change.get("suite_text", SUITE), "s2.txt"),
                       change.get("batch"))
    kw = {k: v for k, v in change.items() if k in ("batch", "dtype", "directions")}
    cfg = dataclasses.replace(_config(cases, change.get("backends", ("im2col", "numpy"))),
                              suite=str(tmp_path / "suite.txt"), **kw)
    with pytest.raises(RunFolderError, match="cannot resume") as e:
        run_suite(cfg, out, resume=True, peaks=False, report=False)
    assert named in str(e.value) and "Start afresh" in str(e.value)
    assert _digest(out) == before


def test_a_kill_in_the_middle_of_a_row_loses_that_row_only(tmp_path):
    """The kill is simulated by cutting results.csv and samples.jsonl inside their last line."""
    out = tmp_path / "run"
    cfg = _config(load_suite(_suite(tmp_path)))
    run_suite(cfg, out, peaks=False, report=False)
    whole = pd.read_csv(out / "results.csv")
    for name, cut in (("results.csv", 30), ("samples.jsonl", 7)):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[:-cut])
    heard = []
    rows, _ = run_suite(cfg, out, resume=True, peaks=False, report=False, warn=heard.append)
    assert any("results.csv: dropping its last line" in h for h in heard)
    again = pd.read_csv(out / "results.csv")
    assert len(again) == len(whole) and not again["bytes"].isna().any()
    assert list(again["backend"]) == list(whole["backend"])
    assert len(load_results(out)) == len(rows) == len(whole)
    assert all(json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines())


@pytest.mark.parametrize("garbage", [b"\x00\x01garbage\n\xff\xfe\n", b"name,value\nfoo,1\n",
                                     b"suite,case\nx,y\n"])
def test_an_unreadable_csv_is_never_appended_to(tmp_path, garbage):
    out = tmp_path / "run"
    cfg = _config(load_suite(_suite(tmp_path)))
    run_suite(cfg, out, peaks=False, report=False)
    (out / "results.csv").write_bytes(garbage)
    before = _digest(out)
    with pytest.raises(RunFolderError, match=r"results.csv cannot be read: .*it is not appended "
                                             r"to\. Start afresh"):
        run_suite(cfg, out, resume=True, peaks=False, report=False)
    assert _digest(out) == before


def test_resume_needs_a_meta_json_it_can_read(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.csv").write_text(",".join(table.COLUMNS) + "\n")
    with pytest.raises(RunFolderError, match="no meta.json"):
        check_resumable(out, {})
    (out / "meta.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="meta.json cannot be read"):
        check_resumable(out, {})
    check_resumable(tmp_path / "fresh", {})                 # nothing there: nothing to check


def test_a_row_with_a_line_break_in_its_reason_stays_one_line(tmp_path):
    out = tmp_path / "run"
    run = Runner(_config([]), out)
    cases = load_suite(_suite(tmp_path))
    r = check_backend("im2col", get_op("conv2d:fwd"), cases[0].problem)
    run.store.add(r.replace(reason="first line\nsecond line", case="a\r\nb"))
    run.store.close()
    assert (out / "results.csv").read_text().count("\n") == 2
    assert load_results(out)["reason"][0] == "first line second line"


# --- 3. guards before work ----------------------------------------------------------------------
def test_every_op_knows_the_bytes_of_its_arrays():
    problems = {"conv2d": conv2d_problem((2, 3, 5, 5), (4, 3, 3, 3), bias=True),
                "conv_transpose2d": conv_transpose2d_problem((2, 3, 5, 5), (3, 4, 3, 3),
                                                             stride=2, output_padding=1,
                                                             bias=True),
                "max_pool2d": pool2d_problem("max", (2, 3, 5, 5), kernel_size=2),
                "avg_pool2d": pool2d_problem("avg", (2, 3, 5, 5), kernel_size=2)}
    for cell in ("lstm", "gru", "rnn_tanh"):
        problems[cell] = RNNProblem(cell, 3, 2, 4, 5)
    for spec in OPS.values():
        p = problems[spec.family]
        inputs = spec.make_inputs(p, np.random.default_rng(0), np.dtype(np.float32))
        assert spec.input_bytes(p, 4) == sum(a.nbytes for a in inputs if a is not None)
        outs = spec.reference(p, *inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        assert spec.output_bytes(p, 8) == sum(o.nbytes for o in outs if o is not None), spec.name
    assert array_shape(problems["gru"], "dc0") is None and array_shape(problems["lstm"], "dc0")


def test_a_backend_over_the_memory_limit_is_skipped_with_the_estimate():
    op = get_op("conv2d:fwd")
    p = conv2d_problem((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    need = memory_need(get_backend("im2col"), op, p, np.float32)
    assert need.workspace >= 64 * 9 * 8 * 56 * 56 * 4            # the column buffer
    r = check_backend("im2col", op, p, max_bytes=need.total - 1)
    assert r.status == SKIPPED and "estimated memory" in r.reason
    assert format_bytes(need.total) in r.reason and "workspace" in r.reason


def test_a_case_too_large_for_memory_is_skipped_and_the_next_one_runs(tmp_path):
    cases = load_suite(_suite(tmp_path, "mb4096ic4096ih1024oc4096kh3ph1\nmb1ic4ih8oc4kh3ph1\n"))
    rows = Runner(_config(cases, ("fft", "im2col"), max_bytes=1 << 30), tmp_path).run()
    status = [(r.case, r.backend, r.status) for r in rows]
    assert status[0][2] == SKIPPED and "estimated memory" in rows[0].reason
    assert [s for _, _, s in status[2:]] == [PASSED, PASSED]


def test_a_memory_error_while_making_the_inputs_fails_that_case_only(tmp_path, monkeypatch):
    spec = OPS["conv2d:fwd"]

    def make(p, rng, dtype):
        if p.N == 3:
            raise MemoryError("cannot allocate")
        return spec.make_inputs(p, rng, dtype)
    monkeypatch.setitem(OPS, "conv2d:fwd", dataclasses.replace(spec, make_inputs=make))
    cases = load_suite(_suite(tmp_path, "mb3ic4ih8oc4kh3ph1\nmb1ic4ih8oc4kh3ph1\n"))
    rows = Runner(_config(cases, ("im2col", "fft")), tmp_path).run()
    assert [r.status for r in rows] == [FAILED, FAILED, PASSED, PASSED]
    assert "out of memory making the inputs" in rows[0].reason


def test_a_memory_error_in_the_reference_fails_that_case_only(tmp_path, monkeypatch):
    spec = OPS["conv2d:fwd"]

    def reference(p, *inputs):
        if p.N == 3:
            raise MemoryError("cannot allocate")
        return spec.reference(p, *inputs)
    monkeypatch.setitem(OPS, "conv2d:fwd", dataclasses.replace(spec, reference=reference))
    cases = load_suite(_suite(tmp_path, "mb3ic4ih8oc4kh3ph1\nmb1ic4ih8oc4kh3ph1\n"))
    rows = Runner(_config(cases, ("im2col",)), tmp_path).run()
    assert [r.status for r in rows] == [FAILED, PASSED]
    assert "out of memory in the float64" in rows[0].reason


ESTIMATE_PROBLEMS = [
    ("conv2d", conv2d_problem((4, 16, 20, 20), (16, 16, 3, 3), padding=1, bias=True)),
    ("conv2d", conv2d_problem((4, 16, 20, 20), (16, 16, 3, 3), stride=2, padding=1)),
    ("conv2d", conv2d_problem((8, 32, 7, 7), (32, 32, 1, 1))),
    ("conv2d", conv2d_problem((2, 8, 16, 16), (8, 2, 3, 3), groups=4, dilation=2, padding=2)),
    ("max_pool2d", pool2d_problem("max", (4, 16, 20, 20), kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", pool2d_problem("avg", (4, 16, 21, 21), kernel_size=3, stride=2,
                                  ceil_mode=True)),
    ("lstm", RNNProblem("lstm", 8, 4, 32, 32)),
    ("gru", RNNProblem("gru", 8, 4, 32, 32, reverse=True, linear_before_reset=False)),
    ("conv_transpose2d", conv_transpose2d_problem((4, 16, 10, 10), (16, 8, 3, 3), stride=2,
                                                  padding=1, output_padding=1, bias=True)),
]


@pytest.mark.parametrize("name", ["numpy", "im2col", "fft", "winograd-f2", "winograd-f4",
                                  "numba-cpu"])
def test_workspace_estimates_cover_what_a_call_allocates(name):
    """workspace_bytes against NumPy's allocations in one call (tracemalloc); the slack covers
    the interpreter's small objects and NumPy's ufunc buffers. bench/workspace_estimates.py
    prints the whole comparison."""
    b = get_backend(name)
    checked = 0
    for family, p in ESTIMATE_PROBLEMS:
        for op in ops_of(family):
            try:
                b.check(op, p, np.float32)
            except Exception:  # noqa: BLE001 - not this backend's problem
                continue
            inputs = op.make_inputs(p, np.random.default_rng(0), np.dtype(np.float32))
            b.run(op, p, *inputs)
            free_workspace()
            held = []
            peak = traced_peak(lambda held=held, op=op, p=p, inputs=inputs:
                               held.append(b.run(op, p, *inputs)))
            outs = held[0] if isinstance(held[0], tuple) else (held[0],)
            used = peak - sum(o.nbytes for o in outs if o is not None)
            est = b.scratch_bytes(op, p, np.dtype(np.float32))
            assert est + (64 << 10) >= used, (op.name, p, est, used)
            assert est <= 2.5 * used + (1 << 20), (op.name, p, est, used)
            checked += 1
    assert checked


def test_memory_sizes_need_a_unit():
    assert parse_bytes("8G") == 8 << 30 and parse_bytes("1.5GiB") == 3 << 29
    assert parse_bytes("512m") == 512 << 20
    for bad in ("8", "lots", "-1G", "0G", ""):
        with pytest.raises(ValueError, match="must be"):
            parse_bytes(bad, "--max-memory")


def test_threads_above_the_usable_cores_need_oversubscribe(tmp_path):
    over = str(cpu_count() + 1)
    r = CliRunner().invoke(main, ["run", "--suite", _suite(tmp_path), "--out",
                                  str(tmp_path / "a"), *RUN, "--threads", over])
    _one_line_error(r, "--threads", f"{over} exceeds the {cpu_count()} usable cores",
                    "--oversubscribe")
    r = CliRunner().invoke(main, ["run", "--suite", _suite(tmp_path), "--out",
                                  str(tmp_path / "b"), *RUN, "--threads", over,
                                  "--oversubscribe"])
    assert r.exit_code == 0, r.output


def test_the_default_memory_limit_says_where_it_comes_from(tmp_path):
    r = CliRunner().invoke(main, ["run", "--suite", _suite(tmp_path), "--out",
                                  str(tmp_path / "a"), *RUN])
    assert r.exit_code == 0, r.output
    assert "memory per case:" in r.output and "80% of the" in r.output and "available now" in \
        r.output


# --- 4. NaN and infinity ------------------------------------------------------------------------
def _nonfinite_results(backend):
    out = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for label, family, p, values in nonfinite_cases():
            for op in ops_of(family):
                if not set(values) & set(op.input_names):
                    continue
                inputs = with_values(op.make_inputs(p, np.random.default_rng(0),
                                                    np.dtype(np.float32)), op.input_names, values)
                r = check_backend(backend, op, p, inputs=inputs,
                                  reference=Reference(op, p, inputs))
                out.append((f"{label} [{op.direction}]", r))
    return out


#: Where a backend disagrees with the rule, as a finding about that library; exact, so that a
#: fix (or a new gap) shows here. numba-cuda (on the simulator, conftest): its input gradient
#: multiplies the zeros around the output gradient (the implicit GEMM's tiles reach past it) by
#: the weights. onnxruntime: its LSTM and GRU give finite outputs for NaN inputs. jax: its
#: max-pooling gradient passes over a NaN (PyTorch's, and the reference's, sends it to the NaN).
NONFINITE_GAPS = {
    "numba-cuda": {"NaN weight (meets the padding) [bwd-data]",
                   "+inf and -inf weights [bwd-data]"},
    "onnxruntime": {"lstm NaN in x [fwd]", "lstm NaN in w_hh [fwd]", "gru NaN in x [fwd]",
                    "gru NaN in w_hh [fwd]"},
    "jax": {"max pool NaN in x [bwd]"},
}


@pytest.mark.parametrize("backend", ["naive", "numpy", "im2col", "fft", "winograd-f2",
                                     "winograd-f4", "numba-cpu", "torch", "onnxruntime",
                                     "openvino", "jax", "numba-cuda"])
def test_nan_and_inf_land_exactly_where_the_reference_has_them(backend):
    if not get_backend(backend).available:
        pytest.skip(get_backend(backend).unavailable_reason())
    results = _nonfinite_results(backend)
    assert any(r.status == PASSED for _, r in results)
    failed = {label for label, r in results if r.status == FAILED}
    assert failed == NONFINITE_GAPS.get(backend, set()), [
        (label, r.reason) for label, r in results if r.status == FAILED]


def test_winograd_f4_keeps_one_nan_out_of_the_rest_of_its_tile():
    p = conv2d_problem((1, 1, 8, 8), (1, 1, 3, 3), padding=1)
    x = np.ones((1, 1, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    y = get_backend("winograd-f4").conv2d_fwd(p, x, np.ones((1, 1, 3, 3), np.float32), None)
    assert np.isnan(y).sum() == 4 and np.isnan(y[0, 0, :2, :2]).all()


def test_fft_and_winograd_keep_an_infinite_output_infinite():
    p = conv2d_problem((1, 1, 6, 6), (1, 1, 3, 3), padding=1)
    x = np.ones((1, 1, 6, 6), np.float32)
    x[0, 0, 3, 3] = np.inf
    w = np.ones((1, 1, 3, 3), np.float32)
    for name in ("fft", "winograd-f2", "winograd-f4"):
        y = get_backend(name).conv2d_fwd(p, x, w, None)
        assert (y[0, 0, 2:5, 2:5] == np.inf).all() and np.isfinite(y).sum() == 36 - 9, name


def test_the_error_compares_non_finite_outputs_exactly():
    ref = np.array([1.0, np.nan, np.inf, -np.inf])
    assert relative_error(ref.copy(), ref, 1.0) == 0.0
    for out in ([1.0, np.inf, np.inf, -np.inf], [1.0, np.nan, np.nan, -np.inf],
                [1.0, np.nan, -np.inf, -np.inf], [1.0, np.nan, np.inf, 5.0],
                [np.nan, np.nan, np.inf, -np.inf]):
        assert relative_error(np.array(out), ref, 1.0) == np.inf, out
    # an infinite term leaves the finite outputs' error measured against finite terms
    p = conv2d_problem((1, 1, 6, 6), (1, 1, 3, 3), padding=1)
    op = get_op("conv2d:fwd")
    x, w, _ = op.make_inputs(p, np.random.default_rng(0), np.dtype(np.float32))
    x[0, 0, 0, 0] = np.inf
    ref = Reference(op, p, (x, w, None))
    assert np.isfinite(ref.scales[0]) and ref.scales[0] > 0
    y = ref.outputs[0].copy()
    y[0, 0, 5, 5] += 1e-3
    assert ref.error((y,)) > 1e-4


def test_verify_lists_the_nonfinite_cases():
    assert case_list("nonfinite") and any(len(c) == 4 for c in case_list("all"))
    r = CliRunner().invoke(main, ["verify", "--cases", "nonfinite", "--backends", "im2col,fft"])
    assert r.exit_code == 0, r.output
    assert "all checks passed" in r.output and "RuntimeWarning" not in r.output


# --- 5. the trainer -----------------------------------------------------------------------------
def _calls_per_epoch() -> int:
    """Calls of softmax_cross_entropy in one epoch on digits: the training batches, then the
    validation ones."""
    from convbench.train import data, trainer
    tr, va, _ = data.split(data.load("digits"), 0.15, 0.2, 0)
    return len(trainer._batches(len(tr), 128, np.random.default_rng(0))) + len(
        trainer._batches(len(va), 128))


def _train_config(**kw):
    from convbench.train import TrainConfig
    return TrainConfig(**{"epochs": 3, "backend": "im2col", "batch_size": 128, "patience": 5,
                          **kw})


def _saved_checkpoint(path, epoch: int):
    """A checkpoint of an untrained digits model, as the trainer writes it."""
    from convbench.train.model import build_model
    from convbench.train.trainer import save_checkpoint
    return save_checkpoint(path, build_model("small-cnn", (1, 8, 8), 10, "im2col"),
                           _train_config(), epoch)


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_best_checkpoint(tmp_path,
                                                                            monkeypatch):
    from convbench.train import trainer
    from convbench.train.trainer import load_checkpoint, train
    real = trainer.softmax_cross_entropy
    calls = {"n": 0}
    per_epoch = _calls_per_epoch()

    def diverging(logits, y):
        calls["n"] += 1
        loss, d = real(logits, y)
        return (float("nan"), d) if calls["n"] > per_epoch + 2 else (loss, d)
    monkeypatch.setattr(trainer, "softmax_cross_entropy", diverging)
    s = train(_train_config(), tmp_path, verbose=False)
    assert s["diverged"] and "epoch 2" in s["diverged"] and "nan" in s["diverged"]
    assert s["epochs_run"] == 1 and s["best_epoch"] == 1
    _, _, epoch, _, _ = load_checkpoint(tmp_path / "best.npz")
    assert epoch == 0
    assert len(pd.read_csv(tmp_path / "log.csv")) == 1
    assert json.loads((tmp_path / "summary.json").read_text())["diverged"] == s["diverged"]


def test_log_csv_grows_as_epochs_finish(tmp_path, monkeypatch):
    """An interrupt in the second epoch: the first epoch's row is already on disk."""
    from convbench.train import trainer
    real = trainer.softmax_cross_entropy
    calls = {"n": 0}
    per_epoch = _calls_per_epoch()

    def interrupting(logits, y):
        calls["n"] += 1
        if calls["n"] == per_epoch + 2:
            assert len(pd.read_csv(tmp_path / "log.csv")) == 1
            raise KeyboardInterrupt
        return real(logits, y)
    monkeypatch.setattr(trainer, "softmax_cross_entropy", interrupting)
    s = trainer.train(_train_config(), tmp_path, verbose=False)
    assert s["interrupted"] and (tmp_path / "interrupted.npz").exists()


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from convbench.train.model import build_model
    from convbench.train.trainer import load_checkpoint, save_checkpoint
    cfg = _train_config()
    model = build_model("small-cnn", (1, 8, 8), 10, "im2col")
    _saved_checkpoint(tmp_path / "best.npz", epoch=3)
    good = (tmp_path / "best.npz").read_bytes()
    real = np.savez

    def full(path, **arrays):
        real(path, **arrays)
        with open(path, "r+b") as f:          # half written when the disk filled up
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "best.npz", model, cfg, 4)
    assert (tmp_path / "best.npz").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz"]     # no temporary left
    monkeypatch.setattr(np, "savez", real)
    assert load_checkpoint(tmp_path / "best.npz")[2] == 3


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    files.write_text(path, '{"a": 1}')

    def full(self, data, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(type(path), "write_text", full)
    with pytest.raises(OSError):
        files.write_text(path, '{"a": 2}')
    monkeypatch.undo()
    assert path.read_text() == '{"a": 1}' and len(list(tmp_path.iterdir())) == 1


def test_resume_with_fewer_epochs_than_the_checkpoint_is_an_error(tmp_path):
    from convbench.train.trainer import ConfigError, train
    best = _saved_checkpoint(tmp_path / "best.npz", epoch=1)         # two epochs finished
    with pytest.raises(ConfigError, match="epochs=2 leaves nothing to train") as e:
        train(_train_config(epochs=2), tmp_path / "b", verbose=False, resume=best)
    assert e.value.field == "epochs" and not (tmp_path / "b").exists()


@pytest.mark.parametrize("content,match", [
    (b"not a checkpoint\n", "not an .npz archive"),
    (None, "the archive cannot be read"),
    ("foreign", r"no config, epoch, norm, param.0 in it"),
])
def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path, content, match):
    from convbench.train.trainer import CheckpointError, load_checkpoint
    path = tmp_path / "x.npz"
    if content is None:
        whole = _saved_checkpoint(tmp_path / "whole.npz", epoch=0).read_bytes()
        path.write_bytes(whole[:-400])
    elif content == "foreign":
        np.savez(path, a=np.arange(3))
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_tune_needs_a_trial():
    from convbench.train.trainer import ConfigError, tune
    with pytest.raises(ConfigError, match="trials=0 must be an int >= 1"):
        tune(_train_config(), {"lr": (1e-3, 1e-2)}, "random", trials=0)


# --- 6. every command-line error is one line ----------------------------------------------------
BAD = [
    (["run", "--suite", "{empty}"], ["--suite", "has no cases"]),
    (["run", "--backends", ""], ["--backends", "names nothing"]),
    (["run", "--backends", "cudnn"], ["--backends", "unknown backend 'cudnn'"]),
    (["run", "--direction", ","], ["--direction", "names nothing"]),
    (["run", "--batch", "0"], ["'--batch'", "0 is not in the range"]),
    (["run", "--baseline", "nope"], ["--baseline", "'nope'"]),
    (["run", "--budget", "nan"], ["'--budget'", "not a finite number"]),
    (["run", "--max-memory", "lots"], ["--max-memory", "'lots'"]),
    (["run", "--out", "{file}"], ["--out", "is a file, not a folder"]),
    (["run", "--out", "/dev/null/run"], ["--out", "cannot be created"]),
    (["run", "--suite", "fuzz:x"], ["--suite", "fuzz:SEED:COUNT takes integers"]),
    (["verify", "--cases", "bogus"], ["'--cases'", "'bogus'"]),
    (["verify", "--backends", "cudnn"], ["--backends", "unknown backend 'cudnn'"]),
    (["verify", "--seed", "-1"], ["'--seed'", "-1 is not in the range"]),
    (["compare", "{run}", "{run}", "--alpha", "5"], ["'--alpha'", "5.0 is not in the range"]),
    (["compare", "{run}", "{run}", "--threshold", "-1"], ["'--threshold'"]),
    (["report", "{run}", "--baseline", "nope"], ["--baseline", "unknown backend 'nope'"]),
    (["report", "{run}", "--baseline", "fft"], ["--baseline", "'fft' has no timed result"]),
    (["report", "{empty_dir}"], ["holds no results.json or results.csv"]),
    (["filters", "{file}"], ["IMAGE", "is not an image"]),
    (["filters", "--backend", "bogus"], ["--backend", "unknown backend 'bogus'"]),
    (["train", "--lr", "inf"], ["'--lr'", "not a finite number"]),
    (["train", "--dropout", "1.5"], ["'--dropout'", "1.5 is not in the range"]),
    (["train", "--init", "bogus"], ["--init", "init='bogus'"]),
    (["train", "--data", "imagenet"], ["--data", "data='imagenet'"]),
    (["train", "--data", "mnist:/nonexistent"], ["--data", "is not a folder"]),
    (["train", "--backend", "im2col", "--resume", "{file}"], ["--resume", "not a convbench "
                                                                          "checkpoint"]),
    (["tune", "--trials", "0"], ["'--trials'", "0 is not in the range"]),
    (["tune", "--optimizers", ""], ["--optimizers", "names nothing"]),
    (["evaluate", "{file}"], ["CHECKPOINT", "not a convbench checkpoint"]),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    suite = out.parent / "suite.txt"
    suite.write_text(SUITE)
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out), *RUN])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("args,needles", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_mistake_is_one_line_naming_the_option(tmp_path, finished_run, args, needles):
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "afile").write_text("hello\n")
    (tmp_path / "empty").mkdir()
    subs = {"{empty}": str(tmp_path / "empty.txt"), "{file}": str(tmp_path / "afile"),
            "{run}": str(finished_run), "{empty_dir}": str(tmp_path / "empty")}
    args = [subs.get(a, a) for a in args]
    if args[0] == "run" and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    if args[0] == "run" and "--suite" not in args:
        args += ["--suite", _suite(tmp_path)]
    if args[0] == "run" and "--budget" not in args:
        args += ["--budget", "0.01", "--no-peaks"]
    _one_line_error(CliRunner().invoke(main, args), *needles)


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "x.npz").write_text("hello\n")
    r = CliRunner().invoke(main, ["--debug", "evaluate", str(tmp_path / "x.npz")])
    assert r.exit_code != 0 and type(r.exception).__name__ == "CheckpointError"


def test_an_internal_error_is_one_line_too(monkeypatch):
    import convbench.cli as cli

    def broken():
        raise TypeError("something unexpected")
    monkeypatch.setattr(cli, "list_backends", broken)
    r = CliRunner().invoke(main, ["backends"])
    line = _one_line_error(r, "TypeError: something unexpected", "--debug")
    assert "internal error" in line


@pytest.mark.parametrize("damage", ["corrupt", "list", "missing"])
def test_report_and_compare_rebuild_from_the_csv(tmp_path, finished_run, damage):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = run / "results.json"
    if damage == "corrupt":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif damage == "list":
        path.write_text("[1, 2, 3]")
    else:
        path.unlink()
    rows, _ = load_run(run, warn=lambda m: None)
    assert len(rows) == len(pd.read_csv(finished_run / "results.csv"))
    r = CliRunner().invoke(main, ["report", str(run)])
    assert r.exit_code == 0 and "report.html" in r.output, r.output
    if damage != "missing":
        assert "rebuilt from results.csv" in r.output
    r = CliRunner().invoke(main, ["compare", str(finished_run), str(run), "--threshold", "10"])
    assert r.exit_code == 0, r.output


def test_compare_with_nothing_in_common_is_an_error(tmp_path, finished_run):
    other = tmp_path / "other"
    r = CliRunner().invoke(main, ["run", "--suite", _suite(tmp_path, "mb1ic2ih6oc2kh3\n", "o.txt"),
                                  "--out", str(other), *RUN])
    assert r.exit_code == 0, r.output
    _one_line_error(CliRunner().invoke(main, ["compare", str(finished_run), str(other)]),
                    "no case x direction x backend in common")


def test_a_full_disk_during_a_run_keeps_the_rows_and_resume_finishes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = table.write_csv
    written = {"n": 0}

    def filling(frame, file, header):
        written["n"] += 1
        if written["n"] == 3:
            file.write(frame.to_csv(header=False, index=False)[:20])   # part of a row, then
            file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")      # the disk is full
        real(frame, file, header)
    monkeypatch.setattr(table, "write_csv", filling)
    args = ["run", "--suite", _suite(tmp_path), "--out", str(out), *RUN]
    r = CliRunner().invoke(main, args)
    _one_line_error(r, "No space left on device", "rows finished so far are kept",
                    f"--resume --out {out}")
    assert len(load_results(out)) == 2
    monkeypatch.setattr(table, "write_csv", real)
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert "dropping its last line" in r.output
    final = pd.read_csv(out / "results.csv")
    assert len(final) == 4 and not final["bytes"].isna().any()


def test_a_foreign_autotune_cache_is_an_error_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path))
    (tmp_path / "autotune.json").write_text("[1, 2, 3]")
    r = CliRunner().invoke(main, ["run", "--suite", _suite(tmp_path), "--out",
                                  str(tmp_path / "o"), "--budget", "0.01", "--no-peaks",
                                  "--backends", "auto"])
    _one_line_error(r, "is not convbench's autotune cache", "delete it")
    assert (tmp_path / "autotune.json").read_text() == "[1, 2, 3]"


def test_an_autotune_cache_with_entries_of_other_shapes_is_read_and_kept(tmp_path, monkeypatch):
    """Other versions or tools may keep other entries in the file: they are not choices, and
    saving a new choice keeps them."""
    from convbench.autotune import choose, machine_key
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path))
    op, p = get_op("conv2d:fwd"), conv2d_problem((1, 2, 5, 5), (2, 2, 3, 3), padding=1)
    key = f"{op.name}|{p.descriptor()}|float32"
    foreign = {"choices": {"gemm|10x256x128": {"backend": "blas"}, key: ["not", "a", "choice"]},
               "notes": [1, 2]}
    (tmp_path / "autotune.json").write_text(json.dumps({machine_key(): foreign,
                                                        "elsewhere": {"x": 1}}))
    assert choose(op, p, np.float32, budget_s=0.002)["backend"]
    data = json.loads((tmp_path / "autotune.json").read_text())
    mine = data[machine_key()]
    assert data["elsewhere"] == {"x": 1} and mine["notes"] == [1, 2]
    assert mine["choices"]["gemm|10x256x128"] == {"backend": "blas"}
    assert isinstance(mine["choices"][key], dict)


def test_ctrl_c_is_one_line_too(monkeypatch):
    import convbench.cli as cli

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "list_backends", interrupted)
    r = CliRunner().invoke(main, ["backends"])
    assert r.exit_code == 130 and "Traceback" not in r.output
