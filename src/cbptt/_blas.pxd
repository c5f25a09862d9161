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
