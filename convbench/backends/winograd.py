"""winograd-f2 / winograd-f4: Winograd's minimal filtering F(m x m, 3 x 3) (Lavin and Gray 2016)
for 3x3, stride-1, undilated convolutions.

Each output tile of m x m comes from an (m+2) x (m+2) input tile: V = B^T d B per input tile and
channel, U = G g G^T per filter, then for each of the (m+2)^2 transform elements one GEMM over
channels, M = U V (BLAS, batched), and Y = A^T M A per output tile. F(2x2) does 16 multiplies
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
"""
from __future__ import annotations

import numpy as np

from convbench.backends.base import Backend
from convbench.backends.scratch import Lease
from convbench.lazy import LazyModule
from convbench.ops.conv import Conv2dProblem, input_gradient_problem

KERNELS = LazyModule("convbench.backends._numba_winograd_kernels")

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


def _input_transform(ws: Lease, p: Conv2dProblem, x, m: int):
    """V (a*a, C, th*L): B^T d B of every input tile."""
    a = m + 2
    th, tw, L = _tiles(p, m)
    (pt, _), (pl, _) = p.padding
    V = ws.take((a * a, p.C, th * L), x.dtype, zero=False)
    _kernel("input", m)(np.ascontiguousarray(x), pt, pl, th, tw,
                        KERNELS.tile_offsets(p.N, tw, m), V)
    return V


def winograd_fwd(ws: Lease, p: Conv2dProblem, x, w, m: int, b=None, flipped: bool = False):
    """y (N, K, P, Q) (+ b) of a 3x3 stride-1 undilated ungrouped convolution, by F(m x m, 3 x 3).
    With flipped, w is (C, K, 3, 3) and the convolution uses it rotated by 180 degrees with its
    channel axes swapped (an input gradient), read in place."""
    a = m + 2
    th, tw, L = _tiles(p, m)
    V = _input_transform(ws, p, x, m)
    U = ws.take((a * a, p.K, p.C), x.dtype, zero=False)
    _kernel("filter", m)(np.ascontiguousarray(w), flipped, U)
    M = ws.take((a * a, p.K, th * L), x.dtype, zero=False)
    np.matmul(U, V, out=M)                                    # (a*a, K, th*L): BLAS
    y = np.empty(p.y_shape, dtype=x.dtype)
    bias = np.zeros(p.K, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    _kernel("output", m)(M, bias, y, th, tw)
    return y


def winograd_bwd_weights(ws: Lease, p: Conv2dProblem, dy, x, m: int):
    """dw (K, C, 3, 3) of a 3x3 stride-1 undilated ungrouped convolution, by F(m x m, 3 x 3)."""
    _, G, _ = MATRICES[m]
    a = m + 2
    th, tw, L = _tiles(p, m)
    V = _input_transform(ws, p, x, m)
    D = ws.take((a * a, p.K, th * L), x.dtype, zero=False)
    _kernel("grad", m)(np.ascontiguousarray(dy), th, tw, D)
    M = ws.take((a * a, p.K, p.C), x.dtype, zero=False)
    np.matmul(D, V.transpose(0, 2, 1), out=M)                 # sums over every tile: BLAS
    dw = M.reshape(a * a, p.K * p.C).T @ np.kron(G, G).astype(x.dtype)    # (K*C, 9)
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

    def tolerance_terms(self, op, p):
        n = op.reduction(p)
        return self.transform_factor * n + self.transform_constant

    def conv2d_fwd(self, p, x, w, b):
        with self.workspace.lease() as ws:
            return winograd_fwd(ws, p, x, w, self.m, b)

    def conv2d_bwd_data(self, p, dy, w):
        # unsupported() has ensured stride 1 and padding <= 2, so the problem exists
        with self.workspace.lease() as ws:
            return winograd_fwd(ws, input_gradient_problem(p), dy, w, self.m, flipped=True)

    def conv2d_bwd_weights(self, p, dy, x):
        with self.workspace.lease() as ws:
            return winograd_bwd_weights(ws, p, dy, x, self.m)


class WinogradF2Backend(_Winograd):
    name = "winograd-f2"
    auto_candidate = True
    description = ("Winograd F(2x2,3x3), all directions: transforms in Numba, "
                   "16 batched GEMMs (BLAS)")
    m = 2
    transform_factor = 1.0   # worst measured: 0.31 n*u (dx 0.24, dw 0.03)


class WinogradF4Backend(_Winograd):
    name = "winograd-f4"
    auto_candidate = True
    description = ("Winograd F(4x4,3x3), all directions: transforms in Numba, "
                   "36 batched GEMMs (BLAS)")
    m = 4
    # worst measured: 6.7 n*u at n = 9, i.e. 60 u (dx 5.3 n*u, dw 0.23 n*u); the tolerance adds
    # 4n + 64 u to the direct sum's n + 1, (5n + 65) u in all: 110 u at n = 9
    transform_factor = 4.0
    transform_constant = 64.0
