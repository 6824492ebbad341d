"""Time against memory on ResNet-50's 3x3 and 1x1 layers: per layer and backend the median time,
the measured peak memory of one call (peak_bytes: outputs and kept scratch included) and the
scratch kept between calls, with the Pareto front marked (*: faster than every backend that
uses less memory); then backend="auto" with no workspace limit and with one (its choice per
layer, its speed, and the total over the layers).

    python bench/memory_table.py [--batch 8] [--direction fwd] [--budget 0.2] [--limit 16M]
                                 [--backends im2col,im2col-numba,fft,winograd-f2,...]

Everything is measured through the runner's own path (harness.runner.measure_case, hence
verify.check_backend): each result is verified, then timed, then its memory is measured in a
call of its own. Times come from one process on whatever else the machine is doing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import warnings

import numpy as np

from convbench.backends import get_backend
from convbench.errors import ConvbenchError
from convbench.harness import table
from convbench.harness.report import pareto
from convbench.harness.runner import Settings, measure_case
from convbench.harness.suites import resnet50
from convbench.memory import format_bytes, parse_bytes
from convbench.ops import get_op
from convbench.threads import get_threads, set_threads
from convbench.timing import TimingPolicy


def layers(batch: int):
    """ResNet-50's 3x3 and 1x1 convolutions (conv1's 7x7 left out)."""
    return [c for c in resnet50(batch) if c.problem.R in (1, 3)]


def _ms(s) -> str:
    return "-" if s is None or s != s else f"{s * 1e3:8.3f}"


def _stated(name, op, problem) -> str:
    """Backend.scratch_bytes plus the outputs: what the backend says a call needs, to hold
    against the measured peak."""
    try:
        b = get_backend(name)
        b.check(op, problem, np.float32)
    except ConvbenchError:
        return "-"
    need = b.scratch_bytes(op, problem, np.dtype(np.float32)) + op.output_bytes(problem, 4)
    return format_bytes(need)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--direction", default="fwd", help="fwd, bwd-data or bwd-weights")
    ap.add_argument("--backends", default="im2col,im2col-numba,fft,winograd-f2,winograd-f4,"
                                          "numba-cpu,torch")
    ap.add_argument("--budget", type=float, default=0.2, help="seconds of timing per result")
    ap.add_argument("--limit", default="16M", help="auto's workspace limit for the comparison")
    ap.add_argument("--max-memory", default="4G", help="skip a backend estimated above this")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    if "CONVBENCH_CACHE_DIR" not in os.environ:      # auto tunes afresh, not from a user's cache
        os.environ["CONVBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="convbench-memtable-")
    set_threads(a.threads)
    limit = parse_bytes(a.limit, "--limit")
    policy = TimingPolicy(budget_s=a.budget, warmup_budget_s=min(a.budget, 0.2))
    settings = Settings("resnet50", "float32", policy, 30.0, False, 0,
                        parse_bytes(a.max_memory, "--max-memory"))
    limited = dataclasses.replace(settings, workspace_limit=limit)
    op = get_op(f"conv2d:{a.direction}")
    names = a.backends.split(",")
    t0 = time.perf_counter()
    print(f"ResNet-50 3x3 and 1x1 layers, batch {a.batch}, conv2d:{a.direction}, float32, "
          f"{settings.policy.budget_s} s per result; peak = most bytes at once in one call "
          f"(outputs and kept scratch included), kept = scratch kept between calls, "
          f"stated = Backend.scratch_bytes + outputs, * = Pareto front")
    totals = {"auto": 0.0, "auto-limited": 0.0}
    both, none_fit = 0, []
    fronts: dict = {}
    for case in layers(a.batch):
        rows = measure_case(case, op.name, names, settings)
        plain = measure_case(case, op.name, ["auto"], settings)[0]
        under = measure_case(case, op.name, ["auto"], limited)[0]
        frame = table.to_frame(rows)
        front = pareto(frame).set_index("backend")["front"] if len(frame) else {}
        print(f"\n{case.name}  ({case.descriptor})")
        print(f"  {'backend':<12} {'ms':>8} {'peak':>10} {'kept':>10} {'stated':>10}  status")
        for r in rows:
            peak = format_bytes(r.peak_bytes) if r.peak_bytes is not None else "-"
            kept = format_bytes(r.workspace_bytes) if r.workspace_bytes is not None else "-"
            mark = "*" if r.backend in front and front[r.backend] else " "
            why = "" if r.timed else f"  {r.status}: {r.reason[:70]}"
            print(f"  {r.backend:<12} {_ms(r.median_s)} {peak:>10} {kept:>10} "
                  f"{_stated(r.backend, op, case.problem):>10} {mark}{why}")
            if mark == "*":
                fronts[r.backend] = fronts.get(r.backend, 0) + 1
        for label, r in (("auto", plain), (f"auto <= {a.limit}", under)):
            chose = r.reason.split(";")[0] if r.timed else f"{r.status}: {r.reason[:80]}"
            peak = format_bytes(r.peak_bytes) if r.peak_bytes is not None else "-"
            print(f"  {label:<12} {_ms(r.median_s)} {peak:>10} {'':>10}   {chose}")
        if plain.timed and under.timed:
            totals["auto"] += plain.median_s
            totals["auto-limited"] += under.median_s
            both += 1
        elif plain.timed:
            none_fit.append(case.name)
    print(f"\nPareto front appearances: {fronts}")
    t, tl = totals["auto"], totals["auto-limited"]
    if both:
        print(f"auto over the {both} layers it runs both ways: {t * 1e3:.2f} ms with no limit, "
              f"{tl * 1e3:.2f} ms under {a.limit} ({tl / t:.2f}x the time)")
    print(f"no backend within {a.limit} on {len(none_fit)} layers: {', '.join(none_fit) or '-'}")
    print(f"({time.perf_counter() - t0:.0f} s, threads: {get_threads()})")


if __name__ == "__main__":
    main()
