"""Python twins of the BLAS wrappers in _blas.pxd, for the tests (as scikit-learn tests its shim)."""
import numpy as np


def gemm_twin(bint trans_a, bint trans_b, floating alpha, floating[:, ::1] a,
              floating[:, ::1] b, floating beta, floating[:, ::1] c):
    """C = alpha * op(A) @ op(B) + beta * C in place, for C-contiguous 2-D arrays."""
    cdef blas_int m = c.shape[0]
    cdef blas_int n = c.shape[1]
    cdef blas_int k = a.shape[0] if trans_a else a.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != m or (b.shape[1] if trans_b else b.shape[0]) != k \
            or (b.shape[0] if trans_b else b.shape[1]) != n:
        raise ValueError("gemm_twin: shapes do not match")
    with nogil:
        gemm(trans_a, trans_b, m, n, k, alpha, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
             beta, &c[0, 0], c.shape[1])


def gemv_twin(bint trans_a, floating alpha, floating[:, ::1] a, floating[::1] x,
              floating beta, floating[::1] y):
    """y = alpha * op(A) @ x + beta * y in place."""
    if x.shape[0] != (a.shape[0] if trans_a else a.shape[1]) or \
            y.shape[0] != (a.shape[1] if trans_a else a.shape[0]):
        raise ValueError("gemv_twin: shapes do not match")
    with nogil:
        gemv(trans_a, a.shape[0], a.shape[1], alpha, &a[0, 0], a.shape[1], &x[0], beta, &y[0])
