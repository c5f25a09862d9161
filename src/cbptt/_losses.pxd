# Loss kernels: value and gradient w.r.t. the head's outputs in one pass.
#
# Predictions are time-major, row (t, b) at pred[(t * batch + b) * width]; targets keep the
# caller's batch-first layout, addressed through a step stride and a batch stride. The value is
# scale * sum (scale = 1 / number of terms gives PyTorch's 'mean' reduction) and the gradient
# carries the same scale.

from cython cimport floating
from libc.math cimport exp, log
from libc.stdint cimport int64_t


cdef inline double mse_loss(const floating* pred, const floating* target, Py_ssize_t steps,
                            Py_ssize_t batch, Py_ssize_t width, Py_ssize_t target_step_stride,
                            Py_ssize_t target_batch_stride, double scale,
                            floating* dpred) noexcept nogil:
    """scale * sum (pred - target)^2; dpred = 2 * scale * (pred - target)."""
    cdef Py_ssize_t t, b, k
    cdef const floating* p
    cdef const floating* y
    cdef floating* g
    cdef double diff, total = 0
    for t in range(steps):
        for b in range(batch):
            p = pred + (t * batch + b) * width
            g = dpred + (t * batch + b) * width
            y = target + t * target_step_stride + b * target_batch_stride
            for k in range(width):
                diff = <double>p[k] - <double>y[k]
                total += diff * diff
                g[k] = <floating>(2 * scale * diff)
    return total * scale


cdef inline double cross_entropy_loss(const floating* logits, const int64_t* target,
                                      Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t classes,
                                      Py_ssize_t target_step_stride,
                                      Py_ssize_t target_batch_stride, double scale,
                                      floating* dlogits) noexcept nogil:
    """scale * sum -log softmax(logits)[target]; dlogits = scale * (softmax - onehot).

    Log-sum-exp with the row maximum subtracted, in double.
    """
    cdef Py_ssize_t t, b, k, row
    cdef const floating* z
    cdef floating* g
    cdef double zmax, norm, total = 0
    cdef int64_t label
    for t in range(steps):
        for b in range(batch):
            row = t * batch + b
            z = logits + row * classes
            g = dlogits + row * classes
            label = target[t * target_step_stride + b * target_batch_stride]
            zmax = z[0]
            for k in range(1, classes):
                if z[k] > zmax:
                    zmax = z[k]
            norm = 0
            for k in range(classes):
                norm += exp(<double>z[k] - zmax)
            total += zmax + log(norm) - <double>z[label]
            for k in range(classes):
                g[k] = <floating>(scale * exp(<double>z[k] - zmax) / norm)
            g[label] -= <floating>scale
    return total * scale
