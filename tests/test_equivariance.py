"""Translation equivariance: shifting the input shifts the output, on every CPU backend.

A stride-1 convolution computes the same dot product at every position, so conv(shift(x)) equals
shift(conv(x)) wherever neither side's receptive field reaches the padding or the pixels that the
shift wrapped around (the interior).
"""
import numpy as np
import pytest

from convbench.api import execute
from convbench.backends import backend_names, get_backend
from convbench.ops import conv2d_problem, get_op
from convbench.ops import reference as ref
from convbench.verify import tolerance

OP = get_op("conv2d:fwd")


def _cpu_backends():
    """Every registered backend that runs here on the CPU (the registry decides, not this list)."""
    out = []
    for name in backend_names():
        b = get_backend(name)
        if b.available and b.device == "cpu" and b.implements(OP):
            out.append(name)
    return out


@pytest.mark.parametrize("backend", _cpu_backends())
@pytest.mark.parametrize("shift", [(2, 3), (-1, 2)])
def test_shifting_the_input_shifts_the_output(backend, shift, rng):
    N, C, H, W, K = 2, 3, 12, 11, 4
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    p = conv2d_problem(x.shape, w.shape, padding=1, bias=True)
    sh, sw = shift
    xs = np.ascontiguousarray(np.roll(x, shift, axis=(2, 3)))
    y = execute(OP.name, backend, p, (x, w, b))
    ys = execute(OP.name, backend, p, (xs, w, b))
    # interior: output rows i of ys read x rows i-1-sh .. i+1-sh, none wrapped and none padding
    rows = np.arange(H)
    cols = np.arange(W)
    ri = rows[(rows - 1 - sh >= 0) & (rows + 1 - sh <= H - 1) & (rows - 1 >= max(sh, 0))
              & (rows + 1 <= H - 1 + min(sh, 0))]
    ci = cols[(cols - 1 - sw >= 0) & (cols + 1 - sw <= W - 1) & (cols - 1 >= max(sw, 0))
              & (cols + 1 <= W - 1 + min(sw, 0))]
    assert len(ri) >= 4 and len(ci) >= 4
    got = ys[:, :, ri][:, :, :, ci]
    want = y[:, :, ri - sh][:, :, :, ci - sw]
    scale = float(ref.conv2d_fwd(p, np.abs(x), np.abs(w), np.abs(b)).max())
    tol = tolerance(OP, p, np.float32, get_backend(backend))
    # each side is within tol * scale of the exact value
    assert np.abs(got - want).max() <= 2 * tol * scale
    # and the exact values themselves agree (the reference is shift-equivariant too)
    np.testing.assert_allclose(ref.conv2d_fwd(p, xs, w, b)[:, :, ri][:, :, :, ci],
                               ref.conv2d_fwd(p, x, w, b)[:, :, ri - sh][:, :, :, ci - sw],
                               rtol=1e-12, atol=1e-12)
    # outside the interior the shifted output differs: the padding and the wrap break it
    edge = [0, H - 1]
    rolled = np.roll(y, shift, axis=(2, 3))
    assert np.abs(ys[:, :, edge] - rolled[:, :, edge]).max() > 10 * tol * scale
