"""A direct convolution on channel-blocked layouts (oneDNN's nChw16c idea), in all three
directions, float32 and float64, for any stride, padding, dilation and groups, with its own
kernel for depthwise layers.

Layout. Channels are cut into blocks of L, one vector's lanes (`_conv_tiles.LANES`: 16 float32
on AVX-512, 8 on AVX2). An input becomes (N, B, sh*sw, Hb, Wb, L): per image and channel block,
the zero-padded input split into sh x sw phase planes (phase (a, e) holds padded rows a + sh*i
and columns e + sw*j), with the L channels of each position adjacent. Filter tap (r, s) then
reads phase ((r*dh) % sh, (s*dw) % sw) shifted by ((r*dh) // sh, (s*dw) // sw): at every stride
and dilation, the outputs of a row read consecutive positions of one plane, so a tap is one
element offset (`toff`). Outputs are (N, B', 1, Py, Qy, L), the output plane rounded up to
whole tiles (the extra positions are computed and dropped). The conversions from and to NCHW
(`_conv_layout`) are compiled and parallel, and part of every call; the weights are put into
the kernels' order once per weight array and kept (`WeightCache`).

Kernels (`_conv_kernels`, generated). Forward: a register tile of TH x TW output positions by
NKB blocks of L output channels, its accumulators in vector registers for the whole reduction
over input channels and taps; each step loads NKB weight vectors and broadcasts TH*TW inputs.
The input gradient is the same kernel per phase of the input: dx at phase (a, e) sums, over the
taps whose stride phase matches, weights times the output gradient shifted by a fixed offset
(a forward convolution over a zero-margined dy). The weight gradient keeps CI input channels by
NKB output blocks in registers and sums over the output positions. Depthwise layers (groups ==
channels) multiply vectors by vectors: lanes are channels with their own weights.

Threads: the drivers' parallel loops run over (group, output blocks, images, rows) with the
output blocks outermost (each thread's weights stay in its cache), or for the weight gradient
over (position split, output block, input block) with the splits summed in a fixed order, so
results do not depend on the thread count.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from convbench.kernels._conv_tiles import (
    LANES,
    SLOWER_BWD_WEIGHTS,
    SLOWER_FWD,
    bwd_weights_tiles,
    depthwise_tiles,
    fwd_tiles,
)
from convbench.kernels.peak import isa as _isa
from convbench.lazy import LazyModule
from convbench.ops.conv import Conv2dProblem

KERNELS = LazyModule("convbench.kernels._conv_kernels")
LAYOUT = LazyModule("convbench.kernels._conv_layout")

#: The fused forward (the input converted per task, in cache) runs where the blocked weights
#: take at most this many bytes (they all stay in cache while a task runs them) ...
FUSED_WEIGHT_BYTES = 1 << 20
#: ... with slabs of blocked input rows of about this many bytes per task.
FUSED_SLAB_BYTES = 256 << 10

#: The weight gradient splits the positions until it has this many tasks (its partial sums
#: are added in a fixed order, so results do not depend on the thread count).
BWDW_TASKS = 8

#: Below this many multiply-adds a call runs on one thread.
SERIAL_MACS = 1 << 21

#: Below this many elements a layout pass runs on the calling thread: waking the others costs
#: more.
SERIAL_ELEMENTS = 1 << 18

#: Bytes of dy and x rows one weight-gradient kernel call reads, at most (they stay in L1 while
#: the taps go by) ...
BWDW_ROW_BYTES = 24 << 10
#: ... and of the blocked input rows a weight-gradient task converts at a time.
BWDW_SLAB_BYTES = 192 << 10


def lanes(dtype, isa: str | None = None) -> int:
    """Channels per block (vector lanes) for dtype on isa (default: what Numba compiles for)."""
    return LANES[isa or _isa(), np.dtype(dtype).name]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=1024)
def _taps(p: Conv2dProblem):
    """(phase, row shift, column shift) of each tap r*S + s in the phase planes."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    r = np.repeat(np.arange(p.R) * dh, p.S)
    s = np.tile(np.arange(p.S) * dw, p.R)
    return (r % sh) * sw + (s % sw), r // sh, s // sw


@dataclass(frozen=True)
class Tile:
    """Output positions per tile (th rows of tw), output channel blocks per tile (nkb), and
    whether the th rows come from th images (one row each) rather than th rows of one image."""
    th: int
    tw: int
    nkb: int
    images: bool = False


def _fwd_tile(isa, dtype, N, P, Q, Kg, L) -> tuple[Tile, int, int]:
    """The forward tile that does the most useful work per cycle (share of the padded tiles
    that lies inside the output, times its relative speed), with the padded rows and columns."""
    best = None
    for th, tw, nkb, _ in fwd_tiles(isa, dtype):
        kpad = _ceil(_ceil(Kg, L), nkb) * nkb * L
        Qy = _ceil(Q, tw) * tw
        speed = SLOWER_FWD.get((th, tw, nkb), 1.0)
        modes = [(False, _ceil(P, th) * th, N)]
        if th > 1 and N % th == 0:
            modes.append((True, P, N))
        for images, Py, Ny in modes:
            score = (N * P * Q * Kg) / (Ny * Py * Qy * kpad) * speed
            if best is None or score > best[0] * 1.02:
                best = (score, Tile(th, tw, nkb, images), Py, Qy)
    return best[1], best[2], best[3]


def _dw_tile(isa, dtype, Q) -> tuple[int, int]:
    best = None
    for tw, _ in depthwise_tiles(isa, dtype):
        Qy = _ceil(Q, tw) * tw
        score = Q / Qy * min(1.0, tw / 8)
        if best is None or score > best[0] * 1.02:
            best = (score, tw, Qy)
    return best[1], best[2]


def _bwdw_tile(isa, dtype, Kg, cgb) -> tuple[int, int]:
    """(KT, NCB) of the weight gradient: the most useful work per cycle, counting the output
    channels a last partial KT recomputes and the zero input blocks NCB rounds up to."""
    best = None
    for kt, ncb, _ in bwd_weights_tiles(isa, dtype):
        if kt > Kg:
            continue
        score = (Kg / (_ceil(Kg, kt) * kt) * cgb / (_ceil(cgb, ncb) * ncb)
                 * SLOWER_BWD_WEIGHTS.get((kt, ncb), 1.0))
        if best is None or score > best[0] * 1.02:
            best = (score, kt, ncb)
    return best[1], best[2]


def _threads() -> int:
    import numba  # heavy: importing convbench.kernels must not load it
    return numba.get_num_threads()


@contextlib.contextmanager
def _threads_for(macs: int):
    """One thread for problems below SERIAL_MACS multiply-adds (waking the others costs more
    than they save, and a busy machine makes that wait long), else Numba's thread count."""
    if macs >= SERIAL_MACS:
        yield
        return
    import numba  # heavy: importing convbench.kernels must not load it
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# --- weights kept between calls -------------------------------------------------------------

class WeightCache:
    """Prepared (re-laid-out) weights, kept per weight array and preparation key, bounded by
    max_bytes (least recently used dropped first).

    An entry is used only for the same array object (a weak reference, so a new array at a
    recycled address never matches) at the same address, whose contents have the checksum they
    had when it was prepared (`_conv_layout.checksum`: one pass over the weights at memory
    speed, cheaper than preparing them again; the trainer updates its weights in place).
    enabled=False prepares on every call (the uncached case)."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self.enabled = True
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()
        self._bytes = 0

    def get(self, w: np.ndarray, key, make):
        """make(w) for this w and key, from the cache where w is unchanged."""
        if not self.enabled or not w.flags.c_contiguous:
            return make(w)
        k = (id(w), w.ctypes.data, w.shape, w.dtype.str, key)
        sig = _checksum(w)
        with self._lock:
            entry = self._entries.get(k)
            if entry is not None:
                self._entries.move_to_end(k)
        if entry is not None and entry[0]() is w and entry[1] == sig:
            self.hits += 1
            return entry[2]
        self.misses += 1
        prepared = make(w)
        size = sum(a.nbytes for a in _arrays(prepared))
        if size > self.max_bytes:
            return prepared
        try:
            ref = weakref.ref(w, lambda _, k=k: self._drop(k))
        except TypeError:         # some array subclasses take no weak references
            return prepared
        with self._lock:
            old = self._entries.pop(k, None)
            if old is not None:
                self._bytes -= old[3]
            self._entries[k] = (ref, sig, prepared, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped[3]
        return prepared

    def _drop(self, k) -> None:
        with self._lock:
            entry = self._entries.pop(k, None)
            if entry is not None:
                self._bytes -= entry[3]

    def clear(self) -> int:
        """Drop every entry; returns the bytes released."""
        with self._lock:
            freed = self._bytes
            self._entries.clear()
            self._bytes = 0
        return freed

    @property
    def nbytes(self) -> int:
        return self._bytes


def _arrays(prepared):
    if isinstance(prepared, np.ndarray):
        return [prepared]
    return [a for a in prepared if isinstance(a, np.ndarray)]


def _checksum(w: np.ndarray) -> tuple[int, int]:
    words = w.reshape(-1).view(np.uint32 if w.dtype.itemsize == 4 else np.uint64)
    return tuple(int(h) for h in LAYOUT.checksum(words))


#: The cache the functions below use unless given another.
CACHE = WeightCache()


# --- plans ----------------------------------------------------------------------------------


class _Clock:
    """Adds the seconds since its last call to stages[name] (nothing when stages is None)."""

    def __init__(self, stages: dict | None):
        self.stages = stages
        self.t = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.stages is not None:
            now = time.perf_counter()
            self.stages[name] = self.stages.get(name, 0.0) + now - self.t
            self.t = now


class _Alloc:
    """The Lease protocol (take(shape, dtype, zero)) on fresh arrays, for callers without a
    workspace."""

    @staticmethod
    def take(shape, dtype, zero: bool = True) -> np.ndarray:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)


@dataclass(frozen=True)
class FwdPlan:
    """A forward call's (or one input-gradient phase's) tile and padded sizes."""
    L: int
    tile: Tile
    Py: int           # output rows, rounded up to whole tiles
    Qy: int           # output columns, rounded up to whole tiles
    kbg: int          # blocks of NKB output blocks per group
    cgb: int          # input channel blocks per group
    nci_last: int     # input channels in a group's last block
    kg: int           # output channels per group

    @property
    def kgb(self) -> int:
        return self.kbg * self.tile.nkb


def fwd_plan(isa: str, dtype, N: int, P: int, Q: int, Cg: int, Kg: int) -> FwdPlan:
    """The forward tile and sizes for N images of P x Q outputs, Cg -> Kg channels per group."""
    return _fwd_plan(isa, np.dtype(dtype), N, P, Q, Cg, Kg)


@functools.lru_cache(maxsize=1024)
def _fwd_plan(isa: str, dtype: np.dtype, N: int, P: int, Q: int, Cg: int, Kg: int) -> FwdPlan:
    L = LANES[isa, np.dtype(dtype).name]
    tile, Py, Qy = _fwd_tile(isa, np.dtype(dtype).name, N, P, Q, Kg, L)
    cgb = _ceil(Cg, L)
    return FwdPlan(L, tile, Py, Qy, _ceil(_ceil(Kg, L), tile.nkb), cgb, Cg - (cgb - 1) * L, Kg)


@functools.lru_cache(maxsize=1024)
def _block_map(groups: int, per_group: int, blocks_per_group: int, L: int) -> np.ndarray:
    """chmap of group-blocked channels: group g's channels in blocks g*bpg .. g*bpg + bpg - 1,
    L a block, zero lanes after the group's per_group channels."""
    b = np.arange(groups * blocks_per_group)
    g, cb = b // blocks_per_group, b % blocks_per_group
    return LAYOUT.channel_map(b.size, L, g * per_group + cb * L,
                              np.clip(per_group - cb * L, 0, L))


def _positions(groups: int, per_group: int, blocks_per_group: int, L: int) -> np.ndarray:
    """pos[k] = block*L + lane of channel k in a group-blocked layout (from_blocked's map)."""
    k = np.arange(groups * per_group)
    g, kk = k // per_group, k % per_group
    return ((g * blocks_per_group + kk // L) * L + kk % L).astype(np.int64)


def _run_fwd(plan: FwdPlan, xb, wb, toff, groups: int, y, y_pitch, rows: int, cols: int,
             bias) -> None:
    """The forward kernel on every tile: xb (N, G*cgb, nph, Hx, Wx, L) the blocked input, wb
    (G, kbg, cgb, ntap, L, NKB*L) the blocked weights of the taps toff; the outputs, rows x cols
    per channel of each image, go to y (flat) at y_pitch = (image, channel, row, column)
    pitches, plus bias (one per output channel)."""
    t, L = plan.tile, plan.L
    N, XB, nph, Hx, Wx, _ = xb.shape
    x_row = Wx * L
    x_cb = nph * Hx * x_row
    x_img = XB * x_cb
    y_img, y_kc, y_row, y_col = y_pitch
    w_kbg = plan.cgb * toff.size * L * t.nkb * L
    if t.images:
        nig, nrg, img_step, row_step, x_trow, y_trow = N // t.th, plan.Py, t.th, 1, x_img, y_img
    else:
        nig, nrg, img_step, row_step = N, plan.Py // t.th, 1, t.th
        x_trow, y_trow = x_row, y_row
    fn = getattr(KERNELS, f"run_fwd_{t.th}x{t.tw}k{t.nkb}v{L}")
    fn(xb.reshape(-1), wb.reshape(-1), y, bias, toff, toff.size, plan.cgb, plan.nci_last,
       groups, plan.kbg, nig, nrg, plan.Qy // t.tw, x_img, plan.cgb * x_cb, x_cb, x_row, x_trow,
       y_img, y_kc, y_row, y_col, y_trow, plan.kg, rows, cols, plan.kbg * w_kbg, w_kbg,
       img_step, row_step, t.images)


def _block_weights(wsrc: np.ndarray, kbg: int, cgb: int, taps: np.ndarray, L: int,
                   nkb: int) -> np.ndarray:
    """wsrc (G, Ko, Ci, T0), any strides -> (G, kbg, cgb, len(taps), L, nkb*L)."""
    out = np.empty((wsrc.shape[0], kbg, cgb, taps.size, L, nkb * L), wsrc.dtype)
    LAYOUT.block_weights(wsrc, out, taps.astype(np.int64))
    return out


def _fused_rows(plan: FwdPlan, weight_bytes: int, row_bytes: int, halo: int, N: int) -> int:
    """Output rows per task of the fused forward (run_fwdx_*), or 0 where it does not apply:
    tiles over images, weights that do not stay in cache (every task runs them all), or too
    few tasks for the threads. A task's slab of blocked input rows (its rows plus the taps'
    halo, row_bytes each) takes about FUSED_SLAB_BYTES."""
    if plan.tile.images or weight_bytes > FUSED_WEIGHT_BYTES:
        return 0
    th = plan.tile.th
    rb = max(th, (FUSED_SLAB_BYTES // row_bytes - halo) // th * th)
    rb = min(rb, plan.Py)
    # at least a few tasks per thread, for balance
    while rb > th and N * _ceil(plan.Py, rb) < 4 * _threads():
        rb -= th
    if (rb + halo) * row_bytes > 4 * FUSED_SLAB_BYTES:
        return 0
    return rb


def _check_dtype(*arrays) -> np.dtype:
    dt = arrays[0].dtype
    if dt not in (np.float32, np.float64) or any(a.dtype != dt for a in arrays):
        raise TypeError(f"dtypes {[str(a.dtype) for a in arrays]} must be all float32 or "
                        "all float64")
    return dt


def _bias(bias, K: int, dtype) -> np.ndarray:
    if bias is None:
        return np.zeros(K, dtype)
    return np.ascontiguousarray(bias, dtype=dtype)


@functools.lru_cache(maxsize=1024)
def _input_phases(p: Conv2dProblem):
    """Per phase (a, e) of the input: the taps t = r*S + s whose products land there, and their
    output-gradient offsets (oi, oj): dx[a + sh*i, e + sw*j] sums w[.., t] * dy[i + oi, j + oj]."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    (pt, _), (pl, _) = p.padding
    out = []
    for a in range(sh):
        for e in range(sw):
            taps, oi, oj = [], [], []
            for r in range(p.R):
                if (a + pt - r * dh) % sh:
                    continue
                for s in range(p.S):
                    if (e + pl - s * dw) % sw:
                        continue
                    taps.append(r * p.S + s)
                    oi.append((a + pt - r * dh) // sh)
                    oj.append((e + pl - s * dw) // sw)
            out.append((np.array(taps, np.int64), np.array(oi, np.int64),
                        np.array(oj, np.int64)))
    return out


def _margins(phases, rows: int, cols: int):
    """(top, left, rows, columns) of a zero-margined dy that every phase's reads stay inside."""
    ois = np.concatenate([ph[1] for ph in phases] + [np.zeros(1, np.int64)])
    ojs = np.concatenate([ph[2] for ph in phases] + [np.zeros(1, np.int64)])
    mt, ml = max(0, -int(ois.min())), max(0, -int(ojs.min()))
    return mt, ml, rows + mt + max(0, int(ois.max())), cols + ml + max(0, int(ojs.max()))


# --- scratch memory ---------------------------------------------------------------------------

def workspace_bytes(p: Conv2dProblem, direction: str, dtype, isa: str | None = None) -> int:
    """Peak scratch bytes of one call of forward ('fwd'), input_grad ('bwd-data') or weight_grad
    ('bwd-weights') on p, beside its inputs and output: the blocked copies the call takes from
    its workspace, the blocked weights it caches, and the slabs its parallel tasks allocate
    (one per thread at a time). Mirrors the sizes _forward, _input_grad and _weight_grad take,
    under the thread count they run with."""
    with _threads_for(p.macs):
        return _workspace_bytes(p, direction, np.dtype(dtype), isa or _isa(), _threads())


def _workspace_bytes(p: Conv2dProblem, direction: str, dt: np.dtype, isa: str,
                     threads: int) -> int:
    L, G, T = LANES[isa, dt.name], p.groups, p.R * p.S
    _, dr, ds = _taps(p)
    (sh, sw), nph = p.stride, p.stride[0] * p.stride[1]
    if p.is_depthwise:
        Cb, m = _ceil(p.C, L), p.Kg
        w_blocks = m * Cb * T * L
        if direction == "fwd":
            _, Qy = _dw_tile(isa, dt.name, p.Q)
            n = (p.N * Cb * nph * (p.P + int(dr.max())) * (Qy + int(ds.max())) * L + w_blocks
                 + p.N * m * Cb * p.P * Qy * L)
        elif direction == "bwd-data":
            Hd, Wd = _ceil(p.H, sh), _ceil(p.W, sw)
            _, Qy = _dw_tile(isa, dt.name, Wd)
            _, _, Hdy, Wdy = _margins(_input_phases(p), Hd, Qy)
            n = p.N * m * Cb * Hdy * Wdy * L + w_blocks + p.N * Cb * nph * Hd * Qy * L
        else:
            nsplit = max(1, min(p.N * p.P, _ceil(16, m * Cb)))
            n = (p.N * Cb * nph * (p.P + int(dr.max())) * (p.Q + int(ds.max())) * L
                 + p.N * m * Cb * p.P * p.Q * L + (nsplit + 1) * m * Cb * T * L)
        return n * dt.itemsize
    if direction == "fwd":
        plan = fwd_plan(isa, dt, p.N, p.P, p.Q, p.Cg, p.Kg)
        wb = G * plan.kbg * plan.cgb * T * L * plan.tile.nkb * L
        Hx, Wx = plan.Py + int(dr.max()), plan.Qy + int(ds.max())
        row = G * plan.cgb * Wx * L
        rb = 0 if nph > 1 else _fused_rows(plan, wb * dt.itemsize, row * dt.itemsize,
                                           int(dr.max()), p.N)
        x_blocks = threads * (rb + int(dr.max())) * row if rb else p.N * row * nph * Hx
        return (wb + x_blocks + p.K) * dt.itemsize
    if direction == "bwd-data":
        plan = fwd_plan(isa, dt, p.N, _ceil(p.H, sh), _ceil(p.W, sw), p.Kg, p.Cg)
        _, _, Hdy, Wdy = _margins(_input_phases(p), plan.Py, plan.Qy)
        wbs = G * plan.kbg * plan.cgb * T * L * plan.tile.nkb * L
        return (p.N * G * plan.cgb * Hdy * Wdy * L + wbs + p.C) * dt.itemsize
    cgb = _ceil(p.Cg, L)
    kt, ncb = _bwdw_tile(isa, dt.name, p.Kg, cgb)
    nkt, nct = _ceil(p.Kg, kt), _ceil(cgb, ncb)
    nsplit = max(1, min(p.N * p.P, _ceil(BWDW_TASKS, G * nct)))
    Wx = p.Q + int(ds.max())
    row_bytes = ncb * nph * Wx * L * dt.itemsize
    rows_per = max(1, BWDW_ROW_BYTES // (p.Q * (kt + ncb * L) * dt.itemsize))
    chunk = min(p.P, max(rows_per, BWDW_SLAB_BYTES // row_bytes - int(dr.max())))
    slabs = threads * (chunk + int(dr.max())) * row_bytes
    acc = nsplit * G * nkt * nct * T * kt * ncb * L
    return (acc + p.K * p.Cg * T) * dt.itemsize + slabs


# --- the three directions -------------------------------------------------------------------

def forward(p: Conv2dProblem, x: np.ndarray, w: np.ndarray, bias=None, *, ws=None,
            cache: WeightCache | None = None, isa: str | None = None,
            stages: dict | None = None) -> np.ndarray:
    """y (N, K, P, Q) = conv2d(x, w) (+ bias) for problem p; x (N, C, H, W) and w (K, C/g, R, S)
    C-contiguous, float32 or float64. ws: a workspace lease for the blocked copies (default:
    fresh arrays); cache: where the blocked weights are kept (default CACHE); isa: the tile
    table to use (default: what Numba compiles for); stages: a dict that gets each stage's
    seconds added (layout conversions, weights, kernel), for benchmarks."""
    with _threads_for(p.macs):
        return _forward(p, x, w, bias, ws, cache, isa, stages)


def input_grad(p: Conv2dProblem, dy: np.ndarray, w: np.ndarray, *, ws=None,
               cache: WeightCache | None = None, isa: str | None = None,
               stages: dict | None = None) -> np.ndarray:
    """dx (N, C, H, W) from dy (N, K, P, Q) and w: per phase of the input, the forward kernel
    on the zero-margined blocked dy with that phase's taps (see _input_phases). Arguments as
    for forward."""
    with _threads_for(p.macs):
        return _input_grad(p, dy, w, ws, cache, isa, stages)


def weight_grad(p: Conv2dProblem, dy: np.ndarray, x: np.ndarray, *, ws=None,
                isa: str | None = None, stages: dict | None = None) -> np.ndarray:
    """dw (K, C/g, R, S) from dy (N, K, P, Q) and x (N, C, H, W). Arguments as for forward."""
    with _threads_for(p.macs):
        return _weight_grad(p, dy, x, ws, isa, stages)


def _forward(p, x, w, bias, ws, cache, isa, stages):
    isa = isa or _isa()
    dt = _check_dtype(x, w)
    ws = ws or _Alloc()
    cache = CACHE if cache is None else cache
    clock = _Clock(stages)
    if p.is_depthwise:
        return _dw_forward(p, x, w, bias, ws, cache, isa)
    plan = fwd_plan(isa, dt, p.N, p.P, p.Q, p.Cg, p.Kg)
    L, G = plan.L, p.groups
    phase, dr, ds = _taps(p)
    (sh, sw), ((pt, _), (pl, _)) = p.stride, p.padding
    Hx, Wx = plan.Py + int(dr.max()), plan.Qy + int(ds.max())
    T = p.R * p.S
    wb = cache.get(w, ("fwd", L, plan.tile.nkb, plan.kbg, plan.cgb, G), lambda w: _block_weights(
        w.reshape(G, p.Kg, p.Cg, T), plan.kbg, plan.cgb, np.arange(T), L, plan.tile.nkb))
    clock("weights")
    y = np.empty(p.y_shape, dt)
    y_pitch = (p.K * p.P * p.Q, p.P * p.Q, p.Q, 1)
    chmap = _block_map(G, p.Cg, plan.cgb, L)
    # strided layers convert their (larger) input faster in one pass than slab by slab
    rb = 0 if sh * sw > 1 else _fused_rows(plan, wb.nbytes, G * plan.cgb * Wx * L * dt.itemsize,
                                           int(dr.max()), p.N)
    if rb:
        rows = rb + int(dr.max())
        toff = ((phase * rows + dr) * Wx + ds) * L
        t = plan.tile
        getattr(KERNELS, f"run_fwdx_{t.th}x{t.tw}k{t.nkb}v{L}")(
            x, chmap, sh, sw, pt, pl, rows, Wx, G * plan.cgb, wb.reshape(-1), y.reshape(-1),
            _bias(bias, p.K, dt), toff, T, plan.cgb, plan.nci_last, G, plan.kbg, rb,
            plan.Qy // t.tw, *y_pitch, p.Kg, p.P, p.Q, plan.kbg * plan.cgb * T * L * t.nkb * L,
            plan.cgb * T * L * t.nkb * L)
        clock("kernel")
        return y
    xb = ws.take((p.N, G * plan.cgb, sh * sw, Hx, Wx, L), dt, zero=False)
    LAYOUT.to_blocked(x, xb, chmap, sh, sw, pt, pl)
    clock("to_blocked")
    toff = ((phase * Hx + dr) * Wx + ds) * L
    _run_fwd(plan, xb, wb, toff, G, y.reshape(-1), y_pitch, p.P, p.Q, _bias(bias, p.K, dt))
    clock("kernel")
    return y


def _input_grad(p, dy, w, ws, cache, isa, stages):
    isa = isa or _isa()
    dt = _check_dtype(dy, w)
    ws = ws or _Alloc()
    cache = CACHE if cache is None else cache
    clock = _Clock(stages)
    (sh, sw) = p.stride
    Hd, Wd = _ceil(p.H, sh), _ceil(p.W, sw)
    phases = _input_phases(p)
    if p.is_depthwise:
        return _dw_input_grad(p, dy, w, phases, ws, cache, isa)
    G = p.groups
    plan = fwd_plan(isa, dt, p.N, Hd, Wd, p.Kg, p.Cg)      # dy's channels in, x's out
    L = plan.L
    mt, ml, Hdy, Wdy = _margins(phases, plan.Py, plan.Qy)
    dyb = ws.take((p.N, G * plan.cgb, 1, Hdy, Wdy, L), dt, zero=False)
    LAYOUT.to_blocked(dy, dyb, _block_map(G, p.Kg, plan.cgb, L), 1, 1, mt, ml)
    clock("to_blocked")
    wsrc = w.reshape(G, p.Kg, p.Cg, p.R * p.S).transpose(0, 2, 1, 3)

    def make(_):
        return [_block_weights(wsrc, plan.kbg, plan.cgb, taps, L, plan.tile.nkb)
                if taps.size else None for taps, _, _ in phases]
    wbs = cache.get(w, ("bwd-data", L, plan.tile.nkb, plan.kbg, plan.cgb, G, p.stride,
                        p.padding[0][0], p.padding[1][0], p.dilation), make)
    clock("weights")
    dx = np.empty(p.x_shape, dt)
    flat = dx.reshape(-1)
    zero = np.zeros(p.C, dt)
    for ph, ((_, oi, oj), wb) in enumerate(zip(phases, wbs)):
        a, e = divmod(ph, sw)
        if wb is None:
            dx[:, :, a::sh, e::sw] = 0
            continue
        toff = ((oi + mt) * Wdy + oj + ml) * L
        _run_fwd(plan, dyb, wb, toff, G, flat[a * p.W + e:],
                 (p.C * p.H * p.W, p.H * p.W, sh * p.W, sw), _ceil(p.H - a, sh),
                 _ceil(p.W - e, sw), zero)
    clock("kernel")
    return dx


def _weight_grad(p, dy, x, ws, isa, stages):
    isa = isa or _isa()
    dt = _check_dtype(dy, x)
    ws = ws or _Alloc()
    clock = _Clock(stages)
    if p.is_depthwise:
        return _dw_weight_grad(p, dy, x, ws, isa)
    L, G = LANES[isa, dt.name], p.groups
    cgb = _ceil(p.Cg, L)
    kt, ncb = _bwdw_tile(isa, dt.name, p.Kg, cgb)
    nkt, nct = _ceil(p.Kg, kt), _ceil(cgb, ncb)
    phase, dr, ds = _taps(p)
    (sh, sw), ((pt, _), (pl, _)) = p.stride, p.padding
    Wx = p.Q + int(ds.max())
    nph = sh * sw
    T = p.R * p.S
    per = G * nct
    # enough tasks for a few threads, whatever the machine has: the sum's order (and so its
    # rounding) depends on the split alone
    nsplit = max(1, min(p.N * p.P, _ceil(BWDW_TASKS, per)))
    acc = ws.take((nsplit, G, nkt, nct, T, kt, ncb * L), dt, zero=True)
    # rows per kernel call: their dy (KT channels) and x (NCB blocks) stay in L1 while the
    # taps go by; rows per chunk: a task's slab of blocked input rows (with the taps' halo)
    # takes about BWDW_SLAB_BYTES
    item = dt.itemsize
    rows_per = max(1, BWDW_ROW_BYTES // (p.Q * (kt + ncb * L) * item))
    row_bytes = ncb * nph * Wx * L * item
    chunk = max(rows_per, BWDW_SLAB_BYTES // row_bytes - int(dr.max()))
    chunk = min(p.P, chunk)
    slab_rows = chunk + int(dr.max())
    toff = ((phase * slab_rows + dr) * Wx + ds) * L
    fn = getattr(KERNELS, f"run_bwdw_{kt}x{ncb}v{L}")
    fn(x, _block_map(G, p.Cg, nct * ncb, L), sh, sw, pt, pl, slab_rows, Wx, dy, acc.reshape(-1),
       toff, T, G, nkt, nct, nsplit, p.P, p.Q, chunk, rows_per, p.Kg)
    clock("kernel")
    # the last KT of a group starts where it fits (see run_bwdw_*)
    first = np.minimum(np.arange(nkt) * kt, max(0, p.Kg - kt)).astype(np.int64)
    dw = np.empty((G, p.Kg, p.Cg, T), dt)
    if dw.size * nsplit < SERIAL_ELEMENTS:
        LAYOUT.unblock_weight_grad_serial(acc, first, dw)
    else:
        LAYOUT.unblock_weight_grad(acc, first, dw)
    clock("from_blocked")
    return dw.reshape(p.w_shape)


# --- depthwise ------------------------------------------------------------------------------

def _dw_weights(w: np.ndarray, C: int, m: int, Cb: int, L: int) -> np.ndarray:
    """w (C*m, 1, R, S) -> (m, Cb, T, L): [j, cb, t, l] = w[(cb*L + l)*m + j, 0, t]."""
    T = w.shape[2] * w.shape[3]
    out = np.zeros((Cb * L, m, T), w.dtype)
    out[:C] = w.reshape(C, m, T)
    return np.ascontiguousarray(out.reshape(Cb, L, m, T).transpose(2, 0, 3, 1))


def _dw_map(C: int, Cb: int, L: int, m: int, j: int = 0) -> np.ndarray:
    """chmap of depthwise blocks: lane l of block cb holds channel (cb*L + l)*m + j."""
    cb = np.arange(Cb)
    return LAYOUT.channel_map(Cb, L, cb * L * m + j, np.clip(C - cb * L, 0, L), step=m)


def _dw_forward(p, x, w, bias, ws, cache, isa):
    dt = x.dtype
    L, C, m = LANES[isa, dt.name], p.C, p.Kg
    Cb = _ceil(C, L)
    tw, Qy = _dw_tile(isa, dt.name, p.Q)
    Py = p.P
    phase, dr, ds = _taps(p)
    (sh, sw), ((pt, _), (pl, _)) = p.stride, p.padding
    nph = sh * sw
    Hx, Wx = Py + int(dr.max()), Qy + int(ds.max())
    xb = ws.take((p.N, Cb, nph, Hx, Wx, L), dt, zero=False)
    LAYOUT.to_blocked(x, xb, _dw_map(C, Cb, L, 1), sh, sw, pt, pl)
    wb = cache.get(w, ("dw", L, C, m), lambda w: _dw_weights(w, C, m, Cb, L))
    T = p.R * p.S
    toff = ((phase * Hx + dr) * Wx + ds) * L
    woff = np.arange(T, dtype=np.int64) * L
    yb = ws.take((p.N, m * Cb, 1, Py, Qy, L), dt, zero=False)
    x_row, y_row = Wx * L, Qy * L
    x_cb, y_cb = nph * Hx * x_row, Py * y_row
    getattr(KERNELS, f"run_dw_{tw}v{L}")(
        xb.reshape(-1), wb.reshape(-1), yb.reshape(-1), toff, woff, T, p.N, m, Cb, Py,
        Qy // tw, Cb * x_cb, 0, x_cb, x_row, m * Cb * y_cb, Cb * y_cb, y_cb, y_row, Cb * T * L,
        T * L)
    k = np.arange(p.K)
    c, j = k // m, k % m
    pos = ((j * Cb + c // L) * L + c % L).astype(np.int64)
    y = np.empty(p.y_shape, dt)
    LAYOUT.from_blocked(yb, y, pos, 1, 1, _bias(bias, p.K, dt), bias is not None)
    return y


def _dw_input_grad(p, dy, w, phases, ws, cache, isa):
    dt = dy.dtype
    L, C, m = LANES[isa, dt.name], p.C, p.Kg
    Cb = _ceil(C, L)
    (sh, sw) = p.stride
    Hd, Wd = _ceil(p.H, sh), _ceil(p.W, sw)
    tw, Qy = _dw_tile(isa, dt.name, Wd)
    Py = Hd
    mt, ml, Hdy, Wdy = _margins(phases, Py, Qy)
    dyb = ws.take((p.N, m * Cb, 1, Hdy, Wdy, L), dt, zero=False)
    chmap = np.concatenate([_dw_map(C, Cb, L, m, j) for j in range(m)])
    LAYOUT.to_blocked(dy, dyb, chmap, 1, 1, mt, ml)
    wb = cache.get(w, ("dw", L, C, m), lambda w: _dw_weights(w, C, m, Cb, L))
    T = p.R * p.S
    nph = sh * sw
    dxb = ws.take((p.N, Cb, nph, Py, Qy, L), dt, zero=False)
    x_row, y_row = Wdy * L, Qy * L
    x_cb, y_cb = Hdy * x_row, nph * Py * y_row
    for ph, (taps, oi, oj) in enumerate(phases):
        if taps.size == 0:
            dxb[:, :, ph] = 0
            continue
        j = np.repeat(np.arange(m, dtype=np.int64), taps.size)
        toff = j * Cb * x_cb + np.tile(((oi + mt) * Wdy + oj + ml) * L, m)
        woff = j * Cb * T * L + np.tile(taps * L, m)
        getattr(KERNELS, f"run_dw_{tw}v{L}")(
            dyb.reshape(-1), wb.reshape(-1), dxb.reshape(-1)[ph * Py * y_row:], toff, woff,
            toff.size, p.N, 1, Cb, Py, Qy // tw, m * Cb * x_cb, 0, x_cb, x_row, Cb * y_cb, 0,
            y_cb, y_row, 0, T * L)
    dx = np.empty(p.x_shape, dt)
    LAYOUT.from_blocked(dxb, dx, np.arange(C, dtype=np.int64), sh, sw, np.zeros(1, dt), False)
    return dx


def _dw_weight_grad(p, dy, x, ws, isa):
    dt = dy.dtype
    L, C, m = LANES[isa, dt.name], p.C, p.Kg
    Cb = _ceil(C, L)
    phase, dr, ds = _taps(p)
    (sh, sw), ((pt, _), (pl, _)) = p.stride, p.padding
    nph = sh * sw
    Hx, Wx = p.P + int(dr.max()), p.Q + int(ds.max())
    xb = ws.take((p.N, Cb, nph, Hx, Wx, L), dt, zero=False)
    LAYOUT.to_blocked(x, xb, _dw_map(C, Cb, L, 1), sh, sw, pt, pl)
    dyb = ws.take((p.N, m * Cb, 1, p.P, p.Q, L), dt, zero=False)
    chmap = np.concatenate([_dw_map(C, Cb, L, m, j) for j in range(m)])
    LAYOUT.to_blocked(dy, dyb, chmap, 1, 1, 0, 0)
    T = p.R * p.S
    toff = ((phase * Hx + dr) * Wx + ds) * L
    nsplit = max(1, min(p.N * p.P, _ceil(16, m * Cb)))
    acc = ws.take((nsplit, m, Cb, T, L), dt, zero=True)
    LAYOUT.dw_weight_grad(xb.reshape(-1), dyb.reshape(-1), acc, toff, p.N, p.P, p.Q,
                          Cb * nph * Hx * Wx * L, nph * Hx * Wx * L, Wx * L,
                          m * Cb * p.P * p.Q * L, Cb * p.P * p.Q * L, p.P * p.Q * L, p.Q * L)
    total = acc[0]
    if nsplit > 1:
        total = np.empty(acc.shape[1:], dt)
        LAYOUT.sum_splits(acc.reshape(nsplit, -1), total.reshape(-1))
    # total[j, cb, t, l] -> dw[(cb*L + l)*m + j, 0, t]
    dw = total.transpose(1, 3, 0, 2).reshape(Cb * L * m, T)[:p.K]
    return np.ascontiguousarray(dw).reshape(p.w_shape)
