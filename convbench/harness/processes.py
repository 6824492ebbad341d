"""Measuring one (case, direction) in K fresh processes (`convbench run --processes K`), and
merging the K Results of each backend into one row.

What differs between two processes (memory layout and alignment, which library's threads spin,
the CPU's clock and the neighbours on a shared host at that moment) is shared by every sample of
one process, so the spread of the samples within a process understates how much another run would
differ. As pyperf does, each case is measured in several fresh processes and each process's
median is kept: their spread is the between-process variance that `compare` tests against.

The processes run one after another, never side by side (they would share the cores), each
started with multiprocessing's spawn method: its own imports, warm-up and first call. A process
that dies (a crash in a kernel, the kernel's out-of-memory killer) fails the backends it was
measuring, in that case alone.
"""
from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from convbench.backends import get_backend, load_backend_file, register_backend, user_backends
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


def measure_in_processes(measure, case, op_name: str, backends, settings, processes: int,
                         threads: int | None = None) -> list[Result]:
    """The merged Result of each backend (in `backends` order) on one (case, direction), measured
    by `measure(case, op_name, backends, settings) -> [Result]` (a module-level function: the
    processes find it by name) in `processes` fresh processes, one after another, each with
    `threads` threads and the run's user backends registered. A backend is measured again only
    while every process before timed it (an UNIMPLEMENTED, SKIPPED or FAILED result is final)."""
    if processes < 1:
        raise ValueError(f"processes={processes!r} must be >= 1")
    users = _user_classes(backends)
    runs: list[dict[str, Result]] = []
    todo = list(backends)
    for k in range(processes):
        if not todo:
            break
        results = _in_fresh_process(measure, case, op_name, todo, settings, threads, users,
                                    f"process {k + 1} of {processes}")
        runs.append({r.backend: r for r in results})
        todo = [r.backend for r in results if r.timed]
    return [merge_results([run[name] for run in runs if name in run]) for name in backends]


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


def _in_fresh_process(measure, case, op_name, backends, settings, threads, users,
                      which: str) -> list[Result]:
    args = (measure, case, op_name, backends, settings, threads, users)
    try:
        pickle.dumps(args)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise ProcessError(f"case {case.name}: cannot hand it to a fresh process ({e}); a user "
                           f"backend must be a class of a --backend-file or at the top level of "
                           f"an importable module") from None
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(_child, *args).result()
    except BrokenProcessPool as e:
        reason = (f"the fresh process ({which}) died while measuring {', '.join(backends)} "
                  f"on this case ({e})")
        op, dtype = get_op(op_name), np.dtype(settings.dtype)
        return [new_result(name, op, case.problem, dtype).replace(
            status=FAILED, reason=reason, suite=settings.suite, case=case.name, problem=None)
            for name in backends]
    except ConvbenchError as e:
        raise ProcessError(f"case {case.name}, {which}: {e}") from e


def _child(measure, case, op_name, backends, settings, threads, users) -> list[Result]:
    """What a fresh process runs: the parent's thread count and user backends, then `measure`.
    Outputs are not sent back (only the timings are needed)."""
    set_threads(threads)
    for _, origin, path, cls in users:
        if path is not None:
            load_backend_file(path)
        else:
            register_backend(cls, origin=origin)
    return [r.replace(outputs=(), problem=None)
            for r in measure(case, op_name, backends, settings)]
