"""conv2d as one sparse matrix: M @ x is the forward, M.T @ dy the input gradient."""
import numpy as np
import pytest
import scipy.sparse as sp

import convbench as cb
from convbench.ops import conv2d_problem
from convbench.ops import reference as ref

CASES = [
    # x_shape, w_shape, stride, padding, dilation, groups
    ((1, 1, 5, 5), (2, 1, 3, 3), 1, 1, 1, 1),
    ((2, 3, 6, 7), (4, 3, 3, 2), 1, 0, 1, 1),
    ((2, 4, 7, 6), (6, 2, 3, 3), 2, ((1, 0), (2, 1)), 1, 2),
    ((1, 3, 9, 8), (3, 1, 3, 3), 1, "same", 2, 3),
    ((3, 2, 5, 9), (2, 2, 1, 3), (2, 1), (0, 2), (1, 2), 1),
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CASES)
def test_matrix_times_input_is_the_convolution_and_its_transpose_the_input_gradient(
        xs, ws, stride, padding, dilation, groups, rng):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    M = cb.conv2d_matrix(xs, w, **kw)
    p = conv2d_problem(xs, ws, **kw)
    assert sp.issparse(M) and M.format == "csr" and M.dtype == np.float64
    assert M.shape == (int(np.prod(p.y_shape)), int(np.prod(xs)))
    np.testing.assert_allclose(M @ x.ravel(), ref.conv2d_fwd(p, x, w).ravel(), rtol=1e-12,
                               atol=1e-12)
    dy = rng.standard_normal(p.y_shape)
    np.testing.assert_allclose(M.T @ dy.ravel(), ref.conv2d_bwd_data(p, dy, w).ravel(),
                               rtol=1e-12, atol=1e-12)
    # one stored entry per tap that reads a real pixel: the MACs minus those on padding
    ones = ref.conv2d_fwd(p, np.ones(xs), np.ones(ws)).sum()
    assert M.nnz == int(round(ones)) <= p.macs


def test_batch_is_block_diagonal_and_zero_weights_stay_in_the_pattern(rng):
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0, 1, 1] = 1
    M = cb.conv2d_matrix((2, 1, 4, 4), w, padding=1)
    one = cb.conv2d_matrix((1, 1, 4, 4), w, padding=1)
    # taps inside per axis: 3 + 4 + 3
    assert M.dtype == np.float32 and M.nnz == 2 * one.nnz == 2 * 10 * 10
    np.testing.assert_array_equal(M[:16, :16].toarray(), one.toarray())
    assert M[:16, 16:].nnz == 0 and M[16:, :16].nnz == 0
    np.testing.assert_array_equal(one.toarray(), np.eye(16, dtype=np.float32))   # identity filter
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(M @ x.ravel(), cb.conv2d(x, w, padding=1).ravel())


def test_bad_arguments_name_the_value():
    w = np.ones((2, 1, 3, 3))
    with pytest.raises(ValueError, match="padding=-1 must be >= 0"):
        cb.conv2d_matrix((1, 1, 5, 5), w, padding=-1)
    with pytest.raises(ValueError, match="must equal x.shape"):
        cb.conv2d_matrix((1, 2, 5, 5), w)
    with pytest.raises(TypeError, match="w.dtype=int64"):
        cb.conv2d_matrix((1, 1, 5, 5), np.ones((2, 1, 3, 3), np.int64))
    with pytest.raises(TypeError, match="w must be a numpy.ndarray"):
        cb.conv2d_matrix((1, 1, 5, 5), [[1.0]])


def test_filters_command_writes_the_matrix_figure_beside_the_gallery(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from convbench.cli import main
    src = tmp_path / "in.png"
    pixels = np.random.default_rng(0).uniform(size=(60, 64, 3)) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(src)
    res = CliRunner().invoke(main, ["filters", str(src), "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "g-matrix.png").size[0] > 600
    assert "g-matrix.png" in res.output
