"""Tile shapes of the numba-cuda GEMM-style kernels, and the host-side tables they read.

Pure Python and NumPy (no numba-cuda import), so the device script can name and sweep tile shapes
before anything compiles.

A kernel built from `Tiles(BM, BN, BK, TM, TN)` computes a BM x BN block of its output per thread
block, BK reduction steps per shared-memory stage, with (BM/TM) x (BN/TN) threads each holding a
TM x TN block of accumulators in registers. Thread (tm, tn) owns rows tm + i*(BM/TM) and columns
tn + j*(BN/TN): neighbouring threads own neighbouring rows, so they read neighbouring shared-memory
words and write neighbouring output addresses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tiles:
    BM: int
    BN: int
    BK: int
    TM: int
    TN: int

    def __post_init__(self):
        for name in ("BM", "BN", "BK", "TM", "TN"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if self.BM % self.TM:
            raise ValueError(f"TM={self.TM} must divide BM={self.BM}")
        if self.BN % self.TN:
            raise ValueError(f"TN={self.TN} must divide BN={self.BN}")
        if not 1 <= self.threads <= 1024:
            raise ValueError(f"{self} needs {self.threads} threads per block (1 to 1024)")

    @property
    def threads(self) -> int:
        return (self.BM // self.TM) * (self.BN // self.TN)

    def __str__(self) -> str:
        return f"{self.BM}x{self.BN}x{self.BK}/{self.TM}x{self.TN}"

    @classmethod
    def parse(cls, text: str) -> Tiles:
        """'128x64x8/8x4' -> Tiles(128, 64, 8, 8, 4)."""
        try:
            block, thread = text.split("/")
            bm, bn, bk = (int(v) for v in block.split("x"))
            tm, tn = (int(v) for v in thread.split("x"))
        except ValueError:
            raise ValueError(f"tiles={text!r} must look like 'BMxBNxBK/TMxTN', e.g. 128x64x8/8x4"
                             ) from None
        return cls(bm, bn, bk, tm, tn)


#: Tiny tiles for the CPU simulator, which runs every GPU thread as an OS thread.
SIM = {"conv": Tiles(16, 16, 16, 8, 8), "gemm": Tiles(16, 16, 16, 8, 8),
       "step": Tiles(4, 4, 8, 2, 2)}
#: Threads per block of the element-wise kernels (pooling, depthwise, gates).
SIM_THREADS, GPU_THREADS = 8, 256

#: The shapes the device script sweeps; the first of each list is the default on a GPU.
GPU_CONV = [Tiles(128, 128, 8, 8, 8), Tiles(128, 64, 8, 8, 4), Tiles(64, 128, 8, 4, 8),
            Tiles(64, 64, 8, 4, 4), Tiles(128, 32, 8, 8, 2), Tiles(32, 64, 16, 2, 4)]
GPU_GEMM = [Tiles(128, 128, 8, 8, 8), Tiles(128, 64, 8, 8, 4), Tiles(64, 64, 8, 4, 4)]
GPU_STEP = [Tiles(32, 16, 16, 4, 2), Tiles(16, 16, 16, 2, 2), Tiles(32, 32, 8, 4, 4),
            Tiles(32, 8, 32, 4, 1)]


def _pow2_at_least(n: int, cap: int) -> int:
    return min(cap, 1 << max(0, (max(n, 1) - 1).bit_length()))


def default_tiles(kind: str, simulated: bool, rows: int | None = None,
                  columns: int | None = None) -> Tiles:
    """The tiles a kernel kind ('conv', 'gemm', 'step') uses unless told otherwise, for an output
    of `rows` x `columns` per group where known. On a GPU a conv whose output has few columns
    (channels) takes a narrower block. The simulator's cost is mostly per block and per tile
    step, so there a block covers as much of a small output as it can with 2 x 2 threads."""
    if simulated:
        if kind == "step" or rows is None or columns is None:
            return SIM[kind]
        bm, bn = _pow2_at_least(rows, 64), _pow2_at_least(columns, 64)
        return Tiles(bm, bn, 32, max(1, bm // 2), max(1, bn // 2))
    if kind == "conv":
        return GPU_CONV[0] if columns is None or columns > 64 else GPU_CONV[1]
    return (GPU_GEMM if kind == "gemm" else GPU_STEP)[0]


# --- implicit-GEMM tables -------------------------------------------------------------------------
# The gathered operand of the forward and input-gradient convolutions is read through a table with
# one row per reduction index j: (offset of its channel plane in the gathered array, row shift,
# column shift, offset in the weights). Kernels then need no division in their inner loop.

def forward_table(p) -> np.ndarray:
    """Rows j = (c, r, s) of the forward: x channel c's plane, taps r*dh and s*dw, w offset j."""
    c, r, s = np.meshgrid(np.arange(p.Cg), np.arange(p.R), np.arange(p.S), indexing="ij")
    (dh, dw) = p.dilation
    tab = np.stack([c * p.H * p.W, r * dh, s * dw, (c * p.R + r) * p.S + s], axis=-1)
    return np.ascontiguousarray(tab.reshape(-1, 4).astype(np.int32))


@dataclass(frozen=True)
class Phase:
    """The input pixels (h, w) with (h + pad_top) = ah and (w + pad_left) = aw modulo the stride:
    exactly the taps r with r*dh = ah and s with s*dw = aw (mod stride) reach them. rows/cols:
    how many such pixels; h0/w0: the first; hq0/wq0: (h0 + pad_top - ah) / stride, likewise."""
    ah: int
    aw: int
    h0: int
    w0: int
    rows: int
    cols: int
    hq0: int
    wq0: int
    table: np.ndarray


def input_gradient_phases(p) -> list[Phase]:
    """The input gradient split by stride phase, each with its table rows j = (k, r, s):
    dy channel k's plane, row shift -(r*dh - ah)/sh, column shift -(s*dw - aw)/sw, w offset of
    (k, c=0, r, s). An output pixel of phase (ah, aw) at (hq, wq) reads dy[p, q] with
    p = hq + row shift and q = wq + column shift, where hq = (h + pad_top - ah) / sh."""
    (sh, sw), ((pt, _), (pl, _)), (dh, dw) = p.stride, p.padding, p.dilation
    out = []
    for ah in range(sh):
        for aw in range(sw):
            h0, w0 = (ah - pt) % sh, (aw - pl) % sw
            rows = max(0, -(-(p.H - h0) // sh))
            cols = max(0, -(-(p.W - w0) // sw))
            if rows == 0 or cols == 0:
                continue
            rs = [r for r in range(p.R) if (r * dh) % sh == ah]
            ss = [s for s in range(p.S) if (s * dw) % sw == aw]
            tab = [(k * p.P * p.Q, -((r * dh - ah) // sh), -((s * dw - aw) // sw),
                    (k * p.Cg * p.R + r) * p.S + s)
                   for k in range(p.Kg) for r in rs for s in ss]
            table = np.array(tab, dtype=np.int32).reshape(-1, 4)
            out.append(Phase(ah, aw, h0, w0, rows, cols, (h0 + pt - ah) // sh,
                             (w0 + pl - aw) // sw, table))
    return out


def weight_grad_splits(p, tiles: Tiles, multiprocessors: int) -> int:
    """How many slices of the (n, p) rows the weight gradient's reduction is cut into, so that
    the grid has a few blocks per multiprocessor; each slice's partial sums are added after."""
    blocks = -(-p.Kg // tiles.BM) * -(-(p.Cg * p.R * p.S) // tiles.BN) * p.groups
    want = -(-4 * multiprocessors // blocks)
    # keep at least a few q-tiles of work per slice and the workspace modest
    return int(max(1, min(want, p.N * p.P // 2 or 1, 256)))
