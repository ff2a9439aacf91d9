# The generic layer scan (scan.pyx): one direction of one layer as a pass of a cell's time loop
# and the whole-sequence products around it, run by the threads of threads.pyx. A cell supplies
# its time loop as a callback over a slice of the batch rows; nothing here knows the cells.
from cython cimport floating
from libc.stdint cimport int64_t

from fastrnn._kernels.cpu cimport load_flag, monotonic_ns
from fastrnn._kernels.products cimport Operand, Products
from fastrnn._kernels.threads cimport MAX_PARTS

cdef enum:
    MAX_OPERANDS = 2  # per-step right operands of a pass


cdef struct Steps:
    # Where the rows of a pass live (see Layout): the batch sorted by length, descending, so that
    # the rows active at step t are the first active[t]. Step t's rows of a per-step buffer
    # (rows, width) start at row step_row[t], those of state slot s of a state sequence at row
    # slot_row[s]. `lengths`: the sorted lengths, or NULL when every sequence has T steps.
    int T, B
    const int *active
    const int64_t *step_row
    const int64_t *slot_row
    const int64_t *lengths


cdef class Layout:
    cdef Steps steps
    cdef readonly int64_t rows, state_rows  # rows of a per-step buffer, of a state sequence
    cdef readonly bint reverse
    cdef readonly bint keep  # False: a state sequence holds two slots, used in turn
    # order[i]: the batch row sorted to position i (None: no lengths, the padded layout)
    cdef object order, pack_index, unpack_index, dead_rows, first_row, last_row
    cdef object active, step_row, slot_row, lengths


cdef struct Stop:
    # A pass stops early when a signal handler raised (Ctrl-C): part 0 checks for pending signals
    # every CHECK_NS of its time loop (see stop_requested), and every part reads `requested` at
    # every step. Read and written through cpu.h's atomic helpers: the parts run in threads.
    int requested
    int64_t next_check_ns


# A cell's time loop over batch rows b0 .. b1-1 (`part`: the thread's index, for per-thread
# accumulators), on `cell`, the cell's own work struct; it ends early when
# stop_requested(stop, part) says so.
ctypedef void (*rows_fn)(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil


cdef struct Scan:
    # Forward: the products (the input projection) then the time loop; backward: the time loop
    # then the products (the gradients through all steps at once). `operands` are the per-step
    # right operands, packed at the start of the pass with those of the products.
    bint forward
    int B
    const Steps *steps
    int bounds[MAX_PARTS + 1]  # part p runs rows bounds[p] .. bounds[p+1]-1, see run_scan
    Stop stop
    rows_fn time_loop
    void *cell
    int operand_count
    Operand operands[MAX_OPERANDS]
    Products products


cdef Layout layout(lengths, int T, int B, bint reverse, bint keep=*)
cdef void init_scan(Scan *scan, bint is_double, bint forward, Layout layout, rows_fn time_loop,
                    void *cell) noexcept
cdef Operand *add_operand(Scan *scan, int k, int n, const void *b, int ldb, bint transposed,
                          void *panels) noexcept
cdef int run_scan(Scan *scan, int64_t macs) except -1
cdef void check_signals(Stop *stop) noexcept nogil

cdef object check_cache(cache, type kind)
cdef tuple check_forward(str cell, x, state0, int state_parts, params, lengths, tuple gate_counts,
                         bint projection=*)
cdef void check_backward(str cell, dy, dstate_n, int state_parts, grads, cache_arrays, dtype,
                         int64_t T, int64_t B, int64_t D, int64_t H, int64_t G, int64_t Hh,
                         norms) except *
cdef object check_array(str name, array, dtype, tuple shape, bint writable=*)

cdef void input_projection(Products *products, int rows, int D, int G, const void *x,
                           const void *w_ih, void *out, int ldo, void *panels_ih) noexcept
cdef void input_gradient_products(Products *products, int rows, int D, int G,
                                  const void *dgates, const void *w_ih, const void *x, void *dx,
                                  void *dw_ih, void *panels_ih) noexcept
cdef void gate_gradient_products(Products *products, int rows, int D, int H, int G,
                                 const void *dgates, const void *w_ih, const void *x,
                                 const void *h_prev, void *dx, void *dw_ih, void *dw_hh,
                                 double *dbias, void *panels_ih) noexcept


cdef inline bint stop_requested(Stop *stop, int part) noexcept nogil:
    """Whether the time loop of `part` should end now (at a step boundary): part 0 first
    checks for pending signals when CHECK_NS have passed since it last did."""
    if part == 0 and monotonic_ns() >= stop.next_check_ns:
        check_signals(stop)
    return load_flag(&stop.requested)


cdef inline int64_t step_at(const Steps *steps, int t, int b, int width) noexcept nogil:
    """Offset of row b of step t in a per-step buffer (Layout.rows, width)."""
    return (steps.step_row[t] + b) * <int64_t>width


cdef inline int64_t slot_at(const Steps *steps, int slot, int b, int width) noexcept nogil:
    """Offset of row b of state slot `slot` in a state sequence (Layout.state_rows, width)."""
    return (steps.slot_row[slot] + b) * <int64_t>width


cdef inline int active_rows(const Steps *steps, int t, int b0, int b1) noexcept nogil:
    """How many of the rows b0 .. b1-1 step t runs (rows b0 .. b0 + that - 1); <= 0: none."""
    return min(b1, steps.active[t]) - b0


cdef inline const void *bias_ptr(const floating[::1] bias) noexcept:
    """The data of a bias, or NULL (a layer without bias)."""
    if bias is None:
        return NULL
    return &bias[0]

