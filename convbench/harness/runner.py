"""The runner: every case x direction x backend, verified once, then timed; results stream to disk.

A run directory holds
  results.csv     one row per case x direction x backend, appended as each finishes (full precision)
  samples.jsonl   the raw samples of each row, appended likewise
  results.json    everything, plus the machine fingerprint and peaks (written at the end, and on
                  an interrupt)
  report.html     the report (convbench.harness.report)
An interrupted run keeps every row written; `resume=True` skips the rows already there.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convbench.backends import get_backend
from convbench.errors import BackendUnavailableError, UnsupportedError
from convbench.harness.stats import summarize
from convbench.harness.suites import Case
from convbench.harness.timing import TimingPolicy, measure
from convbench.ops import ops_of
from convbench.verify import compare, reference_for, tolerance

OK, FAILED, UNSUPPORTED, UNAVAILABLE, SKIPPED = "OK", "FAILED", "UNSUPPORTED", "UNAVAILABLE", "SKIPPED"

COLUMNS = ["suite", "case", "descriptor", "family", "direction", "backend", "dtype", "batch",
           "threads", "status", "reason", "reference", "rel_error", "tolerance", "median_s", "iqr_s",
           "min_s", "mean_s", "ci_low_s", "ci_high_s", "n_samples", "outliers", "noisy",
           "first_call_s", "flops", "bytes", "gflops", "gbps", "intensity"]

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


def _key(row) -> tuple:
    return (row["case"], row["descriptor"], row["direction"], row["backend"])


class ResultStore:
    """results.csv and samples.jsonl in a run directory, appended and flushed row by row."""

    def __init__(self, out_dir: Path, resume: bool):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "results.csv"
        self.samples_path = self.dir / "samples.jsonl"
        self.rows: list[dict] = []
        if resume:
            self.rows = load_rows(self.dir)
        else:
            for path in (self.csv_path, self.samples_path, self.dir / "results.json"):
                if path.exists():
                    path.unlink()
        self.done = {_key(r) for r in self.rows}
        new = not self.csv_path.exists()
        self._csv = open(self.csv_path, "a", newline="")
        self._writer = csv.DictWriter(self._csv, fieldnames=COLUMNS)
        if new:
            self._writer.writeheader()
        self._samples = open(self.samples_path, "a")

    def add(self, row: dict, samples: list[float], warmup: list[float]) -> None:
        self._writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        self._csv.flush()
        self._samples.write(json.dumps({"key": list(_key(row)), "samples_s": samples,
                                        "warmup_s": warmup}) + "\n")
        self._samples.flush()
        row = dict(row, samples_s=samples, warmup_s=warmup)
        self.rows.append(row)
        self.done.add(_key(row))

    def close(self) -> None:
        self._csv.close()
        self._samples.close()


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)       # full precision
    return v


def _parse(v: str):
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def load_rows(run_dir) -> list[dict]:
    """The rows of a run directory from results.csv and samples.jsonl (works on interrupted runs)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: (_parse(v) if k not in ("case", "descriptor", "reason", "backend", "suite")
                     else v) for k, v in r.items()} for r in csv.DictReader(f)]
    samples = {}
    sp = run_dir / "samples.jsonl"
    if sp.exists():
        for line in sp.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:   # a line cut by an interrupt
                continue
            samples[tuple(rec["key"])] = rec
    for r in rows:
        rec = samples.get(_key(r), {})
        r["samples_s"] = rec.get("samples_s", [])
        r["warmup_s"] = rec.get("warmup_s", [])
    return rows


def _estimate_s(backend, op, problem) -> float | None:
    rate = backend.est_macs_per_s
    return None if rate is None else op.flops(problem) / 2 / rate


class Runner:
    def __init__(self, config: RunConfig, out_dir, resume: bool = False, progress=None):
        self.cfg = config
        self.store = ResultStore(out_dir, resume)
        self.progress = progress

    def plan(self) -> list[tuple[Case, object]]:
        return [(c, op) for c in self.cfg.cases for op in directions_for(c.family, self.cfg.directions)]

    def run(self) -> list[dict]:
        from convbench.threads import get_threads, set_threads
        set_threads(self.cfg.threads)
        self.threads = get_threads()
        plan = self.plan()
        start = time.perf_counter()
        try:
            for i, (case, op) in enumerate(plan):
                if self.progress:
                    self.progress(i, len(plan), case, op, time.perf_counter() - start)
                self._run_case(case, op)
            if self.progress:
                self.progress(len(plan), len(plan), None, None, time.perf_counter() - start)
        finally:
            self.store.close()
        return self.store.rows

    def _base_row(self, case, op, backend) -> dict:
        p = case.problem
        flops = op.flops(p)
        nbytes = op.min_bytes(p, np.dtype(self.cfg.dtype).itemsize)
        return dict(suite=self.cfg.suite, case=case.name, descriptor=case.descriptor,
                    family=op.family, direction=op.direction, backend=backend,
                    dtype=self.cfg.dtype, batch=p.N, threads=self.threads, flops=flops,
                    bytes=nbytes, intensity=flops / nbytes if nbytes else None)

    def _run_case(self, case, op):
        todo = [b for b in self.cfg.backends if (case.name, case.descriptor, op.direction, b)
                not in self.store.done]
        if not todo:
            return
        dtype = np.dtype(self.cfg.dtype)
        inputs = op.make_inputs(case.problem, np.random.default_rng(self.cfg.seed), dtype)
        ref = None
        for name in todo:
            row = self._base_row(case, op, name)
            samples, warmup = [], []
            try:
                backend = get_backend(name)
                backend.check(op, case.problem, dtype)
                est = _estimate_s(backend, op, case.problem)
                if est is not None and est > self.cfg.per_case_limit_s:
                    raise _Skip(f"estimated {est:,.0f} s per call exceeds the per-case limit of "
                                f"{self.cfg.per_case_limit_s:g} s")
                if ref is None:
                    ref = reference_for(op, case.problem, inputs)
                row.update(self._measure(backend, op, case.problem, inputs, ref))
                samples, warmup = row.pop("_samples"), row.pop("_warmup")
                if hasattr(backend, "chosen") and row["status"] == OK:
                    row["reason"] = (f"chose {backend.chosen(op, case.problem, dtype)}; "
                                     + row.get("reason", "")).rstrip("; ")
            except BackendUnavailableError as e:
                row.update(status=UNAVAILABLE, reason=str(e))
            except UnsupportedError as e:
                row.update(status=UNSUPPORTED, reason=str(e))
            except _Skip as e:
                row.update(status=SKIPPED, reason=str(e))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:   # a kernel that raises or runs out of memory
                row.update(status=FAILED, reason=f"{type(e).__name__}: {e}")
            self.store.add(row, samples, warmup)

    def _measure(self, backend, op, problem, inputs, ref) -> dict:
        ref_outputs, ref_label = ref
        dev = [None if a is None else backend.to_device(a) for a in inputs]
        holder = {}

        def call(*args):
            holder["out"] = backend.run(op, problem, *(args or dev))

        first = backend.time_call(call)           # compilation included
        out = holder["out"]
        out = out if isinstance(out, tuple) else (out,)
        out = tuple(None if o is None else np.asarray(backend.to_host(o)) for o in out)
        tol = tolerance(op, problem, np.dtype(self.cfg.dtype), backend)
        err, passed = compare(op, problem, inputs, out, ref_outputs, tol)
        result = dict(reference=ref_label, rel_error=err, tolerance=tol, first_call_s=first)
        if not passed:
            return dict(result, status=FAILED, reason=f"relative error {err:.3g} > tolerance "
                        f"{tol:.3g} against the {ref_label}", _samples=[], _warmup=[])
        cycle = None
        if self.cfg.cold_cache:
            cycle = [tuple(None if a is None else backend.to_device(a.copy()) for a in inputs)
                     for _ in range(_cold_copies(inputs))]
        m = measure(call, backend.time_call, self.cfg.policy, cycle, first_call_s=first)
        s = summarize(m.samples_s)
        result.update(status=OK, reason="", median_s=s.median, iqr_s=s.iqr, min_s=s.min,
                      mean_s=s.mean, ci_low_s=s.ci_low, ci_high_s=s.ci_high, n_samples=s.n,
                      outliers=s.outliers, noisy=s.noisy,
                      gflops=op.flops(problem) / s.median / 1e9,
                      gbps=op.min_bytes(problem, np.dtype(self.cfg.dtype).itemsize) / s.median / 1e9,
                      _samples=m.samples_s, _warmup=m.warmup_s)
        if s.noisy:
            result["reason"] = f"noisy: relative IQR {s.relative_iqr:.0%}"
        return result


class _Skip(Exception):
    pass


#: Assumed last-level cache size for cold-cache mode when the machine does not say.
DEFAULT_LLC_BYTES = 32 << 20


def _llc_bytes() -> int:
    try:
        import os
        return int(os.sysconf("SC_LEVEL3_CACHE_SIZE")) or DEFAULT_LLC_BYTES
    except (ValueError, OSError, AttributeError):
        return DEFAULT_LLC_BYTES


def _cold_copies(inputs) -> int:
    """Copies of the inputs to rotate through so that together they exceed the last-level cache."""
    size = sum(a.nbytes for a in inputs if a is not None)
    return max(2, min(64, math.ceil(2 * _llc_bytes() / max(size, 1))))


def write_json(run_dir, rows, meta) -> Path:
    path = Path(run_dir) / "results.json"
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for k, v in r.items()} for r in rows]
    path.write_text(json.dumps({"meta": meta, "rows": clean}, indent=1))
    return path


def load_run(run_dir) -> tuple[list[dict], dict]:
    """(rows, meta) of a run: from results.json, or from the CSV of an interrupted run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    path = run_dir / "results.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["rows"], data.get("meta", {})
    rows = load_rows(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir} holds no results.json or results.csv")
    meta_path = run_dir / "meta.json"
    return rows, json.loads(meta_path.read_text()) if meta_path.exists() else {}


def run_suite(config: RunConfig, out_dir, resume: bool = False, progress=None,
              peaks: bool = True, report: bool = True):
    """Run a suite into out_dir: meta.json first (fingerprint, peaks, settings), rows as they
    finish, then results.json and report.html, also when interrupted. Returns (rows, meta)."""
    from convbench.harness.machine import fingerprint, measure_peaks
    from convbench.threads import set_threads
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(config.threads)
    meta = {"suite": config.suite, "backends": config.backends,
            "directions": list(config.directions), "dtype": config.dtype,
            "baseline": config.baseline, "cold_cache": config.cold_cache,
            "per_case_limit_s": config.per_case_limit_s, "policy": vars(config.policy),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": fingerprint(),
            "peaks": measure_peaks() if peaks else None}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    runner = Runner(config, out_dir, resume, progress)
    t0 = time.perf_counter()
    interrupted = False
    try:
        rows = runner.run()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        meta["wall_s"] = time.perf_counter() - t0
        meta["interrupted"] = interrupted
        write_json(out_dir, runner.store.rows, meta)
        if report:
            from convbench.harness.report import write_report
            write_report(out_dir, runner.store.rows, meta)
    return rows, meta
