"""numba-cpu's direct convolution against torch, per layer and direction, with its stages.

    PYTHONPATH=. python bench/direct_conv.py [--suite FILE|resnet50-3x3] [--rounds 3]
        [--directions fwd,bwd-data,bwd-weights] [--threads 2] [--uncached]

For each layer and direction: GFLOP/s of torch and of convbench.kernels.conv (the numba-cpu
kernels), % of the FMA peak measured in the same process (before and after), the ratio to
torch, and the direct convolution's stage times (NCHW -> blocked, weights, kernel, blocked ->
NCHW). Each figure is the best of `--rounds` rounds, the two timed in turns (A B A B) within a
round. --uncached re-lays the weights out on every call (as in training, where they change).

--clock cpu times by the process's CPU time instead of the wall clock, and reports GFLOP per
CPU-second times the thread count: what the cores do while they run, unaffected by waiting for
the CPU on a machine other processes keep busy (threads that spin while waiting count against
it). The peak is measured the usual way (best of several wall-clock runs).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import convbench as cb
from convbench.harness.suites import resnet50
from convbench.kernels import conv as direct
from convbench.kernels import fma_peak
from convbench.ops.descriptor import parse


def _layers(suite: str):
    if suite == "resnet50-3x3":
        return [c.problem for c in resnet50(8) if c.problem.R == 3]
    return [parse(line.strip())[0] for line in open(suite)
            if line.strip() and not line.startswith("descriptor")]


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter
_scale = 1.0


def _best(fn, reps: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = _clock()
        fn()
        best = min(best, _clock() - t0)
    return best / _scale


def _calls(torch, p, d, x, w, dy, kw):
    """(torch's call, the direct convolution's call taking a stages dict) for direction d."""
    xt, wt, dyt = (torch.from_numpy(a) for a in (x, w, dy))
    if d == "fwd":
        return (lambda: torch.nn.functional.conv2d(xt, wt, **kw),
                lambda st=None: direct.forward(p, x, w, stages=st))
    if d == "bwd-data":
        return (lambda: torch.nn.grad.conv2d_input(xt.shape, wt, dyt, **kw),
                lambda st=None: direct.input_grad(p, dy, w, stages=st))
    return (lambda: torch.nn.grad.conv2d_weight(xt, wt.shape, dyt, **kw),
            lambda st=None: direct.weight_grad(p, dy, x, stages=st))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="resnet50-3x3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--directions", default="fwd,bwd-data,bwd-weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--uncached", action="store_true")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    args = ap.parse_args()
    global _clock, _scale
    _clock = CLOCK[args.clock]
    _scale = args.threads if args.clock == "cpu" else 1.0
    import torch  # heavy: the peer
    cb.set_threads(args.threads)
    direct.CACHE.enabled = not args.uncached
    peak0 = fma_peak(threads=args.threads).gflops
    print(f"FMA peak before: {peak0:.0f} GFLOP/s ({args.threads} threads)")
    rng = np.random.default_rng(0)
    rows = []
    for p in _layers(args.suite):
        x = rng.standard_normal(p.x_shape).astype(np.float32)
        w = rng.standard_normal(p.w_shape).astype(np.float32)
        dy = rng.standard_normal(p.y_shape).astype(np.float32)
        pad = p.padding[0][0]
        kw = dict(stride=p.stride, padding=pad, dilation=p.dilation, groups=p.groups)
        for d in args.directions.split(","):
            tor, ours = _calls(torch, p, d, x, w, dy, kw)
            tt, to = [], []
            for _ in range(args.rounds):
                tt.append(_best(tor))
                to.append(_best(ours))
            stages: dict = {}
            for _ in range(3):
                ours(stages)      # stages: wall-clock seconds
            fl = p.flops()
            rows.append((p.descriptor(), d, fl / min(tt) / 1e9, fl / min(to) / 1e9,
                         min(tt) / min(to), {k: v / 3 * 1e3 for k, v in stages.items()}))
            r = rows[-1]
            st = " ".join(f"{k} {v:.2f}" for k, v in r[5].items())
            print(f"{r[0]:30s} {d:11s} torch {r[2]:6.1f} direct {r[3]:6.1f} "
                  f"({100 * r[3] / peak0:3.0f}% of peak) x{r[4]:.2f}  ms: {st}", flush=True)
    peak1 = fma_peak(threads=args.threads).gflops
    print(f"FMA peak after: {peak1:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
