"""Stochastic depth on ResidualBlock, tested like Dropout: per-sample masks with the 1/(1-p)
scaling, identity in evaluation, expectation kept, gradients through the same masks."""
import numpy as np
import pytest

from convbench.train import layers as L


def _block(p, seed=3, cin=2, cout=2, stride=1, dtype=np.float64):
    b = L.ResidualBlock(cin, cout, stride, "im2col", rng=np.random.default_rng(seed), drop_path=p)
    for part in b.parts:                       # float64 for exact comparisons and differences
        part.w, part.b = part.w.astype(dtype), part.b.astype(dtype)
        part.params = [part.w, part.b]
    b.params = [q for part in b.parts for q in part.params]
    return b


def test_evaluation_is_the_plain_block_and_p0_never_drops(rng):
    x = rng.standard_normal((5, 2, 6, 6))
    plain, dropping = _block(0.0), _block(0.7)
    ref = plain.forward(x, training=False)
    np.testing.assert_array_equal(dropping.forward(x, training=False), ref)
    np.testing.assert_array_equal(plain.forward(x, training=True), ref)
    with pytest.raises(ValueError, match=r"drop_path=1.0 must be in \[0, 1\)"):
        L.ResidualBlock(2, 2, drop_path=1.0)
    assert "drop_path 0.7" in repr(dropping)


def test_whole_samples_are_dropped_or_kept_and_scaled(rng):
    p = 0.5
    b = _block(p)
    x = rng.standard_normal((400, 2, 4, 4))
    b.forward(x, training=False)
    branch = b.out - x                              # identity skip: out = branch + x
    b.forward(x, training=True)
    dropped = np.all(b.out == x, axis=(1, 2, 3))
    kept = ~dropped
    assert 160 < dropped.sum() < 240                # Binomial(400, 0.5): 8 sigma either side
    np.testing.assert_allclose(b.out[kept], x[kept] + branch[kept] / (1 - p), rtol=1e-12)
    # the expectation over the draws equals the evaluation value: the batch holds one image
    one = np.repeat(x[:1], 4000, axis=0)
    b.forward(one, training=True)
    mean = b.out.mean(axis=0)
    sd = np.abs(branch[0]) * np.sqrt(p / (1 - p)) / np.sqrt(4000)   # std of the mean per unit
    assert np.all(np.abs(mean - (x[0] + branch[0])) <= 5 * sd + 1e-12)


@pytest.mark.parametrize("cin,cout,stride", [(2, 2, 1), (2, 3, 2)])
def test_gradients_go_through_the_same_masks(cin, cout, stride, rng):
    """Finite differences with the mask frozen (the rng reset before each forward), and dropped
    samples get no gradient through their branch."""
    b = _block(0.5, cin=cin, cout=cout, stride=stride)
    x = rng.standard_normal((6, cin, 6, 6))

    def fwd(xx):
        b.rng = np.random.default_rng(11)
        return b.forward(xx, training=True)
    y = fwd(x)
    keep = b.keep[:, 0, 0, 0]
    assert set(np.unique(keep)) == {0.0, 2.0}
    dy = rng.standard_normal(y.shape)
    dx = b.backward(dy)
    h = 1e-6
    v = rng.standard_normal(x.shape)
    fd = (np.sum(dy * fwd(x + h * v)) - np.sum(dy * fwd(x - h * v))) / (2 * h)
    assert float(np.sum(dx * v)) == pytest.approx(fd, rel=1e-5, abs=1e-7)
    fwd(x)
    b.backward(dy)
    for prm, g in zip(b.params, b.grads):
        vp = rng.standard_normal(prm.shape)
        prm += h * vp
        plus = np.sum(dy * fwd(x))
        prm -= 2 * h * vp
        minus = np.sum(dy * fwd(x))
        prm += h * vp
        assert float(np.sum(g * vp)) == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-7)
    # a dropped sample's gradient goes through the skip only: with the identity skip,
    # dx = dy where relu(x) passed it
    if cin == cout and stride == 1:
        dropped = keep == 0
        np.testing.assert_array_equal(dx[dropped], dy[dropped] * (x[dropped] > 0))
