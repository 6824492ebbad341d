"""fft: products in the frequency domain, summed over input channels (scipy.fft).

The padded input and the (dilated) kernel are transformed to a common size L >= the padded input,
so the circular correlation equals the linear one on every output we keep; stride is applied by
keeping every stride-th output. The sum over input channels at each frequency is a batched complex
matrix product, so each image and each filter is transformed once, not once per pair.

The gradients use the same transforms: the input gradient is the full convolution of the
(stride-dilated) output gradient with the kernel, and the weight gradient is the correlation of
the input with the output gradient, read at the dilated tap positions.

A transform mixes every input into every output, so NaN and infinity follow convbench's rule
(backends.nonfinite) through `exact`: the transforms see only finite values.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from convbench.backends.base import Backend
from convbench.backends.nonfinite import exact
from convbench.ops.conv import crop_padding, pad_input
from convbench.threads import get_threads


def _sizes(p):
    return sfft.next_fast_len(p.Hp, real=True), sfft.next_fast_len(p.Wp, real=True)


def _rfft(a, p):
    return sfft.rfft2(a, s=_sizes(p), workers=get_threads())


def _irfft(a, p):
    return sfft.irfft2(a, s=_sizes(p), workers=get_threads())


def _taps(p):
    """Where the kernel's taps sit in a plane: (r*dh, s*dw)."""
    (dh, dw) = p.dilation
    return (slice(0, (p.R - 1) * dh + 1, dh), slice(0, (p.S - 1) * dw + 1, dw))


def _kernel_spectrum(w, p):
    """Spectrum of w with tap (r, s) placed at (r*dh, s*dw), by frequency: (F, G, Kg, Cg)."""
    Lh, Lw = _sizes(p)
    placed = np.zeros((p.K, p.Cg, Lh, Lw), dtype=w.dtype)
    placed[(slice(None), slice(None)) + _taps(p)] = w
    Wf = _rfft(placed, p).reshape(p.groups, p.Kg, p.Cg, -1)
    return np.ascontiguousarray(Wf.transpose(3, 0, 1, 2))


def _output_positions(p):
    (sh, sw) = p.stride
    return (slice(0, (p.P - 1) * sh + 1, sh), slice(0, (p.Q - 1) * sw + 1, sw))


def _upsampled_dy(dy, p):
    """dy placed at the strided positions of a zero plane of the transform size."""
    up = np.zeros((p.N, p.K) + _sizes(p), dtype=dy.dtype)
    up[(slice(None), slice(None)) + _output_positions(p)] = dy
    return up


def _by_freq(a, groups):
    """(B, G*M, Lh, F) spectrum -> (Lh*F, G, B, M) for per-frequency matrix products."""
    B, GM = a.shape[:2]
    return np.ascontiguousarray(a.reshape(B, groups, GM // groups, -1).transpose(3, 1, 0, 2))


def _from_freq(a, shape):
    """(Lh*F, G, B, M) -> (B, G*M, Lh, F)."""
    B = a.shape[2]
    return a.transpose(2, 1, 3, 0).reshape(B, -1, *shape)


class FFTBackend(Backend):
    name = "fft"
    auto_candidate = True
    description = "FFT products summed over channels as per-frequency complex GEMMs (scipy.fft)"

    def tolerance_terms(self, op, p):
        # Forward and inverse transforms each add about log2(L) rounding steps per value.
        Lh, Lw = _sizes(p)
        return 4.0 * np.log2(Lh * Lw)

    def workspace_bytes(self, op, p, dtype):
        """The most the method's arrays hold at once: the real planes of the transform size (the
        padded input, scipy's zero-extended copy of it, the inverse's result), the spectra (the
        transforms, their per-frequency copies, conjugates and products), at each stage."""
        s = dtype.itemsize
        cs = 2 * s                           # complex64 for float32 data, complex128 for float64
        Lh, Lw = _sizes(p)
        L, F = Lh * Lw, Lh * (Lw // 2 + 1)
        nc, nk, kc = p.N * p.C, p.N * p.K, p.K * p.Cg
        padded = nc * p.Hp * p.Wp * s if p.padding != ((0, 0), (0, 0)) else 0
        kernel = kc * (L * s + 2 * F * cs)                  # placed, its spectrum, by frequency
        if op.direction == "fwd":
            return max(padded + nc * L * s + nc * F * cs,                 # transform of x
                       nc * F * cs + kernel,
                       2 * nc * F * cs + 2 * kc * F * cs + nk * F * cs,   # the products
                       nc * F * cs + kc * F * cs + 3 * nk * F * cs + nk * L * s)  # inverse
        if op.direction == "bwd-data":
            return max(nk * L * s + nk * F * cs,                          # upsampled dy
                       nk * F * cs + kernel,
                       2 * nk * F * cs + kc * F * cs + nc * F * cs,
                       nk * F * cs + kc * F * cs + 3 * nc * F * cs + nc * L * s)
        return max(padded + nc * L * s + nc * F * cs,
                   nc * F * cs + nk * L * s + 2 * nk * F * cs,
                   2 * nc * F * cs + 2 * nk * F * cs + kc * F * cs,
                   nc * F * cs + nk * F * cs + 2 * kc * F * cs + kc * L * s)

    @exact("fwd")
    def conv2d_fwd(self, p, x, w, b):
        X = _rfft(pad_input(x, p), p)
        spec = X.shape[2:]
        Wt = _kernel_spectrum(w, p)                                 # (F, G, Kg, Cg)
        Y = np.matmul(_by_freq(X, p.groups), Wt.conj().transpose(0, 1, 3, 2))  # (F, G, N, Kg)
        y = _irfft(_from_freq(Y, spec), p)[(slice(None), slice(None)) + _output_positions(p)]
        y = y.astype(x.dtype, copy=False)
        if b is not None:
            y = y + b[:, None, None]
        return np.ascontiguousarray(y)

    @exact("bwd-data")
    def conv2d_bwd_data(self, p, dy, w):
        DY = _rfft(_upsampled_dy(dy, p), p)
        spec = DY.shape[2:]
        Wt = _kernel_spectrum(w, p)                                 # (F, G, Kg, Cg)
        DX = np.matmul(_by_freq(DY, p.groups), Wt)                   # (F, G, N, Cg)
        dxp = _irfft(_from_freq(DX, spec), p)
        return np.ascontiguousarray(crop_padding(dxp, p)).astype(dy.dtype, copy=False)

    @exact("bwd-weights")
    def conv2d_bwd_weights(self, p, dy, x):
        X = _rfft(pad_input(x, p), p)
        spec = X.shape[2:]
        DY = _by_freq(_rfft(_upsampled_dy(dy, p), p), p.groups)     # (F, G, N, Kg)
        DW = np.matmul(DY.conj().transpose(0, 1, 3, 2), _by_freq(X, p.groups))  # (F, G, Kg, Cg)
        full = _irfft(DW.transpose(1, 2, 3, 0).reshape(p.K, p.Cg, *spec), p)
        dw = full[(slice(None), slice(None)) + _taps(p)]
        return np.ascontiguousarray(dw).astype(dy.dtype, copy=False)
