/* Dropout's per-unit loops (dropout.pxd holds the keys and the contract), in C so that they
 * are compiled for the baseline ISA, AVX2 and AVX-512 and picked at run time as the cell steps
 * are (vmath.h's CBPTT_PICK): 8 or 16 units a hash round, no branch on the draws.
 *
 * Unit j of a row keyed rkey draws the 32 bits fmix32(j * 0x9E3779B9 + low(rkey)) ^ high(rkey)
 * (MurmurHash3's finaliser: a bijection of 32-bit words whose output bits each depend on every
 * input bit); it is kept when they are >= threshold (p 2^32), with probability 1 - p within
 * 2^-32. The row keys themselves come from SplitMix64 (dropout.pxd), so rows, steps, layers and
 * calls draw independent words. */
#ifndef CBPTT_DROPOUT_ROWS_H
#define CBPTT_DROPOUT_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include "vmath.h"

static inline uint32_t cbptt_unit_bits(uint64_t rkey, ptrdiff_t j)
{
    uint32_t x = (uint32_t)j * 0x9E3779B9u + (uint32_t)rkey;
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x ^ (uint32_t)(rkey >> 32);
}

/* target[j] (+)= source[j] * (scale if unit j is kept else 0), j < n (source may be target);
 * source NULL: target[j] = the factor itself (a mask) */
#define CBPTT_DROP_FUNCTIONS(T, suffix, attributes)                                           \
    attributes static void cbptt_drop_row_##suffix(const T *source, T *target, ptrdiff_t n,   \
                                                   uint64_t rkey, uint32_t threshold,        \
                                                   T scale, int add)                         \
    {                                                                                         \
        ptrdiff_t j;                                                                          \
        if (source == NULL)                                                                   \
            for (j = 0; j < n; j++)                                                           \
                target[j] = cbptt_unit_bits(rkey, j) >= threshold ? scale : (T)0;             \
        else if (add)                                                                         \
            for (j = 0; j < n; j++)                                                           \
                target[j] += source[j] *                                                      \
                             (cbptt_unit_bits(rkey, j) >= threshold ? scale : (T)0);         \
        else                                                                                  \
            for (j = 0; j < n; j++)                                                           \
                target[j] = source[j] *                                                       \
                            (cbptt_unit_bits(rkey, j) >= threshold ? scale : (T)0);          \
    }

CBPTT_DROP_FUNCTIONS(float, f32_baseline, )
CBPTT_DROP_FUNCTIONS(double, f64_baseline, )
#ifdef CBPTT_DISPATCH
CBPTT_DROP_FUNCTIONS(float, f32_avx2, CBPTT_TARGET_AVX2)
CBPTT_DROP_FUNCTIONS(double, f64_avx2, CBPTT_TARGET_AVX2)
CBPTT_DROP_FUNCTIONS(float, f32_avx512, CBPTT_TARGET_AVX512)
CBPTT_DROP_FUNCTIONS(double, f64_avx512, CBPTT_TARGET_AVX512)
#endif

static void cbptt_drop_row_f32(const float *source, float *target, ptrdiff_t n, uint64_t rkey,
                               uint32_t threshold, float scale, int add)
{
    CBPTT_PICK(cbptt_drop_row, f32)(source, target, n, rkey, threshold, scale, add);
}

static void cbptt_drop_row_f64(const double *source, double *target, ptrdiff_t n,
                               uint64_t rkey, uint32_t threshold, double scale, int add)
{
    CBPTT_PICK(cbptt_drop_row, f64)(source, target, n, rkey, threshold, scale, add);
}

#endif
