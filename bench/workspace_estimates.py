"""Each backend's workspace_bytes against the scratch memory a call really allocates (NumPy's
allocations as tracemalloc sees them; compiled kernels' own per-task buffers and torch's allocator
are not visible to it), on a spread of problems. Prints one line per backend, op and problem:
estimate, measured peak beyond the outputs, and their ratio (below 1: an underestimate).

    python bench/workspace_estimates.py [--backends im2col,fft]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from convbench.backends import free_workspace, get_backend
from convbench.memory import traced_peak
from convbench.ops import (
    RNNProblem,
    conv2d_problem,
    conv_transpose2d_problem,
    ops_of,
    pool2d_problem,
)

PROBLEMS = [
    ("3x3 pad 1", "conv2d", conv2d_problem((4, 16, 28, 28), (32, 16, 3, 3), padding=1)),
    ("3x3 pad 1 bias", "conv2d", conv2d_problem((4, 16, 28, 28), (32, 16, 3, 3), padding=1,
                                                bias=True)),
    ("3x3 /2", "conv2d", conv2d_problem((4, 16, 28, 28), (32, 16, 3, 3), stride=2, padding=1)),
    ("3x3 small planes", "conv2d", conv2d_problem((8, 32, 7, 7), (32, 32, 3, 3), padding=1)),
    ("1x1", "conv2d", conv2d_problem((4, 32, 28, 28), (64, 32, 1, 1))),
    ("1x1 /2", "conv2d", conv2d_problem((4, 32, 28, 28), (64, 32, 1, 1), stride=2)),
    ("1x1 7x7", "conv2d", conv2d_problem((8, 64, 7, 7), (64, 64, 1, 1))),
    ("5x5 dil 2", "conv2d", conv2d_problem((2, 8, 30, 30), (16, 8, 5, 5), dilation=2, padding=4)),
    ("groups 4", "conv2d", conv2d_problem((4, 16, 20, 20), (16, 4, 3, 3), groups=4, padding=1)),
    ("depthwise /2", "conv2d", conv2d_problem((4, 32, 28, 28), (32, 1, 3, 3), groups=32,
                                              stride=2, padding=1)),
    ("7x7 /2 pad 3", "conv2d", conv2d_problem((2, 3, 64, 64), (16, 3, 7, 7), stride=2,
                                              padding=3)),
    ("max 3/2", "max_pool2d", pool2d_problem("max", (4, 16, 28, 28), kernel_size=3, stride=2,
                                             padding=1)),
    ("avg 2", "avg_pool2d", pool2d_problem("avg", (4, 16, 28, 28), kernel_size=2)),
    ("avg 3 ceil", "avg_pool2d", pool2d_problem("avg", (4, 16, 27, 27), kernel_size=3, stride=2,
                                                ceil_mode=True)),
    ("max pad (0,2)", "max_pool2d", pool2d_problem("max", (4, 16, 28, 28), kernel_size=3,
                                                   stride=2, padding=((0, 1), (1, 0)))),
    ("deconv /2 op1 bias", "conv_transpose2d",
     conv_transpose2d_problem((4, 16, 14, 14), (16, 8, 3, 3), stride=2, padding=1,
                              output_padding=1, bias=True)),
    ("deconv 3x3", "conv_transpose2d", conv_transpose2d_problem((4, 16, 14, 14), (16, 8, 3, 3),
                                                                padding=1)),
] + [(f"{cell} t16", cell, RNNProblem(cell, 16, 8, 64, 64)) for cell in ("rnn_tanh", "lstm",
                                                                         "gru")] + [
    ("gru reverse lbr0", "gru", RNNProblem("gru", 16, 8, 64, 64, reverse=True,
                                           linear_before_reset=False)),
]


def measure(backend, op, p, dtype=np.float32) -> tuple[int, int]:
    """(estimate, measured bytes beyond the outputs) of one call after a free workspace."""
    inputs = op.make_inputs(p, np.random.default_rng(0), np.dtype(dtype))
    backend.run(op, p, *inputs)                     # compile, settle lazy state
    free_workspace()
    held = []
    peak = traced_peak(lambda: held.append(backend.run(op, p, *inputs)))
    outs = held[0] if isinstance(held[0], tuple) else (held[0],)
    out_bytes = sum(o.nbytes for o in outs if o is not None)
    return backend.scratch_bytes(op, p, np.dtype(dtype)), max(0, peak - out_bytes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="naive,numpy,im2col,fft,winograd-f2,winograd-f4,"
                                          "numba-cpu")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    worst = {}
    for name in a.backends.split(","):
        b = get_backend(name)
        for label, family, p in PROBLEMS:
            for op in ops_of(family):
                try:
                    b.check(op, p, np.float32)
                except Exception:  # noqa: BLE001 - unsupported here
                    continue
                if name == "naive" and op.flops(p) > 5e7:
                    continue                        # the loops take minutes on these
                est, got = measure(b, op, p)
                ratio = est / got if got else float("inf")
                worst[name] = min(worst.get(name, ratio), ratio)
                print(f"{name:<12} {op.name:<22} {label:<18} estimate {est:>12,} measured "
                      f"{got:>12,}  ratio {ratio:6.2f}{'  UNDER' if ratio < 1 else ''}")
    print("lowest ratio per backend:", {k: round(v, 2) for k, v in worst.items()})


if __name__ == "__main__":
    main()
