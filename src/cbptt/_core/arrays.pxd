# The engine face's array checks: the data pointer of a C-contiguous NumPy array, after
# checking its dtype, size and (for what a call writes) writeability. A wrong array is a
# ValueError or TypeError naming the argument, never a pointer to the wrong memory.

cimport numpy as cnp

cdef inline str dtype_name(object dtype):
    return dtype.__name__ if isinstance(dtype, type) else str(dtype)


cdef inline void* data_of(object array, object dtype, Py_ssize_t size, str name) except NULL:
    """Pointer to a C-contiguous array's data after checking its dtype and size."""
    cdef cnp.ndarray a
    if not isinstance(array, cnp.ndarray):
        raise TypeError(f"{name}: expected a NumPy array")
    a = <cnp.ndarray>array
    if a.dtype != dtype or not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.size != size:
        raise ValueError(f"{name}: expected a C-contiguous {dtype_name(dtype)} array of "
                         f"{size} elements, got {array.dtype} {array.shape}")
    if not cnp.PyArray_ISWRITEABLE(a) and name in ("grads", "out", "dh0", "dc0",
                                                   "h_final", "c_final", "dx"):
        raise ValueError(f"{name}: must be writeable")
    return cnp.PyArray_DATA(a)


cdef inline void* optional_data_of(object array, object dtype, Py_ssize_t size,
                                   str name) except? NULL:
    """data_of, or NULL for None (an optional argument not given)."""
    if array is None:
        return NULL
    return data_of(array, dtype, size, name)


cdef inline bint float_buffer(object array, str caller, void** data, Py_ssize_t* count) except -1:
    """Data pointer and size of a C-contiguous float32/float64 array; True for float64."""
    cdef cnp.ndarray a = array
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_TYPE(a) not in (cnp.NPY_FLOAT32,
                                                                  cnp.NPY_FLOAT64):
        raise TypeError(f"{caller} needs a C-contiguous float32 or float64 array, got "
                        f"{a.dtype}")
    data[0] = cnp.PyArray_DATA(a)
    count[0] = a.size
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
