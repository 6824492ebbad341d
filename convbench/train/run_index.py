"""A training run's index page, DIR/index.html: the summary, the learning curves and, for every
inspection found in DIR or a folder directly below it (an inspect.json), its tables and figures.
Images are linked by paths relative to the page, so the folder can be moved as a whole.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from convbench import files

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.caption{color:#555;font-size:90%;max-width:60em}"""


def _table(head, rows) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>")
    return "\n".join(out) + "</table>"


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def _summary_section(summary: dict) -> list[str]:
    cfg = summary.get("config", {})
    rows = [("data", cfg.get("data")), ("model", cfg.get("model")),
            ("optimizer", f"{cfg.get('optimizer')} lr {cfg.get('lr')}"),
            ("test accuracy", _fmt(summary.get("test_accuracy"), ".4f")),
            ("best epoch", f"{summary.get('best_epoch')} of {summary.get('epochs_run')}"),
            ("seconds", _fmt(summary.get("seconds"), ".1f"))]
    return ["<h2>Run</h2>", _table(("", "value"), rows)]


def _inspect_section(info: dict, prefix: str) -> list[str]:
    parts = [f"<h2>Inspection of {html.escape(Path(info['checkpoint']).name)}</h2>",
             f"<p class=caption>{info['model']} on {info['data']}, kernels from backend "
             f"{html.escape(info['backend'])}; {info['test_images']} test images.</p>"]
    parts.append("<h3>Parameters: a conv layer against a dense layer over the same sizes</h3>")
    parts.append(_table(("layer", "input", "output", "parameters", "dense layer", "dense / conv"),
                        [(r["layer"], "x".join(map(str, r["in"])), "x".join(map(str, r["out"])),
                          f"{r['params']:,}", f"{r['dense_params']:,}",
                          f"{r['dense_over_conv']:,.0f}x") for r in info["params"]]))
    for fig in info["figures"]:
        src = html.escape(quote(prefix + fig["file"]))
        parts.append(f"<h3>{html.escape(fig['title'])}</h3>")
        parts.append(f"<p class=caption>{html.escape(fig['caption'])}</p>")
        parts.append(f'<img src="{src}" alt="{html.escape(fig["title"])}">')
        if fig["file"] == "filters.png" and info.get("filters"):
            best = info["filter_best_counts"]
            sims = [m["similarity"] for m in info["filters"]]
            parts.append(_table(("classic filter", "filters matching it best", "their mean r"),
                                [(n, c, _fmt(_mean([m["similarity"] for m in info["filters"]
                                                    if m["best"] == n]), ".2f"))
                                 for n, c in best.items()]))
            parts.append(f"<p class=caption>r over all {len(sims)} filters: median "
                         f"{_fmt(sorted(sims)[len(sims) // 2], '.2f')}, max {max(sims):.2f}.</p>")
        if fig["file"] == "maximising.png":
            parts.append(_table(("layer", "channels", "median reached / test mean",
                                 "median reached / test max"),
                                [(lay["layer"], len(lay["images"]),
                                  _fmt(lay["median_ratio_to_mean"], ".2f"),
                                  _fmt(lay["median_ratio_to_max"], ".2f"))
                                 for lay in info["maximising"]["layers"]]))
    return parts


def _mean(v):
    return sum(v) / len(v) if v else None


def write_index(run_dir) -> Path:
    """(Re)write run_dir/index.html from the files in it; returns its path."""
    run = Path(run_dir)
    parts = [f"<h1>convbench training run: {html.escape(run.name)}</h1>"]
    if (run / "summary.json").exists():
        parts += _summary_section(json.loads((run / "summary.json").read_text()))
    if (run / "curves.png").exists():
        parts += ["<h2>Learning curves</h2>", '<img src="curves.png" alt="learning curves">']
    found = [run / "inspect.json"] + sorted(run.glob("*/inspect.json"))
    for path in found:
        if path.exists():
            prefix = "" if path.parent == run else path.parent.name + "/"
            parts += _inspect_section(json.loads(path.read_text()), prefix)
    page = ("<!DOCTYPE html><html><head><meta charset=utf-8><title>convbench run "
            f"{html.escape(run.name)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    return files.write_text(run / "index.html", page)
