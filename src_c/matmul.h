/* The matrix kernels of a pass besides BLAS: the per-step products on a packed right operand,
 * the narrow weight gradients, and column sums.
 *
 * A time loop multiplies by the same W_hh (or its transpose) at every step, a few dozen rows at
 * a time. BLAS packs its operands on every call, which at so few rows costs about as much as
 * the arithmetic. Here the right operand is packed once per pass (pack_panels) into panels of
 * PANEL columns, each a contiguous (k, PANEL) block, zero-padded past n; matmul_packed streams
 * through a panel while it holds a block of C (up to 8 rows by PANEL columns) in 16 vector
 * registers. It is written with GCC vector extensions and compiled for AVX-512 (32 registers of
 * 64 bytes), the only target it is tuned for: packed_matmul_supported() says whether the CPU
 * runs it, and the caller uses BLAS when it does not.
 *
 * packed_size: values in the packed form of a (k, n) right operand. pack_panels: that form of
 * B (k, n), or of Bᵀ when B is given as (n, k) and `transposed`. matmul_packed:
 * C := A.B (+ C when accumulate) with B so packed. matmul_tn: C := Aᵀ.B (+ C when accumulate),
 * A (k, m) and B (k, n) as they are. colsum: acc[j] += sum over the rows of a[i, j], in double.
 */
#ifndef REAL
#ifndef FASTRNN_MATMUL_H
#define FASTRNN_MATMUL_H
#include "rows.h"

/* The AVX-512 kernels need GCC's (or clang's) vector extensions and target attribute. */
#if FASTRNN_AVX512_TARGET
#define FASTRNN_PACKED_MATMUL 1
static int packed_matmul_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}
#else
#define FASTRNN_PACKED_MATMUL 0
static int packed_matmul_supported(void) { return 0; }
#endif

#define FASTRNN_BODY "matmul.h"
#include "template.h"
#endif
#else /* the body, for one REAL */

ROW_KERNEL void SFX(colsum_row)(int n, const REAL *restrict a, double *restrict acc)
{
    for (int j = 0; j < n; j++) acc[j] += (double)a[j];
}

/* acc[j] += sum over the rows i of a[i, j], j < n, summed in double. */
KERNEL void SFX(colsum)(int64_t rows, int n, const REAL *a, int64_t lda, double *acc)
{
    for (int64_t i = 0; i < rows; i++) SFX(colsum_row)(n, ROW(a, i, lda), acc);
}

#define LANES ((int)(64 / sizeof(REAL)))
#define PANEL (2 * LANES)

size_t SFX(packed_size)(int k, int n) { return (size_t)((n + PANEL - 1) / PANEL) * PANEL * k; }

/* B is copied a row segment at a time, which the compiler turns into vector copies. Bᵀ, stored
 * (n, k), is copied in blocks of TRANSPOSE_BLOCK of its columns (rows of the panel): each of its rows gives
 * one cache line to the block, whose panel rows, written a value at a time, stay in cache. */
#define TRANSPOSE_BLOCK 16
void SFX(pack_panels)(int k, int n, const REAL *b, int ldb, int transposed, REAL *packed)
{
    for (int j0 = 0; j0 < n; j0 += PANEL) {
        REAL *panel = packed + (size_t)j0 * k;
        const int cols = n - j0 < PANEL ? n - j0 : PANEL;
        if (transposed) {
            for (int p0 = 0; p0 < k; p0 += TRANSPOSE_BLOCK) {
                const int p1 = k - p0 < TRANSPOSE_BLOCK ? k : p0 + TRANSPOSE_BLOCK;
                for (int j = 0; j < cols; j++)
                    for (int p = p0; p < p1; p++)
                        panel[(size_t)p * PANEL + j] = b[(size_t)(j0 + j) * ldb + p];
            }
        } else {
            for (int p = 0; p < k; p++)
                for (int j = 0; j < cols; j++) panel[(size_t)p * PANEL + j] = b[(size_t)p * ldb + j0 + j];
        }
        for (int p = 0; cols < PANEL && p < k; p++)
            for (int j = cols; j < PANEL; j++) panel[(size_t)p * PANEL + j] = 0;
    }
}
#undef TRANSPOSE_BLOCK

#if FASTRNN_PACKED_MATMUL
typedef REAL SFX(vec) __attribute__((vector_size(64)));

#define ALWAYS_INLINE static inline __attribute__((always_inline, target("avx512f,fma")))

ALWAYS_INLINE SFX(vec) SFX(load)(const REAL *p)
{
    SFX(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}

ALWAYS_INLINE void SFX(store)(REAL *p, SFX(vec) v) { memcpy(p, &v, sizeof v); }

/* c[0:rows, 0:PANEL] (+)= sum over p < k of (row r: a[r * a_row + p * a_step]) x (b + p * b_step):
 * a block of C held in 16 vector registers, fed a column of A's scalars and a row of B's vectors
 * per p. matmul_packed reads A by rows (a_step 1) and B from a panel (b_step PANEL); matmul_tn
 * reads A transposed (a_row 1) and B in place. `rows` is a constant once inlined, so the
 * accumulators live in registers. */
ALWAYS_INLINE void SFX(register_block)(const int rows, int k, const REAL *restrict a, int a_row,
                                       int a_step, const REAL *restrict b, int b_step,
                                       int accumulate, REAL *restrict c, int ldc)
{
    SFX(vec) acc0[8], acc1[8];
    for (int r = 0; r < rows; r++) {
        if (accumulate) {
            acc0[r] = SFX(load)(c + (size_t)r * ldc);
            acc1[r] = SFX(load)(c + (size_t)r * ldc + LANES);
        } else {
            acc0[r] = (SFX(vec)){0};
            acc1[r] = (SFX(vec)){0};
        }
    }
    for (int p = 0; p < k; p++) {
        const SFX(vec) b0 = SFX(load)(b + (size_t)p * b_step);
        const SFX(vec) b1 = SFX(load)(b + (size_t)p * b_step + LANES);
        for (int r = 0; r < rows; r++) {
            const REAL ar = a[(size_t)r * a_row + (size_t)p * a_step];
            acc0[r] += ar * b0;
            acc1[r] += ar * b1;
        }
    }
    for (int r = 0; r < rows; r++) {
        SFX(store)(c + (size_t)r * ldc, acc0[r]);
        SFX(store)(c + (size_t)r * ldc + LANES, acc1[r]);
    }
}

/* register_block for 1 to 8 rows: each count its own constant, so its own unrolled copy. */
ALWAYS_INLINE void SFX(rows_block)(int rows, int k, const REAL *a, int a_row, int a_step,
                                   const REAL *b, int b_step, int accumulate, REAL *c, int ldc)
{
    switch (rows) {
    case 8: SFX(register_block)(8, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    case 7: SFX(register_block)(7, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    case 6: SFX(register_block)(6, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    case 5: SFX(register_block)(5, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    case 4: SFX(register_block)(4, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    case 3: SFX(register_block)(3, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    case 2: SFX(register_block)(2, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    default: SFX(register_block)(1, k, a, a_row, a_step, b, b_step, accumulate, c, ldc); break;
    }
}

/* c[i0:i0+rows, j0:j0+PANEL] (+)= a[i0:i0+rows, 0:k] . panel, through a tile when the panel
 * sticks out past column n (cols < PANEL). */
ALWAYS_INLINE void SFX(packed_block)(int rows, int cols, int k, const REAL *a, int lda,
                                     const REAL *panel, int accumulate, REAL *c, int ldc)
{
    REAL tile[8 * PANEL];
    REAL *cb = c;
    int ldcb = ldc;
    if (cols < PANEL) {
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < PANEL; j++)
                tile[r * PANEL + j] = accumulate && j < cols ? c[(size_t)r * ldc + j] : 0;
        cb = tile;
        ldcb = PANEL;
    }
    SFX(rows_block)(rows, k, a, lda, 1, panel, PANEL, accumulate, cb, ldcb);
    if (cols < PANEL)
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) c[(size_t)r * ldc + j] = tile[r * PANEL + j];
}

/* Rows of A are taken M_BLOCK at a time, so that the block of A stays in cache while every panel
 * passes over it, instead of streaming all of A from memory once per panel on the
 * whole-sequence products (thousands of rows). */
#define M_BLOCK 128

/* C := A.B (+ C when accumulate), row-major, A (m, k), B (k, n) given packed by pack_panels. */
__attribute__((target("avx512f,fma")))
void SFX(matmul_packed)(int m, int n, int k, const REAL *a, int lda, const REAL *packed,
                        int accumulate, REAL *c, int ldc)
{
    for (int m0 = 0; m0 < m; m0 += M_BLOCK) {
        const int m1 = m - m0 < M_BLOCK ? m : m0 + M_BLOCK;
        for (int j0 = 0; j0 < n; j0 += PANEL) {
            const int cols = n - j0 < PANEL ? n - j0 : PANEL;
            for (int i0 = m0; i0 < m1; i0 += 8)
                SFX(packed_block)(m1 - i0 < 8 ? m1 - i0 : 8, cols, k, a + (size_t)i0 * lda, lda,
                                  packed + (size_t)j0 * k, accumulate, c + (size_t)i0 * ldc + j0,
                                  ldc);
        }
    }
}
#undef M_BLOCK

/* C := Aᵀ.B (+ C when accumulate), row-major, A (k, m), B (k, n): a weight gradient, summed over
 * the k rows of a sequence. Both operands are read in place: a row of A gives the scalars of 8
 * rows of C, a row of B the vectors of PANEL columns, so there is nothing to pack. The sum runs
 * in chunks of K_CHUNK rows, whose blocks of A and B stay in cache while every block of C
 * visits them. */
#define K_CHUNK 128
__attribute__((target("avx512f,fma")))
void SFX(matmul_tn)(int m, int n, int k, const REAL *a, int lda, const REAL *b, int ldb,
                    int accumulate, REAL *c, int ldc)
{
    const int wide = n - n % PANEL; /* columns in whole panels; the rest in plain loops */
    if (!accumulate)
        for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof(REAL));
    for (int p0 = 0; p0 < k; p0 += K_CHUNK) {
        const int kk = k - p0 < K_CHUNK ? k - p0 : K_CHUNK;
        const REAL *ap = a + (size_t)p0 * lda, *bp = b + (size_t)p0 * ldb;
        for (int i0 = 0; i0 < m; i0 += 8) {
            const int rows = m - i0 < 8 ? m - i0 : 8;
            for (int j0 = 0; j0 < wide; j0 += PANEL) {
                SFX(rows_block)(rows, kk, ap + i0, 1, lda, bp + j0, ldb, 1,
                                c + (size_t)i0 * ldc + j0, ldc);
            }
            for (int p = 0; p < kk; p++)
                for (int r = 0; r < rows; r++) {
                    const REAL ar = ap[(size_t)p * lda + i0 + r];
                    REAL *cr = c + (size_t)(i0 + r) * ldc;
                    for (int j = wide; j < n; j++) cr[j] += ar * bp[(size_t)p * ldb + j];
                }
        }
    }
}
#undef K_CHUNK
#undef ALWAYS_INLINE
#else
void SFX(matmul_packed)(int m, int n, int k, const REAL *a, int lda, const REAL *packed,
                        int accumulate, REAL *c, int ldc)
{
    /* never called: packed_matmul_supported() is 0 on this build */
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)packed, (void)accumulate, (void)c,
        (void)ldc;
}

void SFX(matmul_tn)(int m, int n, int k, const REAL *a, int lda, const REAL *b, int ldb,
                    int accumulate, REAL *c, int ldc)
{
    /* never called: packed_matmul_supported() is 0 on this build */
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)accumulate, (void)c,
        (void)ldc;
}
#endif

#undef LANES
#undef PANEL

#endif
