"""convbench: deep-learning kernels implemented several ways, proven equal, timed on real shapes.

    import convbench as cb
    y = cb.conv2d(x, w, b, stride=1, padding=1, backend="numba-cpu")
    dx, dw, db = cb.conv2d_backward(dy, x, w, stride=1, padding=1, backend="im2col")
    cb.list_backends()
"""
import os as _os

# Numba's OpenMP workers and OpenBLAS's pthreads both spin after each parallel region; on a small
# machine they then starve each other, and code that alternates BLAS and Numba kernels (an RNN
# step, a training step) ran 30x slower (8 ms instead of 0.3 ms per LSTM step, measured here).
# Idle OpenMP threads sleep instead when this is set before the runtime starts; set it yourself
# to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS's threads spin for 2**28 cycles (about 0.1 s) after each call before they sleep, so a
# Numba kernel that follows a GEMM (im2col's unfold, Winograd's transforms, numba-cpu) shares the
# cores with them: an unfold took 5.6 ms instead of 2.6 ms right after a GEMM. 2**20 cycles
# (about 0.3 ms) still bridges back-to-back GEMMs (a batched matmul, an RNN step). OpenBLAS reads
# this when it loads, so it counts only where convbench is imported before NumPy (the CLI does).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

from convbench.api import (avg_pool2d, avg_pool2d_backward, conv1d, conv1d_backward,  # noqa: F401
                           conv2d, conv2d_backward, global_avg_pool2d,
                           global_avg_pool2d_backward, gru, gru_backward, gru_cell, lstm,
                           lstm_backward, lstm_cell, max_pool2d, max_pool2d_backward, rnn_tanh,
                           rnn_tanh_backward, rnn_tanh_cell)
from convbench.backends import get_backend, list_backends  # noqa: F401
from convbench.errors import (BackendUnavailableError, ConvbenchError, UnknownNameError,  # noqa: F401
                              UnsupportedError, VerificationError)
from convbench.ops.matrix import conv2d_matrix  # noqa: F401

__version__ = "0.1.0"
