"""Every backend against the float64 reference, in every direction, on edge and random cases."""
import numpy as np
import pytest

from convbench.backends import backend_names, get_backend
from convbench.cases import conv_edge_cases, random_conv_cases
from convbench.ops import ops_of
from convbench.result import PASSED, UNAVAILABLE, UNIMPLEMENTED
from convbench.verify import check_backend

CASES = conv_edge_cases() + random_conv_cases(12, seed=7) + random_conv_cases(20, seed=0)
CONV_OPS = ops_of("conv2d")
#: Inference runtimes (peers): forward only, the gradients are UNIMPLEMENTED.
FORWARD_ONLY = ("onnxruntime", "openvino")


def _winograd_can(op, p):
    return ((p.R, p.S) == (3, 3) and p.stride == (1, 1) and p.dilation == (1, 1) and p.groups == 1
            and (op.direction != "bwd-data" or max(max(x) for x in p.padding) <= 2))


def _params():
    for name in backend_names():
        for label, _, p in CASES:
            yield pytest.param(name, p, id=f"{name}-{label}")


@pytest.mark.parametrize("backend,problem", list(_params()))
def test_backend_matches_reference_all_directions(backend, problem):
    for op in CONV_OPS:
        c = check_backend(backend, op, problem, np.float32, seed=3)
        if c.status == UNAVAILABLE:
            pytest.skip(c.reason)
        if backend in FORWARD_ONLY and op.direction != "fwd":
            assert c.status == UNIMPLEMENTED and "does not implement" in c.reason, c.reason
            continue
        if backend == "numpy":      # pooling and recurrent cells only
            assert c.status == UNIMPLEMENTED and "does not implement conv2d" in c.reason
            continue
        if backend.startswith("winograd") and not _winograd_can(op, problem):
            assert c.status == UNIMPLEMENTED, c.reason
            continue
        assert c.status == PASSED, f"{op.name} {problem}: {c.status} {c.reason}"


def test_winograd_runs_the_3x3_stride_1_cases_and_explains_the_rest():
    from convbench.ops import conv2d_problem, get_op
    p = conv2d_problem((2, 3, 9, 7), (4, 3, 3, 3), padding=((1, 2), (0, 1)))
    for name in ("winograd-f2", "winograd-f4", "winograd"):
        for d in ("fwd", "bwd-data", "bwd-weights"):
            assert check_backend(name, get_op(f"conv2d:{d}"), p, np.float32).status == PASSED
        c = check_backend(name, get_op("conv2d:fwd"),
                          conv2d_problem((1, 2, 8, 8), (2, 2, 3, 3), stride=2), np.float32)
        assert c.status == UNIMPLEMENTED and "stride (2, 2) (1 only)" in c.reason


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_kernel_sums_are_the_matrices(m):
    """The kernels write B^T d and A^T m out as sums; they must be the published matrices."""
    from convbench.backends import _numba_winograd_kernels as k
    from convbench.backends.winograd import MATRICES
    BT, _, AT = MATRICES[m]
    bt, at = (k._bt2, k._at2) if m == 2 else (k._bt4, k._at4)
    eye = np.eye(m + 2, dtype=np.float32)
    np.testing.assert_array_equal(np.array([bt.py_func(*col) for col in eye]).T, BT)
    np.testing.assert_array_equal(np.array([at.py_func(*col) for col in eye]).T, AT)
    g = k._g2 if m == 2 else k._g4
    np.testing.assert_allclose(np.array([g.py_func(*col) for col in np.eye(3, dtype=np.float32)]).T,
                               MATRICES[m][1], rtol=1e-7)


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_many_lane_blocks_bias_and_uneven_padding(m):
    """Several lane blocks with a partial one, rows and columns cropped, bias added on output."""
    import convbench as cb
    from convbench.ops import conv2d_problem
    from convbench.ops.reference import conv2d_fwd as conv2d_fwd_ref
    rng = np.random.default_rng(m)
    x = rng.standard_normal((5, 3, 20, 23)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    pad = ((2, 0), (1, 2))
    y = cb.conv2d(x, w, b, padding=pad, backend=f"winograd-f{m}")
    p = conv2d_problem(x.shape, w.shape, padding=pad, bias=True)
    ref = conv2d_fwd_ref(p, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("backend", ["naive", "im2col", "im2col-numba", "fft", "numba-cpu", "torch",
                                     "winograd-f2", "winograd-f4"])
def test_float64_inputs_give_float64_accuracy(backend):
    label, _, p = conv_edge_cases()[3]
    for op in CONV_OPS:
        c = check_backend(backend, op, p, np.float64, seed=5)
        if c.status == UNAVAILABLE:
            pytest.skip(c.reason)
        assert c.status == PASSED, c.reason
        assert c.rel_error < 1e-13


def test_every_backend_reports_availability_with_a_reason():
    import convbench as cb
    infos = cb.list_backends()
    assert [i.name for i in infos] == backend_names(include_meta=True)
    for info in infos:
        assert info.available or info.reason, info
        assert info.ops


def test_backend_without_cuda_says_why(monkeypatch):
    from convbench.backends import numba_cuda
    monkeypatch.setattr(numba_cuda._cuda(), "is_available", lambda: False)
    assert "no CUDA GPU found" in get_backend("numba-cuda").unavailable_reason()


@pytest.mark.parametrize("backend", ["numba-cpu", "winograd-f2", "winograd-f4", "winograd",
                                     "im2col", "im2col-numba"])
def test_results_do_not_alias_scratch_buffers(backend):
    """Compiled backends reuse scratch buffers between calls; a result must survive the next
    call."""
    import convbench as cb
    rng = np.random.default_rng(0)
    shapes = [((2, 3, 6, 6), (4, 3, 3, 3), 1)] + ([((2, 3, 40, 40), (4, 3, 1, 1), 0)]
                                                  if not backend.startswith("winograd") else [])
    for xs, ws, pad in shapes:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        y1 = cb.conv2d(x, w, padding=pad, backend=backend)
        keep = y1.copy()
        dx1, _, _ = cb.conv2d_backward(np.ones_like(y1), x, w, padding=pad,
                                       backend="im2col" if backend.startswith("winograd")
                                       else backend)
        cb.conv2d(x * 2, w, padding=pad, backend=backend)
        np.testing.assert_array_equal(y1, keep)


@pytest.mark.parametrize("backend", ["im2col", "im2col-numba"])
@pytest.mark.parametrize("hw,stride", [(6, 1), (20, 1), (40, 2)])
def test_im2col_pointwise_weight_gradient_batched_and_per_image(hw, stride, backend):
    """1x1 weight gradients run as one batch-wide GEMM on small planes, per image on large ones."""
    from convbench.backends.im2col import FOLD_BELOW_POSITIONS
    from convbench.ops import conv2d_problem, get_op
    p = conv2d_problem((3, 5, hw, hw), (4, 5, 1, 1), stride=stride)
    assert (p.P * p.Q < FOLD_BELOW_POSITIONS) == (hw == 6)
    c = check_backend(backend, get_op("conv2d:bwd-weights"), p, np.float32, seed=1)
    assert c.status == PASSED, c.reason


def test_im2col_numba_large_layer_runs_threads_over_images_and_groups():
    """A batch large enough for the GEMMs to use every thread, with groups and a bias: the
    per-image products write straight into the output's group slices."""
    from convbench.ops import conv2d_problem, get_op
    p = conv2d_problem((4, 8, 24, 24), (12, 4, 3, 3), padding=1, groups=2, bias=True)
    for d in ("fwd", "bwd-data", "bwd-weights"):
        c = check_backend("im2col-numba", get_op(f"conv2d:{d}"), p, np.float32, seed=2)
        assert c.status == PASSED, (d, c.reason)


@pytest.mark.parametrize("name", ["winograd-f2", "winograd-f4"])
def test_winograd_short_reductions_stay_within_their_tolerance(name):
    """One input channel (n = 9): the transforms' own rounding dominates; found by random cases."""
    from convbench.ops import conv2d_problem, get_op
    p = conv2d_problem((4, 1, 29, 14), (3, 1, 3, 3), padding=((1, 1), (0, 0)))
    for d in ("fwd", "bwd-data", "bwd-weights"):
        for seed in (3, 4, 5):
            c = check_backend(name, get_op(f"conv2d:{d}"), p, np.float32, seed=seed)
            assert c.status == PASSED, (d, seed, c.reason)


@pytest.mark.parametrize("direction,operand,padding", [
    ("fwd", 0, 1), ("fwd", 1, 0), ("bwd-data", 0, 1), ("bwd-data", 1, 1), ("bwd-weights", 0, 0),
    ("bwd-weights", 1, 1)])
def test_fft_marks_nan_exactly_where_the_reference_has_it(direction, operand, padding):
    """fft's NaN come from counts of NaN products (backends.nonfinite); they must match the
    direct sums' NaN, a NaN meeting zero padding included (tests/test_reliability.py has the
    infinities)."""
    from convbench.ops import conv2d_problem, get_op
    p = conv2d_problem((2, 4, 9, 8), (6, 2, 3, 2), stride=(2, 1), padding=padding,
                       dilation=(2, 1), groups=2)
    op = get_op(f"conv2d:{direction}")
    inputs = list(op.make_inputs(p, np.random.default_rng(0), np.float32))
    inputs[operand] = inputs[operand].copy()
    inputs[operand].flat[[3, 40]] = np.nan
    c = check_backend("fft", op, p, np.float32, inputs=tuple(inputs), keep_outputs=True)
    assert c.status == PASSED, c.reason
    assert np.isnan(c.outputs[0]).any() and not np.isnan(c.outputs[0]).all()


def test_numba_cuda_imports_on_a_numpy_without_row_stack_and_leaves_numpy_alone():
    """numpy 2.5 has no np.row_stack, which numba-cuda 0.30.4 names; the alias lives only while
    numba-cuda is imported."""
    import subprocess
    import sys
    pytest.importorskip("numba_cuda")
    code = ("import os; os.environ['NUMBA_ENABLE_CUDASIM'] = '1'; import numpy as np; "
            "del np.row_stack; import convbench as cb; x = np.ones((1, 1, 4, 4), np.float32); "
            "y = cb.conv2d(x, np.ones((1, 1, 3, 3), np.float32), backend='numba-cuda'); "
            "print(float(y.sum()), hasattr(np, 'row_stack'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["36.0", "False"]
