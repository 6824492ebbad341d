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

from convbench import __version__, files
from convbench.backends import backend_names, get_backend
from convbench.backends.base import Backend
from convbench.errors import ConvbenchError, UnsupportedError
from convbench.machine import cpu_info, git_commit, package_version
from convbench.memory import format_bytes, get_workspace_limit
from convbench.threads import get_threads
from convbench.timing import TimingPolicy
from convbench.verify import Reference, check_backend, shared_bytes

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


class CacheFileError(ConvbenchError):
    """The autotune cache file holds JSON that is not an autotune cache."""


def _load() -> dict:
    """The cache: {machine key: {problem key: {"backend": name, ...}}}. A file that is missing or
    not JSON (cut short by a kill) counts as empty. JSON of another shape where convbench reads
    (not an object, or this machine's part not one) is an error rather than something to
    overwrite: it may not be convbench's. Entries of other shapes inside (other versions' or
    other tools') are left alone and never taken as choices (_entry)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get(machine_key(), {}), dict):
        raise CacheFileError(f"{path} is not convbench's autotune cache (JSON of another shape): "
                             f"delete it, or set CONVBENCH_CACHE_DIR to another folder")
    return data


def _entry(data: dict, mkey: str, key: str) -> dict | None:
    """The cached choice for a problem, None where there is none of the expected shape."""
    hit = data.get(mkey, {}).get(key)
    return hit if isinstance(hit, dict) and isinstance(hit.get("backend"), str) else None


def check_cache() -> None:
    """CacheFileError now, rather than at the first choice, when the cache file is foreign."""
    _load()


def _save(data: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(path, json.dumps(data, indent=1, sort_keys=True))
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


def over_limit(op, problem, dtype, cands, limit: int | None) -> dict:
    """{name: estimated workspace} of the candidates whose Backend.scratch_bytes exceeds limit."""
    if limit is None:
        return {}
    need = {n: int(get_backend(n).scratch_bytes(op, problem, np.dtype(dtype))) for n in cands}
    return {n: b for n, b in need.items() if b > limit}


def _within(entry, cands) -> dict | None:
    """entry restricted to cands (the candidates under a workspace limit), its choice the fastest
    of them; None when none of them was timed."""
    if not entry:
        return None
    best = {n: t for n, t in entry.get("best_s", {}).items() if n in cands}
    if not best:
        return None
    return {"backend": min(best, key=best.get), "best_s": best,
            "median_s": {n: t for n, t in entry.get("median_s", {}).items() if n in cands},
            "rejected": {n: r for n, r in entry.get("rejected", {}).items() if n in cands}}


def _merged(old, new: dict) -> dict:
    """A race of some candidates (those under a limit) added to a kept entry of all of them."""
    if not old:
        return new
    out = {part: {**{n: v for n, v in old.get(part, {}).items()
                     if n not in new["best_s"] and n not in new["rejected"]}, **new[part]}
           for part in ("best_s", "median_s", "rejected")}
    out["backend"] = min(out["best_s"], key=out["best_s"].get)
    return out


def choose(op, problem, dtype, budget_s: float = 0.05, workspace_limit: int | None = None) -> dict:
    """{'backend': name, 'best_s': {name: seconds}, 'median_s': {...}, 'rejected': {...}} for this
    problem, from the cache or timed now. The choice goes by the fastest call of each candidate:
    on a shared machine interference only ever adds time, so medians of a few calls can pick the
    slower of two close algorithms.

    workspace_limit: only candidates whose estimated scratch (Backend.scratch_bytes) fits are
    raced and chosen from (UnsupportedError when none fits). The cache keeps one entry per
    problem: a choice under a limit is the fastest fitting candidate of that entry, and racing
    the fitting ones adds their times to it."""
    key = f"{op.name}|{problem.descriptor()}|{np.dtype(dtype).name}"
    mkey = machine_key()
    memo_key = (str(cache_path()), mkey, key, workspace_limit)
    cands = candidates(op, problem, dtype)
    over = over_limit(op, problem, dtype, cands, workspace_limit)
    if cands and len(over) == len(cands):
        raise UnsupportedError(
            f"auto: no backend fits the workspace limit of {format_bytes(workspace_limit)} for "
            f"{op.name} on {problem.descriptor()} (" + ", ".join(
                f"{n} needs {format_bytes(b)}" for n, b in over.items()) + ")")
    cands = [n for n in cands if n not in over]
    hit = _memo.get(memo_key)
    if _current(hit, cands):
        return hit
    with _lock:
        data = _load()
        hit = _entry(data, mkey, key)
        if workspace_limit is not None:
            hit = _within(hit, cands)
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
        if workspace_limit is not None:
            kept = _merged(_entry(data, mkey, key), entry)
            entry = _within(kept, cands)
        else:
            kept = entry
        data.setdefault(mkey, {})[key] = kept
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

    def workspace_bytes(self, op, problem, dtype):
        """The first call on a problem tunes it: its own inputs and reference, and each
        candidate in turn (those under the workspace limit) with its outputs and scratch; later
        calls need the chosen one's scratch alone, which this bounds."""
        itemsize = np.dtype(dtype).itemsize
        cands = candidates(op, problem, dtype)
        over = over_limit(op, problem, dtype, cands, get_workspace_limit())
        most = max((get_backend(n).scratch_bytes(op, problem, np.dtype(dtype))
                    + op.output_bytes(problem, itemsize)
                    for n in cands if n not in over), default=0)
        return shared_bytes(op, problem, dtype) + most

    def unsupported(self, op, problem, dtype):
        cands = candidates(op, problem, dtype)
        if not cands:
            return "no available backend"
        limit = get_workspace_limit()
        over = over_limit(op, problem, dtype, cands, limit)
        if len(over) == len(cands):
            return (f"no backend within the workspace limit of {format_bytes(limit)} (" +
                    ", ".join(f"{n} needs {format_bytes(b)}" for n, b in over.items()) + ")")
        return None

    def chosen(self, op, problem, dtype) -> str:
        """The choice under the workspace limit in force (convbench.set_workspace_limit)."""
        return choose(op, problem, dtype, workspace_limit=get_workspace_limit())["backend"]

    def delegate(self, op, problem, dtype) -> str:
        return self.chosen(op, problem, dtype)

    def run(self, op, problem, *inputs):
        dtype = next(a.dtype for a in inputs if a is not None)
        return get_backend(self.chosen(op, problem, dtype)).run(op, problem, *inputs)
