# The hoisted products of the backward pass: a layer's weight and bias gradients, and the
# gradient it passes to the layer below, each one product over many steps (a chunk's, or all
# of them) rather than one a step.
#
# Contract: every function runs in each part of a team at once and computes the part's share
# (team.pxd); `beta` 0 starts a sum, 1 adds a chunk to it. The layer's pointers are those of
# backward.pxd's LayerBack: dA (steps, B, G*H) the pre-activation gradients (Elman: (steps,
# B, H)), GRU's da_n (steps, B, H) the n gate's input-side ones; inputs (steps, B, in) what the
# layer read (the first layer: x, time-major, from w.x_chunk).

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from .paths cimport cbptt_ran, CBPTT_RAN_INPUT_IDS, CBPTT_RAN_WGRAD_TRANSPOSED
from .plan cimport Plan
from .._blas cimport gemm
from .products cimport (panel_width, part_column_sums, part_gemm, weight_grad, wgrad_fits,
                        wgrad_kernel)
from .shape cimport CELL_GRU, Shape
from .team cimport part_range


cdef struct LayerBack:
    # one layer's view for the backward pass; void: float or double, as Work's
    Py_ssize_t layer
    Py_ssize_t in_size
    void* hs           # (T+1, B, H) the layer's h_0 .. h_T
    void* h_prev       # (T, B, H) the h_{t-1} its per-step products read: hs, or with
                       # recurrent dropout their masked copy (w.h_masked); dW_hh reads them
    void* rec_mask     # (B, H) recurrent dropout: the layer's mask of the call; else NULL
    void* cs           # (T+1, B, H) LSTM: c_0 .. c_T
    void* gates        # (T, B, G*H) LSTM, GRU: the activations; step t's dA overwrites step t
    void* hn           # (T, B, H) GRU: W_hn h + b_hn; step t's da_n overwrites step t
    void* inputs       # (T, B, in) the layer below's h_1 .. h_T (with dropout: masked, as
                       # the layer read them); NULL for the first layer
    void* w_ih
    void* w_hh
    void* dw_ih
    void* dw_hh
    void* db_ih
    void* db_hh
    void* inject       # the gradient reaching h_t from above (or the head), indexed by step
    void* dA           # pre-activation gradients, indexed by step (Elman: moves with chunks)
    void* da_n         # GRU: the n gate's input-side pre-activation gradients
    const int64_t* ids     # the first layer of an engine on token ids: x, (B, T); else NULL
    void* ids_table        # with ids: (I, G*H) where dW_ih^T is summed (Work.ids_table)
    bint top_many_to_one   # the top layer of a many-to-one model: dh_last enters at last_step
    bint chunk_grads       # GRU: weight gradients chunk by chunk (plan.gru_chunk_grads)


cdef inline void input_weight_grads(const Shape* s, const Plan* p, const floating* dA,
                                    const floating* da_n, const floating* inputs,
                                    Py_ssize_t in_size, Py_ssize_t n_rows, floating beta,
                                    floating* dw_ih, floating* scratch, int part,
                                    int parts) noexcept nogil:
    """dW_ih (G*H, in) = dA^T @ inputs + beta dW_ih over n_rows rows, for LSTM and GRU:
    dA (n_rows, G*H), inputs (n_rows, in). GRU's input side differs in the n block: its rows
    r, z come from dA, its rows n from da_n (n_rows, H).

    With fewer inputs than a panel's columns (dW_ih too narrow for the weight-gradient
    kernel) and scratch (in, G*H) given (the panel buffer, free after the step loop), the
    kernel computes the transpose dW_ih^T = inputs^T @ dA into scratch, each part its block
    of columns, which it then adds transposed into dW_ih (no barrier: its own columns)."""
    cdef Py_ssize_t H = s.hidden_size, GH = s.gate_count * s.hidden_size
    cdef Py_ssize_t start, count, j, i, end
    cdef floating* row
    if (scratch != NULL and in_size < panel_width(scratch) and in_size <= H
            and wgrad_fits(&p.wgrad, in_size, GH, n_rows, scratch)):
        cbptt_ran(CBPTT_RAN_WGRAD_TRANSPOSED)
        part_range(GH, part, parts, panel_width(scratch), &start, &count)
        end = start + count
        if s.cell == CELL_GRU and end > 2 * H:
            # columns [2H, 3H) from da_n, the rest from dA
            if start < 2 * H:
                wgrad_kernel(in_size, 2 * H - start, n_rows, inputs, in_size, dA + start, GH,
                             0, scratch + start, GH)
            j = max(start, 2 * H)
            wgrad_kernel(in_size, end - j, n_rows, inputs, in_size, da_n + (j - 2 * H), H, 0,
                         scratch + j, GH)
        elif count > 0:
            wgrad_kernel(in_size, count, n_rows, inputs, in_size, dA + start, GH, 0,
                         scratch + start, GH)
        for j in range(start, end):
            row = dw_ih + j * in_size
            if beta == 0:
                for i in range(in_size):
                    row[i] = scratch[i * GH + j]
            else:
                for i in range(in_size):
                    row[i] = beta * row[i] + scratch[i * GH + j]
        return
    if s.cell == CELL_GRU:
        weight_grad(&p.wgrad, part, parts, 2 * H, in_size, n_rows, dA, GH, inputs, in_size,
                    beta, dw_ih, in_size)
        weight_grad(&p.wgrad, part, parts, H, in_size, n_rows, da_n, H, inputs, in_size, beta,
                    dw_ih + 2 * H * in_size, in_size)
    else:
        weight_grad(&p.wgrad, part, parts, GH, in_size, n_rows, dA, GH, inputs, in_size, beta,
                    dw_ih, in_size)


cdef inline void ids_weight_grads(const Shape* s, const floating* dA, const floating* da_n,
                                  const int64_t* ids, Py_ssize_t first, Py_ssize_t last,
                                  bint start_sum, floating* table, int part,
                                  int parts) noexcept nogil:
    """Token ids: dW_ih^T (I, G*H), summed in table, gets the steps [first, last) of the
    one-hot input's dA^T @ x as a scatter-add, table[ids[b, t]] += dA[t, b] (GRU: its n
    columns from da_n); start_sum zeroes it first. dA and da_n point at step first's rows.
    Each part its own block of columns: no barrier."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, GH = s.gate_count * H
    cdef Py_ssize_t start, count, end, r, j, row_step, n_block
    cdef floating* row
    cdef const floating* source
    cbptt_ran(CBPTT_RAN_INPUT_IDS)
    part_range(GH, part, parts, 16, &start, &count)
    end = start + count
    if count <= 0:
        return
    if start_sum:
        for r in range(s.input_size):
            memset(table + r * GH + start, 0, count * sizeof(floating))
    n_block = 2 * H if s.cell == CELL_GRU else GH    # GRU: columns [2H, 3H) from da_n
    for r in range((last - first) * B):
        row_step = first + r // B
        row = table + ids[(r % B) * T + row_step] * GH
        source = dA + r * GH
        for j in range(start, min(end, n_block)):
            row[j] += source[j]
        if end > n_block:
            source = da_n + r * H - n_block
            for j in range(max(start, n_block), end):
                row[j] += source[j]


cdef inline void ids_table_out(const Shape* s, const floating* table, floating* dw_ih,
                               int part, int parts) noexcept nogil:
    """dW_ih (G*H, I) = the summed table (I, G*H) transposed: the part's block of columns
    (ids_weight_grads's: no barrier), in 32 x 32 tiles."""
    cdef Py_ssize_t GH = s.gate_count * s.hidden_size, I = s.input_size
    cdef Py_ssize_t start, count, j0, i0, j, i
    part_range(GH, part, parts, 16, &start, &count)
    for j0 in range(start, start + count, 32):
        for i0 in range(0, I, 32):
            for j in range(j0, min(j0 + 32, start + count)):
                for i in range(i0, min(i0 + 32, I)):
                    dw_ih[j * I + i] = table[i * GH + j]


cdef inline void gru_chunk_grads(const Shape* s, const Plan* p, const LayerBack* L,
                                 const floating* x_steps, const floating* ones,
                                 Py_ssize_t first, Py_ssize_t last, int part,
                                 int parts) noexcept nogil:
    """GRU, the chunk of steps [first, last) (dA still in cache): its share of dW_hh, db_hh,
    db_in (from da_n) and dW_ih; each part its own block of each, the same blocks at every
    chunk: no barrier (the narrow dW_ih path's scratch, the panel buffer, is still in use:
    NULL). x_steps: the first layer's input, time-major, all steps (w.x_chunk)."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, BH = B * H
    cdef Py_ssize_t GH = s.gate_count * H, in_size = L.in_size
    cdef Py_ssize_t n_rows = (last - first) * B
    cdef floating beta = 0 if last == s.steps else 1
    cdef const floating* dA = <const floating*>L.dA
    cdef const floating* da_n = <const floating*>L.da_n
    cdef const floating* inputs = <const floating*>L.inputs if L.layer > 0 else x_steps
    # dW_hh += dA^T @ h_{t-1} ; db_hh += column sums of dA
    weight_grad(&p.wgrad, part, parts, GH, H, n_rows, dA + first * B * GH, GH,
                <floating*>L.h_prev + first * BH, H, beta, <floating*>L.dw_hh, H, ones,
                <floating*>L.db_hh)
    # db_in += column sums of da_n
    part_column_sums(part, parts, n_rows, H, da_n + first * BH, H, ones, beta,
                     <floating*>L.db_ih + 2 * H)
    # dW_ih += dA^T @ inputs (n rows from da_n)
    if L.ids != NULL:
        ids_weight_grads(s, dA + first * B * GH, da_n + first * BH, L.ids, first, last,
                         beta == 0, <floating*>L.ids_table, part, parts)
        return
    input_weight_grads(s, p, dA + first * B * GH, da_n + first * BH,
                       inputs + first * B * in_size, in_size, n_rows, beta,
                       <floating*>L.dw_ih, <floating*>NULL, part, parts)


cdef inline void elman_chunk_grads(const Shape* s, const Plan* p, const LayerBack* L,
                                   const floating* x_chunk, const floating* ones,
                                   floating* inject_below, Py_ssize_t first, Py_ssize_t last,
                                   int part, int parts) noexcept nogil:
    """Elman, the chunk of steps [first, last): its share of dW_hh = dA^T @ h_{t-1}, db_hh =
    column sums of dA, dW_ih = dA^T @ inputs, and the layer below's gradient dA @ W_ih (over
    the inject of these steps, which this layer has consumed). x_chunk: the first layer's
    input of these steps, time-major."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, BH = B * H
    cdef Py_ssize_t GH = s.gate_count * H, in_size = L.in_size
    cdef Py_ssize_t n_rows = (last - first) * B
    cdef floating beta = 0 if last == s.steps else 1
    cdef const floating* dA = <const floating*>L.dA
    weight_grad(&p.wgrad, part, parts, GH, H, n_rows, dA + first * BH, GH,
                <floating*>L.h_prev + first * BH, H, beta, <floating*>L.dw_hh, H, ones,
                <floating*>L.db_hh)
    if L.ids != NULL:
        ids_weight_grads(s, dA + first * BH, <const floating*>NULL, L.ids, first, last,
                         beta == 0, <floating*>L.ids_table, part, parts)
    else:
        weight_grad(&p.wgrad, part, parts, GH, in_size, n_rows, dA + first * BH, GH,
                    x_chunk if L.layer == 0 else <floating*>L.inputs + first * B * in_size,
                    in_size, beta, <floating*>L.dw_ih, in_size)
    if L.layer > 0:
        part_gemm(part, parts, False, False, n_rows, H, GH, 1, dA + first * BH, GH,
                  <floating*>L.w_ih, in_size, 0, inject_below + first * BH, H)


cdef inline void input_grads(const Shape* s, const floating* dA, const floating* da_n,
                             const floating* w_ih, Py_ssize_t first, Py_ssize_t last,
                             floating* dx, int part, int parts) noexcept nogil:
    """The first layer, the steps [first, last): dL/dx (B, T, I) batch-first, dx[b, t] =
    dA[t, b] @ W_ih (GRU: its n block from da_n). dA and da_n point at step first's rows.
    Each part its own batch rows, one product a row over the steps (A's rows B*G*H apart):
    no barrier."""
    cdef Py_ssize_t B = s.batch, T = s.steps, I = s.input_size, H = s.hidden_size
    cdef Py_ssize_t GH = s.gate_count * H, b, start, count
    cdef floating* out
    part_range(B, part, parts, 1, &start, &count)
    for b in range(start, start + count):
        out = dx + (b * T + first) * I
        if s.cell == CELL_GRU:
            gemm(False, False, last - first, I, 2 * H, 1, dA + b * GH, B * GH, w_ih, I, 0,
                 out, I)
            gemm(False, False, last - first, I, H, 1, da_n + b * H, B * H, w_ih + 2 * H * I,
                 I, 1, out, I)
        else:
            gemm(False, False, last - first, I, GH, 1, dA + b * GH, B * GH, w_ih, I, 0, out,
                 I)


cdef inline void pass_down(const Shape* s, const LayerBack* L, floating* inject_below,
                           int part, int parts) noexcept nogil:
    """LSTM and GRU, below the top: the layer below receives dA @ W_ih at every step (GRU: its
    n rows from da_n) in inject_below (T, B, H)."""
    cdef Py_ssize_t T = s.steps, B = s.batch, H = s.hidden_size
    cdef Py_ssize_t GH = s.gate_count * H, in_size = L.in_size
    cdef const floating* w_ih = <const floating*>L.w_ih
    if s.cell == CELL_GRU:
        part_gemm(part, parts, False, False, T * B, H, 2 * H, 1, <floating*>L.dA, GH, w_ih,
                  in_size, 0, inject_below, H)
        part_gemm(part, parts, False, False, T * B, H, H, 1, <floating*>L.da_n, H,
                  w_ih + 2 * H * in_size, in_size, 1, inject_below, H)
    else:
        part_gemm(part, parts, False, False, T * B, H, GH, 1, <floating*>L.dA, GH, w_ih,
                  in_size, 0, inject_below, H)
