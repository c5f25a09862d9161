# The forward pass: every layer over every step, then the head.
#
# Contract: forward(s, p, w, x, params, st, head, part, parts) runs in every part of a team at
# once; on return (all parts) w.hs holds h_0 .. h_T of every layer, w.gates / w.cs / w.hn what
# BPTT reads of LSTM and GRU, and, if head, w.pred the head's outputs (many-to-one: w.h_last
# the state each row's output read). x is (B, T, I) batch-first; params the flat layout of
# shape.pxd (s.ids: x is token ids (B, T) int64, passed as floating* and read as ids). Per
# layer the only products inside the time loop are h_{t-1} @ W_hh^T; the input projection of
# all steps runs before it, as one product (or a few chunks of steps; token ids: a gather).
# Dropout (training engines whose shape has it, dropout.pxd): a layer above the first reads the
# layer below's states masked, from w.dropped; recurrent dropout masks h_{t-1} into w.h_masked
# for the per-step product.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from .cells cimport elman_forward, gru_forward, lstm_forward
from .dropout cimport drop_between, masked_rows, recurrent_mask
from .paths cimport (cbptt_ran, CBPTT_RAN_INPUT_BLAS, CBPTT_RAN_INPUT_IDS,
                     CBPTT_RAN_INPUT_PANELS, CBPTT_RAN_STEP_BLAS, CBPTT_RAN_STEP_PANELS)
from .plan cimport Plan, by_columns
from .products cimport input_projection, pack_panels, panel_gemm, part_gemm, step_product
from .shape cimport (CELL_GRU, CELL_LSTM, CELL_RELU, Shape, States, Work, drops_between,
                     is_elman, layer_input_size, layer_offset, layer_slices, output_steps,
                     top_states)
from .team cimport barrier, enter_step_loop, leave_step_loop, part_range


cdef inline void transpose_rows(const floating* source, floating* target, Py_ssize_t rows,
                                Py_ssize_t cols, Py_ssize_t first,
                                Py_ssize_t count) noexcept nogil:
    """target (cols, rows) = source (rows, cols)^T, for source rows [first, first + count), in
    32 x 32 tiles (a plain loop writes every element to another cache line: 6 ms for the large
    shape's 2048 x 512 W_hh, 4% of a step)."""
    cdef Py_ssize_t r, c, r0, c0, r_end, c_end
    for r0 in range(first, first + count, 32):
        r_end = min(r0 + 32, first + count)
        for c0 in range(0, cols, 32):
            c_end = min(c0 + 32, cols)
            for r in range(r0, r_end):
                for c in range(c0, c_end):
                    target[c * rows + r] = source[r * cols + c]


cdef inline void copy_input_steps(const Shape* s, const floating* x, Py_ssize_t first,
                                  Py_ssize_t last, floating* out, int part,
                                  int parts) noexcept nogil:
    """out (last - first, B, I) = x[:, first:last] for x (B, T, I) batch-first: part's share of
    the steps (no barrier)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, I = s.input_size, t, b, start, count
    part_range(last - first, part, parts, 1, &start, &count)
    for t in range(first + start, first + start + count):
        for b in range(B):
            memcpy(out + ((t - first) * B + b) * I, x + (b * T + t) * I, I * sizeof(floating))


cdef inline void project_ids(const Shape* s, Work* w, const int64_t* ids,
                             const floating* w_ih, floating* gates, int part,
                             int parts) noexcept nogil:
    """The first layer's projection of token ids (B, T): gates[t, b] = W_ih[:, ids[b, t]],
    the one-hot input's product, as a gather of rows of ids_table = W_ih^T (I, G*H), which the
    parts fill first (each its block of W_ih's rows). Ends with a barrier."""
    cdef Py_ssize_t B = s.batch, T = s.steps, GH = s.gate_count * s.hidden_size
    cdef Py_ssize_t first, count, r
    cdef floating* table = <floating*>w.ids_table
    part_range(GH, part, parts, 1, &first, &count)
    transpose_rows(w_ih, table, GH, s.input_size, first, count)
    barrier(parts)   # the whole table before any gather
    part_range(T * B, part, parts, 1, &first, &count)
    for r in range(first, first + count):      # row r = t * B + b reads ids[b, t]
        memcpy(gates + r * GH, table + ids[(r % B) * T + r // B] * GH, GH * sizeof(floating))
    barrier(parts)


cdef inline void project_inputs(const Shape* s, const Plan* p, Work* w, const floating* x,
                                Py_ssize_t layer, const floating* inputs,
                                const floating* w_ih, const floating* input_panels,
                                floating* gates, bint columns, Py_ssize_t row0,
                                Py_ssize_t rows, int part, int parts) noexcept nogil:
    """gates (T, B, G*H) = inputs @ W_ih^T for every step, on W_ih^T packed into input_panels
    or (NULL) through BLAS; ends with a barrier. The first layer's input, batch-first, goes
    through a time-major chunk buffer (two barriers a chunk). Where that takes several chunks
    and the parts split by rows, on panels, it runs straight from x instead: each of the
    part's batch rows is one product over its T steps (x's rows b*T .. b*T + T - 1 into gates'
    rows t*B + b, a row stride of B*G*H), no copy, one barrier (measured: long tanh -3-4% at 2
    threads; at a column partition, or in one chunk (LSTM, GRU), 1-2% slower)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, GH = s.gate_count * s.hidden_size
    cdef Py_ssize_t in_size = layer_input_size(s, layer), b, first, last
    cdef floating* x_chunk = <floating*>w.x_chunk
    if layer == 0 and s.ids:
        project_ids(s, w, <const int64_t*><const void*>x, w_ih, gates, part, parts)
    elif layer == 0 and input_panels != NULL and not columns and p.input_steps < T:
        for b in range(row0, row0 + rows):
            panel_gemm(T, in_size, x + b * T * in_size, in_size, input_panels, 0, GH, 0,
                       gates + b * GH, B * GH)
        barrier(parts)
    elif layer == 0:
        last = 0
        while last < T:
            first = last
            last = min(T, first + p.input_steps)
            copy_input_steps(s, x, first, last, x_chunk, part, parts)
            barrier(parts)
            input_projection(part, parts, (last - first) * B, GH, in_size, x_chunk, w_ih,
                             input_panels, gates + first * B * GH)
            barrier(parts)   # before the next chunk overwrites x_chunk
    else:
        input_projection(part, parts, T * B, GH, in_size, inputs, w_ih, input_panels, gates)
        barrier(parts)


cdef inline void run_steps(const Shape* s, floating* hs, floating* gates, floating* cs,
                           floating* hn, floating* rec, const floating* w_hh,
                           const floating* w_hh_t, const floating* panels,
                           const floating* bias_sum, const floating* b_ih,
                           const floating* b_hh, bint zero_h0, floating* h_masked,
                           const floating* rec_mask, bint columns, Py_ssize_t row0,
                           Py_ssize_t rows, int part, int parts) noexcept nogil:
    """The time loop of one layer, for the part's rows (row split: independent sequences, no
    barrier; column partition: a barrier a step): per step h_{t-1} @ W_hh^T, then the cell's
    elementwise step. The cell is chosen here, once; each loop runs one cell. From a zero h_0
    (zero_h0: no h0 given) the first step's product is zero: skipped. With recurrent dropout
    (h_masked (T, B, H), else NULL) the product reads h_{t-1} masked by rec_mask (B, H),
    which each part writes for its rows after the step that made them (the cell itself reads
    h_{t-1} unmasked)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, t
    cdef Py_ssize_t GH = s.gate_count * H, BH = B * H
    cdef floating* h_in = hs if h_masked == NULL else h_masked   # the products' h_{t-1}
    if h_masked != NULL:
        masked_rows(hs, rec_mask, h_masked, row0, rows, H, False)
        if columns:
            barrier(parts)
    cdef const floating* b = w_hh_t if w_hh_t != NULL else w_hh   # the product's B operand
    cdef Py_ssize_t ldb = GH if w_hh_t != NULL else H
    cdef bint trans_b = w_hh_t == NULL
    if s.cell == CELL_GRU:
        for t in range(T):
            # rec = h_{t-1} @ W_hh^T, kept apart: its n block is scaled by r
            if t == 0 and zero_h0:
                memset(rec + row0 * GH, 0, rows * GH * sizeof(floating))
            else:
                step_product(columns, part, parts, row0, rows, B, GH, H, h_in + t * BH, H, b,
                             ldb, trans_b, panels, 0, rec, GH)
            gru_forward(gates + (t * B + row0) * GH, rec + row0 * GH, b_ih, b_hh,
                        hs + t * BH + row0 * H, hs + (t + 1) * BH + row0 * H,
                        hn + t * BH + row0 * H, rows, H)
            if h_masked != NULL and t + 1 < T:
                masked_rows(hs + (t + 1) * BH, rec_mask, h_masked + (t + 1) * BH, row0, rows, H,
                            False)
            if columns:
                barrier(parts)   # h_t complete: every part's product reads all of it
    elif s.cell == CELL_LSTM:
        for t in range(T):
            # gates_t += h_{t-1} @ W_hh^T
            if not (t == 0 and zero_h0):
                step_product(columns, part, parts, row0, rows, B, GH, H, h_in + t * BH, H, b,
                             ldb, trans_b, panels, 1, gates + t * B * GH, GH)
            lstm_forward(gates + (t * B + row0) * GH, bias_sum, cs + t * BH + row0 * H,
                         cs + (t + 1) * BH + row0 * H, hs + (t + 1) * BH + row0 * H, rows, H)
            if h_masked != NULL and t + 1 < T:
                masked_rows(hs + (t + 1) * BH, rec_mask, h_masked + (t + 1) * BH, row0, rows, H,
                            False)
            if columns:
                barrier(parts)
    else:
        for t in range(T):
            if not (t == 0 and zero_h0):
                step_product(columns, part, parts, row0, rows, B, GH, H, h_in + t * BH, H, b,
                             ldb, trans_b, panels, 1, gates + t * B * GH, GH)
            elman_forward(s.cell == CELL_RELU, gates + (t * B + row0) * H, bias_sum, rows, H)
            if h_masked != NULL and t + 1 < T:
                masked_rows(hs + (t + 1) * BH, rec_mask, h_masked + (t + 1) * BH, row0, rows, H,
                            False)
            if columns:
                barrier(parts)


cdef inline void layer_forward(const Shape* s, const Plan* p, Work* w, const floating* x,
                               const floating* params, const States* st, Py_ssize_t layer,
                               bint columns, Py_ssize_t row0, Py_ssize_t rows, int part,
                               int parts) noexcept nogil:
    """One layer over every step: its initial state, the input projection of all steps, then
    the time loop; ends with a barrier (every row's states complete)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size
    cdef Py_ssize_t GH = s.gate_count * H, BH = B * H, j, first, count
    cdef Py_ssize_t in_size = layer_input_size(s, layer)
    cdef floating* w_hh_t = <floating*>w.w_hh_t
    cdef floating* panels = <floating*>w.panels
    cdef floating* hs = <floating*>w.hs + layer * (T + 1) * BH
    cdef const floating* inputs = hs - (T + 1) * BH + BH     # the layer below's h_1 .. h_T
    cdef floating* dropped = NULL
    cdef floating* h_masked = NULL
    cdef floating* rec_mask = NULL
    cdef floating* bias_sum = <floating*>w.bias_sum + layer * GH
    cdef floating* cs = NULL
    cdef floating* hn = NULL
    cdef floating* gates
    cdef floating* w_ih
    cdef floating* w_hh
    cdef floating* b_ih
    cdef floating* b_hh
    cdef floating* input_panels
    cdef int threads
    layer_slices(s, <floating*>params, layer, &w_ih, &w_hh, &b_ih, &b_hh)
    # Elman keeps no gates: its pre-activations go where h_1..h_T live, activated in place.
    if is_elman(s):
        gates = hs + BH
    else:
        gates = <floating*>w.gates + layer * T * B * GH
    if s.cell == CELL_LSTM:
        cs = <floating*>w.cs + layer * (T + 1) * BH
    if s.cell == CELL_GRU:
        hn = <floating*>w.hn + layer * T * BH
    if part == 0:
        for j in range(GH):
            bias_sum[j] = b_ih[j] + b_hh[j]
        if st.h0 != NULL:
            memcpy(hs, <floating*>st.h0 + layer * st.layer_stride, BH * sizeof(floating))
        else:
            memset(hs, 0, BH * sizeof(floating))
        if s.cell == CELL_LSTM:
            if st.c0 != NULL:
                memcpy(cs, <floating*>st.c0 + layer * st.layer_stride, BH * sizeof(floating))
            else:
                memset(cs, 0, BH * sizeof(floating))
    if w_hh_t != NULL:
        part_range(GH, part, parts, 1, &first, &count)
        transpose_rows(w_hh, w_hh_t, GH, H, first, count)
    # the input projection multiplies by packed W_ih^T panels too, where they fit the
    # panel buffer (in_size <= H), before W_hh's take their place
    input_panels = (panels if p.panel_input and in_size <= H and not (layer == 0 and s.ids)
                    else NULL)
    cbptt_ran(CBPTT_RAN_INPUT_IDS if layer == 0 and s.ids else
              CBPTT_RAN_INPUT_PANELS if input_panels != NULL else CBPTT_RAN_INPUT_BLAS)
    cbptt_ran(CBPTT_RAN_STEP_PANELS if panels != NULL else CBPTT_RAN_STEP_BLAS)
    if input_panels != NULL:
        pack_panels(part, parts, w_ih, in_size, True, in_size, GH, input_panels)
    elif panels != NULL:
        pack_panels(part, parts, w_hh, H, True, H, GH, panels)
    barrier(parts)   # the layer below complete before the projection; panels packed
    if layer > 0 and drops_between(s):
        # the input the layer reads (and its dW_ih): the layer below's h_t, masked
        dropped = <floating*>w.dropped + (layer - 1) * T * BH
        part_range(T * B, part, parts, 1, &first, &count)
        drop_between(&st.drop, layer, inputs, dropped, B, first, count, H)
        inputs = dropped
        barrier(parts)
    if s.recurrent_dropout > 0:
        # the layer's recurrent mask of the call, drawn once (each part its rows)
        h_masked = <floating*>w.h_masked + layer * T * BH
        rec_mask = <floating*>w.rec_mask + layer * BH
        recurrent_mask(&st.drop, layer, rec_mask, row0, rows, H)
    project_inputs(s, p, w, x, layer, inputs, w_ih, input_panels, gates, columns, row0, rows,
                   part, parts)
    if input_panels != NULL:
        # every part is past the projection's use of the panels
        pack_panels(part, parts, w_hh, H, True, H, GH, panels)
        barrier(parts)
    threads = enter_step_loop(p.step_threads_one)
    run_steps(s, hs, gates, cs, hn, <floating*>w.rec, w_hh, w_hh_t, panels, bias_sum, b_ih,
              b_hh, st.h0 == NULL, h_masked, rec_mask, columns, row0, rows, part, parts)
    leave_step_loop(threads)
    barrier(parts)   # every row's states complete: the next layer's input, the head's


cdef inline void head_forward(const Shape* s, Work* w, const floating* params, int part,
                              int parts) noexcept nogil:
    """pred = h_top @ W^T + b at the output steps (every step from loss_start, or the last).
    Ends with a barrier: pred is complete on return."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t rows = output_steps(s) * B
    cdef Py_ssize_t r, k, b, first, count
    cdef const floating* weight = params + layer_offset(s, s.num_layers)
    cdef const floating* bias = weight + O * H
    cdef floating* top = top_states(s, w, -1, weight)
    cdef floating* pred = <floating*>w.pred
    cdef const floating* h_out
    if s.many_to_one:
        part_range(B, part, parts, 1, &first, &count)
        for b in range(first, first + count):   # row b reads h at its last step (h_{t+1} at t+1)
            memcpy(<floating*>w.h_last + b * H, top + ((w.last_step[b] + 1) * B + b) * H,
                   H * sizeof(floating))
        barrier(parts)
        h_out = <floating*>w.h_last
    else:
        h_out = top + (1 + s.loss_start) * B * H
    # pred = h_out @ W^T + b
    part_gemm(part, parts, False, True, rows, O, H, 1, h_out, H, weight, H, 0, pred, O)
    barrier(parts)
    part_range(rows, part, parts, 1, &first, &count)
    for r in range(first, first + count):
        for k in range(O):
            pred[r * O + k] += bias[k]
    barrier(parts)


cdef inline void forward(const Shape* s, const Plan* p, Work* w, const floating* x,
                         const floating* params, const States* st, bint head, int part,
                         int parts) noexcept nogil:
    """All layers over all steps, then the head if asked (see the banner)."""
    cdef Py_ssize_t layer, row0, rows
    cdef bint columns = by_columns(p, parts)
    part_range(s.batch, part, parts, 1, &row0, &rows)     # this part's batch rows, every step
    for layer in range(s.num_layers):
        layer_forward(s, p, w, x, params, st, layer, columns, row0, rows, part, parts)
    if head:
        head_forward(s, w, params, part, parts)
