"""onnxruntime: ONNX Runtime's CPU execution provider (MLAS kernels) as a peer.

Each op is a single-node ONNX graph (backends.onnx_graphs) run by an InferenceSession, created on
a problem's first call. intra_op_num_threads follows convbench's thread count (a session made
under another count is not reused), and its workers do not spin between calls
(allow_spinning=0). Available with `pip install "convbench[onnxruntime]"`.
"""
from __future__ import annotations

from convbench.backends.base import package_version
from convbench.backends.onnx_graphs import ONNX, POOLS, OnnxGraphBackend
from convbench.lazy import LazyModule
from convbench.threads import get_threads

ORT = LazyModule("onnxruntime")


class OnnxRuntimeBackend(OnnxGraphBackend):
    name = "onnxruntime"
    description = "ONNX Runtime (CPU provider, MLAS), single-node ONNX graphs: a peer"

    def unavailable_reason(self):
        for lazy in (ONNX, ORT):
            try:
                lazy.load()
            except ImportError as e:
                return (f"{lazy.name} is not installed ({e}); "
                        "pip install 'convbench[onnxruntime]'")
        return None

    def unsupported(self, op, problem, dtype):
        if op.family in POOLS:
            for k, pads in zip(problem.kernel, problem.padding):
                if max(pads) >= k:
                    return (f"padding={problem.padding}: ONNX Runtime's pooling takes padding "
                            f"smaller than the kernel {problem.kernel} (convbench: up to the "
                            "dilated extent - 1)")
        return None

    def compile(self, model_bytes, input_names, threads):
        ort = ORT.load()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # errors only: a pooling's shape inference warns where PyTorch's ceil_mode rule (which
        # ONNX Runtime's kernel follows) drops a window ONNX's formula keeps
        options.log_severity_level = 3
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

        def run(arrays):
            return session.run(None, dict(zip(input_names, arrays)))
        return run

    def record(self):
        return {"version": package_version("onnxruntime"), "onnx": package_version("onnx"),
                "intra_op_num_threads": get_threads(), "allow_spinning": False}
