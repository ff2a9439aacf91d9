/* What every cell's gate kernels share: the activation functions, the attribute of the exported
 * kernels, and the row helpers (copy, zero, add, activate one row of H values).
 *
 * The conventions of a gate kernel (lstm.h, gru.h, rnn.h): one call handles one time step t of
 * all B rows; every matrix is row-major and C-contiguous unless a leading dimension is given;
 * gate rows are in the order of docs/math.md. `lengths` is NULL (every row runs all T steps) or
 * int64 (B,): row b is valid at step t when t < lengths[b]. An invalid row keeps its state,
 * outputs zero, has zero gate gradients and passes the state gradient through unchanged, so
 * padding is handled here, without copies of sequences. Bias pointers may be NULL (a layer
 * without bias). In backward, dh (and dc) come in as the gradient w.r.t. the state after step t
 * and leave as the part of the gradient w.r.t. the state before step t that does not flow
 * through W_hh: the caller adds dgates . W_hh with one matrix product.
 *
 * Each exported step kernel loops over the rows of a step, handles masking, and hands the valid
 * rows to a row kernel taking every row as a restrict parameter, which is what lets the
 * compiler vectorise its loops, activation functions included.
 */
#ifndef REAL
#ifndef FASTRNN_ROWS_H
#define FASTRNN_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "portable.h"

/* exp for float, branch-free (clamps, integer exponent arithmetic) so that the loops calling it
 * vectorise, which libm's expf does not: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2/2,
 * exp(r) from Cephes' degree-7 polynomial. x is clamped to [-87.3, 88], where 2^n stays a normal
 * number: exp(x) is then FLT_MIN or 1.65e38 instead of 0 or inf, which leaves sigmoid and tanh
 * below unchanged in float precision. */
static inline float exp_f(float x)
{
    x = x < -87.33654f ? -87.33654f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln 2): adding 1.5 * 2^23 rounds to an integer, which then sits in the low
     * mantissa bits of t (read as an integer below, without a float-to-int conversion) */
    const float t = x * 1.44269504088896341f + 12582912.0f;
    const float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float e = p * r * r + r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23; /* 0x4B400000: the bits of 1.5 * 2^23 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

static inline float act_sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

/* tanh for float through exp_f: an odd Taylor polynomial near 0, where (1 - e) / (1 + e) would
 * cancel, and (1 - e) / (1 + e), e = exp(-2|x|), elsewhere. Float64 parity is not at stake here:
 * float32 results are checked against the reference at 1e-5. */
static inline float act_tanh_f(float x)
{
    const float a = fabsf(x);
    const float e = exp_f(-2.0f * a);
    const float far = copysignf((1.0f - e) / (1.0f + e), x);
    const float x2 = x * x;
    const float near = x + x * x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f));
    return a < 0.125f ? near : far;
}

/* double keeps libm's functions (within 1 ulp): float64 parity is checked at 1e-12. */
static inline double act_sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double act_tanh_d(double x) { return tanh(x); }

/* The exported kernels are compiled three times, for baseline x86-64 (SSE2), x86-64-v3 (AVX2,
 * FMA) and x86-64-v4 (AVX-512), and the loader picks the best the CPU runs (see portable.h): the
 * portable build stays portable and the gate loops get the widest vectors the CPU has.
 * `flatten` (GCC) inlines the row kernels into each version, so they are compiled for its
 * instruction set too. Elsewhere: one version. */
#if FASTRNN_FLATTEN_CLONES
#define KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4"), flatten))
#elif FASTRNN_KERNEL_CLONES
#define KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define KERNEL
#endif

/* The row kernels (and helpers) the exported kernels call: inlined into each version, so that
 * they are compiled for its instruction set. GCC does so through KERNEL's `flatten`; clang,
 * which refuses `flatten` on clones and would call one baseline copy, through always_inline. */
#if FASTRNN_KERNEL_CLONES && !FASTRNN_FLATTEN_CLONES
#define ROW_KERNEL static inline __attribute__((always_inline))
#else
#define ROW_KERNEL static inline
#endif

#define VALID(b) (lengths == NULL || t < lengths[b])
#define ROW(p, b, width) ((p) + (size_t)(b) * (width))
#define SIGMOID SFX(act_sigmoid)
#define TANH SFX(act_tanh)

#define FASTRNN_BODY "rows.h"
#include "template.h"
#endif /* FASTRNN_ROWS_H */
#else  /* the body, for one REAL */

ROW_KERNEL void SFX(copy_row)(REAL *restrict dst, const REAL *restrict src, int n)
{
    for (int j = 0; j < n; j++) dst[j] = src[j];
}

ROW_KERNEL void SFX(zero_row)(REAL *restrict dst, int n)
{
    for (int j = 0; j < n; j++) dst[j] = 0;
}

/* dst += src, skipped when src is NULL (a layer without bias). */
ROW_KERNEL void SFX(add_row)(REAL *restrict dst, const REAL *restrict src, int n)
{
    if (src == NULL) return;
    for (int j = 0; j < n; j++) dst[j] += src[j];
}

ROW_KERNEL void SFX(sigmoid_row)(REAL *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = SIGMOID(x[j]);
}

ROW_KERNEL void SFX(tanh_row)(REAL *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = TANH(x[j]);
}

/* For the opt-in gradient-norm record: the sum of (a[j] + b[j])^2, b NULL for zeros. Eight
 * partial sums, because without -ffast-math the compiler keeps one floating-point sum in order,
 * one add waiting for the last, but vectorises independent ones. */
static inline double SFX(sum_squares)(const REAL *restrict a, const REAL *restrict b, int n)
{
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum = 0;
    int j = 0;
    if (b == NULL) {
        for (; j + 8 <= n; j += 8)
            for (int k = 0; k < 8; k++) lanes[k] += (double)a[j + k] * a[j + k];
        for (; j < n; j++) sum += (double)a[j] * a[j];
    } else {
        for (; j + 8 <= n; j += 8)
            for (int k = 0; k < 8; k++) {
                const double v = (double)a[j + k] + (double)b[j + k];
                lanes[k] += v * v;
            }
        for (; j < n; j++) sum += ((double)a[j] + b[j]) * ((double)a[j] + b[j]);
    }
    for (int k = 0; k < 8; k++) sum += lanes[k];
    return sum;
}

/* *sq += the sum of v^2, and v = 0: a row kernel left a gradient there for the record. */
static inline void SFX(take_sum_squares)(REAL *restrict v, int n, double *sq)
{
    *sq += SFX(sum_squares)(v, NULL, n);
    SFX(zero_row)(v, n);
}

/* The squared Frobenius norm of the gradient w.r.t. h_t over the valid rows of step t, before
 * the step's backward: dy (this step's output gradient) + dh (what step t+1 passed back). For
 * the gradient-norm record; invalid rows contribute nothing. */
static inline double SFX(state_grad_sq)(int B, int H, int64_t t, const int64_t *lengths,
                                        const REAL *dy, const REAL *dh)
{
    double sum = 0;
    for (int b = 0; b < B; b++)
        if (VALID(b)) sum += SFX(sum_squares)(ROW(dy, b, H), ROW(dh, b, H), H);
    return sum;
}

/* An invalid row in forward: the state is carried over, the output is zero. */
ROW_KERNEL void SFX(carry_row)(int H, const REAL *restrict h_prev, REAL *restrict h,
                                  REAL *restrict y)
{
    SFX(copy_row)(h, h_prev, H);
    SFX(zero_row)(y, H);
}

#endif
