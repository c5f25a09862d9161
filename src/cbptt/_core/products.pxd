# The products: every matrix product of the engine, each as a part's share of it (see
# team.pxd). BLAS (_blas.pxd) or, on AVX-512, the panel kernels of panels.h: the per-step
# products and the input projection on weights packed once per pass, and the weight
# gradients dA^T @ inputs read in place. Which one runs is the caller's plan (plan.pxd) or,
# for the weight gradients, a WgradRule from it; each records the path it took (paths.pxd).

from cython cimport floating

from .._blas cimport gemm, gemv, step_gemm
from .paths cimport (cbptt_ran, CBPTT_RAN_WGRAD_BLAS, CBPTT_RAN_WGRAD_KERNEL)
from .team cimport barrier, part_range

cdef extern from "_core/panels.h" nogil:
    enum: CBPTT_PANEL_F32, CBPTT_PANEL_F64
    int cbptt_panels_supported()
    void cbptt_pack_f32(const float* b, Py_ssize_t ldb, int trans, Py_ssize_t k,
                        Py_ssize_t first, Py_ssize_t count, float* panels)
    void cbptt_pack_f64(const double* b, Py_ssize_t ldb, int trans, Py_ssize_t k,
                        Py_ssize_t first, Py_ssize_t count, double* panels)
    void cbptt_panel_gemm_f32(Py_ssize_t m, Py_ssize_t k, const float* a, Py_ssize_t lda,
                              const float* panels, Py_ssize_t first, Py_ssize_t count,
                              float beta, float* c, Py_ssize_t ldc)
    void cbptt_panel_gemm_f64(Py_ssize_t m, Py_ssize_t k, const double* a, Py_ssize_t lda,
                              const double* panels, Py_ssize_t first, Py_ssize_t count,
                              double beta, double* c, Py_ssize_t ldc)
    void cbptt_wgrad_f32(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a,
                         Py_ssize_t lda, const float* b, Py_ssize_t ldb, float beta, float* c,
                         Py_ssize_t ldc, float* sums)
    void cbptt_wgrad_f64(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* a,
                         Py_ssize_t lda, const double* b, Py_ssize_t ldb, double beta,
                         double* c, Py_ssize_t ldc, double* sums)


cdef struct WgradRule:
    # which weight gradients C (m, n) = A^T @ B over k rows run on the panel kernel: where
    # enabled (and the processor has AVX-512F), m >= 6, n >= one panel, m * n <= max_outputs
    # and m * n * k > min_mnk (past OpenBLAS's small-matrix size, whose kernels need no
    # packing; the large shape's GRU dW_hh, 1536 x 512, runs faster on OpenBLAS)
    bint enabled
    double min_mnk
    double max_outputs


cdef inline void part_gemm(int part, int parts, bint trans_a, bint trans_b, Py_ssize_t m,
                           Py_ssize_t n, Py_ssize_t k, floating alpha, const floating* a,
                           Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating beta,
                           floating* c, Py_ssize_t ldc) noexcept nogil:
    """part's block of C (m, n) = alpha op(A) op(B) + beta C: columns if n >= m, else rows."""
    cdef Py_ssize_t start, count
    if parts == 1:
        gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    elif n >= m:
        part_range(n, part, parts, 16, &start, &count)
        gemm(trans_a, trans_b, m, count, k, alpha, a, lda,
             b + (start * ldb if trans_b else start), ldb, beta, c + start, ldc)
    else:
        part_range(m, part, parts, 1, &start, &count)
        gemm(trans_a, trans_b, count, n, k, alpha, a + (start if trans_a else start * lda), lda,
             b, ldb, beta, c + start * ldc, ldc)


cdef inline bint wgrad_fits(const WgradRule* rule, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            const floating* kind) noexcept nogil:
    """Whether C (m, n) = A^T @ B over k rows goes to panels.h's weight-gradient kernel
    (under rule) rather than BLAS."""
    return (rule.enabled and m >= 6 and n >= panel_width(kind)
            and <double>m * n <= rule.max_outputs and <double>m * n * k > rule.min_mnk)


cdef inline void weight_grad(const WgradRule* rule, int part, int parts, Py_ssize_t m,
                             Py_ssize_t n, Py_ssize_t k, const floating* a, Py_ssize_t lda,
                             const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                             Py_ssize_t ldc, const floating* ones=NULL,
                             floating* sums=NULL) noexcept nogil:
    """part's block of C (m, n) = A^T @ B + beta C for A (k, m), B (k, n), and, unless sums is
    NULL, of sums (m,) = A's column sums + beta sums (ones: k ones, for BLAS): through
    panels.h's weight-gradient kernel where rule lets it (it adds the sums while A is in
    cache), else BLAS; split as part_gemm."""
    cdef Py_ssize_t start, count, a_start = 0, b_start = 0, c_start = 0, m_part = m, n_part = n
    cdef floating* part_sums = sums
    if not wgrad_fits(rule, m, n, k, c):
        cbptt_ran(CBPTT_RAN_WGRAD_BLAS)
        part_gemm(part, parts, True, False, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
        if sums != NULL:
            part_column_sums(part, parts, k, m, a, lda, ones, beta, sums)
        return
    cbptt_ran(CBPTT_RAN_WGRAD_KERNEL)
    if parts > 1 and n >= m and n >= parts * panel_width(c):
        part_range(n, part, parts, panel_width(c), &start, &count)
        b_start, c_start, n_part = start, start, count
        if start > 0:
            part_sums = NULL    # the part with the first columns adds the sums
    elif parts > 1:
        part_range(m, part, parts, 1, &start, &count)
        a_start, c_start, m_part = start, start * ldc, count
        if sums != NULL:
            part_sums = sums + start
    if m_part > 0 and n_part > 0:
        if floating is float:
            cbptt_wgrad_f32(m_part, n_part, k, a + a_start, lda, b + b_start, ldb, beta,
                            c + c_start, ldc, part_sums)
        else:
            cbptt_wgrad_f64(m_part, n_part, k, a + a_start, lda, b + b_start, ldb, beta,
                            c + c_start, ldc, part_sums)


cdef inline void wgrad_kernel(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* a,
                              Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                              floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C (m, n) = A^T @ B + beta C on panels.h's weight-gradient kernel."""
    if m <= 0 or n <= 0:
        return
    if floating is float:
        cbptt_wgrad_f32(m, n, k, a, lda, b, ldb, beta, c, ldc, NULL)
    else:
        cbptt_wgrad_f64(m, n, k, a, lda, b, ldb, beta, c, ldc, NULL)


cdef inline void part_column_sums(int part, int parts, Py_ssize_t rows, Py_ssize_t cols,
                                  const floating* a, Py_ssize_t lda, const floating* ones,
                                  floating beta, floating* y) noexcept nogil:
    """part's block of y (cols,) = column sums of A (rows, cols) + beta y."""
    cdef Py_ssize_t start, count
    part_range(cols, part, parts, 16, &start, &count)
    gemv(True, rows, count, 1, a + start, lda, ones, beta, y + start)


cdef inline Py_ssize_t panel_width(const floating* kind) noexcept nogil:
    return CBPTT_PANEL_F32 if floating is float else CBPTT_PANEL_F64


cdef inline void pack_panels(int part, int parts, const floating* b, Py_ssize_t ldb,
                             bint trans, Py_ssize_t k, Py_ssize_t n,
                             floating* panels) noexcept nogil:
    """Pack op(B) (k, n) (B (k, n), or B (n, k) with trans) into panels (panels.h): part's
    block of columns, the block its share of a column partition multiplies by. By rows,
    every part reads every panel: the caller meets the others at a barrier before using them."""
    cdef Py_ssize_t start, count
    part_range(n, part, parts, panel_width(panels), &start, &count)
    if count > 0:
        if floating is float:
            cbptt_pack_f32(b, ldb, trans, k, start, count, panels)
        else:
            cbptt_pack_f64(b, ldb, trans, k, start, count, panels)


cdef inline void panel_gemm(Py_ssize_t m, Py_ssize_t k, const floating* a, Py_ssize_t lda,
                            const floating* panels, Py_ssize_t first, Py_ssize_t count,
                            floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        cbptt_panel_gemm_f32(m, k, a, lda, panels, first, count, beta, c, ldc)
    else:
        cbptt_panel_gemm_f64(m, k, a, lda, panels, first, count, beta, c, ldc)


cdef inline void step_product(bint columns, int part, int parts, Py_ssize_t row0,
                              Py_ssize_t rows, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                              const floating* a, Py_ssize_t lda, const floating* b,
                              Py_ssize_t ldb, bint trans_b, const floating* panels,
                              floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """part's share of a per-step product C (m, n) = A (m, k) @ op(B) + beta C, op(B) = B (k, n)
    or, with trans_b, B^T for B (n, k): its rows [row0, row0 + rows), or, with columns, its
    block of columns of every row, then a barrier (every part's elementwise kernel reads all
    the columns of its rows). With panels (op(B) packed by pack_panels) the packed product
    runs; else BLAS, which without trans_b stays on OpenBLAS's small-matrix path."""
    cdef Py_ssize_t start, count
    if panels != NULL:
        if not columns:
            panel_gemm(rows, k, a + row0 * lda, lda, panels, 0, n, beta, c + row0 * ldc, ldc)
            return
        part_range(n, part, parts, panel_width(panels), &start, &count)
        panel_gemm(m, k, a, lda, panels, start, count, beta, c, ldc)
        barrier(parts)
        return
    if not columns:
        if trans_b:
            gemm(False, True, rows, n, k, 1, a + row0 * lda, lda, b, ldb, beta, c + row0 * ldc,
                 ldc)
        else:
            step_gemm(rows, n, k, a + row0 * lda, lda, b, ldb, beta, c + row0 * ldc, ldc)
        return
    part_range(n, part, parts, 16, &start, &count)
    if count > 0:
        if trans_b:
            gemm(False, True, m, count, k, 1, a, lda, b + start * ldb, ldb, beta, c + start, ldc)
        else:
            step_gemm(m, count, k, a, lda, b + start, ldb, beta, c + start, ldc)
    barrier(parts)


cdef inline void input_projection(int part, int parts, Py_ssize_t rows, Py_ssize_t gh,
                                  Py_ssize_t in_size, const floating* inputs,
                                  const floating* w_ih, const floating* panels,
                                  floating* gates) noexcept nogil:
    """part's share of gates (rows, gh) = inputs (rows, in_size) @ W_ih^T: on W_ih^T packed
    into panels (by rows of gates), or through BLAS when panels is NULL."""
    cdef Py_ssize_t start, count
    if panels == NULL:
        part_gemm(part, parts, False, True, rows, gh, in_size, 1, inputs, in_size, w_ih,
                  in_size, 0, gates, gh)
        return
    part_range(rows, part, parts, 1, &start, &count)
    if count > 0:
        panel_gemm(count, in_size, inputs + start * in_size, in_size, panels, 0, gh, 0,
                   gates + start * gh, gh)

