"""A user's own convolution kernel in the race (the README's example, run by tests/test_plugins.py).

    convbench run --backend-file examples/numba_backend.py --backends my-numba,im2col,torch
"""
import numba
import numpy as np

import convbench as cb


@numba.njit(parallel=True, cache=True)
def direct_conv(xp, w, y, sh, sw, dh, dw):
    N, K, P, Q = y.shape
    for nk in numba.prange(N * K):                 # one output plane per task
        n, k = nk // K, nk % K
        for c, r, s in np.ndindex(w.shape[1:]):    # each tap adds a strided window of xp
            y[n, k] += w[k, c, r, s] * xp[n, c, r * dh:r * dh + (P - 1) * sh + 1:sh,
                                          s * dw:s * dw + (Q - 1) * sw + 1:sw]


class MyNumbaConv(cb.Backend):
    name = "my-numba"
    description = "direct convolution, one Numba loop nest"
    dtypes = (np.float32,)
    auto_candidate = True                          # let backend="auto" choose it where it wins

    def unsupported(self, op, problem, dtype):
        return f"groups={problem.groups} (1 only)" if problem.groups != 1 else None

    def conv2d_fwd(self, p, x, w, b):
        (pt, pb), (pl, pr) = p.padding
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        y = np.zeros(p.y_shape, dtype=x.dtype)
        direct_conv(xp, w, y, *p.stride, *p.dilation)
        return y if b is None else y + b[:, None, None]
