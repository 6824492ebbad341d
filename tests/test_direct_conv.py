"""convbench.kernels.conv, the direct convolution numba-cpu runs: the generated kernels match their
generator, their inner loops are full-width FMAs with no gathers and no spills, every tile table
(AVX-512, AVX2, SSE) gives the reference's answer on strided, dilated, grouped and depthwise
problems, and the weight cache notices weights changed in place.

(The backend itself is verified against the reference with every other backend in
test_conv_backends.py; these tests reach the tiles and paths its cases may not pick here.)
"""
import re

import numpy as np
import pytest

from convbench.kernels import _conv_codegen, isa, vector_bits
from convbench.kernels import conv as direct
from convbench.kernels._conv_tiles import bwd_weights_tiles, depthwise_tiles, fwd_tiles
from convbench.kernels.asm import fresh_asm, hot_loop, loop_stats
from convbench.ops import reference as ref
from convbench.ops.conv import conv2d_problem


def test_generated_conv_kernels_match_the_generator():
    assert _conv_codegen.TARGET.read_text() == _conv_codegen.source(), \
        "run `python -m convbench.kernels._conv_codegen` after editing _conv_codegen.py"


def _kernels():
    from convbench.kernels import _conv_kernels
    return _conv_kernels


def _vector_stack_accesses(body) -> int:
    """Vector moves to or from the stack (%rsp: Numba's code keeps no frame pointer, so %rbp
    may be an ordinary base register)."""
    return sum(1 for line in body if re.search(r"\(%rsp[,)]", line)
               and re.search(r"%[xyz]mm", line))


def _no_spills_full_width(stats, bits, fmas_per_step, what):
    unroll = sum(stats.fma.values()) // fmas_per_step
    assert unroll >= 1 and stats.fma == {bits: unroll * fmas_per_step}, (what, stats)
    assert stats.gathers == 0, (what, stats)
    return unroll


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_tiles_inner_loop_is_full_width_fmas_without_gathers_or_spills(dtype):
    if isa() == "other":
        pytest.skip("no AVX2 or AVX-512 here")
    bits = vector_bits()
    buf = np.zeros(1 << 16, dtype)
    toff = np.zeros(9, np.int64)
    for th, tw, nkb, lanes in fwd_tiles(isa(), np.dtype(dtype).name):
        fn = getattr(_kernels(), f"fwd_{th}x{tw}k{nkb}v{lanes}")
        body = hot_loop(fresh_asm(fn, 2, 9, lanes, buf, 0, 4096, 512, toff, buf, 0, buf, 0,
                                  4096, 512, 1, 1, tw, nkb * lanes, buf, 0))
        stats = loop_stats(body)
        unroll = _no_spills_full_width(stats, bits, th * tw * nkb, (th, tw, nkb))
        # the accumulators stay in registers: no vector register goes to or from the stack
        # (a loop bound may, where the general registers run short)
        assert _vector_stack_accesses(body) == 0, ((th, tw, nkb), body)
        # one broadcast per position and one load per output block, per step (an input used
        # by one FMA may be folded into it as a broadcast operand)
        assert stats.broadcasts <= unroll * th * tw, ((th, tw, nkb), stats)
        assert stats.instructions <= unroll * (th * tw * (nkb + 1) + nkb) + 8, stats


def test_weight_gradient_and_depthwise_loops_are_full_width_fmas():
    if isa() == "other":
        pytest.skip("no AVX2 or AVX-512 here")
    bits = vector_bits()
    buf = np.zeros(1 << 16, np.float32)
    toff = np.zeros(9, np.int64)
    for kt, ncb, lanes in bwd_weights_tiles(isa(), "float32"):
        fn = getattr(_kernels(), f"bwdw_{kt}x{ncb}v{lanes}")
        body = hot_loop(fresh_asm(fn, 2, 10, buf, 0, 4096, 512, buf, 0, 4096, 512, buf, 0))
        stats = loop_stats(body)
        unroll = _no_spills_full_width(stats, bits, kt * ncb, (kt, ncb))
        assert _vector_stack_accesses(body) == 0, ((kt, ncb), body)
        # KT broadcasts of dy and NCB loads of x per position
        assert stats.broadcasts <= unroll * kt, ((kt, ncb), stats)
    for tw, lanes in depthwise_tiles(isa(), "float32"):
        fn = getattr(_kernels(), f"dw_{tw}v{lanes}")
        stats = loop_stats(hot_loop(fresh_asm(fn, 9, buf, 0, toff, buf, 0, toff, buf, 0)))
        _no_spills_full_width(stats, bits, tw, tw)
        assert stats.stack_accesses == 0, (tw, stats)


#: Problems that reach every path: phases (stride 2 and 3), dilation, groups with partial
#: channel blocks, depthwise with a channel multiplier, a tile taken over images (7x7 outputs
#: at batch 2), asymmetric padding, conv1d-like shapes, output padding beyond the taps' reach.
PROBLEMS = [
    dict(x=(2, 5, 9, 8), w=(7, 5, 3, 3), stride=2, padding=1),
    dict(x=(1, 3, 11, 10), w=(4, 3, 3, 2), stride=(3, 2), dilation=(2, 1), padding=(2, 1)),
    dict(x=(2, 6, 7, 7), w=(4, 3, 3, 3), groups=2, padding=1),
    dict(x=(2, 20, 9, 9), w=(34, 20, 3, 3), padding=((1, 0), (2, 1))),
    dict(x=(2, 3, 8, 9), w=(6, 1, 3, 3), groups=3, stride=2, padding=1),
    dict(x=(3, 17, 6, 7), w=(17, 1, 5, 3), groups=17, dilation=(1, 2), padding=2),
    dict(x=(2, 4, 1, 15), w=(3, 4, 1, 4), stride=(1, 2), padding=((0, 0), (3, 0))),
    dict(x=(2, 8, 9, 9), w=(5, 8, 3, 3), stride=2, padding=2),
]


def _check(out, expect, n, dtype):
    u = np.finfo(dtype).eps / 2
    scale = np.abs(expect).max() if expect.size else 1.0
    assert out.shape == expect.shape
    assert np.abs(out - expect).max() <= (n + 2) * u * max(scale, 1e-30) * 4


@pytest.mark.parametrize("table", ["native", "avx2", "other"])
def test_every_tile_table_matches_the_reference_in_all_directions(table):
    rng = np.random.default_rng(11)
    dtypes = [np.float32, np.float64] if table == "native" else [np.float32]
    for dtype in dtypes:
        for kw in PROBLEMS:
            xs, ws = kw["x"], kw["w"]
            args = {k: v for k, v in kw.items() if k not in ("x", "w")}
            p = conv2d_problem(xs, ws, bias=True, **args)
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            b = rng.standard_normal(p.K).astype(dtype)
            dy = rng.standard_normal(p.y_shape).astype(dtype)
            X, W, DY = (a.astype(np.float64) for a in (x, w, dy))
            t = None if table == "native" else table
            cache = direct.WeightCache()
            _check(direct.forward(p, x, w, b, isa=t, cache=cache),
                   ref.conv2d_fwd(p, X, W, b.astype(np.float64)), p.Cg * p.R * p.S + 1, dtype)
            _check(direct.input_grad(p, dy, w, isa=t, cache=cache),
                   ref.conv2d_bwd_data(p, DY, W), p.Kg * p.R * p.S, dtype)
            _check(direct.weight_grad(p, dy, x, isa=t), ref.conv2d_bwd_weights(p, DY, X),
                   p.N * p.P * p.Q, dtype)


def test_a_tile_over_images_is_chosen_for_small_planes_and_matches():
    p = conv2d_problem((4, 16, 7, 7), (32, 16, 3, 3), padding=1)
    plan = direct.fwd_plan("avx512", np.float32, p.N, p.P, p.Q, p.Cg, p.Kg)
    assert plan.tile.images and plan.tile.th > 1 and plan.Py == p.P
    rng = np.random.default_rng(1)
    x = rng.standard_normal(p.x_shape).astype(np.float32)
    w = rng.standard_normal(p.w_shape).astype(np.float32)
    _check(direct.forward(p, x, w, isa="avx512"), ref.conv2d_fwd(p, x.astype(np.float64),
                                                                  w.astype(np.float64)),
           p.Cg * 9, np.float32)


def test_weight_cache_reuses_unchanged_weights_and_notices_changes_in_place():
    p = conv2d_problem((1, 4, 6, 6), (8, 4, 3, 3), padding=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(p.x_shape).astype(np.float32)
    w = rng.standard_normal(p.w_shape).astype(np.float32)
    cache = direct.WeightCache()
    y1 = direct.forward(p, x, w, cache=cache)
    y2 = direct.forward(p, x, w, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1) and cache.nbytes > 0
    np.testing.assert_array_equal(y1, y2)
    w[3, 1, 2, 0] += 1.0                    # an optimiser's step, in place
    y3 = direct.forward(p, x, w, cache=cache)
    assert cache.misses == 2
    np.testing.assert_array_equal(y3, direct.forward(p, x, w.copy(), cache=direct.WeightCache()))
    assert not np.array_equal(y1, y3)
    w2 = w.copy()                           # equal contents, another array: its own entry
    direct.forward(p, x, w2, cache=cache)
    assert cache.misses == 3
    del w2                                  # entries go with their arrays
    assert len(cache._entries) == 1
    cache.enabled = False
    direct.forward(p, x, w, cache=cache)
    assert cache.misses == 3 and cache.hits == 1
    assert cache.clear() > 0 and cache.nbytes == 0


def test_backend_weight_cache_is_freed_with_the_workspace():
    import convbench as cb
    from convbench.backends import get_backend
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    cb.conv2d(x, w, backend="numba-cpu")
    backend = get_backend("numba-cpu")
    assert backend.weights.nbytes > 0
    cb.free_workspace()
    assert backend.weights.nbytes == 0 and backend.workspace.nbytes == 0


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    import numba
    monkeypatch.setattr(direct, "SERIAL_MACS", 0)       # small problems run threaded too
    p = conv2d_problem((2, 16, 10, 10), (32, 16, 3, 3), padding=1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(p.x_shape).astype(np.float32)
    w = rng.standard_normal(p.w_shape).astype(np.float32)
    dy = rng.standard_normal(p.y_shape).astype(np.float32)
    before = numba.get_num_threads()
    out = []
    try:
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            out.append((direct.forward(p, x, w), direct.input_grad(p, dy, w),
                        direct.weight_grad(p, dy, x)))
            monkeypatch.setattr(direct, "FUSED_WEIGHT_BYTES", 0)     # the unfused forward
            out[-1] += (direct.forward(p, x, w),)
            monkeypatch.setattr(direct, "FUSED_WEIGHT_BYTES", 1 << 20)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(out[0], out[-1]):
        np.testing.assert_array_equal(a, b)


def test_nan_and_inf_reach_exactly_the_outputs_the_reference_gives_them():
    """The direct sums multiply the padding's zeros as the reference does, and never mix a
    position outside the output into one inside it."""
    p = conv2d_problem((2, 3, 7, 6), (4, 3, 3, 3), stride=2, padding=2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(p.x_shape).astype(np.float32)
    w = rng.standard_normal(p.w_shape).astype(np.float32)
    dy = rng.standard_normal(p.y_shape).astype(np.float32)
    x[0, 1, 2, 3], x[1, 0, 6, 5], w[2, 1, 0, 0] = np.nan, np.inf, -np.inf
    dy[1, 2, 3, 3] = np.inf
    X, W, DY = (a.astype(np.float64) for a in (x, w, dy))
    with np.errstate(invalid="ignore"):
        pairs = [(direct.forward(p, x, w, cache=direct.WeightCache()), ref.conv2d_fwd(p, X, W)),
                 (direct.weight_grad(p, dy, x), ref.conv2d_bwd_weights(p, DY, X))]
    for out, expect in pairs:
        np.testing.assert_array_equal(np.isnan(out), np.isnan(expect))
        np.testing.assert_array_equal(np.isposinf(out), np.isposinf(expect))
        np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expect))
