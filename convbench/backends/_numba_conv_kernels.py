"""Numba kernels of the numba-cpu convolution (see numba_cpu.py for the layout they assume).

Imported only when a numba-cpu convolution first runs. The unrolled bodies are written out by hand:
LLVM vectorises the innermost loop over output positions only when the reduction terms and output
channels around it are explicit scalars, so each x vector loaded feeds four FMAs.
"""
import numpy as np
from numba import njit, prange

CHUNK = 512

# 'contract' lets a*b + c become one FMA; the weight gradient also needs 'reassoc' to vectorise its
# dot products. No 'nnan'/'ninf': NaN and infinity must flow through as they do in the reference.
_FMA = {"contract"}
_DOT = {"contract", "reassoc"}


@njit(parallel=True, cache=True, fastmath=_FMA)
def implicit_gemm(x, wm, chan, phase, off, y, Kg):
    """y[n, g*Kg + k, t] = sum_j wm[g, k, j] * x[n, g*Cg + chan[j], phase[j], off[j] + t].

    x (N, Cin, nph, L), wm (G, Kgp, J) with Kgp a multiple of 4 (zero rows past Kg),
    chan/phase/off (J,), y (N, G*Kg, Lout). Each task owns 4 output rows of one image.
    """
    N = x.shape[0]
    G, Kgp, J = wm.shape
    Cg = x.shape[1] // G
    Lout = y.shape[2]
    nkb = Kgp // 4
    J4 = J - J % 4
    for task in prange(N * G * nkb):
        n = task // (G * nkb)
        g = (task // nkb) % G
        k0 = (task % nkb) * 4
        acc = np.empty((4, CHUNK), dtype=y.dtype)
        a0 = acc[0]
        a1 = acc[1]
        a2 = acc[2]
        a3 = acc[3]
        xg = x[n, g * Cg:(g + 1) * Cg]
        wg = wm[g]
        for t0 in range(0, Lout, CHUNK):
            tl = min(CHUNK, Lout - t0)
            acc[:, :] = 0
            for j in range(0, J4, 4):
                x0 = xg[chan[j], phase[j], off[j] + t0:off[j] + t0 + tl]
                x1 = xg[chan[j + 1], phase[j + 1], off[j + 1] + t0:off[j + 1] + t0 + tl]
                x2 = xg[chan[j + 2], phase[j + 2], off[j + 2] + t0:off[j + 2] + t0 + tl]
                x3 = xg[chan[j + 3], phase[j + 3], off[j + 3] + t0:off[j + 3] + t0 + tl]
                w00, w01, w02, w03 = wg[k0, j], wg[k0, j + 1], wg[k0, j + 2], wg[k0, j + 3]
                w10, w11 = wg[k0 + 1, j], wg[k0 + 1, j + 1]
                w12, w13 = wg[k0 + 1, j + 2], wg[k0 + 1, j + 3]
                w20, w21 = wg[k0 + 2, j], wg[k0 + 2, j + 1]
                w22, w23 = wg[k0 + 2, j + 2], wg[k0 + 2, j + 3]
                w30, w31 = wg[k0 + 3, j], wg[k0 + 3, j + 1]
                w32, w33 = wg[k0 + 3, j + 2], wg[k0 + 3, j + 3]
                for t in range(tl):
                    u0 = x0[t]
                    u1 = x1[t]
                    u2 = x2[t]
                    u3 = x3[t]
                    a0[t] += w00 * u0 + w01 * u1 + w02 * u2 + w03 * u3
                    a1[t] += w10 * u0 + w11 * u1 + w12 * u2 + w13 * u3
                    a2[t] += w20 * u0 + w21 * u1 + w22 * u2 + w23 * u3
                    a3[t] += w30 * u0 + w31 * u1 + w32 * u2 + w33 * u3
            for j in range(J4, J):
                x0 = xg[chan[j], phase[j], off[j] + t0:off[j] + t0 + tl]
                w00, w10, w20, w30 = wg[k0, j], wg[k0 + 1, j], wg[k0 + 2, j], wg[k0 + 3, j]
                for t in range(tl):
                    u0 = x0[t]
                    a0[t] += w00 * u0
                    a1[t] += w10 * u0
                    a2[t] += w20 * u0
                    a3[t] += w30 * u0
            for kk in range(min(4, Kg - k0)):
                y[n, g * Kg + k0 + kk, t0:t0 + tl] = acc[kk, :tl]


@njit(parallel=True, cache=True, fastmath=_DOT)
def weight_grad(x, dyw, chan, phase, off, dw, L):
    """dw[g, k, j] += sum_n sum_{t < L} dyw[n, g*Kg + k, t]
                                     * x[n, g*Cg + chan[j], phase[j], off[j] + t]

    x (N, C, nph, Lx), dyw (N, G*Kg, >= L) zero at the cropped columns, dw (G, Kgp, J) zeroed.
    Each task owns 4 rows of dw; positions are taken in chunks that stay in L1.
    """
    N = x.shape[0]
    G, Kgp, J = dw.shape
    Cg = x.shape[1] // G
    Kg = dyw.shape[1] // G
    nkb = Kgp // 4
    J3 = J - J % 3
    for task in prange(G * nkb):
        g = task // nkb
        k0 = (task % nkb) * 4
        ka = g * Kg + min(k0, Kg - 1)
        kb = g * Kg + min(k0 + 1, Kg - 1)
        kc = g * Kg + min(k0 + 2, Kg - 1)
        kd = g * Kg + min(k0 + 3, Kg - 1)
        part = np.zeros((4, J), dtype=dw.dtype)
        for n in range(N):
            xg = x[n, g * Cg:(g + 1) * Cg]
            for t0 in range(0, L, CHUNK):
                tl = min(CHUNK, L - t0)
                d0 = dyw[n, ka, t0:t0 + tl]
                d1 = dyw[n, kb, t0:t0 + tl]
                d2 = dyw[n, kc, t0:t0 + tl]
                d3 = dyw[n, kd, t0:t0 + tl]
                for j in range(0, J3, 3):
                    x0 = xg[chan[j], phase[j], off[j] + t0:off[j] + t0 + tl]
                    x1 = xg[chan[j + 1], phase[j + 1], off[j + 1] + t0:off[j + 1] + t0 + tl]
                    x2 = xg[chan[j + 2], phase[j + 2], off[j + 2] + t0:off[j + 2] + t0 + tl]
                    s00 = s01 = s02 = s10 = s11 = s12 = dw.dtype.type(0)
                    s20 = s21 = s22 = s30 = s31 = s32 = dw.dtype.type(0)
                    for t in range(tl):
                        u0 = x0[t]
                        u1 = x1[t]
                        u2 = x2[t]
                        e0 = d0[t]
                        e1 = d1[t]
                        e2 = d2[t]
                        e3 = d3[t]
                        s00 += e0 * u0
                        s01 += e0 * u1
                        s02 += e0 * u2
                        s10 += e1 * u0
                        s11 += e1 * u1
                        s12 += e1 * u2
                        s20 += e2 * u0
                        s21 += e2 * u1
                        s22 += e2 * u2
                        s30 += e3 * u0
                        s31 += e3 * u1
                        s32 += e3 * u2
                    part[0, j] += s00
                    part[0, j + 1] += s01
                    part[0, j + 2] += s02
                    part[1, j] += s10
                    part[1, j + 1] += s11
                    part[1, j + 2] += s12
                    part[2, j] += s20
                    part[2, j + 1] += s21
                    part[2, j + 2] += s22
                    part[3, j] += s30
                    part[3, j + 1] += s31
                    part[3, j + 2] += s32
                for j in range(J3, J):
                    x0 = xg[chan[j], phase[j], off[j] + t0:off[j] + t0 + tl]
                    s00 = s10 = s20 = s30 = dw.dtype.type(0)
                    for t in range(tl):
                        u0 = x0[t]
                        s00 += d0[t] * u0
                        s10 += d1[t] * u0
                        s20 += d2[t] * u0
                        s30 += d3[t] * u0
                    part[0, j] += s00
                    part[1, j] += s10
                    part[2, j] += s20
                    part[3, j] += s30
        for kk in range(min(4, Kg - k0)):
            dw[g, k0 + kk, :] = part[kk]
