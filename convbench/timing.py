"""The timing core: first call apart, warm-up until timings settle, repetitions within a budget.

A call is timed by the backend (`Backend.time_call`): perf_counter_ns around the call on the CPU
(`cpu_time_call`), device events around the launch (with one synchronisation) on a GPU. Inputs are
already where the backend computes (on the device for GPU backends).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TimingPolicy:
    """How long and how often to time one case.

    budget_s: time for the measured repetitions; warmup_budget_s: for warm-up after the first
    call; repetitions stop early once `min_reps` are in and the relative IQR is under
    `target_rel_iqr`, and never exceed `max_reps`.
    """

    budget_s: float = 0.5
    warmup_budget_s: float = 0.5
    min_reps: int = 5
    max_reps: int = 200
    min_warmup: int = 1
    target_rel_iqr: float = 0.03
    settle_tolerance: float = 0.05
    #: Stop after the first warm-up call when it takes longer than this (seconds): a caller that
    #: only looks for the fastest of several candidates need not measure one far behind the best.
    give_up_s: float | None = None

    def __post_init__(self):
        if self.min_reps < 1 or self.max_reps < self.min_reps:
            raise ValueError(f"min_reps={self.min_reps}, max_reps={self.max_reps}: need "
                             "1 <= min_reps <= max_reps")
        if self.budget_s <= 0:
            raise ValueError(f"budget_s={self.budget_s} must be > 0")


QUICK_POLICY = TimingPolicy(budget_s=0.25, warmup_budget_s=0.2, min_reps=3, max_reps=50)


@dataclass
class Measurement:
    first_call_s: float
    warmup_s: list[float] = field(default_factory=list)
    samples_s: list[float] = field(default_factory=list)
    #: the one call was over the policy's give_up_s: samples_s holds that call alone
    gave_up: bool = False


def _rel_iqr(x) -> float:
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else float("inf")


def measure(call, time_call, policy: TimingPolicy | None = None, inputs_cycle=None,
            first_call_s: float | None = None) -> Measurement:
    """Time `call(*inputs)`.

    time_call(fn) -> seconds for one call of fn (the backend's timer). inputs_cycle: a list of
    input tuples to rotate through (cold-cache mode); otherwise call() takes no arguments.
    first_call_s: the first call's time when the caller already made it (compilation included).
    """
    policy = policy or TimingPolicy()
    sets = inputs_cycle or [()]
    k = 0

    def once():
        nonlocal k
        args = sets[k % len(sets)]
        k += 1
        return time_call(lambda: call(*args))

    m = Measurement(first_call_s=once() if first_call_s is None else first_call_s)
    if policy.give_up_s is not None:
        t = once()
        if t > policy.give_up_s:
            m.samples_s.append(t)
            m.gave_up = True
            return m
        m.warmup_s.append(t)
    # warm-up: until two successive windows of 3 agree, or the warm-up budget is spent
    start = time.perf_counter()
    while True:
        m.warmup_s.append(once())
        w = m.warmup_s
        if len(w) >= max(policy.min_warmup, 6):
            a, b = np.median(w[-6:-3]), np.median(w[-3:])
            if abs(a - b) <= policy.settle_tolerance * max(a, b):
                break
        if len(w) >= policy.min_warmup and time.perf_counter() - start > policy.warmup_budget_s:
            break
    start = time.perf_counter()
    while len(m.samples_s) < policy.max_reps:
        m.samples_s.append(once())
        n = len(m.samples_s)
        if n >= policy.min_reps:
            if time.perf_counter() - start > policy.budget_s:
                break
            if n >= max(policy.min_reps, 10) and _rel_iqr(m.samples_s) < policy.target_rel_iqr:
                break
    return m


def cpu_time_call(fn) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) * 1e-9


#: Assumed last-level cache size for cold-cache mode when the machine does not say.
DEFAULT_LLC_BYTES = 32 << 20


def llc_bytes() -> int:
    try:
        return int(os.sysconf("SC_LEVEL3_CACHE_SIZE")) or DEFAULT_LLC_BYTES
    except (ValueError, OSError, AttributeError):
        return DEFAULT_LLC_BYTES


def cold_copies(inputs) -> int:
    """Copies of the inputs to rotate through so that together they exceed the last-level cache."""
    return cold_copies_for(sum(a.nbytes for a in inputs if a is not None))


def cold_copies_for(nbytes: int) -> int:
    """cold_copies of inputs of `nbytes` bytes in all."""
    return max(2, min(64, math.ceil(2 * llc_bytes() / max(nbytes, 1))))
