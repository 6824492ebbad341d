"""Benchmark suites: named lists of problems from real networks, user files, and a fuzzer.

ResNet-50 (He et al. 2015, table 1; the v1.5 layout with the stride on the 3x3 convolution),
VGG-16 (Simonyan and Zisserman 2014, configuration D), MobileNet v1 (Howard et al. 2017,
table 1) and the decoders of DCGAN (Radford et al. 2015) and U-Net (Ronneberger et al. 2015) are
written from the papers' architectures; DeepBench's lists come from baidu-research/DeepBench
(package data). A suite can also be read from the user's own model (harness.model: an ONNX file,
or a torch module through forward hooks).
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from convbench.cases import random_conv_problem
from convbench.errors import UnknownNameError
from convbench.harness.model import merge, onnx_problems, parse_input_shapes, torch_problems
from convbench.ops.conv_transpose import ConvTranspose2dProblem
from convbench.ops.descriptor import parse


@dataclass(frozen=True)
class Case:
    """A named problem; `count` is how many times a model runs it (a suite read from a model
    merges identical layers)."""

    name: str
    problem: object
    count: int = 1

    @property
    def family(self) -> str:
        p = self.problem
        if isinstance(p, ConvTranspose2dProblem):
            return "conv_transpose2d"
        if hasattr(p, "kind"):
            return f"{p.kind}_pool2d"
        if hasattr(p, "cell"):
            return p.cell
        return "conv2d"

    @property
    def descriptor(self) -> str:
        return self.problem.descriptor()


def _cases(items) -> list[Case]:
    return [Case(name, parse(desc)[0]) for name, desc in items]


def resnet50(batch: int = 8) -> list[Case]:
    b = f"mb{batch}"
    items = [("conv1 7x7/2", f"{b}ic3ih224oc64kh7sh2ph3")]
    # stage: (input size, channels in, bottleneck width, channels out)
    stages = [("res2", 56, 64, 64, 256), ("res3", 56, 256, 128, 512), ("res4", 28, 512, 256, 1024),
              ("res5", 14, 1024, 512, 2048)]
    for name, size, cin, width, cout in stages:
        s = 1 if name == "res2" else 2
        out = size // s
        items += [
            (f"{name}a 1x1 {cin}->{width}", f"{b}ic{cin}ih{size}oc{width}kh1"),
            (f"{name}a 3x3 {width}" + (" /2" if s == 2 else ""),
             f"{b}ic{width}ih{size}oc{width}kh3" + (f"sh{s}" if s == 2 else "") + "ph1"),
            (f"{name} 1x1 {width}->{cout}", f"{b}ic{width}ih{out}oc{cout}kh1"),
            (f"{name}a proj 1x1 {cin}->{cout}" + (" /2" if s == 2 else ""),
             f"{b}ic{cin}ih{size}oc{cout}kh1" + (f"sh{s}" if s == 2 else "")),
            (f"{name} 1x1 {cout}->{width}", f"{b}ic{cout}ih{out}oc{width}kh1"),
        ]
        if s == 2:
            items.append((f"{name} 3x3 {width}", f"{b}ic{width}ih{out}oc{width}kh3ph1"))
    # res2's projection has the shape of its expansion 1x1: keep each shape once
    unique = {}
    for name, desc in items:
        unique.setdefault(desc, name)
    return _cases([(name, desc) for desc, name in unique.items()])


def vgg16(batch: int = 8) -> list[Case]:
    layers = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
              (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 14)]
    return _cases([(f"conv3 {c}->{k} @{h}", f"mb{batch}ic{c}ih{h}oc{k}kh3ph1")
                   for c, k, h in layers])


def mobilenet(batch: int = 8) -> list[Case]:
    dw = [(32, 112, 1), (64, 112, 2), (128, 56, 1), (128, 56, 2), (256, 28, 1), (256, 28, 2),
          (512, 14, 1), (512, 14, 2), (1024, 7, 1)]
    pw = [(32, 64, 112), (64, 128, 56), (128, 128, 56), (128, 256, 28), (256, 256, 28),
          (256, 512, 14), (512, 512, 14), (512, 1024, 7), (1024, 1024, 7)]
    items = [(f"dw3x3 {c} @{h}" + (" /2" if s == 2 else ""),
              f"g{c}mb{batch}ic{c}ih{h}oc{c}kh3" + (f"sh{s}" if s == 2 else "") + "ph1")
             for c, h, s in dw]
    items += [(f"pw1x1 {c}->{k} @{h}", f"mb{batch}ic{c}ih{h}oc{k}kh1") for c, k, h in pw]
    return _cases(items)


def _data_rows(filename: str):
    with resources.files("convbench.data").joinpath(filename).open() as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False).to_dict("records")


def _deepbench_descriptor(row: dict) -> str:
    """A row in DeepBench's columns (N,C,H,W,K,R,S,pad_h,pad_w,stride_h,stride_w) as a
    descriptor; a missing stride is 1, a missing padding 0."""
    v = {k: int(row.get(k) or d) for k, d in (("N", 0), ("C", 0), ("H", 0), ("W", 0), ("K", 0),
                                              ("R", 0), ("S", 0), ("pad_h", 0), ("pad_w", 0),
                                              ("stride_h", 1), ("stride_w", 1))}
    return (f"mb{v['N']}ic{v['C']}ih{v['H']}iw{v['W']}oc{v['K']}kh{v['R']}kw{v['S']}"
            f"sh{v['stride_h']}sw{v['stride_w']}ph{v['pad_h']}pw{v['pad_w']}")


def _deepbench_conv(sets: tuple[str, ...]) -> list[Case]:
    out = []
    for r in _data_rows("deepbench_conv.csv"):
        if r["set"] not in sets:
            continue
        out.append(Case(f"deepbench {r['set'].split('_')[0]} #{r['idx']}",
                        parse(_deepbench_descriptor(r))[0]))
    return out


def deepbench_rnn(sets=("training_set",)) -> list[Case]:
    cells = {"vanilla": "rnn_tanh", "lstm": "lstm", "gru": "gru"}
    out = []
    for r in _data_rows("deepbench_rnn.csv"):
        if r["set"] in sets:
            h, b, t = int(r["hidden"]), int(r["batch"]), int(r["timesteps"])
            cell = cells[r["cell"]]
            out.append(Case(f"deepbench {cell} h{h} b{b} t{t}",
                            parse(f"{cell}:t{t}mb{b}slc{h}sic{h}")[0]))
    return out


def pooling(batch: int = 8) -> list[Case]:
    return _cases([
        ("resnet50 maxpool 3x3/2", f"max:mb{batch}ic64ih112kh3sh2ph1"),
        ("vgg16 maxpool 2x2 @224", f"max:mb{batch}ic64ih224kh2"),
        ("vgg16 maxpool 2x2 @56", f"max:mb{batch}ic256ih56kh2"),
        ("vgg16 maxpool 2x2 @14", f"max:mb{batch}ic512ih14kh2"),
        ("resnet50 global avgpool", f"avg:mb{batch}ic2048ih7kh7"),
        ("inception avgpool 3x3/1", f"avg:mb{batch}ic192ih35kh3sh1ph1"),
    ])


def rnn(batch: int = 16) -> list[Case]:
    """Single layers, and a 2-layer bidirectional LSTM over 80 filterbank features (a speech
    encoder's shape) as its four layer-direction problems: each layer's reverse half runs with
    reverse=True, and the second layer reads both halves of the first (2 x 256 features)."""
    b = f"mb{batch}"
    return _cases([
        ("lstm h256 t64", f"lstm:t64{b}slc256sic256"),
        ("gru h256 t64", f"gru:t64{b}slc256sic256"),
        ("rnn_tanh h256 t64", f"rnn_tanh:t64{b}slc256sic256"),
        ("lstm h512 t25", f"lstm:t25{b}slc512sic512"),
        ("bilstm 2-layer h256 t100: l0 forward", f"lstm:t100{b}slc80sic256"),
        ("bilstm 2-layer h256 t100: l0 reverse", f"lstm:t100{b}slc80sic256rev1"),
        ("bilstm 2-layer h256 t100: l1 forward", f"lstm:t100{b}slc512sic256"),
        ("bilstm 2-layer h256 t100: l1 reverse", f"lstm:t100{b}slc512sic256rev1"),
        ("gru (original, linear_before_reset=False) h256 t64",
         f"gru:t64{b}slc256sic256lbr0"),
    ])


def decoders(batch: int | None = None) -> list[Case]:
    """Transposed convolutions of two decoders. DCGAN's generator (Radford et al. 2015, figure 1:
    z -> 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64x3) with the 4x4 kernels, stride 2,
    padding 1 of the PyTorch DCGAN example (the projection of z as a 4x4 transposed convolution of
    a 1x1 input), batch 8 by default. U-Net's expansive path (Ronneberger et al. 2015, figure 1:
    2x2 up-convolutions, stride 2, halving the channels: 28 -> 56 -> ... -> 392 for a 572x572
    tile), batch 1 by default as in the paper."""
    g, u = f"mb{batch or 8}", f"mb{batch or 1}"
    return _cases([
        ("dcgan project z 100 -> 4x4x1024", f"deconv:{g}ic100ih1oc1024kh4"),
        ("dcgan 4 -> 8, 1024 -> 512", f"deconv:{g}ic1024ih4oc512kh4sh2ph1"),
        ("dcgan 8 -> 16, 512 -> 256", f"deconv:{g}ic512ih8oc256kh4sh2ph1"),
        ("dcgan 16 -> 32, 256 -> 128", f"deconv:{g}ic256ih16oc128kh4sh2ph1"),
        ("dcgan 32 -> 64, 128 -> 3", f"deconv:{g}ic128ih32oc3kh4sh2ph1"),
        ("unet up-conv 28 -> 56, 1024 -> 512", f"deconv:{u}ic1024ih28oc512kh2sh2"),
        ("unet up-conv 52 -> 104, 512 -> 256", f"deconv:{u}ic512ih52oc256kh2sh2"),
        ("unet up-conv 100 -> 200, 256 -> 128", f"deconv:{u}ic256ih100oc128kh2sh2"),
        ("unet up-conv 196 -> 392, 128 -> 64", f"deconv:{u}ic128ih196oc64kh2sh2"),
    ])


def quick(batch: int = 2) -> list[Case]:
    """A handful of small real layers: the whole suite runs in well under a minute."""
    return _cases([
        ("res2 3x3 64 @28", f"mb{batch}ic64ih28oc64kh3ph1"),
        ("res3 1x1 128->512 @14", f"mb{batch}ic128ih14oc512kh1"),
        ("res4 3x3 256 @7", f"mb{batch}ic256ih7oc256kh3ph1"),
        ("mobilenet dw3x3 128 @28", f"g128mb{batch}ic128ih28oc128kh3ph1"),
        ("maxpool 3x3/2 64 @56", f"max:mb{batch}ic64ih56kh3sh2ph1"),
        ("lstm h128 t16", f"lstm:t16mb{batch}slc128sic128"),
    ])


SUITES = {
    "quick": quick,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "mobilenet": mobilenet,
    "deepbench-train": lambda: _deepbench_conv(("training_set",)),
    "deepbench-inference": lambda: _deepbench_conv(("inference_server_set",
                                                    "inference_device_set")),
    "deepbench-rnn": deepbench_rnn,
    "pooling": pooling,
    "rnn": rnn,
    "decoders": decoders,
}


def fuzz(seed: int = 0, count: int = 20) -> list[Case]:
    """Seeded random conv problems of moderate size (every parameter drawn)."""
    rng = np.random.default_rng(seed)
    return [Case(f"fuzz {seed}#{i}", random_conv_problem(rng, max_spatial=40, max_channels=48))
            for i in range(count)]


def from_file(path: str) -> list[Case]:
    """A user's suite: a CSV with a `descriptor` column (and optionally `name`), a CSV in
    DeepBench's columns (N,C,H,W,K,R,S,pad_h,pad_w,stride_h,stride_w), or a text file with one
    descriptor per line (# starts a comment)."""
    p = Path(path)
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"suite file {path} is not text") from None
    if p.suffix.lower() == ".csv":
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as e:
            raise ValueError(f"suite file {path}: not a CSV ({e})") from None
        rows = frame.to_dict("records")
        if rows and "descriptor" in frame:
            return [Case(r.get("name") or r["descriptor"], parse(r["descriptor"])[0])
                    for r in rows]
        if rows and {"N", "C", "H", "W", "K", "R", "S"} <= set(frame.columns):
            out = []
            for i, r in enumerate(rows):
                try:
                    out.append(Case(r.get("name") or f"{p.stem} #{i}",
                                    parse(_deepbench_descriptor(r))[0]))
                except ValueError as e:
                    raise ValueError(f"suite file {path}, row {i + 1}: {e}") from None
            return out
        raise ValueError(f"suite file {path}: a CSV needs a 'descriptor' column or DeepBench's "
                         f"columns N,C,H,W,K,R,S (found "
                         f"{', '.join(frame.columns) if rows else 'no rows'})")
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                prob, name = parse(line)
            except ValueError as e:
                raise ValueError(f"suite file {path}, line {number}: {e}") from None
            out.append(Case(name or line, prob))
    return out


def from_onnx(source, batch: int | None = None, input_shapes=None) -> list[Case]:
    """The layers of an ONNX model (a path, bytes or onnx.ModelProto) as a suite, identical
    layers merged with their count (harness.model). batch sets a dynamic first input dimension;
    input_shapes ({input name, or None for the only input: shape}, or strings
    'NAME:1,3,224,224') fixes inputs whose shapes are dynamic."""
    if input_shapes is not None and not isinstance(input_shapes, dict):
        input_shapes = parse_input_shapes(input_shapes)
    return [Case(name, p, count) for name, p, count in
            merge(onnx_problems(source, batch, input_shapes))]


def from_torch(module, example_input) -> list[Case]:
    """The layers a torch module runs on example_input (recorded by forward hooks) as a suite,
    identical layers merged with their count."""
    return [Case(name, p, count) for name, p, count in
            merge(torch_problems(module, example_input))]


def with_batch(case: Case, batch: int) -> Case:
    return Case(case.name, dataclasses.replace(case.problem, N=batch), case.count)


def is_model_file(spec: str) -> bool:
    return str(spec).lower().endswith(".onnx")


def load_suite(spec: str, batch: int | None = None, input_shapes=None) -> list[Case]:
    """A built-in suite name, 'fuzz[:SEED[:COUNT]]', a path to a suite file, or an ONNX model
    (*.onnx; input_shapes as from_onnx's)."""
    if input_shapes and not is_model_file(spec):
        raise ValueError("input shapes are for a suite read from an ONNX model (*.onnx)")
    if spec in SUITES:
        cases = SUITES[spec]()
    elif spec == "fuzz" or spec.startswith("fuzz:"):
        parts = spec.split(":")[1:]
        try:
            values = [int(v) for v in parts]
        except ValueError:
            raise ValueError(f"suite {spec!r}: fuzz:SEED:COUNT takes integers") from None
        if len(values) > 2 or any(v < 0 for v in values):
            raise ValueError(f"suite {spec!r}: fuzz:SEED:COUNT takes two integers >= 0")
        cases = fuzz(*values)
    elif is_model_file(spec):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"model {spec!r} does not exist")
        cases = from_onnx(spec, batch, input_shapes)
    elif Path(spec).is_file():
        cases = from_file(spec)
    else:
        raise UnknownNameError(f"unknown suite {spec!r}: not a file; built-in suites: "
                               f"{', '.join(SUITES)}, fuzz[:SEED[:COUNT]]")
    if not cases:
        raise ValueError(f"suite {spec!r} has no cases")
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch={batch} must be >= 1")
        cases = [with_batch(c, batch) for c in cases]
    return cases
