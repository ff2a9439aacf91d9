"""The threads of a pass (see threads.pxd): one module holds the helper threads and the caller's
BLAS thread setting, whatever the cell."""
import ctypes
import os
import threading

import scipy.linalg.cython_blas

from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, NOWAIT_LOCK,
                               WAIT_LOCK)
from libc.stdint cimport int64_t, uintptr_t

from fastrnn._kernels.cpu cimport cpu_relax, fp_mode_fast_enter

cdef extern from "pythread.h":
    unsigned long PyThread_start_new_thread(void (*)(void *) noexcept nogil, void *) nogil

cdef extern from "<unistd.h>" nogil:
    long syscall(long number, ...)

cdef extern from "<sys/syscall.h>":
    long SYS_gettid

cdef enum:
    # A pass uses more than one thread only from PARALLEL_MACS multiply-adds on, below which
    # handing parts out costs more than it saves, and gives each thread at least MIN_ROWS batch
    # rows (one register block of matmul_packed).
    MIN_ROWS = 8
    PARALLEL_MACS = 1 << 24
    SPIN_TRIES = 2000  # tries of a lock before blocking on it, see acquire


# The per-step products are small (B rows) and sequential. Multi-threaded BLAS would cost a
# wake-up and a barrier per step, and OpenBLAS waits by spinning: when another process holds a core
# of a busy machine, a step waits a whole time slice for a descheduled worker. So BLAS runs
# single-threaded for the duration of a pass, and the parallelism is ours, at the coarsest grain:
# the sequences of a batch are independent, so each thread runs the whole time loop for a slice
# of the batch rows, with no synchronisation between steps; the whole-sequence products are split
# by rows of their result. Threads meet only at the end of a phase. A pass uses as many threads as
# the caller lets the BLAS behind scipy.linalg.cython_blas use (whatever library it is: the setting
# is read and set through threadpoolctl, so threadpool_limits limits the passes too), and that
# setting is restored when the last pass running ends.

ctypedef void (*set_threads_t)(int) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil

cdef enum:
    MAX_BLAS = 4  # BLAS libraries whose setting is reached through their C functions

# The BLAS behind cython_blas: OpenBLAS on its own threads through its C functions (a pass reads
# the setting, so this costs nanoseconds, not the microseconds of a Python call), any other
# library through its threadpoolctl controller.
cdef get_threads_t _blas_getters[MAX_BLAS]
cdef set_threads_t _blas_setters[MAX_BLAS]
cdef int _blas_fast = 0          # entries of _blas_getters/_blas_setters
cdef object _blas_slow = ()      # threadpoolctl controllers of the other libraries
cdef int _blas_threads = 1       # the caller's setting while passes run
cdef bint _blas_changed = False  # whether pass_begin set the BLAS to one thread
cdef int _passes_running = 0     # changed only with the GIL held
cdef int _last_parts = 1         # threads of the last pass, for tests
cdef object _cpus = None         # the CPUs this process may run on


def _blas_controllers():
    """threadpoolctl's controllers of the BLAS that scipy.linalg.cython_blas calls: those loaded
    from scipy's own folders (its bundled OpenBLAS), else every BLAS of the process (SciPy linked
    to a system MKL, Accelerate, BLIS or OpenBLAS shares it with NumPy)."""
    import scipy
    from threadpoolctl import ThreadpoolController
    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    scipy_dir = os.path.dirname(os.path.realpath(scipy.__file__))
    own = [lib for lib in blas if os.path.realpath(lib.filepath).startswith(scipy_dir)]
    return tuple(own or blas)


def _openblas_functions(lib):
    """C addresses (get, set) of the thread setting of an OpenBLAS controller on OpenBLAS's own
    threads, or None (another library, or OpenMP threads, whose setting is per calling thread)."""
    if lib.internal_api != "openblas" or getattr(lib, "threading_layer", None) == "openmp":
        return None
    get_symbol = getattr(lib, "_get_symbol", None)  # threadpoolctl's symbol lookup with affixes
    if get_symbol is None:
        return None
    getter, setter = get_symbol("openblas_get_num_threads"), get_symbol("openblas_set_num_threads")
    if getter is None or setter is None:
        return None
    return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (getter, setter))


def _bind_blas(controllers):
    """Reach the thread setting of `controllers` (see _blas_controllers) in the passes."""
    global _blas_fast, _blas_slow
    _blas_fast, slow = 0, []
    for lib in controllers:
        functions = _openblas_functions(lib)
        if functions is None or _blas_fast == MAX_BLAS:
            slow.append(lib)
            continue
        _blas_getters[_blas_fast] = <get_threads_t><uintptr_t>functions[0]
        _blas_setters[_blas_fast] = <set_threads_t><uintptr_t>functions[1]
        _blas_fast += 1
    _blas_slow = tuple(slow)


def _blas_thread_count():
    """The thread count the caller lets the passes use: the BLAS setting (at least 1)."""
    cdef int i, count = 1
    for i in range(_blas_fast):
        count = max(count, _blas_getters[i]())
    for lib in _blas_slow:
        count = max(count, lib.get_num_threads() or 1)
    return count


def _set_blas_threads(int count):
    cdef int i
    for i in range(_blas_fast):
        _blas_setters[i](count)
    for lib in _blas_slow:
        lib.set_num_threads(count)


_bind_blas(_blas_controllers())


def _cpu_count():
    global _cpus
    if _cpus is None:
        try:
            _cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            _cpus = os.cpu_count() or 1
    return _cpus


def _running_threads(exclude):
    """How many threads of this process, besides those in `exclude` (native ids), are running or
    runnable now (state R in /proc/self/task/*/stat): a foreign thread pool spinning after its
    call, such as NumPy's OpenBLAS after a matmul. 0 where /proc is not available."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    running = 0
    for tid in tids:
        if int(tid) in exclude:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as stat:
                text = stat.read()
        except OSError:  # the thread ended meanwhile
            continue
        end = text.rfind(b")")  # the state follows the command name, which may hold spaces
        if text[end + 2:end + 3] == b"R":
            running += 1
    return running


def _choose_parts(int wanted, int cpus, int foreign_running):
    """Threads for a pass that could use `wanted`, on `cpus` CPUs of which `foreign_running`
    threads of this process outside the pass hold some: a thread that has no core of its own holds
    all the others back at the end of each phase, so the pass takes only the free CPUs (at least
    its own thread)."""
    return max(1, min(wanted, cpus - foreign_running))


def _last_pass_threads():
    """The number of threads the last pass ran on (for tests)."""
    return _last_parts


cdef int pass_begin(int rows, int64_t macs) except -1:
    """Before `with nogil`: single-threaded BLAS; returns the number of threads for the pass."""
    global _passes_running, _blas_threads, _blas_changed
    threads = _blas_thread_count() if _passes_running == 0 else _blas_threads
    parts = 1 if macs < PARALLEL_MACS else max(1, min(threads, rows // MIN_ROWS, MAX_PARTS))
    if parts > 1:
        parts = _choose_parts(parts, _cpu_count(), _running_threads(_own_threads()))
    if _passes_running == 0:
        _blas_threads, _blas_changed = threads, threads != 1
        if _blas_changed:
            _set_blas_threads(1)
    _passes_running += 1
    return parts


cdef void pass_end() noexcept:
    """After `with nogil`: give the caller back its BLAS thread count when the last pass ends."""
    global _passes_running
    _passes_running -= 1
    if _passes_running == 0 and _blas_changed:
        _set_blas_threads(_blas_threads)


cdef struct Helper:
    # A helper thread, started once and then parked on `start` between the parts it runs.
    part_fn fn
    void *work
    int part, parts
    PyThread_type_lock start  # released to hand the helper its part
    PyThread_type_lock done   # held while the helper works
    long tid                  # its native thread id, once it runs


# Starting a thread per phase would cost a thread creation and a page-faulting stack each time.
# So the helpers are started on first use and then wait for work on a lock for the life of the
# process. They run only our parts, so they keep flush-to-zero on. One pass at a time has them; a
# pass that finds them taken runs in its own thread alone.
cdef Helper _helpers[MAX_PARTS]
cdef int _helpers_started = 1  # _helpers[1 .. _helpers_started - 1] are running
cdef bint _helpers_taken = False  # changed only with the GIL held


def _own_threads():
    """Native ids of the threads a pass runs on: the caller's and the helpers'."""
    return {threading.get_native_id()} | {_helpers[i].tid for i in range(1, _helpers_started)}


def _after_fork_in_child():
    """In the child of a fork: the helpers were not copied into it (the child starts its own),
    nor were the threads of the passes then running, which will not end there: the child has no
    pass running, and gets back the BLAS thread setting that those passes had replaced."""
    global _helpers_started, _helpers_taken, _passes_running
    _helpers_started, _helpers_taken = 1, False
    if _passes_running > 0 and _blas_changed:
        _set_blas_threads(_blas_threads)
    _passes_running = 0


# Windows has no fork, and no os.register_at_fork.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    helper.tid = syscall(SYS_gettid)
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
    global _helpers_started, _helpers_taken, _last_parts
    team.parts = _last_parts = 1
    if parts < 2 or _helpers_taken:
        return
    while _helpers_started < parts and _start_helper(&_helpers[_helpers_started]):
        _helpers_started += 1
    team.parts = _last_parts = min(parts, _helpers_started)
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
