# The Elman RNN kernels of src_c/rnn.h for float (_f) and double (_d), and one fused wrapper per
# kernel. The header holds the kernels' definitions: only rnn.pyx cimports this.
from cython cimport floating
from libc.stdint cimport int64_t


cdef extern from "rnn.h" nogil:
    void rnn_forward_step_f(int B, int H, int64_t t, const int64_t *lengths, int relu, float *h,
                            const float *b_ih, const float *b_hh, const float *h_prev, float *y)
    void rnn_forward_step_d(int B, int H, int64_t t, const int64_t *lengths, int relu, double *h,
                            const double *b_ih, const double *b_hh, const double *h_prev,
                            double *y)
    void rnn_backward_step_f(int B, int H, int64_t t, const int64_t *lengths, int relu,
                             const float *h, const float *dy, float *dh, float *dpre)
    void rnn_backward_step_d(int B, int H, int64_t t, const int64_t *lengths, int relu,
                             const double *h, const double *dy, double *dh, double *dpre)


cdef inline void rnn_forward_step(int B, int H, int64_t t, const int64_t *lengths, int relu,
                                  floating *h, const floating *b_ih, const floating *b_hh,
                                  const floating *h_prev, floating *y) noexcept nogil:
    """One Elman step of B rows, forward (src_c/rnn.h)."""
    if floating is float:
        rnn_forward_step_f(B, H, t, lengths, relu, h, b_ih, b_hh, h_prev, y)
    else:
        rnn_forward_step_d(B, H, t, lengths, relu, h, b_ih, b_hh, h_prev, y)


cdef inline void rnn_backward_step(int B, int H, int64_t t, const int64_t *lengths, int relu,
                                   const floating *h, const floating *dy, floating *dh,
                                   floating *dpre) noexcept nogil:
    """One Elman step of B rows, backward (src_c/rnn.h)."""
    if floating is float:
        rnn_backward_step_f(B, H, t, lengths, relu, h, dy, dh, dpre)
    else:
        rnn_backward_step_d(B, H, t, lengths, relu, h, dy, dh, dpre)
