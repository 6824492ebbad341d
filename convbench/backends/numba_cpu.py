"""numba-cpu: parallel compiled direct convolution (Numba, prange), forward and both gradients.

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
  (check with `convbench.backends.numba_cpu.asm_report`).

The input gradient is the same GEMM in gather form on the output gradient (channels and taps
transposed, offsets negated), per phase of the input; the weight gradient is a GEMM that reduces
over images and positions.

Kernels compile on first use (per dtype) and are cached on disk (cache=True).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbench.backends.base import Backend
from convbench.backends.scratch import workspace
from convbench.ops.conv import Conv2dProblem, flip_transpose, input_gradient_problem

#: Output positions per block: 4 accumulator rows of this many values stay in L1.
CHUNK = 512

_kernels_cache: dict | None = None


def kernels() -> dict:
    """The compiled kernels (compiled or loaded from the cache on first use, not at import)."""
    global _kernels_cache
    if _kernels_cache is None:
        from convbench.backends import _numba_conv_kernels as kmod
        from convbench.threads import ensure_synced
        ensure_synced()
        _kernels_cache = {"gemm": kmod.implicit_gemm, "wgrad": kmod.weight_grad}
    return _kernels_cache


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


def to_phases(x: np.ndarray, p: Conv2dProblem, plan: PhasePlan, tag: str = "xph") -> np.ndarray:
    """x (N, C, H, W) -> zero-padded phase planes (N, C, sh*sw, rows*Wq), in a reused buffer."""
    out = workspace(tag, (p.N, p.C, plan.nph, plan.rows, plan.Wq), x.dtype)
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


def _wide(y: np.ndarray, p: Conv2dProblem, plan: PhasePlan, margin: int = 0) -> np.ndarray:
    """(N, K, P, Q) -> (N, K, margin + P*Wq + tail) rows at width Wq, zeros elsewhere."""
    out = workspace("wide", (p.N, y.shape[1], margin + plan.length), y.dtype)
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


def _tall_input(x: np.ndarray, p: Conv2dProblem, t: TallPlan, tag: str) -> np.ndarray:
    """x (N, C, H, W) -> (1, C, 1, lx): image n's pixel (h, w) at pl + (gh + n*(H+gh) + h)*Wq + w."""
    (_, _), (pl, _) = p.padding
    out = workspace(tag, (1, p.C, 1, t.lx), x.dtype)
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


class NumbaCPUBackend(Backend):
    name = "numba-cpu"
    description = "parallel compiled direct convolution: implicit GEMM on phase planes (Numba)"

    def unavailable_reason(self):
        try:
            import numba  # noqa: F401
        except ImportError as e:  # pragma: no cover - numba is a dependency
            return f"numba is not installed ({e})"
        return None

    def _tall_fwd(self, p, x, w, t: TallPlan):
        chan, phase, off = _tall_taps(p.Cg, p, t)
        yw = workspace("yw tall", (1, p.K, t.lout), x.dtype, zero=False)
        kernels()["gemm"](_tall_input(x, p, t, "x tall"), _padded_rows(w.reshape(p.K, -1), p.groups),
                          chan, phase, off, yw, p.Kg)
        return _tall_output_view(yw[0], p, t).transpose(1, 0, 2, 3)

    def conv2d_fwd(self, p, x, w, b):
        t = tall_plan(p)
        if t is not None:
            out = np.empty(p.y_shape, dtype=x.dtype)       # always fresh: yw is a workspace
            y = self._tall_fwd(p, x, w, t)
            if b is not None:
                np.add(y, b[:, None, None], out=out)
            else:
                np.copyto(out, y)
            return out
        plan = phase_plan(p)
        chan, phase, off = _taps_by_channel(p.Cg, plan)
        wm = _padded_rows(w.reshape(p.K, -1), p.groups)
        xph = to_phases(x, p, plan)
        if _stack_batch(p, plan):
            yw = workspace("yw", (1, p.K, p.N * plan.length), x.dtype, zero=False)
            kernels()["gemm"](_stacked(xph, int(plan.tap_off.max())), wm, chan, phase, off, yw, p.Kg)
            y = _unstacked(yw, p.N).reshape(p.N, p.K, plan.rows, plan.Wq)[:, :, :p.P, :p.Q]
        else:
            yw = workspace("yw", (p.N, p.K, p.P * plan.Wq), x.dtype, zero=False)
            kernels()["gemm"](xph, wm, chan, phase, off, yw, p.Kg)
            y = yw.reshape(p.N, p.K, p.P, plan.Wq)[:, :, :, :p.Q]
        out = np.empty(p.y_shape, dtype=x.dtype)       # always fresh: yw is a workspace
        if b is not None:
            np.add(y, b[:, None, None], out=out)
        else:
            np.copyto(out, y)
        return out

    def conv2d_bwd_data(self, p, dy, w):
        q = input_gradient_problem(p)
        t = tall_plan(q) if q is not None else None
        if t is not None:
            dx = np.empty(p.x_shape, dtype=dy.dtype)
            np.copyto(dx, self._tall_fwd(q, dy, flip_transpose(w, p.groups), t))
            return dx
        # dxph[c, ph, u] = sum over k and the taps of phase ph of w[k, c, tap] * dyw[k, u - off_tap]
        plan = phase_plan(p)
        margin = int(plan.tap_off.max())
        stack = _stack_batch(p, plan)
        if stack:
            dyw = workspace("dyw", (1, p.K, 1, margin + p.N * plan.length), dy.dtype)
            dyw[0, :, 0, margin:] = _stacked(_wide(dy, p, plan))[0]
            out = workspace("out", (1, p.C, p.N * plan.length), dy.dtype, zero=False)
        else:
            dyw = _wide(dy, p, plan, margin)[:, :, None, :]       # (N, K, 1, margin + length)
            out = workspace("out", (p.N, p.C, plan.length), dy.dtype, zero=False)
        wt = w.reshape(p.groups, p.Kg, p.Cg, p.R * p.S).transpose(0, 2, 1, 3)  # (G, Cg, Kg, T)
        dxph = workspace("dxph", (p.N, p.C, plan.nph, plan.length), dy.dtype)
        for ph in range(plan.nph):
            taps = np.nonzero(plan.tap_phase == ph)[0]
            if taps.size == 0:
                continue
            T = taps.size
            chan = np.repeat(np.arange(p.Kg, dtype=np.int64), T)
            off = margin - np.tile(plan.tap_off[taps], p.Kg)
            wj = np.ascontiguousarray(wt[..., taps]).reshape(p.C, p.Kg * T)
            kernels()["gemm"](dyw, _padded_rows(wj, p.groups), chan, np.zeros_like(chan), off,
                              out, p.Cg)
            dxph[:, :, ph] = _unstacked(out, p.N) if stack else out
        return from_phases(dxph, p, plan)

    def conv2d_bwd_weights(self, p, dy, x):
        Kgp = -(-p.Kg // 4) * 4
        t = tall_plan(p)
        if t is not None:
            chan, phase, off = _tall_taps(p.Cg, p, t)
            dyw = workspace("dy tall", (p.K, t.lout), dy.dtype)
            _tall_output_view(dyw, p, t)[...] = dy.transpose(1, 0, 2, 3)
            dw = np.zeros((p.groups, Kgp, chan.size), dtype=dy.dtype)
            kernels()["wgrad"](_tall_input(x, p, t, "x tall"), dyw[None], chan, phase, off, dw, t.lout)
            return np.ascontiguousarray(dw[:, :p.Kg]).reshape(p.w_shape)
        plan = phase_plan(p)
        chan, phase, off = _taps_by_channel(p.Cg, plan)
        dyw = _wide(dy, p, plan)
        xph = to_phases(x, p, plan)
        dw = np.zeros((p.groups, Kgp, chan.size), dtype=dy.dtype)
        if _stack_batch(p, plan):
            kernels()["wgrad"](_stacked(xph, int(plan.tap_off.max())), _stacked(dyw, tag="stacked dy"),
                               chan, phase, off, dw, p.N * plan.length)
        else:
            kernels()["wgrad"](xph, dyw, chan, phase, off, dw, p.P * plan.Wq)
        return np.ascontiguousarray(dw[:, :p.Kg]).reshape(p.w_shape)


#: Output planes shorter than this are processed with the batch laid end to end (see _stacked).
STACK_BELOW = 1024


def _stack_batch(p, plan) -> bool:
    return p.P * plan.Wq < STACK_BELOW and p.N > 1


def _stacked(a: np.ndarray, tail: int = 0, tag: str = "stacked") -> np.ndarray:
    """(N, C, ..., L) -> (1, C, ..., N*L + tail): the images end to end along the positions, so
    that small planes give the kernels long loops instead of many short ones. Each phase plane
    ends in zero rows at least as long as the largest tap offset, so a tap never reads into the
    next image; `tail` zeros let the last image's taps read past its end."""
    N, L = a.shape[0], a.shape[-1]
    mid = a.shape[1:-1]
    out = workspace(tag, (1,) + mid + (N * L + tail,), a.dtype)
    out[0, ..., :N * L] = np.moveaxis(a, 0, -2).reshape(mid + (N * L,))
    return out


def _unstacked(a: np.ndarray, N: int) -> np.ndarray:
    """(1, C, N*L) -> (N, C, L), the inverse of _stacked on an output."""
    return a[0].reshape(a.shape[1], N, -1).transpose(1, 0, 2)


def asm_report(dtype=np.float32) -> dict:
    """Packed FMA instructions (vfmadd...ps/pd on ymm/zmm registers) in each conv kernel, from a
    fresh compilation (Numba does not keep assembly for kernels loaded from its cache): a check
    that LLVM vectorised the inner loops rather than a guess."""
    import re

    import numba
    from convbench.backends import _numba_conv_kernels as kmod
    suffix = "ps" if np.dtype(dtype) == np.float32 else "pd"
    p = Conv2dProblem(1, 4, 6, 6, 4, 3, 3, padding=((1, 1), (1, 1)))
    x = np.ones(p.x_shape, dtype)
    w = np.ones(p.w_shape, dtype)
    plan = phase_plan(p)
    chan, phase, off = _taps_by_channel(p.Cg, plan)
    xph = to_phases(x, p, plan)
    args = {"implicit_gemm": (xph, _padded_rows(w.reshape(p.K, -1), 1), chan, phase, off,
                              np.empty((1, p.K, p.P * plan.Wq), dtype), p.Kg),
            "weight_grad": (xph, _wide(np.ones(p.y_shape, dtype), p, plan), chan, phase, off,
                            np.zeros((1, 4, chan.size), dtype), p.P * plan.Wq)}
    out = {}
    for name, a in args.items():
        fn = getattr(kmod, name)
        opts = {k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython")}
        fresh = numba.njit(**opts)(fn.py_func)
        fresh(*a)
        asm = "".join(fresh.inspect_asm().values())
        out[name] = len(re.findall(rf"vfmadd\w*{suffix}\s+[^\n]*%[yz]mm", asm))
    return out


# --- pooling ----------------------------------------------------------------------------------------
def _pool_kernels():
    from convbench.backends import _numba_pool_kernels
    from convbench.threads import ensure_synced
    ensure_synced()
    return _numba_pool_kernels


def _pool_geometry(p):
    return (*p.kernel, *p.stride, *p.padding)


#: Below this many window visits a pooling kernel runs on the calling thread alone.
SERIAL_POOL_WORK = 1 << 21


def _pool_call(name, p, *args):
    k = _pool_kernels()
    if p.N * p.C * p.P * p.Q * p.window < SERIAL_POOL_WORK:
        getattr(k, name + "_planes")(0, p.N * p.C, *args)
    else:
        getattr(k, name)(*args)


def _pool_max_fwd(self, p, x):
    y = np.empty(p.y_shape, dtype=x.dtype)
    _pool_call("max_fwd", p, x, y, *_pool_geometry(p), *p.dilation, x.dtype.type(-np.inf))
    return y


def _pool_max_bwd(self, p, dy, x):
    dx = np.zeros(p.x_shape, dtype=dy.dtype)
    _pool_call("max_bwd", p, dy, x, dx, *_pool_geometry(p), *p.dilation)
    return dx


def _pool_avg_fwd(self, p, x):
    from convbench.ops.pool import avg_divisors
    y = np.empty(p.y_shape, dtype=x.dtype)
    _pool_call("avg_fwd", p, x, y, avg_divisors(p).astype(x.dtype), *_pool_geometry(p))
    return y


def _pool_avg_bwd(self, p, dy, x):
    from convbench.ops.pool import avg_divisors
    dx = np.zeros(p.x_shape, dtype=dy.dtype)
    _pool_call("avg_bwd", p, dy, dx, avg_divisors(p).astype(dy.dtype), *_pool_geometry(p))
    return dx


NumbaCPUBackend.max_pool2d_fwd = _pool_max_fwd
NumbaCPUBackend.max_pool2d_bwd = _pool_max_bwd
NumbaCPUBackend.avg_pool2d_fwd = _pool_avg_fwd
NumbaCPUBackend.avg_pool2d_bwd = _pool_avg_bwd


# --- recurrent cells: BLAS GEMMs around fused gate kernels -----------------------------------------
class FusedSteps:
    """step_forward/step_backward with the interface of ops.rnn, on the fused Numba kernels."""

    @staticmethod
    def _k():
        from convbench.backends import _numba_rnn_kernels
        from convbench.threads import ensure_synced
        ensure_synced()
        return _numba_rnn_kernels

    @classmethod
    def step_forward(cls, cell, gi, gh, h, c):
        k = cls._k()
        hn = np.empty_like(h)
        if cell == "lstm":
            cn, act, tc = np.empty_like(c), np.empty_like(gi), np.empty_like(h)
            k.lstm_fwd(gi, gh, c, hn, cn, act, tc)
            return hn, cn, (act, c, tc)
        if cell == "gru":
            act = np.empty_like(gi)
            k.gru_fwd(gi, gh, h, hn, act)
            return hn, None, (act, gh, h)
        k.tanh_fwd(gi, gh, hn)
        return hn, None, (hn,)

    @classmethod
    def step_backward(cls, cell, dh, dc, cache):
        k = cls._k()
        dh = np.ascontiguousarray(dh)
        if cell == "lstm":
            act, c_prev, tc = cache
            da, dc_prev = np.empty_like(act), np.empty_like(dh)
            k.lstm_bwd(dh, dc, act, c_prev, tc, da, dc_prev)
            return da, da, None, dc_prev
        if cell == "gru":
            act, gh, h_prev = cache
            dgi, dgh, direct = np.empty_like(act), np.empty_like(act), np.empty_like(dh)
            k.gru_bwd(dh, act, gh, h_prev, dgi, dgh, direct)
            return dgi, dgh, direct, None
        (hn,) = cache
        da = np.empty_like(dh)
        k.tanh_bwd(dh, hn, da)
        return da, da, None, None


def _steps(dtype):
    """The fused kernels are float32 (their tanh fit is float32-accurate); float64 runs the exact
    gate arithmetic of ops.rnn around the same GEMMs."""
    from convbench.ops import rnn
    return FusedSteps if dtype == np.float32 else rnn


def _rnn_fwd(self, p, x, *args):
    from convbench.backends import rnn_numpy
    return rnn_numpy.forward(p, x, *args, steps=_steps(x.dtype))


def _rnn_bwd(self, p, dy, *args):
    from convbench.backends import rnn_numpy
    return rnn_numpy.backward(p, dy, *args, steps=_steps(dy.dtype))


NumbaCPUBackend.lstm_fwd = NumbaCPUBackend.gru_fwd = NumbaCPUBackend.rnn_tanh_fwd = _rnn_fwd
NumbaCPUBackend.lstm_bwd = NumbaCPUBackend.gru_bwd = NumbaCPUBackend.rnn_tanh_bwd = _rnn_bwd
