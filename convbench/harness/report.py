"""report.html: one self-contained file (plots embedded as PNG) that opens with no network.

Every table and plot is computed from the run's results frame (convbench.harness.table); plots
are drawn on matplotlib Figure objects, never through pyplot's global state.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from convbench import files
from convbench.harness import table
from convbench.machine import peak_gflops
from convbench.memory import format_bytes
from convbench.result import MISTRUSTED, PASSED

KEY = ["case", "direction"]


def metric(family: str) -> tuple[str, str]:
    """(column, unit) of the throughput that fits the op: GB/s for pooling (memory-bound),
    GFLOP/s otherwise."""
    return ("gbps", "GB/s") if str(family).endswith("pool2d") else ("gflops", "GFLOP/s")


def choose_baseline(frame: pd.DataFrame, wanted: str | None) -> str | None:
    names = set(table.timed(frame)["backend"])
    for cand in (wanted, "torch", "im2col", "numpy"):
        if cand and cand in names:
            return cand
    return sorted(names)[0] if names else None


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    """(case, direction) pairs in the order the run produced them."""
    return pd.MultiIndex.from_frame(frame[KEY].drop_duplicates())


def medians(frame: pd.DataFrame) -> pd.DataFrame:
    """Median seconds, one row per (case, direction), one column per backend (NaN: no speed)."""
    t = table.timed(frame)
    wide = t.pivot_table(index=KEY, columns="backend", values="median_s", aggfunc="min")
    backends = list(dict.fromkeys(frame["backend"]))
    return wide.reindex(index=_keys(frame), columns=backends)


def speedups(frame: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Baseline's median / each backend's median, per (case, direction); NaN where either has no
    speed."""
    med = medians(frame)
    if baseline not in med:
        return med * np.nan
    return med.rdiv(med[baseline], axis=0)


def pareto(frame: pd.DataFrame) -> pd.DataFrame:
    """The timed rows with a measured peak_bytes, with a boolean column `front`: on the Pareto
    front of its (case, direction), that is, faster than every backend there that uses less
    memory (no other row uses no more memory and is no slower, and better in one of the two)."""
    t = table.timed(frame).dropna(subset=["peak_bytes"])
    front = []
    for _, r in t.iterrows():
        same = t[(t["case"] == r["case"]) & (t["direction"] == r["direction"])]
        peak, med = same["peak_bytes"].astype(float), same["median_s"].astype(float)
        p, m = float(r["peak_bytes"]), float(r["median_s"])
        dominated = ((peak <= p) & (med <= m) & ((peak < p) | (med < m))).any()
        front.append(not dominated)
    return t.assign(front=np.array(front, dtype=bool))


def peers_of(frame: pd.DataFrame, meta: dict | None) -> list[str]:
    """The run's backends that are peers (outside libraries convbench is measured against), as
    the run recorded them; for runs from before that record, torch."""
    meta = meta or {}
    recorded = meta.get("peers")
    if recorded is None:
        recorded = list((meta.get("machine") or {}).get("peers") or {}) or ["torch"]
    return [b for b in dict.fromkeys(frame["backend"]) if b in recorded]


def best_peers(frame: pd.DataFrame, peers) -> pd.DataFrame:
    """Per (case, direction): the fastest peer with a speed ("best_peer", None if none) and its
    median ("peer_s", NaN if none)."""
    med = medians(frame)
    med = med[[p for p in peers if p in med]]
    best = [row.idxmin() if row.notna().any() else None for _, row in med.iterrows()]
    return pd.DataFrame({"best_peer": best, "peer_s": med.min(axis=1).to_numpy()},
                        index=med.index)


def peer_ratios(frame: pd.DataFrame, peers) -> pd.DataFrame:
    """The best peer's median / each backend's median, per (case, direction): above 1 is faster
    than the fastest peer on that case; NaN where either has no speed."""
    med = medians(frame)
    return med.rdiv(best_peers(frame, peers)["peer_s"], axis=0)


def summary(frame: pd.DataFrame, baseline: str | None, peers=()) -> pd.DataFrame:
    """Per (case, direction): the fastest verified backend ("best", None if none) and its speedup
    over the baseline (NaN without one); the fastest peer ("best_peer") and the fastest of the
    other backends ("best_own") with its ratio to that peer ("own_vs_peer", above 1 is faster)."""
    med = medians(frame)
    best = [row.idxmin() if row.notna().any() else None for _, row in med.iterrows()]
    fastest = med.min(axis=1)
    base = med[baseline] if baseline in med else pd.Series(np.nan, index=med.index)
    own = med[[b for b in med.columns if b not in peers]]
    bp = best_peers(frame, peers)
    # object dtype for the names: pandas would otherwise infer text and turn a missing one to NaN
    out = pd.DataFrame({"best": pd.Series(best, index=med.index, dtype=object),
                        "speedup": (base / fastest).to_numpy(),
                        "best_peer": pd.Series(bp["best_peer"].to_numpy(), index=med.index,
                                               dtype=object),
                        "best_own": pd.Series([r.idxmin() if r.notna().any() else None
                                               for _, r in own.iterrows()], index=med.index,
                                              dtype=object),
                        "own_vs_peer": (bp["peer_s"] / own.min(axis=1)).to_numpy()},
                       index=med.index)
    return out.reset_index()


def _geomean_columns(ratios: pd.DataFrame) -> tuple[list, list]:
    return ([table.geomean(ratios[b].dropna()) for b in ratios],
            [int(ratios[b].notna().sum()) for b in ratios])


def geomeans(frame: pd.DataFrame, baseline: str | None, peers=()) -> pd.DataFrame:
    """Per backend: the geometric mean of its speedups over the baseline ("geomean", over
    "cases" cases), over torch ("vs_torch", "torch_cases") and over the fastest peer of each case
    ("vs_best_peer", "peer_cases")."""
    sp = speedups(frame, baseline)
    g, n = _geomean_columns(sp)
    out = pd.DataFrame({"geomean": g, "cases": n}, index=sp.columns)
    out["vs_torch"], out["torch_cases"] = _geomean_columns(speedups(frame, "torch"))
    out["vs_best_peer"], out["peer_cases"] = _geomean_columns(peer_ratios(frame, peers))
    return out


MACHINE = ["machine", "host", "cpu", "gpu"]


def by_machine(frame: pd.DataFrame, baseline: str | None, peers=()) -> pd.DataFrame:
    """One row per machine that measured rows (the `machine` column: a key of its fingerprint),
    with its host, CPU and GPU, its workers, how many (case, direction)s and rows it measured,
    its FAILED rows, and per backend the geometric mean speedup over the baseline on its cases
    ("geomeans": backend -> (ratio, cases))."""
    out = []
    for key, rows in frame.groupby(MACHINE, sort=False, dropna=False):
        g = geomeans(rows, baseline, peers)
        out.append({**dict(zip(MACHINE, key)),
                    "workers": ", ".join(sorted(w for w in set(rows["worker"]) if w)),
                    "cases": len(rows[KEY].drop_duplicates()), "rows": len(rows),
                    "failed": int((rows["status"] == "FAILED").sum()),
                    "geomeans": {b: (r["geomean"], int(r["cases"])) for b, r in g.iterrows()
                                 if r["cases"]}})
    return pd.DataFrame(out, columns=[*MACHINE, "workers", "cases", "rows", "failed",
                                      "geomeans"])


def throughput_by_machine(frame: pd.DataFrame) -> pd.DataFrame:
    """Each backend's throughput (GFLOP/s, or GB/s for pooling) per (case, direction, backend),
    one column per machine: one case read across the machines that measured it."""
    t = table.timed(frame)
    rates = [r[metric(r["family"])[0]] for _, r in t.iterrows()]
    t = t.assign(rate=pd.Series(rates, index=t.index, dtype="float64"))
    return t.pivot_table(index=[*KEY, "backend"], columns="machine", values="rate",
                         aggfunc="first", sort=False)


def _machines_html(frame: pd.DataFrame, baseline, peers) -> str:
    esc = html.escape
    bm = by_machine(frame, baseline, peers)
    label = {r.machine: f"{r.host} ({r.machine})" for r in bm.itertuples()}

    def _gm(g):
        return ", ".join(f"{esc(b)} {v:.2f}x ({n})" for b, (v, n) in g.items()) or "-"
    parts = [f"<h2>By machine</h2><p>Each row of this run names the machine that measured it "
             f"(a key of its fingerprint: CPU, GPU, cores, memory, library versions); all the "
             f"backends of a case are measured on one machine. Speedups are over "
             f"{esc(str(baseline))} on that machine's cases.</p>",
             _table(["machine", "host", "CPU", "GPU", "workers", "cases", "rows", "FAILED",
                     f"geomean vs {baseline} (cases)"],
                    [[esc(r.machine or "-"), esc(r.host or "-"), esc(r.cpu or "-"),
                      esc(r.gpu or "-"), esc(r.workers or "-"), r.cases, r.rows, r.failed,
                      _gm(r.geomeans)] for r in bm.itertuples()])]
    tm = throughput_by_machine(frame)
    if not tm.empty:
        parts.append("<p>Throughput per machine (GFLOP/s; GB/s for pooling), each case on the "
                     "machines that measured it:</p>")
        parts.append(_table(["case", "direction", "backend"]
                            + [label.get(m, m or "-") for m in tm.columns],
                            [[esc(c), d, esc(b), *[f"{v:.3g}" if pd.notna(v) else "-"
                                                   for v in r]]
                             for (c, d, b), r in tm.iterrows()]))
    return "".join(parts)


def whole_model(frame: pd.DataFrame, counts: dict, baseline: str | None,
                peers=("torch",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model's layers summed: per direction (and "all" over several), each backend's total
    seconds, sum over layers of count x median (complete only where it timed every layer), and
    the same for the mix that takes each layer's fastest backend other than the peers; the
    baseline's total over each. Returns (totals: direction, backend, total_s, layers, of,
    speedup), (mix: direction, backend, layers, calls, share of the mix's time)."""
    med = medians(frame)
    if med.empty:
        return pd.DataFrame(), pd.DataFrame()
    weight = pd.Series([counts.get(c, 1) for c, _ in med.index], index=med.index, dtype=float)
    own = [b for b in med.columns if b not in peers]
    chosen = {}             # backend -> (case, direction) -> the backend it delegated to
    for r in frame.itertuples():
        if str(r.reason).startswith("chose "):
            chosen.setdefault(r.backend, {})[(r.case, r.direction)] = \
                r.reason[len("chose "):].split(";")[0]
    rows, mix_rows = [], []
    directions = list(dict.fromkeys(d for _, d in med.index))
    for direction in directions + (["all"] if len(directions) > 1 else []):
        sel = med if direction == "all" else med[med.index.get_level_values(1) == direction]
        w = weight[sel.index]
        totals = {}
        for b in sel.columns:
            have = sel[b].notna()
            totals[b] = ((sel[b] * w).sum() if have.all() else np.nan, int(have.sum()))
        best = sel[own].min(axis=1) if own else pd.Series(np.nan, index=sel.index)
        winner = sel[own].idxmin(axis=1) if own and best.notna().all() else None
        totals["best per layer"] = ((best * w).sum() if best.notna().all() else np.nan,
                                    int(best.notna().sum()))
        base = totals.get(baseline, (np.nan, 0))[0]
        for b, (total, layers) in totals.items():
            rows.append({"direction": direction, "backend": b, "total_s": total,
                         "layers": layers, "of": len(sel), "speedup": base / total})
        if winner is not None:
            winner = winner.copy()
            for key, b in winner.items():       # name what a delegating backend ran
                if b in chosen and key in chosen[b]:
                    winner[key] = f"{b} ({chosen[b][key]})"
            for b in dict.fromkeys(winner):
                won = winner == b
                mix_rows.append({"direction": direction, "backend": b, "layers": int(won.sum()),
                                 "calls": int(w[won].sum()),
                                 "share": float((best[won] * w[won]).sum() / (best * w).sum())})
    return pd.DataFrame(rows), pd.DataFrame(mix_rows)


def _whole_model_html(frame, meta, baseline, peers=("torch",)) -> str:
    counts = meta.get("counts") or {}
    totals, mix = whole_model(frame, counts, baseline, peers)
    if totals.empty:
        return ""
    esc = html.escape
    parts = ["<h2>Whole model</h2><p>The model's layers that convbench times "
             f"({len(counts)} distinct, {sum(counts.values())} calls; other operations are not "
             "included): for each backend the sum over layers of calls x median time, complete "
             "only where the backend timed every layer; and the mix that runs each layer on its "
             f"fastest backend other than the peers ({esc(', '.join(peers) or 'none')}). "
             "Speedup: the baseline "
             f"<b>{esc(str(baseline))}</b>'s total over each (&gt;1 is faster).</p>"]
    body = []
    for r in totals.itertuples():
        total = "-" if pd.isna(r.total_s) else f"{r.total_s * 1e3:.3f} ms"
        speed = "-" if pd.isna(r.speedup) else f"{r.speedup:.2f}x"
        body.append([r.direction, esc(r.backend), total, f"{r.layers} of {r.of}", speed])
    parts.append(_table(["direction", "backend", "model total", "layers timed",
                         f"speedup vs {baseline}"], body))
    if not mix.empty:
        parts.append("<p>The fastest-per-layer mix:</p>")
        parts.append(_table(["direction", "backend", "layers", "calls", "share of time"],
                            [[r.direction, esc(r.backend), str(r.layers), str(r.calls),
                              f"{r.share:.0%}"] for r in mix.itertuples()]))
    return "".join(parts)


# --- plots --------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a report is drawn
    return Figure(figsize=(width, height))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colors(backends):
    import matplotlib  # lazy: as in _figure
    cmap = matplotlib.colormaps["tab10"]
    return {b: cmap(i % 10) for i, b in enumerate(backends)}


def _bars(ax, values: pd.DataFrame, colors, low=None, high=None):
    """Horizontal bars, one group per row of values, one bar per column; error bars from `low`
    to `high` (frames shaped like values) where they are given."""
    height = 0.8 / max(len(values.columns), 1)
    y = np.arange(len(values))
    for j, b in enumerate(values.columns):
        v = values[b].to_numpy(dtype=float)
        err = None
        if low is not None and low[b].notna().any():
            lo, hi = low[b].to_numpy(dtype=float), high[b].to_numpy(dtype=float)
            err = np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0))
        ax.barh(y + j * height, v, height, label=b, color=colors[b], xerr=err,
                error_kw={"elinewidth": 1, "capsize": 2})
    ax.set_yticks(y + 0.4 - height / 2)
    ax.set_yticklabels([f"{c} [{d}]" for c, d in values.index], fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")


def _throughput_plot(frame, backends, colors, family):
    column, unit = metric(family)
    rows = frame[frame["family"] == family]
    if rows.empty:
        return None
    t = table.timed(rows)

    def wide(v):
        return (t.assign(v=v).pivot_table(index=KEY, columns="backend", values="v",
                                          aggfunc="max", dropna=False)
                .reindex(index=_keys(rows), columns=backends))
    values = wide(t[column]).fillna(0)
    # the spread between processes: the rates of the slowest and the fastest process median
    rate = (t[column] * t["median_s"]).astype(float)
    slowest = [max(m) if len(m) > 1 else np.nan for m in t["process_medians_s"]]
    fastest = [min(m) if len(m) > 1 else np.nan for m in t["process_medians_s"]]
    fig = _figure(9, 0.45 * len(values) * max(1, len(backends) / 3) + 1.5)
    ax = fig.subplots()
    _bars(ax, values, colors, wide(rate / np.array(slowest, dtype=float)),
          wide(rate / np.array(fastest, dtype=float)))
    spread = " (median of the process medians; bars: slowest to fastest process)" \
        if t["processes"].fillna(1).gt(1).any() else " (median)"
    ax.set_xlabel(unit + spread)
    ax.set_title(family)
    return _png(fig)


def _speedup_plot(frame, backends, colors, baseline):
    others = [b for b in backends if b != baseline]
    if baseline is None or not others or frame.empty:
        return None
    values = speedups(frame, baseline)[others]
    fig = _figure(9, 0.35 * len(values) + 1.5)
    ax = fig.subplots()
    _bars(ax, values, colors)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"speedup over {baseline} (>1 is faster)")
    return _png(fig)


def _roofline_plot(frame, backends, colors, peaks):
    pts = table.timed(frame).dropna(subset=["gflops", "intensity"])
    if pts.empty:
        return None
    fig = _figure(8, 5)
    ax = fig.subplots()
    xs = pts["intensity"].to_numpy(dtype=float)
    lo, hi = max(xs.min() / 4, 1e-3), xs.max() * 4
    if peaks:
        grid = np.logspace(np.log10(lo), np.log10(hi), 200)
        top = peak_gflops(peaks)
        kind = "FMA peak" if peaks.get("fma_gflops") else "SGEMM"
        ax.plot(grid, np.minimum(top, peaks["memory_gbps"] * grid), color="black", lw=2,
                label=f"roof: {top:.0f} GFLOP/s {kind}, {peaks['memory_gbps']:.1f} GB/s copy")
        if peaks.get("fma_gflops"):
            # the BLAS's SGEMM: what a BLAS-based backend can reach at best
            ax.plot(grid, np.minimum(peaks["sgemm_gflops"], peaks["memory_gbps"] * grid),
                    color="gray", lw=1, ls="--",
                    label=f"NumPy's SGEMM: {peaks['sgemm_gflops']:.0f} GFLOP/s")
    for b, sel in pts.groupby("backend", sort=False):
        ax.scatter(sel["intensity"], sel["gflops"], s=25, color=colors[b], label=b, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per minimal byte moved)")
    ax.set_ylabel("GFLOP/s (median)")
    ax.set_title("Roofline: each case x backend against this machine's measured peaks")
    ax.legend(fontsize=8)
    return _png(fig)


def _memory_plot(front: pd.DataFrame, colors):
    """Median time against peak memory, one panel per (case, direction); the Pareto front is
    joined by a line and its points ringed."""
    keys = list(dict.fromkeys(zip(front["case"], front["direction"])))
    if not keys:
        return None
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig = _figure(3.2 * cols, 2.6 * rows + 0.6)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (case, direction) in zip(axes, keys):
        sel = front[(front["case"] == case) & (front["direction"] == direction)]
        mib = sel["peak_bytes"].astype(float) / 2**20
        ms = sel["median_s"].astype(float) * 1e3
        for b, x, y in zip(sel["backend"], mib, ms):
            ax.scatter(x, y, s=22, color=colors[b], label=b, zorder=3)
        on = sel["front"].to_numpy()
        order = np.argsort(mib.to_numpy()[on])
        ax.step(mib.to_numpy()[on][order], ms.to_numpy()[on][order], where="post",
                color="black", lw=0.8, zorder=2)
        ax.scatter(mib[on], ms[on], s=70, facecolors="none", edgecolors="black", zorder=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.minorticks_off()         # minor labels of a narrow log range overlap
        ax.set_title(f"{case} [{direction}]", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[:len(keys)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               bbox_to_anchor=(0.5, 1.0), ncol=min(8, len(handles)), fontsize=8)
    fig.supxlabel("peak memory per call (MiB)", fontsize=9)
    fig.supylabel("median time (ms)", fontsize=9)
    return _png(fig)


def _memory_cell(row) -> str:
    """peak_bytes (and the workspace kept of it), ringed when on the Pareto front."""
    if pd.isna(row.get("peak_bytes")):
        return "-" if row["status"] in (PASSED, MISTRUSTED) else _status(row["status"])
    kept = (f" <span class='noisy'>(kept {format_bytes(row['workspace_bytes'])})</span>"
            if pd.notna(row.get("workspace_bytes")) and row["workspace_bytes"] else "")
    mark = " <b title='Pareto front: faster than every backend using less memory'>*</b>"
    return f"{format_bytes(row['peak_bytes'])}{kept}{mark if row.get('front') else ''}"


def _memory_html(frame: pd.DataFrame, backends, colors) -> str:
    if "peak_bytes" not in frame or frame["peak_bytes"].isna().all():
        return ""
    front = pareto(frame)
    marked = frame.assign(front=False)
    marked.loc[front.index, "front"] = front["front"]
    cells = _cells(marked, _memory_cell, backends)
    parts = ["<h2>Memory</h2><p>Per case, each backend's peak memory in one call (measured in a "
             "call of its own, apart from the timed ones: the most bytes allocated at once above "
             "what was allocated before the call, its outputs and the scratch it keeps between "
             "calls included; in brackets, that kept scratch). * marks the Pareto front: faster "
             "than every backend that uses less memory. - : not measurable for that backend "
             "(a runtime with its own allocator).</p>",
             _table(["case", "direction"] + backends,
                    [[html.escape(c), d, *row] for (c, d), row in cells.iterrows()])]
    img = _memory_plot(front, colors)
    if img:
        parts.append(f"<img alt='time against memory' src='{img}'>")
    return "".join(parts)


def _first_call(frame):
    return table.timed(frame).dropna(subset=["first_call_s"])


def _first_call_plot(frame, colors):
    rows = _first_call(frame)
    if rows.empty:
        return None
    overhead = (rows["first_call_s"] - rows["median_s"]).groupby(rows["backend"], sort=False).sum()
    fig = _figure(8, 3)
    ax = fig.subplots()
    ax.bar(list(overhead.index), overhead.clip(lower=0).to_numpy(),
           color=[colors[b] for b in overhead.index])
    ax.set_ylabel("seconds")
    ax.set_title("First-call overhead (first call minus steady-state median), summed over cases")
    return _png(fig)


# --- tables -------------------------------------------------------------------------------------
def _processes_html(frame: pd.DataFrame) -> str:
    """The rows measured in several fresh processes: each process's median and first call."""
    t = table.timed(frame)
    t = t[t["processes"].fillna(1).gt(1)]
    if t.empty:
        return ""

    def ms(values):
        return ", ".join(f"{v * 1e3:.3g}" for v in values)
    body = [[html.escape(r.case), r.direction, html.escape(r.backend), int(r.processes),
             f"{r.median_s * 1e3:.3f} ms",
             f"{r.process_spread:.1%}" if pd.notna(r.process_spread) else "-",
             ms(r.process_medians_s), ms(r.process_first_call_s)] for r in t.itertuples()]
    return ("<h2>Between processes</h2><p>Each of these rows was measured in several fresh "
            "processes, one after another; its time is the median of the process medians, and "
            "the spread (the standard deviation of their logs, about the relative spread) is "
            "what <code>convbench compare</code> tests a change against.</p>"
            + _table(["case", "direction", "backend", "processes", "median of medians",
                      "spread", "process medians (ms)", "first calls (ms)"], body))


def _table(headers, body) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _status(status: str) -> str:
    return f"<span class='{html.escape(status.lower())}'>{html.escape(status)}</span>"


def _rate_cell(row) -> str:
    """A row's throughput, with marks for a wide spread and a mistrusted check; or its status."""
    if pd.isna(row["median_s"]) or row["status"] not in (PASSED, MISTRUSTED):
        return _status(row["status"])
    column, unit = metric(row["family"])
    noisy = (" <span class='noisy' title='wide spread'>~</span>"
             if pd.notna(row["noisy"]) and row["noisy"] else "")
    doubt = (f" <span class='mistrusted' title='{html.escape(row['reason'])}'>?</span>"
             if row["status"] == MISTRUSTED else "")
    pct = row.get("pct_of_peak")
    share = f" ({pct:.0f}%)" if unit == "GFLOP/s" and pct is not None and pd.notna(pct) else ""
    return f"{row[column]:.3g} {unit}{share}{noisy}{doubt}"


def _cells(frame: pd.DataFrame, render, backends) -> pd.DataFrame:
    """One rendered cell per (case, direction) x backend ("" where the backend has no row)."""
    cells = frame.assign(cell=[render(r) for _, r in frame.iterrows()])
    return (cells.pivot_table(index=KEY, columns="backend", values="cell", aggfunc="first")
            .reindex(index=_keys(frame), columns=backends).fillna(""))


def _check_cell(row) -> str:
    if row["status"] not in (PASSED, MISTRUSTED) and pd.isna(row["rel_error"]):
        return _status(row["status"])
    ratio = f"{row['rel_error'] / row['tolerance']:.2f}" if row["tolerance"] else "-"
    return ratio if row["status"] == PASSED else f"{ratio} {_status(row['status'])}"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}
.failed{color:#b00;font-weight:bold}.mistrusted{color:#c60;font-weight:bold}
.unimplemented,.unavailable,.skipped{color:#888}.noisy{color:#c60}img{max-width:100%}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"""


def render(frame: pd.DataFrame, meta: dict, baseline: str | None = None) -> str:
    baseline = choose_baseline(frame, baseline or meta.get("baseline"))
    backends = list(dict.fromkeys(frame["backend"]))
    colors = _colors(backends)
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>convbench: "
             f"{esc(str(meta.get('suite')))}</title><style>{CSS}</style></head><body>"]
    m = meta.get("machine", {}) or {}
    cpu = (m.get("cpu") or {}).get("model", "?")
    parts.append(f"<h1>convbench report: suite {esc(str(meta.get('suite')))}</h1>"
                 f"<p>{esc(str(meta.get('started', '')))} &middot; {esc(cpu)} &middot; "
                 f"{m.get('threads', '?')} threads &middot; dtype {esc(str(meta.get('dtype')))}"
                 f" &middot; wall time {meta.get('wall_s', 0):.1f} s"
                 + (" &middot; <b>interrupted</b>" if meta.get("interrupted") else "") + "</p>")
    for warning in meta.get("warnings") or []:
        parts.append(f"<p class='failed'>Warning: {esc(warning)}</p>")
    # summary
    peers = peers_of(frame, meta)
    summ = summary(frame, baseline, peers)
    rates = _cells(frame, _rate_cell, backends)
    body = []
    for s, (_, cells) in zip(summ.itertuples(index=False), rates.iterrows()):
        vs_peer = (f"{esc(s.best_own)} {s.own_vs_peer:.2f}x" if pd.notna(s.own_vs_peer)
                   else "-")
        body.append([esc(s.case), s.direction, esc(s.best or "-"),
                     f"{s.speedup:.2f}x" if pd.notna(s.speedup) else "-",
                     esc(s.best_peer or "-"), vs_peer, *cells])
    parts.append(f"<h2>Summary</h2><p>Fastest verified backend per case, and its speedup over the "
                 f"baseline <b>{esc(str(baseline))}</b>; the fastest peer (of "
                 f"{esc(', '.join(peers) or 'none in this run')}) and the fastest of the other "
                 "backends against it (above 1x: faster than every peer), measured side by side "
                 "in this run. Throughputs are medians, with their share of the machine's "
                 "measured fp32 FMA peak in brackets; ~ marks a wide spread, ? a MISTRUSTED "
                 "check.</p>")
    parts.append(_table(["case", "direction", "best", f"speedup vs {baseline}", "best peer",
                         "best own vs best peer"] + backends, body))
    gm = geomeans(frame, baseline, peers)
    gm = gm[(gm["cases"] > 0) | (gm["peer_cases"] > 0)]
    if not gm.empty:
        def _g(value, count):
            return f"{value:.2f}x ({int(count)})" if pd.notna(value) and count else "-"
        heads = [f"vs {baseline} (cases)"]
        cols = [("geomean", "cases")]
        if baseline != "torch" and gm["torch_cases"].any():
            heads.append("vs torch (cases)")
            cols.append(("vs_torch", "torch_cases"))
        heads.append("vs best peer per case (cases)")
        cols.append(("vs_best_peer", "peer_cases"))
        parts.append("<p>Geometric mean speed ratios (above 1x: faster):</p>")
        parts.append(_table(["backend"] + heads,
                            [[esc(str(name))] + [_g(r[v], r[n]) for v, n in cols]
                             for name, r in gm.iterrows()]))
    ratios = peer_ratios(frame, peers)
    over_base = speedups(frame, baseline)
    own = [b for b in backends if b not in peers]
    if peers and own and ratios[own].notna().any().any():
        bp = best_peers(frame, peers)

        def _r(v):
            return f"{v:.2f}x" if pd.notna(v) else "-"
        rows = [[esc(key[0]), key[1], esc(bp.loc[key, "best_peer"] or "-"),
                 *[f"{_r(over_base.loc[key, b])} | {_r(r[b])}" for b in own]]
                for key, r in ratios.iterrows()]
        parts.append(f"<h2>Against the baseline and the best peer</h2><p>Per case, each "
                     f"backend's speed over {esc(str(baseline))} | over the fastest peer of that "
                     "case (the other's median time over its own; above 1x: faster).</p>")
        parts.append(_table(["case", "direction", "best peer"] + own, rows))
    if meta.get("counts"):
        parts.append(_whole_model_html(frame, meta, baseline, peers))
    if meta.get("cluster") or frame["machine"].nunique() > 1:
        parts.append(_machines_html(frame, baseline, peers))
    # plots
    parts.append("<h2>Throughput</h2>")
    for fam in dict.fromkeys(frame["family"]):
        img = _throughput_plot(frame, backends, colors, fam)
        if img:
            parts.append(f"<img alt='throughput {esc(fam)}' src='{img}'>")
    img = _speedup_plot(frame, backends, colors, baseline)
    if img:
        parts.append(f"<h2>Speedup over {esc(baseline)}</h2><img alt='speedup' src='{img}'>")
    img = _roofline_plot(frame, backends, colors, meta.get("peaks"))
    if img:
        parts.append(f"<h2>Roofline</h2><img alt='roofline' src='{img}'>")
    parts.append(_memory_html(frame, backends, colors))
    img = _first_call_plot(frame, colors)
    if img:
        parts.append(f"<h2>First call (JIT compilation)</h2><img alt='first call' src='{img}'>")
        fc = [[esc(r.case), r.direction, esc(r.backend), f"{r.first_call_s * 1e3:.1f} ms",
               f"{r.median_s * 1e3:.3f} ms"] for r in _first_call(frame).itertuples()]
        parts.append(_table(["case", "direction", "backend", "first call", "steady median"], fc))
    parts.append(_processes_html(frame))
    # verification
    refs = (frame[frame["reference"] != ""].groupby(KEY, sort=False)["reference"]
            .agg(lambda s: ", ".join(dict.fromkeys(s))).reindex(_keys(frame)).fillna("-"))
    checks = _cells(frame, _check_cell, backends)
    parts.append("<h2>Verification</h2><p>Each result was checked against a float64 reference "
                 "before timing; a cell is its worst error as a fraction of its tolerance. A "
                 "result outside its tolerance is FAILED and shown with no speed; one above half "
                 "of it, or all zeros where the reference is not, is MISTRUSTED.</p>")
    parts.append(_table(["case", "direction", "reference"] + backends,
                        [[esc(c), d, esc(refs[(c, d)]), *cells]
                         for (c, d), cells in checks.iterrows()]))
    bad = frame[frame["status"] != PASSED]
    parts.append("<h2>Failures, mistrusted, unimplemented, skipped and unavailable cases</h2>")
    parts.append(_table(["case", "direction", "backend", "status", "reason"],
                        [[esc(r.case), r.direction, esc(r.backend), _status(r.status),
                          esc(r.reason)] for r in bad.itertuples()]) if not bad.empty
                 else "<p>None: every case ran and passed verification.</p>")
    parts.append("<h2>Machine</h2><pre>" + esc(json.dumps(
        {"machine": meta.get("machine"), "peaks": meta.get("peaks"),
         "policy": meta.get("policy"), "cluster": meta.get("cluster")}, indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(run_dir, frame: pd.DataFrame, meta: dict, baseline: str | None = None) -> Path:
    path = Path(run_dir) / "report.html"
    files.write_text(path, render(frame, meta, baseline))
    return path
