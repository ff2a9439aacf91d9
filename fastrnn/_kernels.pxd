# The C kernels of src_c/gates.h (contract in that header), for float (_f) and double (_d).
from libc.stdint cimport int64_t


cdef extern from "gates.h" nogil:
    void lstm_forward_step_f(int B, int H, int64_t t, const int64_t *lengths, float *gates,
                             const float *b_ih, const float *b_hh, const float *w_peep,
                             const float *h_prev, const float *c_prev, float *h, float *c, float *y)
    void lstm_forward_step_d(int B, int H, int64_t t, const int64_t *lengths, double *gates,
                             const double *b_ih, const double *b_hh, const double *w_peep,
                             const double *h_prev, const double *c_prev, double *h, double *c,
                             double *y)
    void lstm_backward_step_f(int B, int H, int64_t t, const int64_t *lengths, const float *gates,
                              const float *c_prev, const float *c, const float *w_peep,
                              const float *dy, float *dh, float *dc, float *dgates, double *dpeep)
    void lstm_backward_step_d(int B, int H, int64_t t, const int64_t *lengths, const double *gates,
                              const double *c_prev, const double *c, const double *w_peep,
                              const double *dy, double *dh, double *dc, double *dgates,
                              double *dpeep)

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

    void rnn_forward_step_f(int B, int H, int64_t t, const int64_t *lengths, int relu, float *h,
                            const float *b_ih, const float *b_hh, const float *h_prev, float *y)
    void rnn_forward_step_d(int B, int H, int64_t t, const int64_t *lengths, int relu, double *h,
                            const double *b_ih, const double *b_hh, const double *h_prev,
                            double *y)
    void rnn_backward_step_f(int B, int H, int64_t t, const int64_t *lengths, int relu,
                             const float *h, const float *dy, float *dh, float *dpre)
    void rnn_backward_step_d(int B, int H, int64_t t, const int64_t *lengths, int relu,
                             const double *h, const double *dy, double *dh, double *dpre)

    void colsum_f(int64_t rows, int n, const float *a, int64_t lda, double *acc)
    void colsum_d(int64_t rows, int n, const double *a, int64_t lda, double *acc)

    int packed_matmul_supported()
    size_t packed_size_f(int k, int n)
    size_t packed_size_d(int k, int n)
    void pack_panels_f(int k, int n, const float *b, int ldb, int transposed, float *packed)
    void pack_panels_d(int k, int n, const double *b, int ldb, int transposed, double *packed)
    void matmul_packed_f(int m, int n, int k, const float *a, int lda, const float *packed,
                         int accumulate, float *c, int ldc)
    void matmul_packed_d(int m, int n, int k, const double *a, int lda, const double *packed,
                         int accumulate, double *c, int ldc)
    void matmul_tn_f(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                     int accumulate, float *c, int ldc)
    void matmul_tn_d(int m, int n, int k, const double *a, int lda, const double *b, int ldb,
                     int accumulate, double *c, int ldc)

    unsigned int fp_mode_fast_enter()
    void fp_mode_restore(unsigned int saved)
    void cpu_relax()
