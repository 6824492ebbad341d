"""Looking inside a trained model: filter matching, the ascent gradient, parameter counts, the
whole inspection on a model trained for two epochs, the run's index page and the command."""
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from convbench.cli import main
from convbench.filters import FILTERS
from convbench.train import TrainConfig, train
from convbench.train import inspection as I
from convbench.train.model import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(epochs=2, backend="im2col", batch_size=128), out, verbose=False)
    return out


def test_classic_filters_match_themselves_and_sign_matters():
    names = list(FILTERS)
    scales = np.array([0.5, 2.0, 3.0, 0.1, 7.0])
    w = np.stack([FILTERS[n] * s for n, s in zip(names, scales)])[:, None].astype(np.float32)
    matches = I.match_filters(np.concatenate([w, -w]))
    for n, m in zip(names, matches[:5]):
        assert m["best"] == n and m["similarity"] == pytest.approx(1.0, abs=1e-6)
    for n, m in zip(names, matches[5:]):
        assert m["all"][n] == pytest.approx(-1.0, abs=1e-6) and m["best"] != n
    # cosine of the taps, by hand: identity against sharpen is 5 / sqrt(29)
    assert matches[0]["all"]["sharpen"] == pytest.approx(5 / np.sqrt(29))
    with pytest.raises(ValueError, match="3x3 filters"):
        I.filter_similarity(np.ones((2, 1, 5, 5)))


def _f64_model(name):
    model = build_model(name, (1, 8, 8), 10, backend="im2col", seed=3)
    for layer in model.layers:
        layer.need_input_grad = True
        for part in getattr(layer, "parts", [layer]):
            if hasattr(part, "w"):
                part.w, part.b = part.w.astype(np.float64), part.b.astype(np.float64)
                part.params = [part.w, part.b]
        if hasattr(layer, "parts"):
            layer.params = [q for part in layer.parts for q in part.params]
    return model


@pytest.mark.parametrize("name", ["small-cnn", "resnet-mini"])
def test_ascent_gradient_matches_finite_differences_for_every_conv_layer(name, rng):
    model = _f64_model(name)
    taps = I.conv_taps(model)
    expect = 3 if name == "small-cnn" else 1 + 2 + 3     # resnet-mini: stem, 2 + (2 + proj)
    assert len(taps) == expect
    x = rng.standard_normal((2, 1, 8, 8))
    for t in taps:
        channels = [0, t.conv.cout - 1]
        obj, g = I.ascent_gradient(t, x, channels)
        v = rng.standard_normal(x.shape)
        h = 1e-6
        fd = (I.ascent_gradient(t, x + h * v, channels)[0]
              - I.ascent_gradient(t, x - h * v, channels)[0]) / (2 * h)
        np.testing.assert_allclose((g * v).sum(axis=(1, 2, 3)), fd, rtol=1e-5, atol=1e-8,
                                   err_msg=t.name)


@pytest.mark.parametrize("name", ["small-cnn", "resnet-mini"])
def test_parameter_counts_add_up_and_dense_layers_are_counted_by_formula(name):
    model = build_model(name, (1, 8, 8), 10, backend="im2col")
    rows = I.parameter_counts(model)
    assert sum(r["params"] for r in rows) == sum(p.size for p in model.params)
    first = rows[0]
    assert first["params"] == (32 if name == "small-cnn" else 16) * (9 + 1)
    n_out = int(np.prod(first["out"]))
    assert first["dense_params"] == 64 * n_out + n_out
    assert first["fewer_than_dense"] == first["dense_params"] - first["params"]


def test_inspect_writes_figures_json_and_the_run_index(run_dir):
    r = I.inspect_checkpoint(run_dir / "best.npz", channels=2, steps=40)
    out = run_dir / "inspect"
    saved = json.loads((out / "inspect.json").read_text())
    assert saved["filters"] == r["filters"] and len(r["filters"]) == 32
    for m in r["filters"]:
        assert m["similarity"] == max(m["all"].values()) and -1 <= m["similarity"] <= 1
    assert sum(r["filter_best_counts"].values()) == 32
    assert [lay["shape"] for lay in r["feature_maps"]["layers"]] == [[32, 8, 8], [32, 8, 8],
                                                                      [64, 4, 4]]
    assert r["equivariance"]["max_interior_difference"] <= 1e-5 * r["equivariance"]["max_feature"]
    for layer in r["maximising"]["layers"]:
        assert len(layer["images"]) == 2
        for rec in layer["images"]:
            # gradient ascent drives the unit well past what the test images give it on average
            assert rec["ratio_to_mean"] > 1.5, (layer["layer"], rec)
    page = (run_dir / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert "curves.png" in srcs
    for fig in ("filters.png", "feature_maps.png", "equivariance.png", "maximising.png"):
        assert f"inspect/{fig}" in srcs
    for src in srcs:
        assert (run_dir / src).stat().st_size > 1000
    from PIL import Image
    for fig in r["figures"]:
        assert Image.open(out / fig["file"]).size[0] > 300


def test_inspect_command_and_an_out_folder_outside_the_run(run_dir, tmp_path):
    other = tmp_path / "elsewhere"
    res = CliRunner().invoke(main, ["inspect", str(run_dir / "best.npz"), "--out", str(other),
                                    "--channels", "1", "--steps", "5", "--image", "3"])
    assert res.exit_code == 0, res.output
    assert "a dense layer would have 133,120" in res.output
    assert (other / "index.html").exists() and (other / "maximising.png").exists()
    assert 'src="maximising.png"' in (other / "index.html").read_text()
    for args, message in ((["--channels", "0"], "channels=0 must be an int >= 1"),
                          (["--image", "100000"], "image_index=100000 must be in")):
        res = CliRunner().invoke(main, ["inspect", str(run_dir / "best.npz"), "--out",
                                        str(tmp_path / "bad")] + args)
        assert res.exit_code != 0 and message in res.output


def test_trainer_writes_an_index_page(run_dir):
    page = (run_dir / "index.html").read_text()
    assert "test accuracy" in page and 'src="curves.png"' in page
