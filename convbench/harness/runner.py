"""The runner: every case x direction x backend, verified once, then timed; results stream to disk.

Measuring and storing are apart. `measure_case` measures one (case, direction) on a list of
backends in this process and returns their Results; its arguments pickle, so a worker process
can call it (with `processes` > 1, K worker processes each do, and their Results are merged:
harness.processes). `Runner` walks a suite through it and streams each row into a run directory:

  results.csv     one row per case x direction x backend, appended as each finishes (full precision)
  samples.jsonl   the raw samples of each row (and each process's median and first call),
                  appended likewise
  meta.json       the settings, the machine fingerprint and its peaks (written first)
  results.json    everything (written at the end, and on an interrupt)
  report.html     the report (convbench.harness.report)

An interrupted run keeps every row written; `resume=True` skips the rows already there, after
checking that the folder was made with the same settings (meta.json: the suite and a hash of its
cases, the backends, directions, dtype, batch, threads, cold cache, seed, processes and auto's
workspace limit) and that its
results.csv can be read; a last line cut short by a kill is dropped and measured again. A run holds
the folder's lock (.lock, harness.runlock) from start to end, so two runs never share a folder.
Before a case allocates anything its memory is estimated (verify.memory_need); a backend over
`max_bytes` is SKIPPED with the estimate, and running out of memory fails that case alone. Each
row's peak_bytes and workspace_bytes are measured after its timing (verify.check_backend).
Every row names the machine that measured it (machine.machine_record: host, CPU, GPU and a key
of its fingerprint).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from convbench import files
from convbench.backends import (
    free_workspace,
    get_backend,
    held_workspace_bytes,
    peer_names,
    user_backends,
)
from convbench.errors import ConvbenchError
from convbench.harness import table
from convbench.harness.processes import ProcessGroup
from convbench.harness.report import write_report
from convbench.harness.runlock import RunLock
from convbench.harness.suites import Case
from convbench.machine import (
    blas_warning,
    fingerprint,
    machine_record,
    measure_peaks,
    peak_gflops,
)
from convbench.memory import workspace_limit
from convbench.ops import get_op, ops_of
from convbench.result import COLUMNS, FAILED, STATUSES, Result
from convbench.threads import cpu_count, set_threads
from convbench.timing import TimingPolicy
from convbench.verify import Reference, check_backend, memory_need, new_result, shared_bytes

DIRECTIONS = ("fwd", "bwd-data", "bwd-weights", "bwd")
#: How to start afresh, for the errors that refuse to continue a run folder.
AFRESH = ("Start afresh: choose another --out, or run without --resume to replace the results "
          "there.")


class RunFolderError(ConvbenchError):
    """A run folder that cannot be continued or read (the message says why and what to do)."""


def directions_for(family: str, wanted) -> list:
    """The op specs of a family matching the wanted directions ('bwd' covers both conv
    gradients; 'bwd-data'/'bwd-weights' select the single backward of pooling and RNNs)."""
    out = []
    for op in ops_of(family):
        d = op.direction
        if d in wanted or (d in ("bwd-data", "bwd-weights") and "bwd" in wanted) or \
                (d == "bwd" and ({"bwd-data", "bwd-weights"} & set(wanted))):
            out.append(op)
    return out


@dataclass(frozen=True)
class Settings:
    """How to measure a case, whichever process does it."""

    suite: str = ""
    dtype: str = "float32"
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    per_case_limit_s: float = 30.0
    cold_cache: bool = False
    seed: int = 0
    max_bytes: int | None = None
    #: the run's measured FMA peak, for each row's pct_of_peak (None: not measured), and the
    #: machine key (machine.machine_record) of the host that measured it
    peak_gflops: float | None = None
    peak_machine: str = ""
    workspace_limit: int | None = None      # auto's (convbench.set_workspace_limit)


def with_peak(result: Result, peak: float | None) -> Result:
    """result with pct_of_peak filled in from its gflops and the run's peak."""
    if peak and result.gflops is not None:
        return result.replace(pct_of_peak=100 * result.gflops / peak)
    return result


def iter_case(case: Case, op_name: str, backends, settings: Settings):
    """Yield the Result of each backend on one (case, direction), in backend order, each as soon as
    it is measured. The inputs and the reference are made once and shared by the backends, unless
    they alone exceed settings.max_bytes (every backend is then SKIPPED before anything is
    allocated) or making them runs out of memory (each backend then tries, and fails, alone)."""
    op = get_op(op_name)
    dtype = np.dtype(settings.dtype)
    limit = settings.max_bytes
    inputs = reference = None
    if limit is None or shared_bytes(op, case.problem, dtype, settings.cold_cache) <= limit:
        try:
            inputs = op.make_inputs(case.problem, np.random.default_rng(settings.seed), dtype)
            reference = Reference(op, case.problem, inputs)
        except MemoryError:
            inputs = reference = None
    for name in backends:
        if limit is not None:
            _make_room(get_backend(name), op, case.problem, dtype, settings, limit)
        try:
            with workspace_limit(settings.workspace_limit):
                result = check_backend(name, op, case.problem, dtype, settings.seed,
                                       inputs=inputs, reference=reference,
                                       policy=settings.policy,
                                       limit_s=settings.per_case_limit_s, max_bytes=limit,
                                       cold_cache=settings.cold_cache, memory=True)
        except MemoryError as e:      # outside the backend's own call: still this case's alone
            result = new_result(name, op, case.problem, dtype).replace(
                status=FAILED, reason=f"out of memory: {e}")
        yield with_peak(result.replace(suite=settings.suite, case=case.name, problem=None,
                                       **machine_record()), settings.peak_gflops)


def _make_room(backend, op, problem, dtype, settings: Settings, limit: int) -> None:
    """Release the scratch memory backends keep between calls when, with it, this backend's
    estimated need would exceed the limit (it fits without)."""
    try:
        backend.check(op, problem, dtype)
    except ConvbenchError:
        return                      # it will not run: its result says why
    need = memory_need(backend, op, problem, dtype, settings.cold_cache).total
    if need <= limit < need + held_workspace_bytes():
        free_workspace()


def measure_case(case: Case, op_name: str, backends, settings: Settings) -> list[Result]:
    """The Results of every backend on one (case, direction), measured side by side here.
    Nothing is written: storing the rows is the caller's business."""
    return list(iter_case(case, op_name, backends, settings))


@dataclass
class RunConfig:
    suite: str
    cases: list
    backends: list
    directions: tuple = ("fwd",)
    dtype: str = "float32"
    threads: int | None = None
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    per_case_limit_s: float = 30.0
    cold_cache: bool = False
    baseline: str | None = None
    seed: int = 0
    batch: int | None = None          # the batch the cases were given (None: the suite's own)
    max_bytes: int | None = None      # memory a case may plan to use (None: no limit)
    #: the suite is a model's layers: the report adds their sum (each case's count x time)
    whole_model: bool = False
    #: measure each (case, direction) in this many worker processes (1: in the run's own one)
    processes: int = 1
    #: the measured FMA peak (run_suite fills it in)
    peak_gflops: float | None = None
    workspace_limit: int | None = None  # auto's scratch limit (None: none)

    @property
    def settings(self) -> Settings:
        return Settings(self.suite, self.dtype, self.policy, self.per_case_limit_s,
                        self.cold_cache, self.seed, self.max_bytes, self.peak_gflops,
                        machine_record()["machine"], self.workspace_limit)


#: The settings that make rows of two runs incomparable: --resume needs them unchanged.
COMPARABLE = ("suite", "suite_hash", "backends", "directions", "dtype", "batch", "threads",
              "cold_cache", "seed", "processes", "workspace_limit")


def suite_hash(cases) -> str:
    """A hash of a suite's content: every case's name, problem and count, in order."""
    text = "\n".join(f"{c.name}\t{c.descriptor}\t{getattr(c, 'count', 1)}" for c in cases)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def comparable_settings(config: RunConfig) -> dict:
    """The COMPARABLE settings of a run, as meta.json records them."""
    return {"suite": config.suite, "suite_hash": suite_hash(config.cases),
            "backends": list(config.backends), "directions": list(config.directions),
            "dtype": config.dtype, "batch": config.batch,
            "threads": config.threads or cpu_count(), "cold_cache": config.cold_cache,
            "seed": config.seed, "processes": config.processes,
            "workspace_limit": config.workspace_limit}


def check_resumable(out_dir, settings: dict) -> None:
    """Raise RunFolderError unless the rows in out_dir were made with `settings` (a folder with
    neither rows nor meta.json has nothing to resume, which is fine). Reads only."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.exists():
        if (out_dir / "results.csv").exists():
            raise RunFolderError(f"cannot resume {out_dir}: it holds results.csv but no "
                                 f"meta.json, so the settings of its rows are unknown. {AFRESH}")
        return
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise RunFolderError(f"cannot resume {out_dir}: its meta.json cannot be read ({e}). "
                             f"{AFRESH}") from None
    diffs = []
    for key in COMPARABLE:
        if key not in meta:
            diffs.append(f"{key} not recorded (an older convbench made it)")
        elif meta[key] != settings[key]:
            diffs.append(f"{key} {meta[key]!r} there, {settings[key]!r} now")
    if diffs:
        raise RunFolderError(f"cannot resume {out_dir}: it was made with other settings "
                             f"({'; '.join(diffs)}), so its rows would not compare with new "
                             f"ones. {AFRESH}")


def read_results_csv(path) -> tuple[pd.DataFrame, int]:
    """(rows, bytes of whole lines) of a results.csv, without its last line when a kill cut that
    line short (one row per line: writers keep text fields on one line). RunFolderError when the
    file is not a results.csv or cannot be parsed."""
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    whole = data[:data.rfind(b"\n") + 1]
    if not whole.strip():
        return table.to_frame([]), len(whole)
    try:
        text = whole.decode("utf-8")
        records = list(csv.reader(io.StringIO(text)))
        if records[0] not in [list(h) for h in table.READABLE_HEADERS]:
            raise ValueError(f"its header is not convbench's columns ({','.join(records[0])[:80]}"
                             f"{'...' if len(','.join(records[0])) > 80 else ''})")
        for i, rec in enumerate(records[1:], 2):
            if len(rec) != len(records[0]):
                raise ValueError(f"line {i} has {len(rec)} fields, not {len(records[0])}")
        frame = table.read_csv(io.StringIO(text))
        bad = sorted(set(frame["status"]) - set(STATUSES))
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}")
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise RunFolderError(f"{path} cannot be read: {e}") from None
    return frame, len(whole)


class ResultStore:
    """results.csv and samples.jsonl in a run directory, appended and flushed row by row.

    resume: keep the rows there (a last line cut short is dropped, to be measured again; a file
    that cannot be read is an error and is left as it is); otherwise start both files afresh."""

    def __init__(self, out_dir: Path, resume: bool, warn=None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "results.csv"
        self.samples_path = self.dir / "samples.jsonl"
        self.results: list[Result] = []
        warn = warn or (lambda message: None)
        if resume:
            try:
                _, whole = read_results_csv(self.csv_path)
            except RunFolderError as e:
                raise RunFolderError(f"cannot resume: {e}; it is not appended to. "
                                     f"{AFRESH}") from None
            if whole and _header(self.csv_path) != list(COLUMNS):
                raise RunFolderError(f"cannot resume: {self.csv_path} was written by an older "
                                     f"convbench, without some of today's columns (each row's "
                                     f"machine, its processes); it is not appended to. {AFRESH}")
            for path, keep in ((self.csv_path, whole),
                               (self.samples_path, _whole_lines(self.samples_path))):
                if path.exists() and path.stat().st_size > keep:
                    warn(f"{path.name}: dropping its last line, cut short when the run stopped "
                         f"(that row is measured again)")
                    with open(path, "rb+") as f:
                        f.truncate(keep)
            self.results = table.to_results(load_results(self.dir))
        else:
            for path in (self.csv_path, self.samples_path, self.dir / "results.json"):
                if path.exists():
                    path.unlink()
        self.done = {r.key() for r in self.results}
        self._header = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._csv = open(self.csv_path, "a", newline="")
        self._samples = open(self.samples_path, "a")

    def add(self, result: Result) -> None:
        self.add_all([result])

    def add_all(self, results: list[Result]) -> None:
        """Append rows in one write (a frame costs about the same for one row as for a few)."""
        if not results:
            return
        try:
            table.write_csv(table.to_frame(results), self._csv, header=self._header)
            self._header = False
            self._csv.flush()
        except OSError as e:          # a write says not which file
            raise OSError(e.errno, e.strerror, str(self.csv_path)) from e
        try:
            self._samples.write("".join(
                json.dumps({"key": list(r.key()),
                            **{name: getattr(r, name) for name in table.SAMPLE_COLUMNS}}) + "\n"
                for r in results))
            self._samples.flush()
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.samples_path)) from e
        self.results.extend(results)
        self.done.update(r.key() for r in results)

    def frame(self) -> pd.DataFrame:
        return table.to_frame(self.results)

    def close(self) -> None:
        for f in (self._csv, self._samples):
            try:
                f.close()
            except OSError:       # a full disk refuses the last flush: the rows before it stay
                pass


def _header(path: Path) -> list:
    """The first line of a CSV file, as fields."""
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _whole_lines(path: Path) -> int:
    """Bytes of a text file up to and including its last newline."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


def load_results(run_dir) -> pd.DataFrame:
    """The rows of a run directory from results.csv and samples.jsonl (works on interrupted
    runs: a last line cut short is left out), as a frame. RunFolderError if results.csv cannot
    be read."""
    run_dir = Path(run_dir)
    path = run_dir / "results.csv"
    if not path.exists():
        return table.to_frame([])
    frame, _ = read_results_csv(path)
    samples = {}
    sp = run_dir / "samples.jsonl"
    if sp.exists():
        for line in sp.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                samples[tuple(rec["key"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError):   # a line cut by an interrupt
                continue
    keys = zip(frame["case"], frame["descriptor"], frame["direction"], frame["backend"])
    recs = [samples.get(k, {}) for k in keys]
    for name in table.SAMPLE_COLUMNS:
        frame[name] = [rec.get(name, []) for rec in recs]
    return frame


def measure_here(jobs, settings: Settings, step):
    """Measure jobs ((case, op spec, backends) each) one after another in this process, yielding
    each Result as it is measured (a list of one); `step(case, op)` is called as each job
    starts."""
    for case, op, backends in jobs:
        step(case, op)
        for result in iter_case(case, op.name, backends, settings):
            yield [result]


def measure_in_processes(config: RunConfig):
    """The Runner's measure hook for config.processes > 1: each job measured in each of K worker
    processes in turn (harness.processes.ProcessGroup), the K Results of each backend merged into
    one row; the workers are started on first use and stopped when the generator is closed."""
    def measure(jobs, settings: Settings, step):
        with ProcessGroup(config.processes, config.threads, config.backends) as group:
            for case, op, backends in jobs:
                step(case, op)
                yield [with_peak(r, settings.peak_gflops)      # of the merged gflops
                       for r in group.measure(measure_case, case, op.name, backends, settings)]
    return measure


class Runner:
    """Walks a suite's plan and stores each row as it comes. `measure(jobs, settings, step)` is
    where the (case, direction)s are measured: measure_here (this process, the default) or a
    cluster's (harness.cluster); it yields lists of Results (each list stored in one write) in
    any order and calls `step(case, op)` once per job, as it starts or finishes."""

    def __init__(self, config: RunConfig, out_dir, resume: bool = False, progress=None,
                 warn=None, measure=None):
        self.cfg = config
        self.store = ResultStore(out_dir, resume, warn)
        self.progress = progress
        self.measure = measure or measure_here

    def plan(self) -> list[tuple[Case, object]]:
        return [(c, op) for c in self.cfg.cases
                for op in directions_for(c.family, self.cfg.directions)]

    def run(self) -> list[Result]:
        set_threads(self.cfg.threads)
        plan = self.plan()
        jobs = [(case, op, [b for b in self.cfg.backends
                            if (case.name, case.descriptor, op.direction, b)
                            not in self.store.done])
                for case, op in plan]
        start = time.perf_counter()
        steps = 0

        def step(case, op):
            nonlocal steps
            if self.progress:
                self.progress(steps, len(plan), case, op, time.perf_counter() - start)
            steps += 1

        rows = self.measure(jobs, self.cfg.settings, step)
        try:
            for batch in rows:      # a job measured twice adds nothing
                self.store.add_all([r for r in batch if r.key() not in self.store.done])
            if self.progress:
                self.progress(len(plan), len(plan), None, None, time.perf_counter() - start)
        finally:
            getattr(rows, "close", lambda: None)()     # a generator stopped early cleans up
            self.store.close()
        return self.store.results


def load_run(run_dir, warn=None) -> tuple[pd.DataFrame, dict]:
    """(rows, meta) of a run: from results.json, or rebuilt from results.csv when results.json is
    missing (an interrupted run) or cannot be read (a full disk, a kill while it was written).
    RunFolderError when the folder holds neither."""
    run_dir = Path(run_dir)
    warn = warn or (lambda message: None)
    if not run_dir.is_dir():
        raise RunFolderError(f"run directory {str(run_dir)!r} does not exist")
    path, csv_path = run_dir / "results.json", run_dir / "results.csv"
    if path.exists():
        try:
            return table.read_json(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            if not csv_path.exists():
                raise RunFolderError(f"{path} cannot be read ({e}) and there is no results.csv "
                                     f"to rebuild the rows from") from None
            warn(f"{path.name} cannot be read ({e}): the rows are rebuilt from results.csv")
    if not csv_path.exists():
        raise RunFolderError(f"{run_dir} holds no results.json or results.csv: not a run "
                             f"directory, or a run that finished no row")
    frame = load_results(run_dir)
    if frame.empty:
        raise RunFolderError(f"{csv_path} holds no rows: the run finished no row")
    meta = {}
    meta_path = run_dir / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            warn(f"meta.json cannot be read ({e}): the report goes without the run's settings")
        meta = meta if isinstance(meta, dict) else {}
    return frame, meta


def run_suite(config: RunConfig, out_dir, resume: bool = False, progress=None,
              peaks: bool = True, report: bool = True, warn=None,
              cluster=None) -> tuple[pd.DataFrame, dict]:
    """Run a suite into out_dir: meta.json first (fingerprint, peaks, settings), rows as they
    finish, then results.json and report.html, also when interrupted. Returns (rows, meta).

    The folder's lock is held throughout (RunLockedError if another run holds it); with resume,
    check_resumable runs first, before anything in the folder is touched. `warn(message)` hears
    what is taken over or dropped (a stale lock, a cut last line). `cluster` (an open
    harness.cluster.Cluster) measures the cases on its workers instead of here; meta.json then
    records its address and workers."""
    out_dir = Path(out_dir)
    settings = comparable_settings(config)
    if resume:
        check_resumable(out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir, warn):
        set_threads(config.threads)
        machine = fingerprint()
        measured = measure_peaks() if peaks else None
        config = replace(config, peak_gflops=peak_gflops(measured))
        meta = {**settings, "baseline": config.baseline, "peers": peer_names(config.backends),
                "user_backends": {b: o for b, o in user_backends().items()
                                  if b in config.backends},
                "per_case_limit_s": config.per_case_limit_s, "max_bytes": config.max_bytes,
                "policy": vars(config.policy), "resumed": resume,
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine,
                "peaks": measured, "warnings": [w for w in [blas_warning(machine)] if w]}
        if config.whole_model or any(getattr(c, "count", 1) != 1 for c in config.cases):
            meta["counts"] = {c.name: c.count for c in config.cases}
        if cluster is not None:
            meta["cluster"] = cluster.record()
        if cluster is not None and config.processes > 1:
            raise ValueError(f"processes={config.processes} measures here, in worker processes "
                             f"of this machine: not with a cluster, whose tasks each measure a "
                             f"case once")
        measure = cluster.measure if cluster is not None else \
            measure_in_processes(config) if config.processes > 1 else None
        runner = Runner(config, out_dir, resume, progress, warn, measure)
        files.write_text(out_dir / "meta.json", json.dumps(meta, indent=1))
        t0 = time.perf_counter()
        interrupted = False
        try:
            runner.run()
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            meta["wall_s"] = time.perf_counter() - t0
            meta["interrupted"] = interrupted
            frame = runner.store.frame()
            table.write_json(out_dir / "results.json", frame, meta)
            if report:
                write_report(out_dir, frame, meta)
    return frame, meta
