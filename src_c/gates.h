/* The C kernels of fastrnn, for float (suffix _f) and double (suffix _d): the fused per-step
 * gate kernels, and the helpers of the products around them.
 *
 * A gate kernel call handles one time step t of all B rows; every matrix is row-major and C-contiguous
 * unless a leading dimension is given. Gate rows follow SPEC §2 (LSTM i,f,g,o; GRU r,z,n).
 * `lengths` is NULL (every row runs all T steps) or int64 (B,): row b is valid at step t when
 * t < lengths[b]. An invalid row keeps its state, outputs zero, has zero gate gradients and passes
 * the state gradient through unchanged, so padding is handled here, without copies of sequences.
 * Bias pointers may be NULL (layer without bias); w_peep is zeros for an LSTM without peepholes.
 * The products around these kernels are made by fastrnn/_kernels.pyx: BLAS, or for the per-step
 * products on CPUs with AVX-512, matmul_packed (src_c/matmul_impl.h).
 */
#ifndef FASTRNN_GATES_H
#define FASTRNN_GATES_H

#include <stddef.h>
#include <stdint.h>

#define FASTRNN_DECLARE_KERNELS(REAL, S)                                                          \
    void lstm_forward_step##S(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,      \
                              const REAL *b_ih, const REAL *b_hh, const REAL *w_peep,             \
                              const REAL *h_prev, const REAL *c_prev, REAL *h, REAL *c, REAL *y); \
    void lstm_backward_step##S(int B, int H, int64_t t, const int64_t *lengths,                   \
                               const REAL *gates, const REAL *c_prev, const REAL *c,              \
                               const REAL *w_peep, const REAL *dy, REAL *dh, REAL *dc,            \
                               REAL *dgates, double *dpeep);                                      \
    void gru_forward_step##S(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,       \
                             const REAL *hproj, const REAL *b_ih, const REAL *b_hh,               \
                             const REAL *h_prev, REAL *hn, REAL *h, REAL *y);                     \
    void gru_forward_rz_step##S(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,    \
                                const REAL *b_ih, const REAL *b_hh, const REAL *h_prev,           \
                                REAL *rh);                                                        \
    void gru_forward_n_step##S(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,     \
                               const REAL *b_ih, const REAL *b_hh, const REAL *h_prev, REAL *h,   \
                               REAL *y);                                                          \
    void gru_backward_step##S(int B, int H, int64_t t, const int64_t *lengths,                    \
                              const REAL *gates, const REAL *hn, const REAL *h_prev,              \
                              const REAL *dy, REAL *dh, REAL *dgates, REAL *dn);                  \
    void gru_backward_nz_step##S(int B, int H, int64_t t, const int64_t *lengths,                 \
                                 const REAL *gates, const REAL *h_prev, const REAL *dy, REAL *dh, \
                                 REAL *dgates);                                                   \
    void gru_backward_r_step##S(int B, int H, int64_t t, const int64_t *lengths,                  \
                                const REAL *gates, const REAL *h_prev, const REAL *drh, REAL *dh, \
                                REAL *dgates);                                                    \
    void rnn_forward_step##S(int B, int H, int64_t t, const int64_t *lengths, int relu, REAL *h, \
                             const REAL *b_ih, const REAL *b_hh, const REAL *h_prev, REAL *y);    \
    void rnn_backward_step##S(int B, int H, int64_t t, const int64_t *lengths, int relu,          \
                              const REAL *h, const REAL *dy, REAL *dh, REAL *dpre);               \
    void colsum##S(int64_t rows, int n, const REAL *a, int64_t lda, double *acc);                 \
    size_t packed_size##S(int k, int n);                                                          \
    void pack_panels##S(int k, int n, const REAL *b, int ldb, int transposed, REAL *packed);      \
    void matmul_packed##S(int m, int n, int k, const REAL *a, int lda, const REAL *packed,        \
                          int accumulate, REAL *c, int ldc);                                      \
    void matmul_tn##S(int m, int n, int k, const REAL *a, int lda, const REAL *b, int ldb,         \
                      int accumulate, REAL *c, int ldc);

FASTRNN_DECLARE_KERNELS(float, _f)
FASTRNN_DECLARE_KERNELS(double, _d)

/* Whether this CPU runs matmul_packed and matmul_tn (AVX-512); when it does not, all products go
 * to BLAS. packed_size: values in the packed form of a (k, n) right operand. pack_panels: that
 * form of B (k, n), or of Bᵀ when B is given as (n, k) and `transposed`. matmul_packed:
 * C := A.B (+ C when accumulate) with B so packed. matmul_tn: C := Aᵀ.B (+ C when accumulate),
 * A (k, m) and B (k, n) as they are. */
int packed_matmul_supported(void);

/* Flush-to-zero and denormals-are-zero on for the calling thread (x86 SSE; a no-op elsewhere).
 * Returns the previous mode, to be handed back to fp_mode_restore at the end of the pass. */
unsigned int fp_mode_fast_enter(void);
void fp_mode_restore(unsigned int saved);

/* A spin-wait hint to the CPU (x86 PAUSE; a no-op elsewhere): one try of a short busy wait. */
void cpu_relax(void);

#endif
