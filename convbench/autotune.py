"""backend="auto": the fastest verified backend for each exact problem, direction and dtype.

On the first request for a problem every candidate is verified against the float64 reference
(verify.check_backend; a wrong answer or a crash is never chosen), then the verified ones are
timed interleaved, one call each per round in rotating order (A B C, B C A, ...), so that a
change in the machine's load hits them all alike (`race`). Rounds continue until the fastest is
separated from every other by a sign test over the rounds' paired times, or the budget is spent.
A candidate the rounds cannot tell from the fastest (a tie within noise) beats it when it is the
more accurate algorithm: fewer rounding steps of its own (Backend.extra_rounding: transforms,
FFT), then the smaller measured error (`pick`).

The choice is kept in a JSON cache under a key of everything that changes timings (`machine_key`:
CPU model and flags, cores, threads, the BLAS's core type, the timing environment, library and
convbench versions), so later processes start at once and a changed environment re-tunes. The
cache is a plain file the user can read and delete: $CONVBENCH_CACHE_DIR/autotune.json (default
~/.cache/convbench/autotune.json); `convbench autotune show|clear|retune` looks at and refreshes
it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from convbench import __version__, files
from convbench.backends import backend_names, get_backend
from convbench.backends.base import Backend
from convbench.errors import ConvbenchError, UnsupportedError
from convbench.kernels import blas_info
from convbench.kernels import gemm as kernels_gemm
from convbench.machine import cpu_info, git_commit, package_version, timing_environment
from convbench.memory import format_bytes, get_workspace_limit
from convbench.ops import get_op
from convbench.ops.descriptor import parse
from convbench.threads import get_threads
from convbench.timing import cpu_time_call
from convbench.verify import Reference, check_backend, shared_bytes

_lock = threading.Lock()
#: a candidate whose first timed call takes this many times the best first call is recorded with
#: that time and not raced further: an algorithm an order of magnitude behind would otherwise
#: spend most of the tuning budget
HOPELESS = 4.0
#: the sign test's level: the fastest is separated from another when the other was slower in so
#: many of the paired rounds that a coin would do it with probability below this
ALPHA = 0.02
#: rounds before the stopping rule is consulted (the fewest in which the sign test can separate
#: at ALPHA: 5 rounds never could, 1/32 > ALPHA), and at most
MIN_ROUNDS, MAX_ROUNDS = math.ceil(math.log2(1 / ALPHA)), 60
#: seconds the race waits, untimed, before a candidate that follows one using the BLAS's threads
#: (Backend.blas_threads): OpenBLAS's workers busy-wait 2**28 cycles after a call by default
#: and would take the cores from the next candidate's threads
SETTLE_S = 0.15
#: a tie within noise never gives away more than this share of speed for accuracy
MAX_TIE_RATIO = 1.2


def cache_path() -> Path:
    root = os.environ.get("CONVBENCH_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "convbench")
    return Path(root) / "autotune.json"


@functools.cache
def code_version() -> str:
    """convbench's version and, in a checkout, its commit: new kernels make old choices stale."""
    return f"{__version__}+{(git_commit() or '').split('+')[0]}"


@functools.cache
def _fixed_parts() -> tuple:
    """The parts of the machine key that cannot change within a process (reading them takes
    milliseconds: the CPU, the BLAS's core type, versions)."""
    cpu = cpu_info()
    blas = blas_info()
    return (cpu.get("model", platform.machine()), ",".join(cpu.get("flags", [])),
            str(os.cpu_count()), f"blas={blas.get('internal_api')}:{blas.get('architecture')}",
            np.__version__, str(package_version("numba")), str(package_version("torch")),
            code_version())


def machine_parts() -> dict:
    """What makes timings comparable, by name: the CPU model and its vector flags, cores, the
    thread count, the BLAS and the core type it runs, the environment variables that change
    timings (env.TIMING: OPENBLAS_CORETYPE, NUMBA_CPU_NAME/FEATURES, OMP and BLAS thread
    settings, ...), NumPy, Numba, torch and convbench versions, and the CUDA simulator setting."""
    cpu, flags, cores, blas, npv, nbv, tv, code = _fixed_parts()
    return {"cpu": cpu, "flags": flags, "cores": cores, "threads": str(get_threads()),
            "blas": blas, "env": json.dumps(timing_environment(), sort_keys=True),
            "numpy": npv, "numba": nbv, "torch": tv, "convbench": code,
            "cudasim": os.environ.get("NUMBA_ENABLE_CUDASIM", "0")}


def machine_key() -> str:
    """A short digest of machine_parts(): choices cached under another key are not used."""
    parts = machine_parts()
    return hashlib.sha1("|".join(f"{k}={v}" for k, v in parts.items()).encode()).hexdigest()[:16]


class CacheFileError(ConvbenchError):
    """The autotune cache file holds JSON that is not an autotune cache."""


def load_cache() -> dict:
    """The whole cache file: {machine key: {"machine": its parts, "choices": {problem key:
    entry}}}. A file that is missing or not JSON (cut short by a kill) counts as empty. JSON of
    another shape where convbench reads (not an object, or this machine's part or its choices not
    one) is an error rather than something to overwrite: it may not be convbench's. Entries of
    other shapes inside (other versions' or other tools') are left alone and never taken as
    choices (_entry)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    mine = data.get(machine_key(), {}) if isinstance(data, dict) else None
    if not isinstance(mine, dict) or not isinstance(mine.get("choices", {}), dict):
        raise CacheFileError(f"{path} is not convbench's autotune cache (JSON of another shape): "
                             f"delete it, or set CONVBENCH_CACHE_DIR to another folder")
    return data


def _entry(data: dict, mkey: str, key: str) -> dict | None:
    """The cached choice for a problem, None where there is none of the expected shape."""
    hit = data.get(mkey, {}).get("choices", {}).get(key)
    return hit if isinstance(hit, dict) and isinstance(hit.get("backend"), str) else None


def _choices(section) -> dict:
    """A machine section's choices ({} for a section of another shape)."""
    choices = section.get("choices", {}) if isinstance(section, dict) else {}
    return choices if isinstance(choices, dict) else {}


def check_cache() -> None:
    """CacheFileError now, rather than at the first choice, when the cache file is foreign."""
    load_cache()


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


def clear(all_machines: bool = False) -> int:
    """Forget this machine's choices (every machine's with all_machines); returns how many."""
    with _lock:
        data = load_cache()
        mkey = machine_key()
        if all_machines:
            n = sum(len(_choices(v)) for v in data.values())
            data = {}
        else:
            n = len(_choices(data.pop(mkey, {})))
        _save(data)
        _memo.clear()
    return n


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


# --- the race: interleaved timing with a stopping rule ----------------------------------------
def _sign_test(slower: int, n: int) -> float:
    """One-sided p-value of `slower` or more of n paired rounds going one way by chance."""
    return sum(math.comb(n, i) for i in range(slower, n + 1)) / 2 ** n


def separated(a: list[float], b: list[float], alpha: float = ALPHA) -> bool:
    """Whether b is slower than a beyond noise: in the rounds both ran (paired by position), b
    took longer so often that chance would do it with probability below alpha."""
    n = min(len(a), len(b))
    slower = sum(1 for x, y in zip(a[:n], b[:n]) if y > x)
    return n > 0 and _sign_test(slower, n) < alpha


def _median(x):
    return float(np.median(x)) if len(x) else math.inf


def race(calls: dict, time_call=cpu_time_call, budget_s: float = 0.3,
         min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS, clock=time.perf_counter,
         blas=(), settle=time.sleep):
    """Time the zero-argument callables `calls` ({name: fn}) interleaved: each round calls every
    candidate still racing once, starting one further along each round (A B C, B C A, ...).
    A first warm-up round is not counted. After the first counted round a candidate whose best
    call so far (warm-up included) is over HOPELESS x the best one's is dropped; after
    min_rounds, the race stops as soon as the fastest (lowest median) is `separated` from every
    other, else when the budget (seconds of `clock`, counted from the end of the first round:
    a hopeless candidate's calls are not the race's) is spent or after max_rounds.

    A candidate that follows one of `blas` (names whose calls leave the BLAS's workers
    busy-waiting) and is not one itself is timed after settle(SETTLE_S).

    Returns ({name: [seconds per counted round]}, [names dropped as hopeless], rounds counted).
    time_call(fn) -> seconds (a fake timer in tests)."""
    names = list(calls)
    last = [None]

    def timed(name):
        if last[0] in blas and name not in blas:
            settle(SETTLE_S)
        last[0] = name
        return time_call(calls[name])

    warm = {n: timed(n) for n in names}
    samples = {n: [] for n in names}
    racing = list(names)
    hopeless = []
    start = None
    rounds = 0
    while racing and rounds < max_rounds:
        k = (rounds + 1) % len(racing)
        for name in racing[k:] + racing[:k]:
            samples[name].append(timed(name))
        rounds += 1
        if rounds == 1 and len(racing) > 1:
            fastest = {n: min(warm[n], samples[n][0]) for n in racing}
            best = min(fastest.values())
            hopeless = [n for n in racing if fastest[n] > HOPELESS * best]
            racing = [n for n in racing if n not in hopeless]
        if rounds == 1:
            start = clock()
        if len(racing) <= 1:
            break
        if rounds >= min_rounds:
            lead = min(racing, key=lambda n: _median(samples[n]))
            if all(separated(samples[lead], samples[n]) for n in racing if n != lead):
                break
            if clock() - start > budget_s:
                break
    return samples, hopeless, rounds


def pick(samples: dict, accuracy: dict, hopeless=()) -> tuple[str, list[str], str]:
    """(winner, ties, why) from race samples: the lowest median, unless a candidate the rounds
    could not separate from it (and within MAX_TIE_RATIO of its median) is a more accurate
    algorithm: fewer extra rounding steps, accuracy[name][0] (transforms, FFT). Between equally
    rounding algorithms (direct sums in other orders) the measured error on one input
    (accuracy[name][1]) is that input's luck, not the algorithm's: the lower median decides."""
    live = {n: s for n, s in samples.items() if n not in hopeless and s}
    fastest = min(live, key=lambda n: _median(live[n]))
    ties = [n for n in live if n != fastest and not separated(live[fastest], live[n])
            and _median(live[n]) <= MAX_TIE_RATIO * _median(live[fastest])]
    best = min([fastest] + ties, key=lambda n: (accuracy[n][0], _median(live[n])))
    if best == fastest:
        why = "fastest" + (f"; tied within noise with {', '.join(ties)}, and at least as "
                           "accurate" if ties else "")
    else:
        ratio = _median(live[best]) / _median(live[fastest])
        why = f"tied within noise with {fastest} (median {ratio:.2f}x its time), more accurate"
    return best, ties, why


# --- the choice ------------------------------------------------------------------------------
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


def problem_key(op, problem, dtype, without=()) -> str:
    """The cache key of a choice; `without`: the candidates a workspace limit left out."""
    key = f"{op.name}|{problem.descriptor()}|{np.dtype(dtype).name}"
    return f"{key}|without:{','.join(sorted(without))}" if without else key


def parse_problem_key(key: str):
    """(op, problem, dtype) back from a problem_key."""
    op_name, descriptor, dtype = key.split("|")[:3]
    return get_op(op_name), parse(descriptor)[0], np.dtype(dtype)


def _without(key: str) -> list[str]:
    """The candidates a problem_key leaves out."""
    part = key.split("|")[3:]
    return part[0].removeprefix("without:").split(",") if part else []


_over: dict = {}


def over_limit(op, problem, dtype, cands, limit: int | None) -> dict:
    """{name: Backend.scratch_bytes} of the candidates whose stated scratch exceeds limit
    (computed once per problem and limit: the choice sits on every call's path)."""
    if limit is None:
        return {}
    key = (op.name, problem, np.dtype(dtype).str, limit, tuple(cands))
    if key not in _over:
        need = {n: int(get_backend(n).scratch_bytes(op, problem, np.dtype(dtype)))
                for n in cands}
        _over[key] = {n: b for n, b in need.items() if b > limit}
    return _over[key]


def choose(op, problem, dtype, budget_s: float = 0.3, retune: bool = False,
           workspace_limit: int | None = None) -> dict:
    """{'backend': name, 'best_s': {name: seconds}, 'median_s': {...}, 'rounds': n,
    'ties': [...], 'why': ..., 'rejected': {name: reason}} for this problem, from the cache or
    measured now (always measured with retune).

    workspace_limit: the candidates whose stated scratch (Backend.scratch_bytes) exceeds it are
    left out (UnsupportedError when that is all of them); a choice among the rest is raced and
    cached under a key naming those left out, so limits that leave out the same ones share it,
    and a limit that leaves out none is the plain choice."""
    cands = candidates(op, problem, dtype)
    over = over_limit(op, problem, dtype, cands, workspace_limit)
    if cands and len(over) == len(cands):
        raise UnsupportedError(
            f"auto: no backend fits the workspace limit of {format_bytes(workspace_limit)} for "
            f"{op.name} on {problem.descriptor()} (" + ", ".join(
                f"{n} needs {format_bytes(b)}" for n, b in over.items()) + ")")
    return _choose_among(op, problem, dtype, [n for n in cands if n not in over], sorted(over),
                         budget_s, retune)


def _choose_among(op, problem, dtype, cands, without, budget_s, retune) -> dict:
    """choose, among the candidates cands (the others, `without`, left out by a limit)."""
    key = problem_key(op, problem, dtype, without)
    mkey = machine_key()
    memo_key = (str(cache_path()), mkey, key)
    if not retune:
        hit = _memo.get(memo_key)
        if _current(hit, cands):
            return hit
        with _lock:
            hit = _entry(load_cache(), mkey, key)
            if _current(hit, cands):
                _memo[memo_key] = hit
                return hit
    entry = measure_choice(op, problem, dtype, budget_s, names=cands)
    with _lock:
        data = load_cache()
        mine = data.setdefault(mkey, {})
        mine["machine"] = machine_parts()
        mine.setdefault("choices", {})[key] = entry
        _save(data)
        _memo[memo_key] = entry
    return entry


def measure_choice(op, problem, dtype, budget_s: float = 0.3, time_call=None,
                   names=None) -> dict:
    """Verify every candidate (of `names`, when given), race the verified ones and pick (see the
    module docstring)."""
    inputs = op.make_inputs(problem, np.random.default_rng(0), np.dtype(dtype))
    reference = Reference(op, problem, inputs)
    calls, accuracy, rejected, timers = {}, {}, {}, {}
    for name in candidates(op, problem, dtype) if names is None else names:
        r = check_backend(name, op, problem, dtype, inputs=inputs, reference=reference)
        if not r.within_tolerance:          # a wrong answer or a crash: never chosen
            rejected[name] = r.reason
            continue
        backend = get_backend(name)
        dev = [None if a is None else backend.to_device(a) for a in inputs]
        calls[name] = functools.partial(backend.run, op, problem, *dev)
        timers[name] = backend.time_call
        accuracy[name] = (backend.extra_rounding(op, problem), r.rel_error)
    if not calls:
        raise UnsupportedError(f"auto: no backend can run {op.name} on {problem.descriptor()} "
                               f"({'; '.join(f'{k}: {v}' for k, v in rejected.items()) or 'none'})")
    by_fn = {id(fn): timers[n] for n, fn in calls.items()}
    timer = time_call or (lambda fn: by_fn[id(fn)](fn))
    blas = {n for n in calls if get_backend(n).blas_threads}
    samples, hopeless, rounds = race(calls, timer, budget_s, blas=blas)
    best, ties, why = pick(samples, accuracy, hopeless)
    return {"backend": best, "why": why, "ties": ties, "rounds": rounds, "hopeless": hopeless,
            "best_s": {n: min(s) for n, s in samples.items()},
            "median_s": {n: _median(s) for n, s in samples.items()},
            "rejected": rejected}


#: The matrix-product providers `choose_gemm` races: NumPy's BLAS and convbench's own GEMM.
GEMM_PROVIDERS = ("blas", "convbench")


def gemm_call(provider: str, a, b, out, trans_a: bool = False, trans_b: bool = False):
    """out = op(a) @ op(b) by provider ('blas' or 'convbench')."""
    if provider == "blas":
        return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
    return kernels_gemm(a, b, out, trans_a=trans_a, trans_b=trans_b)


def choose_gemm(m: int, n: int, k: int, dtype, trans_a: bool = False, trans_b: bool = False,
                budget_s: float = 0.1) -> str:
    """'blas' or 'convbench': which computes an m x n x k product (with these transposes)
    faster on this machine, raced like the backends (both sum the same products directly: a tie
    goes to the lower median) and cached per machine key like them."""
    dtype = np.dtype(dtype)
    key = f"gemm|{m}x{n}x{k}|{'T' if trans_a else 'N'}{'T' if trans_b else 'N'}|{dtype.name}"
    mkey = machine_key()
    memo_key = (str(cache_path()), mkey, key)
    hit = _memo.get(memo_key)
    if hit is None:
        with _lock:
            hit = _entry(load_cache(), mkey, key)
    if hit is None or hit.get("backend") not in GEMM_PROVIDERS:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
        out = np.empty((m, n), dtype)
        calls = {p: functools.partial(gemm_call, p, a, b, out, trans_a, trans_b)
                 for p in GEMM_PROVIDERS}
        for fn in calls.values():
            fn()                    # compiles convbench's kernel (or loads it from the cache)
        samples, hopeless, rounds = race(calls, budget_s=budget_s, blas={"blas"})
        best, ties, why = pick(samples, dict.fromkeys(calls, (0.0, 0.0)), hopeless)
        hit = {"backend": best, "why": why, "ties": ties, "rounds": rounds,
               "hopeless": hopeless, "best_s": {p: min(s) for p, s in samples.items()},
               "median_s": {p: _median(s) for p, s in samples.items()}, "rejected": {}}
        with _lock:
            data = load_cache()
            mine = data.setdefault(mkey, {})
            mine["machine"] = machine_parts()
            mine.setdefault("choices", {})[key] = hit
            _save(data)
    _memo[memo_key] = hit
    return hit["backend"]


def cached_problems(all_machines: bool = False) -> list[str]:
    """The problem keys cached for this machine (every machine's with all_machines), GEMM
    provider choices ('gemm|...') included."""
    data = load_cache()
    sections = data.values() if all_machines else [data.get(machine_key(), {})]
    return sorted({k for v in sections for k in _choices(v)})


def retune_key(key: str, budget_s: float = 0.3) -> dict | str:
    """Measure one cached problem key again (a backend choice or a GEMM provider choice)."""
    if key.startswith("gemm|"):
        _, shape, trans, dtype = key.split("|")
        m, n, k = (int(v) for v in shape.split("x"))
        with _lock:
            data = load_cache()
            data.get(machine_key(), {}).get("choices", {}).pop(key, None)
            _save(data)
        _memo.pop((str(cache_path()), machine_key(), key), None)
        return choose_gemm(m, n, k, dtype, trans[0] == "T", trans[1] == "T", budget_s)
    op, problem, dtype = parse_problem_key(key)
    without = _without(key)
    cands = [n for n in candidates(op, problem, dtype) if n not in without]
    return _choose_among(op, problem, dtype, cands, without, budget_s, retune=True)["backend"]


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
