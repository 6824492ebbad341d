"""One-line problem descriptors in the style of oneDNN's benchdnn, parsed and printed round-trip.

Convolution (benchdnn's keys and defaults; an optional "conv:" tag):

    mb8ic64ih56oc64oh56kh3ph1      g1 mb2 sh1 ph0 dh0 by default; iw=ih, kw=kh, sw=sh, pw=ph, dw=dh
    g32mb1ic32ih112oc32kh3ph1      depthwise: groups = channels

  dh/dw count the gaps between taps as benchdnn does: dh0 is no dilation (PyTorch's dilation 1).
  oh/ow, when given, set the bottom/right padding (asymmetric padding) from the output size, as
  benchdnn does; pb/pr (convbench's own keys) give the bottom/right padding outright, for the
  cases oh/ow cannot express (a stride that leaves the last rows unused).
Pooling: "max:" or "avg:" then mb ic ih iw kh kw sh sw ph pw dh dw as above, plus cm1 for
  ceil_mode and cip0 for count_include_pad=False (average only). Stride defaults to the kernel.
Recurrent: "lstm:", "gru:" or "rnn_tanh:" then t (steps) mb slc (input size) sic (hidden size),
  and b0 for no bias.

A trailing n"name" (or _name) names the problem; it is kept apart from the problem itself.
"""
from __future__ import annotations

import re

from convbench.errors import UnknownNameError

_KEY = re.compile(r"([a-z]+)(\d+)")
_NAME = re.compile(r'(?:n"([^"]*)"|_([A-Za-z][\w.-]*))$')

CONV_KEYS = ("g", "mb", "ic", "ih", "iw", "oc", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw",
             "pb", "pr", "dh", "dw")
POOL_KEYS = ("mb", "ic", "ih", "iw", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "cm", "cip")
RNN_KEYS = ("t", "mb", "slc", "sic", "b")
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
            raise ValueError(f"descriptor {text!r}: unknown key {key!r}; valid keys: {', '.join(valid)}")
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
    if tag in POOL_TAGS:
        return _parse_pool(tag, body, text), name
    if tag in RNN_TAGS:
        return _parse_rnn(tag, body, text), name
    raise UnknownNameError(f"descriptor {text!r}: unknown op {tag!r}; valid: conv, "
                           f"{', '.join(POOL_TAGS + RNN_TAGS)}")


def _require(f, keys, text):
    missing = [k for k in keys if k not in f]
    if missing:
        raise ValueError(f"descriptor {text!r}: missing {', '.join(missing)}")


def _parse_conv(body, text):
    from convbench.ops.conv import Conv2dProblem
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

    def far_pad(i, k, s, p, d, o, explicit, names):
        if explicit is not None:
            if o is not None:
                raise ValueError(f"descriptor {text!r}: give {names[0]} or {names[1]}, not both")
            return explicit
        if o is None:
            return p
        return (o - 1) * s + (k - 1) * (d + 1) + 1 - i - p

    pb = far_pad(ih, kh, sh, ph, dh, f.get("oh"), f.get("pb"), ("oh", "pb"))
    pr = far_pad(iw, kw, sw, pw, dw, f.get("ow"), f.get("pr"), ("ow", "pr"))
    if pb < 0 or pr < 0:
        raise ValueError(f"descriptor {text!r}: output size oh/ow larger than the input allows")
    return Conv2dProblem(mb, f["ic"], ih, iw, f["oc"], kh, kw, (sh, sw), ((ph, pb), (pw, pr)),
                         (dh + 1, dw + 1), g)


def format_conv(p) -> str:
    (ph, pb), (pw, pr) = p.padding
    (sh, sw), (dh, dw) = p.stride, (p.dilation[0] - 1, p.dilation[1] - 1)
    parts = []
    if p.groups != 1:
        parts.append(f"g{p.groups}")
    parts += [f"mb{p.N}", f"ic{p.C}", f"ih{p.H}"]
    if p.W != p.H:
        parts.append(f"iw{p.W}")
    parts.append(f"oc{p.K}")
    far = []
    for size, k, s, near, d, out, pad, okey, pkey in ((p.H, p.R, sh, ph, dh, p.P, pb, "oh", "pb"),
                                                     (p.W, p.S, sw, pw, dw, p.Q, pr, "ow", "pr")):
        if pad != near:
            implied = (out - 1) * s + (k - 1) * (d + 1) + 1 - size - near
            (parts if implied == pad else far).append(f"{okey}{out}" if implied == pad
                                                      else f"{pkey}{pad}")
    parts.append(f"kh{p.R}")
    if p.S != p.R:
        parts.append(f"kw{p.S}")
    if sh != 1:
        parts.append(f"sh{sh}")
    if sw != sh:
        parts.append(f"sw{sw}")
    if ph != 0:
        parts.append(f"ph{ph}")
    if pw != ph:
        parts.append(f"pw{pw}")
    if dh != 0:
        parts.append(f"dh{dh}")
    if dw != dh:
        parts.append(f"dw{dw}")
    return "".join(parts + far)


def _parse_pool(kind, body, text):
    from convbench.ops.pool import Pool2dProblem
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
    return Pool2dProblem(kind, f.get("mb", 2), f["ic"], ih, iw, (kh, kw), (sh, sw), (ph, pw),
                         (dh + 1, dw + 1), bool(f.get("cm", 0)), bool(f.get("cip", 1)))


def format_pool(p) -> str:
    (kh, kw), (sh, sw), (ph, pw) = p.kernel, p.stride, p.padding
    dh, dw = p.dilation[0] - 1, p.dilation[1] - 1
    parts = [f"{p.kind}:mb{p.N}", f"ic{p.C}", f"ih{p.H}"]
    if p.W != p.H:
        parts.append(f"iw{p.W}")
    parts.append(f"kh{kh}")
    if kw != kh:
        parts.append(f"kw{kw}")
    if (sh, sw) != (kh, kw):
        parts.append(f"sh{sh}")
        if sw != sh:
            parts.append(f"sw{sw}")
    if ph:
        parts.append(f"ph{ph}")
    if pw != ph:
        parts.append(f"pw{pw}")
    if dh:
        parts.append(f"dh{dh}")
    if dw != dh:
        parts.append(f"dw{dw}")
    if p.ceil_mode:
        parts.append("cm1")
    if p.kind == "avg" and not p.count_include_pad:
        parts.append("cip0")
    return "".join(parts)


def _parse_rnn(cell, body, text):
    from convbench.ops.rnn import RNNProblem
    f = _fields(body, RNN_KEYS, text)
    _require(f, ("t", "slc", "sic"), text)
    return RNNProblem(cell, f["t"], f.get("mb", 2), f["slc"], f["sic"], bool(f.get("b", 1)))


def format_rnn(p) -> str:
    return f"{p.cell}:t{p.T}mb{p.N}slc{p.I}sic{p.H}" + ("" if p.bias else "b0")
