"""Numba kernels of numba-cpu recurrent cells: the gate arithmetic of one time step fused into one
pass, parallel over the batch. The GEMMs around them go to BLAS.

tanh and the sigmoid are computed with a rational approximation (the [13/6] minimax fit Eigen uses
for float32 tanh, a few ulp from the true value) instead of calls to exp/tanh: it is only
multiplies, adds and one divide, so LLVM vectorises the gate loops, which calls to libm prevent.
sigmoid(a) = (1 + tanh(a/2)) / 2. Every constant is float32 (a Python float would turn the float32
arithmetic into float64); the kernels are for float32 data (float64 uses ops.rnn's exact gates).
"""
import numpy as np
from numba import njit, prange

f32 = np.float32
ONE = f32(1)
CLAMP = f32(7.90531110763549805)

_FMA = {"contract"}


@njit(cache=True, fastmath=_FMA, inline="always")
def _tanh(x):
    # clamp where tanh is within rounding of +-1 (the fit is not accurate beyond); NaN stays NaN
    x = min(max(x, -CLAMP), CLAMP) if x == x else x
    x2 = x * x
    p = x2 * f32(-2.76076847742355e-16) + f32(2.00018790482477e-13)
    p = p * x2 + f32(-8.60467152213735e-11)
    p = p * x2 + f32(5.12229709037114e-08)
    p = p * x2 + f32(1.48572235717979e-05)
    p = p * x2 + f32(6.37261928875436e-04)
    p = p * x2 + f32(4.89352455891786e-03)
    p = p * x
    q = x2 * f32(1.19825839466702e-06) + f32(1.18534705686654e-04)
    q = q * x2 + f32(2.26843463243900e-03)
    q = q * x2 + f32(4.89352518554385e-03)
    return p / q


@njit(cache=True, fastmath=_FMA, inline="always")
def _sigmoid(a):
    return f32(0.5) + f32(0.5) * _tanh(f32(0.5) * a)


@njit(parallel=True, cache=True, fastmath=_FMA)
def lstm_fwd(gi, gh, c, hn, cn, act, tc):
    """act (N, 4H) keeps i, f, g, o; tc (N, H) keeps tanh(c') for the backward."""
    N, H = c.shape
    for n in prange(N):
        for j in range(H):
            i = _sigmoid(gi[n, j] + gh[n, j])
            f = _sigmoid(gi[n, H + j] + gh[n, H + j])
            g = _tanh(gi[n, 2 * H + j] + gh[n, 2 * H + j])
            o = _sigmoid(gi[n, 3 * H + j] + gh[n, 3 * H + j])
            cc = f * c[n, j] + i * g
            t = _tanh(cc)
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
            d = dc[n, j] + dh[n, j] * o * (ONE - t * t)
            da[n, j] = d * g * i * (ONE - i)
            da[n, H + j] = d * c_prev[n, j] * f * (ONE - f)
            da[n, 2 * H + j] = d * i * (ONE - g * g)
            da[n, 3 * H + j] = dh[n, j] * t * o * (ONE - o)
            dc_prev[n, j] = d * f


@njit(parallel=True, cache=True, fastmath=_FMA)
def gru_fwd(gi, gh, h, hn, act):
    """act (N, 3H) keeps r, z, n."""
    N, H = h.shape
    for b in prange(N):
        for j in range(H):
            r = _sigmoid(gi[b, j] + gh[b, j])
            z = _sigmoid(gi[b, H + j] + gh[b, H + j])
            nn = _tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
            hn[b, j] = (ONE - z) * nn + z * h[b, j]
            act[b, j], act[b, H + j], act[b, 2 * H + j] = r, z, nn


@njit(parallel=True, cache=True, fastmath=_FMA)
def gru_bwd(dh, act, gh, h_prev, dgi, dgh, dh_direct):
    N, H = dh.shape
    for b in prange(N):
        for j in range(H):
            r, z, nn = act[b, j], act[b, H + j], act[b, 2 * H + j]
            d = dh[b, j]
            dan = d * (ONE - z) * (ONE - nn * nn)
            dar = dan * gh[b, 2 * H + j] * r * (ONE - r)
            daz = d * (h_prev[b, j] - nn) * z * (ONE - z)
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
            hn[b, j] = _tanh(gi[b, j] + gh[b, j])


@njit(parallel=True, cache=True, fastmath=_FMA)
def tanh_bwd(dh, hn, da):
    N, H = dh.shape
    for b in prange(N):
        for j in range(H):
            da[b, j] = dh[b, j] * (ONE - hn[b, j] * hn[b, j])
