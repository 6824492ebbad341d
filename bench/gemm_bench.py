"""convbench's Numba GEMM against NumPy's BLAS and torch.matmul, side by side in one process, each
as a percentage of the fp32 FMA peak measured in the same run (before and after).

    python bench/gemm_bench.py [--threads 2] [--repeats 7] [--shapes 2048x2048x2048,64x25088x576]
    python bench/gemm_bench.py --cpu-time      # one thread, timed by its CPU time

Shapes are M x N x K: 2048^3, and the GEMMs of ResNet-50's 3x3 layers at batch 8 as im2col runs
them (M output channels, N = batch x positions, K = input channels x 9). Every product is checked
against float64 first. Each round times convbench, NumPy and torch once each, in that order
(interleaved, so that a change in the machine's load hits all three), after a pause that lets
the previous library's worker threads stop spinning (OpenBLAS, OpenMP and Numba's pools busy-wait
for a while after each call and would otherwise take cores from the next one); a figure is the
best of the rounds. The peak is the best of its measurements before and after; "% peak" divides
by it.

On a shared machine wall-clock figures swing with the other processes' load; `--cpu-time` times
one thread by the CPU time it was given (time.thread_time), which the load does not inflate
(cache and memory contention still count), so its percentages of the one-thread peak are the
figures to compare across runs.
"""
import argparse
import platform
import time

import numpy as np

from convbench.kernels import blas_info, default_params, fma_peak, gemm
from convbench.threads import set_threads

SHAPES = ((2048, 2048, 2048), (64, 25088, 576), (128, 6272, 1152), (256, 1568, 2304),
          (512, 3136, 4608), (512, 392, 4608))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check(out, a, b):
    ref = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    bound = (a.shape[1] + 2) * np.finfo(np.float32).eps / 2 * scale
    if not np.all(np.abs(out - ref) <= bound):
        raise SystemExit(f"convbench gemm is WRONG on {a.shape} @ {b.shape}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="rounds per shape (best is kept)")
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread, timed by its CPU time (robust to other processes' load)")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds of pause before each timed call (idle spinning thread pools)")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    clock = time.perf_counter
    if args.cpu_time:
        args.threads, clock = 1, time.thread_time

    torch = None
    if not args.no_torch:
        try:
            import torch  # lazy: optional peer, slow to import
        except ImportError:
            torch = None
    set_threads(args.threads)

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in ((64, 64), (64, 64)))
    t0 = time.perf_counter()
    gemm(a, b)
    first = time.perf_counter() - t0

    before = fma_peak(threads=args.threads, seconds=0.2, clock=clock)
    info = blas_info()
    print(f"CPU: {cpu_model()}; ISA in use: {before.isa}, {before.vector_bits}-bit vectors; "
          f"threads: {args.threads}")
    forced = f"; forced by {info['coretype_var']}={info['coretype_env']}" if info["forced"] else ""
    narrower = "; NARROWER than the CPU" if info["narrower"] else ""
    print(f"BLAS: {info['internal_api']} {info['version']}, core type {info['architecture']} "
          f"({info['blas_vector_bits']}-bit){forced}{narrower}")
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"first convbench gemm call (compile or cache load): {first:.2f} s")
    print(f"FMA peak before: {before.gflops:.0f} GFLOP/s ({before.gflops_one_thread:.0f} on one "
          f"thread)")

    rows = []
    for m, n, k in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        gemm(a, b, c)
        check(c, a, b)
        contenders = {"convbench": lambda a=a, b=b, c=c: gemm(a, b, c),
                      "numpy": lambda a=a, b=b, c=c: np.matmul(a, b, out=c)}
        if torch is not None:
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
            contenders["torch"] = lambda ta=ta, tb=tb, tc=tc: torch.matmul(ta, tb, out=tc)
        for f in contenders.values():
            f()
        best = {name: float("inf") for name in contenders}
        for _ in range(args.repeats):
            for name, f in contenders.items():
                time.sleep(args.settle)
                t0 = clock()
                f()
                best[name] = min(best[name], clock() - t0)
        rows.append(((m, n, k), {name: 2 * m * n * k / t / 1e9 for name, t in best.items()}))

    after = fma_peak(threads=args.threads, seconds=0.2, clock=clock)
    peak = max(before.gflops, after.gflops)
    print(f"FMA peak after: {after.gflops:.0f} GFLOP/s; % peak below uses {peak:.0f}\n")
    names = list(rows[0][1])
    head = f"{'M x N x K':>20} {'tile':>6}" + "".join(f" {n + ' GF/s':>15} {'%peak':>6}"
                                                      for n in names)
    head += "".join(f" {'vs ' + n:>9}" for n in names[1:])
    print(head)
    for (m, n, k), g in rows:
        p = default_params(m, n, k)
        line = f"{f'{m}x{n}x{k}':>20} {f'{p.mr}x{p.nr}':>6}"
        line += "".join(f" {g[name]:15.0f} {100 * g[name] / peak:5.0f}%" for name in names)
        line += "".join(f" {g['convbench'] / g[name]:8.2f}x" for name in names[1:])
        print(line)


if __name__ == "__main__":
    main()
