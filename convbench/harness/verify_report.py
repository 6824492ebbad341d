"""The verification matrix: every case x direction against every backend, as a table."""
from __future__ import annotations

import warnings

import numpy as np

from convbench.backends import backend_names, get_backend
from convbench.cases import case_list, with_values
from convbench.harness import table
from convbench.ops import ops_of
from convbench.result import FAILED, MISTRUSTED, PASSED, UNAVAILABLE
from convbench.verify import Reference, check_backend

WIDTH = 17


def _cell(status: str, error: float) -> str:
    if status in (PASSED, MISTRUSTED, FAILED) and not np.isnan(error):
        return f"{status} {error:.0e}"
    return status


def _check_all(cases, names, dtype, seed) -> tuple[list, list]:
    """(results, labels) of every case x direction x backend."""
    results, labels = [], []
    for label, family, problem, *values in cases:
        values = values[0] if values else None
        for op in ops_of(family):
            if values and not set(values) & set(op.input_names):
                continue            # a direction none of the case's values reaches
            inputs = with_values(op.make_inputs(problem, np.random.default_rng(seed),
                                                np.dtype(dtype)), op.input_names, values)
            reference = Reference(op, problem, inputs)
            for name in names:
                results.append(check_backend(name, op, problem, dtype, inputs=inputs,
                                             reference=reference))
                labels.append(f"{label} [{op.direction}]")
    return results, labels


def run_matrix(cases: str, backends: list[str] | None, dtype: str, seed: int, echo) -> bool:
    """Print the matrix and the reasons; True when nothing FAILED."""
    names = backend_names() if backends is None else backends
    for n in names:
        get_backend(n)  # unknown names fail before any work, with the valid list
    # NaN and infinity are what the nonfinite cases test: no warnings about them (the warnings
    # filter too: the CUDA simulator computes in threads of its own, outside numpy's errstate)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results, labels = _check_all(case_list(cases, seed), names, dtype, seed)
    frame = table.to_frame(results).assign(label=labels)
    frame["cell"] = [_cell(s, e) for s, e in zip(frame["status"], frame["rel_error"])]
    rows = list(dict.fromkeys(labels))
    matrix = frame.pivot_table(index="label", columns="backend", values="cell",
                               aggfunc="first").reindex(index=rows, columns=names).fillna("")
    width = max(len(r) for r in rows) + 2
    echo(f"{'case [direction]':<{width}}" + "".join(f"{n:>{WIDTH}}" for n in names))
    for label, cells in matrix.iterrows():
        echo(f"{label:<{width}}" + "".join(f"{c:>{WIDTH}}" for c in cells))
    echo("")
    echo("the number: worst error relative to the size of the summed terms (tolerance: "
         "reduction length x unit roundoff)")
    for r in frame[frame["status"].isin((FAILED, MISTRUSTED))].itertuples():
        echo(f"{r.backend} on {r.label}: {r.status}: {r.reason}")
    others = frame[~frame["status"].isin((PASSED, FAILED, MISTRUSTED)) & (frame["reason"] != "")]
    reasons = others.assign(
        why=[r.split(": ", 1)[-1] if s == UNAVAILABLE else r
             for s, r in zip(others["status"], others["reason"])])
    for (backend, status), group in reasons.groupby(["backend", "status"], sort=False):
        for why in sorted(set(group["why"])):
            echo(f"{backend}: {status.lower()}: {why}")
    bad = int((frame["status"] == FAILED).sum())
    echo("all checks passed" if not bad else f"{bad} check(s) FAILED")
    return bad == 0
