# The head's loss and gradients in training: the loss's scale (PyTorch's 'mean'), the loss
# of a block of outputs with its gradient (losses.pxd), and the head's backward: at once for
# many-to-one (head_backward), chunk by chunk of steps for many-to-many (head_chunk computes a
# chunk's outputs, loss and the gradient reaching h_t; head_weight_grads the head's own
# gradients once every row of the chunk is done). The head's forward is in forward.pxd.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from .._blas cimport gemm
from .losses cimport cross_entropy_loss, mse_loss
from .plan cimport Plan
from .products cimport part_column_sums, part_gemm, weight_grad
from .shape cimport LOSS_MSE, Shape, Work, layer_offset, output_steps, top_states
from .team cimport barrier


cdef inline double loss_scale(const Shape* s, const floating* weight,
                              double* terms) noexcept nogil:
    """The factor that makes the loss PyTorch's 'mean': 1 / (number of terms), over the output
    elements (mse) or targets (cross_entropy), weighted by weight (B, T_out) when given (a zero
    total weight gives a zero loss and zero gradients). terms receives that number."""
    cdef Py_ssize_t O = s.output_size, count = output_steps(s) * s.batch, i
    cdef double total_weight = count
    if weight != NULL:
        total_weight = 0
        for i in range(count):
            total_weight += weight[i]
    terms[0] = total_weight * (O if s.loss == LOSS_MSE else 1)
    return 0 if terms[0] == 0 else 1.0 / terms[0]


cdef inline double output_loss(const Shape* s, const floating* pred, const void* target,
                              const floating* weight, double scale, Py_ssize_t first,
                              Py_ssize_t count, Py_ssize_t row0, Py_ssize_t rows,
                              floating* dpred) noexcept nogil:
    """scale times the summed loss of the output steps [first, first + count) (counted from
    the first output step) and batch rows [row0, row0 + rows), pred and dpred (count, B, O)
    time-major; target (B, T_out, O) floats for mse, (B, T_out) class ids for cross_entropy;
    weight (B, T_out) or NULL."""
    if s.loss == LOSS_MSE:
        return mse_loss(pred, <const floating*>target, weight, output_steps(s), first, count,
                        s.batch, row0, rows, s.output_size, scale, dpred)
    return cross_entropy_loss(pred, <const int64_t*>target, weight, output_steps(s), first,
                              count, s.batch, row0, rows, s.output_size, scale, dpred)


cdef inline void head_backward(const Shape* s, const Plan* p, Work* w,
                               const floating* params, floating* grads, int part,
                               int parts) noexcept nogil:
    """Many-to-one: the head's gradients, and the gradient reaching each row's last state
    (dh_last). (Many-to-many does this chunk by chunk: head_chunk.)"""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, O = s.output_size
    cdef floating* dpred = <floating*>w.dpred
    cdef const floating* weight = params + layer_offset(s, s.num_layers)
    cdef floating* dweight = grads + layer_offset(s, s.num_layers)
    # dW = dpred^T @ h_last ; db = column sums of dpred ; dh_last = dpred @ W
    weight_grad(&p.wgrad, part, parts, O, H, B, dpred, O, <floating*>w.h_last, H, 0, dweight, H)
    part_gemm(part, parts, False, False, B, H, O, 1, dpred, O, weight, H, 0,
              <floating*>w.dh_last, H)
    part_column_sums(part, parts, B, O, dpred, O, <floating*>w.ones, 0, dweight + O * H)
    barrier(parts)


cdef inline double head_chunk(const Shape* s, Work* w, const floating* params,
                              const void* target, const floating* weight, double scale,
                              Py_ssize_t first, Py_ssize_t last, Py_ssize_t step0,
                              Py_ssize_t steps, Py_ssize_t row0, Py_ssize_t rows,
                              floating* dpred, floating* out) noexcept nogil:
    """Many-to-many training, the chunk of steps [first, last): a part's share of it, the steps
    [first + step0, first + step0 + steps) for the batch rows [row0, row0 + rows) (no
    barrier): the head's outputs (w.pred), their loss (returned) and its gradient (dpred,
    (last - first, B, O)), and out (last - first, B, H) = the gradient reaching the top
    layer's h_t from the head (zero before loss_start). The head's own gradients, which need
    every row, are head_weight_grads'."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t start = first + step0, end = first + step0 + steps
    cdef Py_ssize_t output_first = max(first, s.loss_start), t, r, k, step_rows, calls
    cdef const floating* weight_head = params + layer_offset(s, s.num_layers)
    cdef const floating* bias = weight_head + O * H
    cdef floating* pred = <floating*>w.pred
    cdef const floating* h_out = top_states(s, w, output_first, weight_head)
    cdef double loss = 0
    for t in range(start, min(end, output_first)):
        memset(out + ((t - first) * B + row0) * H, 0, rows * H * sizeof(floating))
    start = max(start, output_first)
    if start >= end or rows == 0:
        return 0
    # pred = h_t @ W^T + b ; the loss and dpred ; dL/dh_t = dpred @ W: one product over the
    # steps when the part has every row, else one per step
    step_rows = (end - start) * B if rows == B else rows
    calls = 1 if rows == B else end - start
    for t in range(start, start + calls):
        gemm(False, True, step_rows, O, H, 1, h_out + ((t - output_first) * B + row0) * H, H,
             weight_head, H, 0, pred + ((t - output_first) * B + row0) * O, O)
        for r in range((t - output_first) * B + row0, (t - output_first) * B + row0 + step_rows):
            for k in range(O):
                pred[r * O + k] += bias[k]
    loss = output_loss(s, pred + (start - output_first) * B * O, target, weight, scale,
                       start - s.loss_start, end - start, row0, rows,
                       dpred + (start - output_first) * B * O)
    for t in range(start, start + calls):
        gemm(False, False, step_rows, H, O, 1, dpred + ((t - output_first) * B + row0) * O, O,
             weight_head, H, 0, out + ((t - first) * B + row0) * H, H)
    return loss


cdef inline void head_weight_grads(const Shape* s, const Plan* p, Work* w, floating* grads,
                                   Py_ssize_t first, Py_ssize_t last, const floating* dpred,
                                   int part, int parts) noexcept nogil:
    """Many-to-many training, after head_chunk of the steps [first, last) ran for every row:
    dW_head += dpred^T @ h_t, db_head += column sums of dpred (part's share)."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t output_first = max(first, s.loss_start)
    cdef floating* dweight = grads + layer_offset(s, s.num_layers)
    cdef const floating* h_out = top_states(s, w, output_first, dweight)
    if output_first >= last:
        return
    weight_grad(&p.wgrad, part, parts, O, H, (last - output_first) * B, dpred, O, h_out, H,
                1, dweight, H)
    part_column_sums(part, parts, (last - output_first) * B, O, dpred, O,
                     <floating*>w.ones, 1, dweight + O * H)
