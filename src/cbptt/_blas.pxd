# The BLAS layer: thin row-major wrappers over scipy.linalg.cython_blas, fused over float/double.
#
# Every matrix here is row-major with an explicit leading dimension (its row stride). BLAS is
# column-major, and a row-major matrix is its own transpose to BLAS, so C = op(A) op(B) is
# issued as C^T = op(B)^T op(A)^T: the operands swap, the transpose flags stay.
# Nothing is linked at build time: SciPy's wheel carries the BLAS and exports its pointers.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

ctypedef int blas_int   # SciPy's cython_blas is LP64: every integer argument is a C int


cdef inline void gemm(bint trans_a, bint trans_b, blas_int m, blas_int n, blas_int k,
                      floating alpha, const floating* a, blas_int lda,
                      const floating* b, blas_int ldb, floating beta,
                      floating* c, blas_int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) @ op(B) + beta * C; op(A) is (m, k), op(B) is (k, n)."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is double:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
    else:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)


cdef inline void gemv(bint trans_a, blas_int rows, blas_int cols, floating alpha,
                      const floating* a, blas_int lda, const floating* x, floating beta,
                      floating* y) noexcept nogil:
    """y = alpha * op(A) @ x + beta * y for A (rows, cols): y has rows entries, or cols if trans_a."""
    cdef char t = b'N' if trans_a else b'T'   # A row-major is A^T column-major
    cdef blas_int one = 1
    if rows <= 0 or cols <= 0:
        return
    if floating is double:
        dgemv(&t, &cols, &rows, &alpha, <double*>a, &lda, <double*>x, &one, &beta, y, &one)
    else:
        sgemv(&t, &cols, &rows, &alpha, <float*>a, &lda, <float*>x, &one, &beta, y, &one)


# OpenBLAS multiplies small matrices without packing them (its "small matrix" kernels, on
# processors that have them) only while m * n * k stays under about 1e6 and neither operand is
# transposed; above that, every call repacks both operands, which for the per-step products of
# an RNN means copying the whole recurrent weight matrix at every time step. step_gemm issues
# a per-step product C = A @ B (+ C) as column or depth slices that each stay under that size.
cdef enum:
    SMALL_GEMM_MNK = 1000000
    MAX_STEP_SLICES = 8


cdef inline void step_gemm(blas_int m, blas_int n, blas_int k, const floating* a, blas_int lda,
                           const floating* b, blas_int ldb, floating beta, floating* c,
                           blas_int ldc) noexcept nogil:
    """C (m, n) = A (m, k) @ B (k, n) + beta * C, no transposes, sliced along n or k so that
    each BLAS call is a small one (see above). Large products go to BLAS whole."""
    cdef double mnk = <double>m * n * k
    cdef blas_int slices, width, start
    if mnk <= SMALL_GEMM_MNK or mnk > SMALL_GEMM_MNK * MAX_STEP_SLICES:
        gemm(False, False, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
        return
    slices = <blas_int>(mnk / SMALL_GEMM_MNK) + 1
    start = 0
    if n >= k:                       # column slices: C[:, j:j+w] = A @ B[:, j:j+w]
        width = ((n + slices - 1) // slices + 15) // 16 * 16
        while start < n:
            gemm(False, False, m, min(width, n - start), k, 1, a, lda, b + start, ldb, beta,
                 c + start, ldc)
            start += width
    else:                            # depth slices: C = sum_j A[:, j:j+w] @ B[j:j+w, :]
        width = ((k + slices - 1) // slices + 15) // 16 * 16
        while start < k:
            gemm(False, False, m, n, min(width, k - start), 1, a + start, lda,
                 b + <Py_ssize_t>start * ldb, ldb, beta if start == 0 else 1, c, ldc)
            start += width
