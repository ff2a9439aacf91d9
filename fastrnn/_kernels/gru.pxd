# The GRU gate kernels of src_c/gru.h for float (_f) and double (_d), and one fused wrapper per
# kernel. The header holds the kernels' definitions: only gru.pyx cimports this.
from cython cimport floating
from libc.stdint cimport int64_t


cdef extern from "gru.h" nogil:
    void gru_forward_step_f(int B, int H, int64_t t, const int64_t *lengths, float *gates,
                            const float *hproj, const float *b_ih, const float *b_hh,
                            const float *h_prev, float *hn, float *h, float *y)
    void gru_forward_step_d(int B, int H, int64_t t, const int64_t *lengths, double *gates,
                            const double *hproj, const double *b_ih, const double *b_hh,
                            const double *h_prev, double *hn, double *h, double *y)
    void gru_forward_rz_step_f(int B, int H, int64_t t, const int64_t *lengths, float *gates,
                               const float *b_ih, const float *b_hh, const float *h_prev,
                               float *rh)
    void gru_forward_rz_step_d(int B, int H, int64_t t, const int64_t *lengths, double *gates,
                               const double *b_ih, const double *b_hh, const double *h_prev,
                               double *rh)
    void gru_forward_n_step_f(int B, int H, int64_t t, const int64_t *lengths, float *gates,
                              const float *b_ih, const float *b_hh, const float *h_prev,
                              float *h, float *y)
    void gru_forward_n_step_d(int B, int H, int64_t t, const int64_t *lengths, double *gates,
                              const double *b_ih, const double *b_hh, const double *h_prev,
                              double *h, double *y)
    void gru_backward_step_f(int B, int H, int64_t t, const int64_t *lengths, const float *gates,
                             const float *hn, const float *h_prev, const float *dy, float *dh,
                             float *dgates, float *dn)
    void gru_backward_step_d(int B, int H, int64_t t, const int64_t *lengths,
                             const double *gates, const double *hn, const double *h_prev,
                             const double *dy, double *dh, double *dgates, double *dn)
    void gru_backward_nz_step_f(int B, int H, int64_t t, const int64_t *lengths,
                                const float *gates, const float *h_prev, const float *dy,
                                float *dh, float *dgates)
    void gru_backward_nz_step_d(int B, int H, int64_t t, const int64_t *lengths,
                                const double *gates, const double *h_prev, const double *dy,
                                double *dh, double *dgates)
    void gru_backward_r_step_f(int B, int H, int64_t t, const int64_t *lengths,
                               const float *gates, const float *h_prev, const float *drh,
                               float *dh, float *dgates)
    void gru_backward_r_step_d(int B, int H, int64_t t, const int64_t *lengths,
                               const double *gates, const double *h_prev, const double *drh,
                               double *dh, double *dgates)


cdef inline void gru_forward_step(int B, int H, int64_t t, const int64_t *lengths, floating *gates,
                                  const floating *hproj, const floating *b_ih,
                                  const floating *b_hh, const floating *h_prev, floating *hn,
                                  floating *h, floating *y) noexcept nogil:
    """One GRU step (reset_after) of B rows, forward (src_c/gru.h)."""
    if floating is float:
        gru_forward_step_f(B, H, t, lengths, gates, hproj, b_ih, b_hh, h_prev, hn, h, y)
    else:
        gru_forward_step_d(B, H, t, lengths, gates, hproj, b_ih, b_hh, h_prev, hn, h, y)


cdef inline void gru_forward_rz_step(int B, int H, int64_t t, const int64_t *lengths,
                                     floating *gates, const floating *b_ih, const floating *b_hh,
                                     const floating *h_prev, floating *rh) noexcept nogil:
    """The r, z half of a GRU step (reset_after=False), forward (src_c/gru.h)."""
    if floating is float:
        gru_forward_rz_step_f(B, H, t, lengths, gates, b_ih, b_hh, h_prev, rh)
    else:
        gru_forward_rz_step_d(B, H, t, lengths, gates, b_ih, b_hh, h_prev, rh)


cdef inline void gru_forward_n_step(int B, int H, int64_t t, const int64_t *lengths,
                                    floating *gates, const floating *b_ih, const floating *b_hh,
                                    const floating *h_prev, floating *h,
                                    floating *y) noexcept nogil:
    """The n half of a GRU step (reset_after=False), forward (src_c/gru.h)."""
    if floating is float:
        gru_forward_n_step_f(B, H, t, lengths, gates, b_ih, b_hh, h_prev, h, y)
    else:
        gru_forward_n_step_d(B, H, t, lengths, gates, b_ih, b_hh, h_prev, h, y)


cdef inline void gru_backward_step(int B, int H, int64_t t, const int64_t *lengths,
                                   const floating *gates, const floating *hn,
                                   const floating *h_prev, const floating *dy, floating *dh,
                                   floating *dgates, floating *dn) noexcept nogil:
    """One GRU step (reset_after) of B rows, backward (src_c/gru.h)."""
    if floating is float:
        gru_backward_step_f(B, H, t, lengths, gates, hn, h_prev, dy, dh, dgates, dn)
    else:
        gru_backward_step_d(B, H, t, lengths, gates, hn, h_prev, dy, dh, dgates, dn)


cdef inline void gru_backward_nz_step(int B, int H, int64_t t, const int64_t *lengths,
                                      const floating *gates, const floating *h_prev,
                                      const floating *dy, floating *dh,
                                      floating *dgates) noexcept nogil:
    """The n, z part of a GRU step (reset_after=False), backward (src_c/gru.h)."""
    if floating is float:
        gru_backward_nz_step_f(B, H, t, lengths, gates, h_prev, dy, dh, dgates)
    else:
        gru_backward_nz_step_d(B, H, t, lengths, gates, h_prev, dy, dh, dgates)


cdef inline void gru_backward_r_step(int B, int H, int64_t t, const int64_t *lengths,
                                     const floating *gates, const floating *h_prev,
                                     const floating *drh, floating *dh,
                                     floating *dgates) noexcept nogil:
    """The r part of a GRU step (reset_after=False), backward (src_c/gru.h)."""
    if floating is float:
        gru_backward_r_step_f(B, H, t, lengths, gates, h_prev, drh, dh, dgates)
    else:
        gru_backward_r_step_d(B, H, t, lengths, gates, h_prev, drh, dh, dgates)
