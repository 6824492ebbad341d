"""Numba kernels of numba-cpu recurrent cells: the gate arithmetic of one time step fused into one
pass, parallel over the batch. The GEMMs around them go to BLAS."""
import numpy as np
from numba import njit, prange

_FMA = {"contract"}


@njit(cache=True, fastmath=_FMA, inline="always")
def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


@njit(parallel=True, cache=True, fastmath=_FMA)
def lstm_fwd(gi, gh, c, hn, cn, act, tc):
    """act (N, 4H) keeps i, f, g, o; tc (N, H) keeps tanh(c') for the backward."""
    N, H = c.shape
    for n in prange(N):
        for j in range(H):
            i = _sigmoid(gi[n, j] + gh[n, j])
            f = _sigmoid(gi[n, H + j] + gh[n, H + j])
            g = np.tanh(gi[n, 2 * H + j] + gh[n, 2 * H + j])
            o = _sigmoid(gi[n, 3 * H + j] + gh[n, 3 * H + j])
            cc = f * c[n, j] + i * g
            t = np.tanh(cc)
            cn[n, j] = cc
            hn[n, j] = o * t
            act[n, j], act[n, H + j], act[n, 2 * H + j], act[n, 3 * H + j] = i, f, g, o
            tc[n, j] = t


@njit(parallel=True, cache=True, fastmath=_FMA)
def lstm_bwd(dh, dc, act, c_prev, tc, da, dc_prev):
    N, H = dh.shape
    for n in prange(N):
        for j in range(H):
            i, f, g, o = act[n, j], act[n, H + j], act[n, 2 * H + j], act[n, 3 * H + j]
            t = tc[n, j]
            d = dc[n, j] + dh[n, j] * o * (1 - t * t)
            da[n, j] = d * g * i * (1 - i)
            da[n, H + j] = d * c_prev[n, j] * f * (1 - f)
            da[n, 2 * H + j] = d * i * (1 - g * g)
            da[n, 3 * H + j] = dh[n, j] * t * o * (1 - o)
            dc_prev[n, j] = d * f


@njit(parallel=True, cache=True, fastmath=_FMA)
def gru_fwd(gi, gh, h, hn, act):
    """act (N, 3H) keeps r, z, n."""
    N, H = h.shape
    for b in prange(N):
        for j in range(H):
            r = _sigmoid(gi[b, j] + gh[b, j])
            z = _sigmoid(gi[b, H + j] + gh[b, H + j])
            nn = np.tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
            hn[b, j] = (1 - z) * nn + z * h[b, j]
            act[b, j], act[b, H + j], act[b, 2 * H + j] = r, z, nn


@njit(parallel=True, cache=True, fastmath=_FMA)
def gru_bwd(dh, act, gh, h_prev, dgi, dgh, dh_direct):
    N, H = dh.shape
    for b in prange(N):
        for j in range(H):
            r, z, nn = act[b, j], act[b, H + j], act[b, 2 * H + j]
            d = dh[b, j]
            dan = d * (1 - z) * (1 - nn * nn)
            dar = dan * gh[b, 2 * H + j] * r * (1 - r)
            daz = d * (h_prev[b, j] - nn) * z * (1 - z)
            dgi[b, j] = dar
            dgi[b, H + j] = daz
            dgi[b, 2 * H + j] = dan
            dgh[b, j] = dar
            dgh[b, H + j] = daz
            dgh[b, 2 * H + j] = dan * r
            dh_direct[b, j] = d * z


@njit(parallel=True, cache=True, fastmath=_FMA)
def tanh_fwd(gi, gh, hn):
    N, H = hn.shape
    for b in prange(N):
        for j in range(H):
            hn[b, j] = np.tanh(gi[b, j] + gh[b, j])


@njit(parallel=True, cache=True, fastmath=_FMA)
def tanh_bwd(dh, hn, da):
    N, H = dh.shape
    for b in prange(N):
        for j in range(H):
            da[b, j] = dh[b, j] * (1 - hn[b, j] * hn[b, j])
