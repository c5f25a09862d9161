/* Vectorisable elementwise math for the cell kernels.
 *
 * float32: exp, sigmoid and tanh written branch-free (Cephes' polynomials, range reduction by
 * the round-to-nearest magic number, 2^n assembled from the exponent bits) so that the
 * compiler vectorises the loops over a step's buffer; error within 2 ulp of libm's for exp.
 * float64 keeps libm's accuracy (within 1 ulp of the correctly rounded value, tested against
 * 80-bit long double): exp by a two-part ln 2 range reduction and a degree-13 polynomial, tanh
 * by Cephes' rational approximation below 0.625 and 1 - 2 / (e^{2|x|} + 1) above, both
 * branch-free, so that they vectorise like the float32 ones (libm's exp and tanh do not).
 *
 * On x86-64 with GCC or Clang the array functions also exist compiled for AVX2 + FMA and for
 * AVX-512 (16 float32 lanes), picked at run time by the level isa.h reports (CBPTT_ISA caps
 * it; a CBPTT_PORTABLE build compiles the plain C ones only). Compile with -fno-trapping-math
 * so that the selects in these functions can be vectorised.
 */
#ifndef CBPTT_VMATH_H
#define CBPTT_VMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "isa.h"

/* e^x for -87.3 <= x <= 88.3 (callers clamp) */
static inline float cbptt_expf_in_range(float x)
{
    const float magic = 12582912.0f;                 /* 1.5 * 2^23: rounds to an integer */
    float t, r, p, scale;
    int32_t bits, n;
    t = x * 1.44269504088896341f + magic;            /* n = round(x / ln 2), in t's low bits */
    memcpy(&bits, &t, sizeof bits);
    n = bits - 0x4B400000;
    t -= magic;
    r = x - t * 0.693359375f;                        /* r = x - n ln 2, in two parts */
    r = r + t * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;                        /* e^r */
    bits = (n + 127) << 23;                          /* 2^n */
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float cbptt_expf(float x)
{
    return cbptt_expf_in_range(x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x));
}

static inline float cbptt_sigmoidf(float x)
{
    return 1.0f / (1.0f + cbptt_expf(-x));
}

static inline float cbptt_tanhf(float x)
{
    /* on |x|, then x's sign (so tanh(-0) = -0): below 0.625 an odd polynomial; above,
     * 1 - 2 / (e^{2|x|} + 1), with |x| capped at 9.5 (where that is 1 in float32) */
    float ax = fabsf(x), z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * ax + ax;
    float large = 1.0f - 2.0f / (cbptt_expf_in_range(2.0f * (ax > 9.5f ? 9.5f : ax)) + 1.0f);
    return copysignf(ax < 0.625f ? small : large, x);
}

/* e^x for x <= 709; below -708.39 (where e^x is subnormal) it returns 2^-1022 * e^r, not 0 */
static inline double cbptt_exp(double x)
{
    const double magic = 6755399441055744.0;           /* 1.5 * 2^52: rounds to an integer */
    double t, r, p, scale;
    int64_t bits, n;
    x = x < -708.39 ? -708.39 : (x > 709.0 ? 709.0 : x);
    t = x * 1.4426950408889634074 + magic;             /* n = round(x / ln 2) */
    memcpy(&bits, &t, sizeof bits);
    n = bits - 0x4338000000000000LL;
    t -= magic;
    r = x - t * 6.93147180369123816490e-01;            /* ln 2's high part: t * it is exact */
    r = r - t * 1.90821492927058770002e-10;            /* and its low part */
    p = 1.0 / 6227020800.0;                            /* e^r, |r| <= 0.347: Taylor to r^13 */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    bits = (n + 1023) << 52;                           /* 2^n */
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double cbptt_sigmoid(double x)
{
    /* neither branch overflows */
    double e = cbptt_exp(-fabs(x));
    return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

static inline double cbptt_tanh(double x)
{
    /* Cephes: |x| < 0.625: x + x^3 P(x^2) / Q(x^2); else 1 - 2 / (e^{2|x|} + 1) with x's sign
     * (|x| capped at 22, where that is 1 to the last bit) */
    double z = x * x, ax = fabs(x), e, large;
    double small = x + x * z * ((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
                                - 1.61468768441708447952e3) /
                   (((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
                    + 4.84406305325125486048e3);
    e = cbptt_exp(2.0 * (ax > 22.0 ? 22.0 : ax));
    large = 1.0 - 2.0 / (e + 1.0);
    large = x < 0 ? -large : large;
    small = x == 0 ? x : small;                        /* tanh(-0) = -0 */
    return ax < 0.625 ? small : large;
}

/* out[i] = f(x[i] + bias[i]) over n entries for f = sigmoid and tanh, float32 and float64; bias
 * may be NULL; out may be x. Defined three times on x86-64: for the baseline ISA, AVX2 + FMA and
 * AVX-512, chosen at run time by isa.h's level (CBPTT_PICK). */
#define CBPTT_ARRAY_FUNCTION(name, T, tag, suffix, attributes, f)                             \
    attributes static void cbptt_##name##_##tag##_##suffix(const T *x, const T *bias, T *out, \
                                                           ptrdiff_t n)                      \
    {                                                                                         \
        ptrdiff_t i;                                                                          \
        if (bias == NULL)                                                                     \
            for (i = 0; i < n; i++) out[i] = f(x[i]);                                         \
        else                                                                                  \
            for (i = 0; i < n; i++) out[i] = f(x[i] + bias[i]);                               \
    }

#define CBPTT_ARRAY_FUNCTIONS(suffix, attributes)                                              \
    CBPTT_ARRAY_FUNCTION(sigmoid, float, f32, suffix, attributes, cbptt_sigmoidf)             \
    CBPTT_ARRAY_FUNCTION(tanh, float, f32, suffix, attributes, cbptt_tanhf)                   \
    CBPTT_ARRAY_FUNCTION(sigmoid, double, f64, suffix, attributes, cbptt_sigmoid)             \
    CBPTT_ARRAY_FUNCTION(tanh, double, f64, suffix, attributes, cbptt_tanh)

CBPTT_ARRAY_FUNCTIONS(baseline, )

#ifdef CBPTT_DISPATCH
#define CBPTT_TARGET_AVX2 __attribute__((target("avx2,fma")))
/* GCC vectorises 256 bits wide unless told otherwise, even where AVX-512 is allowed (Clang
 * does not take that option in a target attribute: it would ignore the whole attribute) */
#if defined(__clang__)
#define CBPTT_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
#else
#define CBPTT_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx2,fma,prefer-vector-width=512")))
#endif
CBPTT_ARRAY_FUNCTIONS(avx2, CBPTT_TARGET_AVX2)
CBPTT_ARRAY_FUNCTIONS(avx512, CBPTT_TARGET_AVX512)

/* the build of name_T (name_T_avx512, _avx2 or _baseline) for the level in use (isa.h) */
#define CBPTT_PICK(name, T)                                                                   \
    (cbptt_isa_level() >= CBPTT_ISA_AVX512 ? name##_##T##_avx512                              \
     : cbptt_isa_level() >= CBPTT_ISA_AVX2 ? name##_##T##_avx2 : name##_##T##_baseline)
#else
#define CBPTT_PICK(name, T) name##_##T##_baseline
#endif

#define CBPTT_ARRAY_DISPATCH(name, T, tag)                                                    \
    static void cbptt_##name##_##tag(const T *x, const T *bias, T *out, ptrdiff_t n)          \
    {                                                                                         \
        CBPTT_PICK(cbptt_##name, tag)(x, bias, out, n);                                        \
    }

CBPTT_ARRAY_DISPATCH(sigmoid, float, f32)
CBPTT_ARRAY_DISPATCH(tanh, float, f32)
CBPTT_ARRAY_DISPATCH(sigmoid, double, f64)
CBPTT_ARRAY_DISPATCH(tanh, double, f64)

/* 1 if no entry of x is NaN or Inf: an exponent field of all ones marks both. Integer work
 * only, so it vectorises. */
static int cbptt_all_finite_f32(const float *x, ptrdiff_t n)
{
    ptrdiff_t i;
    uint32_t bits, bad = 0;
    for (i = 0; i < n; i++) {
        memcpy(&bits, x + i, sizeof bits);
        bad |= (uint32_t)((bits & 0x7F800000u) == 0x7F800000u);
    }
    return bad == 0;
}

static int cbptt_all_finite_f64(const double *x, ptrdiff_t n)
{
    ptrdiff_t i;
    uint64_t bits, bad = 0;
    for (i = 0; i < n; i++) {
        memcpy(&bits, x + i, sizeof bits);
        bad |= (uint64_t)((bits & 0x7FF0000000000000ull) == 0x7FF0000000000000ull);
    }
    return bad == 0;
}

#endif
