"""The threads of a pass (see threads.pxd): one module holds the helper threads and the caller's
BLAS thread setting, whatever the cell."""
import ctypes
import os

import scipy.linalg.cython_blas

from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, NOWAIT_LOCK,
                               WAIT_LOCK)
from libc.stdint cimport int64_t, uintptr_t

from fastrnn._kernels.cpu cimport cpu_relax, fp_mode_fast_enter

cdef extern from "pythread.h":
    unsigned long PyThread_start_new_thread(void (*)(void *) noexcept nogil, void *) nogil

cdef enum:
    # A pass uses more than one thread only from PARALLEL_MACS multiply-adds on, below which
    # handing parts out costs more than it saves, and gives each thread at least MIN_ROWS batch
    # rows (one register block of matmul_packed).
    MIN_ROWS = 8
    PARALLEL_MACS = 1 << 24
    SPIN_TRIES = 2000  # tries of a lock before blocking on it, see acquire


# The per-step products are small (B rows) and sequential. Multi-threaded OpenBLAS would cost a
# wake-up and a barrier per step, and it waits by spinning: when another process holds a core of
# a busy machine, a step waits a whole time slice for a descheduled worker. So BLAS runs
# single-threaded for the duration of a pass, and the parallelism is ours, at the coarsest grain:
# the sequences of a batch are independent, so each thread runs the whole time loop for a slice
# of the batch rows, with no synchronisation between steps; the whole-sequence products are split
# by rows of their result. Threads meet only at the end of a phase. A pass uses as many threads as
# the caller lets BLAS use (OpenBLAS's setting, which threadpoolctl limits); the setting is
# reached through scipy's bundled library (the one cython_blas calls), and restored when the last
# pass running ends.

ctypedef void (*set_threads_t)(int) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil

cdef set_threads_t _blas_set_threads = NULL
cdef get_threads_t _blas_get_threads = NULL
cdef int _blas_threads = 1    # the caller's setting while passes run
cdef int _passes_running = 0  # changed only with the GIL held


def _openblas_thread_functions():
    """Addresses of (set_num_threads, get_num_threads) of the BLAS behind cython_blas, or None."""
    try:
        library = ctypes.CDLL(scipy.linalg.cython_blas.__file__)
    except OSError:
        return None
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("", "64_"):
            try:
                setter = getattr(library, f"{prefix}_set_num_threads{suffix}")
                getter = getattr(library, f"{prefix}_get_num_threads{suffix}")
            except AttributeError:
                continue
            return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (setter, getter))
    return None


_addresses = _openblas_thread_functions()
if _addresses is not None:
    _blas_set_threads = <set_threads_t><uintptr_t>_addresses[0]
    _blas_get_threads = <get_threads_t><uintptr_t>_addresses[1]


cdef int pass_begin(int rows, int64_t macs) noexcept:
    """Before `with nogil`: single-threaded BLAS; returns the number of threads for the pass."""
    global _passes_running, _blas_threads
    if _passes_running == 0 and _blas_get_threads != NULL:
        _blas_threads = _blas_get_threads()
        _blas_set_threads(1)
    _passes_running += 1
    if _blas_get_threads == NULL or macs < PARALLEL_MACS:
        return 1
    return max(1, min(_blas_threads, rows // MIN_ROWS, MAX_PARTS))


cdef void pass_end() noexcept:
    """After `with nogil`: give the caller back its BLAS thread count when the last pass ends."""
    global _passes_running
    _passes_running -= 1
    if _passes_running == 0 and _blas_set_threads != NULL:
        _blas_set_threads(_blas_threads)


cdef struct Helper:
    # A helper thread, started once and then parked on `start` between the parts it runs.
    part_fn fn
    void *work
    int part, parts
    PyThread_type_lock start  # released to hand the helper its part
    PyThread_type_lock done   # held while the helper works


# Starting a thread per phase would cost a thread creation and a page-faulting stack each time.
# So the helpers are started on first use and then wait for work on a lock for the life of the
# process. They run only our parts, so they keep flush-to-zero on. One pass at a time has them; a
# pass that finds them taken runs in its own thread alone.
cdef Helper _helpers[MAX_PARTS]
cdef int _helpers_started = 1  # _helpers[1 .. _helpers_started - 1] are running
cdef bint _helpers_taken = False  # changed only with the GIL held


def _forget_helpers():
    """In the child of a fork: the helpers were not copied into it (the child starts its own)."""
    global _helpers_started, _helpers_taken
    _helpers_started, _helpers_taken = 1, False


# Windows has no fork, and no os.register_at_fork.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


cdef void acquire(PyThread_type_lock lock) noexcept nogil:
    """Take `lock`, trying SPIN_TRIES times before blocking: the threads of a phase end within
    microseconds of each other, sooner than a thread parked in the kernel wakes up. Bounded, so
    that a thread waiting on a descheduled one soon gives its core up."""
    cdef int i
    for i in range(SPIN_TRIES):
        if PyThread_acquire_lock(lock, NOWAIT_LOCK):
            return
        cpu_relax()
    PyThread_acquire_lock(lock, WAIT_LOCK)


cdef void _helper_main(void *arg) noexcept nogil:
    cdef Helper *helper = <Helper *>arg
    fp_mode_fast_enter()
    while True:
        acquire(helper.start)
        helper.fn(helper.work, helper.part, helper.parts)
        PyThread_release_lock(helper.done)


cdef bint _start_helper(Helper *helper) noexcept:
    """Start a helper parked on its `start` lock; False (nothing started) should that fail."""
    helper.start = PyThread_allocate_lock()
    helper.done = PyThread_allocate_lock()
    if helper.start != NULL and helper.done != NULL:
        PyThread_acquire_lock(helper.start, WAIT_LOCK)
        if PyThread_start_new_thread(_helper_main, helper) != <unsigned long>-1:
            return True
    if helper.start != NULL:
        PyThread_free_lock(helper.start)
    if helper.done != NULL:
        PyThread_free_lock(helper.done)
    return False


cdef void team_init(Team *team, int parts) noexcept:
    """A team of up to `parts` threads: this one and parts - 1 helpers (fewer should the helpers be
    taken by another pass or fail to start)."""
    global _helpers_started, _helpers_taken
    team.parts = 1
    if parts < 2 or _helpers_taken:
        return
    while _helpers_started < parts and _start_helper(&_helpers[_helpers_started]):
        _helpers_started += 1
    team.parts = min(parts, _helpers_started)
    _helpers_taken = team.parts > 1


cdef void team_free(Team *team) noexcept:
    global _helpers_taken
    if team.parts > 1:
        _helpers_taken = False
    team.parts = 1


cdef void team_run(Team *team, part_fn fn, void *work) noexcept nogil:
    """fn(work, part, parts) for every part: part 0 in this thread, the others in the helpers;
    returns when all are done."""
    cdef int part, parts = team.parts
    cdef Helper *helper
    for part in range(1, parts):
        helper = &_helpers[part]
        helper.fn, helper.work, helper.part, helper.parts = fn, work, part, parts
        PyThread_acquire_lock(helper.done, WAIT_LOCK)
        PyThread_release_lock(helper.start)
    fn(work, 0, parts)
    for part in range(1, parts):
        acquire(_helpers[part].done)
        PyThread_release_lock(_helpers[part].done)
