"""Comparing two runs: per-case ratios, a significance test on the raw samples, regressions."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from convbench.harness.machine import same_machine
from convbench.harness.runner import load_run
from convbench.harness.stats import compare_samples


@dataclass
class Line:
    case: str
    direction: str
    backend: str
    median_a: float | None
    median_b: float | None
    ratio: float | None
    p_value: float | None
    verdict: str        # faster, slower, same, new, gone, failed


def compare_runs(run_a, run_b, threshold: float = 0.05, alpha: float = 0.01):
    """(lines, machine differences). ratio = median_b / median_a: above 1 is slower in B."""
    rows_a, meta_a = load_run(run_a)
    rows_b, meta_b = load_run(run_b)
    key = lambda r: (r["case"], r["descriptor"], r["direction"], r["backend"])  # noqa: E731
    a = {key(r): r for r in rows_a}
    b = {key(r): r for r in rows_b}
    lines = []
    for k in list(dict.fromkeys(list(a) + list(b))):
        ra, rb = a.get(k), b.get(k)
        ok_a = ra is not None and ra.get("status") == "OK" and ra.get("samples_s")
        ok_b = rb is not None and rb.get("status") == "OK" and rb.get("samples_s")
        ma = ra.get("median_s") if ok_a else None
        mb = rb.get("median_s") if ok_b else None
        if ok_a and ok_b:
            c = compare_samples(ra["samples_s"], rb["samples_s"], threshold, alpha)
            lines.append(Line(k[0], k[2], k[3], ma, mb, c.ratio, c.p_value, c.verdict))
        else:
            if ra is None:
                verdict = "new"
            elif rb is None:
                verdict = "gone"
            elif ok_a and not ok_b:
                verdict = "failed" if rb.get("status") == "FAILED" else rb.get("status", "").lower()
            else:
                verdict = "n/a"
            lines.append(Line(k[0], k[2], k[3], ma, mb, None, None, verdict))
    diffs = same_machine(meta_a.get("machine") or {}, meta_b.get("machine") or {})
    return lines, diffs


def regressions(lines) -> list[Line]:
    return [ln for ln in lines if ln.verdict in ("slower", "failed")]


def format_text(lines, diffs, name_a="A", name_b="B") -> str:
    out = []
    if diffs:
        out.append("WARNING: the runs come from different machines or software:")
        out += [f"  {d}" for d in diffs]
    width = max([len(f"{ln.case} [{ln.direction}] {ln.backend}") for ln in lines] + [10])
    out.append(f"{'case [direction] backend':<{width}}  {name_a:>12}  {name_b:>12}  {'B/A':>7}  "
               f"{'p':>8}  verdict")
    for ln in lines:
        fa = f"{ln.median_a * 1e3:.3f} ms" if ln.median_a else "-"
        fb = f"{ln.median_b * 1e3:.3f} ms" if ln.median_b else "-"
        ratio = f"{ln.ratio:.3f}" if ln.ratio else "-"
        p = f"{ln.p_value:.2g}" if ln.p_value is not None else "-"
        flag = " <-- regression" if ln.verdict in ("slower", "failed") else ""
        out.append(f"{f'{ln.case} [{ln.direction}] {ln.backend}':<{width}}  {fa:>12}  {fb:>12}  "
                   f"{ratio:>7}  {p:>8}  {ln.verdict}{flag}")
    reg = regressions(lines)
    out.append(f"{len(reg)} significant regression(s), "
               f"{sum(ln.verdict == 'faster' for ln in lines)} significant improvement(s)")
    return "\n".join(out)


def write_html(path, lines, diffs, name_a, name_b) -> Path:
    from convbench.harness.report import CSS
    rows = "".join(
        f"<tr><td>{html.escape(ln.case)}</td><td>{ln.direction}</td><td>{html.escape(ln.backend)}</td>"
        f"<td>{'' if ln.median_a is None else f'{ln.median_a * 1e3:.3f} ms'}</td>"
        f"<td>{'' if ln.median_b is None else f'{ln.median_b * 1e3:.3f} ms'}</td>"
        f"<td>{'' if ln.ratio is None else f'{ln.ratio:.3f}'}</td>"
        f"<td>{'' if ln.p_value is None else f'{ln.p_value:.2g}'}</td>"
        f"<td class='{'failed' if ln.verdict in ('slower', 'failed') else ''}'>{ln.verdict}</td></tr>"
        for ln in lines)
    warn = ("<p class='failed'>The runs come from different machines or software: "
            + html.escape("; ".join(diffs)) + "</p>") if diffs else ""
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>convbench compare</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(name_a)} vs {html.escape(name_b)}</h1>"
           f"{warn}<table><thead><tr><th>case</th><th>direction</th><th>backend</th><th>A median</th>"
           f"<th>B median</th><th>B/A</th><th>p (Mann-Whitney)</th><th>verdict</th></tr></thead>"
           f"<tbody>{rows}</tbody></table></body></html>")
    Path(path).write_text(doc)
    return Path(path)
