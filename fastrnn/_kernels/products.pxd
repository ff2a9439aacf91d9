# The matrix products of a pass (products.pyx): the per-step products on a right operand packed
# once per pass, and the whole-sequence products and column sums, split among the threads.
from cython cimport floating
from libc.stdint cimport int64_t

cdef enum:
    MAX_PRODUCTS = 6
    MAX_SUMS = 2


cdef struct Operand:
    # The right operand B (k, n) of a per-step product: `b`, with row stride ldb, holds B, or Bᵀ
    # when `transposed`; `panels` is B packed for matmul_packed, or NULL to use BLAS.
    int k, n, ldb
    bint transposed
    const void *b
    void *panels


cdef struct Product:
    # C := op(A).op(B) (+ C when accumulate), as for gemm; with `panels` (op(A) = A only), op(B)
    # is packed there once and the rows of C come from matmul_packed instead of BLAS.
    # op(A) = Aᵀ (then op(B) = B) is a weight gradient, a sum over all T*B rows: the threads split
    # that sum, not the rows of C (which would have every thread pack all of B again), and part
    # q > 0 writes its share into block q - 1 of `partials`, which split_sums sets for a team of
    # more than one thread and a sum of enough rows. The gradients then differ by rounding with
    # the number of threads.
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
    # rows its weight gradients just read, still in its cache) into acc[q], and add_partials_part
    # folds those into acc[0].
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
    ColumnSum column_sums[MAX_SUMS]


cdef void set_operand(Operand *op, int k, int n, const void *b, int ldb, bint transposed,
                      void *panels) noexcept
cdef void step_matmul(const Operand *op, int m, const floating *a, int lda, floating beta,
                      floating *c, int ldc) noexcept nogil
cdef object step_panels(int k, int n, dtype, int64_t steps, int rows)
cdef object product_panels(int64_t rows, int k, int n, dtype)

cdef void init_products(Products *products, bint is_double) noexcept
cdef void product(Products *products, bint trans_a, bint trans_b, int m, int n, int k,
                  const void *a, int lda, const void *b, int ldb, bint accumulate, void *c,
                  int ldc) noexcept
cdef void pack_last(Products *products, void *panels) noexcept
cdef void column_sum(Products *products, int64_t rows, int n, const void *a, int lda,
                     double *acc) noexcept
cdef object split_sums(Products *products, int parts, dtype)

cdef void pack_part(const Products *products, const Operand *operands, int count,
                    int part, int parts) noexcept nogil
cdef void products_part(void *work, int part, int parts) noexcept nogil
cdef void add_partials_part(void *work, int part, int parts) noexcept nogil


cdef inline void *panels_ptr(floating[::1] panels) noexcept:
    """The data of a buffer from `panels`, or NULL (None: the products use BLAS)."""
    if panels is None:
        return NULL
    return &panels[0]


cdef inline void add_to(floating *out, const double *acc, int n) noexcept nogil:
    """out += acc, the way parameter gradients are accumulated."""
    cdef int j
    for j in range(n):
        out[j] += <floating>acc[j]
