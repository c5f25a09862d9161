# Loss kernels: value and gradient w.r.t. the head's outputs in one pass.
#
# The kernels cover the steps [first, first + count) and the batch rows [row0, row0 + rows)
# of a (batch, steps) grid. Predictions are time-major and hold those steps only: row (t, b)
# at pred[((t - first) * batch + b) * width].
# Targets and the optional per-row weights keep the caller's batch-first layout over all the
# steps: row (t, b) at index b * steps + t. The value is scale * sum (weighted), and the gradient carries
# the same scale; the engine picks scale so that the value is PyTorch's 'mean' reduction (over
# unmasked rows when weights are given).

from cython cimport floating
from libc.math cimport exp, log
from libc.stdint cimport int64_t


cdef inline double mse_loss(const floating* pred, const floating* target,
                            const floating* weight, Py_ssize_t steps, Py_ssize_t first,
                            Py_ssize_t count, Py_ssize_t batch, Py_ssize_t row0,
                            Py_ssize_t rows, Py_ssize_t width, double scale,
                            floating* dpred) noexcept nogil:
    """scale * sum w (pred - target)^2; dpred = 2 * scale * w * (pred - target). weight may be
    NULL (all ones)."""
    cdef Py_ssize_t t, b, k
    cdef const floating* p
    cdef const floating* y
    cdef floating* g
    cdef double diff, row_weight, row_total, total = 0
    for t in range(first, first + count):
        for b in range(row0, row0 + rows):
            p = pred + ((t - first) * batch + b) * width
            g = dpred + ((t - first) * batch + b) * width
            y = target + (b * steps + t) * width
            row_weight = 1 if weight == NULL else weight[b * steps + t]
            row_total = 0
            for k in range(width):
                diff = <double>p[k] - <double>y[k]
                row_total += diff * diff
                g[k] = <floating>(2 * scale * row_weight * diff)
            total += row_weight * row_total
    return total * scale


cdef inline double cross_entropy_loss(const floating* logits, const int64_t* target,
                                      const floating* weight, Py_ssize_t steps,
                                      Py_ssize_t first, Py_ssize_t count, Py_ssize_t batch,
                                      Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t classes,
                                      double scale, floating* dlogits) noexcept nogil:
    """scale * sum w (-log softmax(logits)[target]); dlogits = scale * w * (softmax - onehot).
    Log-sum-exp with the row maximum subtracted, in double. weight may be NULL (all ones)."""
    cdef Py_ssize_t t, b, k, row
    cdef const floating* z
    cdef floating* g
    cdef double zmax, norm, row_weight, total = 0
    cdef int64_t label
    for t in range(first, first + count):
        for b in range(row0, row0 + rows):
            row = (t - first) * batch + b
            z = logits + row * classes
            g = dlogits + row * classes
            label = target[b * steps + t]
            row_weight = 1 if weight == NULL else weight[b * steps + t]
            zmax = z[0]
            for k in range(1, classes):
                if z[k] > zmax:
                    zmax = z[k]
            norm = 0
            for k in range(classes):
                norm += exp(<double>z[k] - zmax)
            total += row_weight * (zmax + log(norm) - <double>z[label])
            for k in range(classes):
                g[k] = <floating>(scale * row_weight * exp(<double>z[k] - zmax) / norm)
            g[label] -= <floating>(scale * row_weight)
    return total * scale
