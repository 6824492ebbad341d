"""Scratch memory: owned by each backend, reused across calls, bounded, freeable, thread-safe."""
import threading

import numpy as np

import convbench as cb
from convbench.backends import get_backend
from convbench.backends.scratch import Workspace


def test_a_lease_reuses_the_last_calls_arrays():
    ws = Workspace()
    with ws.lease() as a:
        first = a.take((4, 5), np.float32, zero=False)
        first[...] = 7
    with ws.lease() as b:
        again = b.take((4, 5), np.float32)
        assert again is first and not again.any()            # zeroed unless asked otherwise
    assert ws.nbytes == first.nbytes


def test_arrays_of_one_shape_in_one_call_are_distinct():
    ws = Workspace()
    with ws.lease() as lease:
        a = lease.take((8,), np.float64)
        b = lease.take((8,), np.float64)
        assert a is not b
        with ws.lease() as inner:                            # a nested call, same shape
            c = inner.take((8,), np.float64)
            assert c is not a and c is not b
        assert ws.nbytes == 3 * a.nbytes


def test_the_pool_is_bounded_and_freeable():
    ws = Workspace(max_bytes=1000)
    with ws.lease() as lease:
        lease.take((100,), np.float32)                       # 400 bytes
        lease.take((200,), np.float32)                       # 800 bytes: over the bound together
        lease.take((10_000,), np.float32)                    # larger than the bound on its own
    assert ws.nbytes == 800                                  # the oldest dropped first
    assert ws.free() == 800 and ws.nbytes == 0


def test_threads_never_share_an_array():
    ws = Workspace()
    errors = []

    def work(k):
        for _ in range(200):
            with ws.lease() as lease:
                a = lease.take((64,), np.float64, zero=False)
                a[...] = k
                if not (a == k).all():
                    errors.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and ws.nbytes <= 6 * 64 * 8


def test_free_workspace_releases_what_the_backends_keep(rng):
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = cb.conv2d(x, w, padding=1, backend="numba-cpu")
    kept = get_backend("numba-cpu").workspace.nbytes
    assert kept > 0
    assert cb.free_workspace() >= kept
    assert get_backend("numba-cpu").workspace.nbytes == 0
    np.testing.assert_array_equal(cb.conv2d(x, w, padding=1, backend="numba-cpu"), y)
