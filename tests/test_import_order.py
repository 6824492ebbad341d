"""The same small benchmark (numba-cpu's LSTM forward and backward, im2col-numba's 1x1 and strided
convolutions) in two fresh processes, one importing NumPy before convbench: the results must be
equal. (bench/import_order.py times the same in every order; nothing here asserts on time.)"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "import_order.py"


def _run(order, out):
    # this checkout's convbench, whatever the environment has installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(SCRIPT.parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    subprocess.run([sys.executable, str(SCRIPT), "--child", order, "--out", str(out), "--small",
                    "--repeats", "0"], check=True, capture_output=True, text=True, env=env)
    return np.load(out)


def test_results_do_not_depend_on_the_import_order(tmp_path):
    first = _run("numpy", tmp_path / "numpy.npz")
    second = _run("convbench", tmp_path / "convbench.npz")
    assert sorted(first.files) == sorted(second.files) and len(first.files) == 12
    for name in first.files:
        assert first[name].shape == second[name].shape, name
        assert np.all(np.isfinite(first[name])), name
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
