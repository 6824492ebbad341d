"""openvino: Intel's OpenVINO runtime on the CPU (oneDNN-based plugin) as a peer.

The same single-node ONNX graphs as onnxruntime (backends.onnx_graphs), read by OpenVINO's ONNX
frontend and compiled for "CPU" on a problem's first call, in float32
(INFERENCE_PRECISION_HINT=f32: no bf16 or f16 downcasting on CPUs that have them) with
INFERENCE_NUM_THREADS following convbench's thread count, one stream, and no thread pinning (the
process's other libraries share the cores). Available with `pip install "convbench[openvino]"`.

Importing openvino sends a usage event through the openvino-telemetry package, which forks a
process to deliver it: during a benchmark that process takes CPU from the kernels being timed,
and forking a process that runs other libraries' threads (JAX's) can deadlock it. convbench
imports openvino with that package hidden, so OpenVINO falls back to its own no-op stub.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

from convbench.backends.base import package_version
from convbench.backends.onnx_graphs import ONNX, POOLS, OnnxGraphBackend, onnx_pooled_size
from convbench.lazy import LazyModule
from convbench.threads import get_threads

TELEMETRY = "openvino_telemetry"


@contextmanager
def _without_telemetry():
    """While importing openvino: its telemetry package unimportable (see the module docstring),
    unless something imported it already."""
    if TELEMETRY in sys.modules:
        yield
        return
    sys.modules[TELEMETRY] = None
    try:
        yield
    finally:
        if sys.modules.get(TELEMETRY, 0) is None:
            del sys.modules[TELEMETRY]


OV = LazyModule("openvino", prepare=_without_telemetry)


def config(threads: int) -> dict:
    return {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}


class OpenVINOBackend(OnnxGraphBackend):
    name = "openvino"
    description = "OpenVINO (CPU plugin), the same single-node ONNX graphs, f32: a peer"

    def __init__(self):
        super().__init__()
        self._core = None

    def unavailable_reason(self):
        for lazy in (ONNX, OV):
            try:
                lazy.load()
            except ImportError as e:
                return f"{lazy.name} is not installed ({e}); pip install 'convbench[openvino]'"
        return None

    def unsupported(self, op, problem, dtype):
        if op.family in POOLS and problem.ceil_mode:
            p = problem
            for size, k, s, pads, d, out in zip((p.H, p.W), p.kernel, p.stride, p.padding,
                                                p.dilation, (p.P, p.Q)):
                if onnx_pooled_size(size, k, s, pads, d, True) != out:
                    return ("ceil_mode with a last window that would start in the padding: "
                            "OpenVINO keeps it (ONNX's output size), PyTorch drops it")
                if (p.kind == "avg" and p.count_include_pad
                        and (out - 1) * s + k > size + pads[0] + pads[1]):
                    return ("ceil_mode with a last window reaching past the padding, "
                            "count_include_pad: OpenVINO's divisor counts the part past the "
                            "padding, PyTorch's does not")
        return None

    def compile(self, model_bytes, input_names, threads):
        ov = OV.load()
        if self._core is None:
            self._core = ov.Core()
        compiled = self._core.compile_model(self._core.read_model(model_bytes, b""), "CPU",
                                            config(threads))
        request = compiled.create_infer_request()
        lock = threading.Lock()         # one infer request: one inference at a time

        def run(arrays):
            with lock:
                out = request.infer(arrays, share_inputs=True, share_outputs=True)
                # the outputs are the request's buffers, overwritten by its next inference
                return [out[k].copy() for k in compiled.outputs]
        return run

    def record(self):
        return {"version": package_version("openvino"), "onnx": package_version("onnx"),
                **config(get_threads())}
