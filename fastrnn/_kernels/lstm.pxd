# The LSTM gate kernels of src_c/lstm.h for float (_f) and double (_d), and one fused wrapper per
# kernel. The header holds the kernels' definitions: only lstm.pyx cimports this.
from cython cimport floating
from libc.stdint cimport int64_t


cdef extern from "lstm.h" nogil:
    void lstm_forward_step_f(int B, int H, int64_t t, const int64_t *lengths, float *gates,
                             const float *b_ih, const float *b_hh, const float *w_peep,
                             const float *h_prev, const float *c_prev, float *h, float *c, float *y)
    void lstm_forward_step_d(int B, int H, int64_t t, const int64_t *lengths, double *gates,
                             const double *b_ih, const double *b_hh, const double *w_peep,
                             const double *h_prev, const double *c_prev, double *h, double *c,
                             double *y)
    void lstm_backward_step_f(int B, int H, int64_t t, const int64_t *lengths, const float *gates,
                              const float *c_prev, const float *c, const float *w_peep,
                              const float *dy, float *dh, float *dc, float *dgates, double *dpeep,
                              double *dc_sq)
    void lstm_backward_step_d(int B, int H, int64_t t, const int64_t *lengths,
                              const double *gates, const double *c_prev, const double *c,
                              const double *w_peep, const double *dy, double *dh, double *dc,
                              double *dgates, double *dpeep, double *dc_sq)
    void lstm_nf_forward_step_f(int B, int H, int64_t t, const int64_t *lengths, float *gates,
                                const float *b_ih, const float *b_hh, const float *w_peep,
                                const float *h_prev, const float *c_prev, float *h, float *c,
                                float *y)
    void lstm_nf_forward_step_d(int B, int H, int64_t t, const int64_t *lengths, double *gates,
                                const double *b_ih, const double *b_hh, const double *w_peep,
                                const double *h_prev, const double *c_prev, double *h, double *c,
                                double *y)
    void lstm_nf_backward_step_f(int B, int H, int64_t t, const int64_t *lengths,
                                 const float *gates, const float *c_prev, const float *c,
                                 const float *w_peep, const float *dy, float *dh, float *dc,
                                 float *dgates, double *dpeep, double *dc_sq)
    void lstm_nf_backward_step_d(int B, int H, int64_t t, const int64_t *lengths,
                                 const double *gates, const double *c_prev, const double *c,
                                 const double *w_peep, const double *dy, double *dh, double *dc,
                                 double *dgates, double *dpeep, double *dc_sq)


cdef inline void lstm_forward_step(bint forget_gate, int B, int H, int64_t t,
                                   const int64_t *lengths, floating *gates, const floating *b_ih,
                                   const floating *b_hh, const floating *w_peep,
                                   const floating *h_prev, const floating *c_prev, floating *h,
                                   floating *c, floating *y) noexcept nogil:
    """One LSTM step of B rows, forward, with or without forget gate (src_c/lstm.h)."""
    if floating is float:
        if forget_gate:
            lstm_forward_step_f(B, H, t, lengths, gates, b_ih, b_hh, w_peep, h_prev, c_prev, h,
                                c, y)
        else:
            lstm_nf_forward_step_f(B, H, t, lengths, gates, b_ih, b_hh, w_peep, h_prev, c_prev,
                                   h, c, y)
    else:
        if forget_gate:
            lstm_forward_step_d(B, H, t, lengths, gates, b_ih, b_hh, w_peep, h_prev, c_prev, h,
                                c, y)
        else:
            lstm_nf_forward_step_d(B, H, t, lengths, gates, b_ih, b_hh, w_peep, h_prev, c_prev,
                                   h, c, y)


cdef inline void lstm_backward_step(bint forget_gate, int B, int H, int64_t t,
                                    const int64_t *lengths, const floating *gates,
                                    const floating *c_prev, const floating *c,
                                    const floating *w_peep, const floating *dy, floating *dh,
                                    floating *dc, floating *dgates, double *dpeep,
                                    double *dc_sq) noexcept nogil:
    """One LSTM step of B rows, backward, with or without forget gate (src_c/lstm.h)."""
    if floating is float:
        if forget_gate:
            lstm_backward_step_f(B, H, t, lengths, gates, c_prev, c, w_peep, dy, dh, dc, dgates,
                                 dpeep, dc_sq)
        else:
            lstm_nf_backward_step_f(B, H, t, lengths, gates, c_prev, c, w_peep, dy, dh, dc,
                                    dgates, dpeep, dc_sq)
    else:
        if forget_gate:
            lstm_backward_step_d(B, H, t, lengths, gates, c_prev, c, w_peep, dy, dh, dc, dgates,
                                 dpeep, dc_sq)
        else:
            lstm_nf_backward_step_d(B, H, t, lengths, gates, c_prev, c, w_peep, dy, dh, dc,
                                    dgates, dpeep, dc_sq)
