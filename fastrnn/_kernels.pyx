"""Compiled cell kernels: one direction of one layer, forward and backward.

Implements the contract of fastrnn/_backends.py for "rnn", "lstm" and "gru". This layer owns the
buffers and runs the time loop; the per-step gate arithmetic is fused C (src_c/gates_impl.h), the
whole-sequence matrix products go to BLAS through scipy.linalg.cython_blas, and so do the per-step
products, unless the CPU runs the packed kernel of src_c/matmul_impl.h (see "Matrix products").
A pass allocates everything up front, then runs entirely without the GIL.

Buffers, in time order t = 0 .. T-1 whatever the direction: `gates` (T, B, G*H) holds first the
input projection x.W_ihᵀ of all T*B rows (one product), then, step by step, the activated gates.
States live in (T+1, B, H) sequences `hs` (and `cs`) with the initial state in the slot before
the first step processed: slot t (forward) or t+1 (reverse) is the state before step t, and slot
t+1 (forward) or t (reverse) the state after it. So `hs` read from slot `reverse` on is the
h_{t-1} of every step, which the W_hh gradient needs as one product.

A pass runs in phases: whole-sequence products (split by rows of their result) and the time
loop (split by batch rows), each phase shared among the pass's threads (see "Threads").
"""
import ctypes
import os

import numpy as np
import scipy.linalg.cython_blas

from cpython.buffer cimport PyBuffer_FillInfo
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, NOWAIT_LOCK,
                               WAIT_LOCK)
from cython cimport floating
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from "pythread.h":
    unsigned long PyThread_start_new_thread(void (*)(void *) noexcept nogil, void *) nogil

cdef enum:
    # Threads: at most MAX_PARTS, each with at least MIN_ROWS batch rows (one block of
    # matmul_packed), and only for passes of at least PARALLEL_MACS multiply-adds, from which on
    # two threads were measured faster (LSTM (50, 16, 64, 64) forward+backward: 1.8 -> 1.45 ms).
    MAX_PARTS = 8
    MIN_ROWS = 8
    PARALLEL_MACS = 1 << 24
    MAX_PRODUCTS = 6
    # Whole-sequence products of fewer rows keep BLAS (see pack_last): at 50 rows packing the
    # right operand took longer than the product; from 400-800 rows on matmul_packed is faster.
    PACKED_MIN_ROWS = 512
    # Weight gradients whose row of A and row of B together take at most this many bytes run in
    # matmul_tn (AVX-512), wider ones in BLAS. matmul_tn reads its operands in place, which saves
    # BLAS's packing while they stay in cache: forward+backward 4-15 % faster for products of
    # (M + N) <= 512 floats, even at 640, 2-7 % slower from 1280 on.
    OUTER_MAX_BYTES = 640 * 4
    # Weight gradients are split among threads by the rows they sum over (see Product) from this
    # many rows on; over fewer, adding up the threads' partial sums would cost about as much as
    # the product (two threads were slower than one at T*B = 16, D = H = 1024), so their threads
    # split the rows of C instead.
    SPLIT_SUM_MIN_ROWS = 512
    SPIN_TRIES = 2000  # tries of a lock before blocking on it, see acquire


# --- Threads ---------------------------------------------------------------------------------
# The per-step products are small (B rows) and sequential. Multi-threaded OpenBLAS would cost a
# wake-up and a barrier per step, and it waits by spinning: when another process holds a core
# of a shared 2-core machine, a step waits for the descheduled worker for a whole time slice
# (measured here: 0.3 ms steps taking 15-30 ms, passes 10-20x slower; even the whole-sequence
# products, whose long K = T*B means many internal barriers, ran 8x slower). So BLAS runs
# single-threaded for the duration of a pass, and the parallelism is ours, at the coarsest
# grain: the sequences of a batch are independent, so each thread runs the whole time loop for
# a slice of the batch rows, with no synchronisation between steps; the whole-sequence products
# are split by rows of their result. Threads meet only at the end of a phase (two per pass) and
# wait there on a lock, not spinning, so a busy machine slows a pass down in proportion to the
# CPU it takes, no more. A pass uses as many threads as the caller lets BLAS use (OpenBLAS's
# setting, which threadpoolctl limits); the setting is reached through scipy's bundled library
# (the one cython_blas calls), and restored when the last pass running ends.

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


cdef int _pass_begin(int B, int64_t macs) noexcept:
    """Before `with nogil`: single-threaded BLAS; returns the number of threads for the pass."""
    global _passes_running, _blas_threads
    if _passes_running == 0 and _blas_get_threads != NULL:
        _blas_threads = _blas_get_threads()
        _blas_set_threads(1)
    _passes_running += 1
    if _blas_get_threads == NULL or macs < PARALLEL_MACS:
        return 1
    return max(1, min(_blas_threads, B // MIN_ROWS, MAX_PARTS))


cdef void _pass_end() noexcept:
    """After `with nogil`: give the caller back its BLAS thread count when the last pass ends."""
    global _passes_running
    _passes_running -= 1
    if _passes_running == 0 and _blas_set_threads != NULL:
        _blas_set_threads(_blas_threads)


ctypedef void (*part_fn)(void *work, int part, int parts) noexcept nogil


cdef struct Helper:
    # A helper thread, started once and then parked on `start` between the parts it runs.
    part_fn fn
    void *work
    int part, parts
    PyThread_type_lock start  # released to hand the helper its part
    PyThread_type_lock done   # held while the helper works


cdef struct Team:
    # parts - 1 helpers (_helpers[1 .. parts - 1]) and the calling thread, which runs part 0
    int parts


# Starting a thread per phase cost ~50 us and a page-faulting stack each time (four phases per
# forward+backward), which kept small passes single-threaded and showed as system time. So the
# helpers are started on first use and then wait for work on a lock (blocked in the kernel, not
# spinning) for the life of the process. They run only our parts, so they keep flush-to-zero on.
# One pass at a time has them; a pass that finds them taken runs in its own thread alone.
cdef Helper _helpers[MAX_PARTS]
cdef int _helpers_started = 1  # _helpers[1 .. _helpers_started - 1] are running
cdef bint _helpers_taken = False  # changed only with the GIL held


def _forget_helpers():
    """In the child of a fork: the helpers were not copied into it (the child starts its own)."""
    global _helpers_started, _helpers_taken
    _helpers_started, _helpers_taken = 1, False


os.register_at_fork(after_in_child=_forget_helpers)


cdef void acquire(PyThread_type_lock lock) noexcept nogil:
    """Take `lock`, trying SPIN_TRIES times before blocking: the two phases of a pass, and the
    threads of a phase, end within microseconds of each other, and waking a thread parked in the
    kernel takes longer than that (the scheduler was ~9 % of a pass at (50, 16, 64, 64); with the
    spin, forward+backward there went from 1.46 to 1.10 ms (LSTM), 1.25 to 0.86 ms (GRU)). Bounded
    (2000 tries, ~30 us here), so that a thread waiting on a descheduled one soon gives its core
    up."""
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


cdef inline int part_start(int part, int parts, int n) noexcept nogil:
    """First of the indices range(n) that part `part` of `parts` takes."""
    return <int>(<int64_t>part * n // parts)


# --- Buffers ---------------------------------------------------------------------------------
# A pass allocates its buffers and results afresh (several times T*B*H values). From malloc,
# memory of that size comes straight from the kernel and goes back to it when freed, so every
# pass page-faults through all its buffers again: measured here, 30-50% of a forward+backward at
# (T, B, D, H) = (50, 16, 64, 64), 10-35% at the larger shapes, most of it system time. So the
# large arrays of a pass live in blocks that, when their last array goes, wait in a cache for the
# next pass to ask for the same size, up to CACHED_BYTES in all (past that, the idle blocks are
# freed and the cache starts over). Such an array is an ordinary ndarray whose `base` is its
# block. Blocks are taken and given back with the GIL held.

cdef enum:
    CACHED_MIN_BYTES = 1 << 16   # smaller arrays come from np.empty (malloc keeps those)
    CACHED_BYTES = 1 << 28       # at most this much idle memory in the cache
    # rows of batch slices start on their own cache line (no false sharing between threads),
    # and AVX-512 loads of a row do not straddle two
    BLOCK_ALIGNMENT = 64

cdef dict _idle_blocks = {}  # size in bytes -> addresses of idle blocks of that size
cdef size_t _idle_bytes = 0


cdef void _free_idle_blocks() noexcept:
    global _idle_bytes
    for addresses in _idle_blocks.values():
        for address in addresses:
            free(<void *><uintptr_t>address)
    _idle_blocks.clear()
    _idle_bytes = 0


cdef class _Block:
    """The memory of the arrays made by _empty; back to the cache when they are gone."""
    cdef void *raw   # from malloc
    cdef void *data  # raw rounded up to BLOCK_ALIGNMENT
    cdef size_t size

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.data, <Py_ssize_t>self.size, 0, flags)

    def __dealloc__(self):
        global _idle_bytes
        if self.raw == NULL:
            return
        if self.size > CACHED_BYTES or _idle_blocks is None:  # None: the module is torn down
            free(self.raw)
            return
        if _idle_bytes + self.size > CACHED_BYTES:
            _free_idle_blocks()  # sizes that are not asked for again (e.g. a varying T) go too
        _idle_blocks.setdefault(self.size, []).append(<uintptr_t>self.raw)
        _idle_bytes += self.size


def _empty(shape, dtype):
    """np.empty(shape, dtype), in a cached block when the array is large."""
    global _idle_bytes
    cdef size_t size = np.dtype(dtype).itemsize
    cdef _Block block
    for extent in shape:
        size *= <size_t>extent
    if size < CACHED_MIN_BYTES:
        return np.empty(shape, dtype)
    block = _Block.__new__(_Block)
    idle = _idle_blocks.get(size)
    if idle:
        block.raw = <void *><uintptr_t>idle.pop()
        _idle_bytes -= size
    else:
        block.raw = malloc(size + BLOCK_ALIGNMENT - 1)
        if block.raw == NULL:
            raise MemoryError(f"cannot allocate {size} bytes for an array of shape {shape}")
    block.data = <void *>((<uintptr_t>block.raw + BLOCK_ALIGNMENT - 1)
                          & ~<uintptr_t>(BLOCK_ALIGNMENT - 1))
    block.size = size
    return np.ndarray(shape, dtype, block)


# --- The C kernels for either type ------------------------------------------------------------
# One fused wrapper per kernel of gates.h (declared for float and double in _kernels.pxd), so that
# the code below calls each once, whatever the type.

cdef inline void lstm_forward_step(int B, int H, int64_t t, const int64_t *lengths,
                                   floating *gates, const floating *b_ih, const floating *b_hh,
                                   const floating *w_peep, const floating *h_prev,
                                   const floating *c_prev, floating *h, floating *c,
                                   floating *y) noexcept nogil:
    """One LSTM step of B rows, forward (gates.h)."""
    if floating is float:
        lstm_forward_step_f(B, H, t, lengths, gates, b_ih, b_hh, w_peep, h_prev, c_prev, h, c, y)
    else:
        lstm_forward_step_d(B, H, t, lengths, gates, b_ih, b_hh, w_peep, h_prev, c_prev, h, c, y)


cdef inline void lstm_backward_step(int B, int H, int64_t t, const int64_t *lengths,
                                    const floating *gates, const floating *c_prev,
                                    const floating *c, const floating *w_peep, const floating *dy,
                                    floating *dh, floating *dc, floating *dgates,
                                    double *dpeep) noexcept nogil:
    """One LSTM step of B rows, backward (gates.h)."""
    if floating is float:
        lstm_backward_step_f(B, H, t, lengths, gates, c_prev, c, w_peep, dy, dh, dc, dgates, dpeep)
    else:
        lstm_backward_step_d(B, H, t, lengths, gates, c_prev, c, w_peep, dy, dh, dc, dgates, dpeep)


cdef inline void gru_forward_step(int B, int H, int64_t t, const int64_t *lengths, floating *gates,
                                  const floating *hproj, const floating *b_ih,
                                  const floating *b_hh, const floating *h_prev, floating *hn,
                                  floating *h, floating *y) noexcept nogil:
    """One GRU step (reset_after) of B rows, forward (gates.h)."""
    if floating is float:
        gru_forward_step_f(B, H, t, lengths, gates, hproj, b_ih, b_hh, h_prev, hn, h, y)
    else:
        gru_forward_step_d(B, H, t, lengths, gates, hproj, b_ih, b_hh, h_prev, hn, h, y)


cdef inline void gru_forward_rz_step(int B, int H, int64_t t, const int64_t *lengths,
                                     floating *gates, const floating *b_ih, const floating *b_hh,
                                     const floating *h_prev, floating *rh) noexcept nogil:
    """The r, z half of a GRU step (reset_after=False), forward (gates.h)."""
    if floating is float:
        gru_forward_rz_step_f(B, H, t, lengths, gates, b_ih, b_hh, h_prev, rh)
    else:
        gru_forward_rz_step_d(B, H, t, lengths, gates, b_ih, b_hh, h_prev, rh)


cdef inline void gru_forward_n_step(int B, int H, int64_t t, const int64_t *lengths,
                                    floating *gates, const floating *b_ih, const floating *b_hh,
                                    const floating *h_prev, floating *h,
                                    floating *y) noexcept nogil:
    """The n half of a GRU step (reset_after=False), forward (gates.h)."""
    if floating is float:
        gru_forward_n_step_f(B, H, t, lengths, gates, b_ih, b_hh, h_prev, h, y)
    else:
        gru_forward_n_step_d(B, H, t, lengths, gates, b_ih, b_hh, h_prev, h, y)


cdef inline void gru_backward_step(int B, int H, int64_t t, const int64_t *lengths,
                                   const floating *gates, const floating *hn,
                                   const floating *h_prev, const floating *dy, floating *dh,
                                   floating *dgates, floating *dn) noexcept nogil:
    """One GRU step (reset_after) of B rows, backward (gates.h)."""
    if floating is float:
        gru_backward_step_f(B, H, t, lengths, gates, hn, h_prev, dy, dh, dgates, dn)
    else:
        gru_backward_step_d(B, H, t, lengths, gates, hn, h_prev, dy, dh, dgates, dn)


cdef inline void gru_backward_nz_step(int B, int H, int64_t t, const int64_t *lengths,
                                      const floating *gates, const floating *h_prev,
                                      const floating *dy, floating *dh,
                                      floating *dgates) noexcept nogil:
    """The n, z part of a GRU step (reset_after=False), backward (gates.h)."""
    if floating is float:
        gru_backward_nz_step_f(B, H, t, lengths, gates, h_prev, dy, dh, dgates)
    else:
        gru_backward_nz_step_d(B, H, t, lengths, gates, h_prev, dy, dh, dgates)


cdef inline void gru_backward_r_step(int B, int H, int64_t t, const int64_t *lengths,
                                     const floating *gates, const floating *h_prev,
                                     const floating *drh, floating *dh,
                                     floating *dgates) noexcept nogil:
    """The r part of a GRU step (reset_after=False), backward (gates.h)."""
    if floating is float:
        gru_backward_r_step_f(B, H, t, lengths, gates, h_prev, drh, dh, dgates)
    else:
        gru_backward_r_step_d(B, H, t, lengths, gates, h_prev, drh, dh, dgates)


cdef inline void rnn_forward_step(int B, int H, int64_t t, const int64_t *lengths, int relu,
                                  floating *h, const floating *b_ih, const floating *b_hh,
                                  const floating *h_prev, floating *y) noexcept nogil:
    """One Elman step of B rows, forward (gates.h)."""
    if floating is float:
        rnn_forward_step_f(B, H, t, lengths, relu, h, b_ih, b_hh, h_prev, y)
    else:
        rnn_forward_step_d(B, H, t, lengths, relu, h, b_ih, b_hh, h_prev, y)


cdef inline void rnn_backward_step(int B, int H, int64_t t, const int64_t *lengths, int relu,
                                   const floating *h, const floating *dy, floating *dh,
                                   floating *dpre) noexcept nogil:
    """One Elman step of B rows, backward (gates.h)."""
    if floating is float:
        rnn_backward_step_f(B, H, t, lengths, relu, h, dy, dh, dpre)
    else:
        rnn_backward_step_d(B, H, t, lengths, relu, h, dy, dh, dpre)


cdef inline void colsum(int64_t rows, int n, const floating *a, int64_t lda,
                        double *acc) noexcept nogil:
    """acc[j] += sum over the rows i of a[i, j], summed in double."""
    if floating is float:
        colsum_f(rows, n, a, lda, acc)
    else:
        colsum_d(rows, n, a, lda, acc)


cdef inline void matmul_packed(int m, int n, int k, const floating *a, int lda,
                               const floating *packed, int accumulate, floating *c,
                               int ldc) noexcept nogil:
    """C := A.B (+ C when accumulate), B packed by pack_panels."""
    if floating is float:
        matmul_packed_f(m, n, k, a, lda, packed, accumulate, c, ldc)
    else:
        matmul_packed_d(m, n, k, a, lda, packed, accumulate, c, ldc)


cdef inline void matmul_tn(int m, int n, int k, const floating *a, int lda, const floating *b,
                           int ldb, int accumulate, floating *c, int ldc) noexcept nogil:
    """C := Aᵀ.B (+ C when accumulate), A (k, m) and B (k, n) as they are."""
    if floating is float:
        matmul_tn_f(m, n, k, a, lda, b, ldb, accumulate, c, ldc)
    else:
        matmul_tn_d(m, n, k, a, lda, b, ldb, accumulate, c, ldc)


# --- Matrix products -------------------------------------------------------------------------

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
               const floating *a, int lda, const floating *b, int ldb, floating beta,
               floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C, row-major; C is (m, n), op(X) = Xᵀ when trans_x."""
    # Column-major BLAS reads a row-major matrix as its transpose: compute
    # Cᵀ := alpha * op(B)ᵀ.op(A)ᵀ + beta * Cᵀ, i.e. swap the operands and m with n.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda, &beta, c, &ldc)


# The per-step products multiply by the same right operand (W_hh or a block of it, or its
# transpose) at every step. On CPUs with AVX-512 it is packed once per pass and the products run
# in matmul_packed (src_c/matmul_impl.h), which at a few dozen rows is 1.5-2x faster than BLAS,
# whose packing on every call costs about as much as the arithmetic; elsewhere they go to BLAS.

cdef bint _packed_products = packed_matmul_supported()


def _packed_products_supported():
    """Whether this CPU runs matmul_packed."""
    return bool(packed_matmul_supported())


def _use_packed_products(bint enabled):
    """Run the per-step products and the whole-sequence products that allow it (pack_last) in
    matmul_packed, and the narrower weight gradients (OUTER_MAX_BYTES) in matmul_tn (where
    supported) or, if not `enabled`, all of them in BLAS; returns the previous setting. For tests
    and benchmarks."""
    global _packed_products
    previous = _packed_products
    _packed_products = enabled and packed_matmul_supported()
    return previous


cdef struct Operand:
    # The right operand B (k, n) of a per-step product: `b`, with row stride ldb, holds B, or Bᵀ
    # when `transposed`; `panels` is B packed for matmul_packed, or NULL to use BLAS.
    int k, n, ldb
    bint transposed
    const void *b
    void *panels


cdef void set_operand(Operand *op, int k, int n, const void *b, int ldb, bint transposed,
                      void *panels) noexcept:
    op.k, op.n, op.b, op.ldb, op.transposed, op.panels = k, n, b, ldb, transposed, panels


cdef void pack_panel_slice(int k, int n, const void *b, int ldb, bint transposed, void *panels,
                           bint is_double, int part, int parts) noexcept nogil:
    """Part `part` of `parts` of the panels of pack_panels(k, n, b, ldb, transposed, panels):
    the packing is split among the threads of a pass (at H = 512 it took 0.7 ms in one)."""
    cdef int width = packed_size_d(1, 1) if is_double else packed_size_f(1, 1)  # panel columns
    cdef int count = (n + width - 1) // width
    cdef int j0 = part_start(part, parts, count) * width
    cdef int j1 = min(n, part_start(part + 1, parts, count) * width)
    cdef int64_t b_offset = <int64_t>j0 * ldb if transposed else j0
    if panels == NULL or j1 <= j0:
        return
    if is_double:
        pack_panels_d(k, j1 - j0, <const double *>b + b_offset, ldb, transposed,
                      <double *>panels + <int64_t>j0 * k)
    else:
        pack_panels_f(k, j1 - j0, <const float *>b + b_offset, ldb, transposed,
                      <float *>panels + <int64_t>j0 * k)


cdef void step_matmul(const Operand *op, int m, const floating *a, int lda, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C := A.B + beta * C (beta 0 or 1), row-major, A (m, k), B = op: a product of one step."""
    if op.panels == NULL:
        gemm(False, op.transposed, m, op.n, op.k, 1, a, lda, <const floating *>op.b, op.ldb, beta,
             c, ldc)
    else:
        matmul_packed(m, op.n, op.k, a, lda, <const floating *>op.panels, beta != 0, c, ldc)


def _panels(int k, int n, dtype):
    """A buffer for the packed form of a (k, n) right operand, or None when products use BLAS."""
    if not _packed_products:
        return None
    if dtype == np.float32:
        return _empty((packed_size_f(k, n),), np.float32)
    return _empty((packed_size_d(k, n),), np.float64)


def _product_panels(int64_t rows, int k, int n, dtype):
    """_panels for the right operand of a whole-sequence product of `rows` rows: None (BLAS)
    below PACKED_MIN_ROWS, where packing it costs more than matmul_packed saves."""
    if rows < PACKED_MIN_ROWS:
        return None
    return _panels(k, n, dtype)


cdef inline void *panels_ptr(floating[::1] panels) noexcept:
    if panels is None:
        return NULL
    return &panels[0]


cdef struct Product:
    # C := op(A).op(B) (+ C when accumulate), as for gemm; with `panels` (op(A) = A only), op(B)
    # is packed there once and the rows of C come from matmul_packed instead of BLAS.
    # op(A) = Aᵀ (then op(B) = B) is a weight gradient, a sum over all T*B rows: the threads split
    # that sum, not the rows of C, and part q > 0 writes its share into block q - 1 of
    # `partials`, which split_sums sets for a team of more than one thread and a sum of at least
    # SPLIT_SUM_MIN_ROWS rows. (Split by rows of C, BLAS packed all of B again in every thread:
    # splitting the sum made backward 5-8 % faster at (T, B, D, H) = (100, 64, 256, 256) and
    # (50, 64, 512, 512).) The gradients then differ by rounding with the number of threads.
    bint trans_a, trans_b, accumulate
    int m, n, k, lda, ldb, ldc
    const void *a
    const void *b
    void *c
    void *panels
    void *partials


cdef struct ColumnSum:
    # acc[0] += A.sum(axis=0), A (rows, n) with row stride lda; acc is float64 (MAX_PARTS, n),
    # zeros. Like the weight gradients, the threads split the rows: part q sums its slice (the
    # rows its weight gradients just read) into acc[q], and add_partials_part folds those into
    # acc[0]. (Split by columns, every thread read every row, half of them from the other core.)
    int64_t rows
    int n, lda
    const void *a
    double *acc


cdef struct Products:
    # The whole-sequence products of a phase, done in order; each thread takes a slice of the
    # rows of every product's C (or of the sum, see Product) and of the rows of every column sum.
    bint is_double
    int count, sums
    Product items[MAX_PRODUCTS]
    ColumnSum column_sums[2]


cdef void product(Products *products, bint trans_a, bint trans_b, int m, int n, int k,
                  const void *a, int lda, const void *b, int ldb, bint accumulate, void *c,
                  int ldc) noexcept:
    """Append C := op(A).op(B) (+ C when accumulate) to `products`."""
    cdef Product *p = &products.items[products.count]
    p.trans_a, p.trans_b, p.accumulate = trans_a, trans_b, accumulate
    p.m, p.n, p.k, p.lda, p.ldb, p.ldc = m, n, k, lda, ldb, ldc
    p.a, p.b, p.c, p.panels, p.partials = a, b, c, NULL, NULL
    products.count += 1


cdef void pack_last(Products *products, void *panels) noexcept:
    """Run the product appended last (op(A) = A) on its op(B) packed into `panels` (from
    _product_panels), or through BLAS when panels is NULL. At the shapes of a pass (K and N a few
    hundred at most, thousands of rows) this is 15-20 % faster than sgemm, which packs op(B) again
    in every thread and its slice of A as well."""
    products.items[products.count - 1].panels = panels


cdef void column_sum(Products *products, int64_t rows, int n, const void *a, int lda,
                     double *acc) noexcept:
    """Append acc[0] += A.sum(axis=0) to `products`; acc is (MAX_PARTS, n), zeros."""
    cdef ColumnSum *s = &products.column_sums[products.sums]
    s.rows, s.n, s.a, s.lda, s.acc = rows, n, a, lda, acc
    products.sums += 1


cdef inline bint sum_is_split(const Product *p, int parts) noexcept nogil:
    return p.trans_a and parts > 1 and p.k >= SPLIT_SUM_MIN_ROWS


cdef object split_sums(Products *products, int parts, dtype):
    """Give the weight gradients of `products` whose sum the threads split the partial sums of
    parts 1 .. parts - 1 (see Product); returns their buffer (None if there are none), which must
    live until the products have run."""
    cdef int64_t size = 0
    cdef int i
    cdef Product *p
    for i in range(products.count):
        if sum_is_split(&products.items[i], parts):
            size += <int64_t>products.items[i].m * products.items[i].n
    if size == 0:
        return None
    buffer = _empty(((parts - 1) * size,), dtype)
    cdef char *start = <char *><uintptr_t>buffer.ctypes.data
    for i in range(products.count):
        p = &products.items[i]
        if sum_is_split(p, parts):
            p.partials = start
            start += (parts - 1) * <int64_t>p.m * p.n * buffer.itemsize
    return buffer


cdef void weight_gradient(const Product *p, int m, int k, const floating *a, const floating *b,
                          bint accumulate, floating *c, int ldc) noexcept nogil:
    """C (m, p.n) := Aᵀ.B (+ C when accumulate), A (k, m) and B (k, p.n) with p's strides: part of
    the weight gradient p, in matmul_tn when p is narrow enough (OUTER_MAX_BYTES), else BLAS."""
    if not _packed_products or (p.m + p.n) * sizeof(floating) > OUTER_MAX_BYTES:
        gemm(True, False, m, p.n, k, 1, a, p.lda, b, p.ldb, 1 if accumulate else 0, c, ldc)
    else:
        matmul_tn(m, p.n, k, a, p.lda, b, p.ldb, accumulate, c, ldc)


cdef void weight_gradient_part(const Product *p, int part, int parts,
                               const floating *a) noexcept nogil:
    """Part `part` of `parts` of the weight gradient p, C := Aᵀ.B (+ C); a is p.a. With partial
    sums, the sum over its slice of the K rows of A and B (none is empty: K >= SPLIT_SUM_MIN_ROWS),
    into C (part 0) or into its block of p.partials; otherwise its slice of the rows of C."""
    cdef const floating *b = <const floating *>p.b
    cdef int k0, k1, r0, r1
    if p.partials == NULL:
        r0, r1 = part_start(part, parts, p.m), part_start(part + 1, parts, p.m)
        if r1 > r0:
            weight_gradient(p, r1 - r0, p.k, a + r0, b, p.accumulate,
                            <floating *>p.c + <int64_t>r0 * p.ldc, p.ldc)
        return
    k0, k1 = part_start(part, parts, p.k), part_start(part + 1, parts, p.k)
    a, b = a + <int64_t>k0 * p.lda, b + <int64_t>k0 * p.ldb
    if part == 0:
        weight_gradient(p, p.m, k1 - k0, a, b, p.accumulate, <floating *>p.c, p.ldc)
    else:
        weight_gradient(p, p.m, k1 - k0, a, b, False,
                        <floating *>p.partials + (part - 1) * <int64_t>p.m * p.n, p.n)


cdef void add_partials_rows(const Product *p, int r0, int r1, int parts,
                            floating *c) noexcept nogil:
    """Rows r0 .. r1-1 of C += the partial sums of parts 1 .. parts - 1; c is p.c."""
    cdef const floating *partial
    cdef int64_t block = <int64_t>p.m * p.n
    cdef int q, r, j
    for q in range(parts - 1):
        partial = <const floating *>p.partials + q * block
        for r in range(r0, r1):
            for j in range(p.n):
                c[<int64_t>r * p.ldc + j] += partial[<int64_t>r * p.n + j]


cdef void product_rows(const Product *p, int r0, int r1, const floating *a) noexcept nogil:
    """Rows r0 .. r1-1 of C := A.op(B) (+ C); a is p.a."""
    if r1 <= r0:
        return
    a = a + <int64_t>r0 * p.lda
    if p.panels != NULL:
        matmul_packed(r1 - r0, p.n, p.k, a, p.lda, <const floating *>p.panels, p.accumulate,
                      <floating *>p.c + <int64_t>r0 * p.ldc, p.ldc)
        return
    gemm(False, p.trans_b, r1 - r0, p.n, p.k, 1, a, p.lda, <const floating *>p.b, p.ldb,
         1 if p.accumulate else 0, <floating *>p.c + <int64_t>r0 * p.ldc, p.ldc)


cdef void column_sum_rows(const ColumnSum *s, int part, int parts, const floating *a) noexcept nogil:
    """Part `part` of `parts` of acc[0] += A.sum(axis=0): its slice of the rows into acc[part];
    a is s.a."""
    cdef int64_t r0 = part * s.rows // parts, r1 = (part + 1) * s.rows // parts
    colsum(r1 - r0, s.n, a + r0 * s.lda, s.lda, s.acc + <int64_t>part * s.n)


cdef void products_part(void *work, int part, int parts) noexcept nogil:
    cdef Products *products = <Products *>work
    cdef const Product *p
    cdef const ColumnSum *s
    cdef int i
    for i in range(products.count):
        p = &products.items[i]
        if p.trans_a:
            if products.is_double:
                weight_gradient_part(p, part, parts, <const double *>p.a)
            else:
                weight_gradient_part(p, part, parts, <const float *>p.a)
        elif products.is_double:
            product_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                         <const double *>p.a)
        else:
            product_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                         <const float *>p.a)
    for i in range(products.sums):
        s = &products.column_sums[i]
        if products.is_double:
            column_sum_rows(s, part, parts, <const double *>s.a)
        else:
            column_sum_rows(s, part, parts, <const float *>s.a)


cdef void add_partials_part(void *work, int part, int parts) noexcept nogil:
    """After products_part: add the partial sums of the weight gradients into their C and those
    of the column sums into their acc[0], each part taking a slice of the rows (columns)."""
    cdef Products *products = <Products *>work
    cdef const Product *p
    cdef const ColumnSum *s
    cdef int i, q, j
    for i in range(products.count):
        p = &products.items[i]
        if p.partials == NULL:
            continue
        if products.is_double:
            add_partials_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                              parts, <double *>p.c)
        else:
            add_partials_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                              parts, <float *>p.c)
    for i in range(products.sums):
        s = &products.column_sums[i]
        for q in range(1, parts):
            for j in range(part_start(part, parts, s.n), part_start(part + 1, parts, s.n)):
                s.acc[j] += s.acc[<int64_t>q * s.n + j]


cdef void add_to(floating *out, const double *acc, int n) noexcept nogil:
    """out += acc, the way parameter gradients are accumulated."""
    cdef int j
    for j in range(n):
        out[j] += <floating>acc[j]


# --- Time loops ------------------------------------------------------------------------------

cdef enum Phase:
    # Which time loop a Work runs
    LSTM_FORWARD, LSTM_BACKWARD, GRU_FORWARD, GRU_BACKWARD, RNN_FORWARD, RNN_BACKWARD


cdef struct Work:
    # What the time loop of a pass reads and writes (typed by `is_double`); a thread handles
    # batch rows part_start(part) .. part_start(part + 1) - 1 of everything per-row. The forward
    # buffers (gates .. y) are written by forward and only read by backward.
    bint is_double
    Phase phase
    int T, B, H, G, rev, option  # option: relu (RNN) / reset_after (GRU)
    const int64_t *lengths
    Operand step_b[2]   # the right operands of the per-step products (W_hh or blocks of it)
    const void *b_ih
    const void *b_hh
    const void *w_peep  # (3, H), zeros without peepholes
    void *gates         # (T, B, G*H)
    void *hs            # (T+1, B, H)
    void *cs            # (T+1, B, H), LSTM
    void *extra         # (T, B, H): GRU hn (reset_after) or r * h_{t-1}
    void *y             # (T, B, H)
    void *scratch       # (B, G*H): GRU's per-step hproj / d(r * h_{t-1})
    const void *dy      # (T, B, H)
    void *dgates        # (T, B, G*H)
    void *dn            # (T, B, H): GRU reset_after's n gradient
    void *dh            # (B, H)
    void *dc            # (B, H)
    double *dpeep       # (parts, 3H) accumulators, or NULL


cdef inline int64_t at(int t, int b, int B, int width) noexcept nogil:
    """Offset of row b of step t in a (·, B, width) buffer."""
    return (<int64_t>t * B + b) * width


cdef inline const int64_t *lengths_from(const Work *w, int b0) noexcept nogil:
    """The lengths of the batch rows from b0 on (NULL: all sequences have T steps)."""
    if w.lengths == NULL:
        return NULL
    return w.lengths + b0


cdef void lstm_forward_rows(Work *w, int b0, int b1, floating *gates) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, G = w.G, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w, b0)
    cdef const floating *b_ih = <const floating *>w.b_ih
    cdef const floating *b_hh = <const floating *>w.b_hh
    cdef const floating *w_peep = <const floating *>w.w_peep
    cdef floating *hs = <floating *>w.hs
    cdef floating *cs = <floating *>w.cs
    cdef floating *y = <floating *>w.y
    for s in range(T):
        t = T - 1 - s if rev else s
        # gates[t, rows] += hs[t + rev, rows] @ w_hh.T
        step_matmul(&w.step_b[0], rows, &hs[at(t + rev, b0, B, H)], H, 1,
                    &gates[at(t, b0, B, G)], G)
        lstm_forward_step(rows, H, t, lengths, &gates[at(t, b0, B, G)], b_ih, b_hh, w_peep,
                          &hs[at(t + rev, b0, B, H)], &cs[at(t + rev, b0, B, H)],
                          &hs[at(t + 1 - rev, b0, B, H)], &cs[at(t + 1 - rev, b0, B, H)],
                          &y[at(t, b0, B, H)])


cdef void lstm_backward_rows(Work *w, int b0, int b1, int part, floating *dgates) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, G = w.G, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w, b0)
    cdef const floating *w_peep = <const floating *>w.w_peep
    cdef const floating *gates = <const floating *>w.gates
    cdef const floating *cs = <const floating *>w.cs
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    cdef floating *dc = <floating *>w.dc + <int64_t>b0 * H
    cdef double *dpeep = NULL if w.dpeep == NULL else w.dpeep + <int64_t>part * 3 * H
    for s in range(T):
        t = s if rev else T - 1 - s
        lstm_backward_step(rows, H, t, lengths, &gates[at(t, b0, B, G)],
                           &cs[at(t + rev, b0, B, H)], &cs[at(t + 1 - rev, b0, B, H)], w_peep,
                           &dy[at(t, b0, B, H)], dh, dc, &dgates[at(t, b0, B, G)], dpeep)
        # dh[rows] += dgates[t, rows] @ w_hh
        step_matmul(&w.step_b[0], rows, &dgates[at(t, b0, B, G)], G, 1, dh, H)


cdef void gru_forward_rows(Work *w, int b0, int b1, floating *gates) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, G = w.G, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w, b0)
    cdef const floating *b_ih = <const floating *>w.b_ih
    cdef const floating *b_hh = <const floating *>w.b_hh
    cdef floating *hs = <floating *>w.hs
    cdef floating *extra = <floating *>w.extra
    cdef floating *y = <floating *>w.y
    cdef floating *hproj = <floating *>w.scratch + <int64_t>b0 * G
    for s in range(T):
        t = T - 1 - s if rev else s
        if w.option:  # reset_after
            # hproj[rows] = hs[t + rev, rows] @ w_hh.T
            step_matmul(&w.step_b[0], rows, &hs[at(t + rev, b0, B, H)], H, 0, hproj, G)
            gru_forward_step(rows, H, t, lengths, &gates[at(t, b0, B, G)], hproj, b_ih, b_hh,
                             &hs[at(t + rev, b0, B, H)], &extra[at(t, b0, B, H)],
                             &hs[at(t + 1 - rev, b0, B, H)], &y[at(t, b0, B, H)])
        else:
            # gates[t, rows, :2H] += hs[t + rev, rows] @ w_hh[:2H].T
            step_matmul(&w.step_b[0], rows, &hs[at(t + rev, b0, B, H)], H, 1,
                        &gates[at(t, b0, B, G)], G)
            gru_forward_rz_step(rows, H, t, lengths, &gates[at(t, b0, B, G)], b_ih, b_hh,
                                &hs[at(t + rev, b0, B, H)], &extra[at(t, b0, B, H)])
            # gates[t, rows, 2H:] += (r * h_{t-1})[rows] @ w_hh[2H:].T
            step_matmul(&w.step_b[1], rows, &extra[at(t, b0, B, H)], H, 1,
                        &gates[at(t, b0, B, G) + 2 * H], G)
            gru_forward_n_step(rows, H, t, lengths, &gates[at(t, b0, B, G)], b_ih, b_hh,
                               &hs[at(t + rev, b0, B, H)], &hs[at(t + 1 - rev, b0, B, H)],
                               &y[at(t, b0, B, H)])


cdef void gru_backward_rows(Work *w, int b0, int b1, floating *dgates) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, G = w.G, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w, b0)
    cdef const floating *gates = <const floating *>w.gates
    cdef const floating *hs = <const floating *>w.hs
    cdef const floating *extra = <const floating *>w.extra
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dn = <floating *>w.dn
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    cdef floating *drh = <floating *>w.scratch + <int64_t>b0 * H
    for s in range(T):
        t = s if rev else T - 1 - s
        if w.option:  # reset_after
            gru_backward_step(rows, H, t, lengths, &gates[at(t, b0, B, G)],
                              &extra[at(t, b0, B, H)], &hs[at(t + rev, b0, B, H)],
                              &dy[at(t, b0, B, H)], dh, &dgates[at(t, b0, B, G)],
                              &dn[at(t, b0, B, H)])
            # dh[rows] += dgates[t, rows] @ w_hh
            step_matmul(&w.step_b[0], rows, &dgates[at(t, b0, B, G)], G, 1, dh, H)
        else:
            gru_backward_nz_step(rows, H, t, lengths, &gates[at(t, b0, B, G)],
                                 &hs[at(t + rev, b0, B, H)], &dy[at(t, b0, B, H)], dh,
                                 &dgates[at(t, b0, B, G)])
            # drh[rows] = dgates[t, rows, 2H:] @ w_hh[2H:]
            step_matmul(&w.step_b[1], rows, &dgates[at(t, b0, B, G) + 2 * H], G, 0, drh, H)
            gru_backward_r_step(rows, H, t, lengths, &gates[at(t, b0, B, G)],
                                &hs[at(t + rev, b0, B, H)], drh, dh, &dgates[at(t, b0, B, G)])
            # dh[rows] += dgates[t, rows, :2H] @ w_hh[:2H]
            step_matmul(&w.step_b[0], rows, &dgates[at(t, b0, B, G)], G, 1, dh, H)


cdef void rnn_forward_rows(Work *w, int b0, int b1, floating *hs) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w, b0)
    cdef const floating *b_ih = <const floating *>w.b_ih
    cdef const floating *b_hh = <const floating *>w.b_hh
    cdef floating *y = <floating *>w.y
    for s in range(T):
        t = T - 1 - s if rev else s
        # hs[t + 1 - rev, rows] += hs[t + rev, rows] @ w_hh.T
        step_matmul(&w.step_b[0], rows, &hs[at(t + rev, b0, B, H)], H, 1,
                    &hs[at(t + 1 - rev, b0, B, H)], H)
        rnn_forward_step(rows, H, t, lengths, w.option, &hs[at(t + 1 - rev, b0, B, H)], b_ih, b_hh,
                         &hs[at(t + rev, b0, B, H)], &y[at(t, b0, B, H)])


cdef void rnn_backward_rows(Work *w, int b0, int b1, floating *dpre) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w, b0)
    cdef const floating *hs = <const floating *>w.hs
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    for s in range(T):
        t = s if rev else T - 1 - s
        rnn_backward_step(rows, H, t, lengths, w.option, &hs[at(t + 1 - rev, b0, B, H)],
                          &dy[at(t, b0, B, H)], dh, &dpre[at(t, b0, B, H)])
        # dh[rows] += dpre[t, rows] @ w_hh
        step_matmul(&w.step_b[0], rows, &dpre[at(t, b0, B, H)], H, 1, dh, H)


# The time loops as thread parts: part `part` of `parts` takes its slice of the batch rows.

cdef void time_loop_rows(Work *w, int b0, int b1, int part, floating *dtype_tag) noexcept nogil:
    """Batch rows b0 .. b1-1 through the time loop of w.phase; `dtype_tag` only picks the type."""
    if w.phase == LSTM_FORWARD:
        lstm_forward_rows(w, b0, b1, <floating *>w.gates)
    elif w.phase == LSTM_BACKWARD:
        lstm_backward_rows(w, b0, b1, part, <floating *>w.dgates)
    elif w.phase == GRU_FORWARD:
        gru_forward_rows(w, b0, b1, <floating *>w.gates)
    elif w.phase == GRU_BACKWARD:
        gru_backward_rows(w, b0, b1, <floating *>w.dgates)
    elif w.phase == RNN_FORWARD:
        rnn_forward_rows(w, b0, b1, <floating *>w.hs)
    else:
        rnn_backward_rows(w, b0, b1, <floating *>w.dgates)


cdef void time_loop_part(void *work, int part, int parts) noexcept nogil:
    """team_run's callback: part `part` of `parts` of the batch rows through w.phase's loop."""
    cdef Work *w = <Work *>work
    cdef int b0 = part_start(part, parts, w.B), b1 = part_start(part + 1, parts, w.B)
    if w.is_double:
        time_loop_rows(w, b0, b1, part, <double *>NULL)
    else:
        time_loop_rows(w, b0, b1, part, <float *>NULL)


# --- Passes ----------------------------------------------------------------------------------

cdef class _Cache:
    """What backward needs from forward: the pass's buffers and its inputs (not copied)."""
    cdef object x, w_ih, w_hh, w_peep, lengths, gates, hs, cs, extra
    cdef bint reverse, option


cdef _Cache _make_cache(x, w_ih, w_hh, w_peep, lengths, gates, hs, cs, extra, bint reverse,
                        bint option):
    cdef _Cache cache = _Cache.__new__(_Cache)
    cache.x, cache.w_ih, cache.w_hh, cache.w_peep, cache.lengths = x, w_ih, w_hh, w_peep, lengths
    cache.gates, cache.hs, cache.cs, cache.extra = gates, hs, cs, extra
    cache.reverse, cache.option = reverse, option
    return cache


cdef inline const int64_t *lengths_ptr(const int64_t[::1] lengths) noexcept:
    if lengths is None:
        return NULL
    return &lengths[0]


cdef inline object base_or_none(const int64_t[::1] lengths):
    return None if lengths is None else lengths.base


cdef inline const void *bias_ptr(const floating[::1] bias) noexcept:
    if bias is None:
        return NULL
    return &bias[0]


cdef inline void copy_state(floating *dst, const floating *src, int B, int H) noexcept nogil:
    memcpy(dst, src, <size_t>B * H * sizeof(floating))


cdef void init_work(Work *w, bint is_double, int T, int B, int H, int G, bint reverse,
                    bint option, const int64_t *lengths) noexcept:
    """The sizes and options of `w`, with every buffer pointer NULL."""
    memset(w, 0, sizeof(Work))
    w.is_double, w.T, w.B, w.H, w.G, w.rev, w.option = is_double, T, B, H, G, reverse, option
    w.lengths = lengths


cdef void init_products(Products *products, bint is_double) noexcept:
    products.is_double, products.count, products.sums = is_double, 0, 0


cdef void input_projection(Products *products, bint is_double, int rows, int D, int G,
                           const void *x, const void *w_ih, void *out, int ldo,
                           void *panels_ih) noexcept:
    """Forward's products before the time loop, over all T*B rows at once: out = x @ w_ih.T (on
    W_ih packed into panels_ih, see pack_last); the biases are added in the gate kernels."""
    init_products(products, is_double)
    product(products, False, True, rows, G, D, x, D, w_ih, D, False, out, ldo)
    pack_last(products, panels_ih)


cdef void input_gradient_products(Products *products, int rows, int D, int G, const void *dgates,
                                  const void *w_ih, const void *x, void *dx, void *dw_ih,
                                  void *panels_ih) noexcept:
    """Append backward's products through gates = x.W_ihᵀ + ... over all T*B rows at once:
    dx = dgates @ w_ih (on W_ih packed into panels_ih, see pack_last) and dw_ih += dgates.T @ x."""
    product(products, False, False, rows, D, G, dgates, G, w_ih, D, False, dx, D)
    pack_last(products, panels_ih)
    product(products, True, False, G, D, rows, dgates, G, x, D, True, dw_ih, D)


cdef void gate_gradient_products(Products *products, int rows, int D, int H, int G,
                                 const void *dgates, const void *w_ih, const void *x,
                                 const void *h_prev, void *dx, void *dw_ih, void *dw_hh,
                                 double *dbias, void *panels_ih) noexcept:
    """Append backward's products through gates = x.W_ihᵀ + h_{t-1}.W_hhᵀ + b over all T*B rows:
    those of input_gradient_products, dw_hh += dgates.T @ h_prev (h_prev: the h_{t-1} of every
    step) and, unless dbias is NULL, dbias[0] += dgates.sum(0) (see ColumnSum)."""
    input_gradient_products(products, rows, D, G, dgates, w_ih, x, dx, dw_ih, panels_ih)
    product(products, True, False, G, H, rows, dgates, G, h_prev, H, True, dw_hh, H)
    if dbias != NULL:
        column_sum(products, rows, G, dgates, G, dbias)


cdef struct Pass:
    Work *work
    Products *products


cdef void pack_part(void *work, int part, int parts) noexcept nogil:
    """team_run's callback: part `part` of `parts` of the packing of a pass, the per-step operands
    and those of the whole-sequence products that use panels."""
    cdef Pass *pass_ = <Pass *>work
    cdef const Operand *op
    cdef const Product *p
    cdef bint is_double = pass_.work.is_double
    cdef int i
    for i in range(2):
        op = &pass_.work.step_b[i]
        pack_panel_slice(op.k, op.n, op.b, op.ldb, op.transposed, op.panels, is_double, part,
                         parts)
    for i in range(pass_.products.count):
        p = &pass_.products.items[i]
        pack_panel_slice(p.k, p.n, p.b, p.ldb, p.trans_b, p.panels, is_double, part, parts)


cdef int run_pass(Work *work, Products *products, int64_t macs) except -1:
    """Run the phase of `work` with its whole-sequence products, in as many threads as
    _pass_begin allows for `macs` multiply-adds and with flush-to-zero on: the packing of the
    operands, then forward, the products (the input projection) and the time loop; backward, the
    time loop, the products (the gradients through all steps at once) and the adding up of the
    threads' partial sums."""
    cdef Team team
    cdef Pass pass_
    cdef unsigned int fp_mode
    cdef bint forward = work.phase in (LSTM_FORWARD, GRU_FORWARD, RNN_FORWARD)
    pass_.work, pass_.products = work, products
    team_init(&team, _pass_begin(work.B, macs))
    try:
        partials = split_sums(products, team.parts, np.float64 if work.is_double else np.float32)
        with nogil:
            fp_mode = fp_mode_fast_enter()
            team_run(&team, pack_part, &pass_)
            if not forward:
                team_run(&team, time_loop_part, work)
            team_run(&team, products_part, products)
            if forward:
                team_run(&team, time_loop_part, work)
            else:
                team_run(&team, add_partials_part, products)
            fp_mode_restore(fp_mode)
    finally:
        _pass_end()
        team_free(&team)
    return 0


# --- LSTM ------------------------------------------------------------------------------------

def lstm_forward(x, state0, params, lengths, reverse):
    """LSTM forward over one direction of one layer -> (y, (h_n, c_n), cache); see _backends."""
    w_hh = params["w_hh"]
    w_peep = params["w_peep"]
    if w_peep is None:
        w_peep = np.zeros((3, w_hh.shape[1]), w_hh.dtype)
    if x.dtype == np.float32:
        return _lstm_forward[float](x, state0[0], state0[1], params["w_ih"], w_hh, params["b_ih"],
                                    params["b_hh"], w_peep, lengths, reverse)
    return _lstm_forward[double](x, state0[0], state0[1], params["w_ih"], w_hh, params["b_ih"],
                                 params["b_hh"], w_peep, lengths, reverse)


cdef tuple _lstm_forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                         const floating[:, ::1] c0, const floating[:, ::1] w_ih,
                         const floating[:, ::1] w_hh, const floating[::1] b_ih,
                         const floating[::1] b_hh, const floating[:, ::1] w_peep,
                         const int64_t[::1] lengths, bint reverse):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = h0.shape[1], G = 4 * H
    cdef int rev = reverse
    cdef Work work
    cdef Products projection
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the activated gates and the h and c sequences, (4 + 2) * T*B*H values
    # (and the initial state).
    gates_array = _empty((T, B, G), dtype)
    hs_array = _empty((T + 1, B, H), dtype)
    cs_array = _empty((T + 1, B, H), dtype)
    y_array = _empty((T, B, H), dtype)
    h_n_array = _empty((B, H), dtype)
    c_n_array = _empty((B, H), dtype)
    cdef floating[:, :, ::1] gates = gates_array, hs = hs_array, cs = cs_array, y = y_array
    cdef floating[:, ::1] h_n = h_n_array, c_n = c_n_array
    cdef floating[::1] panels = _panels(H, G, dtype)
    cdef floating[::1] panels_ih = _product_panels(T * B, D, G, dtype)

    init_work(&work, floating is double, T, B, H, G, reverse, False, lengths_ptr(lengths))
    # per step: @ w_hh.T
    set_operand(&work.step_b[0], H, G, &w_hh[0, 0], H, True, panels_ptr(panels))
    work.w_peep = &w_peep[0, 0]
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.gates, work.hs, work.cs, work.y = &gates[0, 0, 0], &hs[0, 0, 0], &cs[0, 0, 0], &y[0, 0, 0]
    # gates = x @ w_ih.T
    input_projection(&projection, floating is double, T * B, D, G, &x[0, 0, 0], &w_ih[0, 0],
                     &gates[0, 0, 0], G, panels_ptr(panels_ih))

    copy_state(&hs[rev * T, 0, 0], &h0[0, 0], B, H)
    copy_state(&cs[rev * T, 0, 0], &c0[0, 0], B, H)
    work.phase = LSTM_FORWARD
    run_pass(&work, &projection, <int64_t>T * B * G * (D + H))
    copy_state(&h_n[0, 0], &hs[(1 - rev) * T, 0, 0], B, H)
    copy_state(&c_n[0, 0], &cs[(1 - rev) * T, 0, 0], B, H)
    cache = _make_cache(x.base, w_ih.base, w_hh.base, w_peep.base, base_or_none(lengths),
                        gates_array, hs_array, cs_array, None, reverse, False)
    return y_array, (h_n_array, c_n_array), cache


def lstm_backward(dy, dstate_n, cache, grads):
    """LSTM backward through one forward call -> (dx, (dh0, dc0)); adds into `grads`."""
    cdef _Cache c = cache
    if dy.dtype == np.float32:
        return _lstm_backward[float](dy, dstate_n[0], dstate_n[1], c.x, c.w_ih, c.w_hh, c.w_peep,
                                     c.lengths, c.gates, c.hs, c.cs, c.reverse, grads["w_ih"],
                                     grads["w_hh"], grads["b_ih"], grads["b_hh"], grads["w_peep"])
    return _lstm_backward[double](dy, dstate_n[0], dstate_n[1], c.x, c.w_ih, c.w_hh, c.w_peep,
                                  c.lengths, c.gates, c.hs, c.cs, c.reverse, grads["w_ih"],
                                  grads["w_hh"], grads["b_ih"], grads["b_hh"], grads["w_peep"])


cdef tuple _lstm_backward(const floating[:, :, ::1] dy, const floating[:, ::1] dh_n,
                          const floating[:, ::1] dc_n, const floating[:, :, ::1] x,
                          const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                          const floating[:, ::1] w_peep, const int64_t[::1] lengths,
                          const floating[:, :, ::1] gates, const floating[:, :, ::1] hs,
                          const floating[:, :, ::1] cs, bint reverse,
                          floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                          floating[::1] db_hh, floating[:, ::1] dw_peep):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = hs.shape[2], G = 4 * H
    cdef int rev = reverse, part
    cdef Work work
    cdef Products weights
    dtype = np.float32 if floating is float else np.float64
    dx_array = _empty((T, B, D), dtype)
    dgates_array = _empty((T, B, G), dtype)
    dh_array = _empty((B, H), dtype)
    dc_array = _empty((B, H), dtype)
    cdef floating[:, :, ::1] dx = dx_array, dgates = dgates_array
    cdef floating[:, ::1] dh = dh_array, dc = dc_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, G))  # see ColumnSum
    cdef double[:, ::1] dpeep = np.zeros((MAX_PARTS, 3 * H))  # one accumulator per thread
    cdef floating[::1] panels = _panels(G, H, dtype)
    cdef floating[::1] panels_ih = _product_panels(T * B, G, D, dtype)

    init_work(&work, floating is double, T, B, H, G, reverse, False, lengths_ptr(lengths))
    # per step: @ w_hh
    set_operand(&work.step_b[0], G, H, &w_hh[0, 0], H, False, panels_ptr(panels))
    work.w_peep = &w_peep[0, 0]
    work.gates, work.cs, work.dy = <void *>&gates[0, 0, 0], <void *>&cs[0, 0, 0], &dy[0, 0, 0]
    work.dgates, work.dh, work.dc = &dgates[0, 0, 0], &dh[0, 0], &dc[0, 0]
    work.dpeep = NULL if dw_peep is None else &dpeep[0, 0]
    init_products(&weights, floating is double)
    # dx = dgates @ w_ih; dw_ih += dgates.T @ x; dw_hh += dgates.T @ hs[rev:rev + T];
    # dbias = dgates.sum((0, 1))
    gate_gradient_products(&weights, T * B, D, H, G, &dgates[0, 0, 0], &w_ih[0, 0], &x[0, 0, 0],
                           &hs[rev, 0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0],
                           NULL if db_ih is None else &dbias[0, 0], panels_ptr(panels_ih))

    copy_state(&dh[0, 0], &dh_n[0, 0], B, H)
    copy_state(&dc[0, 0], &dc_n[0, 0], B, H)
    work.phase = LSTM_BACKWARD
    run_pass(&work, &weights, <int64_t>T * B * G * (D + H))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], G)
        add_to(&db_hh[0], &dbias[0, 0], G)
    if dw_peep is not None:
        for part in range(MAX_PARTS):  # the rows of threads that did not run are zeros
            add_to(&dw_peep[0, 0], &dpeep[part, 0], 3 * H)
    return dx_array, (dh_array, dc_array)


# --- GRU -------------------------------------------------------------------------------------

def gru_forward(x, state0, params, lengths, reverse, reset_after=True):
    """GRU forward over one direction of one layer -> (y, (h_n,), cache); see _backends."""
    w_hh = params["w_hh"]
    if x.dtype == np.float32:
        return _gru_forward[float](x, state0[0], params["w_ih"], w_hh, params["b_ih"],
                                   params["b_hh"], lengths, reverse, reset_after)
    return _gru_forward[double](x, state0[0], params["w_ih"], w_hh, params["b_ih"],
                                params["b_hh"], lengths, reverse, reset_after)


cdef tuple _gru_forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                        const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                        const floating[::1] b_ih, const floating[::1] b_hh,
                        const int64_t[::1] lengths, bint reverse, bint reset_after):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = h0.shape[1], G = 3 * H
    cdef int rev = reverse
    cdef Work work
    cdef Products projection
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the activated gates, the h sequence and per step either
    # hn = W_hn h_{t-1} + b_hn (reset_after) or r * h_{t-1}: (3 + 2) * T*B*H values (and the
    # initial state).
    gates_array = _empty((T, B, G), dtype)
    hs_array = _empty((T + 1, B, H), dtype)
    extra_array = _empty((T, B, H), dtype)
    y_array = _empty((T, B, H), dtype)
    h_n_array = _empty((B, H), dtype)
    hproj_array = _empty((B, G), dtype)
    cdef floating[:, :, ::1] gates = gates_array, hs = hs_array, extra = extra_array
    cdef floating[:, :, ::1] y = y_array
    cdef floating[:, ::1] h_n = h_n_array, hproj = hproj_array
    cdef floating[::1] panels = _panels(H, G if reset_after else 2 * H, dtype)
    cdef floating[::1] panels_n = None if reset_after else _panels(H, H, dtype)
    cdef floating[::1] panels_ih = _product_panels(T * B, D, G, dtype)

    init_work(&work, floating is double, T, B, H, G, reverse, reset_after, lengths_ptr(lengths))
    if reset_after:
        # per step: @ w_hh.T
        set_operand(&work.step_b[0], H, G, &w_hh[0, 0], H, True, panels_ptr(panels))
    else:
        # per step: @ w_hh[:2H].T, then (r * h_{t-1}) @ w_hh[2H:].T
        set_operand(&work.step_b[0], H, 2 * H, &w_hh[0, 0], H, True, panels_ptr(panels))
        set_operand(&work.step_b[1], H, H, &w_hh[2 * H, 0], H, True, panels_ptr(panels_n))
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.gates, work.hs, work.y = &gates[0, 0, 0], &hs[0, 0, 0], &y[0, 0, 0]
    work.extra = &extra[0, 0, 0]
    work.scratch = &hproj[0, 0]
    # gates = x @ w_ih.T
    input_projection(&projection, floating is double, T * B, D, G, &x[0, 0, 0], &w_ih[0, 0],
                     &gates[0, 0, 0], G, panels_ptr(panels_ih))

    copy_state(&hs[rev * T, 0, 0], &h0[0, 0], B, H)
    work.phase = GRU_FORWARD
    run_pass(&work, &projection, <int64_t>T * B * G * (D + H))
    copy_state(&h_n[0, 0], &hs[(1 - rev) * T, 0, 0], B, H)
    cache = _make_cache(x.base, w_ih.base, w_hh.base, None, base_or_none(lengths), gates_array,
                        hs_array, None, extra_array, reverse, reset_after)
    return y_array, (h_n_array,), cache


def gru_backward(dy, dstate_n, cache, grads):
    """GRU backward through one forward call -> (dx, (dh0,)); adds into `grads`."""
    cdef _Cache c = cache
    if dy.dtype == np.float32:
        return _gru_backward[float](dy, dstate_n[0], c.x, c.w_ih, c.w_hh, c.lengths, c.gates,
                                    c.hs, c.extra, c.reverse, c.option, grads["w_ih"],
                                    grads["w_hh"], grads["b_ih"], grads["b_hh"])
    return _gru_backward[double](dy, dstate_n[0], c.x, c.w_ih, c.w_hh, c.lengths, c.gates,
                                 c.hs, c.extra, c.reverse, c.option, grads["w_ih"],
                                 grads["w_hh"], grads["b_ih"], grads["b_hh"])


cdef tuple _gru_backward(const floating[:, :, ::1] dy, const floating[:, ::1] dh_n,
                         const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                         const floating[:, ::1] w_hh, const int64_t[::1] lengths,
                         const floating[:, :, ::1] gates, const floating[:, :, ::1] hs,
                         const floating[:, :, ::1] extra, bint reverse, bint reset_after,
                         floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                         floating[::1] db_hh):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = hs.shape[2], G = 3 * H
    cdef int rev = reverse
    cdef int64_t rows = <int64_t>T * B
    cdef Work work
    cdef Products weights
    dtype = np.float32 if floating is float else np.float64
    dx_array = _empty((T, B, D), dtype)
    # reset_after: the r, z, hn gradients (what W_hh sees) and dn, the n gradient (what W_ih
    # sees); otherwise the r, z, n gradients, which both see, and a per-step d(r * h_{t-1}).
    dgates_array = _empty((T, B, G), dtype)
    dn_array = _empty((T if reset_after else 1, B, H), dtype)
    dh_array = _empty((B, H), dtype)
    cdef floating[:, :, ::1] dx = dx_array, dgates = dgates_array, dn = dn_array
    cdef floating[:, ::1] dh = dh_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, G))  # see ColumnSum
    cdef double[:, ::1] dbias_n = np.zeros((MAX_PARTS, H))
    cdef floating[::1] panels = _panels(G if reset_after else 2 * H, H, dtype)
    cdef floating[::1] panels_n = None if reset_after else _panels(H, H, dtype)
    # dx: @ w_ih (reset_after: @ w_ih[:2H] and @ w_ih[2H:])
    cdef floating[::1] panels_ih = _product_panels(T * B, 2 * H if reset_after else G, D, dtype)
    cdef floating[::1] panels_n_ih = _product_panels(T * B, H, D, dtype) if reset_after else None

    init_work(&work, floating is double, T, B, H, G, reverse, reset_after, lengths_ptr(lengths))
    if reset_after:
        # per step: @ w_hh
        set_operand(&work.step_b[0], G, H, &w_hh[0, 0], H, False, panels_ptr(panels))
    else:
        # per step: @ w_hh[:2H] and, for d(r * h_{t-1}), @ w_hh[2H:]
        set_operand(&work.step_b[0], 2 * H, H, &w_hh[0, 0], H, False, panels_ptr(panels))
        set_operand(&work.step_b[1], H, H, &w_hh[2 * H, 0], H, False, panels_ptr(panels_n))
    work.gates, work.hs = <void *>&gates[0, 0, 0], <void *>&hs[0, 0, 0]
    work.extra = <void *>&extra[0, 0, 0]
    work.dy = &dy[0, 0, 0]
    work.dgates, work.dn, work.dh = &dgates[0, 0, 0], &dn[0, 0, 0], &dh[0, 0]
    work.scratch = &dn[0, 0, 0]  # reset_after=False: drh, one step
    init_products(&weights, floating is double)
    if reset_after:
        # dx = dgates[..., :2H] @ w_ih[:2H] + dn @ w_ih[2H:]
        product(&weights, False, False, T * B, D, 2 * H, &dgates[0, 0, 0], G, &w_ih[0, 0], D,
                False, &dx[0, 0, 0], D)
        pack_last(&weights, panels_ptr(panels_ih))
        product(&weights, False, False, T * B, D, H, &dn[0, 0, 0], H, &w_ih[2 * H, 0], D, True,
                &dx[0, 0, 0], D)
        pack_last(&weights, panels_ptr(panels_n_ih))
        # dw_ih[:2H] += dgates[..., :2H].T @ x; dw_ih[2H:] += dn.T @ x
        product(&weights, True, False, 2 * H, D, T * B, &dgates[0, 0, 0], G, &x[0, 0, 0], D,
                True, &dw_ih[0, 0], D)
        product(&weights, True, False, H, D, T * B, &dn[0, 0, 0], H, &x[0, 0, 0], D, True,
                &dw_ih[2 * H, 0], D)
        # dw_hh += dgates.T @ hs[rev:rev + T]
        product(&weights, True, False, G, H, T * B, &dgates[0, 0, 0], G, &hs[rev, 0, 0], H,
                True, &dw_hh[0, 0], H)
        if db_ih is not None:
            # dbias = dgates.sum((0, 1)); dbias_n = dn.sum((0, 1))
            column_sum(&weights, rows, G, &dgates[0, 0, 0], G, &dbias[0, 0])
            column_sum(&weights, rows, H, &dn[0, 0, 0], H, &dbias_n[0, 0])
    else:
        # dx = dgates @ w_ih; dw_ih += dgates.T @ x
        input_gradient_products(&weights, T * B, D, G, &dgates[0, 0, 0], &w_ih[0, 0], &x[0, 0, 0],
                                &dx[0, 0, 0], &dw_ih[0, 0], panels_ptr(panels_ih))
        # dw_hh[:2H] += dgates[..., :2H].T @ hs[rev:rev + T]; dw_hh[2H:] += dgates[..., 2H:].T @ rh
        product(&weights, True, False, 2 * H, H, T * B, &dgates[0, 0, 0], G, &hs[rev, 0, 0], H,
                True, &dw_hh[0, 0], H)
        product(&weights, True, False, H, H, T * B, &dgates[0, 0, 2 * H], G, &extra[0, 0, 0], H,
                True, &dw_hh[2 * H, 0], H)
        if db_ih is not None:
            # dbias = dgates.sum((0, 1))
            column_sum(&weights, rows, G, &dgates[0, 0, 0], G, &dbias[0, 0])

    copy_state(&dh[0, 0], &dh_n[0, 0], B, H)
    work.phase = GRU_BACKWARD
    run_pass(&work, &weights, rows * G * (D + H))
    if db_ih is not None:
        # db_hh += dbias; db_ih += dbias (reset_after: its r, z part, then dbias_n)
        add_to(&db_hh[0], &dbias[0, 0], G)
        if reset_after:
            add_to(&db_ih[0], &dbias[0, 0], 2 * H)
            add_to(&db_ih[2 * H], &dbias_n[0, 0], H)
        else:
            add_to(&db_ih[0], &dbias[0, 0], G)
    return dx_array, (dh_array,)


# --- Elman RNN -------------------------------------------------------------------------------

def rnn_forward(x, state0, params, lengths, reverse, nonlinearity="tanh"):
    """Elman RNN forward over one direction of one layer -> (y, (h_n,), cache); see _backends."""
    w_hh = params["w_hh"]
    relu = nonlinearity == "relu"
    if x.dtype == np.float32:
        return _rnn_forward[float](x, state0[0], params["w_ih"], w_hh, params["b_ih"],
                                   params["b_hh"], lengths, reverse, relu)
    return _rnn_forward[double](x, state0[0], params["w_ih"], w_hh, params["b_ih"],
                                params["b_hh"], lengths, reverse, relu)


cdef tuple _rnn_forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                        const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                        const floating[::1] b_ih, const floating[::1] b_hh,
                        const int64_t[::1] lengths, bint reverse, bint relu):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = h0.shape[1]
    cdef int rev = reverse
    cdef Work work
    cdef Products projection
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the h sequence only, T*B*H values; the input projection of step t is
    # computed into the slot that then receives h_t.
    hs_array = _empty((T + 1, B, H), dtype)
    y_array = _empty((T, B, H), dtype)
    h_n_array = _empty((B, H), dtype)
    cdef floating[:, :, ::1] hs = hs_array, y = y_array
    cdef floating[:, ::1] h_n = h_n_array
    cdef floating[::1] panels = _panels(H, H, dtype)
    cdef floating[::1] panels_ih = _product_panels(T * B, D, H, dtype)

    init_work(&work, floating is double, T, B, H, H, reverse, relu, lengths_ptr(lengths))
    # per step: @ w_hh.T
    set_operand(&work.step_b[0], H, H, &w_hh[0, 0], H, True, panels_ptr(panels))
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.hs, work.y = &hs[0, 0, 0], &y[0, 0, 0]
    # hs[1 - rev:T + 1 - rev] = x @ w_ih.T
    input_projection(&projection, floating is double, T * B, D, H, &x[0, 0, 0], &w_ih[0, 0],
                     &hs[1 - rev, 0, 0], H, panels_ptr(panels_ih))

    copy_state(&hs[rev * T, 0, 0], &h0[0, 0], B, H)
    work.phase = RNN_FORWARD
    run_pass(&work, &projection, <int64_t>T * B * H * (D + H))
    copy_state(&h_n[0, 0], &hs[(1 - rev) * T, 0, 0], B, H)
    cache = _make_cache(x.base, w_ih.base, w_hh.base, None, base_or_none(lengths), None,
                        hs_array, None, None, reverse, relu)
    return y_array, (h_n_array,), cache


def rnn_backward(dy, dstate_n, cache, grads):
    """Elman RNN backward through one forward call -> (dx, (dh0,)); adds into `grads`."""
    cdef _Cache c = cache
    if dy.dtype == np.float32:
        return _rnn_backward[float](dy, dstate_n[0], c.x, c.w_ih, c.w_hh, c.lengths, c.hs,
                                    c.reverse, c.option, grads["w_ih"], grads["w_hh"],
                                    grads["b_ih"], grads["b_hh"])
    return _rnn_backward[double](dy, dstate_n[0], c.x, c.w_ih, c.w_hh, c.lengths, c.hs,
                                 c.reverse, c.option, grads["w_ih"], grads["w_hh"],
                                 grads["b_ih"], grads["b_hh"])


cdef tuple _rnn_backward(const floating[:, :, ::1] dy, const floating[:, ::1] dh_n,
                         const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                         const floating[:, ::1] w_hh, const int64_t[::1] lengths,
                         const floating[:, :, ::1] hs, bint reverse, bint relu,
                         floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                         floating[::1] db_hh):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = hs.shape[2]
    cdef int rev = reverse
    cdef Work work
    cdef Products weights
    dtype = np.float32 if floating is float else np.float64
    dx_array = _empty((T, B, D), dtype)
    dpre_array = _empty((T, B, H), dtype)
    dh_array = _empty((B, H), dtype)
    cdef floating[:, :, ::1] dx = dx_array, dpre = dpre_array
    cdef floating[:, ::1] dh = dh_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, H))  # see ColumnSum
    cdef floating[::1] panels = _panels(H, H, dtype)
    cdef floating[::1] panels_ih = _product_panels(T * B, H, D, dtype)

    init_work(&work, floating is double, T, B, H, H, reverse, relu, lengths_ptr(lengths))
    # per step: @ w_hh
    set_operand(&work.step_b[0], H, H, &w_hh[0, 0], H, False, panels_ptr(panels))
    work.hs, work.dy = <void *>&hs[0, 0, 0], &dy[0, 0, 0]
    work.dgates, work.dh = &dpre[0, 0, 0], &dh[0, 0]
    init_products(&weights, floating is double)
    # dx = dpre @ w_ih; dw_ih += dpre.T @ x; dw_hh += dpre.T @ hs[rev:rev + T];
    # dbias = dpre.sum((0, 1))
    gate_gradient_products(&weights, T * B, D, H, H, &dpre[0, 0, 0], &w_ih[0, 0], &x[0, 0, 0],
                           &hs[rev, 0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0],
                           NULL if db_ih is None else &dbias[0, 0], panels_ptr(panels_ih))

    copy_state(&dh[0, 0], &dh_n[0, 0], B, H)
    work.phase = RNN_BACKWARD
    run_pass(&work, &weights, <int64_t>T * B * H * (D + H))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], H)
        add_to(&db_hh[0], &dbias[0, 0], H)
    return dx_array, (dh_array,)
