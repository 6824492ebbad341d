import numpy as np
import pytest

from convbench.filters import FILTERS, apply_filter


@pytest.fixture
def img(rng):
    return rng.uniform(0.2, 1.0, size=(3, 10, 12)).astype(np.float32)


def test_identity_and_shift_right(img):
    np.testing.assert_allclose(apply_filter(img, FILTERS["identity"]), img)
    shifted = apply_filter(img, FILTERS["shift right"], backend="numba-cpu")
    np.testing.assert_allclose(shifted[:, :, 1:], img[:, :, :-1])
    np.testing.assert_array_equal(shifted[:, :, 0], 0)        # zero padding came in on the left


def test_zero_padding_darkens_the_blur_border_reflect_does_not(img):
    const = np.full_like(img, 0.5)
    zero = apply_filter(const, FILTERS["box blur"], "zeros")
    refl = apply_filter(const, FILTERS["box blur"], "reflect")
    np.testing.assert_allclose(refl, 0.5, rtol=1e-6)
    np.testing.assert_allclose(zero[:, 1:-1, 1:-1], 0.5, rtol=1e-6)
    assert zero[0, 0, 0] == pytest.approx(0.5 * 4 / 9)        # corner sees 4 of 9 pixels
    lap = apply_filter(const, FILTERS["laplacian edges"], "reflect", backend="fft")
    np.testing.assert_allclose(lap, 0, atol=1e-6)


def test_gallery_writes_a_png(tmp_path):
    from PIL import Image

    from convbench.filters import gallery
    src = tmp_path / "in.png"
    pixels = np.random.default_rng(0).uniform(size=(20, 24, 3)) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(src)
    out = gallery(str(src), str(tmp_path / "g.png"), crop=8)
    assert Image.open(out).size[0] > 100
