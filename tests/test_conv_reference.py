"""The float64 references: shapes, gradients by finite differences, and agreement with torch."""
import numpy as np
import pytest

from convbench.cases import conv_edge_cases, random_conv_cases
from convbench.ops import conv2d_problem, get_op
from convbench.ops import reference as ref

CASES = conv_edge_cases() + random_conv_cases(8, seed=1)
IDS = [c[0] for c in CASES]


def test_output_size_formula():
    p = conv2d_problem((1, 1, 10, 11), (1, 1, 3, 2), stride=(2, 3), padding=((1, 2), (0, 1)),
                       dilation=(2, 1))
    assert p.P == (10 + 3 - 2 * 2 - 1) // 2 + 1
    assert p.Q == (11 + 1 - 1 * 1 - 1) // 3 + 1
    y = ref.conv2d_fwd(p, np.zeros(p.x_shape), np.zeros(p.w_shape))
    assert y.shape == p.y_shape


def test_same_padding_keeps_size_and_puts_odd_pixel_last():
    p = conv2d_problem((1, 1, 7, 6), (1, 1, 4, 3), padding="same")
    assert (p.P, p.Q) == (7, 6)
    assert p.padding == ((1, 2), (1, 1))


def _fd_check(p, rng):
    """<dL/dx, v> against the central difference of L = <dy, conv(x, w)> along v (and for w)."""
    x = rng.standard_normal(p.x_shape)
    w = rng.standard_normal(p.w_shape)
    dy = rng.standard_normal(p.y_shape)
    vx = rng.standard_normal(p.x_shape)
    vw = rng.standard_normal(p.w_shape)
    h = 1e-6

    def loss(xx, ww):
        return float(np.sum(dy * ref.conv2d_fwd(p, xx, ww)))

    fd_x = (loss(x + h * vx, w) - loss(x - h * vx, w)) / (2 * h)
    fd_w = (loss(x, w + h * vw) - loss(x, w - h * vw)) / (2 * h)
    an_x = float(np.sum(ref.conv2d_bwd_data(p, dy, w) * vx))
    an_w = float(np.sum(ref.conv2d_bwd_weights(p, dy, x) * vw))
    assert an_x == pytest.approx(fd_x, rel=1e-6, abs=1e-6)
    assert an_w == pytest.approx(fd_w, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("label,family,p", CASES, ids=IDS)
def test_reference_gradients_match_finite_differences(label, family, p, rng):
    _fd_check(p, rng)


def test_bias_gradient_is_sum_of_dy(rng):
    p = conv2d_problem((2, 3, 5, 5), (4, 3, 3, 3), padding=1, bias=True)
    x, w, b = (rng.standard_normal(s) for s in (p.x_shape, p.w_shape, (p.K,)))
    dy = rng.standard_normal(p.y_shape)
    h, v = 1e-6, rng.standard_normal(p.K)
    fd = (np.sum(dy * ref.conv2d_fwd(p, x, w, b + h * v))
          - np.sum(dy * ref.conv2d_fwd(p, x, w, b - h * v))) / (2 * h)
    assert float(np.sum(ref.conv2d_bwd_bias(dy) * v)) == pytest.approx(fd, rel=1e-7)


@pytest.mark.parametrize("label,family,p", CASES, ids=IDS)
def test_reference_agrees_with_torch_float64(label, family, p, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal(p.x_shape)
    w = rng.standard_normal(p.w_shape)
    (pt, pb), (pl, pr) = p.padding
    xt = F.pad(torch.from_numpy(x), (pl, pr, pt, pb))
    yt = F.conv2d(xt, torch.from_numpy(w), stride=p.stride, dilation=p.dilation, groups=p.groups)
    np.testing.assert_allclose(ref.conv2d_fwd(p, x, w), yt.numpy(), rtol=1e-12, atol=1e-12)


def test_causal_conv1d_output_never_sees_the_future(rng):
    from convbench.ops import conv1d_problem
    p = conv1d_problem((1, 2, 12), (3, 2, 3), padding="causal", dilation=2)
    assert p.Q == 12
    x = rng.standard_normal(p.x_shape)
    w = rng.standard_normal(p.w_shape)
    y = ref.conv2d_fwd(p, x, w)
    x2 = x.copy()
    x2[..., 7:] += 100.0                      # change the future from t = 7 on
    y2 = ref.conv2d_fwd(p, x2, w)
    np.testing.assert_array_equal(y[..., :7], y2[..., :7])
    assert not np.allclose(y[..., 7:], y2[..., 7:])


def test_scale_bounds_the_output(rng):
    op = get_op("conv2d:fwd")
    p = conv2d_problem((2, 3, 6, 6), (4, 3, 3, 3), padding=1)
    inputs = op.make_inputs(p, rng, np.float64)
    (scale,) = op.scale(p, inputs, None)
    assert np.abs(op.reference(p, *inputs)).max() <= scale


@pytest.mark.parametrize("label,family,p", CASES, ids=IDS)
def test_chunked_reference_equals_the_plain_one(label, family, p, rng, monkeypatch):
    monkeypatch.setattr(ref, "CHUNK_ELEMENTS", 1)           # one image per chunk
    x, w, dy = (rng.standard_normal(s) for s in (p.x_shape, p.w_shape, p.y_shape))
    b = rng.standard_normal(p.K) if p.bias else None
    for chunked, plain, args in ((ref.conv2d_fwd_chunked, ref.conv2d_fwd, (x, w, b)),
                                 (ref.conv2d_bwd_data_chunked, ref.conv2d_bwd_data, (dy, w)),
                                 (ref.conv2d_bwd_weights_chunked, ref.conv2d_bwd_weights, (dy, x))):
        np.testing.assert_allclose(chunked(p, *args), plain(p, *args), rtol=1e-12, atol=1e-12)


def test_large_conv_problems_are_checked_against_the_chunked_reference():
    big = conv2d_problem((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    small = conv2d_problem((2, 4, 8, 8), (4, 4, 3, 3), padding=1)
    for direction in ("fwd", "bwd-data", "bwd-weights"):
        op = get_op(f"conv2d:{direction}")
        assert op.reference_for(big).__name__.endswith("_chunked")
        assert op.reference_for(small) is op.reference
