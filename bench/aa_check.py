"""A/A check of `convbench compare` (issue #20): false alarms when nothing changed, before and
after the between-process rule, with K = 1 and K = 3 processes; the wall-time cost of K = 3; and
a 25% slowdown found.

  1. `--pairs` pairs of quick-suite runs of the same code, one after the other, for K = 1 and for
     K = 3 (`run --processes 3`). Each pair is judged by the former rule (a Mann-Whitney U test
     on the raw samples at alpha 0.01 and a 5% threshold, as `compare` did before #20) and by the
     new one (`compare`'s defaults). Every alarm is false: the code did not change.
  2. The wall time of each run, K = 3 against K = 1.
  3. A user backend (`--backend-file`, written to the output folder) that runs im2col and then
     waits a quarter of the time im2col took, so that it is 25% slower than the same backend
     without the wait (AA_SLOWDOWN=0). With K = 3 the new rule should find it on every case;
     with K = 1 its interval against the 5% noise floor needs B/A above about 1.26, so a 25%
     slowdown is found only where the measured ratio comes out above that.
  4. `compare --self-check` of one run with 2K processes: the false alarms it predicts for runs
     of K processes, beside those the pairs of step 1 gave.

Run from the repository root (prints a summary, writes OUT/aa_check.json and the runs):

    PYTHONPATH=. python bench/aa_check.py --out runs/aa_check --pairs 3 --batch 2 --budget 0.25
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from convbench.harness import compare as cmp
from convbench.harness.runner import load_run

SLOW_BACKEND = '''"""im2col, then a wait of AA_SLOWDOWN x the time im2col took (aa_check.py)."""
import os
import time

import numpy as np

import convbench as cb

SLOWDOWN = float(os.environ.get("AA_SLOWDOWN", "0"))


class SlowIm2col(cb.Backend):
    name = "aa-im2col"
    description = "im2col, then a wait of AA_SLOWDOWN times its own runtime"
    dtypes = (np.float32,)

    def conv2d_fwd(self, p, x, w, b):
        start = time.perf_counter()
        y = cb.conv2d(x, w, b, stride=p.stride, padding=p.padding, dilation=p.dilation,
                      groups=p.groups, backend="im2col")
        until = time.perf_counter() + SLOWDOWN * (time.perf_counter() - start)
        while time.perf_counter() < until:      # spin: sleep's resolution is too coarse here
            pass
        return y
'''


def old_rule(a, b, threshold=0.05, alpha=0.01) -> str:
    """compare's verdict before #20: Mann-Whitney U on the raw samples, and the medians apart by
    more than the threshold."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ratio = float(np.median(b) / np.median(a))
    p = 1.0 if len(a) < 2 or len(b) < 2 else float(mannwhitneyu(a, b).pvalue)
    if p < alpha and abs(ratio - 1) > threshold:
        return "slower" if ratio > 1 else "faster"
    return "same"


def run(out: Path, args, processes: int, backends: str, extra=(), env=None) -> dict:
    """One `convbench run` into `out`; returns its meta."""
    cmd = [sys.executable, "-m", "convbench.cli", "run", "--suite", args.suite,
           "--backends", backends, "--batch", str(args.batch), "--budget", str(args.budget),
           "--processes", str(processes), "--no-peaks", "--out", str(out), *extra]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    print(f"  {out.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return json.loads((out / "results.json").read_text())["meta"]


def judge(dir_a: Path, dir_b: Path) -> dict:
    """Verdicts of both rules on every row timed in both runs, and the new rule's ratios."""
    rows_a, _ = load_run(dir_a)
    rows_b, _ = load_run(dir_b)
    lines = cmp.compare_frames(rows_a, rows_b)
    key = ["case", "descriptor", "direction", "backend"]
    both = rows_a.merge(rows_b, on=key, suffixes=("_a", "_b"))
    both = both[both["samples_s_a"].map(len).gt(0) & both["samples_s_b"].map(len).gt(0)]
    old = [old_rule(a, b) for a, b in zip(both["samples_s_a"], both["samples_s_b"])]
    timed = lines.dropna(subset=["ratio"])
    return {"rows": len(timed),
            "old": {v: old.count(v) for v in ("slower", "faster")},
            "new": {v: int((timed["verdict"] == v).sum()) for v in ("slower", "faster")},
            "old_alarms": [f"{c} [{d}] {b}: {v}" for (c, d, b), v in
                           zip(both[["case", "direction", "backend"]].itertuples(index=False),
                               old) if v != "same"],
            "new_alarms": [f"{r.case} [{r.direction}] {r.backend}: {r.verdict} {r.ratio:.3f} "
                           f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
                           for r in timed.itertuples() if r.verdict != "same"],
            "ratios": [round(float(v), 4) for v in timed["ratio"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/aa_check")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--backends", default="im2col,numba-cpu,numpy,torch")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--processes", type=int, default=3, help="K of the multi-process runs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"settings": vars(args), "pairs": {}, "wall_s": {}, "slowdown": {}}
    ks = (1, args.processes)
    for k in ks:
        result["pairs"][k], result["wall_s"][k] = [], []
    print(f"A/A pairs ({args.pairs} per K, suite {args.suite}, backends {args.backends})")
    for i in range(args.pairs):
        for k in ks:          # the two K's alternate, so that both see the same machine states
            dirs = [out / f"k{k}-pair{i}-{side}" for side in "ab"]
            for d in dirs:
                result["wall_s"][k].append(run(d, args, k, args.backends)["wall_s"])
            result["pairs"][k].append(judge(*dirs))
    spreads = [s for d in out.glob(f"k{args.processes}-pair*")
               for s in load_run(d)[0]["process_spread"].dropna()]
    print("25% slowdown (user backend aa-im2col, AA_SLOWDOWN=0 then 0.25)")
    plugin = out / "aa_slow_backend.py"
    plugin.write_text(SLOW_BACKEND)
    for k in ks:
        dirs = [out / f"k{k}-slowdown-{name}" for name in ("base", "slow")]
        for d, slowdown in zip(dirs, ("0", "0.25")):
            run(d, args, k, "aa-im2col", ["--backend-file", str(plugin)],
                {"AA_SLOWDOWN": slowdown})
        result["slowdown"][k] = judge(*dirs)
    print(f"self-check (one run, {2 * args.processes} processes)")
    d = out / f"k{2 * args.processes}-self-check"
    run(d, args, 2 * args.processes, args.backends)
    check = cmp.self_check(load_run(d)[0])
    result["self_check"] = {
        "rows": check.rows, "expected_regressions": check.expected_regressions,
        "expected_improvements": check.expected_improvements, "spread": list(check.spread),
        "alarms": {v: int((check.lines["verdict"] == v).sum()) for v in ("slower", "faster")}}

    print("\nA/A false alarms (every alarm is false), rows compared per pair in brackets:")
    print(f"{'K':>3}  {'pair':>4}  {'old rule: slower/faster':>24}  "
          f"{'new rule: slower/faster':>24}")
    totals = {}
    for k in ks:
        for i, p in enumerate(result["pairs"][k]):
            print(f"{k:>3}  {i:>4}  {p['old']['slower']:>14}/{p['old']['faster']:<9}"
                  f"{p['new']['slower']:>15}/{p['new']['faster']:<9} ({p['rows']})")
        totals[k] = {rule: sum(p[rule]["slower"] + p[rule]["faster"] for p in result["pairs"][k])
                     for rule in ("old", "new")}
        rows = sum(p["rows"] for p in result["pairs"][k])
        print(f"  K={k}: old rule {totals[k]['old']} false alarms, new rule {totals[k]['new']}, "
              f"in {rows} comparisons")
    result["totals"] = totals
    w1, wk = np.mean(result["wall_s"][1]), np.mean(result["wall_s"][args.processes])
    result["wall_cost"] = wk / w1
    print(f"wall time per run: K=1 {w1:.1f} s, K={args.processes} {wk:.1f} s "
          f"({wk / w1:.2f}x)")
    if spreads:
        result["process_spread"] = {"median": float(np.median(spreads)),
                                    "p90": float(np.percentile(spreads, 90)),
                                    "max": float(np.max(spreads)), "rows": len(spreads)}
        print(f"between-process spread (std of log process medians) over {len(spreads)} rows: "
              f"median {np.median(spreads):.1%}, 90th percentile "
              f"{np.percentile(spreads, 90):.1%}, largest {np.max(spreads):.1%}")
    for k in ks:
        s = result["slowdown"][k]
        print(f"25% slowdown, K={k}: new rule finds {s['new']['slower']} of {s['rows']} cases "
              f"(old rule {s['old']['slower']}); ratios {s['ratios']}")
    sc = result["self_check"]
    print(f"self-check ({2 * args.processes} processes split in halves of {args.processes}): "
          f"{sc['alarms']['slower']} false regressions and {sc['alarms']['faster']} false "
          f"improvements in {sc['rows']} comparisons; expected per comparison over every split: "
          f"{sc['expected_regressions']:.2f} regressions, {sc['expected_improvements']:.2f} "
          f"improvements; spread median {sc['spread'][0]:.1%}, 90th percentile "
          f"{sc['spread'][1]:.1%}")
    (out / "aa_check.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'aa_check.json'}")


if __name__ == "__main__":
    main()
