"""The machine's real ceiling: the FMA peak in the machine record, the BLAS core type and the
warning when it runs narrower vectors than the CPU, and each row's share of the peak."""
import numpy as np
import pytest

from convbench import machine
from convbench.harness import runner
from convbench.harness.runner import RunConfig, run_suite
from convbench.harness.suites import load_suite
from convbench.timing import TimingPolicy

FAST = TimingPolicy(budget_s=0.01, warmup_budget_s=0.01, min_reps=2, max_reps=3)
PEAKS = {"fma_gflops": 200.0, "fma_gflops_one_thread": 100.0, "isa": "avx512",
         "vector_bits": 512, "sgemm_gflops": 120.0, "memory_gbps": 10.0}


def test_fingerprint_records_simd_and_blas_core_type(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    fp = machine.fingerprint()
    core = fp["blas_core"]
    assert fp["simd"]["isa"] in ("avx512", "avx2", "other")
    assert {"architecture", "forced", "narrower", "coretype_env"} <= set(core)
    assert core["forced"] and core["coretype_env"] == "Haswell"
    assert fp["env"]["OPENBLAS_CORETYPE"] == "Haswell"


@pytest.mark.parametrize("narrower,forced", [(True, True), (True, False), (False, False)])
def test_blas_warning_says_when_the_blas_runs_narrower_vectors(narrower, forced):
    core = {"internal_api": "openblas", "architecture": "Haswell", "blas_vector_bits": 256,
            "cpu_vector_bits": 512, "narrower": narrower, "forced": forced,
            "coretype_var": "OPENBLAS_CORETYPE", "coretype_env": "Haswell" if forced else None}
    warning = machine.blas_warning({"blas_core": core})
    if not narrower:
        assert warning is None
        return
    assert "256-bit" in warning and "512-bit" in warning
    assert ("OPENBLAS_CORETYPE=Haswell" in warning) == forced
    assert machine.blas_warning({}) is None       # a record from before blas_core was kept


def test_measured_peaks_include_the_fma_peak():
    peaks = machine.measure_peaks(seconds=0.1)
    assert peaks["fma_gflops"] > 0 and peaks["fma_gflops_one_thread"] > 0
    assert peaks["vector_bits"] in (128, 256, 512) and peaks["sgemm_gflops"] > 0
    assert machine.peak_gflops(peaks) == peaks["fma_gflops"]
    assert machine.peak_gflops({"sgemm_gflops": 5.0}) == 5.0 and machine.peak_gflops(None) is None


def test_rows_carry_their_share_of_the_peak_and_the_report_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "measure_peaks", lambda: dict(PEAKS))
    monkeypatch.setattr(runner, "blas_warning", lambda m: "the BLAS runs narrow vectors")
    cases = load_suite("quick", batch=1)[:1]
    frame, meta = run_suite(RunConfig("test", cases, ["im2col", "numba-cpu"], policy=FAST),
                            tmp_path)
    timed = frame[frame["gflops"].notna()]
    assert len(timed) == 2
    np.testing.assert_allclose(timed["pct_of_peak"], 100 * timed["gflops"] / 200.0)
    assert meta["warnings"] == ["the BLAS runs narrow vectors"]
    html = (tmp_path / "report.html").read_text()
    assert "Warning: the BLAS runs narrow vectors" in html
    assert "measured fp32 FMA peak" in html
    pct = timed["pct_of_peak"].iloc[0]
    assert f"({pct:.0f}%)" in html         # the rate cell shows the share
