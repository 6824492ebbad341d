"""numba-cpu: parallel compiled kernels (Numba) for every op, one module per op family:
`conv` (a direct convolution on channel-blocked layouts, convbench.kernels.conv), `pool` and
`rnn`."""
from __future__ import annotations

import importlib.util

from convbench.backends.base import Backend
from convbench.backends.nonfinite import exact
from convbench.backends.numba_cpu import conv, pool, rnn
from convbench.kernels.conv import WeightCache


class NumbaCPUBackend(Backend):
    name = "numba-cpu"
    auto_candidate = True
    description = ("parallel compiled direct convolution: register-tile kernels on "
                   "channel-blocked layouts (Numba)")

    def __init__(self):
        super().__init__()
        # the weights in the kernels' layout, kept while unchanged; freed with the workspace
        self.weights = WeightCache()
        self.workspace.caches.append(self.weights)

    def unavailable_reason(self):
        if importlib.util.find_spec("numba") is None:  # pragma: no cover - numba is a dependency
            return "numba is not installed"
        return None

    def workspace_bytes(self, op, p, dtype):
        s = dtype.itemsize
        if op.family == "conv2d":
            return conv.workspace_bytes(p, op.direction, dtype)
        if op.family.endswith("pool2d"):
            return p.P * p.Q * (8 + s) if op.family == "avg_pool2d" else 0   # the divisors
        return rnn.workspace_bytes(p, op.direction, dtype)

    # --- convolution ------------------------------------------------------------------------------
    def conv2d_fwd(self, p, x, w, b):
        with self.workspace.lease() as ws:
            return conv.forward(ws, self.weights, p, x, w, b)

    # The input gradient's padded layout and the weight gradient's wide one multiply zeros that
    # are not products of the reference by the weights and the input: NaN and infinity there go
    # through `exact` (backends.nonfinite).
    @exact("bwd-data", check=(1,))
    def conv2d_bwd_data(self, p, dy, w):
        with self.workspace.lease() as ws:
            return conv.backward_data(ws, self.weights, p, dy, w)

    @exact("bwd-weights", check=(1,))
    def conv2d_bwd_weights(self, p, dy, x):
        with self.workspace.lease() as ws:
            return conv.backward_weights(ws, p, dy, x)

    # --- pooling ----------------------------------------------------------------------------------
    def max_pool2d_fwd(self, p, x):
        return pool.max_forward(p, x)

    def max_pool2d_bwd(self, p, dy, x):
        return pool.max_backward(p, dy, x)

    def avg_pool2d_fwd(self, p, x):
        return pool.avg_forward(p, x)

    def avg_pool2d_bwd(self, p, dy, x):
        return pool.avg_backward(p, dy, x)

    # --- recurrent cells: BLAS GEMMs around fused gate kernels ------------------------------------
    def lstm_fwd(self, p, *args):
        return rnn.forward(p, *args)

    def gru_fwd(self, p, *args):
        return rnn.forward(p, *args)

    def rnn_tanh_fwd(self, p, *args):
        return rnn.forward(p, *args)

    def lstm_bwd(self, p, *args):
        return rnn.backward(p, *args)

    def gru_bwd(self, p, *args):
        return rnn.backward(p, *args)

    def rnn_tanh_bwd(self, p, *args):
        return rnn.backward(p, *args)
