"""A diagnostic, not part of the backend: whether LLVM vectorised numba-cpu's conv kernels."""
from __future__ import annotations

import re

import numba
import numpy as np

from convbench.backends.numba_cpu.conv import (
    _padded_rows,
    _taps_by_channel,
    _wide,
    phase_plan,
    to_phases,
)
from convbench.backends.scratch import Workspace
from convbench.lazy import LazyModule
from convbench.ops.conv import Conv2dProblem

KERNELS = LazyModule("convbench.backends._numba_conv_kernels")


def asm_report(dtype=np.float32) -> dict:
    """Packed FMA instructions (vfmadd...ps/pd on ymm/zmm registers) in each conv kernel, from a
    fresh compilation (Numba does not keep assembly for kernels loaded from its cache): a check
    that LLVM vectorised the inner loops rather than a guess."""
    suffix = "ps" if np.dtype(dtype) == np.float32 else "pd"
    p = Conv2dProblem(1, 4, 6, 6, 4, 3, 3, padding=((1, 1), (1, 1)))
    x = np.ones(p.x_shape, dtype)
    w = np.ones(p.w_shape, dtype)
    plan = phase_plan(p)
    chan, phase, off = _taps_by_channel(p.Cg, plan)
    out = {}
    with Workspace().lease() as ws:
        xph = to_phases(ws, x, p, plan)
        args = {"implicit_gemm": (xph, _padded_rows(w.reshape(p.K, -1), 1), chan, phase, off,
                                  np.empty((1, p.K, p.P * plan.Wq), dtype), p.Kg),
                "weight_grad": (xph, _wide(ws, np.ones(p.y_shape, dtype), p, plan), chan, phase,
                                off, np.zeros((1, 4, chan.size), dtype), p.P * plan.Wq)}
        for name, a in args.items():
            fn = getattr(KERNELS, name)
            opts = {k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython")}
            fresh = numba.njit(**opts)(fn.py_func)
            fresh(*a)
            asm = "".join(fresh.inspect_asm().values())
            out[name] = len(re.findall(rf"vfmadd\w*{suffix}\s+[^\n]*%[yz]mm", asm))
    return out
