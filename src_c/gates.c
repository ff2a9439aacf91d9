/* The kernels of gates.h: gates_impl.h and matmul_impl.h instantiated for float and for double,
 * plus the activation functions each type uses and the floating-point mode switch of a pass. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gates.h"

/* exp for float, branch-free (clamps, integer exponent arithmetic) so that the loops calling it
 * vectorise, which libm's expf does not: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2/2,
 * exp(r) from Cephes' degree-7 polynomial (about 1 ulp). x is clamped to [-87.3, 88], where 2^n
 * stays a normal number: exp(x) is then FLT_MIN or 1.65e38 instead of 0 or inf, which leaves
 * sigmoid and tanh below unchanged in float precision. */
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
 * cancel, and (1 - e) / (1 + e), e = exp(-2|x|), elsewhere. Measured errors: within 1 ulp
 * (exp_f), 2.4 ulp (sigmoid), 3.8 ulp (tanh, near |x| = 0.125). */
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
 * FMA) and x86-64-v4 (AVX-512), and the loader picks the best the CPU runs (GNU ifunc): the
 * portable build stays portable and the gate loops get 4 to 16 lanes. `flatten` inlines the row
 * kernels into each version, so they are compiled for its instruction set too. Elsewhere: one
 * version. */
#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__) && \
    defined(__GLIBC__)
#define KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4"), flatten))
#else
#define KERNEL
#endif

/* matmul_impl.h's AVX-512 kernel needs GCC's vector extensions and target attribute. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTRNN_PACKED_MATMUL 1
int packed_matmul_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}
#else
#define FASTRNN_PACKED_MATMUL 0
int packed_matmul_supported(void) { return 0; }
#endif

#define REAL float
#define SFX(name) name##_f
#include "gates_impl.h"
#include "matmul_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_d
#include "gates_impl.h"
#include "matmul_impl.h"
#undef REAL
#undef SFX

/* Saturated gates (sigmoid of a large negative number, products of such values) produce
 * subnormal numbers, on which x86 arithmetic takes a microcode assist of ~100 cycles each:
 * a pass can slow down by orders of magnitude. Flushing them to zero changes results only by
 * amounts below the smallest normal number. Set for the duration of a pass, in the calling thread
 * only, and restored afterwards so the caller's floating-point mode is unchanged. */
#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define MXCSR_FTZ 0x8000u
#define MXCSR_DAZ 0x0040u

unsigned int fp_mode_fast_enter(void)
{
    const unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | MXCSR_FTZ | MXCSR_DAZ);
    return saved;
}

void fp_mode_restore(unsigned int saved) { _mm_setcsr(saved); }

void cpu_relax(void) { _mm_pause(); }
#else
unsigned int fp_mode_fast_enter(void) { return 0; }
void fp_mode_restore(unsigned int saved) { (void)saved; }
void cpu_relax(void) {}
#endif
