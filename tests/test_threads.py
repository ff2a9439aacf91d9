"""The threads of a pass (fastrnn/_kernels/threads.pyx): the BLAS thread setting read and given
back through threadpoolctl, and the choice of how many threads a pass runs on."""
import hashlib
import os
import threading

import numpy as np
import pytest
import threadpoolctl

from fastrnn._kernels import threads
from cases import kernels, make_params

# LSTM, float64: far above the multiply-adds from which a pass uses threads (PARALLEL_MACS).
T, B, D, H = 40, 32, 64, 64


def run_long_pass():
    rng = np.random.default_rng(0)
    params = make_params("lstm", rng, np.float64, D, H)
    state0 = (np.zeros((B, H)), np.zeros((B, H)))
    kernels("lstm").forward(rng.standard_normal((T, B, D)), state0, params, None, False)
    return threads._last_pass_threads()


@pytest.fixture
def no_foreign_threads(monkeypatch):
    """A process where nothing else runs, on 4 CPUs: the pass is limited by the BLAS setting only."""
    monkeypatch.setattr(threads, "_running_threads", lambda exclude: 0)
    monkeypatch.setattr(threads, "_cpu_count", lambda: 4)


def blas_or_skip():
    blas = threads._blas_controllers()
    if not blas:
        pytest.skip("threadpoolctl finds no BLAS behind scipy")
    return blas


def test_threadpool_limits_of_one_makes_passes_single_threaded(no_foreign_threads):
    blas_or_skip()
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert run_long_pass() == 1
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert run_long_pass() == 2


def test_a_foreign_running_thread_takes_a_thread_from_the_pass(monkeypatch):
    blas_or_skip()
    monkeypatch.setattr(threads, "_running_threads", lambda exclude: 1)
    monkeypatch.setattr(threads, "_cpu_count", lambda: 2)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert run_long_pass() == 1


def test_the_blas_setting_is_restored_after_a_pass():
    blas = blas_or_skip()
    for count in (1, 2, 3):
        with threadpoolctl.threadpool_limits(count, user_api="blas"):
            run_long_pass()
            assert [lib.get_num_threads() for lib in blas] == [count] * len(blas)


def test_the_controllers_are_the_blas_of_scipy():
    blas = blas_or_skip()
    assert all(lib.user_api == "blas" for lib in blas)
    bundled = [lib for lib in threadpoolctl.threadpool_info() if "scipy.libs" in lib["filepath"]]
    if bundled:  # a wheel's bundled OpenBLAS: that library only, not NumPy's
        assert [lib.filepath for lib in blas] == [info["filepath"] for info in bundled]


@pytest.mark.parametrize(("wanted", "cpus", "foreign", "expected"), [
    (2, 2, 0, 2),  # nothing else runs: every thread the BLAS setting allows
    (2, 2, 1, 1),  # NumPy's OpenBLAS worker spins after its call: one core left
    (2, 2, 2, 1),  # no core left: still the caller's thread
    (4, 8, 3, 4),
    (4, 8, 5, 3),
    (1, 8, 0, 1),
])
def test_choose_parts(wanted, cpus, foreign, expected):
    assert threads._choose_parts(wanted, cpus, foreign) == expected


def test_running_threads_sees_a_busy_thread_without_the_gil():
    data = b"x" * (64 << 20)
    busy = threading.Thread(target=lambda: [hashlib.sha256(data).digest() for _ in range(20)])
    busy.start()
    seen = []
    while busy.is_alive():  # hashlib releases the GIL: the thread is running or runnable
        seen.append(threads._running_threads(threads._own_threads()))
    busy.join()
    assert max(seen) >= 1


def test_own_threads_are_excluded():
    run_long_pass()
    own = threads._own_threads()
    assert threading.get_native_id() in own
    assert threads._running_threads(own | {int(t) for t in os.listdir("/proc/self/task")}) == 0
