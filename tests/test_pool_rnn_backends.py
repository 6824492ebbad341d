"""Every backend against the float64 reference on the pooling and recurrent edge cases."""
import numpy as np
import pytest

from convbench.backends import backend_names
from convbench.cases import pool_edge_cases, rnn_edge_cases
from convbench.ops import ops_of
from convbench.result import PASSED, UNAVAILABLE, UNIMPLEMENTED
from convbench.verify import check_backend

CASES = pool_edge_cases() + rnn_edge_cases()
# What each backend is expected to implement (a missing op must say UNIMPLEMENTED, not crash).
EXPECTED_UNIMPLEMENTED = {("naive", "*", "rnn"), ("im2col", "*", "*"), ("im2col-numba", "*", "*"),
                          ("winograd-f2", "*", "*"), ("winograd-f4", "*", "*"),
                          ("winograd", "*", "*"), ("fft", "*", "*"), ("onnxruntime", "bwd", "*"),
                          ("openvino", "bwd", "*")}


#: Cases a peer refuses, with its reason: PyTorch semantics its ONNX pooling does not have.
REFUSED = {
    ("openvino", "avg ceil_mode partial last window"): "divisor counts the part past the padding",
    ("openvino", "max asymmetric padding, ceil_mode"): "OpenVINO keeps it",
    ("openvino", "avg asymmetric padding, ceil_mode"): "OpenVINO keeps it",
    ("onnxruntime", "max dilation 2, padding 3 > half the kernel"): "padding smaller than the "
                                                                    "kernel",
}


def _expected_unsupported(backend, op, family):
    kind = "rnn" if family in ("lstm", "gru", "rnn_tanh") else "pool"
    return any(b == backend and d in ("*", op.direction) and k in ("*", kind)
               for b, d, k in EXPECTED_UNIMPLEMENTED)


@pytest.mark.parametrize("backend", backend_names())
@pytest.mark.parametrize("label,family,problem", CASES, ids=[c[0] for c in CASES])
def test_backend_matches_reference(backend, label, family, problem):
    for op in ops_of(family):
        c = check_backend(backend, op, problem, np.float32, seed=11)
        if c.status == UNAVAILABLE:
            pytest.skip(c.reason)
        refused = REFUSED.get((backend, label)) if op.direction == "fwd" else None
        if (backend == "jax" and family == "max_pool2d" and op.direction == "bwd"
                and problem.dilation != (1, 1)):
            refused = "dilation"
        if refused:
            assert c.status == UNIMPLEMENTED and refused in c.reason, c.reason
            continue
        if _expected_unsupported(backend, op, family):
            assert c.status == UNIMPLEMENTED and "does not implement" in c.reason
            continue
        assert c.status == PASSED, f"{op.name} {label}: {c.status} {c.reason}"
