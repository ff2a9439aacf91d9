/* The per-thread floating-point mode of a pass, the spin-wait hint of its threads, the clock of
 * its signal checks and the flag that stops its threads. */
#ifndef FASTRNN_CPU_H
#define FASTRNN_CPU_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds of a monotonic clock (read through the vDSO: no system call). */
static inline int64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* A flag one thread sets and the others of a pass read while they run. */
static inline int load_flag(const int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }
static inline void store_flag(int *flag, int value) { __atomic_store_n(flag, value, __ATOMIC_RELAXED); }

/* Saturated gates (sigmoid of a large negative number, products of such values) produce
 * subnormal numbers, on which x86 arithmetic takes a microcode assist per operation, so a pass
 * can slow down by orders of magnitude. Flushing them to zero changes results only by amounts
 * below the smallest normal number. The mode is set for the duration of a pass, in the threads
 * running it only, and restored afterwards so the caller's mode is unchanged. */
#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FASTRNN_MXCSR_FTZ 0x8000u
#define FASTRNN_MXCSR_DAZ 0x0040u

/* Flush-to-zero and denormals-are-zero on; returns the previous mode for fp_mode_restore. */
static inline unsigned int fp_mode_fast_enter(void)
{
    const unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | FASTRNN_MXCSR_FTZ | FASTRNN_MXCSR_DAZ);
    return saved;
}

static inline void fp_mode_restore(unsigned int saved) { _mm_setcsr(saved); }

/* One try of a short busy wait (x86 PAUSE): lets the other hyperthread run meanwhile. */
static inline void cpu_relax(void) { _mm_pause(); }
#else
static inline unsigned int fp_mode_fast_enter(void) { return 0; }
static inline void fp_mode_restore(unsigned int saved) { (void)saved; }
static inline void cpu_relax(void) {}
#endif

#endif
