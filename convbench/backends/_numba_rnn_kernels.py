"""Numba kernels of numba-cpu recurrent cells: the gate arithmetic of one time step fused into one
pass over the batch, each in two forms: parallel over the batch rows, and `*_serial` on the
calling thread, for steps too small to pay for waking the thread pool (a parallel launch costs
several microseconds, about what a small step's gates take). The GEMMs around them are
convbench's own (numba_cpu.rnn).

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


@njit(cache=True, fastmath=_FMA, inline="always")
def _lstm_fwd_row(n, gi, gh, c, hn, cn, act, tc):
    H = c.shape[1]
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


@njit(cache=True, fastmath=_FMA, inline="always")
def _lstm_bwd_row(n, dh, dc, act, c_prev, tc, da, dc_prev):
    H = dh.shape[1]
    for j in range(H):
        i, f, g, o = act[n, j], act[n, H + j], act[n, 2 * H + j], act[n, 3 * H + j]
        t = tc[n, j]
        d = dc[n, j] + dh[n, j] * o * (ONE - t * t)
        da[n, j] = d * g * i * (ONE - i)
        da[n, H + j] = d * c_prev[n, j] * f * (ONE - f)
        da[n, 2 * H + j] = d * i * (ONE - g * g)
        da[n, 3 * H + j] = dh[n, j] * t * o * (ONE - o)
        dc_prev[n, j] = d * f


@njit(cache=True, fastmath=_FMA, inline="always")
def _gru_fwd_row(b, gi, gh, h, hn, act):
    H = h.shape[1]
    for j in range(H):
        r = _sigmoid(gi[b, j] + gh[b, j])
        z = _sigmoid(gi[b, H + j] + gh[b, H + j])
        nn = _tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
        hn[b, j] = (ONE - z) * nn + z * h[b, j]
        act[b, j], act[b, H + j], act[b, 2 * H + j] = r, z, nn


@njit(cache=True, fastmath=_FMA, inline="always")
def _gru_bwd_row(b, dh, act, gh, h_prev, dgi, dgh, dh_direct):
    H = dh.shape[1]
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


@njit(cache=True, fastmath=_FMA, inline="always")
def _tanh_fwd_row(b, gi, gh, hn):
    for j in range(hn.shape[1]):
        hn[b, j] = _tanh(gi[b, j] + gh[b, j])


@njit(cache=True, fastmath=_FMA, inline="always")
def _tanh_bwd_row(b, dh, hn, da):
    for j in range(dh.shape[1]):
        da[b, j] = dh[b, j] * (ONE - hn[b, j] * hn[b, j])


@njit(parallel=True, cache=True, fastmath=_FMA)
def lstm_fwd(gi, gh, c, hn, cn, act, tc):
    """act (N, 4H) keeps i, f, g, o; tc (N, H) keeps tanh(c') for the backward."""
    for n in prange(c.shape[0]):
        _lstm_fwd_row(n, gi, gh, c, hn, cn, act, tc)


@njit(cache=True, fastmath=_FMA)
def lstm_fwd_serial(gi, gh, c, hn, cn, act, tc):
    for n in range(c.shape[0]):
        _lstm_fwd_row(n, gi, gh, c, hn, cn, act, tc)


@njit(parallel=True, cache=True, fastmath=_FMA)
def lstm_bwd(dh, dc, act, c_prev, tc, da, dc_prev):
    for n in prange(dh.shape[0]):
        _lstm_bwd_row(n, dh, dc, act, c_prev, tc, da, dc_prev)


@njit(cache=True, fastmath=_FMA)
def lstm_bwd_serial(dh, dc, act, c_prev, tc, da, dc_prev):
    for n in range(dh.shape[0]):
        _lstm_bwd_row(n, dh, dc, act, c_prev, tc, da, dc_prev)


@njit(parallel=True, cache=True, fastmath=_FMA)
def gru_fwd(gi, gh, h, hn, act):
    """act (N, 3H) keeps r, z, n."""
    for b in prange(h.shape[0]):
        _gru_fwd_row(b, gi, gh, h, hn, act)


@njit(cache=True, fastmath=_FMA)
def gru_fwd_serial(gi, gh, h, hn, act):
    for b in range(h.shape[0]):
        _gru_fwd_row(b, gi, gh, h, hn, act)


@njit(parallel=True, cache=True, fastmath=_FMA)
def gru_bwd(dh, act, gh, h_prev, dgi, dgh, dh_direct):
    for b in prange(dh.shape[0]):
        _gru_bwd_row(b, dh, act, gh, h_prev, dgi, dgh, dh_direct)


@njit(cache=True, fastmath=_FMA)
def gru_bwd_serial(dh, act, gh, h_prev, dgi, dgh, dh_direct):
    for b in range(dh.shape[0]):
        _gru_bwd_row(b, dh, act, gh, h_prev, dgi, dgh, dh_direct)


@njit(parallel=True, cache=True, fastmath=_FMA)
def tanh_fwd(gi, gh, hn):
    for b in prange(hn.shape[0]):
        _tanh_fwd_row(b, gi, gh, hn)


@njit(cache=True, fastmath=_FMA)
def tanh_fwd_serial(gi, gh, hn):
    for b in range(hn.shape[0]):
        _tanh_fwd_row(b, gi, gh, hn)


@njit(parallel=True, cache=True, fastmath=_FMA)
def tanh_bwd(dh, hn, da):
    for b in prange(dh.shape[0]):
        _tanh_bwd_row(b, dh, hn, da)


@njit(cache=True, fastmath=_FMA)
def tanh_bwd_serial(dh, hn, da):
    for b in range(dh.shape[0]):
        _tanh_bwd_row(b, dh, hn, da)
