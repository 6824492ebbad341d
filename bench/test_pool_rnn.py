"""Max pooling 3x3/2 on (8, 64, 112, 112) and recurrent layers (LSTM T=64 N=16 H=256, DeepBench)
per backend; the summary prints throughput and the ratio to torch from the same run."""
import numpy as np
import pytest

from convbench.backends import get_backend
from convbench.ops import get_op
from convbench.ops.descriptor import parse

PEERS = ["numpy", "numba-cpu", "torch"]
CASES = [
    ("maxpool 3x3/2 (8,64,112,112)", "max:mb8ic64ih112kh3sh2ph1", "fwd", PEERS),
    ("maxpool 3x3/2 (8,64,112,112)", "max:mb8ic64ih112kh3sh2ph1", "bwd", PEERS),
    ("lstm T64 N16 H256", "lstm:t64mb16slc256sic256", "fwd", PEERS),
    ("lstm T64 N16 H256", "lstm:t64mb16slc256sic256", "bwd", PEERS),
    # DeepBench training_set: GRU hidden 512, batch 32, 50 steps (rnn_problems.h)
    ("deepbench gru h512 b32 t50", "gru:t50mb32slc512sic512", "fwd", PEERS),
]


def _params():
    for label, desc, direction, backends in CASES:
        for b in backends:
            yield pytest.param(label, desc, direction, b, id=f"{label}-{direction}-{b}")


@pytest.mark.parametrize("label,desc,direction,backend", list(_params()))
def test_pool_rnn(benchmark, label, desc, direction, backend):
    b = get_backend(backend)
    if not b.available:
        pytest.skip(b.unavailable_reason())
    p = parse(desc)[0]
    family = desc.split(":")[0]
    pool = family in ("max", "avg")
    op = get_op(f"{family}_pool2d:{direction}" if pool else f"{family}:{direction}")
    inputs = op.make_inputs(p, np.random.default_rng(0), np.float32)
    b.run(op, p, *inputs)
    work = op.min_bytes(p) if pool else op.flops(p)
    benchmark.extra_info.update(case=f"{label} [{direction}]", backend=backend, work=work,
                                unit="GB/s" if pool else "GFLOP/s")
    benchmark.pedantic(b.run, args=(op, p, *inputs), rounds=9, warmup_rounds=1)
