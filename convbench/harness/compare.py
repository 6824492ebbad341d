"""Comparing two runs: per-case ratios, a significance test on the raw samples, regressions.

The comparison is a frame with one line per (case, descriptor, direction, backend) of either run:
case, direction, backend, median_a, median_b, ratio (median_b / median_a: above 1 is slower in
B), p_value and verdict (faster, slower, same, new, gone, failed, or B's status).
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from convbench import files
from convbench.errors import ConvbenchError
from convbench.harness.report import CSS
from convbench.harness.runner import load_run
from convbench.machine import same_machine
from convbench.result import FAILED, WITHIN_TOLERANCE

KEY = ["case", "descriptor", "direction", "backend"]
REGRESSIONS = ("slower", "failed")


@dataclass(frozen=True)
class Comparison:
    ratio: float        # median(b) / median(a): above 1 means b is slower
    p_value: float      # two-sided Mann-Whitney U
    significant: bool
    verdict: str        # "faster", "slower", "same"


def compare_samples(a, b, threshold: float = 0.05, alpha: float = 0.01) -> Comparison:
    """Is b's timing different from a's? A change is reported when the medians differ by more than
    `threshold` (relative) and the Mann-Whitney U test rejects equality at level `alpha`."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ratio = float(np.median(b) / np.median(a))
    if len(a) < 2 or len(b) < 2 or np.all(a == a[0]) and np.all(b == b[0]) and a[0] == b[0]:
        p = 1.0
    else:
        p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    significant = p < alpha and abs(ratio - 1) > threshold
    verdict = "same" if not significant else ("slower" if ratio > 1 else "faster")
    return Comparison(ratio, p, significant, verdict)


def check_levels(threshold: float, alpha: float) -> None:
    """ValueError naming the argument unless threshold >= 0 and 0 < alpha < 1."""
    if not threshold >= 0:
        raise ValueError(f"threshold={threshold!r} must be >= 0 (a relative change)")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1) (a significance level)")


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.05,
                   alpha: float = 0.01) -> pd.DataFrame:
    """The comparison of two results frames (see the module docstring), in A's row order then
    the rows new in B."""
    check_levels(threshold, alpha)
    cols = KEY + ["status", "median_s", "samples_s"]
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
        ok_a = r.side != "right_only" and r.status_a in WITHIN_TOLERANCE and \
            isinstance(r.samples_s_a, list) and len(r.samples_s_a) > 0
        ok_b = r.side != "left_only" and r.status_b in WITHIN_TOLERANCE and \
            isinstance(r.samples_s_b, list) and len(r.samples_s_b) > 0
        line = dict(case=r.case, direction=r.direction, backend=r.backend,
                    median_a=r.median_s_a if ok_a else np.nan,
                    median_b=r.median_s_b if ok_b else np.nan, ratio=np.nan, p_value=np.nan)
        if ok_a and ok_b:
            c = compare_samples(r.samples_s_a, r.samples_s_b, threshold, alpha)
            line.update(ratio=c.ratio, p_value=c.p_value, verdict=c.verdict)
        elif r.side == "right_only":
            line["verdict"] = "new"
        elif r.side == "left_only":
            line["verdict"] = "gone"
        elif ok_a:
            line["verdict"] = "failed" if r.status_b == FAILED else str(r.status_b).lower()
        else:
            line["verdict"] = "n/a"
        lines.append(line)
    columns = ["case", "direction", "backend", "median_a", "median_b", "ratio", "p_value",
               "verdict"]
    return pd.DataFrame(lines, columns=columns).astype(
        {"median_a": "float64", "median_b": "float64", "ratio": "float64", "p_value": "float64"})


def compare_runs(run_a, run_b, threshold: float = 0.05, alpha: float = 0.01, warn=None):
    """(comparison frame, machine differences) of two run directories. NothingInCommonError
    when no case x direction x backend is in both."""
    check_levels(threshold, alpha)
    rows_a, meta_a = load_run(run_a, warn)
    rows_b, meta_b = load_run(run_b, warn)
    # a cluster run's meta names the client; its rows name the machines that measured them
    diffs = [] if "cluster" in meta_a or "cluster" in meta_b else \
        same_machine(meta_a.get("machine") or {}, meta_b.get("machine") or {})
    diffs += row_machines(rows_a, rows_b)
    lines = compare_frames(rows_a, rows_b, threshold, alpha)
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


def regressions(lines: pd.DataFrame) -> pd.DataFrame:
    return lines[lines["verdict"].isin(REGRESSIONS)]


def _ms(v) -> str:
    return "-" if pd.isna(v) else f"{v * 1e3:.3f} ms"


def format_text(lines: pd.DataFrame, diffs, name_a="A", name_b="B") -> str:
    out = []
    if diffs:
        out.append("WARNING: the runs come from different machines or software:")
        out += [f"  {d}" for d in diffs]
    labels = [f"{c} [{d}] {b}" for c, d, b in zip(lines["case"], lines["direction"],
                                                   lines["backend"])]
    width = max([len(s) for s in labels] + [10])
    out.append(f"{'case [direction] backend':<{width}}  {name_a:>12}  {name_b:>12}  {'B/A':>7}  "
               f"{'p':>8}  verdict")
    for label, ln in zip(labels, lines.itertuples(index=False)):
        ratio = "-" if pd.isna(ln.ratio) else f"{ln.ratio:.3f}"
        p = "-" if pd.isna(ln.p_value) else f"{ln.p_value:.2g}"
        flag = " <-- regression" if ln.verdict in REGRESSIONS else ""
        out.append(f"{label:<{width}}  {_ms(ln.median_a):>12}  {_ms(ln.median_b):>12}  "
                   f"{ratio:>7}  {p:>8}  {ln.verdict}{flag}")
    out.append(f"{len(regressions(lines))} significant regression(s), "
               f"{int((lines['verdict'] == 'faster').sum())} significant improvement(s)")
    return "\n".join(out)


def write_html(path, lines: pd.DataFrame, diffs, name_a, name_b) -> Path:
    def cell(v, fmt):
        return "" if pd.isna(v) else fmt(v)

    rows = "".join(
        f"<tr><td>{html.escape(ln.case)}</td><td>{ln.direction}</td>"
        f"<td>{html.escape(ln.backend)}</td>"
        f"<td>{cell(ln.median_a, _ms)}</td><td>{cell(ln.median_b, _ms)}</td>"
        f"<td>{cell(ln.ratio, lambda v: f'{v:.3f}')}</td>"
        f"<td>{cell(ln.p_value, lambda v: f'{v:.2g}')}</td>"
        f"<td class='{'failed' if ln.verdict in REGRESSIONS else ''}'>{ln.verdict}</td></tr>"
        for ln in lines.itertuples(index=False))
    warn = ("<p class='failed'>The runs come from different machines or software: "
            + html.escape("; ".join(diffs)) + "</p>") if diffs else ""
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>convbench compare</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(str(name_a))} vs "
           f"{html.escape(str(name_b))}</h1>{warn}<table><thead><tr><th>case</th>"
           f"<th>direction</th><th>backend</th><th>A median</th><th>B median</th><th>B/A</th>"
           f"<th>p (Mann-Whitney)</th><th>verdict</th></tr></thead><tbody>{rows}</tbody>"
           f"</table></body></html>")
    files.write_text(path, doc)
    return Path(path)
