"""User backends: registered from Python, from a file (--backend-file) or from an installed
package's entry point; verified before timing like the built-ins; in auto only when they opt in;
and every way of getting one wrong is a clear error."""
import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import convbench as cb
import convbench.backends as registry
from convbench import autotune
from convbench.backends import backend_names, get_backend, list_backends
from convbench.cli import main
from convbench.errors import BackendRegistrationError
from convbench.harness.runner import RunConfig, run_suite
from convbench.harness.suites import load_suite
from convbench.ops import conv2d_problem, get_op
from convbench.result import FAILED, PASSED, UNIMPLEMENTED
from convbench.timing import TimingPolicy
from convbench.verify import check_backend

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "numba_backend.py"
FAST = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)
CONV = get_op("conv2d:fwd")
PROBLEM = conv2d_problem((1, 3, 8, 8), (4, 3, 3, 3), padding=1)


class ViaIm2col(cb.Backend):
    """A correct user backend: hands the convolution to im2col."""
    name = "test-via-im2col"
    description = "im2col, wrapped"

    def conv2d_fwd(self, p, x, w, b):
        return get_backend("im2col").conv2d_fwd(p, x, w, b)


class Wrong(cb.Backend):
    name = "test-wrong"
    description = "off by one"

    def conv2d_fwd(self, p, x, w, b):
        return get_backend("im2col").conv2d_fwd(p, x, w, b) + 1


@pytest.fixture
def clean_registry(monkeypatch, tmp_path):
    """User registrations made by a test are undone after it; autotune caches go to tmp_path."""
    monkeypatch.setattr(registry, "_user", dict(registry._user))
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "_memo", {})
    return registry


def test_a_registered_backend_is_listed_verified_and_callable(clean_registry, rng):
    assert cb.register_backend(ViaIm2col) is ViaIm2col
    assert backend_names()[-1] == "test-via-im2col"
    info = {i.name: i for i in list_backends()}["test-via-im2col"]
    # conv_transpose2d's input gradient is a convolution: it runs on the user's conv2d_fwd too
    assert info.ops == ("conv2d:fwd", "conv_transpose2d:bwd-data")
    assert info.available and not info.auto_candidate
    assert info.origin.endswith("test_plugins.ViaIm2col")
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(cb.conv2d(x, w, padding=1, backend="test-via-im2col"),
                               cb.conv2d(x, w, padding=1, backend="naive"), rtol=1e-5, atol=1e-5)
    r = check_backend("test-via-im2col", CONV, PROBLEM, policy=FAST)
    assert r.status == PASSED and r.gflops > 0
    r = check_backend("test-via-im2col", get_op("max_pool2d:fwd"),
                      load_suite("quick", batch=1)[4].problem)
    assert r.status == UNIMPLEMENTED and "does not implement max_pool2d:fwd" in r.reason
    cb.unregister_backend("test-via-im2col")
    assert "test-via-im2col" not in backend_names()


def test_a_wrong_user_kernel_is_failed_and_never_shows_a_speed(clean_registry, tmp_path):
    cb.register_backend(Wrong)
    r = check_backend("test-wrong", CONV, PROBLEM, policy=FAST)
    assert r.status == FAILED and r.median_s is None and "tolerance" in r.reason
    rows, meta = run_suite(RunConfig("t", load_suite("quick", batch=1)[:1],
                                     ["test-wrong", "im2col"], policy=FAST), tmp_path,
                           peaks=False)
    wrong = rows[rows["backend"] == "test-wrong"].iloc[0]
    assert wrong["status"] == FAILED and np.isnan(wrong["gflops"])
    assert meta["user_backends"]["test-wrong"].endswith("test_plugins.Wrong")
    assert "test-wrong" in (tmp_path / "report.html").read_text()


def test_refusing_a_problem_gives_its_reason(clean_registry):
    class Picky(ViaIm2col):
        name = "test-picky"

        def unsupported(self, op, problem, dtype):
            return "padding (none only)" if problem.padding != ((0, 0), (0, 0)) else None
    cb.register_backend(Picky)
    r = check_backend("test-picky", CONV, PROBLEM)
    assert r.status == UNIMPLEMENTED and r.reason.endswith("with padding (none only)")


def test_user_code_that_raises_while_checking_is_a_failed_result(clean_registry):
    class Raises(ViaIm2col):
        name = "test-raises"

        def unsupported(self, op, problem, dtype):
            raise KeyError("oops")
    cb.register_backend(Raises)
    r = check_backend("test-raises", CONV, PROBLEM)
    assert r.status == FAILED and "KeyError" in r.reason


@pytest.mark.parametrize("attrs,match", [
    ({"name": "torch"}, "name='torch' is the name of a built-in backend"),
    ({"name": ""}, "has no name: set the class attribute name"),
    ({"name": "a,b"}, "name='a,b' must be letters, digits"),
    ({"name": "test-both", "peer": True, "auto_candidate": True}, "set peer or auto_candidate"),
])
def test_bad_classes_are_clear_errors(clean_registry, attrs, match):
    cls = type("Bad", (ViaIm2col,), attrs)
    with pytest.raises(BackendRegistrationError, match=match):
        cb.register_backend(cls)


def test_a_class_with_no_op_method_gets_a_suggestion(clean_registry):
    class Typo(cb.Backend):
        name = "test-typo"

        def conv2d_fw(self, p, x, w, b):
            return x
    with pytest.raises(BackendRegistrationError, match=r"implements no op \(did you mean "
                                                      r"conv2d_fwd\?\)"):
        cb.register_backend(Typo)
    with pytest.raises(BackendRegistrationError, match="subclass of convbench.Backend"):
        cb.register_backend(int)


def test_two_backends_may_not_share_a_name(clean_registry):
    cb.register_backend(ViaIm2col)
    cb.register_backend(ViaIm2col)                      # the same class again: replaced
    other = type("Other", (ViaIm2col,), {"__module__": "elsewhere"})
    with pytest.raises(BackendRegistrationError, match="already registered by class ViaIm2col"):
        cb.register_backend(other)


# --- --backend-file ------------------------------------------------------------------------------
def _write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


GOOD = """
    import convbench as cb
    from convbench.backends import get_backend

    class _Helper(cb.Backend):          # underscore: a helper base, not a backend
        description = "helper"

    class FileConv(_Helper):
        name = "test-file-conv"

        def conv2d_fwd(self, p, x, w, b):
            return get_backend("im2col").conv2d_fwd(p, x, w, b)

    class FilePool(cb.Backend):
        name = "test-file-pool"

        def max_pool2d_fwd(self, p, x):
            return get_backend("numpy").max_pool2d_fwd(p, x)
"""


def test_a_backend_file_registers_every_class_it_defines(clean_registry, tmp_path):
    path = _write(tmp_path, "mine.py", GOOD)
    assert cb.load_backend_file(path) == ["test-file-conv", "test-file-pool"]
    assert cb.load_backend_file(path) == ["test-file-conv", "test-file-pool"]   # reload: fine
    assert check_backend("test-file-conv", CONV, PROBLEM).status == PASSED
    r = CliRunner().invoke(main, ["backends", "--backend-file", str(path)])
    assert r.exit_code == 0, r.output
    assert f"from file {path}, class FileConv" in r.output


@pytest.mark.parametrize("source,match", [
    ("x = 1\ndef f(:\n", r"failed to import \(line 2\): SyntaxError"),
    ("import convbench\nimport no_such_module_here\n",
     r"failed to import \(line 2\): ModuleNotFoundError"),
    ("import convbench as cb\nclass A(cb.Backend):\n    description = 'no name'\n"
     "    def conv2d_fwd(self, p, x, w, b):\n        return x\n", "has no name"),
    ("import numpy\n", "defines no convbench.Backend subclass"),
    ("import convbench as cb\nclass A(cb.Backend):\n    name = 'im2col'\n"
     "    def conv2d_fwd(self, p, x, w, b):\n        return x\n", "built-in backend"),
    ("import convbench as cb\nclass A(cb.Backend):\n    name = 'test-twice'\n"
     "    def conv2d_fwd(self, p, x, w, b):\n        return x\nclass B(A):\n    pass\n",
     "is also the name of class A"),
])
def test_a_bad_backend_file_is_a_usage_error_naming_it(clean_registry, tmp_path, source, match):
    path = _write(tmp_path, "bad.py", source)
    with pytest.raises(BackendRegistrationError, match=match):
        cb.load_backend_file(path)
    for command in (["backends"], ["verify", "--cases", "pool-edge"], ["run", "--no-peaks"]):
        r = CliRunner().invoke(main, command + ["--backend-file", str(path)])
        assert r.exit_code == 2 and "bad.py" in r.output, (command, r.output)
        assert re.search(match, r.output.replace("\n", " ")), r.output
    assert not [n for n in backend_names() if n.startswith("test-twice")]


def test_a_missing_backend_file_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["backends", "--backend-file", str(tmp_path / "nope.py")])
    assert r.exit_code == 2 and "does not exist" in r.output


# --- entry points --------------------------------------------------------------------------------
def _distribution(tmp_path, target: str, module_source: str):
    """An installed package as importlib.metadata finds it: a dist-info folder and a module on
    sys.path, with an entry point in the group convbench.backends."""
    (tmp_path / "cbplugin_mod.py").write_text(textwrap.dedent(module_source))
    info = tmp_path / "cbplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cbplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[convbench.backends]\nplugged = {target}\n")


@pytest.fixture
def plugin_path(clean_registry, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_read", False)
    monkeypatch.delenv("CONVBENCH_NO_ENTRY_POINTS", raising=False)
    yield tmp_path
    sys.modules.pop("cbplugin_mod", None)


def test_an_installed_entry_point_registers_its_backend(plugin_path):
    _distribution(plugin_path, "cbplugin_mod:Plugged", GOOD.replace("FileConv", "Plugged")
                  .replace("test-file-conv", "test-plugged"))
    assert "test-plugged" in backend_names()
    assert "test-file-pool" not in backend_names()       # the entry point names one class
    info = {i.name: i for i in list_backends()}["test-plugged"]
    assert info.origin == "entry point plugged = 'cbplugin_mod:Plugged' of cbplugin 1.0"
    assert check_backend("test-plugged", CONV, PROBLEM).status == PASSED


def test_an_entry_point_naming_a_module_registers_its_classes(plugin_path):
    _distribution(plugin_path, "cbplugin_mod", GOOD)
    assert {"test-file-conv", "test-file-pool"} <= set(backend_names())


def test_a_broken_entry_point_is_a_clear_error_and_can_be_switched_off(plugin_path,
                                                                       monkeypatch):
    _distribution(plugin_path, "cbplugin_mod:Plugged", "raise RuntimeError('broken plugin')\n")
    with pytest.raises(BackendRegistrationError,
                       match="entry point plugged .* of cbplugin 1.0 .* failed to load: "
                             "RuntimeError: broken plugin; .*CONVBENCH_NO_ENTRY_POINTS=1"):
        backend_names()
    r = CliRunner().invoke(main, ["backends"])
    assert r.exit_code == 2 and "broken plugin" in r.output
    monkeypatch.setenv("CONVBENCH_NO_ENTRY_POINTS", "1")
    assert "im2col" in backend_names()


# --- auto --------------------------------------------------------------------------------------
def test_auto_takes_a_user_backend_only_when_it_opts_in(clean_registry):
    cb.register_backend(ViaIm2col)
    assert "test-via-im2col" not in autotune.candidates(CONV, PROBLEM, np.float32)
    autotune.choose(CONV, PROBLEM, np.float32)
    opted = type("Opted", (ViaIm2col,), {"name": "test-opted", "auto_candidate": True})
    cb.register_backend(opted)
    assert "test-opted" in autotune.candidates(CONV, PROBLEM, np.float32)
    # a candidate that joined after the choice was made is raced on the next request
    entry = autotune.choose(CONV, PROBLEM, np.float32)
    assert "test-opted" in entry["best_s"]
    for peer in ("torch", "onnxruntime", "openvino", "jax"):
        assert not autotune.is_candidate(get_backend(peer))


def test_auto_rejects_a_wrong_opted_in_backend(clean_registry):
    cb.register_backend(type("WrongOpted", (Wrong,), {"name": "test-wrong-opted",
                                                      "auto_candidate": True}))
    entry = autotune.choose(CONV, PROBLEM, np.float32)
    assert entry["backend"] != "test-wrong-opted"
    assert "relative error" in entry["rejected"]["test-wrong-opted"]


# --- the README's example ----------------------------------------------------------------------
def test_the_readme_shows_the_example_file():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n# examples/numba_backend.py\n(.*?)```", readme, re.S)
    assert block, "README: no ```python block starting '# examples/numba_backend.py'"
    assert block.group(1) in EXAMPLE.read_text()


def test_the_example_races_against_im2col_and_torch(clean_registry, tmp_path):
    suite = tmp_path / "tiny.txt"
    suite.write_text("mb1ic4ih10oc8kh3ph1\ng2mb1ic4ih8oc4kh3\nmax:mb1ic2ih8kh2\n")
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", "--backend-file", str(EXAMPLE), "--suite", str(suite),
                                  "--backends", "my-numba,im2col,torch", "--out", str(out),
                                  "--budget", "0.02", "--no-peaks"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    status = {(row["descriptor"], row["backend"]): row for row in data["rows"]}
    assert status[("mb1ic4ih10oc8kh3ph1", "my-numba")]["status"] == PASSED
    assert status[("mb1ic4ih10oc8kh3ph1", "my-numba")]["gflops"] > 0
    grouped = status[("g2mb1ic4ih8oc4kh3", "my-numba")]
    assert grouped["status"] == UNIMPLEMENTED and "groups=2 (1 only)" in grouped["reason"]
    assert status[("max:mb1ic2ih8kh2", "my-numba")]["status"] == UNIMPLEMENTED
    assert data["meta"]["peers"] == ["torch"]
    assert "best peer torch" in r.output
