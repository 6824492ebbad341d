"""Test settings. With no GPU, numba-cuda kernels run on Numba's CPU simulator (tiny shapes only).
Set CONVBENCH_REAL_GPU=1 to test them on a real GPU instead."""
import os

if os.environ.get("CONVBENCH_REAL_GPU", "0") in ("", "0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


#: Algorithms for one kind of problem only (3x3 stride 1); their coverage is in test_conv_backends.
SPECIALISED = ("winograd-f2", "winograd-f4", "winograd")


def available_backends(op_name: str):
    """General backends that can run here and implement the op (the rest are tested for their
    reasons, and the specialised ones on the problems they take)."""
    from convbench.backends import backend_names, get_backend
    from convbench.ops import get_op
    op = get_op(op_name)
    out = []
    for name in backend_names():
        b = get_backend(name)
        if b.available and b.implements(op) and name not in SPECIALISED:
            out.append(name)
    return out
