"""The peers: ONNX Runtime, OpenVINO and JAX beside torch. Their verification against the
reference runs with every backend's (test_conv_backends, test_pool_rnn_backends); here: what they
say without their packages, their thread settings, graphs compiled once per problem on the first
call, their machine record, and the report's best peer. A peer's tests skip when its package is
missing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import convbench.backends as registry
from convbench.backends import get_backend
from convbench.backends.onnx_graphs import onnx_gates
from convbench.harness import report
from convbench.harness.table import to_frame
from convbench.machine import fingerprint
from convbench.ops import RNNProblem, conv2d_problem, get_op
from convbench.result import PASSED, UNAVAILABLE, UNIMPLEMENTED
from convbench.threads import get_threads, set_threads
from convbench.timing import TimingPolicy
from convbench.verify import check_backend

PEERS = ("jax", "onnxruntime", "openvino")
FAST = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)
CONV = get_op("conv2d:fwd")
PROBLEM = conv2d_problem((1, 3, 9, 8), (4, 3, 3, 2), padding=((1, 0), (2, 1)), dilation=(1, 2),
                         bias=True)


def needs(peer):
    """Skip unless the peer can run here (its package installed, ...). Through the backend: it
    imports openvino without the telemetry that forks a process on import."""
    reason = get_backend(peer).unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def fresh(monkeypatch):
    """A new instance of a peer in the registry for the test (nothing compiled yet)."""
    def make(name):
        backend = type(get_backend(name))()
        monkeypatch.setitem(registry._instances, name, backend)
        return backend
    return make


@pytest.fixture
def one_thread():
    """convbench at one thread for the test, the default count after it."""
    set_threads(1)
    yield
    set_threads(None)


def test_without_their_packages_the_peers_say_why_and_the_run_goes_on(tmp_path):
    """Importing each optional package fails (as where it is not installed): the peers are
    UNAVAILABLE with the package and the pip command, and a run, its report and the machine
    record still work."""
    code = f"""
import json, sys
for m in ("onnx", "onnxruntime", "openvino", "jax"):
    sys.modules[m] = None                         # import fails, as when not installed
from convbench.backends import list_backends
from convbench.harness.runner import RunConfig, run_suite
from convbench.harness.suites import load_suite
from convbench.timing import TimingPolicy
policy = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)
cases = load_suite("quick", batch=1)[:1]
rows, meta = run_suite(RunConfig("t", cases, ["im2col", "torch", "onnxruntime", "openvino",
                                              "jax"], policy=policy), {str(tmp_path)!r},
                       peaks=False)
print(json.dumps({{"rows": dict(zip(rows["backend"], zip(rows["status"], rows["reason"]))),
                  "listed": {{i.name: i.reason for i in list_backends() if not i.available}},
                  "peers": meta["peers"], "machine": sorted(meta["machine"]["peers"])}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    for peer, extra in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("jax", "jax")):
        status, reason = data["rows"][peer]
        assert status == UNAVAILABLE and "is not installed" in reason, reason
        assert f"pip install 'convbench[{extra}]'" in reason
        assert data["listed"][peer] in reason
    assert data["rows"]["im2col"][0] == data["rows"]["torch"][0] == PASSED
    assert data["peers"] == ["torch", "onnxruntime", "openvino", "jax"]
    assert data["machine"] == ["jax", "onnxruntime", "openvino", "torch"]
    assert "best peer" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("peer", PEERS)
def test_float64_is_refused_with_a_reason(peer):
    needs(peer)
    r = check_backend(peer, CONV, PROBLEM, np.float64)
    assert r.status == UNIMPLEMENTED and "does not support dtype float64" in r.reason


@pytest.mark.parametrize("peer", PEERS)
def test_every_peer_is_in_the_machine_record_with_its_threads(peer):
    record = fingerprint()["peers"][peer]
    if record is None:
        pytest.skip(f"{peer} is not installed")
    assert record["version"]
    threads = {"onnxruntime": "intra_op_num_threads", "openvino": "INFERENCE_NUM_THREADS",
               "jax": "xla_threads"}[peer]
    assert record[threads] >= 1


def test_onnx_gate_order_from_pytorchs():
    """PyTorch's LSTM gates i, f, g, o are ONNX's i, o, f, c; GRU's r, z, n are z, r, h."""
    H = 2
    for cell, onnx_order in (("lstm", [0, 3, 1, 2]), ("gru", [1, 0, 2]), ("rnn_tanh", [0])):
        p = RNNProblem(cell, 1, 1, 3, H)
        labels = np.repeat(np.arange(p.gates), H)                 # each row: its PyTorch gate
        w = np.repeat(labels[:, None], 3, axis=1)
        got = onnx_gates(p, w)
        assert got.shape == (1, p.gates * H, 3)
        assert list(got[0, ::H, 0]) == onnx_order


@pytest.mark.parametrize("peer", ["onnxruntime", "openvino"])
def test_a_graph_is_compiled_once_per_problem_and_thread_count(peer, fresh, monkeypatch):
    needs(peer)
    backend = fresh(peer)
    seen = []
    original = type(backend).compile

    def counting(self, model_bytes, names, threads):
        seen.append(threads)
        return original(self, model_bytes, names, threads)
    monkeypatch.setattr(type(backend), "compile", counting)
    r = check_backend(peer, CONV, PROBLEM, policy=FAST)
    assert r.status == PASSED and r.n_samples >= 3
    before = get_threads()
    assert seen == [before]              # in the first call only, never while timing
    try:
        set_threads(1)
        assert check_backend(peer, CONV, PROBLEM).status == PASSED
    finally:
        set_threads(None)
    assert seen == [before] + ([1] if before != 1 else [])


def test_onnxruntime_sessions_take_the_thread_count(fresh, monkeypatch, one_thread):
    needs("onnxruntime")
    import onnxruntime
    sessions = []

    class Recording(onnxruntime.InferenceSession):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sessions.append(self)
    monkeypatch.setattr(onnxruntime, "InferenceSession", Recording)
    fresh("onnxruntime")
    assert check_backend("onnxruntime", CONV, PROBLEM).status == PASSED
    options = sessions[-1].get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_openvino_compiles_f32_with_the_thread_count(fresh, one_thread):
    needs("openvino")
    from convbench.backends.openvino_peer import OV
    openvino = OV.load()
    backend = fresh("openvino")
    compiled = []

    class Recording:
        def __init__(self):
            self.core = openvino.Core()

        def read_model(self, *args):
            return self.core.read_model(*args)

        def compile_model(self, *args):
            compiled.append(self.core.compile_model(*args))
            return compiled[-1]
    backend._core = Recording()
    assert check_backend("openvino", CONV, PROBLEM).status == PASSED
    assert compiled[-1].get_property("INFERENCE_NUM_THREADS") == 1
    assert str(compiled[-1].get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_jax_compiles_once_per_problem_in_the_first_call(monkeypatch):
    needs("jax")
    backend = get_backend("jax")
    fn = backend._start().conv_fwd
    if not hasattr(fn, "_cache_size"):
        pytest.skip("this JAX's jitted functions do not report their cache size")
    problem = conv2d_problem((1, 2, 7, 5), (3, 2, 2, 3), stride=(2, 1))
    before = fn._cache_size()
    r = check_backend("jax", CONV, problem, policy=FAST)
    assert r.status == PASSED and r.n_samples >= 3
    assert fn._cache_size() == before + 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in Linux's /proc")
def test_jax_sizes_xlas_pool_from_the_thread_count_and_says_it_cannot_change():
    needs("jax")
    code = """
import os
from convbench.backends import get_backend
from convbench.threads import set_threads
set_threads(1)
jax = get_backend("jax")
assert jax.unavailable_reason() is None, jax.unavailable_reason()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(sum(n.endswith("XLAEigen") for n in names), jax.record()["xla_threads"])
set_threads(3)
print(jax.unavailable_reason())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    first, reason = out.stdout.strip().splitlines()[-2:]
    assert first == "1 1"
    assert "has 1 threads in this process" in reason and "--threads 1" in reason


# --- the report's best peer ----------------------------------------------------------------------
def _frame():
    """Two cases; torch and onnxruntime are the peers, im2col and auto convbench's own."""
    ms = {("a", "torch"): 2.0, ("a", "onnxruntime"): 1.0, ("a", "im2col"): 4.0, ("a", "auto"): 0.5,
          ("b", "torch"): 1.0, ("b", "onnxruntime"): 3.0, ("b", "im2col"): 2.0, ("b", "auto"): 2.0}
    return to_frame([dict(case=c, descriptor=c, family="conv2d", direction="fwd", backend=b,
                          status=PASSED, median_s=m, gflops=1 / m, samples_s=[m])
                     for (c, b), m in ms.items()])


def test_the_report_names_the_best_peer_and_ratios_to_it():
    frame = _frame()
    peers = report.peers_of(frame, {"peers": ["torch", "onnxruntime", "jax"]})
    assert peers == ["torch", "onnxruntime"]
    s = report.summary(frame, "torch", peers).set_index("case")
    assert list(s["best_peer"]) == ["onnxruntime", "torch"]
    assert list(s["best_own"]) == ["auto", "im2col"]
    assert list(s["own_vs_peer"]) == [2.0, 0.5]
    g = report.geomeans(frame, "torch", peers)
    assert g.loc["auto", "vs_torch"] == pytest.approx(np.sqrt(4.0 * 0.5))
    assert g.loc["auto", "vs_best_peer"] == pytest.approx(np.sqrt(2.0 * 0.5))
    assert g.loc["onnxruntime", "vs_best_peer"] == pytest.approx(np.sqrt(1.0 * 1 / 3))
    assert g.loc["im2col", "peer_cases"] == 2
    html = report.render(frame, {"peers": peers, "suite": "t"})
    assert "Against the baseline and the best peer" in html and "2.00x" in html


def test_runs_from_before_the_peer_record_count_torch_as_the_peer():
    frame = _frame()
    assert report.peers_of(frame, {}) == ["torch"]
    assert report.peers_of(frame, {"machine": {"peers": {"onnxruntime": None}}}) == [
        "onnxruntime"]
    no_peer = frame[~frame["backend"].isin(["torch", "onnxruntime"])]
    s = report.summary(no_peer, "im2col", report.peers_of(no_peer, {}))
    assert s["best_peer"].isna().all() and pd.isna(s["own_vs_peer"]).all()


def test_the_functional_interface_returns_arrays_the_caller_owns(rng):
    """JAX hands back read-only views of its buffers; cb.conv2d gives the caller its own."""
    needs("jax")
    import convbench as cb
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = cb.conv2d(x, w, padding=1, backend="jax")
    y += 1                                              # would raise on a read-only array
    np.testing.assert_allclose(y - 1, cb.conv2d(x, w, padding=1, backend="im2col"), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("peer", ["onnxruntime", "openvino"])
def test_onnx_pooling_passes_or_refuses_every_padding_with_ceil_mode(peer):
    """ONNX's pooling differs from PyTorch's at the edges (padding as large as the kernel, a
    ceil_mode window starting in or reaching past the padding): each peer must compute PyTorch's
    answer or refuse with its reason, never give another."""
    from itertools import product

    from convbench.ops import pool2d_problem
    needs(peer)
    seen = {PASSED: 0, UNIMPLEMENTED: 0}
    for kind, include, H, k, s, pads in product(("max", "avg"), (True, False), (5, 6), (2, 3),
                                               (2, 3), ((0, 2), (1, 0), (2, 1), (1, 1))):
        if kind == "max" and not include:
            continue
        try:
            p = pool2d_problem(kind, (1, 2, H, 4), kernel_size=(k, 2), stride=(s, 1),
                               padding=(pads, (1, 0)), ceil_mode=True, count_include_pad=include)
        except ValueError:          # a window wholly in the padding
            continue
        r = check_backend(peer, get_op(f"{kind}_pool2d:fwd"), p)
        assert r.status in seen, f"{p.descriptor()}: {r.status} {r.reason}"
        seen[r.status] += 1
    assert seen[PASSED] > seen[UNIMPLEMENTED], seen
    if peer == "openvino":          # the ceil_mode windows PyTorch drops are among these
        assert seen[UNIMPLEMENTED] > 0, seen
