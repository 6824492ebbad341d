"""backend="auto": the fastest verified backend for each exact problem, direction and dtype.

On the first request for a problem the candidates are verified against the reference and timed
(verify.check_backend, as the harness does); the winner is kept in a JSON cache keyed by the
machine, so later processes start at once. The cache is a plain file the user can read and
delete: $CONVBENCH_CACHE_DIR/autotune.json (default ~/.cache/convbench/autotune.json).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import threading
from pathlib import Path

import numpy as np

from convbench import __version__
from convbench.backends import backend_names, get_backend
from convbench.backends.base import Backend
from convbench.errors import ConvbenchError, UnsupportedError
from convbench.machine import cpu_info, git_commit, package_version
from convbench.threads import get_threads
from convbench.timing import TimingPolicy
from convbench.verify import Reference, check_backend

_lock = threading.Lock()
#: a candidate whose one timed call (after the verifying one) takes this many times the best
#: time so far is recorded with that time and not measured further: an algorithm an order of
#: magnitude behind would otherwise spend most of the tuning budget
HOPELESS = 4.0


def cache_path() -> Path:
    root = os.environ.get("CONVBENCH_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "convbench")
    return Path(root) / "autotune.json"


_code_version: list = []


def code_version() -> str:
    """convbench's version and, in a checkout, its commit: new kernels make old choices stale."""
    if not _code_version:
        _code_version.append(f"{__version__}+{(git_commit() or '').split('+')[0]}")
    return _code_version[0]


_machine_keys: dict = {}


def machine_key() -> str:
    """What makes timings comparable: CPU, cores, threads, the library versions and convbench's.

    Reading the CPU model and package versions takes about a millisecond, so the key is computed
    once per thread count and simulator setting (the parts that can change within a process)."""
    variable = (get_threads(), os.environ.get("NUMBA_ENABLE_CUDASIM", "0"))
    if variable not in _machine_keys:
        parts = [cpu_info().get("model", platform.machine()), str(os.cpu_count()),
                 str(variable[0]), np.__version__, str(package_version("numba")),
                 str(package_version("torch")), variable[1], code_version()]
        _machine_keys[variable] = hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]
    return _machine_keys[variable]


def _load() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save(data: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home must not stop the computation; the choice is just not kept


def is_candidate(backend) -> bool:
    """Backends opt in (Backend.auto_candidate: convbench's own algorithms, and user backends that
    set it); never the naive loops, and never a peer, which convbench is measured against
    (choosing torch would compare torch with itself)."""
    return bool(backend.auto_candidate) and not backend.peer and backend.name != "auto"


def candidates(op, problem, dtype) -> list[str]:
    out = []
    for name in backend_names():
        b = get_backend(name)
        if not is_candidate(b) or b.device != "cpu":     # inputs arrive as host arrays here
            continue
        try:
            b.check(op, problem, dtype)
        except ConvbenchError:       # unavailable or unsupported: not a candidate
            continue
        out.append(name)
    return out


def _current(entry, cands) -> bool:
    """A kept choice still stands while its backend is a candidate and no candidate has joined
    since (a user backend registered after the choice was made races on the next request)."""
    if not entry or entry.get("backend") not in cands:
        return False
    considered = set(entry.get("best_s", {})) | set(entry.get("rejected", {}))
    return set(cands) <= considered


#: choices already read or made in this process, by (cache file, machine key, problem key): a
#: call must not pay for reading the file (the choice sits on every convolution's path)
_memo: dict = {}


def choose(op, problem, dtype, budget_s: float = 0.05) -> dict:
    """{'backend': name, 'best_s': {name: seconds}, 'median_s': {...}, 'rejected': {...}} for this
    problem, from the cache or timed now. The choice goes by the fastest call of each candidate:
    on a shared machine interference only ever adds time, so medians of a few calls can pick the
    slower of two close algorithms."""
    key = f"{op.name}|{problem.descriptor()}|{np.dtype(dtype).name}"
    mkey = machine_key()
    memo_key = (str(cache_path()), mkey, key)
    cands = candidates(op, problem, dtype)
    hit = _memo.get(memo_key)
    if _current(hit, cands):
        return hit
    with _lock:
        data = _load()
        hit = data.get(mkey, {}).get(key)
        if _current(hit, cands):
            _memo[memo_key] = hit
            return hit
    inputs = op.make_inputs(problem, np.random.default_rng(0), np.dtype(dtype))
    reference = Reference(op, problem, inputs)
    times, medians, rejected = {}, {}, {}
    policy = TimingPolicy(budget_s=budget_s, warmup_budget_s=budget_s, min_reps=5, max_reps=20)
    for name in cands:
        cut = HOPELESS * min(times.values()) if times else None
        r = check_backend(name, op, problem, dtype, inputs=inputs, reference=reference,
                          policy=dataclasses.replace(policy, give_up_s=cut))
        if r.timed:
            times[name], medians[name] = r.min_s, r.median_s
        else:           # a wrong answer or a crash: never chosen
            rejected[name] = r.reason
    if not times:
        raise UnsupportedError(f"auto: no backend can run {op.name} on {problem.descriptor()} "
                               f"({'; '.join(f'{k}: {v}' for k, v in rejected.items()) or 'none'})")
    entry = {"backend": min(times, key=times.get), "best_s": times, "median_s": medians,
             "rejected": rejected}
    with _lock:
        data = _load()
        data.setdefault(mkey, {})[key] = entry
        _save(data)
        _memo[memo_key] = entry
    return entry


class AutoBackend(Backend):
    """Delegates each call to the fastest verified backend for that exact problem."""

    name = "auto"
    description = "the fastest verified backend per problem, timed once and cached per machine"

    def implements(self, op) -> bool:
        return any(get_backend(n).implements(op) for n in backend_names()
                   if is_candidate(get_backend(n)))

    def unsupported(self, op, problem, dtype):
        if not candidates(op, problem, dtype):
            return "no available backend"
        return None

    def chosen(self, op, problem, dtype) -> str:
        return choose(op, problem, dtype)["backend"]

    def delegate(self, op, problem, dtype) -> str:
        return self.chosen(op, problem, dtype)

    def run(self, op, problem, *inputs):
        dtype = next(a.dtype for a in inputs if a is not None)
        return get_backend(self.chosen(op, problem, dtype)).run(op, problem, *inputs)
