"""The register tiles: which (MR, NR) shapes each ISA and dtype uses, and their vector lanes.

One table shared by the generator (`_codegen.py`, which writes a kernel per tile) and the GEMM
(`gemm.py`, which picks among them); plain Python, so importing it loads no Numba.
"""
from __future__ import annotations

#: Vector lanes per (ISA, dtype): register bits / element bits.
LANES = {("avx512", "float32"): 16, ("avx512", "float64"): 8,
         ("avx2", "float32"): 8, ("avx2", "float64"): 4,
         ("other", "float32"): 4, ("other", "float64"): 2}

#: Register tiles (MR, NR) per (ISA, dtype), best first. A tile holds MR*NR/L accumulators, NR/L
#: vectors of B and one broadcast of A at a time: at most 32 registers with AVX-512, 16 with AVX2
#: and SSE. The biggest tiles do the most FMAs per load; the narrower ones waste less on small
#: or ragged M and N (gemm.default_params weighs the two).
SHAPES = {
    ("avx512", "float32"): ((8, 32), (6, 64), (4, 64), (16, 16)),
    ("avx512", "float64"): ((8, 16), (6, 32), (4, 32)),
    ("avx2", "float32"): ((6, 16), (4, 24), (8, 8)),
    ("avx2", "float64"): ((6, 8), (4, 12)),
    ("other", "float32"): ((6, 8), (4, 12)),
    ("other", "float64"): ((6, 4), (4, 6)),
}


#: Relative speed of the tiles that load about as much as they compute (one vector of B per row
#: of A: an FMA per load), against the best ones of their ISA; measured on large products.
SLOWER = {(16, 16, 16): 0.8, (8, 8, 8): 0.8}


def kernel_suffix(mr: int, nr: int, lanes: int) -> str:
    """The name suffix of one tile's generated functions, e.g. '8x32v16'."""
    return f"{mr}x{nr}v{lanes}"


def tiles() -> list[tuple[int, int, int]]:
    """Every (MR, NR, L) generated, in a stable order."""
    out = []
    for key, shapes in SHAPES.items():
        for mr, nr in shapes:
            if (mr, nr, LANES[key]) not in out:
                out.append((mr, nr, LANES[key]))
    return out


#: Peak kernels: lanes per float32 vector (16: AVX-512, 8: AVX2, 4: SSE) and independent
#: accumulator vectors (enough to cover FMA latency x throughput on x86 cores, few enough to
#: stay in AVX2's 16 registers).
PEAK = ((16, 12), (8, 12), (4, 12))
