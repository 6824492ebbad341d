"""Does convbench's speed depend on what was imported first? The same benchmark in fresh processes,
one per import order (NumPy first, torch first, convbench first), side by side.

    python bench/import_order.py [--threads 2] [--repeats 9] [--small]

Each child process imports its first module, then convbench, and times numba-cpu's LSTM
(T=64, N=16, H=256, forward and backward) against torch.nn.LSTM (forward), and im2col-numba on a
1x1 and a strided 3x3 layer, interleaved (A B A B ...), best of the rounds, with a short pause
before each timed call so that one library's idle worker threads do not spin into the next one's
call. It also writes its outputs (`--child ORDER --out FILE.npz`), which tests/test_import_order.py
compares across orders: equal results whatever the order.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ORDERS = ("numpy", "torch", "convbench")


def child(order: str, out: str | None, threads: int, repeats: int, small: bool, settle: float):
    if order == "numpy":
        import numpy  # noqa: F401
    elif order == "torch":
        import torch  # noqa: F401
    import numpy as np

    import convbench as cb
    from convbench.threads import set_threads
    set_threads(threads)
    T, N, H = (6, 3, 20) if small else (64, 16, 256)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, H)).astype(np.float32)
    h0 = (0.1 * rng.standard_normal((N, H))).astype(np.float32)
    c0 = (0.1 * rng.standard_normal((N, H))).astype(np.float32)
    w_ih, w_hh = ((rng.standard_normal((4 * H, H)) / np.sqrt(H)).astype(np.float32)
                  for _ in range(2))
    b_ih, b_hh = ((0.1 * rng.standard_normal(4 * H)).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((T, N, H)).astype(np.float32)
    conv = [((2, 16, 9, 9), (24, 16, 1, 1), 1, 0), ((2, 8, 11, 11), (16, 8, 3, 3), 2, 1)]
    if not small:
        conv = [((8, 256, 56, 56), (64, 256, 1, 1), 1, 0), ((8, 128, 56, 56), (128, 128, 3, 3),
                                                            2, 1)]
    xs = [rng.standard_normal(xs).astype(np.float32) for xs, _, _, _ in conv]
    ws = [rng.standard_normal(wsh).astype(np.float32) for _, wsh, _, _ in conv]

    def lstm_fwd():
        return cb.lstm(x, (h0, c0), w_ih, w_hh, b_ih, b_hh, backend="numba-cpu")

    def lstm_bwd():
        return cb.lstm_backward(dy, None, x, (h0, c0), w_ih, w_hh, b_ih, b_hh,
                                backend="numba-cpu")

    from convbench.backends import backend_names
    # an older convbench (for a before/after comparison) has no im2col-numba
    conv_backend = "im2col-numba" if "im2col-numba" in backend_names() else "im2col"

    def convs():
        return [cb.conv2d(xi, wi, stride=s, padding=p, backend=conv_backend)
                for xi, wi, (_, _, s, p) in zip(xs, ws, conv)]

    y, (hT, cT) = lstm_fwd()
    dx, (dh0, dc0), dwi, dwh, dbi, dbh = lstm_bwd()
    results = {"y": y, "hT": hT, "cT": cT, "dx": dx, "dh0": dh0, "dc0": dc0, "dw_ih": dwi,
               "dw_hh": dwh, "db_ih": dbi, "db_hh": dbh}
    results.update({f"conv{i}": c for i, c in enumerate(convs())})
    if out:
        np.savez(out, **results)
    if not repeats:
        return
    lstm_flops = 2 * T * N * 4 * H * (H + H)
    work = {"lstm fwd (numba-cpu)": (lstm_fwd, lstm_flops),
            "lstm bwd (numba-cpu)": (lstm_bwd, 2 * lstm_flops)}
    from convbench.ops import conv2d_problem, get_op
    conv_flops = sum(get_op("conv2d:fwd").flops(conv2d_problem(xsh, wsh, stride=st, padding=pd))
                     for xsh, wsh, st, pd in conv)
    work[f"2 conv layers ({conv_backend})"] = (convs, conv_flops)
    try:
        import torch  # lazy: the peer, optional
        torch.set_num_threads(threads)
        m = torch.nn.LSTM(H, H)
        tx = torch.from_numpy(x)

        def torch_fwd():
            with torch.no_grad():
                m(tx)
        work["lstm fwd (torch)"] = (torch_fwd, lstm_flops)
    except ImportError:
        pass
    for fn, _ in work.values():
        fn()
    best = dict.fromkeys(work, float("inf"))
    for _ in range(repeats):
        for name, (fn, _) in work.items():
            time.sleep(settle)
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(json.dumps({name: work[name][1] / best[name] / 1e9 for name in work}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--settle", type=float, default=0.05)
    ap.add_argument("--small", action="store_true", help="tiny shapes (for tests)")
    ap.add_argument("--child", choices=ORDERS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.out, args.threads, args.repeats, args.small, args.settle)
        return
    rows = {}
    for order in ORDERS:
        cmd = [sys.executable, __file__, "--child", order, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--settle", str(args.settle)]
        if args.small:
            cmd.append("--small")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        rows[order] = json.loads(out.stdout.strip().splitlines()[-1])
    names = list(rows[ORDERS[0]])
    print(f"GFLOP/s, best of {args.repeats}, {args.threads} threads; columns: first import")
    print(f"{'':32}" + "".join(f"{o + ' first':>18}" for o in ORDERS))
    for name in names:
        print(f"{name:32}" + "".join(f"{rows[o].get(name, float('nan')):18.1f}" for o in ORDERS))
    for o in ORDERS:
        r = rows[o]
        if "lstm fwd (torch)" in r:
            print(f"{o} first: numba-cpu LSTM forward / torch = "
                  f"{r['lstm fwd (numba-cpu)'] / r['lstm fwd (torch)']:.2f}x")


if __name__ == "__main__":
    main()
