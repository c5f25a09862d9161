"""The sequence engine: forward over T and BPTT back over T for a stack of recurrent layers.

An ``Engine`` owns every buffer one training step needs for a fixed (batch, steps) shape; they
are allocated once, in ``__init__``, and reused by every call. A call copies the input into a
time-major buffer, then runs the whole forward pass, the loss and the backward pass on raw
pointers with the GIL released. Python code (models, trainers) validates arguments first: the
methods here only check the sizes and dtypes of what they are handed.

Per layer, the only products inside the time loop are h_{t-1} @ W_hh^T (forward) and
dA_t @ W_hh (backward); the input projection, dW_ih, dW_hh, the biases' gradients, the
gradient passed to the layer below and the head are one GEMM (or GEMV) each over all steps.

Parameters live in one flat buffer in PyTorch's state_dict order (see ``param_layout``):
per layer weight_ih (G*H, in), weight_hh (G*H, H), bias_ih (G*H,), bias_hh (G*H,), then
head.weight (O, H) and head.bias (O,). Gradients use the same layout.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from ._blas cimport gemm, gemv
from ._cells cimport elman_backward, elman_forward
from ._losses cimport cross_entropy_loss, mse_loss

cnp.import_array()

cdef enum:
    CELL_TANH = 0
    CELL_RELU = 1
    CELL_LSTM = 2
    CELL_GRU = 3

cdef enum:
    LOSS_MSE = 0
    LOSS_CROSS_ENTROPY = 1

CELLS = {"tanh": CELL_TANH, "relu": CELL_RELU}
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
LOSSES = {"mse": LOSS_MSE, "cross_entropy": LOSS_CROSS_ENTROPY}


cdef struct Shape:
    int cell
    Py_ssize_t gates, num_layers, input_size, hidden_size, output_size
    Py_ssize_t batch, steps
    bint many_to_one
    int loss
    Py_ssize_t loss_start     # many-to-many: first step that has an output and a loss


cdef struct Work:
    # Raw pointers into the Engine's NumPy buffers; void because they hold float or double.
    void* x_tm         # (T, B, I) the input, time-major
    void* hs           # (L, T+1, B, H) h_0 .. h_T of every layer
    void* bias_sum     # (L, G*H) b_ih + b_hh
    void* pred         # (T_out, B, O) head outputs, time-major
    void* dpred        # (T_out, B, O) loss gradient w.r.t. pred
    void* dA           # (T, B, G*H) pre-activation gradients of the layer being processed
    void* inject       # (T, B, H) gradient reaching a layer's h_t from above
    void* dh           # (B, H) gradient carried back through time
    void* ones         # (T*B,) ones, for bias gradients as one GEMV
    void* h_last       # (B, H) many-to-one: the top state each row's output reads
    void* dh_last      # (B, H) many-to-one: the loss gradient w.r.t. h_last
    int64_t* last_step # (B,) many-to-one: the step each row's output reads


def param_layout(str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                 Py_ssize_t hidden_size, Py_ssize_t output_size):
    """[(name, shape, offset)] of every parameter in the flat buffer, in state_dict order."""
    cdef Shape s
    _fill_shape(&s, cell, num_layers, input_size, hidden_size, output_size, 1, 1)
    layout = []
    cdef Py_ssize_t layer, offset, in_size
    cdef Py_ssize_t gh = s.gates * hidden_size
    for layer in range(num_layers):
        offset = layer_offset(&s, layer)
        in_size = input_size if layer == 0 else hidden_size
        layout.append((f"weight_ih_l{layer}", (gh, in_size), offset))
        layout.append((f"weight_hh_l{layer}", (gh, hidden_size), offset + gh * in_size))
        layout.append((f"bias_ih_l{layer}", (gh,), offset + gh * (in_size + hidden_size)))
        layout.append((f"bias_hh_l{layer}", (gh,), offset + gh * (in_size + hidden_size + 1)))
    offset = layer_offset(&s, num_layers)
    layout.append(("head.weight", (output_size, hidden_size), offset))
    layout.append(("head.bias", (output_size,), offset + output_size * hidden_size))
    return layout


def param_count(str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                Py_ssize_t hidden_size, Py_ssize_t output_size):
    """Number of entries in the flat parameter buffer."""
    cdef Shape s
    _fill_shape(&s, cell, num_layers, input_size, hidden_size, output_size, 1, 1)
    return layer_offset(&s, num_layers) + output_size * (hidden_size + 1)


cdef int _fill_shape(Shape* s, str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                     Py_ssize_t hidden_size, Py_ssize_t output_size, Py_ssize_t batch,
                     Py_ssize_t steps) except -1:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if min(num_layers, input_size, hidden_size, output_size, batch, steps) < 1:
        raise ValueError("every size must be at least 1")
    s.cell = CELLS[cell]
    s.gates = GATES[cell]
    s.num_layers = num_layers
    s.input_size = input_size
    s.hidden_size = hidden_size
    s.output_size = output_size
    s.batch = batch
    s.steps = steps
    s.many_to_one = False
    s.loss = LOSS_MSE
    s.loss_start = 0
    return 0


cdef inline Py_ssize_t layer_offset(const Shape* s, Py_ssize_t layer) noexcept nogil:
    """Offset of layer's weight_ih in the flat parameter buffer (layer == L: the head)."""
    cdef Py_ssize_t gh = s.gates * s.hidden_size
    if layer == 0:
        return 0
    return gh * (s.input_size + s.hidden_size + 2) + (layer - 1) * gh * (2 * s.hidden_size + 2)


cdef inline Py_ssize_t layer_input_size(const Shape* s, Py_ssize_t layer) noexcept nogil:
    return s.input_size if layer == 0 else s.hidden_size


cdef inline Py_ssize_t output_steps(const Shape* s) noexcept nogil:
    return 1 if s.many_to_one else s.steps - s.loss_start


# ---------------------------------------------------------------------------------------------
# forward

cdef void forward(const Shape* s, Work* w, const floating* x, const floating* params,
                            const floating* h0) noexcept nogil:
    """All layers over all steps, then the head. x (B, T, I) batch-first; h0 (L, B, H) or NULL."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t GH = s.gates * H
    cdef Py_ssize_t layer, t, b, in_size, j
    cdef floating* x_tm = <floating*>w.x_tm
    cdef floating* hs
    cdef floating* pre
    cdef floating* bias_sum
    cdef const floating* inputs
    cdef const floating* w_ih
    cdef const floating* w_hh
    cdef const floating* b_ih
    cdef const floating* b_hh

    for t in range(T):      # (B, T, I) -> (T, B, I)
        for b in range(B):
            memcpy(x_tm + (t * B + b) * s.input_size, x + (b * T + t) * s.input_size,
                   s.input_size * sizeof(floating))

    for layer in range(s.num_layers):
        in_size = layer_input_size(s, layer)
        w_ih = params + layer_offset(s, layer)
        w_hh = w_ih + GH * in_size
        b_ih = w_hh + GH * H
        b_hh = b_ih + GH
        hs = <floating*>w.hs + layer * (T + 1) * B * H
        inputs = x_tm if layer == 0 else <floating*>w.hs + (layer - 1) * (T + 1) * B * H + B * H
        bias_sum = <floating*>w.bias_sum + layer * GH
        for j in range(GH):
            bias_sum[j] = b_ih[j] + b_hh[j]
        if h0 != NULL:
            memcpy(hs, h0 + layer * B * H, B * H * sizeof(floating))
        else:
            memset(hs, 0, B * H * sizeof(floating))

        # Elman: the pre-activations are written where h_1..h_T live and activated in place.
        pre = hs + B * H
        # A = X @ W_ih^T for all steps at once
        gemm(False, True, T * B, GH, in_size, 1, inputs, in_size, w_ih, in_size, 0, pre, GH)
        for t in range(T):
            # A_t += h_{t-1} @ W_hh^T ; h_t = act(A_t + b_ih + b_hh)
            gemm(False, True, B, H, H, 1, hs + t * B * H, H, w_hh, H, 1, pre + t * B * H, H)
            elman_forward(s.cell == CELL_RELU, pre + t * B * H, bias_sum, B, H)

    head_forward(s, w, params)


cdef void head_forward(const Shape* s, Work* w, const floating* params) noexcept nogil:
    """pred = h_top @ W^T + b at the output steps (every step from loss_start, or the last)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t rows = output_steps(s) * B
    cdef Py_ssize_t r, k, b
    cdef const floating* weight = params + layer_offset(s, s.num_layers)
    cdef const floating* bias = weight + O * H
    cdef floating* top = <floating*>w.hs + (s.num_layers - 1) * (T + 1) * B * H
    cdef floating* pred = <floating*>w.pred
    cdef const floating* h_out
    if s.many_to_one:
        for b in range(B):   # row b reads h at its last step (h_{t+1} is stored at t+1)
            memcpy(<floating*>w.h_last + b * H, top + ((w.last_step[b] + 1) * B + b) * H,
                   H * sizeof(floating))
        h_out = <floating*>w.h_last
    else:
        h_out = top + (1 + s.loss_start) * B * H
    # pred = h_out @ W^T + b
    gemm(False, True, rows, O, H, 1, h_out, H, weight, H, 0, pred, O)
    for r in range(rows):
        for k in range(O):
            pred[r * O + k] += bias[k]


# ---------------------------------------------------------------------------------------------
# loss and backward

cdef double loss_value(const Shape* s, Work* w, const floating* pred,
                       const void* target) noexcept nogil:
    """The loss of pred (w.pred) against target (batch-first), with its gradient in dpred."""
    cdef Py_ssize_t B = s.batch, T = s.steps, O = s.output_size
    cdef Py_ssize_t steps = output_steps(s)
    cdef double scale
    if s.loss == LOSS_MSE:
        scale = 1.0 / (steps * B * O)
        if s.many_to_one:   # target (B, O)
            return mse_loss(<floating*>w.pred, <const floating*>target, 1, B, O, 0, O, scale,
                            <floating*>w.dpred)
        return mse_loss(<floating*>w.pred, <const floating*>target + s.loss_start * O, steps, B,
                        O, O, T * O, scale, <floating*>w.dpred)
    scale = 1.0 / (steps * B)
    if s.many_to_one:       # target (B,)
        return cross_entropy_loss(<floating*>w.pred, <const int64_t*>target, 1, B, O, 0, 1,
                                  scale, <floating*>w.dpred)
    return cross_entropy_loss(<floating*>w.pred, <const int64_t*>target + s.loss_start, steps,
                              B, O, 1, T, scale, <floating*>w.dpred)


cdef void backward(const Shape* s, Work* w, const floating* params, floating* grads,
                             floating* dh0) noexcept nogil:
    """BPTT from dpred down through every layer; grads (flat, overwritten), dh0 (L, B, H) or NULL."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t GH = s.gates * H
    cdef Py_ssize_t rows = output_steps(s) * B
    cdef Py_ssize_t layer, t, b, j, in_size
    cdef floating* dpred = <floating*>w.dpred
    cdef floating* inject = <floating*>w.inject
    cdef floating* dA = <floating*>w.dA
    cdef floating* dh = <floating*>w.dh
    cdef floating* dh_last = <floating*>w.dh_last
    cdef floating* ones = <floating*>w.ones
    cdef floating* hs
    cdef const floating* inputs
    cdef const floating* head_w = params + layer_offset(s, s.num_layers)
    cdef floating* head_dw = grads + layer_offset(s, s.num_layers)
    cdef floating* top = <floating*>w.hs + (s.num_layers - 1) * (T + 1) * B * H
    cdef const floating* w_ih
    cdef const floating* w_hh
    cdef floating* dw_ih
    cdef floating* dw_hh
    cdef floating* db_ih
    cdef floating* db_hh
    cdef bint has_inject

    # head: dW = dpred^T @ h_out ; db = column sums of dpred ; dh_out = dpred @ W
    if s.many_to_one:
        gemm(True, False, O, H, rows, 1, dpred, O, <floating*>w.h_last, H, 0, head_dw, H)
        gemm(False, False, B, H, O, 1, dpred, O, head_w, H, 0, dh_last, H)
    else:
        gemm(True, False, O, H, rows, 1, dpred, O, top + (1 + s.loss_start) * B * H, H, 0,
             head_dw, H)
        memset(inject, 0, s.loss_start * B * H * sizeof(floating))
        gemm(False, False, rows, H, O, 1, dpred, O, head_w, H, 0, inject + s.loss_start * B * H, H)
    gemv(True, rows, O, 1, dpred, O, ones, 0, head_dw + O * H)

    for layer in range(s.num_layers - 1, -1, -1):
        in_size = layer_input_size(s, layer)
        w_ih = params + layer_offset(s, layer)
        w_hh = w_ih + GH * in_size
        dw_ih = grads + layer_offset(s, layer)
        dw_hh = dw_ih + GH * in_size
        db_ih = dw_hh + GH * H
        db_hh = db_ih + GH
        hs = <floating*>w.hs + layer * (T + 1) * B * H
        inputs = <floating*>w.x_tm if layer == 0 else hs - (T + 1) * B * H + B * H
        has_inject = not (s.many_to_one and layer == s.num_layers - 1)

        memset(dh, 0, B * H * sizeof(floating))
        for t in range(T - 1, -1, -1):
            if not has_inject:
                for b in range(B):
                    if w.last_step[b] == t:
                        for j in range(H):
                            dh[b * H + j] += dh_last[b * H + j]
            # dA_t = (dh + inject_t) * act'(A_t)
            elman_backward(s.cell == CELL_RELU, hs + (t + 1) * B * H, dh,
                           inject + t * B * H if has_inject else NULL, dA + t * B * GH, B * H)
            # dh_{t-1} = dA_t @ W_hh
            gemm(False, False, B, H, GH, 1, dA + t * B * GH, GH, w_hh, H, 0, dh, H)
        if dh0 != NULL:
            memcpy(dh0 + layer * B * H, dh, B * H * sizeof(floating))

        # dW_ih = dA^T @ inputs ; dW_hh = dA^T @ h_{0..T-1} ; db_ih = db_hh = column sums of dA
        gemm(True, False, GH, in_size, T * B, 1, dA, GH, inputs, in_size, 0, dw_ih, in_size)
        gemm(True, False, GH, H, T * B, 1, dA, GH, hs, H, 0, dw_hh, H)
        gemv(True, T * B, GH, 1, dA, GH, ones, 0, db_ih)
        memcpy(db_hh, db_ih, GH * sizeof(floating))
        if layer > 0:
            # the layer below receives dA @ W_ih at every step
            gemm(False, False, T * B, H, GH, 1, dA, GH, w_ih, in_size, 0, inject, H)


cdef double train_step(const Shape* s, Work* w, const floating* x, const void* target,
                                 const floating* params, floating* grads, const floating* h0,
                                 floating* dh0, floating* h_final) noexcept nogil:
    cdef double loss
    forward(s, w, x, params, h0)
    loss = loss_value(s, w, <floating*>w.pred, target)
    backward(s, w, params, grads, dh0)
    if h_final != NULL:
        copy_final_state(s, w, h_final)
    return loss


cdef void copy_final_state(const Shape* s, Work* w, floating* h_final) noexcept nogil:
    """h_final (L, B, H) = h_T of every layer."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, layer
    for layer in range(s.num_layers):
        memcpy(h_final + layer * B * H, <floating*>w.hs + (layer * (T + 1) + T) * B * H,
               B * H * sizeof(floating))


cdef void predict_into(const Shape* s, Work* w, const floating* x,
                                 const floating* params, const floating* h0, floating* out,
                                 floating* h_final) noexcept nogil:
    """out: (B, O) for many-to-one, else (B, T - loss_start, O) batch-first."""
    cdef Py_ssize_t B = s.batch, O = s.output_size, steps = output_steps(s), t, b
    forward(s, w, x, params, h0)
    for t in range(steps):
        for b in range(B):
            memcpy(out + (b * steps + t) * O, <floating*>w.pred + (t * B + b) * O,
                   O * sizeof(floating))
    if h_final != NULL:
        copy_final_state(s, w, h_final)


# ---------------------------------------------------------------------------------------------
# the Python-facing class

cdef inline void* data_of(object array, object dtype, Py_ssize_t size, str name) except NULL:
    """Pointer to a C-contiguous array's data after checking its dtype and size."""
    cdef cnp.ndarray a
    if not isinstance(array, cnp.ndarray):
        raise TypeError(f"{name}: expected a NumPy array")
    a = <cnp.ndarray>array
    if a.dtype != dtype or not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.size != size:
        raise ValueError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} array of "
                         f"{size} elements, got {array.dtype} {array.shape}")
    return cnp.PyArray_DATA(a)


cdef inline void* optional_data_of(object array, object dtype, Py_ssize_t size,
                                   str name) except? NULL:
    if array is None:
        return NULL
    return data_of(array, dtype, size, name)


cdef class Engine:
    """Workspaces and kernels for one model configuration at one (batch, steps) shape.

    Not reentrant: one Engine serves one caller at a time (each trainer owns its own).
    """
    cdef Shape shape
    cdef Work work
    cdef readonly object dtype
    cdef readonly bint training
    cdef dict buffers
    cdef Py_ssize_t n_params

    def __init__(self, str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                 Py_ssize_t hidden_size, Py_ssize_t output_size, Py_ssize_t batch,
                 Py_ssize_t steps, dtype, bint many_to_one=False, str loss="mse",
                 Py_ssize_t loss_start=0, bint training=True):
        _fill_shape(&self.shape, cell, num_layers, input_size, hidden_size, output_size,
                    batch, steps)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if not 0 <= loss_start < steps:
            raise ValueError(f"loss_start must be in [0, {steps}), got {loss_start}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.shape.many_to_one = many_to_one
        self.shape.loss = LOSSES[loss]
        self.shape.loss_start = 0 if many_to_one else loss_start
        self.training = training
        self.n_params = param_count(cell, num_layers, input_size, hidden_size, output_size)

        cdef Py_ssize_t B = batch, T = steps, H = hidden_size, L = num_layers
        cdef Py_ssize_t GH = self.shape.gates * H
        cdef Py_ssize_t out_rows = output_steps(&self.shape) * B
        sizes = {
            "x_tm": T * B * input_size, "hs": L * (T + 1) * B * H, "bias_sum": L * GH,
            "pred": out_rows * output_size, "h_last": B * H,
        }
        if training:
            sizes.update({"dpred": out_rows * output_size, "dA": T * B * GH,
                          "inject": T * B * H, "dh": B * H, "ones": T * B, "dh_last": B * H})
        self.buffers = {name: np.zeros(size, dtype=self.dtype) for name, size in sizes.items()}
        self.buffers["last_step"] = np.full(B, T - 1, dtype=np.int64)
        if training:
            self.buffers["ones"][:] = 1
        memset(&self.work, 0, sizeof(Work))
        self.work.x_tm = cnp.PyArray_DATA(self.buffers["x_tm"])
        self.work.hs = cnp.PyArray_DATA(self.buffers["hs"])
        self.work.bias_sum = cnp.PyArray_DATA(self.buffers["bias_sum"])
        self.work.pred = cnp.PyArray_DATA(self.buffers["pred"])
        self.work.h_last = cnp.PyArray_DATA(self.buffers["h_last"])
        self.work.last_step = <int64_t*>cnp.PyArray_DATA(self.buffers["last_step"])
        if training:
            self.work.dpred = cnp.PyArray_DATA(self.buffers["dpred"])
            self.work.dA = cnp.PyArray_DATA(self.buffers["dA"])
            self.work.inject = cnp.PyArray_DATA(self.buffers["inject"])
            self.work.dh = cnp.PyArray_DATA(self.buffers["dh"])
            self.work.ones = cnp.PyArray_DATA(self.buffers["ones"])
            self.work.dh_last = cnp.PyArray_DATA(self.buffers["dh_last"])

    @property
    def batch(self):
        return self.shape.batch

    @property
    def steps(self):
        return self.shape.steps

    @property
    def workspace_bytes(self):
        """Bytes held by this engine's buffers."""
        return sum(b.nbytes for b in self.buffers.values())

    def loss_and_grad(self, x, target, params, grads, h0=None, dh0=None, h_final=None):
        """Forward, loss and BPTT. Writes grads (and dh0, h_final); returns the loss.

        x (B, T, I) and params/grads/h0/dh0/h_final: C-contiguous arrays of the engine's dtype
        (h0, dh0, h_final hold (L, B, H)). target: float (B, T, O) / (B, O) for mse, int64
        (B, T) / (B,) for cross_entropy, batch-first, C-contiguous.
        """
        if not self.training:
            raise RuntimeError("this Engine was built for prediction only")
        cdef const Shape* s = &self.shape
        cdef Py_ssize_t state_size = s.num_layers * s.batch * s.hidden_size
        cdef Py_ssize_t target_size = s.batch * (1 if s.many_to_one else s.steps)
        if s.loss == LOSS_MSE:
            target_size *= s.output_size
        cdef void* px = data_of(x, self.dtype, s.batch * s.steps * s.input_size, "x")
        cdef void* pt = data_of(target, self.dtype if s.loss == LOSS_MSE else np.int64,
                                target_size, "target")
        cdef void* pp = data_of(params, self.dtype, self.n_params, "params")
        cdef void* pg = data_of(grads, self.dtype, self.n_params, "grads")
        cdef void* ph0 = optional_data_of(h0, self.dtype, state_size, "h0")
        cdef void* pdh0 = optional_data_of(dh0, self.dtype, state_size, "dh0")
        cdef void* phf = optional_data_of(h_final, self.dtype, state_size, "h_final")
        cdef double loss
        cdef bint is_double = self.dtype == np.float64
        with nogil:
            if is_double:
                loss = train_step(s, &self.work, <double*>px, pt, <double*>pp, <double*>pg,
                                  <double*>ph0, <double*>pdh0, <double*>phf)
            else:
                loss = train_step(s, &self.work, <float*>px, pt, <float*>pp, <float*>pg,
                                  <float*>ph0, <float*>pdh0, <float*>phf)
        return loss

    def predict(self, x, params, out, h0=None, h_final=None):
        """Forward only: out (B, T - loss_start, O), or (B, O) for many-to-one."""
        cdef const Shape* s = &self.shape
        cdef Py_ssize_t state_size = s.num_layers * s.batch * s.hidden_size
        cdef void* px = data_of(x, self.dtype, s.batch * s.steps * s.input_size, "x")
        cdef void* pp = data_of(params, self.dtype, self.n_params, "params")
        cdef void* po = data_of(out, self.dtype, output_steps(s) * s.batch * s.output_size, "out")
        cdef void* ph0 = optional_data_of(h0, self.dtype, state_size, "h0")
        cdef void* phf = optional_data_of(h_final, self.dtype, state_size, "h_final")
        cdef bint is_double = self.dtype == np.float64
        with nogil:
            if is_double:
                predict_into(s, &self.work, <double*>px, <double*>pp, <double*>ph0,
                             <double*>po, <double*>phf)
            else:
                predict_into(s, &self.work, <float*>px, <float*>pp, <float*>ph0, <float*>po,
                             <float*>phf)
