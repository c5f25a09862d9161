# Cell kernels: the fused elementwise work of one time step, over a (rows, width) block.
# Forward kernels turn pre-activations into the stored activations in place; backward kernels
# turn the gradient w.r.t. h_t into pre-activation gradients. PyTorch's equations and gate order.

from cython cimport floating
from libc.math cimport tanh, tanhf, exp, expf


cdef inline floating sigmoid(floating x) noexcept nogil:
    """1 / (1 + e^-x), written so that neither branch overflows."""
    cdef floating e
    if floating is float:
        if x >= 0:
            return 1.0 / (1.0 + expf(-x))
        e = expf(x)
        return e / (1.0 + e)
    else:
        if x >= 0:
            return 1.0 / (1.0 + exp(-x))
        e = exp(x)
        return e / (1.0 + e)


cdef inline floating tanh_f(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline void elman_forward(bint relu, floating* pre, const floating* bias,
                               Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """h = act(pre + bias) in place; pre (rows, hidden), bias (hidden,)."""
    cdef Py_ssize_t r, j
    cdef floating v
    for r in range(rows):
        if relu:
            for j in range(hidden):
                v = pre[r * hidden + j] + bias[j]
                pre[r * hidden + j] = v if v > 0 else 0
        else:
            for j in range(hidden):
                pre[r * hidden + j] = tanh_f(pre[r * hidden + j] + bias[j])


cdef inline void elman_backward(bint relu, const floating* h, const floating* dh_carry,
                                const floating* dh_inject, floating* da,
                                Py_ssize_t count) noexcept nogil:
    """da = (dh_carry + dh_inject) * act'(a), from the stored h = act(a); dh_inject may be NULL.

    tanh' = 1 - h^2, relu' = [h > 0]. All arrays hold count elements.
    """
    cdef Py_ssize_t j
    if dh_inject == NULL:
        if relu:
            for j in range(count):
                da[j] = dh_carry[j] if h[j] > 0 else 0
        else:
            for j in range(count):
                da[j] = dh_carry[j] * (1 - h[j] * h[j])
    else:
        if relu:
            for j in range(count):
                da[j] = (dh_carry[j] + dh_inject[j]) if h[j] > 0 else 0
        else:
            for j in range(count):
                da[j] = (dh_carry[j] + dh_inject[j]) * (1 - h[j] * h[j])
