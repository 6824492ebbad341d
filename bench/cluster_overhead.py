"""What going through Dask costs a run: the wall time of a deepbench-train subset run here, on
`--cluster local:1` (one worker process, the same thread count: the difference is Dask's
overhead) and on `--cluster local:2` (two worker processes sharing the cores), interleaved and
repeated; and the round trip of no-op tasks through the same path (Cluster.map).

    PYTHONPATH=. python bench/cluster_overhead.py --cases 40 --batch 1 --backends im2col

Writes a JSON summary to stdout (and --json FILE). Timings on a shared machine are noisy: read the
ratios of runs interleaved in one process, and the spread over --repeats.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from distributed import get_task_stream

from convbench.harness.cluster import Cluster, parse_address
from convbench.harness.runner import RunConfig, measure_case, run_suite
from convbench.harness.suites import load_suite
from convbench.threads import cpu_count
from convbench.timing import TimingPolicy


def _wall(cfg, out, cluster=None) -> float:
    t = time.perf_counter()
    run_suite(cfg, out, peaks=False, report=False, cluster=cluster)
    return time.perf_counter() - t


class Here:
    """The plain run, through run_suite's cluster hook so that the time spent measuring is
    counted the same way as a worker's: measure_case in this process."""

    def __init__(self):
        self.spent = 0.0

    def record(self) -> dict:
        return {"address": "here (plain)"}

    def measure(self, jobs, settings, step):
        for case, op, backends in jobs:
            step(case, op)
            t = time.perf_counter()
            rows = measure_case(case, op.name, backends, settings)
            self.spent += time.perf_counter() - t
            yield rows


def _compute_s(stream) -> float:
    """Seconds the workers spent computing the tasks of a task stream."""
    return sum(s["stop"] - s["start"] for task in stream.data for s in task["startstops"]
               if s["action"] == "compute")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="deepbench-train")
    ap.add_argument("--cases", type=int, default=40, help="the first N cases of the suite")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backends", default="im2col")
    ap.add_argument("--budget", type=float, default=0.05, help="timed seconds per backend")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--noop-tasks", type=int, default=400)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    cases = load_suite(args.suite, args.batch)[:args.cases]
    threads = cpu_count()
    policy = TimingPolicy(budget_s=args.budget, warmup_budget_s=min(args.budget, 0.05))

    def config(t):
        return RunConfig(args.suite, cases, args.backends.split(","), ("fwd",), threads=t,
                         policy=policy, batch=args.batch)

    walls = {"plain": [], "local:1": [], "local:2": []}
    outside = {"plain": [], "local:1": []}    # per case: wall time not spent measuring
    startup = []        # seconds to start a LocalCluster and connect

    def timed(name, out, warm=False):
        """One run; a cluster run opens its cluster first (not timed: `startup`), so that no
        scheduler shares the process with the plain run."""
        if name == "plain":
            here = Here()
            wall = _wall(config(threads), out, here)
            return here.spent, wall
        t0 = time.perf_counter()
        workers = int(name.split(":")[1])
        with Cluster(parse_address(name), threads=max(1, threads // workers)) as cl:
            startup.append(time.perf_counter() - t0)
            with get_task_stream(cl.client) as stream:
                wall = _wall(config(max(1, threads // workers)), out, cl)
            return _compute_s(stream), wall

    with tempfile.TemporaryDirectory() as tmp:
        for name in walls:                  # warm-up: imports and first calls, not counted
            timed(name, Path(tmp) / f"warm-{name.replace(':', '')}")
        for r in range(args.repeats):       # interleaved
            for name in walls:
                compute, wall = timed(name, Path(tmp) / f"{name.replace(':', '')}-{r}")
                walls[name].append(wall)
                if name in outside:
                    outside[name].append((wall - compute) / len(cases))
        with Cluster(parse_address("local:1"), threads=threads) as one:
            for _ in one.map(abs, range(2)):     # the worker's first task pays its imports
                pass
            t = time.perf_counter()
            for _ in one.map(abs, range(args.noop_tasks)):
                pass
            noop_s = (time.perf_counter() - t) / args.noop_tasks
    med = {k: statistics.median(v) for k, v in walls.items()}
    n = len(cases)
    out = {"suite": args.suite, "cases": n, "batch": args.batch, "backends": args.backends,
           "budget_s": args.budget, "threads": threads, "repeats": args.repeats,
           "cluster_startup_s": [round(x, 3) for x in startup],
           "wall_s": {k: [round(x, 3) for x in v] for k, v in walls.items()},
           "median_wall_s": {k: round(v, 3) for k, v in med.items()},
           "plain_per_case_s": round(med["plain"] / n, 4),
           "dask_overhead_per_case_s (local:1 - plain)": round((med["local:1"] - med["plain"]) / n,
                                                               4),
           "dask_overhead_pct_of_plain": round(100 * (med["local:1"] / med["plain"] - 1), 2),
           "per case outside measure_case_s": {k: [round(x, 4) for x in v]
                                               for k, v in outside.items()},
           "dask_per_case_s (local:1 - plain, outside measure_case)": round(
               statistics.median(outside["local:1"]) - statistics.median(outside["plain"]), 4),
           "local:2 / plain": round(med["local:2"] / med["plain"], 3),
           "noop_task_round_trip_s": round(noop_s, 5)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
