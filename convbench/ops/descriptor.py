"""One-line problem descriptors in the style of oneDNN's benchdnn, parsed and printed round-trip.

Convolution (benchdnn's keys and defaults; an optional "conv:" tag):

    mb8ic64ih56oc64oh56kh3ph1      g1 mb2 sh1 ph0 dh0 by default; iw=ih, kw=kh, sw=sh, pw=ph, dw=dh
    g32mb1ic32ih112oc32kh3ph1      depthwise: groups = channels

  dh/dw count the gaps between taps as benchdnn does: dh0 is no dilation (PyTorch's dilation 1).
  oh/ow, when given, set the bottom/right padding (asymmetric padding) from the output size, as
  benchdnn does; pb/pr (convbench's own keys) give the bottom/right padding outright, for the
  cases oh/ow cannot express (a stride that leaves the last rows unused).
Transposed convolution (benchdnn's deconvolution driver): "deconv:" then the convolution keys,
  with ic/ih/iw the input and oc/oh/ow the output (oh/ow, when given, set the bottom/right crop,
  or the output padding where the output is larger than the padding allows):

    deconv:mb8ic512ih4oc256oh8kh4sh2ph1     DCGAN: 4x4 -> 8x8, kernel 4, stride 2, padding 1

Pooling: "max:" or "avg:" then mb ic ih iw kh kw sh sw ph pw dh dw as above, plus cm1 for
  ceil_mode and cip0 for count_include_pad=False (average only). Stride defaults to the kernel.
  Bottom/right padding unlike the top/left: pb/pr, or oh/ow as for convolutions.
Recurrent: "lstm:", "gru:" or "rnn_tanh:" then t (steps) mb slc (input size) sic (hidden size),
  and b0 for no bias, rev1 for a reversed sequence (benchdnn's right2left direction), lbr0 for
  the original GRU (linear_before_reset=False; benchdnn's VANILLA_GRU, where gru: is its LBR_GRU).

A trailing n"name" (or _name) names the problem; it is kept apart from the problem itself.

Printing is each problem's own `descriptor()` (ops.conv, ops.pool, ops.rnn), the shortest text
that parses back to it; this module parses. The round trip is tested on random problems.
"""
from __future__ import annotations

import re

from convbench.errors import UnknownNameError
from convbench.ops.conv import Conv2dProblem
from convbench.ops.conv_transpose import ConvTranspose2dProblem
from convbench.ops.pool import Pool2dProblem
from convbench.ops.rnn import RNNProblem

_KEY = re.compile(r"([a-z]+)(\d+)")
_NAME = re.compile(r'(?:n"([^"]*)"|_([A-Za-z][\w.-]*))$')

CONV_KEYS = ("g", "mb", "ic", "ih", "iw", "oc", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw",
             "pb", "pr", "dh", "dw")
POOL_KEYS = ("mb", "ic", "ih", "iw", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw", "pb", "pr",
             "dh", "dw", "cm", "cip")
RNN_KEYS = ("t", "mb", "slc", "sic", "b", "rev", "lbr")
POOL_TAGS = ("max", "avg")
RNN_TAGS = ("lstm", "gru", "rnn_tanh")


def _fields(body: str, valid: tuple[str, ...], text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    pos = 0
    for m in _KEY.finditer(body):
        if m.start() != pos:
            break
        key = m.group(1)
        if key not in valid:
            raise ValueError(f"descriptor {text!r}: unknown key {key!r}; "
                             f"valid keys: {', '.join(valid)}")
        if key in out:
            raise ValueError(f"descriptor {text!r}: key {key!r} given twice")
        out[key] = int(m.group(2))
        pos = m.end()
    if pos != len(body) or not out:
        raise ValueError(f"descriptor {text!r}: cannot parse {body[pos:]!r} (expected key-number "
                         f"pairs such as mb8ic64ih56oc64kh3ph1)")
    return out


def parse(text: str):
    """'mb8ic64ih56oc64kh3ph1n"res2"' -> (Conv2dProblem, 'res2'); likewise pooling and RNN."""
    s = text.strip()
    name = None
    m = _NAME.search(s)
    if m:
        name = m.group(1) if m.group(1) is not None else m.group(2)
        s = s[:m.start()].rstrip()
    tag, _, body = s.rpartition(":")
    if tag in ("", "conv"):
        return _parse_conv(body, text), name
    if tag == "deconv":
        return _parse_deconv(body, text), name
    if tag in POOL_TAGS:
        return _parse_pool(tag, body, text), name
    if tag in RNN_TAGS:
        return _parse_rnn(tag, body, text), name
    raise UnknownNameError(f"descriptor {text!r}: unknown op {tag!r}; valid: conv, deconv, "
                           f"{', '.join(POOL_TAGS + RNN_TAGS)}")


def _require(f, keys, text):
    missing = [k for k in keys if k not in f]
    if missing:
        raise ValueError(f"descriptor {text!r}: missing {', '.join(missing)}")


def _far_pad(text, i, k, s, p, d, o, explicit, names):
    """The bottom/right padding: given outright (pb/pr), implied by the output size (oh/ow, as
    benchdnn does), or the same as the top/left."""
    if explicit is not None:
        if o is not None:
            raise ValueError(f"descriptor {text!r}: give {names[0]} or {names[1]}, not both")
        return explicit
    if o is None:
        return p
    far = (o - 1) * s + (k - 1) * (d + 1) + 1 - i - p
    if far < 0:
        raise ValueError(f"descriptor {text!r}: output size {names[0]}{o} larger than the "
                         f"input allows")
    return far


def _parse_conv(body, text):
    f = _fields(body, CONV_KEYS, text)
    _require(f, ("ic", "ih", "oc", "kh"), text)
    g, mb = f.get("g", 1), f.get("mb", 2)
    ih, kh = f["ih"], f["kh"]
    iw, kw = f.get("iw", ih), f.get("kw", kh)
    sh = f.get("sh", 1)
    sw = f.get("sw", sh)
    ph = f.get("ph", 0)
    pw = f.get("pw", ph)
    dh = f.get("dh", 0)
    dw = f.get("dw", dh)

    pb = _far_pad(text, ih, kh, sh, ph, dh, f.get("oh"), f.get("pb"), ("oh", "pb"))
    pr = _far_pad(text, iw, kw, sw, pw, dw, f.get("ow"), f.get("pr"), ("ow", "pr"))
    return Conv2dProblem(mb, f["ic"], ih, iw, f["oc"], kh, kw, (sh, sw), ((ph, pb), (pw, pr)),
                         (dh + 1, dw + 1), g)


def _parse_deconv(body, text):
    """benchdnn's deconvolution: ic/ih the input, oc the output channels, oh/ow the output size
    (which sets the bottom/right crop, and the output padding where that would be negative)."""
    f = _fields(body, CONV_KEYS, text)
    _require(f, ("ic", "ih", "oc", "kh"), text)
    for key in ("pb", "pr"):
        if key in f:
            raise ValueError(f"descriptor {text!r}: a deconvolution gives its output size "
                             f"(oh/ow), not {key}")
    g, mb = f.get("g", 1), f.get("mb", 2)
    ih, kh = f["ih"], f["kh"]
    iw, kw = f.get("iw", ih), f.get("kw", kh)
    sh = f.get("sh", 1)
    sw = f.get("sw", sh)
    ph = f.get("ph", 0)
    pw = f.get("pw", ph)
    dh = f.get("dh", 0)
    dw = f.get("dw", dh)
    pads, out_pads = [], []
    for i, k, s, p, d, o in ((ih, kh, sh, ph, dh, f.get("oh")), (iw, kw, sw, pw, dw, f.get("ow"))):
        crop = p if o is None else (i - 1) * s + (k - 1) * (d + 1) + 1 - p - o
        pads.append((p, max(crop, 0)))
        out_pads.append(max(-crop, 0))
    return ConvTranspose2dProblem(mb, f["ic"], ih, iw, f["oc"], kh, kw, (sh, sw), tuple(pads),
                                  tuple(out_pads), (dh + 1, dw + 1), g)


def _parse_pool(kind, body, text):
    f = _fields(body, POOL_KEYS, text)
    _require(f, ("ic", "ih", "kh"), text)
    ih, kh = f["ih"], f["kh"]
    iw, kw = f.get("iw", ih), f.get("kw", kh)
    sh = f.get("sh", kh)
    sw = f.get("sw", kw if "sh" not in f else sh)
    ph = f.get("ph", 0)
    pw = f.get("pw", ph)
    dh = f.get("dh", 0)
    dw = f.get("dw", dh)
    if kind == "avg" and (dh or dw):
        raise ValueError(f"descriptor {text!r}: average pooling takes no dilation")
    ceil = bool(f.get("cm", 0))
    if ceil and ("oh" in f or "ow" in f):
        raise ValueError(f"descriptor {text!r}: give oh/ow or cm1, not both")
    pb = _far_pad(text, ih, kh, sh, ph, dh, f.get("oh"), f.get("pb"), ("oh", "pb"))
    pr = _far_pad(text, iw, kw, sw, pw, dw, f.get("ow"), f.get("pr"), ("ow", "pr"))
    return Pool2dProblem(kind, f.get("mb", 2), f["ic"], ih, iw, (kh, kw), (sh, sw),
                         ((ph, pb), (pw, pr)), (dh + 1, dw + 1), ceil, bool(f.get("cip", 1)))


def _parse_rnn(cell, body, text):
    f = _fields(body, RNN_KEYS, text)
    _require(f, ("t", "slc", "sic"), text)
    return RNNProblem(cell, f["t"], f.get("mb", 2), f["slc"], f["sic"], bool(f.get("b", 1)),
                      bool(f.get("rev", 0)), bool(f.get("lbr", 1)))
