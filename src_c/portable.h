/* What the kernels need from the compiler, named once: the spelling of `restrict`, and which of
 * the x86-64 fast paths (per-CPU function clones, AVX-512 target functions) this compiler and
 * platform build. Every other header gets these from here, so none tests a compiler itself.
 *
 * FASTRNN_KERNEL_CLONES: exported step kernels are compiled for baseline x86-64, x86-64-v3 and
 *     x86-64-v4, the loader picking one by CPU (target_clones, resolved through a GNU ifunc:
 *     needs an ELF platform with glibc; GCC >= 12 or clang >= 14).
 * FASTRNN_FLATTEN_CLONES: the compiler also accepts `flatten` on the clones (GCC; clang refuses
 *     the combination, and inlines the row kernels into each clone anyway, the callee's target
 *     being a subset of the clone's).
 * FASTRNN_AVX512_TARGET: functions can be compiled for AVX-512 with the target attribute and
 *     written with vector extensions (GCC or clang on x86-64, any OS), their use decided at run
 *     time by __builtin_cpu_supports.
 */
#ifndef FASTRNN_PORTABLE_H
#define FASTRNN_PORTABLE_H

#include <stdint.h> /* defines __GLIBC__ on glibc, which the tests below read */

/* `restrict` is C99; MSVC's C compiler before /std:c11 spells it __restrict. Defined here, after
 * the C library headers the kernels include (MSVC's own use the word in __declspec(restrict)). */
#if defined(_MSC_VER) && !defined(__clang__) && \
    (!defined(__STDC_VERSION__) || __STDC_VERSION__ < 199901L)
#define restrict __restrict
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTRNN_AVX512_TARGET 1
#else
#define FASTRNN_AVX512_TARGET 0
#endif

#if defined(__x86_64__) && defined(__GLIBC__) && defined(__ELF__) && \
    ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12))
#define FASTRNN_KERNEL_CLONES 1
#else
#define FASTRNN_KERNEL_CLONES 0
#endif

#if FASTRNN_KERNEL_CLONES && !defined(__clang__)
#define FASTRNN_FLATTEN_CLONES 1
#else
#define FASTRNN_FLATTEN_CLONES 0
#endif

#endif
