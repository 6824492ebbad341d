"""Suites read from a model: ONNX graphs built in the tests with onnx.helper (translated
attributes checked against ONNX's own reference evaluator), torch modules through forward hooks,
merging, the errors, and the command line with its whole-model report."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
import onnx_models as om  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from convbench.harness.model import ModelError, onnx_rnn_weights  # noqa: E402
from convbench.harness.suites import from_onnx, from_torch, load_suite  # noqa: E402
from convbench.ops import reference as ref  # noqa: E402


def _only(model, **kw):
    cases = from_onnx(model, **kw)
    assert len(cases) == 1 and cases[0].count == 1
    return cases[0].problem


def _run_onnx(model, x):
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def test_resnet18_layers_are_merged_with_their_counts():
    cases = from_onnx(om.resnet18(), batch=8)
    assert len(cases) == 13 and sum(c.count for c in cases) == 22
    by_name = {c.name: c for c in cases}
    assert by_name["layer1.0.conv1"].count == 4
    assert by_name["layer2.0.conv2"].descriptor == "mb8ic128ih28oc128kh3ph1"
    assert by_name["maxpool"].descriptor == "max:mb8ic64ih112kh3sh2ph1"
    assert by_name["avgpool"].descriptor == "avg:mb8ic512ih7kh7"
    assert all(c.problem.N == 8 for c in cases)


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[3, 2], strides=[1, 2], pads=[2, 0, 1, 1], dilations=[2, 1]),
    dict(kernel_shape=[4, 4], strides=[2, 2], auto_pad="SAME_LOWER", group=2),
    dict(kernel_shape=[3, 3], auto_pad="VALID"),
])
def test_conv_attributes_translate_to_the_same_function(attrs, rng):
    g = attrs.get("group", 1)
    w = rng.standard_normal((4, 4 // g) + tuple(attrs["kernel_shape"])).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    model = om.single("Conv", (2, 4, 9, 8), [w, b], **attrs)
    p = _only(model)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(ref.conv2d_fwd(p, x, w, b), _run_onnx(model, x), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2], output_padding=[1, 1]),
    dict(kernel_shape=[2, 3], strides=[3, 2], dilations=[1, 2], pads=[0, 1, 1, 0]),
])
def test_conv_transpose_attributes_translate_to_the_same_function(attrs, rng):
    g = attrs.get("group", 1)
    w = rng.standard_normal((4, 6 // g) + tuple(attrs["kernel_shape"])).astype(np.float32)
    model = om.single("ConvTranspose", (2, 4, 5, 5), [w], **attrs)
    p = _only(model)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(ref.conv_transpose2d_fwd(p, x, w), _run_onnx(model, x),
                               rtol=1e-4, atol=1e-5)


def test_conv_transpose_output_shape_and_same_padding():
    """ONNX: total padding = stride*(in-1) + output_padding + extent - output_shape, the odd one
    at the end unless SAME_LOWER (ONNX's reference evaluator does not apply output_shape)."""
    w = np.zeros((4, 6, 3, 3))
    p = _only(om.single("ConvTranspose", (2, 4, 5, 5), [w], strides=[2, 2],
                        output_shape=[10, 11]))
    assert p.y_shape == (2, 6, 10, 11) and p.padding == ((0, 1), (0, 0))
    p = _only(om.single("ConvTranspose", (2, 4, 5, 5), [w], strides=[2, 2],
                        auto_pad="SAME_LOWER"))
    assert p.y_shape == (2, 6, 10, 10) and p.padding == ((1, 0), (1, 0))


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 1], pads=[2, 0, 1, 1], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[2, 2])),
    ("MaxPool", dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_LOWER")),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[2, 0, 0, 2],
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
])
def test_pool_attributes_translate_to_the_same_function(op, attrs, rng):
    model = om.single(op, (2, 3, 7, 8), **attrs)
    p = _only(model)
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    if attrs.get("auto_pad") == "SAME_LOWER":
        # ONNX: output ceil(in / stride), the odd padding at the start; the reference evaluator
        # gets SAME_LOWER's output size wrong, so it runs the same pads given explicitly
        for size, k, s, (begin, end) in zip((7, 8), attrs["kernel_shape"], attrs["strides"],
                                            p.padding):
            total = (-(-size // s) - 1) * s + k - size
            assert (begin, end) == (total - total // 2, total // 2)
        model = om.single(op, (2, 3, 7, 8), kernel_shape=attrs["kernel_shape"],
                          strides=attrs["strides"], pads=[p.padding[0][0], p.padding[1][0],
                                                          p.padding[0][1], p.padding[1][1]])
    fn = ref.max_pool2d_fwd if p.kind == "max" else ref.avg_pool2d_fwd
    np.testing.assert_allclose(fn(p, x), _run_onnx(model, x), rtol=1e-5, atol=1e-6)


def test_one_dimensional_conv_and_pool():
    conv = _only(om.single("Conv", (2, 3, 10), [np.zeros((4, 3, 3))], kernel_shape=[3],
                           pads=[2, 0]))
    assert (conv.H, conv.W, conv.padding) == (1, 10, ((0, 0), (2, 0)))
    pool = _only(om.single("MaxPool", (2, 3, 10), kernel_shape=[3], strides=[2],
                           auto_pad="SAME_UPPER"))
    assert (pool.H, pool.W, pool.Q) == (1, 10, 5)


@pytest.mark.parametrize("op,direction,layout,extra", [
    ("LSTM", "bidirectional", 1, {}),
    ("LSTM", "reverse", 0, {}),
    ("GRU", "forward", 0, dict(linear_before_reset=0)),
    ("GRU", "bidirectional", 1, dict(linear_before_reset=1)),
    ("RNN", "reverse", 0, {}),
])
def test_recurrent_nodes_translate_gate_orders_directions_and_layouts(op, direction, layout,
                                                                      extra, rng):
    cell = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn_tanh"}[op]
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    T, N, I, H = 4, 2, 3, 5  # noqa: E741 - PyTorch's name for the input size
    D = 2 if direction == "bidirectional" else 1
    W = rng.standard_normal((D, G * H, I)).astype(np.float32) * 0.5
    R = rng.standard_normal((D, G * H, H)).astype(np.float32) * 0.5
    B = rng.standard_normal((D, 2 * G * H)).astype(np.float32) * 0.5
    x_shape = (N, T, I) if layout else (T, N, I)
    model = om.single(op, x_shape, [W, R, B], n_out=1, hidden_size=H, direction=direction,
                      layout=layout, **extra)
    cases = from_onnx(model)
    assert len(cases) == D
    x = rng.standard_normal(x_shape).astype(np.float32)
    y = _run_onnx(model, x)                       # (T, D, N, H), or (N, T, D, H) with layout 1
    if layout:
        y = y.transpose(1, 2, 0, 3)
    xt = x.transpose(1, 0, 2) if layout else x
    for d, (case, weights) in enumerate(zip(cases, onnx_rnn_weights(W, R, B, cell))):
        p = case.problem
        assert (p.T, p.N, p.I, p.H, p.reverse) == (T, N, I, H, d == 1 or direction == "reverse")
        zeros = np.zeros((N, H))
        out = ref.rnn_fwd(p, xt, zeros, zeros if cell == "lstm" else None, *weights)[0]
        np.testing.assert_allclose(out, y[:, d], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,weights,attrs,match", [
    ("LSTM", "P", {}, "peepholes"),
    ("LSTM", "", dict(activations=["Sigmoid", "Relu", "Tanh"]), "custom activations"),
    ("GRU", "", dict(clip=3.0), "clip"),
    ("LSTM", "lens", {}, "per-sequence lengths"),
    ("LSTM", "", dict(input_forget=1), "input_forget"),
    ("RNN", "", dict(activations=["Relu"]), "activations"),
])
def test_recurrent_attributes_convbench_cannot_express_are_named(op, weights, attrs, match):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    H = 2
    ws = [np.zeros((1, G * H, 3)), np.zeros((1, G * H, H)), np.zeros((1, 2 * G * H))]
    if weights == "P":
        ws += ["", "", "", np.zeros((1, 3 * H))]
    if weights == "lens":
        ws += [np.full(2, 4)]
    with pytest.raises(ModelError, match=rf"node 'the_node' \({op}\): .*{match}"):
        from_onnx(om.single(op, (4, 2, 3), ws, hidden_size=H, **attrs))


def test_dynamic_shapes_need_input_shape(tmp_path):
    model = om.single("Conv", ("N", 3, "H", "W"), [np.zeros((4, 3, 3, 3))], kernel_shape=[3, 3])
    with pytest.raises(ModelError, match=r"input 'x' has dynamic dimensions axis 2 \(H\), axis 3 "
                                         r"\(W\); give its shape with --input-shape x:"):
        from_onnx(model, batch=2)
    p = _only(model, batch=2, input_shapes=["x:1,3,12,10"])
    assert p.x_shape == (1, 3, 12, 10)          # the batch is set by load_suite's --batch
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    cases = load_suite(str(path), batch=3, input_shapes=["1,3,12,10"])
    assert cases[0].problem.x_shape == (3, 3, 12, 10)
    with pytest.raises(ModelError, match=r"--input-shape names y, not inputs of the model"):
        from_onnx(model, input_shapes=["y:1,3,4,4"])
    with pytest.raises(ValueError, match="input shapes are for a suite read from an ONNX model"):
        load_suite("quick", input_shapes=["1,2"])


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"\x89PNG this is not a protobuf \xff\xff\xff")
    with pytest.raises(ModelError, match=r"weights.onnx: not an ONNX model"):
        load_suite(str(path))
    with pytest.raises(ModelError, match="no layer convbench can time"):
        from_onnx(om.single("Relu", (1, 2)))


def test_from_torch_records_module_calls_with_counts():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.block = nn.Conv2d(8, 8, 3, padding=1)
            self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
            self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.rnn = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
            self.tpool = nn.AvgPool1d(2)

        def forward(self, x):
            x = self.block(self.block(self.conv(x)))        # one module called twice
            x = self.up(self.pool(x))
            s = x.flatten(2).transpose(1, 2)                 # (N, positions, 4)
            y, _ = self.rnn(s)
            return self.gap(x), self.tpool(y.transpose(1, 2))

    cases = from_torch(Net(), torch.zeros(2, 3, 8, 8))
    by_name = {c.name: c for c in cases}
    assert by_name["block"].count == 2
    assert by_name["up"].problem.y_shape == (2, 4, 10, 10)
    assert by_name["pool"].descriptor == "max:mb2ic8ih8kh3sh2ph1cm1"
    assert by_name["gap"].descriptor == "avg:mb2ic4ih10kh10"
    assert [by_name[f"rnn l{k} {d}"].problem.reverse for k in (0, 1)
            for d in ("forward", "reverse")] == [False, True, False, True]
    assert by_name["rnn l1 forward"].problem.I == 12
    assert by_name["tpool"].problem.W == 100


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_from_torch_names_what_it_cannot_express():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    with pytest.raises(ModelError, match=r"module '0'.*padding_mode='reflect'"):
        from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
                   torch.zeros(1, 1, 5, 5))
    with pytest.raises(ModelError, match="proj_size=2"):
        from_torch(nn.LSTM(3, 4, proj_size=2), torch.zeros(5, 1, 3))
    with pytest.raises(ModelError, match="PackedSequence"):
        packed = nn.utils.rnn.pack_padded_sequence(torch.zeros(5, 2, 3), [5, 3])
        from_torch(nn.GRU(3, 4), packed)


def test_whole_model_sums_count_times_median_and_mixes_the_fastest():
    import pandas as pd

    from convbench.harness.report import whole_model
    from convbench.harness.table import to_frame
    rows = []
    times = {"a": {"im2col": 2.0, "numpy": 1.0, "torch": 1.5},
             "b": {"im2col": 1.0, "numpy": None, "torch": 4.0}}
    for case, by in times.items():
        for backend, t in by.items():
            rows.append(dict(case=case, descriptor=case, family="conv2d", direction="fwd",
                             backend=backend, status="PASSED" if t else "UNIMPLEMENTED",
                             median_s=t))
    totals, mix = whole_model(to_frame(rows), {"a": 3, "b": 2}, "torch")
    t = totals.set_index("backend")
    assert t.loc["torch", "total_s"] == 3 * 1.5 + 2 * 4.0
    assert pd.isna(t.loc["numpy", "total_s"]) and t.loc["numpy", "layers"] == 1
    assert t.loc["best per layer", "total_s"] == 3 * 1.0 + 2 * 1.0
    assert t.loc["best per layer", "speedup"] == pytest.approx(12.5 / 5.0)
    m = mix.set_index("backend")
    assert (m.loc["numpy", "calls"], m.loc["im2col", "calls"]) == (3, 2)
    assert m.loc["numpy", "share"] == pytest.approx(0.6)


def test_run_reads_an_onnx_model_and_reports_the_whole_model(tmp_path):
    from click.testing import CliRunner

    from convbench.cli import main
    g = om.Graph()
    x = g.node("Conv", ["x", g.weight((4, 3, 3, 3))], name="c1", kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    x = g.node("Conv", [x, g.weight((4, 4, 3, 3))], name="c2", kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    x = g.node("Conv", [x, g.weight((4, 4, 3, 3))], name="c3", kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    x = g.node("MaxPool", [x], name="pool", kernel_shape=[2, 2], strides=[2, 2])
    path = tmp_path / "tiny.onnx"
    onnx.save(g.model([om.tensor("x", ["batch", 3, "h", "w"])], x), str(path))
    out = tmp_path / "run"
    args = ["run", "--suite", str(path), "--batch", "2", "--backends", "numpy,im2col",
            "--budget", "0.01", "--no-peaks", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "give its shape with --input-shape" in r.output
    r = CliRunner().invoke(main, args + ["--input-shape", "x:1,3,8,8"])
    assert r.exit_code == 0, r.output
    assert "whole model (3 distinct layers, 4 calls)" in r.output
    assert "best per layer" in r.output
    report = (out / "report.html").read_text()
    assert "<h2>Whole model</h2>" in report
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"c1": 1, "c2": 2, "pool": 1}


def test_bad_model_files_are_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from convbench.cli import main
    path = tmp_path / "model.onnx"
    path.write_text("not a model")
    r = CliRunner().invoke(main, ["run", "--suite", str(path), "--no-peaks"])
    assert r.exit_code == 2 and "not an ONNX model" in r.output
