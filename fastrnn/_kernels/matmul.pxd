# The matrix kernels of src_c/matmul.h for float (_f) and double (_d), and one fused wrapper per
# kernel. Cimported by products.pyx only: the header holds the kernels' definitions.
from cython cimport floating
from libc.stdint cimport int64_t


cdef extern from "matmul.h" nogil:
    int FASTRNN_PACKED_MATMUL  # 1 when this build's compiler built the AVX-512 kernels
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
    void colsum_f(int64_t rows, int n, const float *a, int64_t lda, double *acc)
    void colsum_d(int64_t rows, int n, const double *a, int64_t lda, double *acc)


cdef inline size_t packed_size(int k, int n, floating *tag) noexcept nogil:
    """Values in the packed form of a (k, n) right operand; `tag` (unread) picks the type."""
    if floating is float:
        return packed_size_f(k, n)
    else:
        return packed_size_d(k, n)


cdef inline void pack_panels(int k, int n, const floating *b, int ldb, int transposed,
                             floating *packed) noexcept nogil:
    """B (k, n), or Bᵀ given (n, k) when `transposed`, into panels for matmul_packed."""
    if floating is float:
        pack_panels_f(k, n, b, ldb, transposed, packed)
    else:
        pack_panels_d(k, n, b, ldb, transposed, packed)


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


cdef inline void colsum(int64_t rows, int n, const floating *a, int64_t lda,
                        double *acc) noexcept nogil:
    """acc[j] += sum over the rows i of a[i, j], summed in double."""
    if floating is float:
        colsum_f(rows, n, a, lda, acc)
    else:
        colsum_d(rows, n, a, lda, acc)
