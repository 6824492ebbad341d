"""Measuring each (case, direction) in K processes of its own (`convbench run --processes K`),
and merging the K Results of each backend into one row.

What differs between two processes (memory layout and alignment, which library's threads spin,
the CPU's clock and the neighbours on a shared host at that moment) is shared by every sample of
one process, so the spread of the samples within a process understates how much another run would
differ. As pyperf does, each case is measured in several fresh processes and each process's
median is kept: their spread is the between-process variance that `compare` tests against.

The K worker processes are started with multiprocessing's spawn method (their own imports,
memory layout and thread pools) and kept for the run: each case is measured by one worker after
another, never side by side (they would share the cores), each warming up on its own and timing
its own first call. Starting K processes per case instead (pyperf's way) costs a process start
with its imports (NumPy, Numba, torch: seconds) per case and process, several times the time of a
quick suite's measurements. A worker that dies (a crash in a kernel, the out-of-memory killer)
fails the backends it was measuring, in that case alone, and a fresh one takes its place.
"""
from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from convbench.backends import (
    free_workspace,
    get_backend,
    load_backend_file,
    register_backend,
    user_backends,
)
from convbench.backends.plugins import file_of
from convbench.errors import ConvbenchError
from convbench.ops import get_op
from convbench.result import FAILED, MISTRUSTED, PASSED, Result
from convbench.stats import median_ci, summarize
from convbench.threads import set_threads
from convbench.verify import new_result

#: How a result's reason starts when its samples are widely spread (verify.check_backend).
NOISY_NOTE = "noisy: "


class ProcessError(ConvbenchError):
    """A case could not be handed to a fresh process, or the process failed outside the
    measurement (the message says which and why)."""


class ProcessGroup:
    """K worker processes, each started afresh (spawn) on first use and then kept for the run:
    worker k measures every (case, direction) once, in turn with the other workers, so that each
    case is measured in K processes at the cost of K starts per run, not K per case. Each worker
    has the run's thread count and user backends, warms each case up on its own, and releases
    the backends' scratch memory after each case (the workers wait their turn side by side)."""

    def __init__(self, processes: int, threads: int | None = None, backends=()):
        if processes < 1:
            raise ValueError(f"processes={processes!r} must be >= 1")
        self.processes = processes
        self._start = (threads, _user_classes(backends))
        try:
            pickle.dumps(self._start)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise ProcessError(f"cannot hand the backends to fresh processes ({e}): a user "
                               f"backend must be a class of a --backend-file or at the top level "
                               f"of an importable module") from None
        self._pools: list[ProcessPoolExecutor | None] = [None] * processes

    def measure(self, measure, case, op_name: str, backends, settings) -> list[Result]:
        """The merged Result of each backend (in `backends` order) on one (case, direction),
        measured by `measure(case, op_name, backends, settings) -> [Result]` (a module-level
        function: the workers find it by name) in each worker, one after another. A backend is
        measured again only while every worker before timed it (an UNIMPLEMENTED, SKIPPED or
        FAILED result is final). A worker that dies fails the backends it was measuring, in
        this case alone; a fresh one takes its place."""
        runs: list[dict[str, Result]] = []
        todo = list(backends)
        for k in range(self.processes):
            if not todo:
                break
            results = self._measure_in(k, measure, case, op_name, todo, settings)
            runs.append({r.backend: r for r in results})
            todo = [r.backend for r in results if r.timed]
        return [merge_results([run[name] for run in runs if name in run]) for name in backends]

    def _measure_in(self, k, measure, case, op_name, backends, settings) -> list[Result]:
        if self._pools[k] is None:
            self._pools[k] = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=self._start)
        try:
            return self._pools[k].submit(_measure_here, measure, case, op_name, backends,
                                         settings).result()
        except BrokenProcessPool as e:
            self._pools[k].shutdown(wait=False)
            self._pools[k] = None
            reason = (f"process {k + 1} of {self.processes} died while measuring "
                      f"{', '.join(backends)} on this case ({e})")
            op, dtype = get_op(op_name), np.dtype(settings.dtype)
            return [new_result(name, op, case.problem, dtype).replace(
                status=FAILED, reason=reason, suite=settings.suite, case=case.name, problem=None)
                for name in backends]
        except ConvbenchError as e:
            raise ProcessError(f"case {case.name}, process {k + 1} of {self.processes}: "
                               f"{e}") from e

    def close(self) -> None:
        for pool in self._pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pools = [None] * self.processes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def merge_results(results: list[Result]) -> Result:
    """One row from the Results of one backend on one problem in several processes: the median of
    the process medians, their spread (the standard deviation of their logs) and their 95%
    confidence interval (order statistics of the process medians: their full range below six),
    every process's median and first call; the other statistics over all the samples together.
    A result not timed in every process is that process's (the first FAILED, if any)."""
    k = len(results)
    untimed = [(i, r) for i, r in enumerate(results) if not r.timed]
    if untimed:
        i, r = next(((i, r) for i, r in untimed if r.status == FAILED), untimed[0])
        reason = f"in process {i + 1} of {k}: {r.reason}" if k > 1 and r.reason else r.reason
        return r.replace(processes=k, reason=reason)
    first = results[0]
    medians = np.array([r.median_s for r in results], dtype=np.float64)
    samples = [s for r in results for s in r.samples_s]
    pooled = summarize(samples)
    median = float(np.median(medians))
    ci_low, ci_high = median_ci(np.sort(medians))
    spread = float(np.std(np.log(medians), ddof=1)) if k > 1 and np.all(medians > 0) else None
    status = MISTRUSTED if any(r.status == MISTRUSTED for r in results) else PASSED
    # each process's own spread note gives way to one on all the samples together
    reasons = dict.fromkeys(part for r in results for part in r.reason.split("; ")
                            if part and not part.startswith(NOISY_NOTE))
    if pooled.noisy:
        reasons[f"{NOISY_NOTE}relative IQR {pooled.relative_iqr:.0%} over {k} processes"] = None
    return first.replace(
        status=status, reason="; ".join(reasons),
        rel_error=max(r.rel_error for r in results if r.rel_error is not None)
        if any(r.rel_error is not None for r in results) else None,
        median_s=median, iqr_s=pooled.iqr, min_s=pooled.min, mean_s=pooled.mean,
        ci_low_s=ci_low, ci_high_s=ci_high, n_samples=pooled.n, outliers=pooled.outliers,
        noisy=pooled.noisy, first_call_s=_median([r.first_call_s for r in results]),
        gflops=first.flops / median / 1e9 if first.flops is not None and median > 0 else None,
        gbps=first.bytes / median / 1e9 if first.bytes is not None and median > 0 else None,
        processes=k, process_spread=spread, samples_s=samples,
        warmup_s=[s for r in results for s in r.warmup_s],
        process_medians_s=[float(m) for m in medians],
        process_first_call_s=[r.first_call_s for r in results])


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _user_classes(backends) -> list[tuple]:
    """(name, origin, file, class) of the user backends among `backends`: a class loaded from a
    file goes by its file (class None: it unpickles only once the file is loaded), any other by
    reference to its module."""
    users = user_backends()
    out = []
    for name in backends:
        if name in users:
            cls = type(get_backend(name))
            path = file_of(cls)
            out.append((name, users[name], path, None if path else cls))
    return out


def _start_worker(threads, users) -> None:
    """A worker's start: the parent's thread count and user backends."""
    set_threads(threads)
    for _, origin, path, cls in users:
        if path is not None:
            load_backend_file(path)
        else:
            register_backend(cls, origin=origin)


def _measure_here(measure, case, op_name, backends, settings) -> list[Result]:
    """What a worker runs per case: `measure`, then the backends' scratch memory is released,
    as a process of its own would. Outputs are not sent back (only the timings are needed)."""
    try:
        return [r.replace(outputs=(), problem=None)
                for r in measure(case, op_name, backends, settings)]
    finally:
        free_workspace()
