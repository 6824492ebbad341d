import numpy as np
import pytest

from convbench.tcn import TCNParams, receptive_field, tcn_block, tcn_block_backward


def _params(rng, C, K, S, down):
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float64)  # noqa: E731
    return TCNParams(f(K, C, S), f(K), f(K, K, S), f(K), f(K, C, 1) if down else None,
                     f(K) if down else None)


@pytest.mark.parametrize("down", [False, True])
def test_tcn_block_is_causal_and_its_gradient_matches_finite_differences(down, rng):
    C, K = (3, 4) if down else (3, 3)
    prm = _params(rng, C, K, 3, down)
    x = rng.standard_normal((2, C, 12))
    y, cache = tcn_block(x, prm, dilation=2, backend="numba-cpu")
    assert y.shape == (2, K, 12)
    x2 = x.copy()
    x2[:, :, 8:] += 5
    np.testing.assert_array_equal(y[:, :, :8],
                                  tcn_block(x2, prm, dilation=2, backend="numba-cpu")[0][:, :, :8])
    dy = rng.standard_normal(y.shape)
    dx, grads = tcn_block_backward(dy, cache, prm, dilation=2)
    v = rng.standard_normal(x.shape)
    h = 1e-6
    fd = (np.sum(dy * tcn_block(x + h * v, prm, 2)[0])
          - np.sum(dy * tcn_block(x - h * v, prm, 2)[0])) / (2 * h)
    assert float(np.sum(dx * v)) == pytest.approx(fd, rel=1e-5)
    vw = rng.standard_normal(prm.w1.shape)
    p_plus = TCNParams(prm.w1 + h * vw, *list(vars(prm).values())[1:])
    p_minus = TCNParams(prm.w1 - h * vw, *list(vars(prm).values())[1:])
    fdw = (np.sum(dy * tcn_block(x, p_plus, 2)[0])
           - np.sum(dy * tcn_block(x, p_minus, 2)[0])) / (2 * h)
    assert float(np.sum(grads.w1 * vw)) == pytest.approx(fdw, rel=1e-5)


def test_receptive_field_grows_with_dilation():
    assert receptive_field(3, [1, 2, 4, 8]) == 1 + 2 * 2 * 15


def test_channel_change_needs_a_downsample():
    rng = np.random.default_rng(0)
    prm = _params(rng, 3, 4, 3, False)
    with pytest.raises(ValueError, match="give w_down"):
        tcn_block(rng.standard_normal((1, 3, 8)), prm)
