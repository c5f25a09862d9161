# The problem one engine solves, and where everything lives: the model's shape, the flat
# parameter layout, the workspaces and the states of a call. Nothing here decides a strategy
# (that is plan.pxd) or computes anything beyond offsets.
#
# Parameters live in one flat buffer in PyTorch's state_dict order: per layer weight_ih
# (G*H, in), weight_hh (G*H, H), bias_ih (G*H,), bias_hh (G*H,), then head.weight (O, H) and
# head.bias (O,). Gradients use the same layout.

from cython cimport floating
from libc.stdint cimport int64_t

from .dropout cimport Drop

cdef enum:
    CELL_TANH = 0
    CELL_RELU = 1
    CELL_LSTM = 2
    CELL_GRU = 3

cdef enum:
    LOSS_MSE = 0
    LOSS_CROSS_ENTROPY = 1


cdef struct Shape:
    int cell
    Py_ssize_t gate_count     # gates per unit G: 1 (tanh, relu), 4 (lstm), 3 (gru)
    Py_ssize_t num_layers, input_size, hidden_size
    Py_ssize_t output_size    # O; 0: no head (an encoder: many-to-one, see has_head)
    Py_ssize_t batch, steps
    bint many_to_one
    bint ids                  # the input is token ids (B, T) int64 in [0, I): the one-hot
                              # input, never made (the first layer's projection a gather)
    int loss
    Py_ssize_t loss_start     # many-to-many: first step that has an output and a loss
    double dropout            # training: p of the dropout on each layer's input but the
                              # first's (the layer below's h_t), as torch's; 0: none
    double recurrent_dropout  # training: q of the mask on h_{t-1} entering each layer's
                              # per-step product (one per row and call); 0: none


cdef struct Work:
    # Raw pointers into the Engine's NumPy buffers; void because they hold float or double.
    void* x_chunk      # (input_steps, B, I) input_steps steps of the input, time-major
    void* ids_table    # ids: (I, G*H) W_ih^T for the forward's gather, then dL/dW_ih^T for the
                       # backward's scatter-add (each part its block of columns)
    void* hs           # (L, T+1, B, H) h_0 .. h_T of every layer
    void* gates        # (L, T, B, G*H) gate activations (LSTM: i, f, g, o; GRU: r, z, n)
    void* cs           # (L, T+1, B, H) LSTM: c_0 .. c_T
    void* hn           # (L, T, B, H) GRU: W_hn h_{t-1} + b_hn
    void* rec          # (B, G*H) GRU: h_{t-1} @ W_hh^T of the current step; with recurrent
                       # dropout, the backward's dA_t @ W_hh before its mask too
    void* dropped      # (L-1, T, B, H) dropout: each layer's input but the first's, masked
    void* h_masked     # (L, T, B, H) recurrent dropout: h_0 .. h_{T-1} masked, as the
                       # per-step products read them (and dW_hh = dA^T @ them)
    void* rec_mask     # (L, B, H) recurrent dropout: each layer's mask of the call, scaled
    void* bias_sum     # (L, G*H) b_ih + b_hh
    void* w_hh_t       # (H, G*H) W_hh^T of the layer being run forward (a no-transpose B, for
                       # OpenBLAS's small-matrix path); NULL when the per-step product is too
                       # big for that path anyway: W_hh is then used transposed
    void* panels       # plan.panels: the layer's W_hh packed for the per-step products of
                       # the pass running: W_hh^T (H, G*H) forward, W_hh (G*H, H) backward
    void* pred         # (T_out, B, O) head outputs, time-major (many-to-many training: those
                       # of one chunk of steps, (chunk_steps, B, O))
    void* dpred        # the loss gradient w.r.t. pred, shaped as pred
    void* chunk        # (chunk_steps, B, H) many-to-many: the gradient reaching the top layer's
                       # h_t from the head, one chunk of steps at a time; Elman: its
                       # pre-activation gradients, written over it (LSTM and GRU write theirs
                       # over the layer's gates, which BPTT has just consumed)
    void* inject       # (T, B, H) below the top layer: the gradient reaching h_t from above
    void* dh           # (B, H) gradient carried back through time
    void* dc           # (B, H) LSTM: cell-state gradient carried back through time
    void* ones         # (T*B,) ones, for bias gradients as one GEMV
    void* h_last       # (B, H) many-to-one: the top state each row's output reads
    void* dh_last      # (B, H) many-to-one: the loss gradient w.r.t. h_last
    int64_t* last_step # (B,) many-to-one: the step each row's output reads


cdef struct States:
    # Optional (L, B, H) arrays of the call; NULL when absent (zeros in, nothing out).
    void* h0
    void* c0
    void* dh0
    void* dc0
    void* h_final      # a headless engine's (an encoder's): each row's state after its own
    void* c_final      # last step, last_step[b]; else the state after step T
    void* dh_final     # headless: dL/dh_final, dL/dc_final (the decoder's dL/dh0, dL/dc0),
    void* dc_final     # entering every layer's BPTT at each row's last step
    void* dh_steps     # headless: (B, T, H) dL/dh_t of the top layer at every step (a layer
                       # below another's, or a direction of a bidirectional one), or NULL
    Py_ssize_t layer_stride   # entries from one layer's (B, H) block to the next: B*H, or the
                              # caller's B*H for a split's sub-engine (its rows of each layer)
    double* flow       # (L, T): mean over the batch of ||dL/dh_t|| per layer and step, or NULL
    void* dx           # (B, T, I) dL/dx, batch-first (float inputs only), or NULL
    Drop drop          # the call's dropout key and rates (dropout.pxd); unused when the
                       # shape has no dropout


cdef inline bint has_head(const Shape* s) noexcept nogil:
    """Whether the engine has a linear head, outputs and a loss. One without (O = 0) is an
    encoder: many-to-one, its gradient entering only through States.dh_final/dc_final."""
    return s.output_size > 0


cdef inline bint drops_between(const Shape* s) noexcept nogil:
    """Whether layers above the first read their input through a dropout mask."""
    return s.dropout > 0 and s.num_layers > 1


cdef inline bint is_elman(const Shape* s) noexcept nogil:
    """tanh and relu: one gate, no stored gate activations (h is all BPTT needs)."""
    return s.cell == CELL_TANH or s.cell == CELL_RELU


cdef inline Py_ssize_t layer_offset(const Shape* s, Py_ssize_t layer) noexcept nogil:
    """Offset of layer's weight_ih in the flat parameter buffer (layer == L: the head)."""
    cdef Py_ssize_t gh = s.gate_count * s.hidden_size
    if layer == 0:
        return 0
    return gh * (s.input_size + s.hidden_size + 2) + (layer - 1) * gh * (2 * s.hidden_size + 2)


cdef inline Py_ssize_t layer_input_size(const Shape* s, Py_ssize_t layer) noexcept nogil:
    return s.input_size if layer == 0 else s.hidden_size


cdef inline void layer_slices(const Shape* s, floating* base, Py_ssize_t layer,
                              floating** w_ih, floating** w_hh, floating** b_ih,
                              floating** b_hh) noexcept nogil:
    """weight_ih, weight_hh, bias_ih, bias_hh of layer in a flat buffer laid out as the
    parameters (the parameters themselves, or their gradients)."""
    cdef Py_ssize_t gh = s.gate_count * s.hidden_size
    w_ih[0] = base + layer_offset(s, layer)
    w_hh[0] = w_ih[0] + gh * layer_input_size(s, layer)
    b_ih[0] = w_hh[0] + gh * s.hidden_size
    b_hh[0] = b_ih[0] + gh


cdef inline Py_ssize_t output_steps(const Shape* s) noexcept nogil:
    """Steps with an output: 1 for many-to-one, else T - loss_start."""
    return 1 if s.many_to_one else s.steps - s.loss_start


cdef inline floating* top_states(const Shape* s, const Work* w, Py_ssize_t t,
                                 const floating* kind) noexcept nogil:
    """The top layer's h_{t+1} (B, H), the state after step t (h_0 at t = -1)."""
    return <floating*>w.hs + ((s.num_layers - 1) * (s.steps + 1) + 1 + t) * s.batch * \
        s.hidden_size
