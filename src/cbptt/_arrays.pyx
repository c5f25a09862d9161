"""Array checks for the trainers, on raw buffers without temporaries: whether an array is
finite, its squared norm in double."""
cimport numpy as cnp

from ._core.arrays cimport float_buffer
from ._core.norms cimport squared_norm

cnp.import_array()

cdef extern from "_core/vmath.h" nogil:
    int cbptt_all_finite_f32(const float* x, Py_ssize_t n)
    int cbptt_all_finite_f64(const double* x, Py_ssize_t n)


def all_finite(array):
    """Whether a C-contiguous float32/float64 array holds no NaN or Inf (no temporaries)."""
    cdef void* data
    cdef Py_ssize_t count
    cdef bint result, is_double = float_buffer(array, "all_finite", &data, &count)
    with nogil:
        if is_double:
            result = cbptt_all_finite_f64(<double*>data, count)
        else:
            result = cbptt_all_finite_f32(<float*>data, count)
    return result


def squared_norm_of(array):
    """Sum of squares of a C-contiguous float32/float64 array, accumulated in double."""
    cdef void* data
    cdef Py_ssize_t count
    cdef double result
    cdef bint is_double = float_buffer(array, "squared_norm_of", &data, &count)
    with nogil:
        if is_double:
            result = squared_norm(<double*>data, count)
        else:
            result = squared_norm(<float*>data, count)
    return result
