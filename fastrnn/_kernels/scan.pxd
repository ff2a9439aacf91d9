# The generic layer scan (scan.pyx): one direction of one layer as a pass of a cell's time loop
# and the whole-sequence products around it, run by the threads of threads.pyx. A cell supplies
# its time loop as a callback over a slice of the batch rows; nothing here knows the cells.
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from fastrnn._kernels.products cimport Operand, Products

cdef enum:
    MAX_OPERANDS = 2  # per-step right operands of a pass


# A cell's time loop over batch rows b0 .. b1-1 (`part`: the thread's index, for per-thread
# accumulators), on `cell`, the cell's own work struct.
ctypedef void (*rows_fn)(void *cell, int b0, int b1, int part) noexcept nogil


cdef struct Scan:
    # Forward: the products (the input projection) then the time loop; backward: the time loop
    # then the products (the gradients through all steps at once). `operands` are the per-step
    # right operands, packed at the start of the pass with those of the products.
    bint forward
    int B
    rows_fn time_loop
    void *cell
    int operand_count
    Operand operands[MAX_OPERANDS]
    Products products


cdef void init_scan(Scan *scan, bint is_double, bint forward, int B, rows_fn time_loop,
                    void *cell) noexcept
cdef Operand *add_operand(Scan *scan, int k, int n, const void *b, int ldb, bint transposed,
                          void *panels) noexcept
cdef int run_scan(Scan *scan, int64_t macs) except -1

cdef void input_projection(Products *products, int rows, int D, int G, const void *x,
                           const void *w_ih, void *out, int ldo, void *panels_ih) noexcept
cdef void input_gradient_products(Products *products, int rows, int D, int G,
                                  const void *dgates, const void *w_ih, const void *x, void *dx,
                                  void *dw_ih, void *panels_ih) noexcept
cdef void gate_gradient_products(Products *products, int rows, int D, int H, int G,
                                 const void *dgates, const void *w_ih, const void *x,
                                 const void *h_prev, void *dx, void *dw_ih, void *dw_hh,
                                 double *dbias, void *panels_ih) noexcept


cdef inline int64_t at(int t, int b, int B, int width) noexcept nogil:
    """Offset of row b of step t in a (·, B, width) buffer."""
    return (<int64_t>t * B + b) * width


cdef inline const int64_t *lengths_ptr(const int64_t[::1] lengths) noexcept:
    """The lengths of a pass, or NULL (every sequence has T steps)."""
    if lengths is None:
        return NULL
    return &lengths[0]


cdef inline const int64_t *lengths_from(const int64_t *lengths, int b0) noexcept nogil:
    """The lengths of the batch rows from b0 on (NULL: all sequences have T steps)."""
    if lengths == NULL:
        return NULL
    return lengths + b0


cdef inline const void *bias_ptr(const floating[::1] bias) noexcept:
    """The data of a bias, or NULL (a layer without bias)."""
    if bias is None:
        return NULL
    return &bias[0]


cdef inline void copy_state(floating *dst, const floating *src, int B, int H) noexcept nogil:
    memcpy(dst, src, <size_t>B * H * sizeof(floating))
