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
from convbench.harness.runner import RunConfig, run_suite
from convbench.harness.suites import load_suite
from convbench.threads import cpu_count
from convbench.timing import TimingPolicy


def _wall(cfg, out, cluster=None) -> float:
    t = time.perf_counter()
    run_suite(cfg, out, peaks=False, report=False, cluster=cluster)
    return time.perf_counter() - t


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
    outside = []        # per case: local:1's wall time not spent computing on the worker
    t0 = time.perf_counter()
    with Cluster(parse_address("local:1"), threads=threads) as one, \
            Cluster(parse_address("local:2"), threads=max(1, threads // 2)) as two, \
            tempfile.TemporaryDirectory() as tmp:
        startup_s = time.perf_counter() - t0
        # a warm-up pass of each, so that imports and first calls are paid outside the figures
        for name, cl in (("plain", None), ("local:1", one), ("local:2", two)):
            _wall(config(threads if cl is not two else max(1, threads // 2)),
                  Path(tmp) / f"warm-{name.replace(':', '')}", cl)
        for r in range(args.repeats):
            for name, cl in (("plain", None), ("local:1", one), ("local:2", two)):
                t = threads if cl is not two else max(1, threads // 2)
                with get_task_stream(one.client) as stream:
                    wall = _wall(config(t), Path(tmp) / f"{name.replace(':', '')}-{r}", cl)
                walls[name].append(wall)
                if cl is one:
                    outside.append((wall - _compute_s(stream)) / len(cases))
        t = time.perf_counter()
        for _ in one.map(abs, range(args.noop_tasks)):
            pass
        noop_s = (time.perf_counter() - t) / args.noop_tasks
    med = {k: statistics.median(v) for k, v in walls.items()}
    n = len(cases)
    out = {"suite": args.suite, "cases": n, "batch": args.batch, "backends": args.backends,
           "budget_s": args.budget, "threads": threads, "repeats": args.repeats,
           "cluster_startup_s (local:1 and local:2)": round(startup_s, 3),
           "wall_s": {k: [round(x, 3) for x in v] for k, v in walls.items()},
           "median_wall_s": {k: round(v, 3) for k, v in med.items()},
           "plain_per_case_s": round(med["plain"] / n, 4),
           "dask_overhead_per_case_s (local:1 - plain)": round((med["local:1"] - med["plain"]) / n,
                                                               4),
           "dask_overhead_pct_of_plain": round(100 * (med["local:1"] / med["plain"] - 1), 2),
           "local:1 per case outside the worker's compute_s": [round(x, 4) for x in outside],
           "local:2 / plain": round(med["local:2"] / med["plain"], 3),
           "noop_task_round_trip_s": round(noop_s, 5)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
