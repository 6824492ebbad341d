"""Every numba-cuda kernel compiled to PTX, with counts of the instructions that matter.

Needs NVVM and NVRTC (the nvidia-nvvm and nvidia-cuda-nvrtc wheels) but no GPU and no simulator;
loaded on first use (numba_cuda.KERNELS). Used by the float32 test and bench/gpu_check.py.

A float32 kernel should hold no float64 instruction at all (a Python float literal or an int
mixed into float32 arithmetic would bring them), and no local-memory access (a register array
indexed at run time, or spilled, lands there).
"""
import inspect
import re
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
from numba import boolean, cuda, float32, float64, int32, int64
from numba.cuda import dispatcher

from convbench.backends import _numba_cuda_conv as conv
from convbench.backends import _numba_cuda_gemm as gemm
from convbench.backends import _numba_cuda_pool as pool
from convbench.backends import _numba_cuda_rnn as rnn
from convbench.backends._numba_cuda_tiles import GPU_THREADS, default_tiles

#: Parameter names of the kernels by type; every other parameter is an int64 scalar.
_FLOAT_ARRAYS = {"a", "b", "c", "bias", "out", "x", "w", "y", "dy", "dx", "dwt", "hs", "cs", "gi",
                 "w_hh", "b_hh", "ws", "dgh", "direct", "dh0", "dgi", "dc", "dhT", "dcT"}
_FLAGS = {"has_bias", "store", "final", "has_dhT", "has_dcT", "include_pad"}

#: PTX patterns counted per kernel.
PATTERNS = {
    "f64": r"\.f64\b",                 # any float64 operation, conversion or register
    "local": r"\b(?:ld|st)\.local\b",  # local-memory traffic
    "fma_f32": r"\bfma\.rn\.f32\b",
    "ld_shared": r"\bld\.shared\b",
    "ld_global": r"\bld\.global\b",
}


def catalogue(dtype=np.float32):
    """name -> kernel dispatcher, every kernel the backend launches, at the GPU's default tiles."""
    conv_t, gemm_t, step_t = (default_tiles(k, False) for k in ("conv", "gemm", "step"))
    out = {
        "conv_igemm": conv.igemm(conv_t, dtype),
        "conv_wgrad": conv.wgrad(conv_t, dtype),
        "depthwise_fwd": gemm.elementwise("dw_fwd", dtype, conv._make_dw_fwd),
        "depthwise_bwd_data": gemm.elementwise("dw_bwd_data", dtype, conv._make_dw_bwd_data),
        "depthwise_bwd_weights": gemm.elementwise(
            f"dw_bwd_weights{GPU_THREADS}", dtype,
            lambda ft: conv._make_dw_bwd_weights(ft, GPU_THREADS)),
        "gemm_nt": gemm.gemm(gemm_t, dtype, True, False),
        "gemm_nn": gemm.gemm(gemm_t, dtype, True, True),
        "gemm_tn": gemm.gemm(gemm_t, dtype, False, True),
        "sum_slices": gemm.elementwise("sum_slices", dtype, gemm._make_sum_slices),
        "column_sums": gemm.elementwise("colsum", dtype, gemm._make_colsum),
        "max_pool_fwd": gemm.elementwise("max_fwd", dtype, pool._make_max_fwd),
        "max_pool_argmax": gemm.elementwise("max_argmax", dtype, pool._make_max_argmax),
        "max_pool_bwd": gemm.elementwise("max_bwd", dtype, pool._make_max_bwd),
        "avg_pool_fwd": gemm.elementwise("avg_fwd", dtype, pool._make_avg_fwd),
        "avg_pool_bwd": gemm.elementwise("avg_bwd", dtype, pool._make_avg_bwd),
        "rnn_flip_steps": gemm.elementwise("flip_steps", dtype, rnn._make_flip_steps),
    }
    for cell in rnn.CELLS:
        out[f"{cell}_step_fwd"] = rnn.step_fwd(step_t, dtype, cell)
        out[f"{cell}_step_bwd"] = rnn.step_bwd(step_t, dtype, cell)
        out[f"{cell}_gates_bwd_last"] = gemm.elementwise(
            f"rnn_gates_bwd_last_{cell}", dtype, rnn._make_gates_bwd_last(cell))
    return out


def signature(kernel, dtype=np.float32):
    """The argument types the backend launches the kernel with (flat C-contiguous arrays)."""
    ft = float32 if np.dtype(dtype) == np.float32 else float64
    types = []
    for name in inspect.signature(kernel.py_func).parameters:
        if name in _FLOAT_ARRAYS:
            types.append(ft[::1])
        elif name == "arg":
            types.append(int32[::1])
        elif name == "tab":
            types.append(int32[:, ::1])
        elif name in _FLAGS:
            types.append(boolean)
        else:
            types.append(int64)
    return tuple(types)


@contextmanager
def _device_functions_for(cc):
    """numba-cuda compiles the device functions a kernel calls for the current device's compute
    capability, which needs a GPU; with none, they are compiled for `cc` instead."""
    if cuda.is_available():
        yield
        return
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def ptx(kernel, dtype=np.float32, cc=(9, 0)) -> str:
    with _device_functions_for(cc):
        return cuda.compile_ptx(kernel.py_func, signature(kernel, dtype), cc=cc)[0]


def counts(text: str) -> dict:
    return {key: len(re.findall(pat, text)) for key, pat in PATTERNS.items()}


def report(dtype=np.float32, cc=(9, 0), names=None) -> dict:
    """name -> instruction counts of its PTX, for every kernel of the catalogue (or `names`)."""
    cat = catalogue(dtype)
    return {name: counts(ptx(k, dtype, cc)) for name, k in cat.items()
            if names is None or name in names}
