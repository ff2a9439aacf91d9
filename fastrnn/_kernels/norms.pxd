# The gradient-norm record's per-step reduction of src_c/rows.h, and its fused wrapper: the cell
# modules call it inside their backward time loop when a record was asked for (docs/layers.md).
from cython cimport floating
from libc.stdint cimport int64_t


cdef extern from "rows.h" nogil:
    double state_grad_sq_f(int B, int H, int64_t t, const int64_t *lengths, const float *dy,
                           const float *dh)
    double state_grad_sq_d(int B, int H, int64_t t, const int64_t *lengths, const double *dy,
                           const double *dh)


cdef inline void record_state_grad(double *sq, int B, int H, int64_t t, const int64_t *lengths,
                                   const floating *dy, const floating *dh) noexcept nogil:
    """sq[t] += ‖dy + dh‖² over the valid rows of step t; nothing when sq is NULL (no record)."""
    if sq == NULL:
        return
    if floating is float:
        sq[t] += state_grad_sq_f(B, H, t, lengths, dy, dh)
    else:
        sq[t] += state_grad_sq_d(B, H, t, lengths, dy, dh)
