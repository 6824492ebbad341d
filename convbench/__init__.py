"""convbench: deep-learning kernels implemented several ways, proven equal, timed on real shapes.

    import convbench as cb
    y = cb.conv2d(x, w, b, stride=1, padding=1, backend="numba-cpu")
    dx, dw, db = cb.conv2d_backward(dy, x, w, stride=1, padding=1, backend="im2col")
    cb.list_backends()

Your own kernel: subclass `cb.Backend` (a name, a description, a method per op) and
`cb.register_backend(YourBackend)`; see the README.
"""
from convbench.api import (
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    global_max_pool2d,
    global_max_pool2d_backward,
    gru,
    gru_backward,
    gru_cell,
    lstm,
    lstm_backward,
    lstm_cell,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    rnn_tanh,
    rnn_tanh_backward,
    rnn_tanh_cell,
)
from convbench.backends import (
    free_workspace,
    get_backend,
    list_backends,
    load_backend_file,
    register_backend,
    unregister_backend,
)
from convbench.backends.base import Backend
from convbench.errors import (
    BackendRegistrationError,
    BackendUnavailableError,
    ConvbenchError,
    UnknownNameError,
    UnsupportedError,
    VerificationError,
)
from convbench.memory import get_workspace_limit, set_workspace_limit, workspace_limit
from convbench.ops.matrix import conv2d_matrix
from convbench.threads import get_threads, set_threads

__version__ = "0.1.0"

__all__ = [
    # convolution
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward", "conv2d_matrix",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d",
    "conv_transpose1d_backward",
    # pooling
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward", "global_max_pool2d",
    "global_max_pool2d_backward", "max_pool1d", "max_pool1d_backward", "avg_pool1d",
    "avg_pool1d_backward",
    # recurrent cells
    "lstm", "lstm_backward", "lstm_cell", "gru", "gru_backward", "gru_cell",
    "rnn_tanh", "rnn_tanh_backward", "rnn_tanh_cell",
    # backends, your own backends, threads and scratch memory
    "list_backends", "get_backend", "free_workspace", "set_threads", "get_threads",
    "set_workspace_limit", "get_workspace_limit", "workspace_limit",
    "Backend", "register_backend", "unregister_backend", "load_backend_file",
    # errors
    "ConvbenchError", "UnsupportedError", "BackendUnavailableError", "UnknownNameError",
    "VerificationError", "BackendRegistrationError",
    "__version__",
]
