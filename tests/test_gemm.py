"""convbench.kernels: the Numba GEMM against float64 on ragged shapes, layouts and batches; the
generated micro-kernels' assembly (full-width packed FMAs, no gathers, no spills); the FMA-peak
kernel and the BLAS report.

Small problems with small cache blocks, so that every blocking path (K cut into several blocks,
several M and N blocks, edge tiles) runs on shapes of tens of elements. Most cases use one tile
shape to keep compilation short; one test runs every shape of this machine's ISA.
"""
import importlib

import numpy as np
import pytest

from convbench.kernels import (
    GemmParams,
    _codegen,
    blas_info,
    default_params,
    fma_peak,
    gemm,
    gemm_batched,
    isa,
    micro_shapes,
    pack,
    vector_bits,
)
from convbench.kernels import peak as peak_mod
from convbench.kernels._tiles import PEAK
from convbench.kernels.asm import fresh_asm, hot_loop, loop_stats

F32 = np.float32


def _small_blocks(dtype=F32, shape=None):
    """The ISA's first tile with cache blocks of a few tiles: every loop runs several times."""
    mr, nr = shape or micro_shapes(dtype)[0]
    return GemmParams(mr, nr, kc=7, mc=2 * mr, nc=2 * nr)


def _check(out, a_op, b_op, c0=None):
    """|out - ref| <= (k + 2) u (|A| |B| + |C0|) elementwise: the float rounding bound for a sum
    of k products (plus C0) in any order, with one more rounding for the result."""
    a64, b64 = a_op.astype(np.float64), b_op.astype(np.float64)
    ref = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    if c0 is not None:
        ref += c0
        scale += np.abs(c0)
    u = np.finfo(out.dtype).eps / 2
    bound = (a_op.shape[1] + 2) * u * scale
    err = np.abs(out.astype(np.float64) - ref)
    assert out.shape == ref.shape
    worst = err.argmax()
    assert np.all(err <= bound), f"max error {err.flat[worst]:.3g}, bound {bound.flat[worst]:.3g}"


def _operands(rng, m, n, k, trans_a, trans_b, dtype=F32):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, (a.T if trans_a else a), (b.T if trans_b else b)


RAGGED = [(1, 1, 1), (1, 37, 5), (29, 1, 13), (3, 5, 1), (17, 33, 8), (64, 64, 64),
          (45, 97, 130), (131, 70, 201), (200, 3, 77), (9, 190, 2)]


@pytest.mark.parametrize("m,n,k", RAGGED)
def test_gemm_matches_float64_on_ragged_shapes_and_transposes(m, n, k):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    p = _small_blocks()
    for trans_a in (False, True):
        for trans_b in (False, True):
            a, b, A, B = _operands(rng, m, n, k, trans_a, trans_b)
            out = gemm(a, b, trans_a=trans_a, trans_b=trans_b, params=p, threads=1)
            assert out.dtype == F32
            _check(out, A, B)


def test_gemm_accumulate_adds_to_out():
    rng = np.random.default_rng(1)
    a, b, A, B = _operands(rng, 37, 71, 23, False, True)
    c = rng.standard_normal((37, 71)).astype(F32)
    c0 = c.astype(np.float64)
    res = gemm(a, b, c, accumulate=True, trans_b=True, params=_small_blocks(), threads=1)
    assert res is c
    _check(c, A, B, c0)


@pytest.fixture
def threaded_small(monkeypatch):
    """Small products take the multi-threaded paths too (they normally run on one thread)."""
    # the module, not the function of the same name that the package exports
    monkeypatch.setattr(importlib.import_module("convbench.kernels.gemm"), "SERIAL_WORK", 0)


def test_gemm_default_params_and_threads_give_identical_bits(threaded_small):
    """Splitting M or N over threads (with the operand both pieces use packed once, by both)
    keeps every element's sum in the same order."""
    rng = np.random.default_rng(2)
    for m, n, k in ((150, 41, 90), (41, 150, 90), (8, 700, 33), (300, 200, 1000)):
        a, b, A, B = _operands(rng, m, n, k, False, False)
        one = gemm(a, b, threads=1)
        two = gemm(a, b, threads=2, params=default_params(m, n, k))
        _check(one, A, B)
        np.testing.assert_array_equal(one, two)
        small = _small_blocks()
        np.testing.assert_array_equal(gemm(a, b, threads=2, params=small),
                                      gemm(a, b, threads=1, params=small))


def test_gemm_takes_strided_views_in_place_and_copies_others():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((90, 120)).astype(F32)
    p = _small_blocks()
    cases = [
        (big[::2, :50], big[:50, 3:40]),            # row strides > row length
        (big[:40:3, ::2], big[1:61:, 5]),           # no unit stride at all (copied)
        (big[:30, :45].T, big[::-1, :20][:30]),     # transposed view; negative stride (copied)
        (np.asfortranarray(big[:33, :44]), big[:44, :9].copy(order="F")),
    ]
    for a, b in cases:
        if b.ndim == 1:
            b = b[:a.shape[1], None]
        out = gemm(a, b, params=p, threads=1)
        _check(out, a, b)


def test_gemm_writes_into_any_out_layout():
    rng = np.random.default_rng(4)
    a, b, A, B = _operands(rng, 23, 41, 19, False, False)
    p = _small_blocks()
    for make in (lambda: np.zeros((23, 41), F32, order="F"),          # C^T = B^T A^T
                 lambda: np.zeros((40, 90), F32)[5:28, 7:48],          # strided rows
                 lambda: np.zeros((23, 82), F32)[:, ::2]):             # no unit stride
        out = make()
        res = gemm(a, b, out, params=p, threads=1)
        assert res is out
        _check(out, A, B)
        before = out.astype(np.float64)
        gemm(a, b, out, accumulate=True, params=p, threads=1)
        _check(out, A, B, before)


def test_gemm_out_overlapping_an_input_gives_the_product_of_the_old_values():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 16)).astype(F32)
    expect = x.astype(np.float64) @ x.astype(np.float64)
    a = x.copy()
    gemm(a, x, a, params=_small_blocks(), threads=1)
    _check(a, x, x)
    assert np.allclose(a, expect, rtol=1e-4, atol=1e-4)


def test_gemm_empty_and_zero_depth():
    p = _small_blocks()
    assert gemm(np.ones((0, 3), F32), np.ones((3, 4), F32), params=p).shape == (0, 4)
    out = np.full((2, 4), 7, F32)
    gemm(np.ones((2, 0), F32), np.ones((0, 4), F32), out, params=p)
    assert np.all(out == 0)
    out[:] = 7
    gemm(np.ones((2, 0), F32), np.ones((0, 4), F32), out, accumulate=True, params=p)
    assert np.all(out == 7)


def test_gemm_float64():
    rng = np.random.default_rng(6)
    p = _small_blocks(np.float64)
    for trans_a, trans_b in ((False, False), (True, True)):
        a, b, A, B = _operands(rng, 45, 53, 39, trans_a, trans_b, np.float64)
        out = gemm(a, b, trans_a=trans_a, trans_b=trans_b, params=p, threads=1)
        assert out.dtype == np.float64
        _check(out, A, B)


def test_gemm_every_tile_shape_of_this_isa():
    rng = np.random.default_rng(7)
    a, b, A, B = _operands(rng, 29, 77, 21, False, False)
    for shape in micro_shapes(F32):
        out = gemm(a, b, params=_small_blocks(shape=shape), threads=1)
        _check(out, A, B)


def test_gemm_rejects_bad_arguments():
    a = np.ones((3, 4), F32)
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm(a, np.ones((5, 2), F32))
    with pytest.raises(TypeError, match="b.dtype"):
        gemm(a, np.ones((4, 2), np.float64))
    with pytest.raises(TypeError, match="a.dtype=int64"):
        gemm(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64))
    with pytest.raises(ValueError, match=r"out.shape=\(3, 3\) must be \(3, 2\)"):
        gemm(a, np.ones((4, 2), F32), np.empty((3, 3), F32))
    with pytest.raises(ValueError, match="accumulate=True needs out"):
        gemm(a, np.ones((4, 2), F32), accumulate=True)
    with pytest.raises(ValueError, match="a.ndim=3 must be 2"):
        gemm(np.ones((1, 3, 4), F32), np.ones((4, 2), F32))
    with pytest.raises(ValueError, match="kc=0 must be a positive int"):
        GemmParams(8, 32, 0, 8, 32)
    with pytest.raises(ValueError, match="threads=0"):
        gemm(a, np.ones((4, 2), F32), threads=0)


def test_gemm_batched_against_float64_with_shared_and_per_item_operands(threaded_small):
    rng = np.random.default_rng(8)
    p = _small_blocks()
    batch, m, n, k = 5, 19, 43, 27
    w = rng.standard_normal((m, k)).astype(F32)           # shared, like 1x1 conv weights
    x = rng.standard_normal((batch, k, n)).astype(F32)    # per image
    for threads in (1, 2):
        out = gemm_batched(w, x, params=p, threads=threads)
        assert out.shape == (batch, m, n)
        for i in range(batch):
            _check(out[i], w, x[i])
    # per-item A transposed, B shared and transposed: A^T B^T, accumulated
    at = rng.standard_normal((batch, k, m)).astype(F32)
    bt = rng.standard_normal((n, k)).astype(F32)
    out = rng.standard_normal((batch, m, n)).astype(F32)
    before = out.astype(np.float64)
    gemm_batched(at, bt, out, accumulate=True, trans_a=True, trans_b=True, params=p,
                 threads=2)
    for i in range(batch):
        _check(out[i], at[i].T, bt.T, before[i])


def test_gemm_batched_few_large_items_split_within_items(threaded_small):
    """Fewer products than threads: each is cut into pieces; same bits as one thread."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 70, 31)).astype(F32)
    b = rng.standard_normal((3, 31, 90)).astype(F32)
    one = gemm_batched(a, b, threads=1)
    two = gemm_batched(a, b, threads=2)
    np.testing.assert_array_equal(one, two)
    for i in range(3):
        _check(one[i], a[i], b[i])


def test_gemm_batched_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="batch 2 but b has batch 3"):
        gemm_batched(np.ones((2, 3, 4), F32), np.ones((3, 4, 5), F32))
    with pytest.raises(ValueError, match="both 2-D"):
        gemm_batched(np.ones((3, 4), F32), np.ones((4, 5), F32))


def test_generated_kernels_match_the_generator():
    assert _codegen.TARGET.read_text() == _codegen.source(), \
        "run `python -m convbench.kernels._codegen` after editing _codegen.py"


def _ukr_asm(mr, nr, dtype=F32):
    from convbench.kernels import _gemm_kernels as kern
    from convbench.kernels._tiles import LANES, kernel_suffix
    kc = 16
    a = np.ones(kc * mr, dtype)
    b = np.ones(kc * nr, dtype)
    c = np.zeros(mr * nr, dtype)
    fn = getattr(kern, "ukr_" + kernel_suffix(mr, nr, LANES[isa(), np.dtype(dtype).name]))
    return fresh_asm(fn, kc, a, 0, b, 0, c, 0, nr, mr, nr, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_microkernel_inner_loop_is_full_width_fmas_without_gathers_or_spills(dtype):
    if isa() == "other":
        pytest.skip("no AVX2 or AVX-512 here: the micro-kernels are plain SSE")
    bits = vector_bits()
    lanes = bits // (8 * np.dtype(dtype).itemsize)
    for mr, nr in micro_shapes(dtype):
        stats = loop_stats(hot_loop(_ukr_asm(mr, nr, dtype)))
        # one FMA per accumulator register per k step (LLVM may unroll the k loop), all on
        # full-width registers
        per_step = mr * nr // lanes
        unroll = sum(stats.fma.values()) // per_step
        assert unroll >= 1 and stats.fma == {bits: unroll * per_step}, (mr, nr, stats)
        assert stats.gathers == 0, (mr, nr, stats)
        assert stats.stack_accesses == 0, (mr, nr, stats)       # accumulators never spilled
        assert stats.broadcasts == unroll * mr, (mr, nr, stats)
        # nothing else but B's loads and the loop counter
        assert stats.instructions <= unroll * (per_step + mr + nr // lanes) + 6, (mr, nr, stats)


def test_hot_loop_finder_picks_the_innermost_fma_loop():
    asm = """
    .LBB0_1:
        vmovups (%rax), %zmm1
    .LBB0_2:
        vfmadd231ps %zmm1, %zmm2, %zmm3
        vmovups %zmm4, 64(%rsp)
        decq %rcx
        jne .LBB0_2
        vgatherdps (%rax,%zmm5,4), %zmm6 {%k1}
        jne .LBB0_1
    """
    body = hot_loop(asm)
    assert body[0].strip() == ".LBB0_2:" and body[-1].strip() == "jne .LBB0_2"
    stats = loop_stats(body)
    assert stats.fma == {512: 1} and stats.stack_accesses == 1 and stats.gathers == 0


def test_fma_peak_is_positive_and_runs_full_width_fmas():
    res = fma_peak(threads=2, seconds=0.005, repeats=1)
    assert np.isfinite(res.gflops) and res.gflops > 0
    assert np.isfinite(res.gflops_one_thread) and res.gflops_one_thread > 0
    assert res.isa == isa() and res.vector_bits == vector_bits()
    assert res.lanes * 32 == res.vector_bits
    assert res.threads == 2
    if isa() != "other":
        stats = peak_mod.kernel_loop_stats()
        chains = dict(PEAK)[vector_bits() // 32]
        unroll = sum(stats.fma.values()) // chains
        assert unroll >= 1 and stats.fma == {vector_bits(): unroll * chains}, stats
        assert stats.stack_accesses == 0 and stats.gathers == 0, stats


def test_blas_info_flags_a_blas_narrower_than_the_cpu(monkeypatch):
    info = blas_info()
    assert {"internal_api", "architecture", "coretype_env", "forced", "blas_vector_bits",
            "cpu_vector_bits", "narrower"} <= set(info)
    fake = [{"user_api": "blas", "internal_api": "openblas", "architecture": "Haswell",
             "filepath": "/x/numpy.libs/libopenblas.so", "num_threads": 2, "version": "0.3"}]
    monkeypatch.setattr(peak_mod, "threadpool_info", lambda: fake)
    monkeypatch.setattr(peak_mod, "cpu_isa", lambda: "avx512")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    info = blas_info()
    assert info["architecture"] == "Haswell" and info["blas_vector_bits"] == 256
    assert info["forced"] and info["coretype_env"] == "Haswell" and info["narrower"]
    fake[0]["architecture"] = "SkylakeX"
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    info = blas_info()
    assert not info["narrower"] and not info["forced"]


@pytest.mark.parametrize("m,n,k", [(1, 37, 5), (17, 33, 8), (45, 97, 130), (131, 70, 201)])
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_operands_match_float64_and_are_reused(m, n, k, threads):
    """pack(x, side) once, then many products with it: either side, transposed or not, single
    and batched (the packed matrix shared by every product), split over threads either way."""
    rng = np.random.default_rng(m + n + k)
    p = _small_blocks()
    for trans in (False, True):
        a, b, A, B = _operands(rng, m, n, k, trans, trans)
        pa = pack(a, "a", other=n, trans=trans, params=p)
        pb = pack(b, "b", other=m, trans=trans, params=p)
        assert pa.shape == (m, k) and pb.shape == (k, n)
        _check(gemm(pa, B, threads=threads), A, B)
        _check(gemm(A, pb, threads=threads), A, B)
        c0 = rng.standard_normal((m, n)).astype(F32)
        out = c0.copy()
        gemm(A, pb, out, accumulate=True, threads=threads)
        _check(out, A, B, c0)
        bs = rng.standard_normal((3, k, n)).astype(F32)
        outs = gemm_batched(pa, bs, threads=threads)
        for i in range(3):
            _check(outs[i], A, bs[i])
        as_ = rng.standard_normal((3, m, k)).astype(F32)
        outs = gemm_batched(as_, pb, threads=threads)
        for i in range(3):
            _check(outs[i], as_[i], B)
        # a column-major out goes through a temporary, not through C^T = B^T A^T
        out_f = np.empty((n, m), F32).T
        _check(gemm(A, pb, out_f, threads=threads), A, B)


def test_packed_operand_errors_name_the_argument():
    a = np.ones((4, 3), F32)
    pa = pack(a, "a", other=5)
    with pytest.raises(ValueError, match="side='c'"):
        pack(a, "c", other=5)
    with pytest.raises(ValueError, match="other=0"):
        pack(a, "a", other=0)
    with pytest.raises(ValueError, match="packed as operand 'a'"):
        gemm(np.ones((2, 4), F32), pa)
    with pytest.raises(ValueError, match="trans_a=True with a packed a"):
        gemm(pa, np.ones((3, 5), F32), trans_a=True)
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm(pa, np.ones((4, 5), F32))
    with pytest.raises(ValueError, match="both packed"):
        gemm(pa, pack(np.ones((3, 5), F32), "b", other=4))
