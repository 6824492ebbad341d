"""Winograd's streaming (blocks of tile rows), its filter cache and the F(4x4)/F(2x2) rule."""
import numpy as np
import pytest

import convbench as cb
from convbench.backends import get_backend, winograd
from convbench.ops import conv2d_problem, get_op
from convbench.result import PASSED
from convbench.verify import check_backend


@pytest.mark.parametrize("name", ["winograd-f2", "winograd-f4"])
def test_blocks_of_tile_rows_give_the_reference_in_all_directions(name, monkeypatch):
    """A block budget of one byte: every tile row is its own block (and the weight gradient's
    GEMMs accumulate over the blocks)."""
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    p = conv2d_problem((2, 3, 11, 9), (4, 3, 3, 3), padding=((1, 2), (1, 0)), bias=True)
    for d in ("fwd", "bwd-data", "bwd-weights"):
        c = check_backend(name, get_op(f"conv2d:{d}"), p, np.float32, seed=2)
        assert c.status == PASSED, (d, c.reason)


def test_filter_transform_is_kept_until_the_weights_change():
    backend = get_backend("winograd-f4")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y1 = cb.conv2d(x, w, padding=1, backend="winograd-f4")
    hits = backend.filters.hits
    np.testing.assert_array_equal(cb.conv2d(x, w, padding=1, backend="winograd-f4"), y1)
    assert backend.filters.hits == hits + 1
    w *= 2                                   # in place
    np.testing.assert_allclose(cb.conv2d(x, w, padding=1, backend="winograd-f4"), 2 * y1,
                               rtol=1e-5, atol=1e-5)
    assert backend.filters.hits == hits + 1


def test_tile_size_rule_takes_f4_where_its_tiles_reuse_the_filters():
    big = conv2d_problem((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    small = conv2d_problem((8, 512, 7, 7), (512, 512, 3, 3), padding=1)
    assert winograd.choose_m(big) == 4 and winograd.choose_m(small) == 2
    backend = get_backend("winograd")
    assert backend.tile_size(big) == 4 and backend.tile_size(small) == 2
