"""winograd-f2 / winograd-f4: Winograd's minimal filtering F(m x m, 3 x 3) (Lavin and Gray 2016)
for 3x3, stride-1, undilated convolutions.

Each output tile of m x m comes from an (m+2) x (m+2) input tile: V = B^T d B per input tile and
channel, U = G g G^T per filter, then for each of the (m+2)^2 transform elements one GEMM over
channels, M = U V (convbench's own GEMM, `convbench.kernels.gemm_batched`: no BLAS), and
Y = A^T M A per output tile.

Streaming: the tiles go through in blocks of tile rows (all images), each block's V and M sized
to stay in cache (BLOCK_BYTES): transform the block's inputs, multiply, inverse-transform, next
block; V and M never exist whole in memory. The filter transform U depends on the weights
alone: it is computed once per weight array and kept (kernels.conv.WeightCache: the same array,
unchanged contents), so repeated calls skip it; a trainer, whose weights change every step, pays
it every call.

F(4x4) or F(2x2): `winograd` picks by shape (choose_m), `winograd-f2` and `winograd-f4` are
fixed. F(4x4) needs 2.25 times fewer multiplies per output than F(2x2), but its U is 36 matrices
of K x C against 16, each read by every block of tiles: with few tiles (small planes, deep
layers) reading U costs more than the multiplies saved. The rule: F(4x4) when its GEMMs reuse
each element of U on at least F4_MIN_TILES tiles, else F(2x2). F(2x2) does 16 multiplies
where the direct method does 36 (2.25x fewer), F(4x4) 36 for 144 (4x fewer); the cost is rounding
in the transforms, whose constants reach 5 and 1/24 in F(4x4): verification gives each its own
tolerance (see tolerance_terms), measured on the edge and random cases.

The input gradient of a stride-1 3x3 convolution is itself such a convolution, of the output
gradient padded by 2 - padding with the kernel rotated by 180 degrees and its channel axes
swapped, so it runs through the same code; the filter transform reads the kernel that way in
place, with no flipped copy of large filters.

The weight gradient uses the same matrices, transposed (the transposition principle): since
y = A^T[(G g) * (B^T d)] per tile, sum_p dy[p] y[p] = g^T G^T[(A dy) * (B^T d)], so the tile's
contribution to dw is G^T[(A dy A^T) * (B^T d B)]G. The input transform is the forward one; the
output gradient gets A g A^T per tile; one GEMM per transform element sums over all tiles, with
channels as its outputs, M = D V^T (K x C); and dw = G^T M G for every (k, c) at once is one
GEMM with kron(G, G)^T.

The transforms mix a whole tile, so one NaN would spoil every output of its tile and an infinity
turn into inf - inf = NaN: NaN and infinity follow convbench's rule (backends.nonfinite) through
`exact`, which keeps them out of the transforms.
"""
from __future__ import annotations

import numpy as np

from convbench.backends.base import Backend
from convbench.backends.nonfinite import exact
from convbench.backends.scratch import Lease
from convbench.kernels import gemm, gemm_batched
from convbench.kernels.conv import WeightCache
from convbench.lazy import LazyModule
from convbench.ops.conv import Conv2dProblem, input_gradient_problem
from convbench.threads import get_threads

KERNELS = LazyModule("convbench.backends._numba_winograd_kernels")

#: Bytes of V and M (or V and D) one block of tile rows may take: they stay in cache between
#: the transforms and the GEMMs (at least one tile row per block).
BLOCK_BYTES = 4 << 20

#: F(4x4) when it has at least this many tiles (see choose_m).
F4_MIN_TILES = 128

# Lavin and Gray (2016), section 4: B^T, G, A^T for F(2x2, 3x3) and F(4x4, 3x3).
MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                 dtype=np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], dtype=np.float64)),
}


def _kernel(kind: str, m: int):
    """The compiled `kind`_transform_f`m` kernel (input, output, grad or filter)."""
    return getattr(KERNELS, f"{kind}_transform_f{m}")


def _tiles(p: Conv2dProblem, m: int):
    """Tile rows th, tile columns tw, and tiles per tile row of the whole batch, Lc = N*tw (the
    columns of V, M and D are i*Lc + n*tw + t: see _numba_winograd_kernels)."""
    th, tw = -(-p.P // m), -(-p.Q // m)
    return th, tw, p.N * tw


def choose_m(p: Conv2dProblem) -> int:
    """4 or 2: F(4x4, 3x3) when its tiles number at least F4_MIN_TILES, so that each element of
    its 36 transformed filter matrices is reused on that many tiles (on the forward problem, or
    on the input gradient's, which has the same output plane as the forward's input)."""
    return 4 if p.N * -(-p.P // 4) * -(-p.Q // 4) >= F4_MIN_TILES else 2


def _block_rows(p: Conv2dProblem, m: int, channels: int, itemsize: int) -> int:
    """Tile rows per block: V and M of `channels` (C + K) channels in BLOCK_BYTES."""
    th, _, L = _tiles(p, m)
    per_row = (m + 2) ** 2 * channels * L * itemsize
    return max(1, min(th, BLOCK_BYTES // per_row))


def _filters(cache: WeightCache | None, p: Conv2dProblem, w, m: int, flipped: bool):
    """U (a*a, K, C), the transformed filters, from the cache where w is unchanged."""
    a = m + 2

    def make(w):
        U = np.empty((a * a, p.K, p.C), w.dtype)
        _kernel("filter", m)(np.ascontiguousarray(w), flipped, U)
        return U
    return make(w) if cache is None else cache.get(w, ("winograd", m, flipped), make)


def winograd_fwd(ws: Lease, p: Conv2dProblem, x, w, m: int, b=None, flipped: bool = False,
                 cache: WeightCache | None = None):
    """y (N, K, P, Q) (+ b) of a 3x3 stride-1 undilated ungrouped convolution, by F(m x m, 3 x 3).
    With flipped, w is (C, K, 3, 3) and the convolution uses it rotated by 180 degrees with its
    channel axes swapped (an input gradient), read in place."""
    a = m + 2
    th, tw, L = _tiles(p, m)
    (pt, _), (pl, _) = p.padding
    U = _filters(cache, p, w, m, flipped)
    rows = _block_rows(p, m, p.C + p.K, x.dtype.itemsize)
    V = ws.take((a * a, p.C, rows * L), x.dtype, zero=False)
    M = ws.take((a * a, p.K, rows * L), x.dtype, zero=False)
    y = np.empty(p.y_shape, dtype=x.dtype)
    bias = np.zeros(p.K, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    x = np.ascontiguousarray(x)
    off = KERNELS.tile_offsets(p.N, tw, m)
    for i0 in range(0, th, rows):
        nr = min(rows, th - i0)
        _kernel("input", m)(x, pt, pl, i0, nr, tw, off, V)
        gemm_batched(U, V[:, :, :nr * L], out=M[:, :, :nr * L])
        _kernel("output", m)(M, bias, y, i0, nr, tw)
    return y


def winograd_bwd_weights(ws: Lease, p: Conv2dProblem, dy, x, m: int):
    """dw (K, C, 3, 3) of a 3x3 stride-1 undilated ungrouped convolution, by F(m x m, 3 x 3)."""
    _, G, _ = MATRICES[m]
    a = m + 2
    th, tw, L = _tiles(p, m)
    (pt, _), (pl, _) = p.padding
    rows = _block_rows(p, m, p.C + p.K, x.dtype.itemsize)
    V = ws.take((a * a, p.C, rows * L), x.dtype, zero=False)
    D = ws.take((a * a, p.K, rows * L), x.dtype, zero=False)
    M = ws.take((a * a, p.K, p.C), x.dtype, zero=False)
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    off = KERNELS.tile_offsets(p.N, tw, m)
    for i0 in range(0, th, rows):
        nr = min(rows, th - i0)
        _kernel("input", m)(x, pt, pl, i0, nr, tw, off, V)
        _kernel("grad", m)(dy, i0, nr, tw, D)
        # sums over every tile, block after block
        gemm_batched(D[:, :, :nr * L], V[:, :, :nr * L], out=M, trans_b=True,
                     accumulate=i0 > 0)
    kron = np.kron(G, G).astype(x.dtype)                      # (a*a, 9)
    dw = gemm(M.reshape(a * a, p.K * p.C), kron, trans_a=True)  # (K*C, 9)
    return dw.reshape(p.w_shape)


class _Winograd(Backend):
    m = 2
    #: Rounding the transforms add, as transform_factor * n + transform_constant unit roundoffs
    #: on top of the direct sum's n, set from the largest error over 80 random 3x3 problems x 3
    #: seeds x 3 directions with a margin. The constant covers short reductions, where the
    #: transforms' own rounding dominates the sum's.
    transform_factor = 1.0
    transform_constant = 0.0

    def unsupported(self, op, p, dtype):
        why = []
        if (p.R, p.S) != (3, 3):
            why.append(f"a {p.R}x{p.S} kernel (3x3 only)")
        if p.stride != (1, 1):
            why.append(f"stride {p.stride} (1 only)")
        if p.dilation != (1, 1):
            why.append(f"dilation {p.dilation} (1 only)")
        if p.groups != 1:
            why.append(f"groups={p.groups} (1 only)")
        if op.direction == "bwd-data" and max(max(pd) for pd in p.padding) > 2:
            why.append(f"padding {p.padding} above 2 (the input gradient's padding 2 - p < 0)")
        return ", ".join(why) or None

    def workspace_bytes(self, op, p, dtype):
        """V (transformed input tiles) and M (their products) or D (transformed output gradient
        tiles) of one block of tile rows, U (transformed filters, cached) or the summed products
        of the weight gradient, and each compiled task's row and tile buffers."""
        s = dtype.itemsize
        q = input_gradient_problem(p) if op.direction == "bwd-data" else p
        if q is None:
            return 0
        m = self.tile_size(q)
        a2 = (m + 2) ** 2
        _, tw, L = _tiles(q, m)
        tiles = _block_rows(q, m, q.C + q.K, s) * L
        per_task = ((m + 2) * q.N * (tw * m + 2) + 2 * a2 * 32 + m * L * m) * s
        extra = get_threads() * per_task + 8 * q.N * tw
        return (a2 * (q.C + q.K) * tiles + a2 * q.K * q.C + q.K) * s + extra

    def tolerance_terms(self, op, p):
        n = op.reduction(p)
        return self.transform_factor * n + self.transform_constant

    def __init__(self):
        super().__init__()
        # U per weight array, kept while the weights are unchanged; freed with the workspace
        self.filters = WeightCache()
        self.workspace.caches.append(self.filters)

    def tile_size(self, p: Conv2dProblem) -> int:
        """m of F(m x m, 3 x 3) for problem p."""
        return self.m

    @exact("fwd")
    def conv2d_fwd(self, p, x, w, b):
        with self.workspace.lease() as ws:
            return winograd_fwd(ws, p, x, w, self.tile_size(p), b, cache=self.filters)

    @exact("bwd-data")
    def conv2d_bwd_data(self, p, dy, w):
        # unsupported() has ensured stride 1 and padding <= 2, so the problem exists
        q = input_gradient_problem(p)
        with self.workspace.lease() as ws:
            return winograd_fwd(ws, q, dy, w, self.tile_size(q), flipped=True,
                                cache=self.filters)

    @exact("bwd-weights")
    def conv2d_bwd_weights(self, p, dy, x):
        with self.workspace.lease() as ws:
            return winograd_bwd_weights(ws, p, dy, x, self.tile_size(p))


class WinogradF2Backend(_Winograd):
    name = "winograd-f2"
    auto_candidate = True
    description = ("Winograd F(2x2,3x3), all directions: transforms in Numba, "
                   "16 batched GEMMs (convbench's GEMM), streamed in cache-sized blocks")
    m = 2
    transform_factor = 1.0   # worst measured: 0.31 n*u (dx 0.24, dw 0.03)


class WinogradF4Backend(_Winograd):
    name = "winograd-f4"
    auto_candidate = True
    description = ("Winograd F(4x4,3x3), all directions: transforms in Numba, "
                   "36 batched GEMMs (convbench's GEMM), streamed in cache-sized blocks")
    m = 4
    # worst measured: 6.7 n*u at n = 9, i.e. 60 u (dx 5.3 n*u, dw 0.23 n*u); the tolerance adds
    # 4n + 64 u to the direct sum's n + 1, (5n + 65) u in all: 110 u at n = 9
    transform_factor = 4.0
    transform_constant = 64.0


class WinogradBackend(_Winograd):
    """F(4x4) or F(2x2) by shape (choose_m); the tolerance is F(4x4)'s, the larger. Not an auto
    candidate: auto times winograd-f2 and winograd-f4 themselves."""
    name = "winograd"
    description = ("Winograd F(4x4,3x3) or F(2x2,3x3) by shape (F(4x4) where its tiles reuse "
                   "the transformed filters enough), all directions")
    m = 4
    transform_factor = WinogradF4Backend.transform_factor
    transform_constant = WinogradF4Backend.transform_constant

    def tile_size(self, p: Conv2dProblem) -> int:
        return choose_m(p)
