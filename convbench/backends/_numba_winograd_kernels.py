"""Numba kernels of the Winograd backends: the input and output transforms, vectorised across the
tiles of one tile row of every image at once.

Layout: xq (C, rows, m, L + 1) holds the padded input with the batch folded into the columns,
xq[c, h, v, n*(tw+1) + t] = xpad[n, c, h, t*m + v], so element (u, v) of tile (n, i, j) is
xq[c, i*m + u, v % m, n*(tw+1) + j + v // m]: for fixed (c, i, u, v) the tiles of all images are
one contiguous run of L = N*(tw+1) values (one spare tile per image row, computed and dropped).
"""
import numpy as np
from numba import njit, prange

_FMA = {"contract"}


@njit(parallel=True, cache=True, fastmath=_FMA)
def input_transform(xq, BT, V, th):
    """V[r*a + s, c, i*L + l] = (B^T d B)[r, s] of the input tile at position l of tile row i."""
    C, _, m, L1 = xq.shape
    L = L1 - 1
    a = BT.shape[0]
    for task in prange(C * th):
        c = task // th
        i = task % th
        tmp = np.zeros((a, a, L), dtype=V.dtype)      # tmp[u, s] = sum_v d[u, v] * B[v, s]
        for u in range(a):
            for s in range(a):
                t = tmp[u, s]
                for v in range(a):
                    bv = BT[s, v]                     # B[v, s] = BT[s, v]
                    if bv != 0:
                        src = xq[c, i * m + u, v % m, v // m:v // m + L]
                        for j in range(L):
                            t[j] += bv * src[j]
        for r in range(a):
            for s in range(a):
                out = V[r * a + s, c, i * L:(i + 1) * L]
                out[:] = 0
                for u in range(a):
                    bu = BT[r, u]
                    if bu != 0:
                        t = tmp[u, s]
                        for j in range(L):
                            out[j] += bu * t[j]


@njit(parallel=True, cache=True, fastmath=_FMA)
def output_transform(M, AT, y, th, tw):
    """y[n, k, i*m + x, j*m + z] = (A^T M A)[x, z] of tile l = n*(tw+1) + j of tile row i, cropped
    to y's (P, Q); M (a*a, K, th*L) with L = N*(tw+1)."""
    N, K, P, Q = y.shape
    m, a = AT.shape[0], AT.shape[1]
    L = N * (tw + 1)
    for task in prange(K * th):
        k = task // th
        i = task % th
        tmp = np.zeros((m, a, L), dtype=M.dtype)      # tmp[x, s] = sum_r AT[x, r] * M[r, s]
        out = np.empty(L, dtype=M.dtype)
        for x in range(m):
            for s in range(a):
                t = tmp[x, s]
                for r in range(a):
                    ar = AT[x, r]
                    if ar != 0:
                        src = M[r * a + s, k, i * L:(i + 1) * L]
                        for j in range(L):
                            t[j] += ar * src[j]
        for x in range(m):
            h = i * m + x
            if h >= P:
                break
            for z in range(m):
                out[:] = 0
                for s in range(a):
                    av = AT[z, s]
                    if av != 0:
                        t = tmp[x, s]
                        for j in range(L):
                            out[j] += av * t[j]
                for n in range(N):
                    for j in range(tw):
                        col = j * m + z
                        if col < Q:
                            y[n, k, h, col] = out[n * (tw + 1) + j]


@njit(parallel=True, cache=True, fastmath=_FMA)
def filter_transform(w, G, U):
    """U[r*a + s, k, c] = (G g G^T)[r, s] for the 3x3 filter g = w[k, c]."""
    K, C = w.shape[0], w.shape[1]
    a = G.shape[0]
    for k in prange(K):
        tmp = np.empty((a, 3), dtype=U.dtype)
        for c in range(C):
            for r in range(a):
                for q in range(3):
                    tmp[r, q] = G[r, 0] * w[k, c, 0, q] + G[r, 1] * w[k, c, 1, q] + G[r, 2] * w[k, c, 2, q]
            for r in range(a):
                for s in range(a):
                    U[r * a + s, k, c] = tmp[r, 0] * G[s, 0] + tmp[r, 1] * G[s, 1] + tmp[r, 2] * G[s, 2]
