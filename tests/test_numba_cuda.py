"""numba-cuda's tiled kernels beyond the shared backend matrix: odd tile shapes (partial load
slots, several row and column blocks, split reductions), the float32-only PTX check, the numpy
import workaround, the simulator's shared arrays, and the device script's rehearsal on the
simulator."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from convbench.backends import get_backend
from convbench.backends.numba_cuda import CUDA as NUMBA_CUDA
from convbench.backends.numba_cuda import KERNELS, Tiles, default_tiles, simulated
from convbench.ops import RNNProblem, conv2d_problem, get_op, ops_of
from convbench.ops.reference import conv2d_bwd_weights
from convbench.result import PASSED
from convbench.verify import check_backend

ROOT = Path(__file__).resolve().parents[1]
CUDA = get_backend("numba-cuda")
needs_cuda = pytest.mark.skipif(not CUDA.available, reason=CUDA.unavailable_reason() or "")


def test_tiles_parse_and_refuse_bad_shapes():
    assert Tiles.parse("128x64x8/8x4") == Tiles(128, 64, 8, 8, 4)
    assert str(Tiles(128, 64, 8, 8, 4)) == "128x64x8/8x4"
    assert Tiles(128, 64, 8, 8, 4).threads == 256
    with pytest.raises(ValueError, match="TM=3 must divide BM=8"):
        Tiles(8, 8, 4, 3, 2)
    with pytest.raises(ValueError, match="2048 threads"):
        Tiles(256, 256, 8, 4, 8)
    with pytest.raises(ValueError, match="tiles='8x8' must look like"):
        Tiles.parse("8x8")
    assert default_tiles("conv", False, 1000, 256) != default_tiles("conv", False, 1000, 64)


@pytest.fixture
def odd_tiles():
    """Tiles whose loads do not divide evenly among the threads (6*3 A elements, 4 threads)."""
    CUDA.tiles.update(conv=Tiles(6, 4, 3, 3, 2), gemm=Tiles(6, 4, 3, 3, 2),
                      step=Tiles(2, 2, 3, 1, 1))
    yield
    CUDA.tiles.clear()


@needs_cuda
@pytest.mark.parametrize("problem", [
    conv2d_problem((2, 6, 5, 6), (10, 3, 3, 2), stride=(2, 1), padding=((1, 0), (1, 1)),
                   dilation=(1, 2), groups=2, bias=True),
    conv2d_problem((1, 3, 7, 5), (5, 3, 1, 3), stride=3, padding=((0, 2), (1, 0))),
], ids=["groups-stride-dilation", "stride-3-asymmetric"])
def test_conv_with_odd_tiles_many_blocks(odd_tiles, problem):
    for op in ops_of("conv2d"):
        c = check_backend("numba-cuda", op, problem, np.float32, seed=2)
        assert c.status == PASSED, f"{op.name}: {c.reason}"


@needs_cuda
def test_weight_gradient_split_into_slices_adds_up():
    cuda = NUMBA_CUDA.load()
    p = conv2d_problem((2, 3, 6, 5), (4, 3, 3, 3), padding=1, stride=(1, 2))
    rng = np.random.default_rng(0)
    dy = rng.standard_normal(p.y_shape).astype(np.float32)
    x = rng.standard_normal(p.x_shape).astype(np.float32)
    dw = cuda.device_array(int(np.prod(p.w_shape)), np.float32)
    # many multiprocessors ask for many slices of the 12 (n, p) rows
    KERNELS.conv.conv_bwd_weights(p, cuda.to_device(dy.ravel()), cuda.to_device(x.ravel()), dw,
                                  Tiles(4, 16, 4, 2, 8), multiprocessors=64, threads=8)
    ref = conv2d_bwd_weights(p, dy, x)
    np.testing.assert_allclose(dw.copy_to_host().reshape(p.w_shape), ref, rtol=0,
                               atol=1e-5 * np.abs(ref).max())


@needs_cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_layers_with_odd_tiles(odd_tiles, cell):
    p = RNNProblem(cell, 3, 5, 4, 5)
    for op in ops_of(cell):
        c = check_backend("numba-cuda", op, p, np.float32, seed=4)
        assert c.status == PASSED, f"{op.name}: {c.reason}"


@needs_cuda
@pytest.mark.parametrize("a_kfast,b_nfast", [(True, False), (True, True), (False, True),
                                             (False, False)])
def test_gemm_every_layout(a_kfast, b_nfast):
    cuda = NUMBA_CUDA.load()
    rng = np.random.default_rng(1)
    M, Nc, K = 13, 9, 7
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, Nc)).astype(np.float32)
    bias = rng.standard_normal(Nc).astype(np.float32)
    a = A if a_kfast else np.ascontiguousarray(A.T)
    b = B if b_nfast else np.ascontiguousarray(B.T)
    c = cuda.device_array(M * Nc, np.float32)
    KERNELS.gemm.run_gemm(Tiles(6, 4, 3, 3, 2), cuda.to_device(a.ravel()),
                          cuda.to_device(b.ravel()), c, cuda.to_device(bias), M, Nc, K,
                          K if a_kfast else M, Nc if b_nfast else K, Nc, a_kfast, b_nfast)
    np.testing.assert_allclose(c.copy_to_host().reshape(M, Nc), A @ B + bias, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.skipif(not simulated(), reason="the simulator's shared memory")
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru"])
def test_simulator_gives_a_block_one_shared_array_when_allocation_is_slow(monkeypatch, cell):
    """The simulator hands a block's threads their shared tiles from a dict; a thread switch
    between its look-up and its store gave two threads arrays of their own, so a thread's tile
    loads never reached the others and the recurrent cases failed now and then on a loaded
    machine. Slowing the simulator threads' allocations widens that window to every launch."""
    KERNELS.gemm.load()                 # installs the fix (_numba_cuda_sim) on the simulator
    from numba.cuda.simulator.kernel import BlockThread
    empty = np.empty

    def slow_empty(*args, **kwargs):
        if isinstance(threading.current_thread(), BlockThread):
            time.sleep(0.0005)          # releases the interpreter to the block's other threads
        return empty(*args, **kwargs)

    monkeypatch.setattr(np, "empty", slow_empty)
    p = RNNProblem(cell, 2, 2, 3, 4)
    for op in ops_of(cell):
        c = check_backend("numba-cuda", op, p, np.float32, seed=6)
        assert c.status == PASSED, f"{op.name}: {c.reason}"


def _run(code: str, env_extra: dict, timeout: int = 240):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          check=False)


# The real compiler (not the simulator), on numpy as 2.5 left it: without np.row_stack.
_PTX_SCRIPT = """
    import json, numpy as np
    if hasattr(np, "row_stack"):        # numpy < 2.5: take it away as 2.5 did
        del np.row_stack
        np.__all__.remove("row_stack")
    from convbench.backends.numba_cuda import CUDA, KERNELS
    cuda = CUDA.load()
    restored = hasattr(np, "row_stack")
    from numba import float32
    def probe(a):
        a[0] = float32(1)
    try:
        cuda.compile_ptx(probe, (float32[::1],), cc=(9, 0))
    except Exception as e:
        print(json.dumps({"no_compiler": f"{type(e).__name__}: {str(e).splitlines()[0]}"}))
        raise SystemExit
    print(json.dumps({"row_stack_left_behind": restored, "kernels": KERNELS.ptx.report()}))
"""


def test_every_kernel_compiles_to_float32_only_ptx_without_row_stack():
    """Each kernel the backend launches, compiled by NVVM for sm_90 with no GPU: no float64
    instruction and no local-memory access in its PTX. Run where np.row_stack is missing, as on
    numpy 2.5, to check the import workaround too (it must leave numpy as it found it)."""
    r = _run(_PTX_SCRIPT, {})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if "no_compiler" in out:
        # only a missing compiler library is a reason to skip; anything else is a failure
        assert any(lib in out["no_compiler"].lower() for lib in ("nvvm", "nvrtc")), out
        pytest.skip("cuda.compile_ptx needs NVVM and NVRTC (pip install nvidia-nvvm "
                    f"nvidia-cuda-nvrtc): {out['no_compiler']}")
    assert out["row_stack_left_behind"] is False
    kernels = out["kernels"]
    assert len(kernels) >= 24
    for name, counts in kernels.items():
        assert counts["f64"] == 0, f"{name} has float64 instructions: {counts}"
        assert counts["local"] == 0, f"{name} uses local memory: {counts}"
    for name in ("conv_igemm", "conv_wgrad", "gemm_nt", "lstm_step_fwd"):
        assert kernels[name]["fma_f32"] >= 64, (name, kernels[name])


def test_gpu_check_rehearses_end_to_end_on_the_simulator(tmp_path):
    # no time box: a slow machine must not cut the sweep this test looks at
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--sim",
                        "--budget", "10000", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    secs = res["sections"]
    assert {"environment", "small_cases", "measured", "sweep", "resources"} <= set(secs)
    assert secs["small_cases"]["checks"] > 20 and secs["small_cases"]["failed"] == 0
    rows = secs["measured"]
    families = {r["family"] for r in rows.values()}
    assert families == {"conv2d", "max_pool2d", "lstm"}
    assert {r["direction"] for r in rows.values()} >= {"fwd", "bwd-data", "bwd-weights", "bwd"}
    assert res["summary"]["unverified_rows"] == []
    kinds = {(v["kind"], v["tiles"] != "default") for r in rows.values() for v in r["variants"]}
    assert {("conv", True), ("step", True), ("gemm", True)} <= kinds, kinds
    assert all(r["best"]["time_s"] > 0 for r in rows.values())


def test_flat_views_keep_the_problem_shapes():
    """The backend returns device arrays in the op's shapes (callers copy them back as is)."""
    if not CUDA.available:
        pytest.skip(CUDA.unavailable_reason())
    p = conv2d_problem((1, 2, 4, 4), (3, 2, 3, 3), padding=1)
    op = get_op("conv2d:fwd")
    x, w, _ = op.make_inputs(p, np.random.default_rng(0), np.float32)
    y = CUDA.run(op, p, CUDA.to_device(x), CUDA.to_device(w), None)
    assert tuple(y.shape) == p.y_shape
