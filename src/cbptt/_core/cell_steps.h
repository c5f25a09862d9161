/* The Elman, LSTM and GRU steps (forward and backward), in C so that they are
 * compiled three times on x86-64 (baseline, AVX2 + FMA and AVX-512, picked at run time, as in
 * vmath.h), each one pass over the step's values with the gate functions inlined. The maths
 * and the argument conventions are those documented in cells.pxd; each function handles one
 * step's block of rows * hidden entries. dh_inject (may be NULL) is first added into the
 * carried gradient, which the caller overwrites afterwards anyway, so the main loops are
 * branch-free. */
#ifndef CBPTT_GATES_H
#define CBPTT_GATES_H

#include <stddef.h>
#include "vmath.h"

/* Within a row the four gate blocks are disjoint and iteration j touches index j of each, so
 * the loops carry no dependence; GCC cannot prove it for a run-time H (in-place gates). */
#if defined(__GNUC__) && !defined(__clang__)
#define CBPTT_IVDEP _Pragma("GCC ivdep")
#else
#define CBPTT_IVDEP
#endif

#define CBPTT_GATE_FUNCTIONS(T, suffix, attributes, SIGMOID, TANH)                            \
    attributes static void cbptt_elman_forward_##suffix(int relu, T *pre, const T *bias,     \
                                                        ptrdiff_t rows, ptrdiff_t H)          \
    {                                                                                         \
        ptrdiff_t r, j;                                                                       \
        for (r = 0; r < rows; r++) {                                                          \
            T *a = pre + r * H;                                                               \
            if (relu)                                                                         \
                for (j = 0; j < H; j++) {                                                     \
                    T v = a[j] + bias[j];                                                     \
                    a[j] = v > 0 ? v : 0;                                                     \
                }                                                                             \
            else {                                                                            \
                CBPTT_IVDEP                                                                   \
                for (j = 0; j < H; j++) a[j] = TANH(a[j] + bias[j]);                          \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    attributes static void cbptt_elman_backward_##suffix(int relu, const T *h,               \
                                                         const T *dh_carry,                  \
                                                         const T *dh_inject, T *da,           \
                                                         ptrdiff_t count)                    \
    {                                                                                         \
        ptrdiff_t j;                                                                          \
        if (relu) {                                                                           \
            if (dh_inject == NULL)                                                            \
                for (j = 0; j < count; j++) da[j] = h[j] > 0 ? dh_carry[j] : 0;               \
            else                                                                              \
                for (j = 0; j < count; j++)                                                   \
                    da[j] = h[j] > 0 ? dh_carry[j] + dh_inject[j] : 0;                        \
        } else {                                                                              \
            if (dh_inject == NULL)                                                            \
                for (j = 0; j < count; j++) da[j] = dh_carry[j] * (1 - h[j] * h[j]);          \
            else                                                                              \
                for (j = 0; j < count; j++)                                                   \
                    da[j] = (dh_carry[j] + dh_inject[j]) * (1 - h[j] * h[j]);                 \
        }                                                                                     \
    }                                                                                         \
    attributes static void cbptt_lstm_forward_##suffix(T *gates, const T *bias,              \
                                                       const T *c_prev, T *c, T *h,           \
                                                       ptrdiff_t rows, ptrdiff_t H)           \
    {                                                                                         \
        ptrdiff_t r, j;                                                                       \
        for (r = 0; r < rows; r++) {                                                          \
            T *z = gates + r * 4 * H;                                                         \
            const T *cp = c_prev + r * H;                                                     \
            T *cr = c + r * H, *hr = h + r * H;                                               \
            /* two passes, as GRU's: the four gates, then c and h (tanh(c) needs them) */     \
            CBPTT_IVDEP                                                                       \
            for (j = 0; j < H; j++) {                                                         \
                z[j] = SIGMOID(z[j] + bias[j]);                                               \
                z[H + j] = SIGMOID(z[H + j] + bias[H + j]);                                   \
                z[2 * H + j] = TANH(z[2 * H + j] + bias[2 * H + j]);                          \
                z[3 * H + j] = SIGMOID(z[3 * H + j] + bias[3 * H + j]);                       \
            }                                                                                 \
            CBPTT_IVDEP                                                                       \
            for (j = 0; j < H; j++) {                                                         \
                T cell = z[H + j] * cp[j] + z[j] * z[2 * H + j];                              \
                cr[j] = cell;                                                                 \
                hr[j] = z[3 * H + j] * TANH(cell);                                            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    attributes static void cbptt_lstm_backward_##suffix(                                      \
        const T *gates, const T *c_prev, const T *c, T *dh_carry, const T *dh_inject,         \
        T *dc, T *da, ptrdiff_t rows, ptrdiff_t H)                                            \
    {                                                                                         \
        ptrdiff_t r, j;                                                                       \
        if (dh_inject != NULL)                                                                \
            for (j = 0; j < rows * H; j++) dh_carry[j] += dh_inject[j];                       \
        for (r = 0; r < rows; r++) {                                                          \
            const T *act = gates + r * 4 * H;                                                 \
            T *d = da + r * 4 * H;                                                            \
            const T *carry = dh_carry + r * H;                                                \
            const T *cp = c_prev + r * H, *cr = c + r * H;                                    \
            T *dcr = dc + r * H;                                                              \
            CBPTT_IVDEP                                                                       \
            for (j = 0; j < H; j++) {                                                         \
                T i_g = act[j], f_g = act[H + j], g_g = act[2 * H + j], o_g = act[3 * H + j]; \
                T dh = carry[j];                                                              \
                T tc = TANH(cr[j]);                  /* tanh(c_t), recomputed, not stored */  \
                T dcell = dcr[j] + dh * o_g * (1 - tc * tc);                                  \
                d[j] = dcell * g_g * i_g * (1 - i_g);                                         \
                d[H + j] = dcell * cp[j] * f_g * (1 - f_g);                                   \
                d[2 * H + j] = dcell * i_g * (1 - g_g * g_g);                                 \
                d[3 * H + j] = dh * tc * o_g * (1 - o_g);                                     \
                dcr[j] = dcell * f_g;                                                         \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    attributes static void cbptt_gru_forward_##suffix(                                       \
        T *gates, const T *rec, const T *b_ih, const T *b_hh, const T *h_prev, T *h, T *hn,   \
        ptrdiff_t rows, ptrdiff_t H)                                                          \
    {                                                                                         \
        ptrdiff_t r, j;                                                                       \
        for (r = 0; r < rows; r++) {                                                          \
            T *g = gates + r * 3 * H;                                                         \
            const T *q = rec + r * 3 * H, *hp = h_prev + r * H;                               \
            T *hr = h + r * H, *hnr = hn + r * H;                                             \
            /* two passes: the gates r, z, then n (which needs r) and h, so that each pass's \
             * iterations are short independent chains (H is often only 4 vectors) */         \
            CBPTT_IVDEP                                                                       \
            for (j = 0; j < H; j++) {                                                         \
                g[j] = SIGMOID(g[j] + (q[j] + b_hh[j]) + b_ih[j]);                            \
                g[H + j] = SIGMOID(g[H + j] + (q[H + j] + b_hh[H + j]) + b_ih[H + j]);        \
            }                                                                                 \
            CBPTT_IVDEP                                                                       \
            for (j = 0; j < H; j++) {                                                         \
                T r_g = g[j], z_g = g[H + j];                                                 \
                T hn_v = q[2 * H + j] + b_hh[2 * H + j];                                      \
                T n_g = TANH(g[2 * H + j] + r_g * hn_v + b_ih[2 * H + j]);                    \
                g[2 * H + j] = n_g;                                                           \
                hnr[j] = hn_v;                                                                \
                hr[j] = (1 - z_g) * n_g + z_g * hp[j];                                        \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    attributes static void cbptt_gru_backward_##suffix(                                       \
        const T *gates, const T *hn, const T *h_prev, T *dh, const T *dh_inject, T *da_hh,    \
        T *da_n, ptrdiff_t rows, ptrdiff_t H)                                                 \
    {                                                                                         \
        ptrdiff_t r, j;                                                                       \
        if (dh_inject != NULL)                                                                \
            for (j = 0; j < rows * H; j++) dh[j] += dh_inject[j];                             \
        for (r = 0; r < rows; r++) {                                                          \
            const T *g = gates + r * 3 * H;                                                   \
            T *d = da_hh + r * 3 * H;                                                         \
            const T *hnr = hn + r * H, *hp = h_prev + r * H;                                  \
            T *dhr = dh + r * H, *dan_r = da_n + r * H;                                       \
            CBPTT_IVDEP                                                                       \
            for (j = 0; j < H; j++) {                                                         \
                T r_g = g[j], z_g = g[H + j], n_g = g[2 * H + j];                             \
                T grad = dhr[j];                                                              \
                T dan = grad * (1 - z_g) * (1 - n_g * n_g);                                   \
                T hn_v = hnr[j];                                                              \
                d[j] = dan * hn_v * r_g * (1 - r_g);                                          \
                d[H + j] = grad * (hp[j] - n_g) * z_g * (1 - z_g);                            \
                d[2 * H + j] = dan * r_g;                                                     \
                dan_r[j] = dan;                                                               \
                dhr[j] = grad * z_g;                                                          \
            }                                                                                 \
        }                                                                                     \
    }

CBPTT_GATE_FUNCTIONS(float, f32_baseline, , cbptt_sigmoidf, cbptt_tanhf)
CBPTT_GATE_FUNCTIONS(double, f64_baseline, , cbptt_sigmoid, cbptt_tanh)
#ifdef CBPTT_DISPATCH
CBPTT_GATE_FUNCTIONS(float, f32_avx2, CBPTT_TARGET_AVX2, cbptt_sigmoidf, cbptt_tanhf)
CBPTT_GATE_FUNCTIONS(double, f64_avx2, CBPTT_TARGET_AVX2, cbptt_sigmoid, cbptt_tanh)
CBPTT_GATE_FUNCTIONS(float, f32_avx512, CBPTT_TARGET_AVX512, cbptt_sigmoidf, cbptt_tanhf)
CBPTT_GATE_FUNCTIONS(double, f64_avx512, CBPTT_TARGET_AVX512, cbptt_sigmoid, cbptt_tanh)
#endif

static void cbptt_elman_forward_f32(int relu, float *pre, const float *bias, ptrdiff_t rows,
                                    ptrdiff_t H)
{
    CBPTT_PICK(cbptt_elman_forward, f32)(relu, pre, bias, rows, H);
}

static void cbptt_elman_forward_f64(int relu, double *pre, const double *bias, ptrdiff_t rows,
                                    ptrdiff_t H)
{
    CBPTT_PICK(cbptt_elman_forward, f64)(relu, pre, bias, rows, H);
}

static void cbptt_elman_backward_f32(int relu, const float *h, const float *dh_carry,
                                     const float *dh_inject, float *da, ptrdiff_t count)
{
    CBPTT_PICK(cbptt_elman_backward, f32)(relu, h, dh_carry, dh_inject, da, count);
}

static void cbptt_elman_backward_f64(int relu, const double *h, const double *dh_carry,
                                     const double *dh_inject, double *da, ptrdiff_t count)
{
    CBPTT_PICK(cbptt_elman_backward, f64)(relu, h, dh_carry, dh_inject, da, count);
}

static void cbptt_lstm_forward_f32(float *gates, const float *bias, const float *c_prev,
                                   float *c, float *h, ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_lstm_forward, f32)(gates, bias, c_prev, c, h, rows, H);
}

static void cbptt_lstm_forward_f64(double *gates, const double *bias, const double *c_prev,
                                   double *c, double *h, ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_lstm_forward, f64)(gates, bias, c_prev, c, h, rows, H);
}

static void cbptt_lstm_backward_f32(const float *gates, const float *c_prev, const float *c,
                                    float *dh_carry, const float *dh_inject, float *dc,
                                    float *da, ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_lstm_backward, f32)(gates, c_prev, c, dh_carry, dh_inject, dc, da, rows,
                                         H);
}

static void cbptt_lstm_backward_f64(const double *gates, const double *c_prev,
                                    const double *c, double *dh_carry,
                                    const double *dh_inject, double *dc, double *da,
                                    ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_lstm_backward, f64)(gates, c_prev, c, dh_carry, dh_inject, dc, da, rows,
                                         H);
}

static void cbptt_gru_forward_f32(float *gates, const float *rec, const float *b_ih,
                                  const float *b_hh, const float *h_prev, float *h, float *hn,
                                  ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_gru_forward, f32)(gates, rec, b_ih, b_hh, h_prev, h, hn, rows, H);
}

static void cbptt_gru_forward_f64(double *gates, const double *rec, const double *b_ih,
                                  const double *b_hh, const double *h_prev, double *h,
                                  double *hn, ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_gru_forward, f64)(gates, rec, b_ih, b_hh, h_prev, h, hn, rows, H);
}

static void cbptt_gru_backward_f32(const float *gates, const float *hn, const float *h_prev,
                                   float *dh, const float *dh_inject, float *da_hh, float *da_n,
                                   ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_gru_backward, f32)(gates, hn, h_prev, dh, dh_inject, da_hh, da_n, rows, H);
}

static void cbptt_gru_backward_f64(const double *gates, const double *hn, const double *h_prev,
                                   double *dh, const double *dh_inject, double *da_hh,
                                   double *da_n, ptrdiff_t rows, ptrdiff_t H)
{
    CBPTT_PICK(cbptt_gru_backward, f64)(gates, hn, h_prev, dh, dh_inject, da_hh, da_n, rows, H);
}

#endif
