"""The matrix products of a pass (see products.pxd), for every cell: BLAS through
scipy.linalg.cython_blas, or on CPUs with AVX-512 the kernels of src_c/matmul.h.

The per-step products multiply by the same right operand (W_hh or a block of it, or its
transpose) at every step. On CPUs with AVX-512 it is packed once per pass and the products run in
matmul_packed, which at a few dozen rows beats BLAS, whose packing on every call costs about as
much as the arithmetic; elsewhere they go to BLAS.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.matmul cimport (FASTRNN_PACKED_MATMUL, colsum, matmul_packed, matmul_tn,
                                      pack_panels, packed_matmul_supported, packed_size)
from fastrnn._kernels.threads cimport MAX_PARTS, part_start

cdef enum:
    # Whole-sequence products of fewer rows keep BLAS (see pack_last): over few rows, packing the
    # right operand costs more than matmul_packed saves.
    PACKED_MIN_ROWS = 512
    # Weight gradients whose row of A and row of B together take at most this many bytes run in
    # matmul_tn (AVX-512), wider ones in BLAS: matmul_tn reads its operands in place, which saves
    # BLAS's packing while they stay in cache, and loses to BLAS's blocking once they do not.
    OUTER_MAX_BYTES = 640 * 4
    # Weight gradients are split among threads by the rows they sum over (see Product) from this
    # many rows on; over fewer, adding up the threads' partial sums would cost about as much as
    # the product, so their threads split the rows of C instead.
    SPLIT_SUM_MIN_ROWS = 512


# The per-step right operand is packed only for a pass of at least this many steps and two batch
# rows: packing reads and writes all of W_hh, which a short pass does not earn back (one step at
# B = 1, generation, reads W_hh once in gemv). Set by _set_step_pack_min_steps for benchmarks.
cdef int _step_pack_min_steps = 16


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
               const floating *a, int lda, const floating *b, int ldb, floating beta,
               floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C, row-major; C is (m, n), op(X) = Xᵀ when trans_x."""
    # Column-major BLAS reads a row-major matrix as its transpose: compute
    # Cᵀ := alpha * op(B)ᵀ.op(A)ᵀ + beta * Cᵀ, i.e. swap the operands and m with n.
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int one = 1
    if m == 1 and not trans_a:
        # One row: c := alpha * op(B)ᵀ.a + beta * c in gemv, which reads B once; gemm would pack
        # it first. Column-major, B (k, n) is the (n, k) matrix Bᵀ, and Bᵀ (n, k) is (k, n).
        # C is cleared for beta = 0: gemv may scale what is there, and 0 * NaN is NaN.
        if beta == 0:
            memset(c, 0, <size_t>n * sizeof(floating))
        if floating is float:
            sgemv(b'T' if trans_b else b'N', &n if not trans_b else &k,
                  &k if not trans_b else &n, &alpha, <float *>b, &ldb, <float *>a, &one, &beta,
                  c, &one)
        else:
            dgemv(b'T' if trans_b else b'N', &n if not trans_b else &k,
                  &k if not trans_b else &n, &alpha, <double *>b, &ldb, <double *>a, &one, &beta,
                  c, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda, &beta, c, &ldc)


cdef bint _packed_products = packed_matmul_supported()


def _packed_products_compiled():
    """Whether this build's compiler built matmul_packed (GCC or clang on x86-64)."""
    return bool(FASTRNN_PACKED_MATMUL)


def _packed_products_supported():
    """Whether matmul_packed runs here: compiled in, and this CPU has AVX-512 and FMA."""
    return bool(packed_matmul_supported())


def _use_packed_products(bint enabled):
    """Run the per-step products and the whole-sequence products that allow it (pack_last) in
    matmul_packed, and the narrower weight gradients (OUTER_MAX_BYTES) in matmul_tn (where
    supported) or, if not `enabled`, all of them in BLAS; returns the previous setting. For tests
    and benchmarks."""
    global _packed_products
    previous = _packed_products
    _packed_products = enabled and packed_matmul_supported()
    return previous


cdef void set_operand(Operand *op, int k, int n, const void *b, int ldb, bint transposed,
                      void *panels) noexcept:
    op.k, op.n, op.b, op.ldb, op.transposed, op.panels = k, n, b, ldb, transposed, panels


cdef void step_matmul(const Operand *op, int m, const floating *a, int lda, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C := A.B + beta * C (beta 0 or 1), row-major, A (m, k), B = op: a product of one step."""
    if op.panels == NULL:
        gemm(False, op.transposed, m, op.n, op.k, 1, a, lda, <const floating *>op.b, op.ldb, beta,
             c, ldc)
    else:
        matmul_packed(m, op.n, op.k, a, lda, <const floating *>op.panels, beta != 0, c, ldc)


cdef object step_panels(int k, int n, dtype, int64_t steps, int rows):
    """A buffer for the packed form of a (k, n) right operand multiplied at each of `steps` steps
    by `rows` rows, or None when the products use BLAS (see _step_pack_min_steps)."""
    if steps < _step_pack_min_steps or rows < 2:
        return None
    return operand_panels(k, n, dtype)


cdef object operand_panels(int k, int n, dtype):
    """A buffer for the packed form of a (k, n) right operand, or None when products use BLAS."""
    if not _packed_products:
        return None
    if dtype == np.float32:
        return empty((packed_size(k, n, <float *>NULL),), np.float32)
    return empty((packed_size(k, n, <double *>NULL),), np.float64)


def _set_step_pack_min_steps(int steps):
    """Pack the per-step operand from passes of `steps` steps on; returns the previous setting.
    For benchmarks."""
    global _step_pack_min_steps
    previous = _step_pack_min_steps
    _step_pack_min_steps = steps
    return previous


cdef object product_panels(int64_t rows, int k, int n, dtype):
    """step_panels for the right operand of a whole-sequence product of `rows` rows: None (BLAS)
    below PACKED_MIN_ROWS, where packing it costs more than matmul_packed saves."""
    if rows < PACKED_MIN_ROWS:
        return None
    return operand_panels(k, n, dtype)


cdef void init_products(Products *products, bint is_double) noexcept:
    products.is_double, products.count, products.sums = is_double, 0, 0


cdef void product(Products *products, bint trans_a, bint trans_b, int m, int n, int k,
                  const void *a, int lda, const void *b, int ldb, bint accumulate, void *c,
                  int ldc) noexcept:
    """Append C := op(A).op(B) (+ C when accumulate) to `products`."""
    cdef Product *p = &products.items[products.count]
    p.trans_a, p.trans_b, p.accumulate = trans_a, trans_b, accumulate
    p.m, p.n, p.k, p.lda, p.ldb, p.ldc = m, n, k, lda, ldb, ldc
    p.a, p.b, p.c, p.panels, p.partials = a, b, c, NULL, NULL
    products.count += 1


cdef void pack_last(Products *products, void *panels) noexcept:
    """Run the product appended last (op(A) = A) on its op(B) packed into `panels` (from
    product_panels), or through BLAS when panels is NULL. At the shapes of a pass (K and N a few
    hundred at most, thousands of rows) matmul_packed beats sgemm, which packs op(B) again in
    every thread and its slice of A as well."""
    products.items[products.count - 1].panels = panels


cdef void column_sum(Products *products, int64_t rows, int n, const void *a, int lda,
                     double *acc) noexcept:
    """Append acc[0] += A.sum(axis=0) to `products`; acc is (MAX_PARTS, n), zeros."""
    cdef ColumnSum *s = &products.column_sums[products.sums]
    s.rows, s.n, s.a, s.lda, s.acc = rows, n, a, lda, acc
    products.sums += 1


cdef inline bint sum_is_split(const Product *p, int parts) noexcept nogil:
    return p.trans_a and parts > 1 and p.k >= SPLIT_SUM_MIN_ROWS


cdef object split_sums(Products *products, int parts, dtype):
    """Give the weight gradients of `products` whose sum the threads split the partial sums of
    parts 1 .. parts - 1 (see Product); returns their buffer (None if there are none), which must
    live until the products have run."""
    cdef int64_t size = 0
    cdef int i
    cdef Product *p
    for i in range(products.count):
        if sum_is_split(&products.items[i], parts):
            size += <int64_t>products.items[i].m * products.items[i].n
    if size == 0:
        return None
    buffer = empty(((parts - 1) * size,), dtype)
    cdef char *start = <char *><uintptr_t>buffer.ctypes.data
    for i in range(products.count):
        p = &products.items[i]
        if sum_is_split(p, parts):
            p.partials = start
            start += (parts - 1) * <int64_t>p.m * p.n * buffer.itemsize
    return buffer


cdef void weight_gradient(const Product *p, int m, int k, const floating *a, const floating *b,
                          bint accumulate, floating *c, int ldc) noexcept nogil:
    """C (m, p.n) := Aᵀ.B (+ C when accumulate), A (k, m) and B (k, p.n) with p's strides: part of
    the weight gradient p, in matmul_tn when p is narrow enough (OUTER_MAX_BYTES), else BLAS."""
    if not _packed_products or (p.m + p.n) * sizeof(floating) > OUTER_MAX_BYTES:
        gemm(True, False, m, p.n, k, 1, a, p.lda, b, p.ldb, 1 if accumulate else 0, c, ldc)
    else:
        matmul_tn(m, p.n, k, a, p.lda, b, p.ldb, accumulate, c, ldc)


cdef void weight_gradient_part(const Product *p, int part, int parts,
                               const floating *a) noexcept nogil:
    """Part `part` of `parts` of the weight gradient p, C := Aᵀ.B (+ C); a is p.a. With partial
    sums, the sum over its slice of the K rows of A and B (none is empty: K >= SPLIT_SUM_MIN_ROWS),
    into C (part 0) or into its block of p.partials; otherwise its slice of the rows of C."""
    cdef const floating *b = <const floating *>p.b
    cdef int k0, k1, r0, r1
    if p.partials == NULL:
        r0, r1 = part_start(part, parts, p.m), part_start(part + 1, parts, p.m)
        if r1 > r0:
            weight_gradient(p, r1 - r0, p.k, a + r0, b, p.accumulate,
                            <floating *>p.c + <int64_t>r0 * p.ldc, p.ldc)
        return
    k0, k1 = part_start(part, parts, p.k), part_start(part + 1, parts, p.k)
    a, b = a + <int64_t>k0 * p.lda, b + <int64_t>k0 * p.ldb
    if part == 0:
        weight_gradient(p, p.m, k1 - k0, a, b, p.accumulate, <floating *>p.c, p.ldc)
    else:
        weight_gradient(p, p.m, k1 - k0, a, b, False,
                        <floating *>p.partials + (part - 1) * <int64_t>p.m * p.n, p.n)


cdef void add_partials_rows(const Product *p, int r0, int r1, int parts,
                            floating *c) noexcept nogil:
    """Rows r0 .. r1-1 of C += the partial sums of parts 1 .. parts - 1; c is p.c."""
    cdef const floating *partial
    cdef int64_t block = <int64_t>p.m * p.n
    cdef int q, r, j
    for q in range(parts - 1):
        partial = <const floating *>p.partials + q * block
        for r in range(r0, r1):
            for j in range(p.n):
                c[<int64_t>r * p.ldc + j] += partial[<int64_t>r * p.n + j]


cdef void product_rows(const Product *p, int r0, int r1, const floating *a) noexcept nogil:
    """Rows r0 .. r1-1 of C := A.op(B) (+ C); a is p.a."""
    if r1 <= r0:
        return
    a = a + <int64_t>r0 * p.lda
    if p.panels != NULL:
        matmul_packed(r1 - r0, p.n, p.k, a, p.lda, <const floating *>p.panels, p.accumulate,
                      <floating *>p.c + <int64_t>r0 * p.ldc, p.ldc)
        return
    gemm(False, p.trans_b, r1 - r0, p.n, p.k, 1, a, p.lda, <const floating *>p.b, p.ldb,
         1 if p.accumulate else 0, <floating *>p.c + <int64_t>r0 * p.ldc, p.ldc)


cdef void column_sum_rows(const ColumnSum *s, int part, int parts, const floating *a) noexcept nogil:
    """Part `part` of `parts` of acc[0] += A.sum(axis=0): its slice of the rows into acc[part];
    a is s.a."""
    cdef int64_t r0 = part * s.rows // parts, r1 = (part + 1) * s.rows // parts
    colsum(r1 - r0, s.n, a + r0 * s.lda, s.lda, s.acc + <int64_t>part * s.n)


cdef void products_part(void *work, int part, int parts) noexcept nogil:
    cdef Products *products = <Products *>work
    cdef const Product *p
    cdef const ColumnSum *s
    cdef int i
    for i in range(products.count):
        p = &products.items[i]
        if p.trans_a:
            if products.is_double:
                weight_gradient_part(p, part, parts, <const double *>p.a)
            else:
                weight_gradient_part(p, part, parts, <const float *>p.a)
        elif products.is_double:
            product_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                         <const double *>p.a)
        else:
            product_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                         <const float *>p.a)
    for i in range(products.sums):
        s = &products.column_sums[i]
        if products.is_double:
            column_sum_rows(s, part, parts, <const double *>s.a)
        else:
            column_sum_rows(s, part, parts, <const float *>s.a)


cdef void add_partials_part(void *work, int part, int parts) noexcept nogil:
    """After products_part: add the partial sums of the weight gradients into their C and those
    of the column sums into their acc[0], each part taking a slice of the rows (columns)."""
    cdef Products *products = <Products *>work
    cdef const Product *p
    cdef const ColumnSum *s
    cdef int i, q, j
    for i in range(products.count):
        p = &products.items[i]
        if p.partials == NULL:
            continue
        if products.is_double:
            add_partials_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                              parts, <double *>p.c)
        else:
            add_partials_rows(p, part_start(part, parts, p.m), part_start(part + 1, parts, p.m),
                              parts, <float *>p.c)
    for i in range(products.sums):
        s = &products.column_sums[i]
        for q in range(1, parts):
            for j in range(part_start(part, parts, s.n), part_start(part + 1, parts, s.n)):
                s.acc[j] += s.acc[<int64_t>q * s.n + j]


cdef void pack_panel_slice(int k, int n, const floating *b, int ldb, bint transposed,
                           floating *packed, int part, int parts) noexcept nogil:
    """Part `part` of `parts` of the panels of pack_panels(k, n, b, ldb, transposed, packed): the
    packing of a large operand is shared among the threads of a pass too."""
    cdef int width = packed_size(1, 1, packed)  # panel columns
    cdef int count = (n + width - 1) // width
    cdef int j0 = part_start(part, parts, count) * width
    cdef int j1 = min(n, part_start(part + 1, parts, count) * width)
    cdef int64_t b_offset = <int64_t>j0 * ldb if transposed else j0
    if packed == NULL or j1 <= j0:
        return
    pack_panels(k, j1 - j0, b + b_offset, ldb, transposed, packed + <int64_t>j0 * k)


cdef void pack_operand_part(int k, int n, const void *b, int ldb, bint transposed, void *packed,
                            bint is_double, int part, int parts) noexcept nogil:
    if is_double:
        pack_panel_slice(k, n, <const double *>b, ldb, transposed, <double *>packed, part, parts)
    else:
        pack_panel_slice(k, n, <const float *>b, ldb, transposed, <float *>packed, part, parts)


cdef void pack_part(const Products *products, const Operand *operands, int count,
                    int part, int parts) noexcept nogil:
    """Part `part` of `parts` of the packing of a pass: the `count` per-step operands and the
    right operands of the whole-sequence products that use panels."""
    cdef const Operand *op
    cdef const Product *p
    cdef int i
    for i in range(count):
        op = &operands[i]
        pack_operand_part(op.k, op.n, op.b, op.ldb, op.transposed, op.panels,
                          products.is_double, part, parts)
    for i in range(products.count):
        p = &products.items[i]
        pack_operand_part(p.k, p.n, p.b, p.ldb, p.trans_b, p.panels, products.is_double, part,
                          parts)


# --- For tests: the matrix kernels on NumPy arrays -------------------------------------------

cdef int leading_dimension(array, name) except -1:
    """The row stride of a 2-D array in items; its columns must be contiguous."""
    if array.ndim != 2 or array.strides[1] != array.itemsize:
        raise ValueError(f"{name} must be 2-D with contiguous rows, got strides {array.strides}")
    return array.strides[0] // array.itemsize


def _pack_panels(b, bint transposed):
    """The packed form of B (k, n), or of Bᵀ when `transposed` and b is (n, k)."""
    cdef int k = b.shape[1] if transposed else b.shape[0]
    cdef int n = b.shape[0] if transposed else b.shape[1]
    cdef int ldb = leading_dimension(b, "b")
    cdef uintptr_t src = b.ctypes.data
    if b.dtype == np.float32:
        packed = np.zeros(packed_size(k, n, <float *>NULL), np.float32)
        pack_panels(k, n, <const float *>src, ldb, transposed,
                           <float *><uintptr_t>packed.ctypes.data)
    else:
        packed = np.zeros(packed_size(k, n, <double *>NULL), np.float64)
        pack_panels(k, n, <const double *>src, ldb, transposed,
                            <double *><uintptr_t>packed.ctypes.data)
    return packed


def _matmul_packed(a, packed, int n, c, bint accumulate):
    """c[:] = a @ B (+ c when accumulate), B (k, n) as packed by _pack_panels."""
    cdef int m = a.shape[0], k = a.shape[1]
    cdef int lda = leading_dimension(a, "a"), ldc = leading_dimension(c, "c")
    cdef uintptr_t pa = a.ctypes.data, pp = packed.ctypes.data, pc = c.ctypes.data
    if a.dtype == np.float32:
        matmul_packed(m, n, k, <const float *>pa, lda, <const float *>pp, accumulate,
                             <float *>pc, ldc)
    else:
        matmul_packed(m, n, k, <const double *>pa, lda, <const double *>pp, accumulate,
                              <double *>pc, ldc)


def _matmul_tn(a, b, c, bint accumulate):
    """c[:] = a.T @ b (+ c when accumulate), a (k, m), b (k, n)."""
    cdef int k = a.shape[0], m = a.shape[1], n = b.shape[1]
    cdef int lda = leading_dimension(a, "a"), ldb = leading_dimension(b, "b")
    cdef int ldc = leading_dimension(c, "c")
    cdef uintptr_t pa = a.ctypes.data, pb = b.ctypes.data, pc = c.ctypes.data
    if a.dtype == np.float32:
        matmul_tn(m, n, k, <const float *>pa, lda, <const float *>pb, ldb, accumulate,
                         <float *>pc, ldc)
    else:
        matmul_tn(m, n, k, <const double *>pa, lda, <const double *>pb, ldb, accumulate,
                          <double *>pc, ldc)


def _colsum(a):
    """a.sum(axis=0), summed in float64."""
    cdef int64_t lda = leading_dimension(a, "a"), rows = a.shape[0]
    cdef int n = a.shape[1]
    acc = np.zeros(n)
    cdef uintptr_t pa = a.ctypes.data, pacc = acc.ctypes.data
    if a.dtype == np.float32:
        colsum(rows, n, <const float *>pa, lda, <double *>pacc)
    else:
        colsum(rows, n, <const double *>pa, lda, <double *>pacc)
    return acc
