"""The runner: every case x direction x backend, verified once, then timed; results stream to disk.

Measuring and storing are apart. `measure_case` measures one (case, direction) on a list of
backends in this process and returns their Results; its arguments pickle, so a worker process
can call it. `Runner` walks a suite through it and streams each row into a run directory:

  results.csv     one row per case x direction x backend, appended as each finishes (full precision)
  samples.jsonl   the raw samples of each row, appended likewise
  meta.json       the settings, the machine fingerprint and its peaks (written first)
  results.json    everything (written at the end, and on an interrupt)
  report.html     the report (convbench.harness.report)

An interrupted run keeps every row written; `resume=True` skips the rows already there.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from convbench.backends import peer_names, user_backends
from convbench.harness import table
from convbench.harness.report import write_report
from convbench.harness.suites import Case
from convbench.machine import fingerprint, measure_peaks
from convbench.ops import get_op, ops_of
from convbench.result import Result
from convbench.threads import set_threads
from convbench.timing import TimingPolicy
from convbench.verify import Reference, check_backend

DIRECTIONS = ("fwd", "bwd-data", "bwd-weights", "bwd")


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


def iter_case(case: Case, op_name: str, backends, settings: Settings):
    """Yield the Result of each backend on one (case, direction), in backend order, each as soon as
    it is measured. The inputs and the reference are made once and shared by the backends."""
    op = get_op(op_name)
    inputs = op.make_inputs(case.problem, np.random.default_rng(settings.seed),
                            np.dtype(settings.dtype))
    reference = Reference(op, case.problem, inputs)
    for name in backends:
        result = check_backend(name, op, case.problem, settings.dtype, inputs=inputs,
                               reference=reference, policy=settings.policy,
                               limit_s=settings.per_case_limit_s, cold_cache=settings.cold_cache)
        yield result.replace(suite=settings.suite, case=case.name, problem=None)


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
    #: the suite is a model's layers: the report adds their sum (each case's count x time)
    whole_model: bool = False

    @property
    def settings(self) -> Settings:
        return Settings(self.suite, self.dtype, self.policy, self.per_case_limit_s,
                        self.cold_cache, self.seed)


class ResultStore:
    """results.csv and samples.jsonl in a run directory, appended and flushed row by row."""

    def __init__(self, out_dir: Path, resume: bool):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "results.csv"
        self.samples_path = self.dir / "samples.jsonl"
        self.results: list[Result] = []
        if resume:
            self.results = table.to_results(load_results(self.dir))
        else:
            for path in (self.csv_path, self.samples_path, self.dir / "results.json"):
                if path.exists():
                    path.unlink()
        self.done = {r.key() for r in self.results}
        self._header = not self.csv_path.exists()
        self._csv = open(self.csv_path, "a", newline="")
        self._samples = open(self.samples_path, "a")

    def add(self, result: Result) -> None:
        table.write_csv(table.to_frame([result]), self._csv, header=self._header)
        self._header = False
        self._csv.flush()
        self._samples.write(json.dumps({"key": list(result.key()), "samples_s": result.samples_s,
                                        "warmup_s": result.warmup_s}) + "\n")
        self._samples.flush()
        self.results.append(result)
        self.done.add(result.key())

    def frame(self) -> pd.DataFrame:
        return table.to_frame(self.results)

    def close(self) -> None:
        self._csv.close()
        self._samples.close()


def load_results(run_dir) -> pd.DataFrame:
    """The rows of a run directory from results.csv and samples.jsonl (works on interrupted
    runs), as a frame."""
    run_dir = Path(run_dir)
    path = run_dir / "results.csv"
    if not path.exists():
        return table.to_frame([])
    frame = table.read_csv(path)
    samples = {}
    sp = run_dir / "samples.jsonl"
    if sp.exists():
        for line in sp.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:   # a line cut by an interrupt
                continue
            samples[tuple(rec["key"])] = rec
    keys = zip(frame["case"], frame["descriptor"], frame["direction"], frame["backend"])
    recs = [samples.get(k, {}) for k in keys]
    frame["samples_s"] = [rec.get("samples_s", []) for rec in recs]
    frame["warmup_s"] = [rec.get("warmup_s", []) for rec in recs]
    return frame


class Runner:
    def __init__(self, config: RunConfig, out_dir, resume: bool = False, progress=None):
        self.cfg = config
        self.store = ResultStore(out_dir, resume)
        self.progress = progress

    def plan(self) -> list[tuple[Case, object]]:
        return [(c, op) for c in self.cfg.cases
                for op in directions_for(c.family, self.cfg.directions)]

    def run(self) -> list[Result]:
        set_threads(self.cfg.threads)
        settings = self.cfg.settings
        plan = self.plan()
        start = time.perf_counter()
        try:
            for i, (case, op) in enumerate(plan):
                if self.progress:
                    self.progress(i, len(plan), case, op, time.perf_counter() - start)
                todo = [b for b in self.cfg.backends
                        if (case.name, case.descriptor, op.direction, b) not in self.store.done]
                for result in iter_case(case, op.name, todo, settings):
                    self.store.add(result)
            if self.progress:
                self.progress(len(plan), len(plan), None, None, time.perf_counter() - start)
        finally:
            self.store.close()
        return self.store.results


def load_run(run_dir) -> tuple[pd.DataFrame, dict]:
    """(rows, meta) of a run: from results.json, or from the CSV of an interrupted run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    path = run_dir / "results.json"
    if path.exists():
        return table.read_json(path)
    frame = load_results(run_dir)
    if frame.empty:
        raise FileNotFoundError(f"{run_dir} holds no results.json or results.csv")
    meta_path = run_dir / "meta.json"
    return frame, json.loads(meta_path.read_text()) if meta_path.exists() else {}


def run_suite(config: RunConfig, out_dir, resume: bool = False, progress=None,
              peaks: bool = True, report: bool = True) -> tuple[pd.DataFrame, dict]:
    """Run a suite into out_dir: meta.json first (fingerprint, peaks, settings), rows as they
    finish, then results.json and report.html, also when interrupted. Returns (rows, meta)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(config.threads)
    meta = {"suite": config.suite, "backends": config.backends,
            "directions": list(config.directions), "dtype": config.dtype,
            "baseline": config.baseline, "peers": peer_names(config.backends),
            "user_backends": {b: o for b, o in user_backends().items() if b in config.backends},
            "cold_cache": config.cold_cache,
            "per_case_limit_s": config.per_case_limit_s, "policy": vars(config.policy),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": fingerprint(),
            "peaks": measure_peaks() if peaks else None}
    if config.whole_model or any(getattr(c, "count", 1) != 1 for c in config.cases):
        meta["counts"] = {c.name: c.count for c in config.cases}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    runner = Runner(config, out_dir, resume, progress)
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
