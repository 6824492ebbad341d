#!/usr/bin/env python3
"""The GPU half of convbench in one run: verify every numba-cuda kernel, then time it against cuDNN.

On the device machine, from the copied working tree, on the image's own packages:

    PYTHONPATH=. PYTHONUNBUFFERED=1 python3 bench/gpu_check.py

Rehearsal on Numba's CUDA simulator (same code paths, tiny shapes, no torch CUDA):

    python bench/gpu_check.py --sim

Steps, each written to $OUT/gpu_check.json as soon as it is done (OUT defaults to ./out), so a run
cut short keeps what it finished:
  1. the environment (versions, device, multiprocessors);
  2. every kernel on convbench's small case lists against the float64 reference (all conv
     parameters, depthwise, pooling edge cases, every RNN cell forward and backward);
  3. the measured shapes with the default tiles: ResNet-50's convolutions at N=32 in all three
     directions, max pooling 3x3/2 on (32, 64, 112, 112), an LSTM with T=100, N=32, H=1024; each
     verified against a float64 reference (torch float64 on the GPU for the convolutions,
     convbench's own reference for pooling and the LSTM), then timed with CUDA events against
     torch's cuDNN in float32 with TF32 off;
  4. a sweep of the tile shapes per shape, time-boxed, each variant verified before it is timed;
  5. the registers, local memory and shared memory of every compiled kernel.
The table printed last is the summary: per shape the best numba-cuda time, cuDNN's, and the ratio.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import weakref
from importlib.metadata import version

T0 = time.monotonic()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", "--tiny", dest="sim", action="store_true",
                    help="rehearse on Numba's CUDA simulator with tiny shapes (no torch CUDA)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds from start after which the tile sweep stops (default 330 on a "
                         "GPU, 25 with --sim)")
    ap.add_argument("--numba-allocator", action="store_true",
                    help="leave numba-cuda on its own allocator (cudaMalloc per array)")
    ap.add_argument("--out", default=os.environ.get("OUT", "out"),
                    help="folder for gpu_check.json (default $OUT, else ./out)")
    return ap.parse_args(argv)


ARGS = parse_args()
if ARGS.sim:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
elif not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    # where numba-cuda looks for NVVM and libdevice when no pip wheel provides them
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

# this working tree's convbench, whatever else is installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the imports below come after the simulator switch and the path above, which they depend on
import numba  # noqa: E402
import numpy as np  # noqa: E402

from convbench.backends import get_backend, numba_cuda  # noqa: E402
from convbench.backends.numba_cuda import GPU_CONV, GPU_GEMM, GPU_STEP, SIM, Tiles  # noqa: E402
from convbench.cases import (  # noqa: E402
    conv_edge_cases,
    pool_edge_cases,
    random_conv_cases,
    rnn_edge_cases,
)
from convbench.harness.suites import resnet50  # noqa: E402
from convbench.ops import get_op, ops_of  # noqa: E402
from convbench.ops.descriptor import parse  # noqa: E402
from convbench.result import FAILED, MISTRUSTED, PASSED, WITHIN_TOLERANCE  # noqa: E402
from convbench.verify import Reference, check_backend, tolerance  # noqa: E402

BUDGET = ARGS.budget if ARGS.budget is not None else (25.0 if ARGS.sim else 330.0)
OUT = os.path.abspath(ARGS.out)
RESULT: dict = {"script": "bench/gpu_check.py", "mode": "simulator" if ARGS.sim else "gpu",
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}, "notes": [
                    ("times are medians of CUDA-event timings of one op call, outputs allocated "
                     "inside the call (both sides through torch's caching allocator)"),
                    ("numba-cuda's LSTM backward recomputes the forward (the op takes the "
                     "forward's inputs); its cuDNN time is forward plus backward through autograd"),
                    ("max pooling's cuDNN-side backward is aten.max_pool2d_with_indices_backward "
                     "given the forward's indices; numba-cuda's finds the arg-max itself"),
                    "speed_vs_cudnn = cuDNN time / numba-cuda time (above 1: numba-cuda faster)"]}


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def save() -> None:
    os.makedirs(OUT, exist_ok=True)
    RESULT["elapsed_s"] = round(time.monotonic() - T0, 2)
    path = os.path.join(OUT, "gpu_check.json")
    with open(path + ".tmp", "w") as f:
        json.dump(RESULT, f, indent=1, default=_jsonable)
    os.replace(path + ".tmp", path)


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Tiles):
        return str(v)
    return str(v)


def _num(v):
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


BACKEND = get_backend("numba-cuda")
CUDA = None          # numba.cuda, once the backend imported it
TORCH = None         # torch with CUDA, GPU mode only


# --- 1. environment -------------------------------------------------------------------------------
def environment() -> dict:
    global CUDA, TORCH
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "numpy": np.__version__, "numba": numba.__version__,
           "has_np_row_stack": hasattr(np, "row_stack")}
    try:
        env["numba_cuda"] = version("numba-cuda")
    except Exception as e:  # noqa: BLE001 - package metadata may be missing in a copied tree
        env["numba_cuda"] = f"unknown ({e})"
    CUDA = numba_cuda.CUDA.load()
    if not ARGS.sim and not ARGS.numba_allocator:
        env["allocator"] = use_torch_allocator()
    reason = BACKEND.unavailable_reason()
    env["numba_cuda_available"] = reason or "yes"
    if reason:
        raise SystemExit(f"numba-cuda cannot run: {reason}")
    env["np_row_stack_after_import"] = hasattr(np, "row_stack")
    if ARGS.sim:
        env["device"] = "Numba CUDA simulator"
        return env
    dev = CUDA.get_current_device()
    env["device"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    env["compute_capability"] = list(dev.compute_capability)
    env["multiprocessors"] = BACKEND.multiprocessors()
    env["CUDA_HOME"] = os.environ.get("CUDA_HOME")
    import torch  # lazy: the GPU run's peer only; the rehearsal never loads it
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    TORCH = torch
    env["torch"] = torch.__version__
    env["cudnn"] = torch.backends.cudnn.version()
    env["torch_device"] = torch.cuda.get_device_name()
    env["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32,
                   "matmul": torch.backends.cuda.matmul.allow_tf32}
    return env


def use_torch_allocator() -> str:
    """Make numba-cuda allocate through torch's caching allocator, before its context exists.
    Each op returns new arrays; with numba-cuda's own allocator every timed call would pay a
    cudaMalloc that torch's calls do not, so both sides allocate the same way here."""
    import torch  # lazy: the GPU run's peer only; the rehearsal never loads it
    cuda = CUDA

    class TorchMemoryManager(cuda.HostOnlyCUDAMemoryManager):
        def memalloc(self, size):
            ptr = torch.cuda.caching_allocator_alloc(max(int(size), 1))
            return cuda.cudadrv.driver.AutoFreePointer(
                weakref.proxy(self.context), ctypes.c_void_p(ptr), size,
                finalizer=lambda: torch.cuda.caching_allocator_delete(ptr))

        def initialize(self):
            pass

        def reset(self):
            torch.cuda.empty_cache()

        def get_memory_info(self):
            free, total = torch.cuda.mem_get_info()
            return cuda.MemoryInfo(free=free, total=total)

        def get_ipc_handle(self, memory):
            raise NotImplementedError("no IPC through torch's allocator")

        @property
        def interface_version(self):
            return 1

    try:
        cuda.set_memory_manager(TorchMemoryManager)
    except Exception as e:  # noqa: BLE001 - numba-cuda's own allocator still works
        return f"numba-cuda's own (torch's could not be set: {e!r})"
    return "torch's caching allocator for both"


# --- 2. small case lists against convbench's float64 reference ------------------------------------
def case_lists():
    conv = conv_edge_cases() + random_conv_cases(20, seed=0)
    pool, rnn = pool_edge_cases(), rnn_edge_cases()
    if ARGS.sim:        # the simulator runs every GPU thread as an OS thread: a sample
        conv, pool, rnn = conv[:17:4], pool[::4], rnn[::4]
    return conv + pool + rnn


def small_cases() -> dict:
    """Every result is PASSED, or MISTRUSTED (within tolerance, little margin: reported, not
    failed), or counted as failed (FAILED, or an op the backend does not implement)."""
    rows, failed, mistrusted = [], 0, 0
    for label, family, problem in case_lists():
        for op in ops_of(family):
            c = check_backend("numba-cuda", op, problem, np.float32, seed=1)
            rows.append({"case": label, "op": op.name, "problem": str(problem),
                         "status": c.status, "error": _num(c.rel_error),
                         "tol": _num(c.tolerance), "reason": c.reason})
            failed += c.status not in WITHIN_TOLERANCE
            mistrusted += c.status == MISTRUSTED
            if c.status != PASSED:
                log(f"  {c.status}: {label} {op.name} {c.reason}")
    return {"checks": len(rows), "failed": failed, "mistrusted": mistrusted, "rows": rows}


# --- 3/4. the measured shapes ---------------------------------------------------------------------
def measured_shapes():
    """(name, family, problem, directions, tile kind or None)."""
    if ARGS.sim:
        convs = [("tiny 1x1", "mb2ic6ih5oc10kh1"), ("tiny 3x3 /2", "mb2ic4ih7oc5kh3sh2ph1")]
        convs = [(n, parse(d)[0]) for n, d in convs]
        pool = parse("max:mb2ic3ih9kh3sh2ph1")[0]
        lstm = parse("lstm:t3mb2slc4sic5")[0]
    else:
        convs = [(c.name, c.problem) for c in resnet50(32)]
        pool = parse("max:mb32ic64ih112kh3sh2ph1")[0]
        lstm = parse("lstm:t100mb32slc1024sic1024")[0]
    out = [(n, "conv2d", p, ("fwd", "bwd-data", "bwd-weights"), "conv") for n, p in convs]
    out.append(("maxpool 3x3/2", "max_pool2d", pool, ("fwd", "bwd"), None))
    out.append(("lstm", "lstm", lstm, ("fwd", "bwd"), "step"))
    return out


def candidates(kind):
    if kind is None:
        return [None]
    if ARGS.sim:
        return {"conv": [None, Tiles(32, 8, 8, 16, 4)], "step": [None, Tiles(2, 4, 4, 1, 2)],
                "gemm": [None, SIM["gemm"]]}[kind]
    return {"conv": GPU_CONV, "step": GPU_STEP, "gemm": GPU_GEMM}[kind]


class Shape:
    """Inputs on the host and the device, the reference, and runners for one shape+direction."""

    def __init__(self, name, family, problem, direction, seed):
        self.name, self.problem = name, problem
        self.op = get_op(f"{family}:{direction}")
        self.direction = direction
        self.inputs = self.op.make_inputs(problem, np.random.default_rng(seed), np.float32)
        self.dev = [None if a is None else BACKEND.to_device(a) for a in self.inputs]
        self.tol = tolerance(self.op, problem, np.float32, BACKEND)
        if TORCH is not None and self.op.family == "conv2d":
            self.ref = TorchConvReference(self.op, problem, self.inputs)
        else:
            self.ref = Reference(self.op, problem, self.inputs)
        # the reference's outputs and scales, computed now: no first-call time below includes them
        _ = self.ref.scales

    def run(self):
        return BACKEND.run(self.op, self.problem, *self.dev)

    def verify(self):
        """(status, worst relative error, reason): one call with the backend's current tiles
        against the float64 reference (check_backend, on this shape's inputs)."""
        c = check_backend(BACKEND.name, self.op, self.problem, np.float32, inputs=self.inputs,
                          reference=self.ref)
        return c.status, c.rel_error, c.reason

    def time(self, fn=None, budget=0.25):
        """Median seconds per call over CUDA events, after a warm-up call."""
        fn = fn or self.run
        if ARGS.sim:        # a rehearsal of the path; the simulator's time means nothing
            return BACKEND.time_call(fn)
        fn()
        BACKEND.synchronize()
        first = BACKEND.time_call(fn)
        reps = int(min(20, max(3, budget / max(first, 1e-6))))
        return statistics.median([BACKEND.time_call(fn) for _ in range(reps)])


class TorchConvReference(Reference):
    """A convolution's float64 reference computed by torch on the GPU (convbench's own is too
    slow at these shapes), with the same error measure and doubts as verify.Reference."""

    def __init__(self, op, problem, inputs):
        super().__init__(op, problem, inputs)
        self.name = f"float64 torch conv2d {op.direction} on the GPU"
        self._torch = torch_conv_reference(op.direction, problem, inputs)

    @property
    def outputs(self) -> tuple:
        return self._torch[0]

    @property
    def scales(self) -> tuple:
        return self._torch[1]


def torch_conv_reference(direction, p, inputs):
    """The conv in float64 on the GPU (torch), and the same op on absolute values (the scale
    verify.py divides by)."""
    torch = TORCH
    F = torch.nn.functional
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = p.stride, p.padding, p.dilation
    if (pt, pl) != (pb, pr):
        raise ValueError(f"{p}: the torch reference here takes symmetric padding only")
    kw = {"stride": (sh, sw), "padding": (pt, pl), "dilation": (dh, dw), "groups": p.groups}

    def run(arrays):
        t = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).cuda().double()
             for a in arrays]
        if direction == "fwd":
            y = F.conv2d(t[0], t[1], t[2], **kw)
        elif direction == "bwd-data":
            y = torch.nn.grad.conv2d_input(p.x_shape, t[1], t[0], **kw)
        else:
            y = torch.nn.grad.conv2d_weight(t[1], p.w_shape, t[0], **kw)
        return y.cpu().numpy()

    ref = run(inputs)
    scale = float(np.abs(run([None if a is None else np.abs(a) for a in inputs])).max())
    return (ref,), (scale,)


def torch_runner(s: Shape):
    """A zero-argument function running the cuDNN equivalent of s on device tensors."""
    torch = TORCH
    F = torch.nn.functional
    p, d = s.problem, s.direction
    cu = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).cuda()
          for a in s.inputs]
    if s.op.family == "conv2d":
        (sh, sw), ((pt, _), (pl, _)), (dh, dw) = p.stride, p.padding, p.dilation
        kw = {"stride": (sh, sw), "padding": (pt, pl), "dilation": (dh, dw), "groups": p.groups}
        if d == "fwd":
            return lambda: F.conv2d(cu[0], cu[1], cu[2], **kw)
        if d == "bwd-data":
            return lambda: torch.nn.grad.conv2d_input(p.x_shape, cu[1], cu[0], **kw)
        return lambda: torch.nn.grad.conv2d_weight(cu[1], p.w_shape, cu[0], **kw)
    if s.op.family == "max_pool2d":
        pk = {"kernel_size": p.kernel, "stride": p.stride, "padding": p.padding,
              "dilation": p.dilation, "ceil_mode": p.ceil_mode}
        if d == "fwd":
            return lambda: F.max_pool2d(cu[0], **pk)
        x, dy = cu[1], cu[0]
        _, idx = F.max_pool2d(x, return_indices=True, **pk)
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            dy, x, list(p.kernel), list(p.stride), list(p.padding), list(p.dilation),
            p.ceil_mode, idx)
    # LSTM: cuDNN's, with convbench's inputs as its weights
    lstm = torch.nn.LSTM(p.I, p.H).cuda()
    off = 0 if d == "fwd" else 3
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = cu[off:off + 7]
    with torch.no_grad():
        for name, t in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih),
                        ("bias_hh_l0", b_hh)):
            getattr(lstm, name).copy_(t)
    lstm.flatten_parameters()
    if d == "fwd":
        def fwd():
            with torch.no_grad():
                return lstm(x, (h0[None], c0[None]))
        return fwd
    dy, dhT, dcT = cu[:3]
    xs, hs, cs = (t.clone().requires_grad_() for t in (x, h0[None], c0[None]))
    params = list(lstm.parameters())

    def fwd_bwd():
        y, (hT, cT) = lstm(xs, (hs, cs))
        return torch.autograd.grad((y, hT, cT), [xs, hs, cs] + params,
                                   (dy, dhT[None], dcT[None]))
    return fwd_bwd


def torch_time(fn, budget=0.25):
    torch = TORCH
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def once():
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3
    first = once()
    reps = int(min(20, max(3, budget / max(first, 1e-6))))
    return statistics.median([once() for _ in range(reps)])


def _variants(kind):
    """The (kind, tiles) a shape's sweep tries beyond its defaults, most promising first; an
    LSTM tries its step tiles, then its GEMM tiles with the best step tiles."""
    if kind is None:
        return []
    if kind == "step":
        return [("step", t) for t in candidates("step")[1:]] + [
            ("gemm", t) for t in candidates("gemm")[1:]]
    return [(kind, t) for t in candidates(kind)[1:]]


def _run_variant(key, s, row, kind, tiles):
    """Verify one tile choice on s and, if it passes, time it; appended to row['variants']."""
    label = str(tiles) if tiles is not None else "default"
    if kind is not None and tiles is not None:
        BACKEND.tiles[kind] = tiles
    if kind == "gemm":
        step = _best(row, "step")
        if step and step["tiles"] != "default":
            BACKEND.tiles["step"] = Tiles.parse(step["tiles"])
    v = {"kind": kind, "tiles": label}
    try:
        t0 = time.monotonic()
        v["status"], v["error"], v["reason"] = s.verify()
        v["first_call_s"] = time.monotonic() - t0
        if v["status"] in WITHIN_TOLERANCE:
            v["time_s"] = s.time()
        elif v["status"] == FAILED:
            log(f"{key} {label}: {v['reason']}")
    except Exception as e:  # noqa: BLE001 - recorded in the JSON
        v["status"], v["reason"] = FAILED, f"{type(e).__name__}: {e}"
        log(f"{key} {label}: {v['reason']}")
    finally:
        BACKEND.tiles.clear()
    row["variants"].append(v)


def measure(rows: dict, shapes: dict) -> dict:
    """Verify and time every measured shape with the default tiles, and cuDNN's time.
    rows: key -> result dict; shapes: key -> (Shape, tile kind), kept for the sweep."""
    for name, family, problem, directions, kind in measured_shapes():
        for direction in directions:
            key = f"{name} [{direction}]"
            try:
                s = Shape(name, family, problem, direction, seed=7)
            except Exception as e:  # noqa: BLE001 - a failed set-up is recorded, not fatal
                rows[key] = {"name": name, "direction": direction, "error": repr(e)}
                log(f"{key}: set-up failed: {e!r}")
                continue
            row = rows[key] = {
                "name": name, "descriptor": str(problem), "family": family,
                "direction": direction, "flops": s.op.flops(problem),
                "min_bytes": s.op.min_bytes(problem), "tol": s.tol, "variants": []}
            if TORCH is not None:
                try:
                    row["cudnn_s"] = torch_time(torch_runner(s))
                except Exception as e:  # noqa: BLE001 - recorded in the JSON
                    row["cudnn_error"] = repr(e)
            _run_variant(key, s, row, "step" if kind == "step" else kind, None)
            _summarise_row(row)
            log(f"{key}: " + _row_text(row))
            shapes[key] = (s, kind)
            save()
    return rows


def sweep(rows: dict, shapes: dict) -> dict:
    """The other tile shapes, round by round (every shape's next candidate in turn, so that
    when the budget runs out each shape has tried its most promising ones)."""
    deadline = T0 + BUDGET
    rounds = max((len(_variants(kind)) for _, kind in shapes.values()), default=0)
    done = 0
    for i in range(rounds):
        for key, (s, kind) in shapes.items():
            todo = _variants(kind)
            if i >= len(todo):
                continue
            if time.monotonic() > deadline:
                return {"stopped_at_s": time.monotonic() - T0, "variants_run": done,
                        "cut_short": True}
            _run_variant(key, s, rows[key], *todo[i])
            _summarise_row(rows[key])
            done += 1
        log(f"sweep round {i + 1}/{rounds} done")
        save()
    for key in shapes:
        log(f"{key}: " + _row_text(rows[key]))
    return {"stopped_at_s": time.monotonic() - T0, "variants_run": done, "cut_short": False}


def _best(row, kind=None):
    ok = [v for v in row.get("variants", []) if v.get("time_s") is not None
          and (kind is None or v["kind"] == kind)]
    return min(ok, key=lambda v: v["time_s"]) if ok else None


def _summarise_row(row):
    best = _best(row)
    row["verified"] = all(v.get("status") in WITHIN_TOLERANCE for v in row.get("variants", []))
    row["mistrusted"] = [v["tiles"] for v in row.get("variants", [])
                         if v.get("status") == MISTRUSTED]
    if best is None:
        return
    row["best"] = {"kind": best["kind"], "tiles": best["tiles"], "time_s": best["time_s"]}
    t = best["time_s"]
    if row["family"] == "conv2d" or row["family"] == "lstm":
        row["tflops"] = row["flops"] / t / 1e12
    row["tb_per_s"] = row["min_bytes"] / t / 1e12
    if row.get("cudnn_s"):
        row["speed_vs_cudnn"] = row["cudnn_s"] / t


def _row_text(row):
    if "best" not in row:
        return "no verified variant " + "; ".join(
            f"{v['tiles']} {v.get('status')} {v.get('reason', '')}" for v in row["variants"])
    b = row["best"]
    txt = f"{b['kind'] or '':>4s} {b['tiles']:>18s} {b['time_s'] * 1e3:9.3f} ms"
    if "tflops" in row:
        txt += f" {row['tflops']:6.2f} TFLOP/s"
    else:
        txt += f" {row['tb_per_s']:6.2f} TB/s"
    if row.get("cudnn_s"):
        txt += f"  cuDNN {row['cudnn_s'] * 1e3:8.3f} ms  x{row['speed_vs_cudnn']:.2f}"
    return txt


# --- 5. kernel resources --------------------------------------------------------------------------
def resources() -> dict:
    if ARGS.sim:
        return {"note": "the simulator compiles nothing"}
    out = {}
    for key, k in numba_cuda.KERNELS.gemm.compiled().items():
        name = "/".join(str(x) for x in key)
        try:
            regs = k.get_regs_per_thread()
            local = k.get_local_mem_per_thread()
            shared = k.get_shared_mem_per_block()
            out[name] = {"registers": list(regs.values()), "local_bytes": list(local.values()),
                         "shared_bytes": list(shared.values())}
        except Exception as e:  # noqa: BLE001 - recorded in the JSON
            out[name] = {"error": repr(e)}
    return out


def summary(rows) -> dict:
    def geomean(xs):
        xs = [x for x in xs if x]
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None
    conv = [r for r in rows.values() if r.get("family") == "conv2d"]
    out = {"conv_geomean_vs_cudnn": geomean([r.get("speed_vs_cudnn") for r in conv])}
    for d in ("fwd", "bwd-data", "bwd-weights"):
        out[f"conv_geomean_vs_cudnn_{d}"] = geomean(
            [r.get("speed_vs_cudnn") for r in conv if r["direction"] == d])
    for r in rows.values():
        if r.get("family") == "max_pool2d":
            out[f"maxpool_{r['direction']}_tb_per_s"] = r.get("tb_per_s")
            out[f"maxpool_{r['direction']}_vs_cudnn"] = r.get("speed_vs_cudnn")
        if r.get("family") == "lstm":
            out[f"lstm_{r['direction']}_vs_cudnn"] = r.get("speed_vs_cudnn")
    out["targets"] = {"conv geomean >= 0.5x cuDNN": out["conv_geomean_vs_cudnn"],
                      "maxpool >= 2.5 TB/s effective": [out.get("maxpool_fwd_tb_per_s"),
                                                         out.get("maxpool_bwd_tb_per_s")],
                      "lstm >= 0.5x cuDNN": [out.get("lstm_fwd_vs_cudnn"),
                                             out.get("lstm_bwd_vs_cudnn")]}
    out["unverified_rows"] = [k for k, r in rows.items() if not r.get("verified", False)]
    out["mistrusted_rows"] = [k for k, r in rows.items() if r.get("mistrusted")]
    return out


def print_table(rows):
    print(f"\n{'shape [direction]':<48s} {'best tiles':>23s} {'time':>12s} {'rate':>14s}"
          f" {'cuDNN':>15s}  speed")
    for key, r in rows.items():
        print(f"{key[:48]:<48s} {_row_text(r)}")


def section(name, fn):
    log(f"== {name}")
    try:
        RESULT["sections"][name] = fn()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the other sections still say something
        RESULT["sections"][name] = {"error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc()}
        log(f"{name} failed: {e!r}")
    save()
    return RESULT["sections"][name]


def main() -> int:
    log(f"gpu_check ({RESULT['mode']}), output {OUT}/gpu_check.json, sweep budget {BUDGET:.0f}s")
    env = section("environment", environment)
    log(json.dumps(env, default=str))
    small = section("small_cases", small_cases)
    log(f"small cases: {small.get('checks')} checks, {small.get('failed')} failed, "
        f"{small.get('mistrusted')} mistrusted")
    rows: dict = {}
    shapes: dict = {}
    RESULT["sections"]["measured"] = rows
    section("measured", lambda: measure(rows, shapes))
    section("sweep", lambda: sweep(rows, shapes))
    shapes.clear()
    section("resources", resources)
    RESULT["summary"] = summary(rows)
    save()
    print_table(rows)
    print(json.dumps(RESULT["summary"], indent=1, default=str))
    log("done")
    bad = small.get("failed", 1) or RESULT["summary"]["unverified_rows"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
