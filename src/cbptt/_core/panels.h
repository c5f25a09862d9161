/* Per-step products on weights packed once per call.
 *
 * Past OpenBLAS's small-matrix size, every GEMM call copies ("packs") both operands into its
 * own panel layout before multiplying. A recurrent layer multiplies by the same W_hh at every
 * step, so OpenBLAS packs the whole weight matrix T times per pass: 14% of a large LSTM step
 * (perf), and its kernel then runs at ~180 GFLOP/s per core on the (64 x 512) @ (512 x 2048)
 * product where this one reaches ~260 (measured on this repository's machines, AVX-512).
 *
 * Here op(B) (k x n) is packed once, into panels of PANEL columns: panel p holds columns
 * [p*PANEL, (p+1)*PANEL) as k rows of PANEL contiguous values, zero-padded past n, and starts
 * at panels + p*PANEL*k. The product then streams each panel once per block of up to six rows
 * of A, broadcasting A's entries: C[:, cols] = A @ op(B)[:, cols] + beta C[:, cols].
 * Every entry of C is one sum over k in order, whatever the column block or row block it is
 * computed in, so results do not depend on how a team splits the product.
 *
 * AVX-512F only (checked at run time: cbptt_panels_supported, which CBPTT_ISA below avx512
 * turns off and a CBPTT_PORTABLE build compiles out); elsewhere the engine keeps OpenBLAS.
 * float32 panels are 64 columns wide (four 16-lane registers), float64 panels 32.
 *
 * The same register blocking serves the weight gradients dW = dA^T @ h (cbptt_wgrad), with
 * dA read in place: OpenBLAS packs both operands of those calls first (a transposing copy of
 * dA).
 */
#ifndef CBPTT_PANELS_H
#define CBPTT_PANELS_H

#include <stddef.h>
#include <string.h>

#include "isa.h"

#define CBPTT_PANEL_F32 64
#define CBPTT_PANEL_F64 32
#define CBPTT_PANEL_ROWS 6         /* rows of A per block: 6 x 4 accumulator registers */

/* Copy columns [first, first + count) of op(B) (k x n) into their panels; first is a
 * multiple of the panel width. op(B) = B (k x n, row stride ldb), or with trans B^T for
 * B (n x k, row stride ldb). Plain C: it runs once per pass. */
#define CBPTT_PACK(suffix, type, width)                                                        \
    static void cbptt_pack_##suffix(const type *b, ptrdiff_t ldb, int trans, ptrdiff_t k,     \
                                     ptrdiff_t first, ptrdiff_t count, type *panels)          \
    {                                                                                         \
        ptrdiff_t start, kk, col, cols;                                                       \
        for (start = first; start < first + count; start += width) {                          \
            type *panel = panels + start * k;                                                 \
            cols = first + count - start < width ? first + count - start : width;             \
            if (trans) {                                                                      \
                for (col = 0; col < cols; col++)                                              \
                    for (kk = 0; kk < k; kk++)                                                \
                        panel[kk * width + col] = b[(start + col) * ldb + kk];                \
            } else {                                                                          \
                for (kk = 0; kk < k; kk++)                                                    \
                    memcpy(panel + kk * width, b + kk * ldb + start, cols * sizeof(type));    \
            }                                                                                 \
            if (cols < width)                                                                 \
                for (kk = 0; kk < k; kk++)                                                    \
                    memset(panel + kk * width + cols, 0, (width - cols) * sizeof(type));      \
        }                                                                                     \
    }

CBPTT_PACK(f32, float, CBPTT_PANEL_F32)
CBPTT_PACK(f64, double, CBPTT_PANEL_F64)

#ifdef CBPTT_DISPATCH
#include <immintrin.h>
#define CBPTT_PANELS 1
#define CBPTT_AVX512 __attribute__((target("avx512f")))

/* the processor has AVX-512F and CBPTT_ISA does not cap it below avx512 (isa.h) */
static int cbptt_panels_supported(void)
{
    return cbptt_isa_allows_avx512f();
}

/* the first `left` of `lanes` lanes (all of them from lanes on, none at 0 or below) */
#define CBPTT_LANE_MASK(mask_t, left, lanes)                                                   \
    ((left) >= (lanes) ? (mask_t)-1 : (left) <= 0 ? (mask_t)0 : (mask_t)((1u << (left)) - 1))

/* One block of rows (a compile-time constant up to 6, so the accumulators stay in
 * registers) times 4 registers of B's columns: C (rows x cols) = A' @ B + beta C for A' (rows x
 * k) read as a[r * a_row + kk * a_k] (A, or A^T with the strides swapped) and B's row kk at
 * b + kk * ldb, cols <= 4 registers (a masked store past them). Suffix, type, register type,
 * lanes, the intrinsics' suffix and the mask type. */
#define CBPTT_BLOCK(suffix, type, vec, lanes, isa, mask_t)                                     \
    CBPTT_AVX512 static inline __attribute__((always_inline)) void                            \
    cbptt_block_##suffix(int rows, ptrdiff_t k, const type *a, ptrdiff_t a_row,              \
                         ptrdiff_t a_k, const type *b, ptrdiff_t ldb, type beta, type *c,    \
                         ptrdiff_t ldc, ptrdiff_t cols)                                       \
    {                                                                                         \
        vec acc[CBPTT_PANEL_ROWS][4];                                                         \
        ptrdiff_t kk;                                                                         \
        int r, v;                                                                             \
        for (r = 0; r < rows; r++)                                                            \
            for (v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_##isa();                       \
        for (kk = 0; kk < k; kk++) {                                                          \
            const type *p = b + kk * ldb;                                                     \
            vec b0 = _mm512_loadu_##isa(p), b1 = _mm512_loadu_##isa(p + lanes);               \
            vec b2 = _mm512_loadu_##isa(p + 2 * lanes), b3 = _mm512_loadu_##isa(p + 3 * lanes); \
            for (r = 0; r < rows; r++) {                                                      \
                vec x = _mm512_set1_##isa(a[r * a_row + kk * a_k]);                           \
                acc[r][0] = _mm512_fmadd_##isa(x, b0, acc[r][0]);                             \
                acc[r][1] = _mm512_fmadd_##isa(x, b1, acc[r][1]);                             \
                acc[r][2] = _mm512_fmadd_##isa(x, b2, acc[r][2]);                             \
                acc[r][3] = _mm512_fmadd_##isa(x, b3, acc[r][3]);                             \
            }                                                                                 \
        }                                                                                     \
        for (r = 0; r < rows; r++)                                                            \
            for (v = 0; v < 4; v++) {                                                         \
                ptrdiff_t left = cols - v * lanes;                                            \
                mask_t mask;                                                                  \
                type *out = c + r * ldc + v * lanes;                                          \
                if (left <= 0)                                                                \
                    break;                                                                    \
                mask = CBPTT_LANE_MASK(mask_t, left, lanes);                                  \
                if (beta != 0)                                                                \
                    acc[r][v] = _mm512_add_##isa(acc[r][v], _mm512_mul_##isa(                 \
                        _mm512_set1_##isa(beta), _mm512_maskz_loadu_##isa(mask, out)));       \
                _mm512_mask_storeu_##isa(out, mask, acc[r][v]);                               \
            }                                                                                 \
    }

/* the block kernel for rows (1..6) as a compile-time constant */
#define CBPTT_BLOCK_ROWS(suffix, rows, ...)                                                    \
    switch (rows) {                                                                           \
    case 6: cbptt_block_##suffix(6, __VA_ARGS__); break;                                      \
    case 5: cbptt_block_##suffix(5, __VA_ARGS__); break;                                      \
    case 4: cbptt_block_##suffix(4, __VA_ARGS__); break;                                      \
    case 3: cbptt_block_##suffix(3, __VA_ARGS__); break;                                      \
    case 2: cbptt_block_##suffix(2, __VA_ARGS__); break;                                      \
    default: cbptt_block_##suffix(1, __VA_ARGS__); break;                                     \
    }

CBPTT_BLOCK(f32, float, __m512, 16, ps, __mmask16)
CBPTT_BLOCK(f64, double, __m512d, 8, pd, __mmask8)

#define CBPTT_PANEL_GEMM(suffix, type, lanes)                                                  \
    /* C[:, first:first+count] = A (m x k) @ op(B)[:, first:first+count] + beta C, from the   \
     * panels of cbptt_pack (first a multiple of the panel width). */                          \
    CBPTT_AVX512 static void cbptt_panel_gemm_##suffix(                                       \
        ptrdiff_t m, ptrdiff_t k, const type *a, ptrdiff_t lda, const type *panels,          \
        ptrdiff_t first, ptrdiff_t count, type beta, type *c, ptrdiff_t ldc)                 \
    {                                                                                         \
        ptrdiff_t start, row, cols, blocks = (m + CBPTT_PANEL_ROWS - 1) / CBPTT_PANEL_ROWS, b;  \
        for (start = first; start < first + count; start += 4 * lanes) {                     \
            const type *panel = panels + start * k;                                           \
            cols = first + count - start < 4 * lanes ? first + count - start : 4 * lanes;     \
            /* blocks of as equal a size as possible (8 rows: 4 + 4, not 6 + 2) */            \
            for (b = 0, row = 0; b < blocks; b++) {                                           \
                ptrdiff_t rows = m / blocks + (b < m % blocks);                               \
                const type *a_block = a + row * lda;                                          \
                type *c_block = c + row * ldc + start;                                        \
                CBPTT_BLOCK_ROWS(suffix, rows, k, a_block, lda, 1, panel, 4 * lanes, beta,    \
                                 c_block, ldc, cols)                                          \
                row += rows;                                                                  \
            }                                                                                 \
        }                                                                                     \
    }

CBPTT_PANEL_GEMM(f32, float, 16)
CBPTT_PANEL_GEMM(f64, double, 8)

/* Weight gradients: C (m x n) = A^T @ B + beta C for A (k x m), B (k x n), both row-major
 * (row strides lda, ldb): C's blocks of up to 6 rows x one panel width of columns are sums
 * over k of A's row kk (6 values, broadcast, read in place) times B's row kk (4 registers).
 * k runs in blocks of CBPTT_WGRAD_K rows; each block of B's columns is first copied
 * contiguous (zero-padded past n) into a 32 KiB buffer on the stack, which stays in the L1 cache
 * while every row block of C passes over it (read in place at a row stride of a power of two
 * cache lines, it would map to a fraction of the cache's sets: 217 -> 234 GFLOP/s on
 * (1600 x 384)^T @ (1600 x 128)). Each entry of C is one in-order sum over k (then beta C
 * added), whatever block it is computed in. */
#define CBPTT_WGRAD_K 128
#define CBPTT_WGRAD(suffix, type, lanes, isa, mask_t)                                          \
    /* C (m x n) = A^T @ B + beta C, A (k x m), B (k x n); and, unless sums is NULL, sums (m) \
     * = A's column sums + beta sums (the bias gradient), added a k-block at a time while the \
     * block of A is still in cache */                                                        \
    CBPTT_AVX512 static void cbptt_wgrad_##suffix(                                            \
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const type *a, ptrdiff_t lda, const type *b,  \
        ptrdiff_t ldb, type beta, type *c, ptrdiff_t ldc, type *sums)                         \
    {                                                                                         \
        ptrdiff_t k0, start, row, cols, blocks = (m + CBPTT_PANEL_ROWS - 1) / CBPTT_PANEL_ROWS, \
                                        blk, depth, depth_copy;                               \
        /* B's block of rows and columns, copied contiguous (zero past n): read in place at  \
         * a row stride of 2^j cache lines it would use a fraction of the cache's sets */    \
        type b_pack[CBPTT_WGRAD_K * 4 * lanes] __attribute__((aligned(64)));                \
        for (k0 = 0; k0 < k; k0 += CBPTT_WGRAD_K) {                                           \
            type beta_k = k0 == 0 ? beta : (type)1;                                           \
            depth = k - k0 < CBPTT_WGRAD_K ? k - k0 : CBPTT_WGRAD_K;                          \
            for (start = 0; start < n; start += 4 * lanes) {                                  \
                const type *b_block = b_pack;                                                 \
                ptrdiff_t kk, ldb_block = 4 * lanes;                                          \
                cols = n - start < 4 * lanes ? n - start : 4 * lanes;                         \
                if (ldb == 4 * lanes && cols == 4 * lanes) {  /* rows already contiguous */  \
                    b_block = b + k0 * ldb + start;                                           \
                    depth_copy = 0;                                                           \
                } else                                                                        \
                    depth_copy = depth;                                                       \
                for (kk = 0; kk < depth_copy; kk++) {  /* 4 registers a row, zero past n */  \
                    const type *from = b + (k0 + kk) * ldb + start;                           \
                    type *to = b_pack + kk * 4 * lanes;                                       \
                    int v;                                                                    \
                    for (v = 0; v < 4; v++)                                                   \
                        _mm512_store_##isa(to + v * lanes, _mm512_maskz_loadu_##isa(          \
                            CBPTT_LANE_MASK(mask_t, cols - v * lanes, lanes),                 \
                            from + v * lanes));                                               \
                }                                                                             \
                for (blk = 0, row = 0; blk < blocks; blk++) {                                 \
                    ptrdiff_t rows = m / blocks + (blk < m % blocks);                         \
                    const type *a_block = a + k0 * lda + row;                                 \
                    type *c_block = c + row * ldc + start;                                    \
                    CBPTT_BLOCK_ROWS(suffix, rows, depth, a_block, 1, lda, b_block,           \
                                     ldb_block, beta_k, c_block, ldc, cols)                   \
                    row += rows;                                                              \
                }                                                                             \
            }                                                                                 \
            if (sums != NULL) {                                                               \
                ptrdiff_t kk, i;                                                              \
                if (k0 == 0)                                                                  \
                    for (i = 0; i < m; i++) sums[i] = beta == 0 ? 0 : beta * sums[i];         \
                for (kk = 0; kk < depth; kk++) {                                              \
                    const type *x_row = a + (k0 + kk) * lda;                                  \
                    for (i = 0; i < m; i++) sums[i] += x_row[i];                              \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

CBPTT_WGRAD(f32, float, 16, ps, __mmask16)
CBPTT_WGRAD(f64, double, 8, pd, __mmask8)

#else
/* No dispatch (isa.h): the engine never calls the products (cbptt_panels_supported is 0). */
static int cbptt_panels_supported(void) { return 0; }
static void cbptt_panel_gemm_f32(ptrdiff_t m, ptrdiff_t k, const float *a, ptrdiff_t lda,
                                 const float *panels, ptrdiff_t first, ptrdiff_t count,
                                 float beta, float *c, ptrdiff_t ldc) {}
static void cbptt_panel_gemm_f64(ptrdiff_t m, ptrdiff_t k, const double *a, ptrdiff_t lda,
                                 const double *panels, ptrdiff_t first, ptrdiff_t count,
                                 double beta, double *c, ptrdiff_t ldc) {}
static void cbptt_wgrad_f32(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a, ptrdiff_t lda,
                            const float *b, ptrdiff_t ldb, float beta, float *c, ptrdiff_t ldc,
                            float *sums) {}
static void cbptt_wgrad_f64(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const double *a,
                            ptrdiff_t lda, const double *b, ptrdiff_t ldb, double beta,
                            double *c, ptrdiff_t ldc, double *sums) {}
#endif

#endif
