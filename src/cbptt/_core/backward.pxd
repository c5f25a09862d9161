# The backward pass: BPTT down through every layer, after forward.pxd's pass.
#
# Contract: backward(s, p, w, x, params, grads, st, target, weight, scale, part, parts) runs
# in every part of a team at once and writes grads (flat, overwritten; many-to-many: the
# head's entries zeroed before by the caller), st.dh0/dc0 and st.dx where given and st.flow
# (needs parts == 1). Many-to-one starts from dpred (head.pxd's head_backward), a headless engine
# (an encoder) from st.dh_final/dc_final at each row's last step; many-to-many
# computes the head, its loss and dpred chunk by chunk here, and each part returns its share
# of that loss (target, weight and scale as for output_loss).
#
# Each layer runs back in chunks of plan.chunk_steps steps, so that what only one chunk needs
# lives in chunk-sized buffers: the top layer's incoming gradient (many-to-many: the head's
# outputs and their gradients, then dL/dh_t in w.chunk) and Elman's pre-activation gradients,
# written over it, whose weight-gradient GEMMs run per chunk (accumulating). LSTM and GRU
# write theirs over the layer's gates, and run their weight-gradient GEMMs over all steps at
# the end (GRU per chunk where its dA is large: plan.gru_chunk_grads). Inside a chunk the
# only product per step is dh_{t-1} = dA_t @ W_hh. Dropout: the layers' masks are redrawn
# (dropout.pxd): the gradient passed down to a layer below is masked as its states were on
# the way up, the recurrent one as h_{t-1} was.

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from .cells cimport elman_backward, gru_backward, lstm_backward
from .dropout cimport drop_between, masked_rows
from .forward cimport copy_input_steps
from .gradients cimport (LayerBack, elman_chunk_grads, gru_chunk_grads, ids_table_out,
                         ids_weight_grads, input_grads, input_weight_grads, pass_down)
from .head cimport head_backward, head_chunk, head_weight_grads
from .norms cimport mean_row_norm
from .paths cimport cbptt_ran, CBPTT_RAN_CHUNK_GRADS, CBPTT_RAN_STEP_BLAS, CBPTT_RAN_STEP_PANELS
from .plan cimport Plan, by_columns
from .products cimport pack_panels, step_product, weight_grad, part_column_sums
from .shape cimport (CELL_GRU, CELL_LSTM, CELL_RELU, Shape, States, Work, drops_between,
                     has_head, is_elman, layer_input_size, layer_slices)
from .team cimport barrier, enter_step_loop, leave_step_loop, part_range


cdef inline floating* step_entry(const Shape* s, const Work* w, const States* st,
                                 const LayerBack* L, Py_ssize_t t, floating* dh,
                                 Py_ssize_t row0, Py_ssize_t rows) noexcept nogil:
    """Before step t's cell: many-to-one's dh_last enters the top layer's rows whose output
    step is t, an encoder's dh_final (and dc_final) every layer's, and its dh_steps the top
    layer's at every step; the flow is recorded;
    returns the part's rows of the injected gradient at t (or NULL)."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, b, j
    cdef floating* inject_t = NULL
    cdef const floating* dh_last = <const floating*>w.dh_last
    cdef const floating* entry
    cdef floating* dc = <floating*>w.dc
    if L.inject != NULL:
        inject_t = <floating*>L.inject + (t * B + row0) * H
    if L.top_many_to_one:
        for b in range(row0, row0 + rows):
            if w.last_step[b] == t:
                for j in range(H):
                    dh[b * H + j] += dh_last[b * H + j]
    if st.dh_final != NULL:
        # dh += dL/dh_final (and dc += dL/dc_final) of the rows whose last step is t
        for b in range(row0, row0 + rows):
            if w.last_step[b] == t:
                entry = <const floating*>st.dh_final + L.layer * st.layer_stride + b * H
                for j in range(H):
                    dh[b * H + j] += entry[j]
                if st.dc_final != NULL:
                    entry = <const floating*>st.dc_final + L.layer * st.layer_stride + b * H
                    for j in range(H):
                        dc[b * H + j] += entry[j]
    if st.dh_steps != NULL and L.layer == s.num_layers - 1:
        for b in range(row0, row0 + rows):     # dh += dL/dh_t of the top layer, row b
            entry = <const floating*>st.dh_steps + (b * s.steps + t) * H
            for j in range(H):
                dh[b * H + j] += entry[j]
    if st.flow != NULL:
        st.flow[L.layer * s.steps + t] = mean_row_norm(dh, inject_t, B, H)
    return inject_t


cdef inline void step_exit(const Shape* s, const States* st, const LayerBack* L, Py_ssize_t t,
                           floating* dh, floating* rec, const floating* panels,
                           bint columns, Py_ssize_t row0, Py_ssize_t rows, int part,
                           int parts) noexcept nogil:
    """After step t's cell: dh_{t-1} = dA_t @ W_hh (GRU: += onto dh z), unless t is the first
    step and the initial state's gradient is not asked for. With recurrent dropout the
    product goes through rec (B, H) and its mask (h_{t-1} reached the product masked)."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, GH = s.gate_count * H
    if t == 0 and st.dh0 == NULL:
        return
    if columns:
        barrier(parts)   # dA_t complete: every part's product reads all of it
    if rec == NULL:
        step_product(columns, part, parts, row0, rows, B, H, GH, <floating*>L.dA + t * B * GH,
                     GH, <floating*>L.w_hh, H, False, panels, 1 if s.cell == CELL_GRU else 0,
                     dh, H)
        return
    # rec = dA_t @ W_hh; dh (+)= rec masked (step_product's column partition ends with a
    # barrier: every column of the part's rows is there)
    step_product(columns, part, parts, row0, rows, B, H, GH, <floating*>L.dA + t * B * GH, GH,
                 <floating*>L.w_hh, H, False, panels, 0, rec, H)
    masked_rows(rec, <floating*>L.rec_mask, dh, row0, rows, H, s.cell == CELL_GRU)


cdef inline void run_steps_back(const Shape* s, const Work* w, const States* st,
                                const LayerBack* L, Py_ssize_t first, Py_ssize_t last,
                                const floating* panels, bint columns, Py_ssize_t row0,
                                Py_ssize_t rows, int part, int parts) noexcept nogil:
    """The steps [first, last) of one layer, back in time, for the part's rows (row split: no
    barrier): dA_t from dh and the injected gradient, then dh_{t-1}. The cell is chosen
    here, once; each loop runs one cell."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, BH = B * H, GH = s.gate_count * H, t
    cdef floating* dh = <floating*>w.dh
    cdef floating* dc = <floating*>w.dc
    cdef floating* hs = <floating*>L.hs
    cdef floating* cs = <floating*>L.cs
    cdef floating* gates = <floating*>L.gates
    cdef floating* hn = <floating*>L.hn
    cdef floating* dA = <floating*>L.dA
    cdef floating* da_n = <floating*>L.da_n
    cdef floating* rec = <floating*>w.rec if s.recurrent_dropout > 0 else NULL
    cdef floating* inject_t
    if s.cell == CELL_GRU:
        for t in range(last - 1, first - 1, -1):
            inject_t = step_entry(s, w, st, L, t, dh, row0, rows)
            # dA_t = (dar, daz, dhn); dh <- dh z, then dh_{t-1} = dh z + dA_t @ W_hh
            gru_backward(gates + (t * B + row0) * GH, hn + t * BH + row0 * H,
                         hs + t * BH + row0 * H, dh + row0 * H, inject_t,
                         dA + (t * B + row0) * GH, da_n + t * BH + row0 * H, rows, H)
            step_exit(s, st, L, t, dh, rec, panels, columns, row0, rows, part, parts)
    elif s.cell == CELL_LSTM:
        for t in range(last - 1, first - 1, -1):
            inject_t = step_entry(s, w, st, L, t, dh, row0, rows)
            lstm_backward(gates + (t * B + row0) * GH, cs + t * BH + row0 * H,
                          cs + (t + 1) * BH + row0 * H, dh + row0 * H, inject_t,
                          dc + row0 * H, dA + (t * B + row0) * GH, rows, H)
            step_exit(s, st, L, t, dh, rec, panels, columns, row0, rows, part, parts)
    else:
        for t in range(last - 1, first - 1, -1):
            inject_t = step_entry(s, w, st, L, t, dh, row0, rows)
            elman_backward(s.cell == CELL_RELU, hs + (t + 1) * BH + row0 * H, dh + row0 * H,
                           inject_t, dA + (t * B + row0) * H, rows * H)
            step_exit(s, st, L, t, dh, rec, panels, columns, row0, rows, part, parts)


cdef inline void gated_layer_grads(const Shape* s, const Plan* p, Work* w, const floating* x,
                                   const LayerBack* L, floating* panels, int part,
                                   int parts) noexcept nogil:
    """LSTM and GRU, after the layer's step loop (unless L.chunk_grads summed them per chunk):
    dW_hh = dA^T @ h_{0..T-1} (as the products read them), db_hh = column sums of dA (GRU: db_in those of da_n), dW_ih =
    dA^T @ inputs (the first layer: chunk by chunk of x, through w.x_chunk)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, BH = B * H
    cdef Py_ssize_t GH = s.gate_count * H, in_size = L.in_size, first, last
    cdef floating* dA = <floating*>L.dA
    cdef floating* da_n = <floating*>L.da_n
    cdef floating* ones = <floating*>w.ones
    weight_grad(&p.wgrad, part, parts, GH, H, T * B, dA, GH, <floating*>L.h_prev, H, 0,
                <floating*>L.dw_hh, H, ones, <floating*>L.db_hh)
    if s.cell == CELL_GRU:
        part_column_sums(part, parts, T * B, H, da_n, H, ones, 0, <floating*>L.db_ih + 2 * H)
    if L.layer > 0:
        input_weight_grads(s, p, dA, da_n, <floating*>L.inputs, in_size, T * B, 0,
                           <floating*>L.dw_ih, panels, part, parts)
        return
    if L.ids != NULL:
        ids_weight_grads(s, dA, da_n, L.ids, 0, T, True, <floating*>L.ids_table, part, parts)
        ids_table_out(s, <floating*>L.ids_table, <floating*>L.dw_ih, part, parts)
        return
    last = T
    while last > 0:
        first = max(0, last - p.input_steps)
        if p.input_steps < T:   # else x_chunk still holds all of x, from the forward
            copy_input_steps(s, x, first, last, <floating*>w.x_chunk, part, parts)
            barrier(parts)
        input_weight_grads(s, p, dA + first * B * GH,
                           NULL if da_n == NULL else da_n + first * BH, <floating*>w.x_chunk,
                           in_size, (last - first) * B, 0 if last == T else 1,
                           <floating*>L.dw_ih, panels, part, parts)
        barrier(parts)   # before the next chunk overwrites x_chunk
        last = first


cdef inline void layer_view(const Shape* s, const Plan* p, Work* w, const floating* x,
                            const floating* params, floating* grads, Py_ssize_t layer,
                            LayerBack* L) noexcept nogil:
    """L = layer's pointers for the backward pass."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, BH = B * H
    cdef Py_ssize_t GH = s.gate_count * H
    cdef floating* unused_b_ih
    cdef floating* unused_b_hh
    cdef floating* hs = <floating*>w.hs + layer * (T + 1) * BH
    memset(L, 0, sizeof(LayerBack))
    L.layer = layer
    L.in_size = layer_input_size(s, layer)
    layer_slices(s, <floating*>params, layer, <floating**>&L.w_ih, <floating**>&L.w_hh,
                 &unused_b_ih, &unused_b_hh)
    layer_slices(s, grads, layer, <floating**>&L.dw_ih, <floating**>&L.dw_hh,
                 <floating**>&L.db_ih, <floating**>&L.db_hh)
    L.hs = hs
    L.h_prev = hs
    if s.recurrent_dropout > 0:
        L.h_prev = <floating*>w.h_masked + layer * T * BH
        L.rec_mask = <floating*>w.rec_mask + layer * BH
    # the layer below's h_1 .. h_T (with dropout, masked); the first layer reads x through
    # w.x_chunk, chunk by chunk
    L.inputs = NULL if layer == 0 else hs - (T + 1) * BH + BH
    if layer > 0 and drops_between(s):
        L.inputs = <floating*>w.dropped + (layer - 1) * T * BH
    if s.cell == CELL_LSTM:
        L.cs = <floating*>w.cs + layer * (T + 1) * BH
    if not is_elman(s):
        # step t's gradients overwrite step t's gates (and GRU's hn), read just before
        L.gates = <floating*>w.gates + layer * T * B * GH
        L.dA = L.gates
    if s.cell == CELL_GRU:
        L.hn = <floating*>w.hn + layer * T * BH
        L.da_n = L.hn
    if layer == 0 and s.ids:
        L.ids = <const int64_t*><const void*>x
        L.ids_table = w.ids_table
    L.top_many_to_one = s.many_to_one and has_head(s) and layer == s.num_layers - 1
    # GRU's weight gradients per chunk where dA is large (measured at 2 threads: large
    # -1.3 to -2.6%, B=64 H=256 -3-4%; under 16 MiB 1-10% slower); the first layer's
    # needs x whole in x_chunk
    L.chunk_grads = p.gru_chunk_grads and (layer > 0 or p.input_steps >= T)
    # below the top, the gradient from the layer above fills w.inject (all steps); the top
    # layer of many-to-one (and of an encoder) has none
    L.inject = NULL if s.many_to_one and layer == s.num_layers - 1 else w.inject


cdef inline double layer_backward(const Shape* s, const Plan* p, Work* w, const floating* x,
                                  const floating* params, floating* grads, const States* st,
                                  Py_ssize_t layer, const void* target,
                                  const floating* weight, double scale, bint columns,
                                  Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t* chunk_index,
                                  int part, int parts) noexcept nogil:
    """One layer back through every step, chunk by chunk (see the banner); returns the part's
    share of the head's loss (many-to-many, top layer; else 0)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, BH = B * H
    cdef Py_ssize_t GH = s.gate_count * H, O = s.output_size, first, last, step0, steps, t
    cdef floating* chunk = <floating*>w.chunk
    cdef floating* panels = <floating*>w.panels
    cdef floating* dpred = NULL
    cdef bint elman = is_elman(s), head_chunks = layer == s.num_layers - 1 and not s.many_to_one
    cdef double loss = 0
    cdef int threads
    cdef LayerBack L
    layer_view(s, p, w, x, params, grads, layer, &L)
    if L.chunk_grads:
        cbptt_ran(CBPTT_RAN_CHUNK_GRADS)
    cbptt_ran(CBPTT_RAN_STEP_PANELS if panels != NULL else CBPTT_RAN_STEP_BLAS)
    if s.cell == CELL_LSTM:
        memset(<floating*>w.dc + row0 * H, 0, rows * H * sizeof(floating))
    memset(<floating*>w.dh + row0 * H, 0, rows * H * sizeof(floating))
    if layer < s.num_layers - 1 and drops_between(s):
        # the layer above read h_t through its mask: so does the gradient it passed down
        # (each part its own rows, the only ones its steps read)
        for t in range(T):
            drop_between(&st.drop, layer + 1, <floating*>w.inject, <floating*>w.inject, B,
                         t * B + row0, rows, H)
    if panels != NULL:
        # every part is past the previous layer's (or the forward's) use of the panels
        pack_panels(part, parts, <floating*>L.w_hh, H, False, GH, H, panels)
        if not columns:
            barrier(parts)   # a row split reads every part's panels
    last = T
    while last > 0:
        first = max(0, last - p.chunk_steps)
        if head_chunks:
            # dpred alternates between two buffers, so that the last chunk's
            # head_weight_grads may still be reading the other. At a column partition each part
            # computes its own rows, which its step loop reads: no barrier. At a row split
            # each part computes its share of the steps for every row (per-step products
            # of a few rows would cost more than the barrier).
            dpred = <floating*>w.dpred + (chunk_index[0] % 2) * p.chunk_steps * B * O
            if columns:
                loss += head_chunk(s, w, params, target, weight, scale, first, last, 0,
                                   last - first, row0, rows, dpred, chunk)
            else:
                part_range(last - first, part, parts, 1, &step0, &steps)
                loss += head_chunk(s, w, params, target, weight, scale, first, last, step0,
                                   steps, 0, B, dpred, chunk)
                barrier(parts)
            L.inject = chunk - first * BH
        if elman:
            L.dA = chunk - first * BH        # over the chunk's inject, consumed in place
            if layer == 0 and p.input_steps < T and not s.ids:   # else x_chunk holds x
                copy_input_steps(s, x, first, last, <floating*>w.x_chunk, part, parts)
        threads = enter_step_loop(p.step_threads_one)
        run_steps_back(s, w, st, &L, first, last, panels, columns, row0, rows, part, parts)
        leave_step_loop(threads)
        barrier(parts)     # the chunk's dA complete (every row), and its dpred
        if head_chunks:
            head_weight_grads(s, p, w, grads, first, last, dpred, part, parts)
        if L.chunk_grads:
            gru_chunk_grads(s, p, &L, <floating*>w.x_chunk, <floating*>w.ones, first, last,
                            part, parts)
        if elman:
            elman_chunk_grads(s, p, &L, <floating*>w.x_chunk, <floating*>w.ones,
                              <floating*>w.inject, first, last, part, parts)
            if layer == 0 and st.dx != NULL:
                input_grads(s, chunk, NULL, <floating*>L.w_ih, first, last,
                            <floating*>st.dx, part, parts)
            barrier(parts)     # before the next chunk overwrites the chunk buffer
        last = first
        chunk_index[0] += 1
    if L.ids != NULL and (elman or L.chunk_grads):
        ids_table_out(s, <floating*>L.ids_table, <floating*>L.dw_ih, part, parts)
    if layer == 0 and st.dx != NULL and not elman:
        input_grads(s, <floating*>L.dA, <floating*>L.da_n, <floating*>L.w_ih, 0, T,
                    <floating*>st.dx, part, parts)
    # every part its own rows: the next layer starts by zeroing them
    if st.dh0 != NULL:
        memcpy(<floating*>st.dh0 + layer * st.layer_stride + row0 * H,
               <floating*>w.dh + row0 * H, rows * H * sizeof(floating))
    if st.dc0 != NULL and s.cell == CELL_LSTM:
        memcpy(<floating*>st.dc0 + layer * st.layer_stride + row0 * H,
               <floating*>w.dc + row0 * H, rows * H * sizeof(floating))
    if elman:
        if part == 0:
            memcpy(L.db_ih, L.db_hh, GH * sizeof(floating))
        return loss
    if not L.chunk_grads:
        gated_layer_grads(s, p, w, x, &L, panels, part, parts)
    if layer > 0:
        pass_down(s, &L, <floating*>w.inject, part, parts)
    barrier(parts)         # db_hh complete; inject complete for the layer below
    if part == 0:
        # db_ih = db_hh (GRU: the r, z blocks; its n block is the column sums of da_n)
        memcpy(L.db_ih, L.db_hh, (2 * H if s.cell == CELL_GRU else GH) * sizeof(floating))
    return loss


cdef inline double backward(const Shape* s, const Plan* p, Work* w, const floating* x,
                            const floating* params, floating* grads, const States* st,
                            const void* target, const floating* weight, double scale,
                            int part, int parts) noexcept nogil:
    """BPTT down through every layer (see the banner); returns the part's share of the loss
    (many-to-many; 0 for many-to-one, whose loss the caller computed)."""
    cdef Py_ssize_t layer, row0, rows, chunk_index = 0
    cdef bint columns = by_columns(p, parts)
    cdef double loss = 0
    if s.many_to_one and has_head(s):
        head_backward(s, p, w, params, grads, part, parts)
    part_range(s.batch, part, parts, 1, &row0, &rows)     # this part's batch rows, every step
    for layer in range(s.num_layers - 1, -1, -1):
        loss += layer_backward(s, p, w, x, params, grads, st, layer, target, weight, scale,
                               columns, row0, rows, &chunk_index, part, parts)
    return loss
