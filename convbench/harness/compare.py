"""Comparing two runs: per-case ratios with their confidence intervals, and a decision rule for
regressions that a CI job can trust.

Everything that differs between two processes is shared by all the samples of one process, so
the samples within a run are no measure of how much another run would differ: testing them
against each other (as a Mann-Whitney U test on the raw samples does) cries wolf. A row of B is a
regression against A only when all three hold:

  1. the change is significant at level `alpha`: against the spread between processes when both
     runs measured it in K > 1 fresh processes (`run --processes K`): Welch's t-test on the logs
     of the process medians; otherwise against a stated noise floor: a run measured in one
     process is taken to sit `noise_floor` (a relative standard deviation) from its true value,
     on top of the uncertainty of its median (a run with K > 1 keeps its measured spread);
  2. the ratio B/A is above 1 + `threshold` (asv's minimum factor);
  3. the (1 - alpha) confidence interval of the ratio lies above 1 + threshold.

An improvement likewise, below 1 - threshold. The ratio is that of the geometric means of the
process medians (K > 1) or of the medians (K = 1), with its interval, on the log scale.

The comparison is a frame with one line per (case, descriptor, direction, backend) of either run:
case, direction, backend, median_a, median_b, processes_a, processes_b, ratio (B / A: above 1 is
slower in B), ci_low, ci_high, p_value, test and verdict (faster, slower, same, new, gone,
failed, or B's status).

`self_check` is the A/A test: one run measured in K >= 4 processes, split into its first and
second halves of processes, compared; every alarm there is a false one.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from convbench import files
from convbench.errors import ConvbenchError
from convbench.harness.report import CSS
from convbench.harness.runner import load_run
from convbench.machine import same_machine
from convbench.result import FAILED, WITHIN_TOLERANCE

KEY = ["case", "descriptor", "direction", "backend"]
REGRESSIONS = ("slower", "failed")
#: The defaults of the decision rule (see the module docstring).
THRESHOLD = 0.10
ALPHA = 0.05
NOISE_FLOOR = 0.05
#: Processes a row needs for the A/A self-check: two halves of two or more.
SELF_CHECK_PROCESSES = 4
COLUMNS = ["case", "direction", "backend", "median_a", "median_b", "processes_a", "processes_b",
           "ratio", "ci_low", "ci_high", "p_value", "test", "verdict"]


@dataclass(frozen=True)
class Estimate:
    """A run's timing of one row on the log scale: where it is and how uncertain."""

    log: float          # log of the location (seconds)
    var: float          # variance of `log`
    df: float           # degrees of freedom of `var` (inf: a stated noise floor, taken as known)
    processes: int


@dataclass(frozen=True)
class Comparison:
    ratio: float        # B / A: above 1 means B is slower
    ci_low: float       # the (1 - alpha) confidence interval of the ratio
    ci_high: float
    p_value: float      # two-sided
    test: str           # "processes" (both runs K > 1) or "noise floor"
    verdict: str        # "faster", "slower", "same"


def check_levels(threshold: float, alpha: float, noise_floor: float = NOISE_FLOOR) -> None:
    """ValueError naming the argument and the value unless threshold >= 0, 0 < alpha < 1 and
    noise_floor >= 0 (all finite)."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold={threshold!r} must be a finite number >= 0 (a relative "
                         f"change: 0.1 is 10%)")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r} must be in (0, 1) (a significance level)")
    if not (isinstance(noise_floor, (int, float)) and math.isfinite(noise_floor)
            and noise_floor >= 0):
        raise ValueError(f"noise_floor={noise_floor!r} must be a finite number >= 0 (a relative "
                         f"standard deviation: 0.05 is 5%)")


def estimate(samples, process_medians=(), noise_floor: float = NOISE_FLOOR) -> Estimate:
    """The Estimate of one run's row: from its process medians when it has two or more (the mean
    of their logs, its variance from their spread), else from its samples (the log of their
    median; variance noise_floor^2 plus the squared standard error of the median,
    sqrt(pi/2) x the robust standard deviation of the log samples / sqrt(n))."""
    medians = np.asarray(process_medians, dtype=np.float64)
    if len(medians) >= 2 and np.all(medians > 0):
        logs = np.log(medians)
        k = len(logs)
        return Estimate(float(logs.mean()), float(logs.var(ddof=1)) / k, k - 1, k)
    x = np.asarray(samples, dtype=np.float64)
    x = np.log(x[x > 0])
    if x.size == 0:
        raise ValueError("a row to compare needs positive samples")
    centre = float(np.median(x))
    robust_sd = 1.4826 * float(np.median(np.abs(x - centre)))
    se = math.sqrt(math.pi / 2) * robust_sd / math.sqrt(x.size)
    return Estimate(centre, noise_floor ** 2 + se ** 2, math.inf, 1)


def compare_estimates(a: Estimate, b: Estimate, threshold: float = THRESHOLD,
                      alpha: float = ALPHA) -> Comparison:
    """The decision rule (module docstring) on two Estimates: Welch's t on the log scale, with
    Welch-Satterthwaite degrees of freedom (normal when every variance is a stated floor)."""
    check_levels(threshold, alpha)
    diff = b.log - a.log
    var = a.var + b.var
    test = "processes" if a.processes > 1 and b.processes > 1 else "noise floor"
    if var <= 0:
        p = 1.0 if diff == 0 else 0.0
        low = high = math.exp(diff)
    else:
        se = math.sqrt(var)
        terms = sum(v * v / df for v, df in ((a.var, a.df), (b.var, b.df))
                    if math.isfinite(df) and v > 0)
        if terms > 0:
            df = var * var / terms
            p = float(2 * stats.t.sf(abs(diff) / se, df))
            q = float(stats.t.ppf(1 - alpha / 2, df))
        else:
            p = float(2 * stats.norm.sf(abs(diff) / se))
            q = float(stats.norm.ppf(1 - alpha / 2))
        low, high = math.exp(diff - q * se), math.exp(diff + q * se)
    ratio = math.exp(diff)
    up, down = 1 + threshold, 1 - threshold
    if p < alpha and ratio > up and low > up:
        verdict = "slower"
    elif p < alpha and ratio < down and high < down:
        verdict = "faster"
    else:
        verdict = "same"
    return Comparison(ratio, low, high, p, test, verdict)


def compare_timings(samples_a, samples_b, medians_a=(), medians_b=(),
                    threshold: float = THRESHOLD, alpha: float = ALPHA,
                    noise_floor: float = NOISE_FLOOR) -> Comparison:
    """Is B's timing of a row different from A's? Each run gives its samples and, when measured
    in several processes, its process medians."""
    check_levels(threshold, alpha, noise_floor)
    return compare_estimates(estimate(samples_a, medians_a, noise_floor),
                             estimate(samples_b, medians_b, noise_floor), threshold, alpha)


def _timed(status, samples) -> bool:
    return status in WITHIN_TOLERANCE and isinstance(samples, list) and \
        any(v > 0 for v in samples)


def _processes(medians) -> int:
    return max(len(medians), 1) if isinstance(medians, list) else 1


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, threshold: float = THRESHOLD,
                   alpha: float = ALPHA, noise_floor: float = NOISE_FLOOR) -> pd.DataFrame:
    """The comparison of two results frames (see the module docstring), in A's row order then
    the rows new in B."""
    check_levels(threshold, alpha, noise_floor)
    cols = KEY + ["status", "median_s", "samples_s", "process_medians_s"]
    a = a[cols].drop_duplicates(KEY, keep="last")
    b = b[cols].drop_duplicates(KEY, keep="last")
    m = a.merge(b, on=KEY, how="outer", suffixes=("_a", "_b"), indicator="side")
    order = {k: i for i, k in enumerate(dict.fromkeys(
        list(a[KEY].itertuples(index=False, name=None))
        + list(b[KEY].itertuples(index=False, name=None))))}
    m["order"] = [order[k] for k in m[KEY].itertuples(index=False, name=None)]
    m = m.sort_values("order").reset_index(drop=True)
    lines = []
    for r in m.itertuples(index=False):
        ok_a = r.side != "right_only" and _timed(r.status_a, r.samples_s_a)
        ok_b = r.side != "left_only" and _timed(r.status_b, r.samples_s_b)
        line = dict(case=r.case, direction=r.direction, backend=r.backend,
                    median_a=r.median_s_a if ok_a else np.nan,
                    median_b=r.median_s_b if ok_b else np.nan,
                    processes_a=_processes(r.process_medians_s_a) if ok_a else pd.NA,
                    processes_b=_processes(r.process_medians_s_b) if ok_b else pd.NA,
                    test="")
        if ok_a and ok_b:
            c = compare_timings(r.samples_s_a, r.samples_s_b, r.process_medians_s_a,
                                r.process_medians_s_b, threshold, alpha, noise_floor)
            line.update(ratio=c.ratio, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value,
                        test=c.test, verdict=c.verdict)
        elif r.side == "right_only":
            line["verdict"] = "new"
        elif r.side == "left_only":
            line["verdict"] = "gone"
        elif ok_a:
            line["verdict"] = "failed" if r.status_b == FAILED else str(r.status_b).lower()
        else:
            line["verdict"] = "n/a"
        lines.append(line)
    return _frame(lines)


def _frame(lines) -> pd.DataFrame:
    return pd.DataFrame(lines, columns=COLUMNS).astype(
        {"median_a": "float64", "median_b": "float64", "processes_a": "Int64",
         "processes_b": "Int64", "ratio": "float64", "ci_low": "float64", "ci_high": "float64",
         "p_value": "float64"})


def compare_runs(run_a, run_b, threshold: float = THRESHOLD, alpha: float = ALPHA,
                 noise_floor: float = NOISE_FLOOR, warn=None):
    """(comparison frame, machine differences) of two run directories. NothingInCommonError
    when no case x direction x backend is in both."""
    check_levels(threshold, alpha, noise_floor)
    rows_a, meta_a = load_run(run_a, warn)
    rows_b, meta_b = load_run(run_b, warn)
    # a cluster run's meta names the client; its rows name the machines that measured them
    diffs = [] if "cluster" in meta_a or "cluster" in meta_b else \
        same_machine(meta_a.get("machine") or {}, meta_b.get("machine") or {})
    diffs += row_machines(rows_a, rows_b)
    lines = compare_frames(rows_a, rows_b, threshold, alpha, noise_floor)
    if lines["verdict"].isin(("new", "gone")).all():
        raise NothingInCommonError(f"{run_a} and {run_b} have no case x direction x backend in "
                                   f"common: nothing to compare")
    return lines, diffs


def row_machines(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Where rows of both runs were measured on different machines (the rows' `machine` keys;
    rows from before those columns name none): one line per pair of machines."""
    cols = KEY + ["machine", "host"]
    m = a[cols].drop_duplicates(KEY).merge(b[cols].drop_duplicates(KEY), on=KEY,
                                           suffixes=("_a", "_b"))
    m = m[(m["machine_a"] != "") & (m["machine_b"] != "") & (m["machine_a"] != m["machine_b"])]
    counts = m.groupby(["host_a", "machine_a", "host_b", "machine_b"], sort=False).size()
    return [f"machine: {n} rows measured on {ha} ({ka}) vs on {hb} ({kb})"
            for (ha, ka, hb, kb), n in counts.items()]


class NothingInCommonError(ConvbenchError, ValueError):
    """Two runs that share no row."""


class SelfCheckError(ConvbenchError, ValueError):
    """A run that cannot be split for the A/A self-check."""


@dataclass(frozen=True)
class SelfCheck:
    lines: pd.DataFrame         # the first half of each row's processes against the second
    halves: tuple               # (processes in the first half, in the second), per row
    rows: int                   # rows compared
    skipped: int                # timed rows with too few processes to split
    #: false alarms to expect per comparison of two such half runs: the mean over every split
    #: of each row's processes into two halves of those sizes, summed over the rows
    expected_regressions: float
    expected_improvements: float
    #: the between-process spread of the rows (standard deviation of the log process medians):
    #: the median and the 90th percentile, against which to set --noise-floor
    spread: tuple[float, float]


def self_check(frame: pd.DataFrame, threshold: float = THRESHOLD,
               alpha: float = ALPHA) -> SelfCheck:
    """The A/A test of one run: each timed row measured in K >= 4 processes is split into its
    first K // 2 processes (in the order they ran) and the rest, and the halves are compared by
    the decision rule (both K > 1: the between-process test). Nothing changed between the halves,
    so every alarm is false. SelfCheckError when no row has enough processes."""
    check_levels(threshold, alpha)
    lines, halves, skipped, spreads = [], set(), 0, []
    expected = {"slower": 0.0, "faster": 0.0}
    for r in frame.itertuples(index=False):
        if not _timed(r.status, r.samples_s):
            continue
        medians = list(r.process_medians_s) if isinstance(r.process_medians_s, list) else []
        k = len(medians)
        if k < SELF_CHECK_PROCESSES or not all(m > 0 for m in medians):
            skipped += 1
            continue
        half = k // 2
        halves.add((half, k - half))
        spreads.append(float(np.std(np.log(medians), ddof=1)))
        c = compare_timings([], [], medians[:half], medians[half:], threshold, alpha)
        lines.append(dict(case=r.case, direction=r.direction, backend=r.backend,
                          median_a=float(np.median(medians[:half])),
                          median_b=float(np.median(medians[half:])), processes_a=half,
                          processes_b=k - half, ratio=c.ratio, ci_low=c.ci_low,
                          ci_high=c.ci_high, p_value=c.p_value, test=c.test, verdict=c.verdict))
        splits = [s for s in combinations(range(k), half) if 2 * half < k or 0 in s]
        verdicts = [compare_timings([], [], [medians[i] for i in s],
                                    [medians[i] for i in range(k) if i not in s],
                                    threshold, alpha).verdict for s in splits]
        for v in expected:
            expected[v] += verdicts.count(v) / len(verdicts)
    if not lines:
        raise SelfCheckError(
            f"the A/A self-check needs rows measured in {SELF_CHECK_PROCESSES} or more processes "
            f"(two halves of at least 2, for the between-process test); this run has "
            f"{'no timed row' if not skipped else 'none'}: make it with "
            f"`convbench run --processes {SELF_CHECK_PROCESSES}` or more (twice the processes "
            f"of the runs you mean to compare)")
    return SelfCheck(_frame(lines), tuple(sorted(halves)), len(lines), skipped,
                     expected["slower"], expected["faster"],
                     (float(np.median(spreads)), float(np.percentile(spreads, 90))))


def regressions(lines: pd.DataFrame) -> pd.DataFrame:
    return lines[lines["verdict"].isin(REGRESSIONS)]


def rule_text(threshold: float, alpha: float, noise_floor: float) -> str:
    """The decision rule in one sentence, with its settings."""
    return (f"a regression (or improvement) needs p < {alpha:g} against the spread between "
            f"processes (both runs --processes > 1) or a noise floor of {noise_floor:.0%} "
            f"(--noise-floor; runs in one process), B/A beyond 1 +/- {threshold:g}, and the "
            f"{1 - alpha:.0%} interval of B/A outside [{1 - threshold:g}, {1 + threshold:g}]")


def _ms(v) -> str:
    return "-" if pd.isna(v) else f"{v * 1e3:.3f} ms"


def _ratio(ln) -> str:
    return "-" if pd.isna(ln.ratio) else f"{ln.ratio:.3f} [{ln.ci_low:.3f}, {ln.ci_high:.3f}]"


def _k(v) -> str:
    return "-" if pd.isna(v) else str(int(v))


def format_text(lines: pd.DataFrame, diffs, name_a="A", name_b="B", rule: str = "") -> str:
    out = []
    if diffs:
        out.append("WARNING: the runs come from different machines or software:")
        out += [f"  {d}" for d in diffs]
    if rule:
        out.append(f"rule: {rule}")
    labels = [f"{c} [{d}] {b}" for c, d, b in zip(lines["case"], lines["direction"],
                                                   lines["backend"])]
    width = max([len(s) for s in labels] + [10])
    out.append(f"{'case [direction] backend':<{width}}  {name_a:>12}  {name_b:>12}  {'K':>5}  "
               f"{'B/A [interval]':>23}  {'p':>8}  verdict")
    for label, ln in zip(labels, lines.itertuples(index=False)):
        k = f"{_k(ln.processes_a)}/{_k(ln.processes_b)}"
        p = "-" if pd.isna(ln.p_value) else f"{ln.p_value:.2g}"
        flag = " <-- regression" if ln.verdict in REGRESSIONS else ""
        out.append(f"{label:<{width}}  {_ms(ln.median_a):>12}  {_ms(ln.median_b):>12}  {k:>5}  "
                   f"{_ratio(ln):>23}  {p:>8}  {ln.verdict}{flag}")
    out.append(f"{len(regressions(lines))} significant regression(s), "
               f"{int((lines['verdict'] == 'faster').sum())} significant improvement(s)")
    return "\n".join(out)


def format_self_check(check: SelfCheck, run_dir, rule: str = "") -> str:
    sizes = ", ".join(f"{a} vs {b}" for a, b in check.halves)
    slower = int((check.lines["verdict"] == "slower").sum())
    faster = int((check.lines["verdict"] == "faster").sum())
    out = [f"A/A self-check of {run_dir}: each row's first processes against the rest "
           f"({sizes}); nothing changed, so every alarm is false",
           format_text(check.lines, [], "1st half", "2nd half", rule),
           f"false alarms: {slower} regression(s) and {faster} improvement(s) in {check.rows} "
           f"comparisons" + (f" ({check.skipped} timed row(s) with fewer than "
                             f"{SELF_CHECK_PROCESSES} processes left out)" if check.skipped
                             else ""),
           f"expected per comparison of two runs like these halves (mean over every split of "
           f"the processes): {check.expected_regressions:.2f} false regression(s), "
           f"{check.expected_improvements:.2f} false improvement(s). Both halves were measured "
           f"in one run, case by case, so drift between runs made at different times is not in "
           f"this count: the threshold is there for it",
           f"between-process spread of the rows: median {check.spread[0]:.1%}, 90th percentile "
           f"{check.spread[1]:.1%} (runs made without --processes are judged against "
           f"--noise-floor: set it near these)"]
    return "\n".join(out)


def write_html(path, lines: pd.DataFrame, diffs, name_a, name_b, rule: str = "") -> Path:
    def cell(v, fmt):
        return "" if pd.isna(v) else fmt(v)

    rows = "".join(
        f"<tr><td>{html.escape(ln.case)}</td><td>{ln.direction}</td>"
        f"<td>{html.escape(ln.backend)}</td>"
        f"<td>{cell(ln.median_a, _ms)}</td><td>{cell(ln.median_b, _ms)}</td>"
        f"<td>{_k(ln.processes_a)}/{_k(ln.processes_b)}</td><td>{_ratio(ln)}</td>"
        f"<td>{cell(ln.p_value, lambda v: f'{v:.2g}')}</td><td>{html.escape(ln.test)}</td>"
        f"<td class='{'failed' if ln.verdict in REGRESSIONS else ''}'>{ln.verdict}</td></tr>"
        for ln in lines.itertuples(index=False))
    warn = ("<p class='failed'>The runs come from different machines or software: "
            + html.escape("; ".join(diffs)) + "</p>") if diffs else ""
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>convbench compare</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(str(name_a))} vs "
           f"{html.escape(str(name_b))}</h1>{warn}"
           + (f"<p>Rule: {html.escape(rule)}.</p>" if rule else "")
           + "<table><thead><tr><th>case</th><th>direction</th><th>backend</th><th>A median</th>"
           "<th>B median</th><th>processes A/B</th><th>B/A [interval]</th><th>p</th>"
           f"<th>test</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>"
           "</body></html>")
    files.write_text(path, doc)
    return Path(path)
