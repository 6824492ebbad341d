"""numba-cpu convolution: parallel compiled direct convolution (Numba, prange), all directions.

All three directions are one implicit GEMM over a "phase" layout of the padded input, with no
unfolded buffer:

* The padded input is split into stride_h x stride_w phase planes, each flattened row-major with
  width Wq = ceil(Wp / stride_w): phase (a, b) holds xpad[a::sh, b::sw]. Filter tap (r, s) then
  reads, for output t = i*Wq + j, the element `off + t` of plane (r*dh % sh, s*dw % sw), where
  off = (r*dh // sh) * Wq + s*dw // sw. Every tap of every stride and dilation becomes a shifted,
  contiguous read; the Wq - Q extra columns of each output row are computed and cropped.
* A convolution is then  y[k, t] = sum_j W[k, j] * x[chan_j, phase_j, off_j + t]  with j running
  over (input channel, tap) pairs: a GEMM whose second operand is read in place.
* The kernels unroll four j terms and four output channels, so each vector of x feeds four filters
  and each accumulator load feeds four FMAs; LLVM emits packed FMAs for the contiguous t loop
  (check with `convbench.backends.numba_cpu.asm.asm_report`).

The input gradient is the same GEMM in gather form on the output gradient (channels and taps
transposed, offsets negated), per phase of the input; the weight gradient is a GEMM that reduces
over images and positions.

Kernels compile on first use (per dtype) and are cached on disk (cache=True). Intermediates live
in arrays borrowed from the backend's workspace (`ws`, a backends.scratch.Lease); results are
always fresh arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.backends.scratch import Lease
from convbench.lazy import LazyModule
from convbench.ops.conv import Conv2dProblem, flip_transpose, input_gradient_problem
from convbench.threads import get_threads

KERNELS = LazyModule("convbench.backends._numba_conv_kernels")


@dataclass(frozen=True)
class PhasePlan:
    """Where each filter tap reads in the phase layout of a problem."""

    sh: int
    sw: int
    Wq: int          # width of a phase plane (and of a wide output row)
    rows: int        # rows of a phase plane, with room for the largest tap offset
    tap_phase: np.ndarray   # (R*S,) phase plane index a*sw + b
    tap_off: np.ndarray     # (R*S,) offset within the flattened plane

    @property
    def nph(self) -> int:
        return self.sh * self.sw

    @property
    def length(self) -> int:
        return self.rows * self.Wq


def phase_plan(p: Conv2dProblem) -> PhasePlan:
    (sh, sw), (dh, dw) = p.stride, p.dilation
    Wq = -(-p.Wp // sw)
    r = np.repeat(np.arange(p.R) * dh, p.S)
    s = np.tile(np.arange(p.S) * dw, p.R)
    phase = (r % sh) * sw + (s % sw)
    off = (r // sh) * Wq + s // sw
    rows = max(-(-p.Hp // sh), p.P + (p.R - 1) * dh // sh) + 1
    return PhasePlan(sh, sw, Wq, rows, phase.astype(np.int64), off.astype(np.int64))


def _phase_map(p: Conv2dProblem, plan: PhasePlan, a: int, b: int):
    """Where phase plane (a, b) meets the input: its first row and column holding input, and the
    input's (rows, columns) slices that land there. Padded row a + i*sh is input row
    a + i*sh - pad_top (likewise columns)."""
    (pt, _), (pl, _) = p.padding
    i0 = -(-(pt - a) // plan.sh) if pt > a else 0
    j0 = -(-(pl - b) // plan.sw) if pl > b else 0
    return i0, j0, (slice(None), slice(None), slice(a + i0 * plan.sh - pt, None, plan.sh),
                    slice(b + j0 * plan.sw - pl, None, plan.sw))


def to_phases(ws: Lease, x: np.ndarray, p: Conv2dProblem, plan: PhasePlan) -> np.ndarray:
    """x (N, C, H, W) -> zero-padded phase planes (N, C, sh*sw, rows*Wq), in a workspace array."""
    out = ws.take((p.N, p.C, plan.nph, plan.rows, plan.Wq), x.dtype)
    for a in range(plan.sh):
        for b in range(plan.sw):
            i0, j0, src = _phase_map(p, plan, a, b)
            part = x[src]
            out[:, :, a * plan.sw + b, i0:i0 + part.shape[2], j0:j0 + part.shape[3]] = part
    return out.reshape(p.N, p.C, plan.nph, plan.length)


def from_phases(xph: np.ndarray, p: Conv2dProblem, plan: PhasePlan) -> np.ndarray:
    """The adjoint of to_phases: phase planes (N, C, sh*sw, rows*Wq) -> x (N, C, H, W)."""
    planes = xph.reshape(p.N, p.C, plan.nph, plan.rows, plan.Wq)
    x = np.empty(p.x_shape, dtype=xph.dtype)
    for a in range(plan.sh):
        for b in range(plan.sw):
            i0, j0, dst_index = _phase_map(p, plan, a, b)
            dst = x[dst_index]
            dst[...] = planes[:, :, a * plan.sw + b, i0:i0 + dst.shape[2], j0:j0 + dst.shape[3]]
    return x


def _wide(ws: Lease, y: np.ndarray, p: Conv2dProblem, plan: PhasePlan,
          margin: int = 0) -> np.ndarray:
    """(N, K, P, Q) -> (N, K, margin + P*Wq + tail) rows at width Wq, zeros elsewhere."""
    out = ws.take((p.N, y.shape[1], margin + plan.length), y.dtype)
    view = out[:, :, margin:margin + p.P * plan.Wq].reshape(p.N, y.shape[1], p.P, plan.Wq)
    view[:, :, :, :p.Q] = y
    return out


def _padded_rows(w2: np.ndarray, groups: int) -> np.ndarray:
    """(groups*M, J) -> (groups, ceil(M/4)*4, J): zero rows so every block has 4 outputs."""
    M = w2.shape[0] // groups
    Mp = -(-M // 4) * 4
    out = np.zeros((groups, Mp, w2.shape[1]), dtype=w2.dtype)
    out[:, :M] = w2.reshape(groups, M, -1)
    return out


def _taps_by_channel(nchan: int, plan: PhasePlan, off_sign: int = 1, margin: int = 0):
    """chan, phase, off for j = c*T + tap."""
    T = plan.tap_off.size
    chan = np.repeat(np.arange(nchan, dtype=np.int64), T)
    phase = np.tile(plan.tap_phase, nchan)
    off = margin + off_sign * np.tile(plan.tap_off, nchan)
    return chan, phase, off


@dataclass(frozen=True)
class TallPlan:
    """Stride-1 layout with the batch stacked vertically and padding shared between neighbours.

    Each row of an image is followed by g_w = max(pad_left, pad_right) zero columns, which serve
    as the right padding of that row and, through the flat row-major wrap, as the left padding of
    the next; each image is preceded by g_h = max(pad_top, pad_bottom) zero rows, shared the same
    way between consecutive images. The convolution is then one implicit GEMM over the whole
    stack, with tap (r, s) at offset r*dh*Wq + s*dw, and computes (H + g_h) x Wq positions per
    image where the separate layout computes (P + extent) x (W + pl + pr): 81 instead of 110 for
    an 8x8 image with a padded 3x3 kernel.
    """

    Wq: int
    gh: int
    rows: int        # output rows computed: gh - pt + N * (H + gh)
    lout: int        # positions computed: rows * Wq
    lx: int          # input positions: lout + the largest tap offset, plus the left margin

    @property
    def length(self) -> int:
        return self.lout


def tall_plan(p: Conv2dProblem) -> TallPlan | None:
    """The tall layout for p, or None where it does not apply (strided convolutions, padding
    larger than the kernel's reach)."""
    if p.stride != (1, 1):
        return None
    (pt, pb), (pl, pr) = p.padding
    gw, gh = max(pl, pr), max(pt, pb)
    Wq = p.W + gw
    if p.Q > Wq or p.P > p.H + gh or min(pt, pb) > (p.R - 1) * p.dilation[0]:
        return None
    rows = gh - pt + p.N * (p.H + gh)
    lout = rows * Wq
    reach = (p.R - 1) * p.dilation[0] * Wq + (p.S - 1) * p.dilation[1]
    # room for every tap read of every computed position, and for every input row
    lx = max(pl + lout + reach + 1, pl + (gh + p.N * (p.H + gh)) * Wq)
    return TallPlan(Wq, gh, rows, lout, lx)


def _tall_input(ws: Lease, x: np.ndarray, p: Conv2dProblem, t: TallPlan) -> np.ndarray:
    """x (N, C, H, W) -> (1, C, 1, lx): image n's pixel (h, w) lands at
    pl + (gh + n*(H+gh) + h)*Wq + w."""
    (_, _), (pl, _) = p.padding
    out = ws.take((1, p.C, 1, t.lx), x.dtype)
    body = out[0, :, 0, pl + t.gh * t.Wq:pl + (t.gh + p.N * (p.H + t.gh)) * t.Wq]
    body.reshape(p.C, p.N, p.H + t.gh, t.Wq)[:, :, :p.H, :p.W] = x.transpose(1, 0, 2, 3)
    return out


def _tall_output_view(flat: np.ndarray, p: Conv2dProblem, t: TallPlan) -> np.ndarray:
    """(K, lout) computed positions -> the (K, N, P, Q) view of the real outputs: output (n, i, j)
    sits at row gh - pt + n*(H+gh) + i, column j (the left margin pl cancels the -pl shift)."""
    (pt, _), _ = p.padding
    K = flat.shape[0]
    rows = flat[:, :t.lout].reshape(K, t.rows, t.Wq)[:, t.gh - pt:]
    return rows.reshape(K, p.N, p.H + t.gh, t.Wq)[:, :, :p.P, :p.Q]


def _tall_taps(nchan: int, p: Conv2dProblem, t: TallPlan):
    r = np.repeat(np.arange(p.R) * p.dilation[0], p.S)
    s = np.tile(np.arange(p.S) * p.dilation[1], p.R)
    off = (r * t.Wq + s).astype(np.int64)
    T = off.size
    return (np.repeat(np.arange(nchan, dtype=np.int64), T), np.zeros(nchan * T, np.int64),
            np.tile(off, nchan))


#: Output planes shorter than this are processed with the batch laid end to end (see _stacked).
STACK_BELOW = 1024


def _stack_batch(p, plan) -> bool:
    return p.P * plan.Wq < STACK_BELOW and p.N > 1


def _stacked(ws: Lease, a: np.ndarray, tail: int = 0) -> np.ndarray:
    """(N, C, ..., L) -> (1, C, ..., N*L + tail): the images end to end along the positions, so
    that small planes give the kernels long loops instead of many short ones. Each phase plane
    ends in zero rows at least as long as the largest tap offset, so a tap never reads into the
    next image; `tail` zeros let the last image's taps read past its end."""
    N, L = a.shape[0], a.shape[-1]
    mid = a.shape[1:-1]
    out = ws.take((1,) + mid + (N * L + tail,), a.dtype)
    out[0, ..., :N * L] = np.moveaxis(a, 0, -2).reshape(mid + (N * L,))
    return out


def _unstacked(a: np.ndarray, N: int) -> np.ndarray:
    """(1, C, N*L) -> (N, C, L), the inverse of _stacked on an output."""
    return a[0].reshape(a.shape[1], N, -1).transpose(1, 0, 2)


def _tall_fwd(ws: Lease, p, x, w, t: TallPlan):
    """The (N, K, P, Q) outputs of the tall layout, a view into a workspace array."""
    chan, phase, off = _tall_taps(p.Cg, p, t)
    yw = ws.take((1, p.K, t.lout), x.dtype, zero=False)
    KERNELS.implicit_gemm(_tall_input(ws, x, p, t), _padded_rows(w.reshape(p.K, -1), p.groups),
                          chan, phase, off, yw, p.Kg)
    return _tall_output_view(yw[0], p, t).transpose(1, 0, 2, 3)

def _rows4(groups: int, rows: int, cols: int) -> int:
    """Elements of _padded_rows' (groups, ceil(rows/4)*4, cols) array."""
    return groups * (-(-rows // 4) * 4) * cols


def workspace_bytes(p: Conv2dProblem, direction: str, s: int) -> int:
    """Peak scratch bytes of forward, backward_data or backward_weights on p (itemsize s): the
    workspace arrays each path takes (laid-out inputs, wide or stacked copies, wide outputs), the
    padded weight rows, the tap index arrays, and each compiled task's accumulator."""
    taps = 6 * 8 * p.Cg * p.R * p.S                 # index arrays and their temporaries
    per_thread = get_threads() * 4 * max(512, p.Cg * p.R * p.S) * s
    if direction == "fwd":
        wm = _rows4(p.groups, p.Kg, p.Cg * p.R * p.S) * s
        t = tall_plan(p)
        if t is not None:
            return (p.C * t.lx + p.K * t.lout) * s + wm + taps + per_thread
        plan = phase_plan(p)
        xph = p.N * p.C * plan.nph * plan.length * s
        if _stack_batch(p, plan):
            # stacking copies through a temporary; unstacking the result copies it once more
            stacked = p.C * plan.nph * (p.N * plan.length + int(plan.tap_off.max())) * s
            return 2 * xph + stacked + 2 * p.K * p.N * plan.length * s + wm + taps + per_thread
        return xph + p.N * p.K * p.P * plan.Wq * s + wm + taps + per_thread
    if direction == "bwd-data":
        q = input_gradient_problem(p)
        t = tall_plan(q) if q is not None else None
        if t is not None:
            wm = _rows4(q.groups, q.Kg, q.Cg * q.R * q.S) * s
            return (p.K * p.Cg * p.R * p.S + q.C * t.lx + q.K * t.lout) * s + wm + taps \
                + per_thread
        plan = phase_plan(p)
        margin = int(plan.tap_off.max())
        if _stack_batch(p, plan):          # wide, stacked through a temporary, then margined
            wide = 3 * p.N * p.K * plan.length * s + p.K * (margin + p.N * plan.length) * s
        else:
            wide = p.N * p.K * (margin + plan.length) * s
        out = p.N * p.C * plan.length * s
        dxph = p.N * p.C * plan.nph * plan.length * s
        per_phase = (p.C * p.Kg * p.R * p.S + _rows4(p.groups, p.Cg, p.Kg * p.R * p.S)) * s
        return wide + out + dxph + per_phase + taps + per_thread
    Kgp = -(-p.Kg // 4) * 4
    dw = p.groups * Kgp * p.Cg * p.R * p.S * s
    t = tall_plan(p)
    if t is not None:
        return (p.K * t.lout + p.C * t.lx) * s + dw + taps + per_thread
    plan = phase_plan(p)
    dyw = p.N * p.K * plan.length * s
    xph = p.N * p.C * plan.nph * plan.length * s
    if _stack_batch(p, plan):               # each stacked through a temporary
        tail = int(plan.tap_off.max())
        dyw += 2 * p.K * p.N * plan.length * s
        xph += p.N * p.C * plan.nph * plan.length * s + p.C * plan.nph * (p.N * plan.length
                                                                         + tail) * s
    return dyw + xph + dw + taps + per_thread


def forward(ws: Lease, p, x, w, b):
    """y (N, K, P, Q) = conv2d(x, w) + b."""
    t = tall_plan(p)
    if t is not None:
        out = np.empty(p.y_shape, dtype=x.dtype)       # always fresh: yw is a workspace
        y = _tall_fwd(ws, p, x, w, t)
        if b is not None:
            np.add(y, b[:, None, None], out=out)
        else:
            np.copyto(out, y)
        return out
    plan = phase_plan(p)
    chan, phase, off = _taps_by_channel(p.Cg, plan)
    wm = _padded_rows(w.reshape(p.K, -1), p.groups)
    xph = to_phases(ws, x, p, plan)
    if _stack_batch(p, plan):
        yw = ws.take((1, p.K, p.N * plan.length), x.dtype, zero=False)
        KERNELS.implicit_gemm(_stacked(ws, xph, int(plan.tap_off.max())), wm, chan, phase, off,
                              yw, p.Kg)
        y = _unstacked(yw, p.N).reshape(p.N, p.K, plan.rows, plan.Wq)[:, :, :p.P, :p.Q]
    else:
        yw = ws.take((p.N, p.K, p.P * plan.Wq), x.dtype, zero=False)
        KERNELS.implicit_gemm(xph, wm, chan, phase, off, yw, p.Kg)
        y = yw.reshape(p.N, p.K, p.P, plan.Wq)[:, :, :, :p.Q]
    out = np.empty(p.y_shape, dtype=x.dtype)       # always fresh: yw is a workspace
    if b is not None:
        np.add(y, b[:, None, None], out=out)
    else:
        np.copyto(out, y)
    return out

def backward_data(ws: Lease, p, dy, w):
    """dx (N, C, H, W) from dy (N, K, P, Q) and w."""
    q = input_gradient_problem(p)
    t = tall_plan(q) if q is not None else None
    if t is not None:
        dx = np.empty(p.x_shape, dtype=dy.dtype)
        np.copyto(dx, _tall_fwd(ws, q, dy, flip_transpose(w, p.groups), t))
        return dx
    # dxph[c, ph, u] = sum over k and the taps of phase ph of w[k, c, tap] * dyw[k, u - off_tap]
    plan = phase_plan(p)
    margin = int(plan.tap_off.max())
    stack = _stack_batch(p, plan)
    if stack:
        dyw = ws.take((1, p.K, 1, margin + p.N * plan.length), dy.dtype)
        dyw[0, :, 0, margin:] = _stacked(ws, _wide(ws, dy, p, plan))[0]
        out = ws.take((1, p.C, p.N * plan.length), dy.dtype, zero=False)
    else:
        dyw = _wide(ws, dy, p, plan, margin)[:, :, None, :]       # (N, K, 1, margin + length)
        out = ws.take((p.N, p.C, plan.length), dy.dtype, zero=False)
    wt = w.reshape(p.groups, p.Kg, p.Cg, p.R * p.S).transpose(0, 2, 1, 3)  # (G, Cg, Kg, T)
    dxph = ws.take((p.N, p.C, plan.nph, plan.length), dy.dtype)
    for ph in range(plan.nph):
        taps = np.nonzero(plan.tap_phase == ph)[0]
        if taps.size == 0:
            continue
        T = taps.size
        chan = np.repeat(np.arange(p.Kg, dtype=np.int64), T)
        off = margin - np.tile(plan.tap_off[taps], p.Kg)
        wj = np.ascontiguousarray(wt[..., taps]).reshape(p.C, p.Kg * T)
        KERNELS.implicit_gemm(dyw, _padded_rows(wj, p.groups), chan, np.zeros_like(chan), off,
                              out, p.Cg)
        dxph[:, :, ph] = _unstacked(out, p.N) if stack else out
    return from_phases(dxph, p, plan)

def backward_weights(ws: Lease, p, dy, x):
    """dw (K, C/groups, R, S) from dy (N, K, P, Q) and x."""
    Kgp = -(-p.Kg // 4) * 4
    t = tall_plan(p)
    if t is not None:
        chan, phase, off = _tall_taps(p.Cg, p, t)
        dyw = ws.take((p.K, t.lout), dy.dtype)
        _tall_output_view(dyw, p, t)[...] = dy.transpose(1, 0, 2, 3)
        dw = np.zeros((p.groups, Kgp, chan.size), dtype=dy.dtype)
        KERNELS.weight_grad(_tall_input(ws, x, p, t), dyw[None], chan, phase, off, dw, t.lout)
        return np.ascontiguousarray(dw[:, :p.Kg]).reshape(p.w_shape)
    plan = phase_plan(p)
    chan, phase, off = _taps_by_channel(p.Cg, plan)
    dyw = _wide(ws, dy, p, plan)
    xph = to_phases(ws, x, p, plan)
    dw = np.zeros((p.groups, Kgp, chan.size), dtype=dy.dtype)
    if _stack_batch(p, plan):
        KERNELS.weight_grad(_stacked(ws, xph, int(plan.tap_off.max())), _stacked(ws, dyw),
                            chan, phase, off, dw, p.N * plan.length)
    else:
        KERNELS.weight_grad(xph, dyw, chan, phase, off, dw, p.P * plan.Wq)
    return np.ascontiguousarray(dw[:, :p.Kg]).reshape(p.w_shape)
