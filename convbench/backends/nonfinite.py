"""convbench's rule for NaN and infinity in a convolution, for algorithms that do not meet it by
themselves.

The rule: a backend's outputs are non-finite exactly where the float64 reference's are, NaN where
it is NaN and +-inf where it is +-inf. The reference sums products, zero padding included (a
padded zero times a NaN weight is a NaN product), so an output is

    NaN    when one of its products is NaN (a NaN operand, or an infinity times a zero), or its
           infinite products have both signs;
    +-inf  when it has infinite products, all of that sign;
    finite otherwise (overflow aside).

Direct sums meet the rule as they are. A transform mixes every input of a tile or a plane into
every output (one NaN poisons a whole Winograd tile, and an infinity becomes inf - inf = NaN), and a
layout that multiplies zeros of its own (the gaps of a wide or tall layout, an input gradient
computed as a padded forward convolution) makes NaN products where the reference has none.

`exact(direction)` wraps such a conv method: with finite inputs it runs the method as it is (one
sum over each operand it checks decides that); otherwise it runs the method on the inputs
with their non-finite values replaced by zero, which gives every finite output, and then sets the
non-finite outputs from counts of each output's NaN, +inf and -inf products. Each count is the
method itself, in float64, applied to 0/1 indicator arrays (the method is a verified linear map,
so on indicators it counts exactly the reference's products, whole numbers that no rounding moves
by 1/2), with the padding made explicit so that padded zeros count as zeros.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

#: Which operand of each direction's method is the zero-padded input x (fwd (x, w), bwd-weights
#: (dy, x)); the input gradient (dy, w) multiplies no padding: it is cropped off.
PADDED_OPERAND = {"fwd": 0, "bwd-weights": 1, "bwd-data": None}


def all_finite(a) -> bool:
    """Whether every value of `a` is finite, in one pass and no allocation: a sum is NaN or
    infinite when a value is. It can also overflow, for values near the largest float; those then
    take the exact path needlessly but correctly."""
    return bool(np.isfinite(np.add.reduce(a, axis=None)))


def _explicitly_padded(p, operands, index):
    """(problem, operands) with the padding of operand `index` made explicit: the same outputs,
    the padded zeros real zeros of the operand."""
    if index is None or p.padding == ((0, 0), (0, 0)):
        return p, operands
    (pt, pb), (pl, pr) = p.padding
    q = dataclasses.replace(p, H=p.Hp, W=p.Wp, padding=((0, 0), (0, 0)))
    operands = list(operands)
    operands[index] = np.pad(operands[index], ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    return q, operands


def _signs(v):
    """Indicators of v: NaN, +inf, -inf, > 0 (with +inf), < 0 (with -inf), == 0."""
    return {"nan": np.isnan(v), "+inf": v == np.inf, "-inf": v == -np.inf, "pos": v > 0,
            "neg": v < 0, "zero": v == 0, "any": np.ones(v.shape, dtype=bool)}


#: The products of each kind, as pairs of (indicator of a, indicator of b), their counts summed.
KINDS = {
    "nan": [("nan", "any"), ("any", "nan"), ("+inf", "zero"), ("-inf", "zero"), ("zero", "+inf"),
            ("zero", "-inf")],
    "+inf": [("+inf", "pos"), ("-inf", "neg"), ("pos", "+inf"), ("neg", "-inf")],
    "-inf": [("+inf", "neg"), ("-inf", "pos"), ("pos", "-inf"), ("neg", "+inf")],
}


def nonfinite_products(run, p, a, b, padded, dtype=np.float64):
    """{kind: bool array of the outputs with at least one product of that kind} for the method
    `run(p, a, b)` (a linear map in each operand), counting in `dtype` (float32 counts whole
    numbers exactly up to 2**24 terms, for a method that takes no float64); `padded`: the index
    of the zero-padded operand, or None."""
    q, (a, b) = _explicitly_padded(p, (a, b), padded)
    sa, sb = _signs(a), _signs(b)
    found = {}
    for kind, pairs in KINDS.items():
        total = None
        for ia, ib in pairs:
            if not (sa[ia].any() and sb[ib].any()):
                continue          # no such product anywhere
            count = np.asarray(run(q, sa[ia].astype(dtype), sb[ib].astype(dtype)))
            total = count if total is None else total + count
        found[kind] = None if total is None else total > 0.5
    return found


def exact(direction: str, check=(0, 1)):
    """Decorator of a conv method `(self, p, a, b, *bias)` that makes it meet the rule above.
    check: the operands whose NaN or infinity the method does not handle by itself (the others
    are then not scanned on every call)."""
    padded = PADDED_OPERAND[direction]

    def wrap(method):
        @functools.wraps(method)
        def run(self, p, a, b, *rest):
            if all(all_finite((a, b)[i]) for i in check):
                return method(self, p, a, b, *rest)
            fa, fb = np.isfinite(a), np.isfinite(b)
            out = np.asarray(method(self, p, np.where(fa, a, 0), np.where(fb, b, 0), *rest))
            if not out.flags.writeable:        # a runtime's own memory, seen through NumPy
                out = out.copy()
            no_bias = (None,) * len(rest)
            counting = np.float64 if np.dtype(np.float64) in map(np.dtype, self.dtypes) \
                else a.dtype
            found = nonfinite_products(lambda q, u, v: method(self, q, u, v, *no_bias),
                                       p, a, b, padded, counting)
            nan = found["nan"] if found["nan"] is not None else np.zeros(out.shape, bool)
            pos = found["+inf"] if found["+inf"] is not None else np.zeros(out.shape, bool)
            neg = found["-inf"] if found["-inf"] is not None else np.zeros(out.shape, bool)
            nan = nan | (pos & neg)
            special = np.where(nan, np.nan, np.where(pos, np.inf, -np.inf))
            bias = rest[0] if rest else None
            if bias is not None:        # the forward's bias is added to the sum of products
                with np.errstate(invalid="ignore"):          # inf - inf is the NaN wanted
                    special = special + bias[None, :, None, None]
            mask = nan | pos | neg
            out[mask] = special[mask]
            return out
        return run
    return wrap
