"""pytest-benchmark suites for developers: `python -m pytest bench --benchmark-only`.

After the run, a summary prints each case's GFLOP/s per backend and its ratio to the torch peer,
all measured side by side in the same process."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_terminal_summary(terminalreporter):
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    rows = {}
    for bench in session.benchmarks:
        info = bench.extra_info
        if "case" not in info or not bench.stats:
            continue
        rate = info["work"] / bench.stats.median / 1e9
        rows.setdefault(info["case"], {})[info["backend"]] = (rate, info["unit"])
    if not rows:
        return
    tr = terminalreporter
    tr.section("throughput (median) and ratio to torch, same run")
    for case, by_backend in rows.items():
        peer = by_backend.get("torch", (None,))[0]
        cells = []
        for name, (rate, unit) in by_backend.items():
            ratio = f" ({rate / peer:.2f}x torch)" if peer and name != "torch" else ""
            cells.append(f"{name} {rate:.1f} {unit}{ratio}")
        tr.write_line(f"{case}: " + "; ".join(cells))


@pytest.fixture(autouse=True)
def _threads():
    from convbench.threads import set_threads
    set_threads(int(os.environ.get("CONVBENCH_THREADS", "0")) or None)
