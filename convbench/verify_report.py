"""The verification matrix: every case x direction against every backend, as a table."""
from __future__ import annotations

import numpy as np

from convbench.backends import backend_names
from convbench.cases import case_list
from convbench.ops import ops_of
from convbench.verify import ERROR, FAILED, PASSED, check_backend, reference_outputs

_SHORT = {PASSED: "PASS", FAILED: "FAIL", "UNSUPPORTED": "unsupp.", "UNAVAILABLE": "n/a",
          ERROR: "ERROR"}


def run_matrix(cases: str, backends: list[str] | None, dtype: str, seed: int, echo) -> bool:
    """Print the matrix and the reasons; True when nothing FAILED or raised."""
    from convbench.backends import get_backend
    names = backends or backend_names()
    for n in names:
        get_backend(n)  # unknown names fail before any work, with the valid list
    rows, notes, bad = [], {}, 0
    for label, family, problem in case_list(cases, seed):
        for op in ops_of(family):
            inputs = op.make_inputs(problem, np.random.default_rng(seed), np.dtype(dtype))
            ref = reference_outputs(op, problem, inputs)
            cells = []
            for name in names:
                c = check_backend(name, op, problem, dtype, inputs=inputs, ref_outputs=ref)
                cell = _SHORT[c.status]
                if c.status in (PASSED, FAILED):
                    cell += f" {c.error:.0e}"
                if c.status in (FAILED, ERROR):
                    bad += 1
                    notes[f"{name} on {label} {op.direction}"] = c.reason
                elif c.reason:
                    notes.setdefault(f"{name}: {c.status.lower()}", set()).add(
                        c.reason.split(": ", 1)[-1] if c.status == "UNAVAILABLE" else c.reason)
                cells.append(cell)
            rows.append((f"{label} [{op.direction}]", cells))
    width = max(len(r[0]) for r in rows) + 2
    echo(f"{'case [direction]':<{width}}" + "".join(f"{n:>14}" for n in names))
    for label, cells in rows:
        echo(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
    echo("")
    echo("PASS e: worst error relative to the size of the summed terms (tolerance: "
         "reduction length x unit roundoff)")
    for key, reason in notes.items():
        reasons = sorted(reason) if isinstance(reason, set) else [reason]
        for r in reasons:
            echo(f"{key}: {r}")
    echo(f"{'all checks passed' if not bad else f'{bad} check(s) FAILED or raised'}")
    return bad == 0
