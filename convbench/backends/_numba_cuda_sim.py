"""A fix for Numba's CUDA simulator: a block's threads must get one shared array, not one each.

The simulator runs each GPU thread of a block as an OS thread, and hands out `cuda.shared.array`
from a per-launch dict keyed by the calling source line: it looks the key up, and on a miss
allocates an array and stores it, without a lock. When the interpreter switches threads between
the look-up and the store, two threads of the first block both miss and each keeps an array of its
own; whatever such a thread writes to "shared" memory the others never see, and it reads
uninitialised memory in their place: wrong results, now and then, in a different case each time,
more often on a loaded machine. Here the look-up and the store happen under one lock.

Installed by the kernel modules at import when the simulator is on (numba-cuda has no fix of its
own up to 0.30.4); a version whose simulator is laid out differently is left alone.
"""
import sys
import threading

import numpy as np

_lock = threading.Lock()


def serialise_shared_allocations() -> bool:
    """Patch the simulator's shared-array allocation to be atomic; True when it is (now or
    already), False when this numba-cuda's simulator does not look as expected."""
    try:
        from numba.cuda.simulator import kernelapi  # heavy: only under the CUDA simulator
    except ImportError:
        return False
    cls = getattr(kernelapi, "FakeCUDAShared", None)
    if cls is None:
        return False
    if getattr(cls.array, "_convbench_serialised", False):
        return True
    if not isinstance(getattr(cls(0), "_allocations", None), dict):
        return False
    original = cls.array

    def array(self, shape, dtype, *args, **kwargs):
        if shape == 0 or args or kwargs.get("alignment") is not None:
            # dynamic shared memory (one buffer made with the launch) or an option the simulator
            # refuses: the original does either without the race
            return original(self, shape, dtype, *args, **kwargs)
        # keyed by the kernel's file and line, as the original keys it (a wrapper around the
        # original would put its own line in the key)
        frame = sys._getframe(1)
        key = (frame.f_code.co_filename, frame.f_lineno)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        with _lock:
            res = self._allocations.get(key)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[key] = res
        return res

    array._convbench_serialised = True
    array.__doc__ = original.__doc__
    cls.array = array
    return True
