# Norms in double: the gradient's squared norm (clipping, the finite check) and the mean norm
# of a block of rows (the gradient flow).

from cython cimport floating
from libc.math cimport sqrt


cdef inline double mean_row_norm(const floating* a, const floating* b, Py_ssize_t rows,
                                 Py_ssize_t width) noexcept nogil:
    """Mean over rows of the Euclidean norm of a + b (b may be NULL)."""
    cdef Py_ssize_t r, j
    cdef double v, row_sq, total = 0
    for r in range(rows):
        row_sq = 0
        for j in range(width):
            v = a[r * width + j] + (0 if b == NULL else b[r * width + j])
            row_sq += v * v
        total += sqrt(row_sq)
    return total / rows


cdef inline double squared_norm(const floating* values, Py_ssize_t count) noexcept nogil:
    """Sum of squares in double: NaN or Inf if any value is not finite."""
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(count):
        total += <double>values[i] * <double>values[i]
    return total
