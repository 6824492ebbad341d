"""numba-cpu convolution: the direct convolution of `convbench.kernels.conv`, all directions.

Inputs and outputs stay NCHW; each call converts them to and from the channel-blocked layout
its register-tile kernels read (compiled, parallel), into arrays borrowed from the backend's
workspace (`ws`, a backends.scratch.Lease). The weights are laid out once per weight array and
kept in the backend's WeightCache while unchanged; results are always fresh arrays.
"""
from __future__ import annotations

from convbench.backends.scratch import Lease
from convbench.kernels import conv as direct


def workspace_bytes(p, direction: str, dtype) -> int:
    """Peak scratch bytes of forward, backward_data or backward_weights on p."""
    return direct.workspace_bytes(p, direction, dtype)


def forward(ws: Lease, cache: direct.WeightCache, p, x, w, b):
    """y (N, K, P, Q) = conv2d(x, w) + b."""
    return direct.forward(p, x, w, b, ws=ws, cache=cache)


def backward_data(ws: Lease, cache: direct.WeightCache, p, dy, w):
    """dx (N, C, H, W) from dy (N, K, P, Q) and w."""
    return direct.input_grad(p, dy, w, ws=ws, cache=cache)


def backward_weights(ws: Lease, p, dy, x):
    """dw (K, C/groups, R, S) from dy (N, K, P, Q) and x."""
    return direct.weight_grad(p, dy, x, ws=ws)
