"""conv2d forward per backend on ResNet-50 layers at batch 8 (GFLOP/s in the summary)."""
import numpy as np
import pytest

from convbench.backends import get_backend
from convbench.ops import conv2d_problem, get_op

BATCH = 8
# (name, C, H, K, R, stride, pad) from ResNet-50 (He et al. 2015), table 1
LAYERS = [
    ("res2 1x1 64->256", 64, 56, 256, 1, 1, 0),
    ("res2 3x3 64", 64, 56, 64, 3, 1, 1),
    ("res3 3x3 128", 128, 28, 128, 3, 1, 1),
    ("res4 3x3 256", 256, 14, 256, 3, 1, 1),
    ("res5 3x3 512", 512, 7, 512, 3, 1, 1),
]
BACKENDS = ["im2col", "numba-cpu", "winograd-f2", "winograd-f4", "fft", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", LAYERS, ids=[lay[0] for lay in LAYERS])
def test_conv2d_fwd(benchmark, layer, backend):
    name, C, H, K, R, stride, pad = layer
    from convbench.errors import ConvbenchError
    b = get_backend(backend)
    op = get_op("conv2d:fwd")
    p = conv2d_problem((BATCH, C, H, H), (K, C, R, R), stride=stride, padding=pad)
    try:
        b.check(op, p, np.float32)
    except ConvbenchError as e:
        pytest.skip(str(e))
    inputs = op.make_inputs(p, np.random.default_rng(0), np.float32)
    b.run(op, p, *inputs)  # compile and warm up outside the timing
    benchmark.extra_info.update(case=name, backend=backend, work=op.flops(p), unit="GFLOP/s")
    benchmark.pedantic(b.run, args=(op, p, *inputs), rounds=7, warmup_rounds=1)
