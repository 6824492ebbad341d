"""Numba kernels of the Winograd backends: the input, output and output-gradient transforms.

V, M and D are (a*a, channels, rows*Lc) with Lc = N*tw: for the block of tile rows i0 .. i0 +
rows - 1 a kernel call handles, column (i - i0)*Lc + n*tw + t holds tile (n, i, t) (image n,
tile row i, tile column t). Each task owns one tile row of one channel. The input
transform first copies the a input rows it needs, of every image, side by side and zero padded,
into a local buffer (rowpad); tile (n, t) then starts at column off[n*tw + t] of it. The output
transforms go the other way through a buffer of m rows (rowb).

The transforms are written out as the fixed sums of Lavin and Gray's matrices and applied to
blocks of LB tiles: LLVM vectorises a loop over tiles only when its stores go to one array of
constant shape (tb, ob), so results pass through those and are copied out row by row.
"""
import numpy as np
from numba import njit, prange

_FMA = {"contract"}
#: lanes per block: two 16-float vectors on AVX-512, four on AVX2
LB = 32


@njit(inline="always")
def _bt2(d0, d1, d2, d3):
    """B^T d for F(2x2, 3x3)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always")
def _at2(m0, m1, m2, m3):
    """A^T m for F(2x2, 3x3)."""
    return m0 + m1 + m2, m1 - m2 - m3


@njit(inline="always")
def _bt4(d0, d1, d2, d3, d4, d5):
    """B^T d for F(4x4, 3x3)."""
    f2 = np.float32(2.0)
    f4 = np.float32(4.0)
    f5 = np.float32(5.0)
    return (f4 * d0 - f5 * d2 + d4, d3 + d4 - f4 * (d1 + d2), f4 * (d1 - d2) - d3 + d4,
            f2 * (d3 - d1) - d2 + d4, f2 * (d1 - d3) - d2 + d4, f4 * d1 - f5 * d3 + d5)


@njit(inline="always")
def _at4(m0, m1, m2, m3, m4, m5):
    """A^T m for F(4x4, 3x3)."""
    f2 = np.float32(2.0)
    f4 = np.float32(4.0)
    f8 = np.float32(8.0)
    p, q = m1 + m2, m1 - m2
    r, s = m3 + m4, m3 - m4
    return m0 + p + r, q + f2 * s, p + f4 * r, q + f8 * s + m5


@njit(inline="always")
def _g2(g0, g1, g2):
    """G g for F(2x2, 3x3)."""
    h = np.float32(0.5)
    return g0, h * (g0 + g1 + g2), h * (g0 - g1 + g2), g2


@njit(inline="always")
def _g4(g0, g1, g2):
    """G g for F(4x4, 3x3). Divisions by exact float32 integers, so float64 filters keep float64
    precision (a float32 1/6 would not)."""
    s = g0 + g2
    e = g0 / np.float32(24.0) + g2 / np.float32(6.0)
    f = g1 / np.float32(12.0)
    return np.float32(0.25) * g0, -(s + g1) / np.float32(6.0), -(s - g1) / np.float32(6.0), \
        e + f, e - f, g2


@njit(inline="always")
def _a2(d0, d1):
    """A d for F(2x2, 3x3): the output-gradient transform of the weight gradient."""
    return d0, d0 + d1, d0 - d1, -d1


@njit(inline="always")
def _a4(d0, d1, d2, d3):
    """A d for F(4x4, 3x3)."""
    f2 = np.float32(2.0)
    f4 = np.float32(4.0)
    f8 = np.float32(8.0)
    s1, t1 = d0 + d2, d1 + d3
    s2, t2 = d0 + f4 * d2, f2 * d1 + f8 * d3
    return d0, s1 + t1, s1 - t1, s2 + t2, s2 - t2, d3


@njit(inline="always")
def _rows(x, c, r0, pl, wp, rowpad):
    """rowpad[u, n*wp + pl + col] = x[n, c, r0 + u, col]: the a input rows of one tile row of
    every image side by side, each zero padded to wp = tw*m + 2 columns."""
    N, _, H, W = x.shape
    zero = x.dtype.type(0)
    for u in range(rowpad.shape[0]):
        row = r0 + u
        rp = rowpad[u]
        rp[:] = zero
        if 0 <= row < H:
            for n in range(N):
                src = x[n, c, row]
                dst = rp[n * wp + pl:]
                for col in range(min(W, wp - pl)):
                    dst[col] = src[col]


@njit(inline="always")
def _input_block_f2(rowpad, off, b, nl, tb, ob):
    """ob[r*4 + s, j] = (B^T d B)[r, s] of the tile whose top-left input is column off[b + j] of
    rowpad."""
    for u in range(4):
        rp = rowpad[u]
        o = off[b:b + nl]
        t0, t1, t2, t3 = tb[u * 4], tb[u * 4 + 1], tb[u * 4 + 2], tb[u * 4 + 3]
        for j in range(nl):
            q = o[j]
            r = _bt2(rp[q], rp[q + 1], rp[q + 2], rp[q + 3])
            t0[j], t1[j], t2[j], t3[j] = r[0], r[1], r[2], r[3]
    for s in range(4):
        x0, x1, x2, x3 = tb[s], tb[4 + s], tb[8 + s], tb[12 + s]
        o0, o1, o2, o3 = ob[s], ob[4 + s], ob[8 + s], ob[12 + s]
        for j in range(nl):
            r = _bt2(x0[j], x1[j], x2[j], x3[j])
            o0[j], o1[j], o2[j], o3[j] = r[0], r[1], r[2], r[3]


@njit(inline="always")
def _input_block_f4(rowpad, off, b, nl, tb, ob):
    """ob[r*6 + s, j] = (B^T d B)[r, s] of the tile whose top-left input is column off[b + j] of
    rowpad."""
    for u in range(6):
        rp = rowpad[u]
        o = off[b:b + nl]
        t0, t1, t2 = tb[u * 6], tb[u * 6 + 1], tb[u * 6 + 2]
        t3, t4, t5 = tb[u * 6 + 3], tb[u * 6 + 4], tb[u * 6 + 5]
        for j in range(nl):
            q = o[j]
            r = _bt4(rp[q], rp[q + 1], rp[q + 2], rp[q + 3], rp[q + 4], rp[q + 5])
            t0[j], t1[j], t2[j], t3[j], t4[j], t5[j] = r[0], r[1], r[2], r[3], r[4], r[5]
    for s in range(6):
        x0, x1, x2, x3, x4, x5 = tb[s], tb[6 + s], tb[12 + s], tb[18 + s], tb[24 + s], tb[30 + s]
        o0, o1, o2, o3, o4, o5 = ob[s], ob[6 + s], ob[12 + s], ob[18 + s], ob[24 + s], ob[30 + s]
        for j in range(nl):
            r = _bt4(x0[j], x1[j], x2[j], x3[j], x4[j], x5[j])
            o0[j], o1[j], o2[j], o3[j], o4[j], o5[j] = r[0], r[1], r[2], r[3], r[4], r[5]


@njit(inline="always")
def _output_block_f2(M, k, b, nl, tb, ob):
    for s in range(4):
        m0, m1 = M[s, k, b:b + nl], M[4 + s, k, b:b + nl]
        m2, m3 = M[8 + s, k, b:b + nl], M[12 + s, k, b:b + nl]
        t0, t1 = tb[s], tb[4 + s]
        for j in range(nl):
            r = _at2(m0[j], m1[j], m2[j], m3[j])
            t0[j], t1[j] = r[0], r[1]
    for x in range(2):
        m0, m1, m2, m3 = tb[x * 4], tb[x * 4 + 1], tb[x * 4 + 2], tb[x * 4 + 3]
        o0, o1 = ob[x * 2], ob[x * 2 + 1]
        for j in range(nl):
            r = _at2(m0[j], m1[j], m2[j], m3[j])
            o0[j], o1[j] = r[0], r[1]


@njit(inline="always")
def _output_block_f4(M, k, b, nl, tb, ob):
    for s in range(6):
        m0, m1, m2 = M[s, k, b:b + nl], M[6 + s, k, b:b + nl], M[12 + s, k, b:b + nl]
        m3, m4, m5 = M[18 + s, k, b:b + nl], M[24 + s, k, b:b + nl], M[30 + s, k, b:b + nl]
        t0, t1, t2, t3 = tb[s], tb[6 + s], tb[12 + s], tb[18 + s]
        for j in range(nl):
            r = _at4(m0[j], m1[j], m2[j], m3[j], m4[j], m5[j])
            t0[j], t1[j], t2[j], t3[j] = r[0], r[1], r[2], r[3]
    for x in range(4):
        m0, m1, m2 = tb[x * 6], tb[x * 6 + 1], tb[x * 6 + 2]
        m3, m4, m5 = tb[x * 6 + 3], tb[x * 6 + 4], tb[x * 6 + 5]
        o0, o1, o2, o3 = ob[x * 4], ob[x * 4 + 1], ob[x * 4 + 2], ob[x * 4 + 3]
        for j in range(nl):
            r = _at4(m0[j], m1[j], m2[j], m3[j], m4[j], m5[j])
            o0[j], o1[j], o2[j], o3[j] = r[0], r[1], r[2], r[3]


@njit(inline="always")
def _interleave(ob, b0, nl, m, rowb):
    """rowb[x, (b0 + j)*m + z] = ob[x*m + z, j]: lane n*tw + t lands at column t*m + z of image
    n's stretch of the row."""
    for x in range(m):
        dst = rowb[x, b0 * m:]
        for j in range(nl):
            for z in range(m):
                dst[j * m + z] = ob[x * m + z, j]


@njit(inline="always")
def _store_rows(rowb, y, k, i, tw, bias):
    """y[n, k, i*m + x, :Q] = rowb[x, n*tw*m:][:Q] + bias, rows past P dropped."""
    N, P, Q = y.shape[0], y.shape[2], y.shape[3]
    m = rowb.shape[0]
    wp = tw * m
    for x in range(min(m, P - i * m)):
        for n in range(N):
            src = rowb[x, n * wp:n * wp + Q]
            dst = y[n, k, i * m + x]
            for col in range(Q):
                dst[col] = src[col] + bias


@njit(inline="always")
def _load_rows(y, k, i, tw, rowb):
    """The inverse of _store_rows: rowb[x, n*tw*m + col] = y[n, k, i*m + x, col], zero past y's
    rows and columns."""
    N, P, Q = y.shape[0], y.shape[2], y.shape[3]
    m = rowb.shape[0]
    wp = tw * m
    rowb[:, :] = 0
    for x in range(min(m, P - i * m)):
        for n in range(N):
            src = y[n, k, i * m + x]
            dst = rowb[x, n * wp:n * wp + Q]
            for col in range(Q):
                dst[col] = src[col]


@njit(inline="always")
def _deinterleave(rowb, b0, nl, m, db):
    """The inverse of _interleave: db[x*m + z, j] = rowb[x, (b0 + j)*m + z]."""
    for x in range(m):
        src = rowb[x, b0 * m:]
        for j in range(nl):
            for z in range(m):
                db[x * m + z, j] = src[j * m + z]


@njit(inline="always")
def _grad_block_f2(db, nl, tb, ob):
    for z in range(2):
        d0, d1 = db[z], db[2 + z]
        t0, t1, t2, t3 = tb[z], tb[2 + z], tb[4 + z], tb[6 + z]
        for j in range(nl):
            r = _a2(d0[j], d1[j])
            t0[j], t1[j], t2[j], t3[j] = r[0], r[1], r[2], r[3]
    for r in range(4):
        d0, d1 = tb[r * 2], tb[r * 2 + 1]
        o0, o1, o2, o3 = ob[r * 4], ob[r * 4 + 1], ob[r * 4 + 2], ob[r * 4 + 3]
        for j in range(nl):
            q = _a2(d0[j], d1[j])
            o0[j], o1[j], o2[j], o3[j] = q[0], q[1], q[2], q[3]


@njit(inline="always")
def _grad_block_f4(db, nl, tb, ob):
    for z in range(4):
        d0, d1, d2, d3 = db[z], db[4 + z], db[8 + z], db[12 + z]
        t0, t1, t2 = tb[z], tb[4 + z], tb[8 + z]
        t3, t4, t5 = tb[12 + z], tb[16 + z], tb[20 + z]
        for j in range(nl):
            r = _a4(d0[j], d1[j], d2[j], d3[j])
            t0[j], t1[j], t2[j], t3[j], t4[j], t5[j] = r[0], r[1], r[2], r[3], r[4], r[5]
    for r in range(6):
        d0, d1, d2, d3 = tb[r * 4], tb[r * 4 + 1], tb[r * 4 + 2], tb[r * 4 + 3]
        o0, o1, o2 = ob[r * 6], ob[r * 6 + 1], ob[r * 6 + 2]
        o3, o4, o5 = ob[r * 6 + 3], ob[r * 6 + 4], ob[r * 6 + 5]
        for j in range(nl):
            q = _a4(d0[j], d1[j], d2[j], d3[j])
            o0[j], o1[j], o2[j], o3[j], o4[j], o5[j] = q[0], q[1], q[2], q[3], q[4], q[5]


@njit(inline="always")
def _copy_out(ob, V, c, o, nl):
    """V[rs, c, o:o + nl] = ob[rs, :nl] (a plain loop: slice assignment would check for overlap
    and copy through a temporary)."""
    for rs in range(ob.shape[0]):
        src = ob[rs]
        dst = V[rs, c, o:o + nl]
        for j in range(nl):
            dst[j] = src[j]


@njit(inline="always")
def _input_transform(x, pt, pl, i0, rows, tw, off, V, m, block):
    N, C = x.shape[0], x.shape[1]
    Lc = N * tw
    for task in prange(C * rows):
        c, i = task // rows, task % rows
        rowpad = np.empty((m + 2, N * (tw * m + 2)), dtype=x.dtype)
        tb = np.empty(((m + 2) * (m + 2), LB), dtype=x.dtype)
        ob = np.empty(((m + 2) * (m + 2), LB), dtype=x.dtype)
        _rows(x, c, (i0 + i) * m - pt, pl, tw * m + 2, rowpad)
        for b in range(0, Lc, LB):
            nl = min(LB, Lc - b)
            block(rowpad, off, b, nl, tb, ob)
            _copy_out(ob, V, c, i * Lc + b, nl)


@njit(parallel=True, cache=True, fastmath=_FMA)
def input_transform_f2(x, pt, pl, i0, rows, tw, off, V):
    """V[r*4 + s, c, (i - i0)*Lc + n*tw + t] = (B^T d B)[r, s] of input tile (n, i, t) for tile
    rows i0 <= i < i0 + rows; off[n*tw + t] = n*(tw*2 + 2) + t*2 (see tile_offsets)."""
    _input_transform(x, pt, pl, i0, rows, tw, off, V, 2, _input_block_f2)


@njit(parallel=True, cache=True, fastmath=_FMA)
def input_transform_f4(x, pt, pl, i0, rows, tw, off, V):
    """V[r*6 + s, c, (i - i0)*Lc + n*tw + t] = (B^T d B)[r, s] of input tile (n, i, t) for tile
    rows i0 <= i < i0 + rows; off[n*tw + t] = n*(tw*4 + 2) + t*4 (see tile_offsets)."""
    _input_transform(x, pt, pl, i0, rows, tw, off, V, 4, _input_block_f4)


def tile_offsets(N, tw, m):
    """off[n*tw + t] = n*(tw*m + 2) + t*m: where tile (n, t) of a tile row starts in rowpad."""
    lc = np.arange(N * tw)
    return (lc // tw) * (tw * m + 2) + (lc % tw) * m


@njit(inline="always")
def _output_transform(M, bias, y, i0, rows, tw, m, block):
    N, K = y.shape[0], y.shape[1]
    L = N * tw
    for task in prange(K * rows):
        k, i = task // rows, task % rows
        tb = np.empty((m * (m + 2), LB), dtype=y.dtype)
        ob = np.empty((m * m, LB), dtype=y.dtype)
        rowb = np.empty((m, L * m), dtype=y.dtype)
        for b in range(0, L, LB):
            nl = min(LB, L - b)
            block(M, k, i * L + b, nl, tb, ob)
            _interleave(ob, b, nl, m, rowb)
        _store_rows(rowb, y, k, i0 + i, tw, bias[k])


@njit(parallel=True, cache=True, fastmath=_FMA)
def output_transform_f2(M, bias, y, i0, rows, tw):
    """y[n, k, i*2 + x, t*2 + z] = (A^T M A)[x, z] + bias[k] of tile (n, i, t), column
    (i - i0)*Lc + n*tw + t of M, for tile rows i0 <= i < i0 + rows, cropped to y's (P, Q)."""
    _output_transform(M, bias, y, i0, rows, tw, 2, _output_block_f2)


@njit(parallel=True, cache=True, fastmath=_FMA)
def output_transform_f4(M, bias, y, i0, rows, tw):
    """y[n, k, i*4 + x, t*4 + z] = (A^T M A)[x, z] + bias[k] of tile (n, i, t), column
    (i - i0)*Lc + n*tw + t of M, for tile rows i0 <= i < i0 + rows, cropped to y's (P, Q)."""
    _output_transform(M, bias, y, i0, rows, tw, 4, _output_block_f4)


@njit(inline="always")
def _grad_transform(dy, i0, rows, tw, D, m, block):
    N, K = dy.shape[0], dy.shape[1]
    L = N * tw
    for task in prange(K * rows):
        k, i = task // rows, task % rows
        rowb = np.empty((m, L * m), dtype=dy.dtype)
        db = np.empty((m * m, LB), dtype=dy.dtype)
        tb = np.empty(((m + 2) * m, LB), dtype=dy.dtype)
        ob = np.empty(((m + 2) * (m + 2), LB), dtype=dy.dtype)
        _load_rows(dy, k, i0 + i, tw, rowb)
        for b in range(0, L, LB):
            nl = min(LB, L - b)
            _deinterleave(rowb, b, nl, m, db)
            block(db, nl, tb, ob)
            _copy_out(ob, D, k, i * L + b, nl)


@njit(parallel=True, cache=True, fastmath=_FMA)
def grad_transform_f2(dy, i0, rows, tw, D):
    """D[r*4 + s, k, (i - i0)*Lc + n*tw + t] = (A g A^T)[r, s] of the output-gradient tile
    g = (n, i, t), for tile rows i0 <= i < i0 + rows; dy is taken as zero past its edges."""
    _grad_transform(dy, i0, rows, tw, D, 2, _grad_block_f2)


@njit(parallel=True, cache=True, fastmath=_FMA)
def grad_transform_f4(dy, i0, rows, tw, D):
    """D[r*6 + s, k, (i - i0)*Lc + n*tw + t] = (A g A^T)[r, s] of the output-gradient tile
    g = (n, i, t), for tile rows i0 <= i < i0 + rows; dy is taken as zero past its edges."""
    _grad_transform(dy, i0, rows, tw, D, 4, _grad_block_f4)


@njit(inline="always")
def _filter_block(wf, base, stride, l0, nl, a, gfn, flip, tb, ob):
    """ob[e*a + f, j] = (G g G^T)[e, f] for the 3x3 filter g that starts at wf[base + (l0 + j) *
    stride], or for that filter rotated by 180 degrees when flip; in float64 (tb and ob), so that
    U is rounded once: in float32 the two stages' roundings doubled F(4x4)'s worst error on small
    reductions (measured: 7 n*u against 0.9)."""
    for s in range(3):
        for j in range(nl):
            q = base + (l0 + j) * stride
            if flip:        # column s of the rotated filter: taps 8 - s, 5 - s, 2 - s
                r = gfn(np.float64(wf[q + 8 - s]), np.float64(wf[q + 5 - s]),
                        np.float64(wf[q + 2 - s]))
            else:
                r = gfn(np.float64(wf[q + s]), np.float64(wf[q + 3 + s]), np.float64(wf[q + 6 + s]))
            for e in range(a):
                tb[e * 3 + s, j] = r[e]
    for e in range(a):
        g0, g1, g2 = tb[e * 3], tb[e * 3 + 1], tb[e * 3 + 2]
        for j in range(nl):
            r = gfn(g0[j], g1[j], g2[j])
            for f in range(a):
                ob[e * a + f, j] = r[f]


@njit(inline="always")
def _filter_transform(w, flip, U, a, gfn):
    K, C = w.shape[0], w.shape[1]
    wf = w.reshape(K * C * 9)
    rows, lanes = (C, K) if flip else (K, C)
    for row in prange(rows):
        base, stride = (row * 9, C * 9) if flip else (row * C * 9, 9)
        tb = np.empty((a * 3, LB), dtype=np.float64)
        ob = np.empty((a * a, LB), dtype=np.float64)
        for l0 in range(0, lanes, LB):
            nl = min(LB, lanes - l0)
            _filter_block(wf, base, stride, l0, nl, a, gfn, flip, tb, ob)
            _copy_out(ob, U, row, l0, nl)


@njit(parallel=True, cache=True, fastmath=_FMA)
def filter_transform_f2(w, flip, U):
    """U[e*4 + f, k, c] = (G w[k, c] G^T)[e, f]; with flip, U[e*4 + f, c, k] = the same of w[k, c]
    rotated by 180 degrees (the input gradient's filters, without copying them first)."""
    _filter_transform(w, flip, U, 4, _g2)


@njit(parallel=True, cache=True, fastmath=_FMA)
def filter_transform_f4(w, flip, U):
    """U[e*6 + f, k, c] = (G w[k, c] G^T)[e, f]; with flip, U[e*6 + f, c, k] = the same of w[k, c]
    rotated by 180 degrees."""
    _filter_transform(w, flip, U, 6, _g4)
