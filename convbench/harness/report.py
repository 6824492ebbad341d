"""report.html: one self-contained file (plots embedded as PNG) that opens with no network."""
from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

OK = "OK"


def metric(row) -> tuple[float | None, str]:
    """The throughput that fits the op: GB/s for pooling (memory-bound), GFLOP/s otherwise."""
    if str(row.get("family", "")).endswith("pool2d"):
        return row.get("gbps"), "GB/s"
    return row.get("gflops"), "GFLOP/s"


def choose_baseline(rows, wanted: str | None) -> str | None:
    names = {r["backend"] for r in rows if r.get("status") == OK}
    for cand in (wanted, "torch", "im2col", "numpy"):
        if cand and cand in names:
            return cand
    return sorted(names)[0] if names else None


def summary(rows, baseline: str | None):
    """Per (case, direction): the fastest verified backend and its speedup over the baseline."""
    groups = defaultdict(dict)
    order = []
    for r in rows:
        key = (r["case"], r["direction"])
        if key not in groups:
            order.append(key)
        groups[key][r["backend"]] = r
    out = []
    for key in order:
        by_backend = groups[key]
        ok = {b: r for b, r in by_backend.items() if r.get("status") == OK and r.get("median_s")}
        best = min(ok, key=lambda b: ok[b]["median_s"]) if ok else None
        base = ok.get(baseline)
        out.append(dict(case=key[0], direction=key[1], rows=by_backend, best=best,
                        speedup=(base["median_s"] / ok[best]["median_s"]) if best and base else None))
    return out


def geomean(values) -> float | None:
    v = [x for x in values if x and x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colors(backends):
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("tab10")
    return {b: cmap(i % 10) for i, b in enumerate(backends)}


def _throughput_plot(rows, backends, colors, title):
    import matplotlib.pyplot as plt
    cases = list(dict.fromkeys((r["case"], r["direction"]) for r in rows))
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cases) * max(1, len(backends) / 3) + 1.5))
    height = 0.8 / max(len(backends), 1)
    unit = "GFLOP/s"
    for j, b in enumerate(backends):
        vals = []
        for case in cases:
            r = next((r for r in rows if (r["case"], r["direction"]) == case and r["backend"] == b
                      and r.get("status") == OK), None)
            v, unit = metric(r) if r else (None, unit)
            vals.append(v or 0)
        ax.barh(np.arange(len(cases)) + j * height, vals, height, label=b, color=colors[b])
    ax.set_yticks(np.arange(len(cases)) + 0.4 - height / 2)
    ax.set_yticklabels([f"{c} [{d}]" for c, d in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit + " (median)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _speedup_plot(summ, rows, backends, colors, baseline):
    import matplotlib.pyplot as plt
    cases = [(s["case"], s["direction"]) for s in summ]
    if not cases or baseline is None:
        return None
    others = [b for b in backends if b != baseline]
    if not others:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(cases) + 1.5))
    height = 0.8 / max(len(others), 1)
    for j, b in enumerate(others):
        vals = []
        for s in summ:
            r, base = s["rows"].get(b), s["rows"].get(baseline)
            ok = r and base and r.get("status") == OK and base.get("status") == OK
            vals.append(base["median_s"] / r["median_s"] if ok else np.nan)
        ax.barh(np.arange(len(cases)) + j * height, vals, height, label=b, color=colors[b])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(np.arange(len(cases)) + 0.4 - height / 2)
    ax.set_yticklabels([f"{c} [{d}]" for c, d in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"speedup over {baseline} (>1 is faster)")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _roofline_plot(rows, backends, colors, peaks):
    import matplotlib.pyplot as plt
    pts = [r for r in rows if r.get("status") == OK and r.get("gflops") and r.get("intensity")]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    xs = np.array([r["intensity"] for r in pts])
    lo, hi = max(xs.min() / 4, 1e-3), xs.max() * 4
    if peaks:
        grid = np.logspace(np.log10(lo), np.log10(hi), 200)
        roof = np.minimum(peaks["sgemm_gflops"], peaks["memory_gbps"] * grid)
        ax.plot(grid, roof, color="black", lw=2,
                label=f"roof: {peaks['sgemm_gflops']:.0f} GFLOP/s SGEMM, "
                      f"{peaks['memory_gbps']:.1f} GB/s copy")
    for b in backends:
        sel = [r for r in pts if r["backend"] == b]
        if sel:
            ax.scatter([r["intensity"] for r in sel], [r["gflops"] for r in sel], s=25,
                       color=colors[b], label=b, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per minimal byte moved)")
    ax.set_ylabel("GFLOP/s (median)")
    ax.set_title("Roofline: each case x backend against this machine's measured peaks")
    ax.legend(fontsize=8)
    return _png(fig)


def _first_call_plot(rows, backends, colors):
    import matplotlib.pyplot as plt
    vals = {b: [r["first_call_s"] - (r.get("median_s") or 0) for r in rows
                if r["backend"] == b and r.get("status") == OK and r.get("first_call_s") is not None]
            for b in backends}
    vals = {b: v for b, v in vals.items() if v}
    if not vals:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    names = list(vals)
    ax.bar(names, [max(sum(vals[b]), 0) for b in names], color=[colors[b] for b in names])
    ax.set_ylabel("seconds")
    ax.set_title("First-call overhead (first call minus steady-state median), summed over cases")
    return _png(fig)


def _table(headers, body) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _fmt_rate(r) -> str:
    if not r:
        return ""
    if r.get("status") != OK:
        return f"<span class='{r.get('status', '').lower()}'>{html.escape(str(r.get('status')))}</span>"
    v, unit = metric(r)
    noisy = " <span class='noisy' title='wide spread'>~</span>" if r.get("noisy") else ""
    return f"{v:.3g} {unit}{noisy}"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}.failed{color:#b00;font-weight:bold}
.unsupported,.unavailable,.skipped{color:#888}.noisy{color:#c60}img{max-width:100%}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"""


def render(rows, meta, baseline: str | None = None) -> str:
    baseline = choose_baseline(rows, baseline or meta.get("baseline"))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    colors = _colors(backends)
    summ = summary(rows, baseline)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>convbench: "
             f"{html.escape(str(meta.get('suite')))}</title><style>{CSS}</style></head><body>"]
    m = meta.get("machine", {}) or {}
    cpu = (m.get("cpu") or {}).get("model", "?")
    parts.append(f"<h1>convbench report: suite {html.escape(str(meta.get('suite')))}</h1>"
                 f"<p>{html.escape(str(meta.get('started', '')))} &middot; {html.escape(cpu)} &middot; "
                 f"{m.get('threads', '?')} threads &middot; dtype {html.escape(str(meta.get('dtype')))}"
                 f" &middot; wall time {meta.get('wall_s', 0):.1f} s"
                 + (" &middot; <b>interrupted</b>" if meta.get("interrupted") else "") + "</p>")
    # summary
    body = []
    for s in summ:
        cells = [html.escape(s["case"]), s["direction"], html.escape(s["best"] or "-"),
                 f"{s['speedup']:.2f}x" if s["speedup"] else "-"]
        cells += [_fmt_rate(s["rows"].get(b)) for b in backends]
        body.append(cells)
    ratios = defaultdict(list)
    for s in summ:
        base = s["rows"].get(baseline)
        for b, r in s["rows"].items():
            if base and r.get("status") == OK and base.get("status") == OK:
                ratios[b].append(base["median_s"] / r["median_s"])
    parts.append(f"<h2>Summary</h2><p>Fastest verified backend per case, and its speedup over the "
                 f"baseline <b>{html.escape(str(baseline))}</b>, measured side by side in this run. "
                 "Throughputs are medians; ~ marks a wide spread.</p>")
    parts.append(_table(["case", "direction", "best", f"speedup vs {baseline}"] + backends, body))
    gm = [[html.escape(b), f"{geomean(v):.2f}x", str(len(v))] for b, v in ratios.items() if v]
    if gm:
        parts.append(f"<p>Geometric mean speed relative to {html.escape(str(baseline))}:</p>")
        parts.append(_table(["backend", "geomean", "cases"], gm))
    # plots
    parts.append("<h2>Throughput</h2>")
    for fam in dict.fromkeys(r["family"] for r in rows):
        img = _throughput_plot([r for r in rows if r["family"] == fam], backends, colors, fam)
        if img:
            parts.append(f"<img alt='throughput {fam}' src='{img}'>")
    img = _speedup_plot(summ, rows, backends, colors, baseline)
    if img:
        parts.append(f"<h2>Speedup over {html.escape(baseline)}</h2><img alt='speedup' src='{img}'>")
    img = _roofline_plot(rows, backends, colors, meta.get("peaks"))
    if img:
        parts.append(f"<h2>Roofline</h2><img alt='roofline' src='{img}'>")
    img = _first_call_plot(rows, backends, colors)
    if img:
        parts.append(f"<h2>First call (JIT compilation)</h2><img alt='first call' src='{img}'>")
        fc = [[html.escape(r["case"]), r["direction"], html.escape(r["backend"]),
               f"{r['first_call_s'] * 1e3:.1f} ms", f"{r['median_s'] * 1e3:.3f} ms"]
              for r in rows if r.get("status") == OK and r.get("first_call_s") is not None]
        parts.append(_table(["case", "direction", "backend", "first call", "steady median"], fc))
    # problems
    bad = [[html.escape(r["case"]), r["direction"], html.escape(r["backend"]),
            f"<span class='{r['status'].lower()}'>{r['status']}</span>", html.escape(str(r.get("reason", "")))]
           for r in rows if r.get("status") != OK]
    parts.append("<h2>Failures, unsupported and skipped cases</h2>")
    parts.append(_table(["case", "direction", "backend", "status", "reason"], bad) if bad
                 else "<p>None: every case ran and passed verification.</p>")
    refs = sorted({str(r.get("reference")) for r in rows if r.get("reference")})
    parts.append(f"<p>Each result was checked against a reference before timing: "
                 f"{html.escape(', '.join(refs) or '-')}. A result outside its tolerance is FAILED "
                 f"and shown with no speed.</p>")
    parts.append("<h2>Machine</h2><pre>" + html.escape(json.dumps(
        {"machine": meta.get("machine"), "peaks": meta.get("peaks"),
         "policy": meta.get("policy")}, indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(run_dir, rows, meta, baseline: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    path = Path(run_dir) / "report.html"
    path.write_text(render(rows, meta, baseline))
    return path
