"""The register tiles of the direct convolution kernels (`_conv_codegen.py` writes one kernel per
tile, `conv.py` picks among them); plain Python, so importing it loads no Numba.

Channels are blocked L to a vector (L = vector bits / element bits: 16 float32 lanes on
AVX-512, 8 on AVX2), so a tile's accumulators are vectors of L output channels.

- Forward and input gradient, (TH, TW, NKB): TH x TW output positions by NKB blocks of L output
  channels, TH*TW*NKB accumulators. Each step of the reduction loads NKB weight vectors and
  broadcasts TH*TW input values: TH*TW*NKB + NKB + 1 registers at most.
- Depthwise, TW: TW positions of one block of L channels; each step loads one weight vector and
  TW input vectors (an FMA per load: these layers are bound by loads, not FMAs).
- Weight gradient, (KT, NCB): KT output channels by NCB blocks of L input channels, summed over
  the output positions; each position loads NCB input vectors and broadcasts KT output-gradient
  values (read from NCHW): KT*NCB + NCB + 1 registers.
"""
from __future__ import annotations

#: Vector registers per ISA.
REGISTERS = {"avx512": 32, "avx2": 16, "other": 16}

#: Lanes per (ISA, dtype).
LANES = {("avx512", "float32"): 16, ("avx512", "float64"): 8,
         ("avx2", "float32"): 8, ("avx2", "float64"): 4,
         ("other", "float32"): 4, ("other", "float64"): 2}

#: Forward tiles (TH, TW, NKB) per register budget. A tile of TH > 1 rows takes TH rows of one
#: image, or one row of TH images (small planes), whichever wastes less.
FWD = {
    32: ((1, 14, 2), (2, 7, 2), (1, 6, 4), (1, 8, 3), (1, 28, 1)),
    16: ((1, 6, 2), (2, 3, 2), (1, 4, 3), (1, 12, 1), (1, 7, 1)),
}

#: Depthwise tiles TW per register budget.
DEPTHWISE = {32: (14, 8, 7), 16: (7, 8, 4)}

#: Weight-gradient tiles (KT, NCB) per register budget.
BWD_WEIGHTS = {32: ((6, 4), (12, 2), (24, 1), (2, 4), (1, 4)),
               16: ((6, 2), (3, 3), (12, 1), (2, 2), (1, 2))}

#: Relative speed of tiles that load nearly as much as they compute (measured on large layers);
#: others 1.0.
SLOWER_FWD = {(1, 28, 1): 0.8, (1, 12, 1): 0.8, (1, 7, 1): 0.75}
SLOWER_BWD_WEIGHTS = {(24, 1): 0.8, (12, 1): 0.8, (2, 4): 0.7, (1, 4): 0.5, (2, 2): 0.7,
                      (1, 2): 0.5}


def isa_keys() -> list[tuple[str, str]]:
    return list(LANES)


def fwd_tiles(isa: str, dtype: str):
    """(TH, TW, NKB, L) of the forward kernels for isa and dtype."""
    lanes = LANES[isa, dtype]
    return [(th, tw, nkb, lanes) for th, tw, nkb in FWD[REGISTERS[isa]]]


def depthwise_tiles(isa: str, dtype: str):
    lanes = LANES[isa, dtype]
    return [(tw, lanes) for tw in DEPTHWISE[REGISTERS[isa]]]


def bwd_weights_tiles(isa: str, dtype: str):
    lanes = LANES[isa, dtype]
    return [(kt, ncb, lanes) for kt, ncb in BWD_WEIGHTS[REGISTERS[isa]]]


def all_tiles():
    """Every kernel generated: (fwd, depthwise, bwd-weights) lists, each without repeats."""
    fwd, dw, bw = [], [], []
    for isa, dtype in LANES:
        for t in fwd_tiles(isa, dtype):
            if t not in fwd:
                fwd.append(t)
        for t in depthwise_tiles(isa, dtype):
            if t not in dw:
                dw.append(t)
        for t in bwd_weights_tiles(isa, dtype):
            if t not in bw:
                bw.append(t)
    return fwd, dw, bw
