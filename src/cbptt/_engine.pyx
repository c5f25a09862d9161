"""The sequence engine: forward over T and BPTT back over T for a stack of recurrent layers.

``Engine`` is the Python-facing class; the work is done by the layers of ``_core/`` (read
``_core/__init__.py`` for their order), compiled into this one module. An Engine holds one
model configuration at one (batch, steps) shape: its plan (``_core/plan.pxd``: every strategy
decision, filled from ``cbptt.settings`` when it is made and again when the settings change)
and its workspaces, allocated at the first call that runs on them and reused by every call
after. A call runs the whole forward pass, the loss and the backward pass on raw pointers
with the GIL released. Python code (models, trainers) validates arguments first: the methods
here only check the sizes and dtypes of what they are handed.

BLAS threads: the recurrent products inside the time loop are small, and waking BLAS's
threads for each costs more than it saves; a call big enough runs on cbptt's own team of
threads instead (_core/team.h), each calling BLAS on one thread (docs/DEVELOPMENT.md, "The
team of threads"; _threads.py finds OpenBLAS's thread-count functions at import).
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

from ._core.arrays cimport data_of, optional_data_of
from ._core.dropout cimport Drop, threshold_of
from ._core.jobs cimport PHASE_BACKWARD, PHASE_FORWARD, PHASE_WHOLE, Job, run_job
from ._core.paths cimport (CBPTT_RAN_CHUNK_GRADS, CBPTT_RAN_INPUT_BLAS, CBPTT_RAN_INPUT_IDS,
                           CBPTT_RAN_INPUT_PANELS, CBPTT_RAN_STEP_BLAS, CBPTT_RAN_STEP_PANELS,
                           CBPTT_RAN_WGRAD_BLAS, CBPTT_RAN_WGRAD_KERNEL,
                           CBPTT_RAN_WGRAD_TRANSPOSED)
from ._core.head cimport loss_scale
from ._core.plan cimport STEP_THREADS_FLOPS as _STEP_THREADS_FLOPS
from ._core.plan cimport Plan, call_parts, fill_plan, runs_as_split
from ._core.products cimport CBPTT_PANEL_F32, CBPTT_PANEL_F64, cbptt_panels_supported
from ._core.shape cimport (CELL_GRU, CELL_LSTM, CELL_RELU, CELL_TANH, LOSS_CROSS_ENTROPY,
                           LOSS_MSE, Shape, States, Work, is_elman, layer_offset, output_steps)
from ._core.split cimport Split, rows_of_call, run_split
from ._core.team cimport (cbptt_blas_control, cbptt_blas_controlled, cbptt_blas_counted,
                          cbptt_blas_hold, cbptt_blas_release, cbptt_get_threads_fn,
                          cbptt_set_threads_fn, cbptt_team_round_trip_ns, cbptt_team_get_spin,
                          cbptt_team_set_spin, cbptt_team_sleeps, cbptt_team_late_barrier,
                          CBPTT_TEAM_MAX)

from ._layout import GATES, param_count, param_layout  # noqa: F401 - re-exported
from ._settings import _local as _settings_local
from . import thread_policy

cnp.import_array()

CELLS = {"tanh": CELL_TANH, "relu": CELL_RELU, "lstm": CELL_LSTM, "gru": CELL_GRU}
LOSSES = {"mse": LOSS_MSE, "cross_entropy": LOSS_CROSS_ENTROPY}
# Per-step products below this many FLOPs (2 B H G H) run on one BLAS thread.
STEP_THREADS_FLOPS = _STEP_THREADS_FLOPS
TEAM_MAX = CBPTT_TEAM_MAX

PATH_NAMES = {CBPTT_RAN_STEP_PANELS: "step_panels", CBPTT_RAN_STEP_BLAS: "step_blas",
              CBPTT_RAN_INPUT_PANELS: "input_panels", CBPTT_RAN_INPUT_BLAS: "input_blas",
              CBPTT_RAN_WGRAD_KERNEL: "wgrad_kernel", CBPTT_RAN_WGRAD_BLAS: "wgrad_blas",
              CBPTT_RAN_WGRAD_TRANSPOSED: "wgrad_transposed",
              CBPTT_RAN_CHUNK_GRADS: "chunk_grads", CBPTT_RAN_INPUT_IDS: "input_ids"}


def path_names(unsigned flags):
    """The names of the kernel paths in a record of flags (see _core/paths.h)."""
    return frozenset(name for flag, name in PATH_NAMES.items() if flags & flag)


cdef int _fill_shape(Shape* s, str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                     Py_ssize_t hidden_size, Py_ssize_t output_size, Py_ssize_t batch,
                     Py_ssize_t steps) except -1:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if min(num_layers, input_size, hidden_size, batch, steps) < 1 or output_size < 0:
        raise ValueError("every size must be at least 1 (output_size: 0 for no head)")
    s.cell = CELLS[cell]
    s.gate_count = GATES[cell]
    s.num_layers = num_layers
    s.input_size = input_size
    s.hidden_size = hidden_size
    s.output_size = output_size
    s.batch = batch
    s.steps = steps
    s.many_to_one = False
    s.ids = False
    s.loss = LOSS_MSE
    s.loss_start = 0
    s.dropout = s.recurrent_dropout = 0
    return 0


# ---------------------------------------------------------------------------------------------
# BLAS's threads and the team

include "_engine_team.pxi"


def panels_supported():
    """Whether this processor runs the packed-panel products (AVX-512F)."""
    return bool(cbptt_panels_supported())


# ---------------------------------------------------------------------------------------------
# the Python-facing class (its array checks: _core/arrays.pxd)

cdef class Engine:
    """Workspaces and kernels for one model configuration at one (batch, steps) shape.

    Not reentrant: one Engine serves one caller at a time (each trainer owns its own).
    """
    cdef Shape shape
    cdef Plan plan
    cdef object planned_with       # the settings snapshot the plan was filled from
    cdef Py_ssize_t fixed_chunk_steps   # chunk_steps as given (0: the plan's choice)
    cdef Work work
    cdef readonly object dtype
    cdef readonly bint training
    cdef readonly double grad_sq_norm
    cdef readonly double loss_terms
    cdef readonly int last_parts   # threads the last call ran on (see plan.pxd's call_parts)
    cdef unsigned last_path_flags  # the kernel paths the last call ran (_core/paths.h)
    cdef dict buffers
    cdef dict layout               # the buffers' sizes under the plan
    cdef bint allocated            # the layout's buffers exist (made by the first call on them)
    cdef tuple config              # the arguments sub-engines are made with (see _split)
    cdef dict splits               # parts -> ([(row0, rows, sub-engine)], [gradient buffers])
    cdef int last_split            # sub-engines of the last call (0: it ran on this engine's)
    cdef Py_ssize_t n_params
    cdef tuple encoded             # (x, params, parts, lengths) of an encode awaiting its backward
    cdef Drop drop                 # the next calls' dropout key, rows and streams (set_dropout)
    cdef object choices            # a split's threads under an adaptive plan (EngineChoices)

    def __init__(self, str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                 Py_ssize_t hidden_size, Py_ssize_t output_size, Py_ssize_t batch,
                 Py_ssize_t steps, dtype, bint many_to_one=False, str loss="mse",
                 Py_ssize_t loss_start=0, bint training=True, *, Py_ssize_t chunk_steps=0,
                 bint ids=False, double dropout=0, double recurrent_dropout=0):
        """chunk_steps: steps per chunk of the backward pass (0: the plan's, see
        cbptt.settings; a split's sub-engines take their parent's, so that their chunk
        buffers hold the parent's rows between them). ids: x is token ids, (B, T) int64 in
        [0, input_size), the one-hot input without making it. dropout, recurrent_dropout
        (training engines): p of the mask on each layer's input above the first, q of the
        one on h_{t-1} entering the per-step products; see set_dropout and
        _core/dropout.pxd."""
        _fill_shape(&self.shape, cell, num_layers, input_size, hidden_size, output_size,
                    batch, steps)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if output_size == 0 and not many_to_one:
            raise ValueError("output_size=0 (no head) makes an encoder, whose state is read at "
                             "each row's last step: it needs many_to_one=True")
        if not 0 <= loss_start < steps:
            raise ValueError(f"loss_start must be in [0, {steps}), got {loss_start}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.shape.many_to_one = many_to_one
        self.shape.ids = ids
        self.shape.loss = LOSSES[loss]
        self.shape.loss_start = 0 if many_to_one else loss_start
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0 <= rate < 1 or (rate > 0 and not training):
                raise ValueError(f"{name} must be in [0, 1) (0 for prediction), got {rate}")
        self.shape.dropout = dropout
        self.shape.recurrent_dropout = recurrent_dropout
        self.set_dropout(0)
        self.training = training
        self.n_params = param_count(cell, num_layers, input_size, hidden_size, output_size)
        self.config = (cell, num_layers, input_size, hidden_size, output_size, steps,
                       self.dtype, many_to_one, loss, loss_start, ids, dropout,
                       recurrent_dropout)
        self.fixed_chunk_steps = chunk_steps
        self.buffers = {"last_step": np.full(batch, steps - 1, dtype=np.int64)}
        self.layout = None             # nothing laid out yet: _plan lays the buffers out
        self.choices = thread_policy.EngineChoices()
        self._plan(_settings_local.snapshot)

    cdef inline int _plan_current(self) except -1:
        """Plan again if the settings in force in this thread are not those planned with."""
        cdef object snapshot = _settings_local.snapshot
        if snapshot is not self.planned_with:
            self._plan(snapshot)
        return 0

    cdef int _plan(self, object settings) except -1:
        """Fill the plan from settings; where the buffers it needs differ from those laid out,
        drop them (and any sub-engines): the next call that runs on them makes them anew."""
        fill_plan(&self.plan, &self.shape, settings, self.dtype.itemsize, self.training,
                  self.fixed_chunk_steps)
        self.planned_with = settings
        self.choices.planned(settings, self.plan.adaptive, self.plan.split_threads, self.plan.team)
        self.splits = {}
        layout = self._layout()
        if layout != self.layout:
            self.layout = layout
            self.allocated = False
            self.buffers = {"last_step": self.buffers["last_step"]}
            memset(&self.work, 0, sizeof(Work))
            self.work.last_step = <int64_t*>cnp.PyArray_DATA(self.buffers["last_step"])
        return 0

    cdef dict _layout(self):
        """{buffer name: elements} of the workspaces the plan needs (see shape.pxd's Work)."""
        cdef const Shape* s = &self.shape
        cdef const Plan* p = &self.plan
        cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size, L = s.num_layers
        cdef Py_ssize_t GH = s.gate_count * H, O = s.output_size
        cdef Py_ssize_t out_rows = output_steps(s) * B
        cdef bint gated = not is_elman(s)
        # many-to-many training computes the head a chunk of steps at a time (backward)
        pred_rows = p.chunk_steps * B if self.training and not s.many_to_one else out_rows
        sizes = {"x_chunk": 0 if s.ids else p.input_steps * B * s.input_size,
                 "hs": L * (T + 1) * B * H,
                 "bias_sum": L * GH, "pred": pred_rows * O, "h_last": B * H}
        if p.panels:
            width = CBPTT_PANEL_F32 if self.dtype == np.float32 else CBPTT_PANEL_F64
            sizes["panels"] = max(H * -(-GH // width) * width, GH * -(-H // width) * width)
        elif p.w_hh_transposed:
            sizes["w_hh_t"] = H * GH      # see step_gemm
        if s.ids:
            sizes["ids_table"] = s.input_size * GH
        if gated:
            sizes["gates"] = L * T * B * GH
        if s.cell == CELL_LSTM:
            sizes["cs"] = L * (T + 1) * B * H
        if s.cell == CELL_GRU:
            sizes.update({"hn": L * T * B * H, "rec": B * GH})
        if s.dropout > 0 and L > 1:
            sizes["dropped"] = (L - 1) * T * B * H
        if s.recurrent_dropout > 0:
            sizes["h_masked"] = L * T * B * H
            sizes["rec_mask"] = L * B * H
            sizes["rec"] = B * GH
        if self.training:
            # many-to-many: two chunks' dpred (backward alternates between them)
            sizes.update({"dpred": pred_rows * O * (1 if s.many_to_one else 2),
                          "dh": B * H, "ones": T * B, "dh_last": B * H})
            if L > 1:
                sizes["inject"] = T * B * H
            if not s.many_to_one or not gated:
                sizes["chunk"] = p.chunk_steps * B * H
            if s.cell == CELL_LSTM:
                sizes["dc"] = B * H
        return sizes

    cdef int _allocate(self) except -1:
        """The engine's own buffers, once (a training call split between sub-engines needs
        none of them)."""
        if self.allocated:
            return 0
        self.buffers.update({name: np.zeros(size, dtype=self.dtype)
                             for name, size in self.layout.items()})
        self.allocated = True
        if self.training:
            self.buffers["ones"][:] = 1
        cdef Work* w = &self.work
        w.x_chunk = self._ptr("x_chunk")
        w.ids_table = self._ptr("ids_table")
        w.hs = self._ptr("hs")
        w.gates = self._ptr("gates")
        w.cs = self._ptr("cs")
        w.hn = self._ptr("hn")
        w.rec = self._ptr("rec")
        w.dropped = self._ptr("dropped")
        w.h_masked = self._ptr("h_masked")
        w.rec_mask = self._ptr("rec_mask")
        w.bias_sum = self._ptr("bias_sum")
        w.w_hh_t = self._ptr("w_hh_t")
        w.panels = self._ptr("panels")
        w.pred = self._ptr("pred")
        w.dpred = self._ptr("dpred")
        w.chunk = self._ptr("chunk")
        w.inject = self._ptr("inject")
        w.dh = self._ptr("dh")
        w.dc = self._ptr("dc")
        w.ones = self._ptr("ones")
        w.h_last = self._ptr("h_last")
        w.dh_last = self._ptr("dh_last")
        return 0

    cdef void* _ptr(self, str name):
        """Data pointer of a buffer, NULL for one this configuration does not need."""
        return cnp.PyArray_DATA(self.buffers[name]) if name in self.buffers else NULL

    @property
    def batch(self):
        return self.shape.batch

    @property
    def steps(self):
        return self.shape.steps

    @property
    def ids(self):
        """Whether x is token ids (B, T) rather than floats (B, T, I)."""
        return bool(self.shape.ids)

    @property
    def panels(self):
        """Whether the per-step products multiply by packed W_hh panels (_core/panels.h)."""
        self._plan_current()
        return bool(self.plan.panels)

    @property
    def chunk_steps(self):
        """Steps per chunk of the backward pass."""
        self._plan_current()
        return self.plan.chunk_steps

    @property
    def plan(self):
        """The plan in force (plan.pxd), as a dict: every strategy decision of this engine."""
        self._plan_current()
        return dict(self.plan)

    @property
    def workspace_bytes(self):
        """Bytes held by this engine's buffers and its sub-engines'."""
        return sum(b.nbytes for b in self.buffers.values()) + sum(
            sum(sub.workspace_bytes for _, _, sub in engines) + sum(g.nbytes for g in grads)
            for engines, grads in self.splits.values())

    cdef tuple _split(self, int count):
        """count sub-engines, each for a contiguous block of the batch rows (sizes as equal as
        can be), and (training) gradient buffers for all but the first; made once per count."""
        cdef Engine sub
        if count not in self.splits:
            (cell, num_layers, input_size, hidden_size, output_size, steps, dtype, many_to_one,
             loss, loss_start, ids, dropout, recurrent_dropout) = self.config
            engines = []
            row0 = 0
            for part in range(count):
                rows = self.shape.batch // count + (part < self.shape.batch % count)
                sub = Engine(cell, num_layers, input_size, hidden_size, output_size, rows,
                             steps, dtype, many_to_one=many_to_one, loss=loss,
                             loss_start=loss_start, training=self.training,
                             chunk_steps=self.plan.chunk_steps, ids=ids, dropout=dropout,
                             recurrent_dropout=recurrent_dropout)
                sub._allocate()
                engines.append((row0, rows, sub))
                row0 += rows
            grads = [np.zeros(self.n_params, dtype=self.dtype)
                     for _ in range(count - 1 if self.training else 0)]
            self.splits[count] = (engines, grads)
        return self.splits[count]

    cdef void* _input(self, x) except NULL:
        """x's data: (B, T, I) of the engine's dtype, or token ids (B, T) int64 in [0, I)."""
        cdef const Shape* s = &self.shape
        if not s.ids:
            return data_of(x, self.dtype, s.batch * s.steps * s.input_size, "x")
        cdef void* data = data_of(x, np.int64, s.batch * s.steps, "x")
        if x.min() < 0 or x.max() >= s.input_size:
            raise ValueError(f"x: token ids must be in [0, {s.input_size}), got values in "
                             f"[{x.min()}, {x.max()}]")
        return data

    cdef void* _input_gradient(self, dx) except? NULL:
        """dx's data, (B, T, I) of the engine's dtype, or NULL (None)."""
        cdef const Shape* s = &self.shape
        if dx is not None and s.ids:
            raise ValueError("dx: an engine on token ids has no input gradient")
        return optional_data_of(dx, self.dtype, s.batch * s.steps * s.input_size, "dx")

    cdef int _states(self, States* st, h0, c0, dh0, dc0, h_final, c_final, dh_final=None,
                     dc_final=None) except -1:
        cdef Py_ssize_t size = self.shape.num_layers * self.shape.batch * self.shape.hidden_size
        if self.shape.many_to_one and self.shape.output_size > 0 and (
                dh_final is not None or dc_final is not None):
            raise ValueError("dh_final and dc_final are for many-to-many engines and engines "
                             "without a head (encoders)")
        st.h0 = optional_data_of(h0, self.dtype, size, "h0")
        st.dh0 = optional_data_of(dh0, self.dtype, size, "dh0")
        st.h_final = optional_data_of(h_final, self.dtype, size, "h_final")
        st.dh_final = optional_data_of(dh_final, self.dtype, size, "dh_final")
        st.c0 = st.dc0 = st.c_final = st.dc_final = NULL
        st.layer_stride = self.shape.batch * self.shape.hidden_size
        st.flow = NULL
        st.dx = st.dh_steps = NULL
        st.drop = self.drop
        if self.shape.cell == CELL_LSTM:
            st.c0 = optional_data_of(c0, self.dtype, size, "c0")
            st.dc0 = optional_data_of(dc0, self.dtype, size, "dc0")
            st.c_final = optional_data_of(c_final, self.dtype, size, "c_final")
            st.dc_final = optional_data_of(dc_final, self.dtype, size, "dc_final")
        elif c0 is not None or dc0 is not None or c_final is not None or dc_final is not None:
            raise ValueError("c0, dc0, c_final and dc_final are for the lstm cell only")
        return 0

    def set_dropout(self, uint64_t key, Py_ssize_t row0=0, Py_ssize_t stream0=0,
                    Py_ssize_t step0=0):
        """The dropout masks of the calls that follow (an engine with dropout): those of key
        (a trainer's seed and call count, hashed), for batch rows numbered from row0 (a
        process's block of a larger batch), layers from stream0 and steps from step0 (a unit
        of a longer sequence; see dropout.pxd)."""
        self.drop.key = key
        self.drop.row0 = row0
        self.drop.stream0 = stream0
        self.drop.step0 = step0
        self.drop.threshold = threshold_of(self.shape.dropout)
        self.drop.rec_threshold = threshold_of(self.shape.recurrent_dropout)
        self.drop.scale = 1 / (1 - self.shape.dropout)
        self.drop.rec_scale = 1 / (1 - self.shape.recurrent_dropout)

    cdef int _set_lengths(self, lengths) except -1:
        """Many-to-one: each row's output is read at step lengths[b] - 1 (None: the last)."""
        last_step = self.buffers["last_step"]
        if lengths is None:
            last_step[:] = self.shape.steps - 1
            return 0
        if not self.shape.many_to_one:
            raise ValueError("lengths is for many-to-one engines only")
        lengths = np.asarray(lengths)
        if lengths.shape != (self.shape.batch,) or lengths.dtype.kind not in "iu" or \
                lengths.min() < 1 or lengths.max() > self.shape.steps:
            raise ValueError(f"lengths: expected {self.shape.batch} integers in "
                             f"[1, {self.shape.steps}]")
        np.subtract(lengths, 1, out=last_step, casting="unsafe")
        return 0

    cdef void _job(self, Job* job, const States* st, void* x, void* params, void* out,
                   bint training):
        """A call's job: training (out: the gradients) or prediction (out: the outputs)."""
        memset(job, 0, sizeof(Job))
        job.s = &self.shape
        job.p = &self.plan
        job.w = &self.work
        job.st = st
        job.x = x
        job.params = params
        job.out = out
        job.n_params = self.n_params
        job.is_double = self.dtype == np.float64
        job.training = training

    cdef int _run(self, Job* job, int parts):
        """Run the job on `parts` threads (call_parts); returns how many it used."""
        cdef int i
        with nogil:
            parts = run_job(job, parts)
        self.last_path_flags = 0
        for i in range(parts):
            self.last_path_flags |= job.paths_parts[i]
        return parts

    @property
    def last_paths(self):
        """The kernel paths the last call ran, as names (PATH_NAMES; see _core/paths.h)."""
        return path_names(self.last_path_flags)

    def loss_and_grad(self, x, target, params, grads, h0=None, dh0=None, h_final=None,
                      c0=None, dc0=None, c_final=None, weight=None, lengths=None, flow=None,
                      dh_final=None, dc_final=None, dx=None, terms=None):
        """Forward, loss and BPTT. Writes grads (and dh0/dc0, h_final/c_final, flow); returns
        the loss. Afterwards ``grad_sq_norm`` holds the squared norm of grads, summed in
        double (NaN or Inf when a gradient is not finite), and ``loss_terms`` the number of
        terms the loss is the mean of (the total mask weight, times O for mse).

        x (B, T, I), params/grads (flat) and the optional (L, B, H) states: C-contiguous arrays
        of the engine's dtype. target: (B, T_out, O) floats for mse, (B, T_out) int64 class ids
        for cross_entropy (T_out = T - loss_start, or 1 for many-to-one), C-contiguous; weight
        (B, T_out) of the engine's dtype or None; lengths (B,) integers (many-to-one);
        flow (L, T) float64 receives the mean over the batch of ||dL/dh_t||; dx (B, T, I)
        of the engine's dtype receives dL/dx (float inputs only: not on token ids).

        An engine without a head (output_size 0, an encoder) has no loss: target and weight
        are None, the call returns 0 and BPTT starts from dh_final (and dc_final), (L, B, H)
        gradients with respect to h_final, c_final: each row's state after its own last step
        lengths[b] - 1, where it enters every layer. A many-to-many engine takes them too, as
        the gradient entering after its last step (a segment of a longer sequence, whose
        loss is the mean over ``terms`` terms rather than this call's own count).
        """
        if not self.training:
            raise RuntimeError("this Engine was built for prediction only")
        cdef const Shape* s = &self.shape
        cdef Py_ssize_t out_rows = s.batch * output_steps(s)
        cdef void* px = self._input(x)
        cdef void* pt
        if s.output_size == 0:
            if target is not None or weight is not None:
                raise ValueError("an engine without a head has no target or weight (None)")
            pt = NULL
        elif s.loss == LOSS_MSE:
            pt = data_of(target, self.dtype, out_rows * s.output_size, "target")
        else:
            pt = data_of(target, np.int64, out_rows, "target")
        cdef void* pw = optional_data_of(weight, self.dtype, out_rows, "weight")
        cdef void* pp = data_of(params, self.dtype, self.n_params, "params")
        cdef void* pg = data_of(grads, self.dtype, self.n_params, "grads")
        cdef States st
        self._states(&st, h0, c0, dh0, dc0, h_final, c_final, dh_final, dc_final)
        st.flow = <double*>optional_data_of(flow, np.float64, s.num_layers * s.steps, "flow")
        st.dx = self._input_gradient(dx)
        self._set_lengths(lengths)
        self._plan_current()
        cdef int parts = call_parts(&self.plan, s.batch, st.flow != NULL)
        cdef Job job
        self._job(&job, &st, px, pp, pg, True)
        job.target = pt
        job.weight = pw
        if terms is not None:         # a segment of a longer sequence: the whole's mean
            job.fixed_scale = True
            job.terms = terms
            job.scale = 0 if terms == 0 else 1.0 / terms
        return self._call(&job, parts, lengths)

    cdef double _call(self, Job* job, int parts, lengths) except? -1:
        """Run a call's job on `parts` threads: as a split where its parts would split the
        batch rows, else on this engine's buffers. A training call (but an encoder's forward
        phase) sets grad_sq_norm and loss_terms. Returns the loss (prediction: 0)."""
        if runs_as_split(&self.plan, parts):
            return self._run_split(parts, job, lengths)
        self._allocate()
        self.last_split = 0
        self.last_parts = self._run(job, parts)
        if job.training and job.phase != PHASE_FORWARD:
            self.grad_sq_norm = job.sq_norm_parts[0]
            self.loss_terms = job.terms
        return job.loss

    cdef double _run_split(self, int count, Job* whole, lengths) except? -1:
        """whole's call as a split (see _core/split.pxd): sub-engine i runs it on its block
        of the batch rows (rows_of_call), in training at the whole batch's loss scale into its
        own gradient buffer (whole's for i = 0); returns the loss (prediction: 0)."""
        cdef const Shape* s = &self.shape
        cdef Py_ssize_t row0, rows, i
        cdef Job jobs[CBPTT_TEAM_MAX]
        cdef States sub_states[CBPTT_TEAM_MAX]
        cdef Split split
        cdef Engine sub
        cdef double loss = 0, sq_norm = 0
        cdef int ran, threads     # threads: to run the split on (same bits on any)
        engines, grads = self._split(count)
        if lengths is not None:
            lengths = np.asarray(lengths)
        if whole.training and s.output_size > 0 and not whole.fixed_scale:
            whole.scale = (loss_scale(s, <const double*>whole.weight, &whole.terms)
                           if whole.is_double else
                           loss_scale(s, <const float*>whole.weight, &whole.terms))
        for i in range(count):
            row0, rows, sub = engines[i]
            sub._set_lengths(None if lengths is None else lengths[row0:row0 + rows])
            sub._job(&jobs[i], NULL, NULL, NULL, NULL, whole.training)
            rows_of_call(&jobs[i], whole, &sub_states[i], row0,
                         NULL if i == 0 or not whole.training else cnp.PyArray_DATA(grads[i - 1]))
            sub.last_parts = 1
        split.jobs = jobs
        split.count = count
        split.n_params = self.n_params
        split.is_double = whole.is_double
        split.training = whole.training and whole.phase != PHASE_FORWARD
        threads = self.choices.pick(whole.training, count)
        with nogil:
            ran = run_split(&split, threads)
        self.choices.ran(threads, ran, whole.phase == PHASE_FORWARD)
        self.last_parts = ran
        self.last_split = count
        self.last_path_flags = 0
        for i in range(count):
            self.last_path_flags |= jobs[i].paths_parts[0]
        if not split.training:
            return 0
        for i in range(count):       # in row order: one result for any number of threads
            loss += jobs[i].loss
            sq_norm += split.sq_norm_blocks[i]
        self.grad_sq_norm = sq_norm
        self.loss_terms = whole.terms
        return loss

    @property
    def thread_choice(self):
        """How this engine's calls choose their threads, and why: thread_policy.engine_summary."""
        self._plan_current()
        cdef int parts = call_parts(&self.plan, self.shape.batch, False)
        return self.choices.summary(parts, cbptt_blas_counted(), runs_as_split(&self.plan, parts))

    def encode(self, x, params, h_final, c_final=None, lengths=None, h0=None, c0=None):
        """An encoder's training call, first half: the forward pass of an engine without a
        head (from h0, c0 (L, B, H), or zeros), keeping what BPTT needs. Writes h_final (and
        c_final for lstm), (L, B, H): each row's state after its own last step lengths[b] - 1
        (None: the last). Then call ``backward_from_final`` once, with the gradient with
        respect to that state; the engine keeps x and params (the same arrays, unchanged in
        between) for it."""
        if self.shape.output_size != 0 or not self.training:
            raise RuntimeError("encode is for training engines without a head (encoders)")
        self.encoded = None
        parts = self._forward(x, params, None, h0, c0, h_final, c_final, lengths, True)
        self.encoded = (x, params, parts, lengths)

    def forward_states(self, x, params, h_final, c_final=None, h0=None, c0=None,
                       lengths=None):
        """A training engine's forward pass alone, from h0, c0 (L, B, H) or zeros: writes
        h_final (and c_final for lstm), (L, B, H), each row's state after step lengths[b] - 1
        (None: the last; lengths for many-to-one engines). A memory-bounded step's forward
        sweeps (bounded.py) run on its leaf's engine this way, so they need no workspace of
        their own; what the pass keeps serves no backward call."""
        if not self.training:
            raise RuntimeError("forward_states is for training engines (predict for others)")
        self.encoded = None
        self._forward(x, params, None, h0, c0, h_final, c_final, lengths, True)

    def backward_from_final(self, grads, dh_final, dc_final=None, dx=None, dh_steps=None,
                            dh0=None, dc0=None):
        """An encoder's training call, second half: BPTT of the last ``encode`` from dh_final
        (and dc_final for lstm), (L, B, H) gradients with respect to its h_final (c_final),
        entering every layer at each row's last step. Writes grads (flat, overwritten),
        ``grad_sq_norm`` and dx (B, T, I) = dL/dx where given (float inputs only); returns 0
        (an encoder has no loss of its own). dh_steps (B, T, H): a gradient entering the top
        layer at every step too (dL/dh_t of its states, as ``states()`` gives them); dh_final
        may then be None. dh0, dc0 (L, B, H) receive the gradient with respect to the initial
        state."""
        if self.encoded is None:
            raise RuntimeError("backward_from_final needs an encode call before it (one each)")
        x, params, parts, lengths = self.encoded
        self.encoded = None
        cdef void* pg = data_of(grads, self.dtype, self.n_params, "grads")
        cdef States st
        self._states(&st, None, None, dh0, dc0, None, None, dh_final, dc_final)
        st.dx = self._input_gradient(dx)
        st.dh_steps = optional_data_of(
            dh_steps, self.dtype, self.shape.batch * self.shape.steps * self.shape.hidden_size,
            "dh_steps")
        cdef Job job
        # the plan and the parts of the encode (its activations are laid out by them)
        self._job(&job, &st, cnp.PyArray_DATA(x), cnp.PyArray_DATA(params), pg, True)
        job.phase = PHASE_BACKWARD
        return self._call(&job, parts, lengths)

    def predict(self, x, params, out, h0=None, h_final=None, c0=None, c_final=None,
                lengths=None):
        """Forward only: out (B, T - loss_start, O), or (B, O) for many-to-one; None for an
        engine without a head (whose h_final, c_final are each row's at its last step)."""
        if self.training and not self.shape.many_to_one:
            raise RuntimeError("a many-to-many Engine built for training keeps the head's "
                               "outputs of one chunk of steps only; predict with training=False")
        self._forward(x, params, out, h0, c0, h_final, c_final, lengths, False)

    cdef int _forward(self, x, params, out, h0, c0, h_final, c_final, lengths,
                      bint encoding) except -1:
        """A forward call: prediction into out, or (encoding) an encoder's forward phase
        keeping the activations for its backward. Returns the parts it was planned on."""
        cdef const Shape* s = &self.shape
        cdef void* px = self._input(x)
        cdef void* pp = data_of(params, self.dtype, self.n_params, "params")
        cdef void* po = NULL
        if out is not None or (s.output_size > 0 and not encoding):
            po = data_of(out, self.dtype, output_steps(s) * s.batch * s.output_size, "out")
        cdef States st
        self._states(&st, h0, c0, None, None, h_final, c_final)
        self._set_lengths(lengths)
        self._plan_current()
        cdef int parts = call_parts(&self.plan, s.batch, False)
        cdef Job job
        self._job(&job, &st, px, pp, po, encoding)
        if encoding:
            job.phase = PHASE_FORWARD
        self._call(&job, parts, lengths)
        return parts

    def states(self):
        """Views of the hidden states of the last call: h (L, T+1, B, H) with h[:, 0] the
        initial state, and c likewise for lstm (None otherwise). Overwritten by the next call.
        After a split call (see _core/split.pxd) copies, joined from the sub-engines'."""
        cdef Shape* s = &self.shape
        if self.last_split:
            parts = [sub.states() for _, _, sub in self.splits[self.last_split][0]]
            return (np.concatenate([h for h, _ in parts], axis=2),
                    None if parts[0][1] is None else np.concatenate([c for _, c in parts], axis=2))
        self._allocate()
        shape = (s.num_layers, s.steps + 1, s.batch, s.hidden_size)
        h = self.buffers["hs"].reshape(shape)
        c = self.buffers["cs"].reshape(shape) if "cs" in self.buffers else None
        return h, c
