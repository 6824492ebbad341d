"""The command line: start-up cost, errors that list valid names, and each command end to end."""
import json
import subprocess
import sys

from click.testing import CliRunner

from convbench.cli import main


def test_help_compiles_and_imports_nothing_heavy():
    code = ("import sys; from click.testing import CliRunner; from convbench.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('numba', 'torch', 'scipy', 'matplotlib', 'pandas') "
            "if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_backends_lists_every_backend_with_a_reason():
    r = CliRunner().invoke(main, ["backends"])
    assert r.exit_code == 0
    for name in ("naive", "numpy", "im2col", "fft", "numba-cpu", "numba-cuda", "torch"):
        assert name in r.output


def test_verify_prints_the_matrix_and_exits_zero():
    r = CliRunner().invoke(main, ["verify", "--cases", "pool-edge",
                                  "--backends", "numpy,numba-cpu"])
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "all checks passed" in r.output


def test_unknown_names_list_the_valid_ones():
    r = CliRunner().invoke(main, ["verify", "--backends", "cudnn"])
    assert r.exit_code == 2 and "unknown backend 'cudnn'; valid: naive" in r.output
    r = CliRunner().invoke(main, ["run", "--suite", "resnet51", "--no-peaks"])
    assert r.exit_code == 2 and "built-in suites: quick" in r.output
    r = CliRunner().invoke(main, ["run", "--direction", "sideways", "--no-peaks"])
    assert r.exit_code == 2 and "'sideways'; valid: fwd, bwd-data" in r.output
    r = CliRunner().invoke(main, ["run", "--threads", "0", "--no-peaks"])
    assert r.exit_code == 2 and "--threads" in r.output
    r = CliRunner().invoke(main, ["run", "--resume", "--no-peaks"])
    assert r.exit_code == 2 and "--resume needs --out" in r.output


def test_run_report_compare_end_to_end(tmp_path):
    suite = tmp_path / "tiny.txt"
    suite.write_text("mb1ic4ih8oc4kh3ph1\nmax:mb1ic2ih8kh2\n")
    runner = CliRunner()
    for name in ("a", "b"):
        r = runner.invoke(main, ["run", "--suite", str(suite),
                                 "--backends", "im2col,numpy,numba-cpu", "--out",
                                 str(tmp_path / name), "--budget", "0.02", "--no-peaks",
                                 "--direction", "fwd,bwd"])
        assert r.exit_code == 0, r.output
        assert "report:" in r.output
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {row["direction"] for row in data["rows"]} == {"fwd", "bwd-data", "bwd-weights", "bwd"}
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<img" in html and "http" not in html.replace("http-equiv", "")
    r = runner.invoke(main, ["report", str(tmp_path / "a"), "--baseline", "im2col"])
    assert r.exit_code == 0 and "report.html" in r.output
    r = runner.invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                             "--html", str(tmp_path / "cmp.html"), "--threshold", "10"])
    assert r.exit_code == 0, r.output        # a 1000% threshold: nothing can count as a regression
    assert (tmp_path / "cmp.html").exists()


def test_info_prints_the_fingerprint():
    r = CliRunner().invoke(main, ["info", "--no-peaks"])
    assert r.exit_code == 0
    assert json.loads(r.output)["machine"]["python"]
