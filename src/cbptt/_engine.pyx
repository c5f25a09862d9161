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
from libc.math cimport sqrt
from libc.string cimport memcpy, memset

from ._blas cimport MAX_STEP_SLICES, SMALL_GEMM_MNK, gemm, gemv, step_gemm
from ._cells cimport (elman_backward, elman_forward, gru_backward, gru_forward,
                      lstm_backward, lstm_forward, v_sigmoid, v_tanh)
from ._losses cimport cross_entropy_loss, mse_loss

cnp.import_array()

# BLAS threads. The recurrent products inside the time loop are small, and waking BLAS worker
# threads for each of them costs more than it saves (measured in benchmarks/). OpenBLAS >= 0.3.27
# has openblas_set_num_threads_local (which in SciPy's pthreads build sets the count of the
# whole process: _blas_threads.h holds it safely across threads); its address, and that of the
# thread-count getter, are found once, at import (see _threads.py). With them, a call whose
# per-step product is big enough runs on a team of our own threads (_team.h), as many as BLAS's
# thread count, each calling BLAS on one thread; smaller calls run in the calling thread, with
# the per-step products on one BLAS thread and the hoisted GEMMs on BLAS's own threads. Without
# them the loop runs with the library's setting.
ctypedef int (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil
cdef set_threads_fn set_local_threads = NULL
cdef get_threads_fn get_blas_threads = NULL

cdef extern from "_panels.h" nogil:
    enum: CBPTT_PANEL_F32, CBPTT_PANEL_F64
    int cbptt_panels_supported()
    void cbptt_pack_f32(const float* b, Py_ssize_t ldb, int trans, Py_ssize_t k,
                        Py_ssize_t first, Py_ssize_t count, float* panels)
    void cbptt_pack_f64(const double* b, Py_ssize_t ldb, int trans, Py_ssize_t k,
                        Py_ssize_t first, Py_ssize_t count, double* panels)
    void cbptt_panel_gemm_f32(Py_ssize_t m, Py_ssize_t k, const float* a, Py_ssize_t lda,
                              const float* panels, Py_ssize_t first, Py_ssize_t count,
                              float beta, float* c, Py_ssize_t ldc)
    void cbptt_panel_gemm_f64(Py_ssize_t m, Py_ssize_t k, const double* a, Py_ssize_t lda,
                              const double* panels, Py_ssize_t first, Py_ssize_t count,
                              double beta, double* c, Py_ssize_t ldc)
    void cbptt_wgrad_f32(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a,
                         Py_ssize_t lda, const float* b, Py_ssize_t ldb, float beta, float* c,
                         Py_ssize_t ldc, float* sums)
    void cbptt_wgrad_f64(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* a,
                         Py_ssize_t lda, const double* b, Py_ssize_t ldb, double beta,
                         double* c, Py_ssize_t ldc, double* sums)

cdef extern from "_blas_threads.h" nogil:
    void cbptt_blas_control(set_threads_fn set, get_threads_fn get)
    void cbptt_blas_hold()
    void cbptt_blas_release()
    int cbptt_blas_threads()

cdef extern from "_paths.h" nogil:
    enum:
        CBPTT_RAN_STEP_PANELS
        CBPTT_RAN_STEP_BLAS
        CBPTT_RAN_INPUT_PANELS
        CBPTT_RAN_INPUT_BLAS
        CBPTT_RAN_WGRAD_KERNEL
        CBPTT_RAN_WGRAD_BLAS
        CBPTT_RAN_WGRAD_TRANSPOSED
        CBPTT_RAN_CHUNK_GRADS
    void cbptt_ran(unsigned flags)
    unsigned cbptt_paths_take()

PATH_NAMES = {CBPTT_RAN_STEP_PANELS: "step_panels", CBPTT_RAN_STEP_BLAS: "step_blas",
              CBPTT_RAN_INPUT_PANELS: "input_panels", CBPTT_RAN_INPUT_BLAS: "input_blas",
              CBPTT_RAN_WGRAD_KERNEL: "wgrad_kernel", CBPTT_RAN_WGRAD_BLAS: "wgrad_blas",
              CBPTT_RAN_WGRAD_TRANSPOSED: "wgrad_transposed",
              CBPTT_RAN_CHUNK_GRADS: "chunk_grads"}


def path_names(unsigned flags):
    """The names of the kernel paths in a record of flags (see _paths.h)."""
    return frozenset(name for flag, name in PATH_NAMES.items() if flags & flag)


cdef extern from "_team.h" nogil:
    enum: CBPTT_TEAM_MAX
    ctypedef void (*cbptt_team_task)(void* ctx, int part, int parts) noexcept nogil
    int cbptt_team_run(int parts, cbptt_team_task task, void* ctx)
    void cbptt_team_barrier(int parts)
    double cbptt_team_round_trip_ns(long rounds)

# Per-step products below this many FLOPs (2 B H G H) run on one BLAS thread.
STEP_THREADS_FLOPS = 1_000_000
# Calls with fewer batch rows than this, or whose per-step product (2 B H G H FLOPs) is below
# team_min_flops and whose per-step products over all steps (T times that) are below
# team_min_call_flops, run without the team (benchmarks/README.md, "The team of threads";
# the thresholds for the call's work: docs/DEVELOPMENT.md, measured on splits).
cdef Py_ssize_t team_min_batch = 2
cdef double team_min_flops = 50_000
cdef double team_min_call_flops = 500_000
# From this many FLOPs per per-step product on, the team splits it by columns (see split_columns).
cdef double team_column_flops = 8_000_000
cdef int max_parts = CBPTT_TEAM_MAX
cdef bint exact_parts = False

# The backward pass runs in chunks of at least chunk_min_steps steps and chunk_rows rows
# (steps x batch), fixed when an Engine is made (see Engine.__init__ and backward).
cdef Py_ssize_t chunk_rows = 128
cdef Py_ssize_t chunk_min_steps = 4
cdef bint gated_input_whole = True

# Engines keep W_hh^T (for OpenBLAS's small-matrix path) while B * H * G*H is at most this.
cdef double transposed_limit = <double>SMALL_GEMM_MNK * MAX_STEP_SLICES

# Per-step products multiply by W_hh packed once per pass (_panels.h) where the processor has
# AVX-512 (and B * H * G*H > panels_min_mnk: 0, every shape, since the measured A/B in
# docs/DEVELOPMENT.md); elsewhere they go to BLAS (OpenBLAS's small-matrix path when small).
cdef bint panels_enabled = True
cdef double panels_min_mnk = 0
# Weight gradients (dA^T @ h) through _panels.h's kernel rather than BLAS (AVX-512F only),
# where it measured faster: past OpenBLAS's small-matrix size (whose kernels need no packing)
# and up to 262144 entries of dW (the large shape's GRU dW_hh, 1536 x 512, runs faster on
# OpenBLAS; its tanh dW_hh, 512 x 512, on the kernel; see set_wgrad).
cdef bint wgrad_enabled = True
cdef double wgrad_min_mnk = SMALL_GEMM_MNK
cdef double wgrad_max_outputs = 262144
# the forward's input projection on packed W_ih^T panels (engines with panels)
cdef bint panel_input = True
# GRU's weight gradients chunk by chunk of the backward pass, while the chunk's dA is still in
# cache, where dA over all steps (T*B*3H values) takes at least this many bytes; below it, one
# product over all steps after the step loop (see set_gru_chunk_grads)
cdef double gru_chunk_grads_bytes = 16 * 1024 * 1024
# calls whose parts would split the batch rows run on one sub-engine per part (see run_split)
cdef bint split_enabled = True
cdef int split_threads = 0      # at most this many threads run a split (0: one per sub-engine)


def set_gru_chunk_grads(double min_bytes=16 * 1024 * 1024):
    """GRU layers compute dW_hh, dW_ih and the bias gradients chunk by chunk of the backward
    pass (as each chunk's dA is complete) where dA over all steps takes at least min_bytes and
    the first layer's input is copied whole (set_chunking), else in one product each after the
    layer's step loop; returns the previous min_bytes. Read at every call (tests: 0 or inf)."""
    global gru_chunk_grads_bytes
    previous = gru_chunk_grads_bytes
    gru_chunk_grads_bytes = min_bytes
    return previous


def set_split(bint enabled=True, int threads=0):
    """Calls whose team parts would split the batch rows run as a split (one sub-engine per
    part; training sums their gradients; see run_split) when enabled, else on the engine's
    own buffers with the parts sharing them; a split runs on at most `threads` threads (0:
    one per sub-engine; fewer take the sub-engines in turn, as a busy team's caller does).
    Returns the previous (enabled, threads) (tests, benchmarks)."""
    global split_enabled, split_threads
    previous = (split_enabled, split_threads)
    split_enabled = enabled
    split_threads = threads
    return previous


def set_panels(bint enabled=True, double min_mnk=0):
    """Engines made from now on multiply by packed W_hh panels when enabled, the processor
    supports them and B * H * G*H > min_mnk; returns the previous (enabled, min_mnk). For
    tests and benchmarks."""
    global panels_enabled, panels_min_mnk
    previous = (panels_enabled, panels_min_mnk)
    panels_enabled = enabled
    panels_min_mnk = min_mnk
    return previous


def set_wgrad(bint enabled=True, double min_mnk=SMALL_GEMM_MNK, double max_outputs=262144):
    """Weight gradients dW (m, n) = dA^T @ inputs over k rows run through _panels.h's kernel
    when enabled, the processor supports it, m >= 6, n >= one panel (64 columns, float64 32),
    m * n <= max_outputs and m * n * k > min_mnk; else through BLAS. Returns the previous
    (enabled, min_mnk, max_outputs). Read at every call (for tests and benchmarks)."""
    global wgrad_enabled, wgrad_min_mnk, wgrad_max_outputs
    previous = (wgrad_enabled, wgrad_min_mnk, wgrad_max_outputs)
    wgrad_enabled, wgrad_min_mnk, wgrad_max_outputs = enabled, min_mnk, max_outputs
    return previous


def set_panel_input(bint enabled=True):
    """Engines with panels run the forward's input projection on packed W_ih^T (where
    in_size <= H) when enabled, else through BLAS; returns the previous setting. Read at
    every call (for tests and benchmarks)."""
    global panel_input
    previous = panel_input
    panel_input = enabled
    return previous


def _weight_gradient(a, b, double beta, c, sums=None):
    """c = a.T @ b + beta c (and, if given, sums = a's column sums + beta sums) through the
    weight-gradient kernel of _panels.h: for tests. a (k, m), b (k, n), c (m, n), sums (m,),
    C-contiguous of one float dtype."""
    if not cbptt_panels_supported():
        raise RuntimeError("this processor has no AVX-512F")
    cdef cnp.ndarray A = a, B = b, C = c
    cdef cnp.ndarray S = None if sums is None else sums
    if A.dtype == np.float32:
        cbptt_wgrad_f32(A.shape[1], B.shape[1], A.shape[0], <float*>A.data, A.shape[1],
                        <float*>B.data, B.shape[1], <float>beta, <float*>C.data, C.shape[1],
                        NULL if S is None else <float*>S.data)
    else:
        cbptt_wgrad_f64(A.shape[1], B.shape[1], A.shape[0], <double*>A.data, A.shape[1],
                        <double*>B.data, B.shape[1], beta, <double*>C.data, C.shape[1],
                        NULL if S is None else <double*>S.data)


def panels_supported():
    """Whether this processor runs the packed-panel products (AVX-512F)."""
    return bool(cbptt_panels_supported())


def _panel_product(a, b, bint trans, double beta, c, Py_ssize_t first, Py_ssize_t count):
    """c[:, first:first+count] = a @ op(b)[:, first:first+count] + beta c[:, first:first+count]
    through the packed-panel product (op(b) = b.T with trans), first a multiple of the panel
    width: the kernel alone, for tests. a, b, c C-contiguous of one float dtype."""
    if not cbptt_panels_supported():
        raise RuntimeError("this processor has no AVX-512F")
    cdef cnp.ndarray A = a, B = b, C = c
    k = A.shape[1]
    n = B.shape[0] if trans else B.shape[1]
    dtype = C.dtype
    width = CBPTT_PANEL_F32 if dtype == np.float32 else CBPTT_PANEL_F64
    if first % width or not 0 <= first <= first + count <= n:
        raise ValueError(f"first must be a multiple of {width} and the block inside {n} columns")
    cdef cnp.ndarray panels = np.empty(k * (-(-n // width) * width), dtype=dtype)
    if dtype == np.float32:
        cbptt_pack_f32(<float*>B.data, B.shape[1], trans, k, first, count, <float*>panels.data)
        cbptt_panel_gemm_f32(A.shape[0], k, <float*>A.data, k, <float*>panels.data, first,
                             count, <float>beta, <float*>C.data, C.shape[1])
    else:
        cbptt_pack_f64(<double*>B.data, B.shape[1], trans, k, first, count, <double*>panels.data)
        cbptt_panel_gemm_f64(A.shape[0], k, <double*>A.data, k, <double*>panels.data, first,
                             count, beta, <double*>C.data, C.shape[1])


def set_transposed_limit(double mnk=<double>SMALL_GEMM_MNK * MAX_STEP_SLICES):
    """Engines made from now on keep a transposed copy of W_hh while B * H * G*H <= mnk, else
    multiply by W_hh transposed in BLAS; returns the previous limit. For tests."""
    global transposed_limit
    previous = transposed_limit
    transposed_limit = mnk
    return previous


def set_chunking(Py_ssize_t rows=128, Py_ssize_t min_steps=4, bint whole_gated_input=True):
    """Set the chunk size of Engines made from now on (chunk_steps = max(min_steps,
    ceil(rows / batch)), at most the sequence's length; LSTM and GRU take twice that, at least
    T/8, and copy their input in one chunk unless whole_gated_input is False); returns the
    previous settings. For tests: the results do not depend on it beyond rounding."""
    global chunk_rows, chunk_min_steps, gated_input_whole
    previous = (chunk_rows, chunk_min_steps, gated_input_whole)
    chunk_rows = max(1, rows)
    chunk_min_steps = max(1, min_steps)
    gated_input_whole = whole_gated_input
    return previous


def _use_local_thread_control(size_t set_address, size_t get_address=0):
    """Install OpenBLAS's openblas_set_num_threads_local and openblas_get_num_threads (their
    addresses; 0 turns the control off)."""
    global set_local_threads, get_blas_threads
    set_local_threads = <set_threads_fn>set_address
    get_blas_threads = <get_threads_fn>get_address
    cbptt_blas_control(set_local_threads, get_blas_threads)


def local_thread_control():
    """Whether the engine can run the recurrent loop on one BLAS thread."""
    return set_local_threads != NULL


def set_team(int parts=CBPTT_TEAM_MAX, double min_flops=50_000, Py_ssize_t min_batch=2,
             bint exact=False, double column_flops=8_000_000,
             double min_call_flops=500_000):
    """Set when calls run on the engine's team of threads; returns the previous settings.

    parts caps the number of threads (1: never use the team); with exact=True every call that
    qualifies uses exactly `parts` threads (capped by its batch) whatever BLAS's thread count
    is. A call qualifies when its batch has at least min_batch rows and its per-step product
    2 B H G H has at least min_flops FLOPs, or those products over all T steps have at least
    min_call_flops. From column_flops FLOPs on, the per-step products are
    split by columns (two barriers per step) instead of by batch rows. For tests and
    benchmarks: by default a call that qualifies uses as many threads as BLAS is set to
    (threadpoolctl, OPENBLAS_NUM_THREADS).
    """
    global max_parts, team_min_flops, team_min_batch, exact_parts, team_column_flops
    global team_min_call_flops
    previous = dict(parts=max_parts, min_flops=team_min_flops, min_batch=team_min_batch,
                    exact=exact_parts, column_flops=team_column_flops,
                    min_call_flops=team_min_call_flops)
    max_parts = max(1, min(parts, CBPTT_TEAM_MAX))
    team_min_flops = min_flops
    team_min_batch = max(2, min_batch)
    exact_parts = exact
    team_column_flops = column_flops
    team_min_call_flops = min_call_flops
    return previous


def team_available():
    """Whether calls can be split over a team of threads (BLAS thread control found)."""
    return set_local_threads != NULL and get_blas_threads != NULL


def core_round_trip_ns(long rounds=20000):
    """Round trip in ns of a cache line between the team's first two threads (the caller and
    a helper): the median of 16 batches' means over `rounds` round trips in all; None when the
    team is busy or cannot start a helper. For benchmarks: where a host runs the two threads
    on cores far apart, 2-thread steps slow down (see _team.h)."""
    cdef double ns
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    with nogil:
        # the helper asks BLAS for one thread, which sets SciPy's count for the whole
        # process: hold and restore it, as run_job does
        cbptt_blas_hold()
        cbptt_team_round_trip_ns(1000)   # wakes a sleeping helper: its wake-up is no round trip
        ns = cbptt_team_round_trip_ns(rounds)
        cbptt_blas_release()
    return None if ns < 0 else ns


cdef inline int enter_step_loop(const Shape* s) noexcept nogil:
    """Run the coming per-step products on one thread if they are small; returns whether BLAS
    is held for that (pass it to leave_step_loop)."""
    if set_local_threads == NULL or s.step_threads_one == 0:
        return 0
    cbptt_blas_hold()
    return 1


cdef inline void leave_step_loop(int held) noexcept nogil:
    if held:
        cbptt_blas_release()

cdef enum:
    CELL_TANH = 0
    CELL_RELU = 1
    CELL_LSTM = 2
    CELL_GRU = 3

cdef enum:
    LOSS_MSE = 0
    LOSS_CROSS_ENTROPY = 1

CELLS = {"tanh": CELL_TANH, "relu": CELL_RELU, "lstm": CELL_LSTM, "gru": CELL_GRU}
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
LOSSES = {"mse": LOSS_MSE, "cross_entropy": LOSS_CROSS_ENTROPY}


cdef struct Shape:
    int cell
    Py_ssize_t gates, num_layers, input_size, hidden_size, output_size
    Py_ssize_t batch, steps
    bint many_to_one
    int loss
    Py_ssize_t loss_start     # many-to-many: first step that has an output and a loss
    bint step_threads_one     # run the per-step products on one BLAS thread
    Py_ssize_t chunk_steps    # steps per chunk of the backward pass (see backward)
    Py_ssize_t input_steps    # steps per chunk of the first layer's input (w.x_chunk)
    bint panels               # per-step products on packed W_hh (w.panels, _panels.h)


cdef struct Work:
    # Raw pointers into the Engine's NumPy buffers; void because they hold float or double.
    void* x_chunk      # (input_steps, B, I) input_steps steps of the input, time-major
    void* hs           # (L, T+1, B, H) h_0 .. h_T of every layer
    void* gates        # (L, T, B, G*H) gate activations (LSTM: i, f, g, o; GRU: r, z, n)
    void* cs           # (L, T+1, B, H) LSTM: c_0 .. c_T
    void* hn           # (L, T, B, H) GRU: W_hn h_{t-1} + b_hn
    void* rec          # (B, G*H) GRU: h_{t-1} @ W_hh^T of the current step
    void* bias_sum     # (L, G*H) b_ih + b_hh
    void* w_hh_t       # (H, G*H) W_hh^T of the layer being run forward (a no-transpose B, for
                       # OpenBLAS's small-matrix path); NULL when the per-step product is too
                       # big for that path anyway: W_hh is then used transposed
    void* panels       # shape.panels: the layer's W_hh packed for the per-step products of
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
    void* h_final
    void* c_final
    Py_ssize_t layer_stride   # entries from one layer's (B, H) block to the next: B*H, or the
                              # caller's B*H for a split's sub-engine (its rows of each layer)
    double* flow       # (L, T): mean over the batch of ||dL/dh_t|| per layer and step, or NULL


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
    s.step_threads_one = False
    s.chunk_steps = steps
    s.input_steps = steps
    return 0


cdef inline Py_ssize_t layer_offset(const Shape* s, Py_ssize_t layer) noexcept nogil:
    """Offset of layer's weight_ih in the flat parameter buffer (layer == L: the head)."""
    cdef Py_ssize_t gh = s.gates * s.hidden_size
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
    cdef Py_ssize_t gh = s.gates * s.hidden_size
    w_ih[0] = base + layer_offset(s, layer)
    w_hh[0] = w_ih[0] + gh * layer_input_size(s, layer)
    b_ih[0] = w_hh[0] + gh * s.hidden_size
    b_hh[0] = b_ih[0] + gh


cdef inline Py_ssize_t output_steps(const Shape* s) noexcept nogil:
    return 1 if s.many_to_one else s.steps - s.loss_start



# ---------------------------------------------------------------------------------------------
# splitting the work between the parts of a team (see _team.h)
#
# Every function below runs in each part of a team at once, as part `part` of `parts` (1 part:
# the whole work, no synchronisation). The time loops split by batch rows: each part carries
# its own rows (independent sequences) through every step, so the loops need no barrier.
# Very large per-step products are split by columns instead (each part then repacks only its
# share of W_hh per step), at the price of two barriers per step. The hoisted GEMMs, which
# mix all rows and steps, are cut along their larger side, and the parts meet at barrier()
# before and after them. The split is static: a result depends on the number of parts (and
# the split chosen), never on timing.

cdef inline void part_range(Py_ssize_t total, int part, int parts, Py_ssize_t align,
                            Py_ssize_t* start, Py_ssize_t* count) noexcept nogil:
    """[start, start + count) of part's block of total items, blocks rounded up to align."""
    cdef Py_ssize_t chunk = (total + parts - 1) // parts
    chunk = (chunk + align - 1) // align * align
    start[0] = min(part * chunk, total)
    count[0] = min(start[0] + chunk, total) - start[0]


cdef inline void barrier(int parts) noexcept nogil:
    cbptt_team_barrier(parts)


cdef inline void part_gemm(int part, int parts, bint trans_a, bint trans_b, Py_ssize_t m,
                           Py_ssize_t n, Py_ssize_t k, floating alpha, const floating* a,
                           Py_ssize_t lda, const floating* b, Py_ssize_t ldb, floating beta,
                           floating* c, Py_ssize_t ldc) noexcept nogil:
    """part's block of C (m, n) = alpha op(A) op(B) + beta C: columns if n >= m, else rows."""
    cdef Py_ssize_t start, count
    if parts == 1:
        gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    elif n >= m:
        part_range(n, part, parts, 16, &start, &count)
        gemm(trans_a, trans_b, m, count, k, alpha, a, lda,
             b + (start * ldb if trans_b else start), ldb, beta, c + start, ldc)
    else:
        part_range(m, part, parts, 1, &start, &count)
        gemm(trans_a, trans_b, count, n, k, alpha, a + (start if trans_a else start * lda), lda,
             b, ldb, beta, c + start * ldc, ldc)


cdef inline bint wgrad_fits(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            const floating* kind) noexcept nogil:
    """Whether C (m, n) = A^T @ B over k rows goes to _panels.h's weight-gradient kernel
    (see set_wgrad) rather than BLAS."""
    return (wgrad_enabled and cbptt_panels_supported() and m >= 6 and n >= panel_width(kind)
            and <double>m * n <= wgrad_max_outputs and <double>m * n * k > wgrad_min_mnk)


cdef inline void weight_grad(int part, int parts, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                             const floating* a, Py_ssize_t lda, const floating* b,
                             Py_ssize_t ldb, floating beta, floating* c, Py_ssize_t ldc,
                             const floating* ones=NULL, floating* sums=NULL) noexcept nogil:
    """part's block of C (m, n) = A^T @ B + beta C for A (k, m), B (k, n), and, unless sums is
    NULL, of sums (m,) = A's column sums + beta sums (ones: k ones, for BLAS): through
    _panels.h's weight-gradient kernel (where enabled and supported; it adds the sums while A
    is in cache), else BLAS; split as part_gemm."""
    cdef Py_ssize_t start, count, a_start = 0, b_start = 0, c_start = 0, m_part = m, n_part = n
    cdef floating* part_sums = sums
    if not wgrad_fits(m, n, k, c):
        cbptt_ran(CBPTT_RAN_WGRAD_BLAS)
        part_gemm(part, parts, True, False, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
        if sums != NULL:
            part_column_sums(part, parts, k, m, a, lda, ones, beta, sums)
        return
    cbptt_ran(CBPTT_RAN_WGRAD_KERNEL)
    if parts > 1 and n >= m and n >= parts * panel_width(c):
        part_range(n, part, parts, panel_width(c), &start, &count)
        b_start, c_start, n_part = start, start, count
        if start > 0:
            part_sums = NULL    # the part with the first columns adds the sums
    elif parts > 1:
        part_range(m, part, parts, 1, &start, &count)
        a_start, c_start, m_part = start, start * ldc, count
        if sums != NULL:
            part_sums = sums + start
    if m_part > 0 and n_part > 0:
        if floating is float:
            cbptt_wgrad_f32(m_part, n_part, k, a + a_start, lda, b + b_start, ldb, beta,
                            c + c_start, ldc, part_sums)
        else:
            cbptt_wgrad_f64(m_part, n_part, k, a + a_start, lda, b + b_start, ldb, beta,
                            c + c_start, ldc, part_sums)


cdef inline void wgrad_kernel(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* a,
                              Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                              floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C (m, n) = A^T @ B + beta C on _panels.h's weight-gradient kernel."""
    if m <= 0 or n <= 0:
        return
    if floating is float:
        cbptt_wgrad_f32(m, n, k, a, lda, b, ldb, beta, c, ldc, NULL)
    else:
        cbptt_wgrad_f64(m, n, k, a, lda, b, ldb, beta, c, ldc, NULL)


cdef inline void part_column_sums(int part, int parts, Py_ssize_t rows, Py_ssize_t cols,
                                  const floating* a, Py_ssize_t lda, const floating* ones,
                                  floating beta, floating* y) noexcept nogil:
    """part's block of y (cols,) = column sums of A (rows, cols) + beta y."""
    cdef Py_ssize_t start, count
    part_range(cols, part, parts, 16, &start, &count)
    gemv(True, rows, count, 1, a + start, lda, ones, beta, y + start)


cdef inline Py_ssize_t panel_width(const floating* kind) noexcept nogil:
    return CBPTT_PANEL_F32 if floating is float else CBPTT_PANEL_F64


cdef inline void pack_panels(int part, int parts, const floating* b, Py_ssize_t ldb,
                             bint trans, Py_ssize_t k, Py_ssize_t n,
                             floating* panels) noexcept nogil:
    """Pack op(B) (k, n) (B (k, n), or B (n, k) with trans) into panels (_panels.h): part's
    block of columns, the block its share of a column split multiplies by. Split by rows,
    every part reads every panel: the caller meets the others at a barrier before using them."""
    cdef Py_ssize_t start, count
    part_range(n, part, parts, panel_width(panels), &start, &count)
    if count > 0:
        if floating is float:
            cbptt_pack_f32(b, ldb, trans, k, start, count, panels)
        else:
            cbptt_pack_f64(b, ldb, trans, k, start, count, panels)


cdef inline void panel_gemm(Py_ssize_t m, Py_ssize_t k, const floating* a, Py_ssize_t lda,
                            const floating* panels, Py_ssize_t first, Py_ssize_t count,
                            floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        cbptt_panel_gemm_f32(m, k, a, lda, panels, first, count, beta, c, ldc)
    else:
        cbptt_panel_gemm_f64(m, k, a, lda, panels, first, count, beta, c, ldc)


cdef inline void step_product(bint columns, int part, int parts, Py_ssize_t row0,
                              Py_ssize_t rows, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                              const floating* a, Py_ssize_t lda, const floating* b,
                              Py_ssize_t ldb, bint trans_b, const floating* panels,
                              floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """part's share of a per-step product C (m, n) = A (m, k) @ op(B) + beta C, op(B) = B (k, n)
    or, with trans_b, B^T for B (n, k): its rows [row0, row0 + rows), or, with columns, its
    block of columns of every row, then a barrier (every part's elementwise kernel reads all
    the columns of its rows). With panels (op(B) packed by pack_panels) the packed product
    runs; else BLAS, which without trans_b stays on OpenBLAS's small-matrix path."""
    cdef Py_ssize_t start, count
    if panels != NULL:
        if not columns:
            panel_gemm(rows, k, a + row0 * lda, lda, panels, 0, n, beta, c + row0 * ldc, ldc)
            return
        part_range(n, part, parts, panel_width(panels), &start, &count)
        panel_gemm(m, k, a, lda, panels, start, count, beta, c, ldc)
        barrier(parts)
        return
    if not columns:
        if trans_b:
            gemm(False, True, rows, n, k, 1, a + row0 * lda, lda, b, ldb, beta, c + row0 * ldc,
                 ldc)
        else:
            step_gemm(rows, n, k, a + row0 * lda, lda, b, ldb, beta, c + row0 * ldc, ldc)
        return
    part_range(n, part, parts, 16, &start, &count)
    if count > 0:
        if trans_b:
            gemm(False, True, m, count, k, 1, a, lda, b + start * ldb, ldb, beta, c + start, ldc)
        else:
            step_gemm(m, count, k, a, lda, b + start, ldb, beta, c + start, ldc)
    barrier(parts)


cdef inline void input_projection(int part, int parts, Py_ssize_t rows, Py_ssize_t gh,
                                  Py_ssize_t in_size, const floating* inputs,
                                  const floating* w_ih, const floating* panels,
                                  floating* gates) noexcept nogil:
    """part's share of gates (rows, gh) = inputs (rows, in_size) @ W_ih^T: on W_ih^T packed
    into panels (by rows of gates), or through BLAS when panels is NULL."""
    cdef Py_ssize_t start, count
    if panels == NULL:
        part_gemm(part, parts, False, True, rows, gh, in_size, 1, inputs, in_size, w_ih,
                  in_size, 0, gates, gh)
        return
    part_range(rows, part, parts, 1, &start, &count)
    if count > 0:
        panel_gemm(count, in_size, inputs + start * in_size, in_size, panels, 0, gh, 0,
                   gates + start * gh, gh)


cdef inline bint split_columns(const Shape* s, int parts) noexcept nogil:
    """Whether the per-step products are split by columns rather than by batch rows: when
    they are so big that each part repacking all of W_hh per step (row split) costs more
    than two barriers per step (see set_team)."""
    return parts > 1 and 2.0 * s.batch * s.hidden_size * s.gates * s.hidden_size >= \
        team_column_flops


# ---------------------------------------------------------------------------------------------
# forward

cdef void transpose_rows(const floating* source, floating* target, Py_ssize_t rows,
                         Py_ssize_t cols, Py_ssize_t first, Py_ssize_t count) noexcept nogil:
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


cdef void copy_input_steps(const Shape* s, const floating* x, Py_ssize_t first,
                           Py_ssize_t last, floating* out, int part, int parts) noexcept nogil:
    """out (last - first, B, I) = x[:, first:last] for x (B, T, I) batch-first: part's share of
    the steps (no barrier)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, I = s.input_size, t, b, start, count
    part_range(last - first, part, parts, 1, &start, &count)
    for t in range(first + start, first + start + count):
        for b in range(B):
            memcpy(out + ((t - first) * B + b) * I, x + (b * T + t) * I, I * sizeof(floating))


cdef void forward(const Shape* s, Work* w, const floating* x, const floating* params,
                  const States* st, bint head, int part, int parts) noexcept nogil:
    """All layers over all steps, then the head if asked. x (B, T, I) batch-first."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size
    cdef Py_ssize_t GH = s.gates * H, BH = s.batch * s.hidden_size
    cdef Py_ssize_t layer, t, b, in_size, j, first, count, row0, rows
    cdef int threads
    cdef floating* x_chunk = <floating*>w.x_chunk
    cdef floating* w_hh_t = <floating*>w.w_hh_t
    cdef floating* panels = <floating*>w.panels
    cdef floating* hs
    cdef floating* cs = NULL
    cdef floating* gates
    cdef floating* hn = NULL
    cdef floating* rec = <floating*>w.rec
    cdef floating* bias_sum
    cdef const floating* inputs
    cdef floating* w_ih
    cdef floating* w_hh
    cdef floating* b_ih
    cdef floating* b_hh

    cdef Py_ssize_t last
    cdef floating* input_panels
    cdef bint zero_state
    cdef bint columns = split_columns(s, parts)
    part_range(B, part, parts, 1, &row0, &rows)     # this part's batch rows, every step

    for layer in range(s.num_layers):
        in_size = layer_input_size(s, layer)
        layer_slices(s, <floating*>params, layer, &w_ih, &w_hh, &b_ih, &b_hh)
        hs = <floating*>w.hs + layer * (T + 1) * BH
        inputs = hs - (T + 1) * BH + BH     # the layer below's h_1 .. h_T
        bias_sum = <floating*>w.bias_sum + layer * GH
        # Elman keeps no gates: its pre-activations go where h_1..h_T live, activated in place.
        if s.cell == CELL_TANH or s.cell == CELL_RELU:
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
        input_panels = panels if panel_input and in_size <= H else NULL
        cbptt_ran(CBPTT_RAN_INPUT_PANELS if input_panels != NULL else CBPTT_RAN_INPUT_BLAS)
        cbptt_ran(CBPTT_RAN_STEP_PANELS if panels != NULL else CBPTT_RAN_STEP_BLAS)
        if input_panels != NULL:
            pack_panels(part, parts, w_ih, in_size, True, in_size, GH, input_panels)
        elif panels != NULL:
            pack_panels(part, parts, w_hh, H, True, H, GH, panels)
        barrier(parts)   # the layer below complete before the projection; panels packed
        # input projection of all steps: gates = inputs @ W_ih^T; the first layer's input,
        # batch-first, goes through a time-major chunk buffer (two barriers a chunk). Where
        # that takes several chunks and the parts split by rows, on panels, it runs straight
        # from x instead: each of the part's batch rows is one product over its T steps (x's
        # rows b*T .. b*T + T - 1 into gates' rows t*B + b, a row stride of B*G*H), no copy,
        # one barrier (measured: long tanh -3-4% at 2 threads; at a column split, or in one
        # chunk (LSTM, GRU), 1-2% slower)
        if layer == 0 and input_panels != NULL and not columns and s.input_steps < T:
            for b in range(row0, row0 + rows):
                panel_gemm(T, in_size, x + b * T * in_size, in_size, input_panels, 0, GH, 0,
                           gates + b * GH, B * GH)
            barrier(parts)
        elif layer == 0:
            last = 0
            while last < T:
                first = last
                last = min(T, first + s.input_steps)
                copy_input_steps(s, x, first, last, x_chunk, part, parts)
                barrier(parts)
                input_projection(part, parts, (last - first) * B, GH, in_size, x_chunk, w_ih,
                                 input_panels, gates + first * B * GH)
                barrier(parts)   # before the next chunk overwrites x_chunk
        else:
            input_projection(part, parts, T * B, GH, in_size, inputs, w_ih, input_panels, gates)
            barrier(parts)
        if input_panels != NULL:
            # every part is past the projection's use of the panels
            pack_panels(part, parts, w_hh, H, True, H, GH, panels)
            barrier(parts)
        threads = enter_step_loop(s)
        for t in range(T):       # row split: independent sequences, no barrier
            # from a zero h_0 (no h0 given) the first step's product is zero: skipped
            zero_state = t == 0 and st.h0 == NULL
            if s.cell == CELL_GRU:
                # rec = h_{t-1} @ W_hh^T, kept apart: its n block is scaled by r
                if zero_state:
                    memset(rec + row0 * GH, 0, rows * GH * sizeof(floating))
                else:
                    step_product(columns, part, parts, row0, rows, B, GH, H, hs + t * BH, H,
                                 w_hh_t if w_hh_t != NULL else w_hh,
                                 GH if w_hh_t != NULL else H, w_hh_t == NULL, panels, 0, rec,
                                 GH)
                gru_forward(gates + (t * B + row0) * GH, rec + row0 * GH, b_ih, b_hh,
                            hs + t * BH + row0 * H, hs + (t + 1) * BH + row0 * H,
                            hn + t * BH + row0 * H, rows, H)
            else:
                # gates_t += h_{t-1} @ W_hh^T
                if not zero_state:
                    step_product(columns, part, parts, row0, rows, B, GH, H, hs + t * BH, H,
                                 w_hh_t if w_hh_t != NULL else w_hh,
                                 GH if w_hh_t != NULL else H, w_hh_t == NULL, panels, 1,
                                 gates + t * B * GH, GH)
                if s.cell == CELL_LSTM:
                    lstm_forward(gates + (t * B + row0) * GH, bias_sum, cs + t * BH + row0 * H,
                                 cs + (t + 1) * BH + row0 * H, hs + (t + 1) * BH + row0 * H,
                                 rows, H)
                else:
                    elman_forward(s.cell == CELL_RELU, gates + (t * B + row0) * H, bias_sum,
                                  rows, H)
            if columns:
                barrier(parts)   # h_t complete: every part's product reads all of it
        leave_step_loop(threads)
        barrier(parts)   # every row's states complete: the next layer's input, the head's

    if head:
        head_forward(s, w, params, part, parts)


cdef inline floating* top_states(const Shape* s, const Work* w, Py_ssize_t t,
                                 const floating* kind) noexcept nogil:
    """The top layer's h_{t+1} (B, H), the state after step t (h_0 at t = -1)."""
    return <floating*>w.hs + ((s.num_layers - 1) * (s.steps + 1) + 1 + t) * s.batch * \
        s.hidden_size


cdef void head_forward(const Shape* s, Work* w, const floating* params, int part,
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


# ---------------------------------------------------------------------------------------------
# loss and backward

cdef double loss_scale(const Shape* s, const floating* weight, double* terms) noexcept nogil:
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


cdef double chunk_loss(const Shape* s, const floating* pred, const void* target,
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


cdef void head_backward(const Shape* s, Work* w, const floating* params,
                        floating* grads, int part, int parts) noexcept nogil:
    """Many-to-one: the head's gradients, and the gradient reaching each row's last state
    (dh_last). (Many-to-many does this chunk by chunk: head_chunk.)"""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, O = s.output_size
    cdef floating* dpred = <floating*>w.dpred
    cdef const floating* weight = params + layer_offset(s, s.num_layers)
    cdef floating* dweight = grads + layer_offset(s, s.num_layers)
    # dW = dpred^T @ h_last ; db = column sums of dpred ; dh_last = dpred @ W
    weight_grad(part, parts, O, H, B, dpred, O, <floating*>w.h_last, H, 0, dweight, H)
    part_gemm(part, parts, False, False, B, H, O, 1, dpred, O, weight, H, 0,
              <floating*>w.dh_last, H)
    part_column_sums(part, parts, B, O, dpred, O, <floating*>w.ones, 0, dweight + O * H)
    barrier(parts)


cdef double head_chunk(const Shape* s, Work* w, const floating* params,
                       const void* target, const floating* weight, double scale,
                       Py_ssize_t first, Py_ssize_t last, Py_ssize_t step0, Py_ssize_t steps,
                       Py_ssize_t row0, Py_ssize_t rows, floating* dpred,
                       floating* out) noexcept nogil:
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
    loss = chunk_loss(s, pred + (start - output_first) * B * O, target, weight, scale,
                      start - s.loss_start, end - start, row0, rows,
                      dpred + (start - output_first) * B * O)
    for t in range(start, start + calls):
        gemm(False, False, step_rows, H, O, 1, dpred + ((t - output_first) * B + row0) * O, O,
             weight_head, H, 0, out + ((t - first) * B + row0) * H, H)
    return loss


cdef void head_weight_grads(const Shape* s, Work* w, floating* grads, Py_ssize_t first,
                            Py_ssize_t last, const floating* dpred, int part,
                            int parts) noexcept nogil:
    """Many-to-many training, after head_chunk of the steps [first, last) ran for every row:
    dW_head += dpred^T @ h_t, db_head += column sums of dpred (part's share)."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, O = s.output_size
    cdef Py_ssize_t output_first = max(first, s.loss_start)
    cdef floating* dweight = grads + layer_offset(s, s.num_layers)
    cdef const floating* h_out = top_states(s, w, output_first, dweight)
    if output_first >= last:
        return
    weight_grad(part, parts, O, H, (last - output_first) * B, dpred, O, h_out, H, 1, dweight,
                H)
    part_column_sums(part, parts, (last - output_first) * B, O, dpred, O,
                     <floating*>w.ones, 1, dweight + O * H)


cdef double backward(const Shape* s, Work* w, const floating* x, const floating* params,
                     floating* grads, const States* st, const void* target,
                     const floating* weight, double scale, int part,
                     int parts) noexcept nogil:
    """BPTT down through every layer into grads (flat, overwritten; many-to-many: the head's
    entries zeroed before). Many-to-one starts from dpred (head_forward, chunk_loss); many-to-
    many computes the head, its loss and dpred chunk by chunk here, and each part returns its
    share of that loss (target, weight and scale as for chunk_loss). st.flow needs parts == 1.

    Each layer runs back in chunks of s.chunk_steps steps, so that what only one chunk needs
    lives in chunk-sized buffers: the top layer's incoming gradient (many-to-many: the head's
    outputs and their gradients, then dL/dh_t in w.chunk) and Elman's pre-activation gradients,
    written over it, whose weight-gradient GEMMs run per chunk (accumulating). LSTM and GRU
    write theirs over the layer's gates, and run their weight-gradient GEMMs over all steps at
    the end (GRU per chunk where its dA is large: set_gru_chunk_grads)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size
    cdef Py_ssize_t GH = s.gates * H, BH = s.batch * s.hidden_size
    cdef Py_ssize_t layer, t, b, j, in_size, row0, rows, first, last, n_rows
    cdef int threads
    cdef bint elman = s.cell == CELL_TANH or s.cell == CELL_RELU
    cdef bint chunk_grads = False
    cdef floating* chunk = <floating*>w.chunk
    cdef floating* panels = <floating*>w.panels
    cdef floating* inject = NULL   # indexed by step: inject + t * BH
    cdef floating* dA = NULL       # indexed by step: dA + t * B * GH
    cdef floating* da_n = NULL
    cdef floating* dh = <floating*>w.dh
    cdef floating* dc = <floating*>w.dc
    cdef floating* dh_last = <floating*>w.dh_last
    cdef floating* ones = <floating*>w.ones
    cdef floating* hs
    cdef floating* cs = NULL
    cdef floating* gates = NULL
    cdef floating* hn = NULL
    cdef floating* inject_t
    cdef const floating* inputs
    cdef floating* w_ih
    cdef floating* w_hh
    cdef floating* unused_b_ih
    cdef floating* unused_b_hh
    cdef floating* dw_ih
    cdef floating* dw_hh
    cdef floating* db_ih
    cdef floating* db_hh
    cdef floating beta
    cdef bint top, top_many_to_one
    cdef double loss = 0
    cdef Py_ssize_t O = s.output_size, chunk_index = 0, step0, steps
    cdef floating* dpred = NULL

    cdef bint columns = split_columns(s, parts)
    if s.many_to_one:
        head_backward(s, w, params, grads, part, parts)
    part_range(B, part, parts, 1, &row0, &rows)     # this part's batch rows, every step

    for layer in range(s.num_layers - 1, -1, -1):
        in_size = layer_input_size(s, layer)
        layer_slices(s, <floating*>params, layer, &w_ih, &w_hh, &unused_b_ih, &unused_b_hh)
        layer_slices(s, grads, layer, &dw_ih, &dw_hh, &db_ih, &db_hh)
        hs = <floating*>w.hs + layer * (T + 1) * BH
        # the layer below's h_1 .. h_T; the first layer reads x through w.x_chunk, chunk by chunk
        inputs = NULL if layer == 0 else hs - (T + 1) * BH + BH
        if s.cell == CELL_LSTM:
            cs = <floating*>w.cs + layer * (T + 1) * BH
            memset(dc + row0 * H, 0, rows * H * sizeof(floating))
        if not elman:
            # step t's gradients overwrite step t's gates (and GRU's hn), read just before
            gates = <floating*>w.gates + layer * T * B * GH
            dA = gates
        if s.cell == CELL_GRU:
            hn = <floating*>w.hn + layer * T * BH
            da_n = hn
        top = layer == s.num_layers - 1
        top_many_to_one = s.many_to_one and top
        # GRU's weight gradients per chunk where dA is large (measured at 2 threads: large
        # -1.3 to -2.6%, B=64 H=256 -3-4%; under 16 MiB 1-10% slower); the first layer's
        # needs x whole in x_chunk
        chunk_grads = (s.cell == CELL_GRU and (layer > 0 or s.input_steps >= T) and
                       <double>T * B * GH * sizeof(floating) >= gru_chunk_grads_bytes)
        if chunk_grads:
            cbptt_ran(CBPTT_RAN_CHUNK_GRADS)
        cbptt_ran(CBPTT_RAN_STEP_PANELS if panels != NULL else CBPTT_RAN_STEP_BLAS)
        # below the top, the gradient from the layer above fills w.inject (all steps)
        inject = NULL if top_many_to_one else <floating*>w.inject

        memset(dh + row0 * H, 0, rows * H * sizeof(floating))
        if panels != NULL:
            # every part is past the previous layer's (or the forward's) use of the panels
            pack_panels(part, parts, w_hh, H, False, GH, H, panels)
            if not columns:
                barrier(parts)   # a row split reads every part's panels
        last = T
        while last > 0:
            first = max(0, last - s.chunk_steps)
            if top and not s.many_to_one:
                # dpred alternates between two buffers, so that the last chunk's
                # head_weight_grads may still be reading the other. At a column split each part
                # computes its own rows, which its step loop reads: no barrier. At a row split
                # each part computes its share of the steps for every row (per-step products
                # of a few rows would cost more than the barrier).
                dpred = <floating*>w.dpred + (chunk_index % 2) * s.chunk_steps * B * O
                if columns:
                    loss += head_chunk(s, w, params, target, weight, scale, first, last, 0,
                                       last - first, row0, rows, dpred, chunk)
                else:
                    part_range(last - first, part, parts, 1, &step0, &steps)
                    loss += head_chunk(s, w, params, target, weight, scale, first, last, step0,
                                       steps, 0, B, dpred, chunk)
                    barrier(parts)
                inject = chunk - first * BH
            if elman:
                dA = chunk - first * BH        # over the chunk's inject, consumed in place
                if layer == 0 and s.input_steps < T:   # else x_chunk holds x from the forward
                    copy_input_steps(s, x, first, last, <floating*>w.x_chunk, part, parts)
            threads = enter_step_loop(s)
            for t in range(last - 1, first - 1, -1):     # row split: no barrier
                inject_t = NULL if inject == NULL else inject + (t * B + row0) * H
                if top_many_to_one:
                    for b in range(row0, row0 + rows):
                        if w.last_step[b] == t:
                            for j in range(H):
                                dh[b * H + j] += dh_last[b * H + j]
                if st.flow != NULL:
                    st.flow[layer * T + t] = mean_row_norm(dh, inject_t, B, H)
                if s.cell == CELL_GRU:
                    # dA_t = (dar, daz, dhn); dh <- dh z, then dh_{t-1} = dh z + dA_t @ W_hh
                    gru_backward(gates + (t * B + row0) * GH, hn + t * BH + row0 * H,
                                 hs + t * BH + row0 * H, dh + row0 * H, inject_t,
                                 dA + (t * B + row0) * GH, da_n + t * BH + row0 * H, rows, H)
                elif s.cell == CELL_LSTM:
                    lstm_backward(gates + (t * B + row0) * GH, cs + t * BH + row0 * H,
                                  cs + (t + 1) * BH + row0 * H, dh + row0 * H, inject_t,
                                  dc + row0 * H, dA + (t * B + row0) * GH, rows, H)
                else:
                    elman_backward(s.cell == CELL_RELU, hs + (t + 1) * BH + row0 * H,
                                   dh + row0 * H, inject_t, dA + (t * B + row0) * H, rows * H)
                if t == 0 and st.dh0 == NULL:
                    continue     # dh_{-1}, the initial state's gradient: not asked for
                if columns:
                    barrier(parts)   # dA_t complete: every part's product reads all of it
                # dh_{t-1} = dA_t @ W_hh (GRU: += onto dh z)
                step_product(columns, part, parts, row0, rows, B, H, GH, dA + t * B * GH, GH,
                             w_hh, H, False, panels, 1 if s.cell == CELL_GRU else 0, dh, H)
            leave_step_loop(threads)
            barrier(parts)     # the chunk's dA complete (every row), and its dpred
            if top and not s.many_to_one:
                head_weight_grads(s, w, grads, first, last, dpred, part, parts)
            if chunk_grads:
                # this chunk's share of dW_hh, db_hh, db_in (from da_n) and dW_ih; each part
                # its own block of each, the same blocks at every chunk: no barrier (the narrow
                # dW_ih path's scratch, the panel buffer, is still in use: NULL)
                beta = 0 if last == T else 1
                n_rows = (last - first) * B
                weight_grad(part, parts, GH, H, n_rows, dA + first * B * GH, GH,
                            hs + first * BH, H, beta, dw_hh, H, ones, db_hh)
                part_column_sums(part, parts, n_rows, H, da_n + first * BH, H, ones, beta,
                                 db_ih + 2 * H)
                input_weight_grads(s, dA + first * B * GH, da_n + first * BH,
                                   <floating*>w.x_chunk + first * B * in_size if layer == 0
                                   else inputs + first * B * in_size, in_size, n_rows, beta,
                                   dw_ih, NULL, part, parts)
            if elman:
                # this chunk's share of dW_hh = dA^T @ h_{t-1}, db_hh = column sums of dA,
                # dW_ih = dA^T @ inputs, and the layer below's gradient dA @ W_ih
                beta = 0 if last == T else 1
                n_rows = (last - first) * B
                weight_grad(part, parts, GH, H, n_rows, dA + first * BH, GH,
                            hs + first * BH, H, beta, dw_hh, H, ones, db_hh)
                weight_grad(part, parts, GH, in_size, n_rows, dA + first * BH, GH,
                            <floating*>w.x_chunk if layer == 0 else inputs + first * B * in_size,
                            in_size, beta, dw_ih, in_size)
                if layer > 0:
                    # over the inject of these steps, which this layer has consumed
                    part_gemm(part, parts, False, False, n_rows, H, GH, 1, dA + first * BH, GH,
                              w_ih, in_size, 0, <floating*>w.inject + first * BH, H)
                barrier(parts)     # before the next chunk overwrites the chunk buffer
            last = first
            chunk_index += 1
        # every part its own rows: the next layer starts by zeroing them
        if st.dh0 != NULL:
            memcpy(<floating*>st.dh0 + layer * st.layer_stride + row0 * H, dh + row0 * H,
                   rows * H * sizeof(floating))
        if st.dc0 != NULL and s.cell == CELL_LSTM:
            memcpy(<floating*>st.dc0 + layer * st.layer_stride + row0 * H, dc + row0 * H,
                   rows * H * sizeof(floating))
        if part == 0 and elman:
            memcpy(db_ih, db_hh, GH * sizeof(floating))
        if elman:
            continue

        if not chunk_grads:
            # dW_hh = dA^T @ h_{0..T-1} ; db_hh = column sums of dA
            weight_grad(part, parts, GH, H, T * B, dA, GH, hs, H, 0, dw_hh, H, ones, db_hh)
            if s.cell == CELL_GRU:
                part_column_sums(part, parts, T * B, H, da_n, H, ones, 0, db_ih + 2 * H)
            # dW_ih = dA^T @ inputs (the first layer: chunk by chunk of x)
            if layer > 0:
                input_weight_grads(s, dA, da_n, inputs, in_size, T * B, 0, dw_ih, panels, part,
                                   parts)
            else:
                last = T
                while last > 0:
                    first = max(0, last - s.input_steps)
                    if s.input_steps < T:   # else x_chunk still holds all of x, from the forward
                        copy_input_steps(s, x, first, last, <floating*>w.x_chunk, part, parts)
                        barrier(parts)
                    input_weight_grads(s, dA + first * B * GH,
                                       NULL if da_n == NULL else da_n + first * BH,
                                       <floating*>w.x_chunk, in_size, (last - first) * B,
                                       0 if last == T else 1, dw_ih, panels, part, parts)
                    barrier(parts)   # before the next chunk overwrites x_chunk
                    last = first
        if layer > 0:
            # the layer below receives dA @ W_ih at every step (GRU: its n rows from da_n)
            if s.cell == CELL_GRU:
                part_gemm(part, parts, False, False, T * B, H, 2 * H, 1, dA, GH, w_ih, in_size,
                          0, <floating*>w.inject, H)
                part_gemm(part, parts, False, False, T * B, H, H, 1, da_n, H,
                          w_ih + 2 * H * in_size, in_size, 1, <floating*>w.inject, H)
            else:
                part_gemm(part, parts, False, False, T * B, H, GH, 1, dA, GH, w_ih, in_size, 0,
                          <floating*>w.inject, H)
        barrier(parts)         # db_hh complete; inject complete for the layer below
        if part == 0:
            # db_ih = db_hh (GRU: the r, z blocks; its n block is the column sums of da_n)
            memcpy(db_ih, db_hh, (2 * H if s.cell == CELL_GRU else GH) * sizeof(floating))
    return loss


cdef void input_weight_grads(const Shape* s, const floating* dA, const floating* da_n,
                             const floating* inputs, Py_ssize_t in_size, Py_ssize_t n_rows,
                             floating beta, floating* dw_ih, floating* scratch, int part,
                             int parts) noexcept nogil:
    """dW_ih (G*H, in) = dA^T @ inputs + beta dW_ih over n_rows rows, for LSTM and GRU:
    dA (n_rows, G*H), inputs (n_rows, in). GRU's input side differs in the n block: its rows
    r, z come from dA, its rows n from da_n (n_rows, H).

    With fewer inputs than a panel's columns (dW_ih too narrow for the weight-gradient
    kernel) and scratch (in, G*H) given (the panel buffer, free after the step loop), the
    kernel computes the transpose dW_ih^T = inputs^T @ dA into scratch, each part its block
    of columns, which it then adds transposed into dW_ih (no barrier: its own columns)."""
    cdef Py_ssize_t H = s.hidden_size, GH = s.gates * s.hidden_size
    cdef Py_ssize_t start, count, j, i, end
    cdef floating* row
    if (scratch != NULL and in_size < panel_width(scratch) and in_size <= H
            and wgrad_fits(in_size, GH, n_rows, scratch)):
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
        weight_grad(part, parts, 2 * H, in_size, n_rows, dA, GH, inputs, in_size, beta, dw_ih,
                    in_size)
        weight_grad(part, parts, H, in_size, n_rows, da_n, H, inputs, in_size, beta,
                    dw_ih + 2 * H * in_size, in_size)
    else:
        weight_grad(part, parts, GH, in_size, n_rows, dA, GH, inputs, in_size, beta, dw_ih,
                    in_size)


cdef void copy_final_state(const Shape* s, Work* w, const States* st,
                           floating* kind) noexcept nogil:
    """h_final, c_final (L, B, H) = h_T, c_T of every layer (where asked for)."""
    cdef Py_ssize_t BH = s.batch * s.hidden_size, T = s.steps, layer
    for layer in range(s.num_layers):
        if st.h_final != NULL:
            memcpy(<floating*>st.h_final + layer * st.layer_stride,
                   <floating*>w.hs + (layer * (T + 1) + T) * BH, BH * sizeof(floating))
        if st.c_final != NULL and s.cell == CELL_LSTM:
            memcpy(<floating*>st.c_final + layer * st.layer_stride,
                   <floating*>w.cs + (layer * (T + 1) + T) * BH, BH * sizeof(floating))


cdef double mean_row_norm(const floating* a, const floating* b, Py_ssize_t rows,
                          Py_ssize_t width) noexcept nogil:
    """Mean over rows of the Euclidean norm of a + b (b may be NULL)."""
    cdef Py_ssize_t r, j
    cdef double v, row_sq, total = 0
    for r in range(rows):
        row_sq = 0
        for j in range(width):
            v = a[r * width + j] + (0 if b == NULL else b[r * width + j])
            row_sq += v * v
        total += sqrt(row_sq)
    return total / rows


cdef double squared_norm(const floating* values, Py_ssize_t count) noexcept nogil:
    """Sum of squares in double: NaN or Inf if any value is not finite."""
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(count):
        total += <double>values[i] * <double>values[i]
    return total


# ---------------------------------------------------------------------------------------------
# one call: a job that the parts of a team run together

cdef struct Job:
    const Shape* s
    Work* w
    const States* st
    const void* x
    const void* target
    const void* weight
    const void* params
    void* grads          # training: the gradients; prediction: the output
    Py_ssize_t n_params
    bint is_double
    bint training
    double loss
    double terms
    double scale         # what the summed loss is multiplied by (see loss_scale)
    bint given_scale     # a split's sub-job: scale and terms are the caller's (its whole
                         # batch's), and the squared norm is taken after the sum (split_task)
    double sq_norm_parts[CBPTT_TEAM_MAX]   # each part's share of the gradient's squared norm
    double loss_parts[CBPTT_TEAM_MAX]      # many-to-many: each part's share of the loss
    unsigned paths_parts[CBPTT_TEAM_MAX]   # the kernel paths each part ran (_paths.h)


cdef void train_step(Job* job, const floating* kind, int part, int parts) noexcept nogil:
    cdef const Shape* s = job.s
    cdef floating* grads = <floating*>job.grads
    cdef const floating* weight = <const floating*>job.weight
    cdef Py_ssize_t first, count
    cdef double loss
    cdef int other
    forward(s, job.w, <const floating*>job.x, <const floating*>job.params, job.st,
            s.many_to_one, part, parts)
    if part == 0:
        if not job.given_scale:
            job.scale = loss_scale(s, weight, &job.terms)
        if s.many_to_one:
            job.loss = chunk_loss(s, <floating*>job.w.pred, job.target, weight, job.scale, 0, 1,
                                  0, s.batch, <floating*>job.w.dpred)
        else:
            job.loss = 0   # the head's gradients accumulate chunk by chunk
            memset(grads + layer_offset(s, s.num_layers), 0,
                   s.output_size * (s.hidden_size + 1) * sizeof(floating))
    barrier(parts)
    loss = backward(s, job.w, <const floating*>job.x, <const floating*>job.params, grads,
                    job.st, job.target, weight, job.scale, part, parts)
    job.loss_parts[part] = loss
    barrier(parts)
    if part == 0:
        if not s.many_to_one:
            job.loss = 0
            for other in range(parts):      # in part order: one result for a number of parts
                job.loss += job.loss_parts[other]
        copy_final_state(s, job.w, job.st, grads)
    if job.given_scale:
        return
    part_range(job.n_params, part, parts, 1, &first, &count)
    job.sq_norm_parts[part] = squared_norm(grads + first, count)


cdef void predict_into(Job* job, const floating* kind, int part, int parts) noexcept nogil:
    """out: (B, O) for many-to-one, else (B, T - loss_start, O) batch-first."""
    cdef const Shape* s = job.s
    cdef Py_ssize_t B = s.batch, O = s.output_size, steps = output_steps(s), t, b
    cdef floating* out = <floating*>job.grads
    forward(s, job.w, <const floating*>job.x, <const floating*>job.params, job.st, True, part,
            parts)
    if part != 0:
        return
    for t in range(steps):
        for b in range(B):
            memcpy(out + (b * steps + t) * O, <floating*>job.w.pred + (t * B + b) * O,
                   O * sizeof(floating))
    copy_final_state(s, job.w, job.st, out)


cdef void job_task(void* context, int part, int parts) noexcept nogil:
    """A team task (see _team.h): part `part` of the job."""
    cdef Job* job = <Job*>context
    cbptt_paths_take()      # a fresh record for this part of this job
    if job.training:
        if job.is_double:
            train_step(job, <double*>NULL, part, parts)
        else:
            train_step(job, <float*>NULL, part, parts)
    elif job.is_double:
        predict_into(job, <double*>NULL, part, parts)
    else:
        predict_into(job, <float*>NULL, part, parts)
    job.paths_parts[part] = cbptt_paths_take()


cdef int run_job(Job* job, int parts) noexcept nogil:
    """Run the job on `parts` threads (the caller and parts - 1 helpers) or alone if the team
    is busy; returns the number of parts that ran. BLAS runs one thread per part meanwhile."""
    cdef int i
    if parts > 1:
        cbptt_blas_hold()
        parts = cbptt_team_run(parts, job_task, job)
        cbptt_blas_release()
    else:
        job_task(job, 0, 1)
        parts = 1
    if job.training:
        for i in range(1, parts):
            job.sq_norm_parts[0] += job.sq_norm_parts[i]
    return parts


# Calls whose parts would split the batch rows run as a split instead: one sub-engine per
# part, each with its own workspaces for its rows, runs them as a one-part call (training:
# forward, loss at the caller's whole-batch scale, BPTT; prediction: forward into its rows of
# the output), then in training the parts add the sub-engines' gradients up. One barrier a call, and no part touches what another writes: in
# one engine's time-major buffers the parts' rows of a step lie next to each other, and with
# the two cores on different dies each part's hardware prefetches of the other's lines cost
# it up to 2x (docs/DEVELOPMENT.md). The sum runs in sub-engine order, so a split call's
# gradients do not depend on how many threads ran it (a busy team: one, in turn).

cdef struct Split:
    Job* jobs            # one per sub-engine, in row order; jobs[0].grads is the caller's
    int count
    Py_ssize_t n_params
    bint is_double
    bint training        # else prediction: each sub-job writes its rows of the output, no sum
    double sq_norm_blocks[CBPTT_TEAM_MAX]   # the squared norm of each block of the sum


cdef void sum_block(Split* sp, int block, const floating* kind) noexcept nogil:
    """Block `block` (of sp.count) of the gradients: the sub-engines' sum, into jobs[0]'s."""
    cdef Py_ssize_t first, count, j
    cdef floating* total = <floating*>sp.jobs[0].grads
    cdef const floating* other
    cdef int i
    part_range(sp.n_params, block, sp.count, 16, &first, &count)
    for i in range(1, sp.count):
        other = <const floating*>sp.jobs[i].grads
        for j in range(first, first + count):
            total[j] += other[j]
    sp.sq_norm_blocks[block] = squared_norm(total + first, count)


cdef void split_task(void* context, int part, int parts) noexcept nogil:
    """A team task: part `part` runs sub-engines part, part + parts, ..., then (training)
    sums those blocks of the gradients."""
    cdef Split* sp = <Split*>context
    cdef int i = part
    while i < sp.count:
        job_task(&sp.jobs[i], 0, 1)
        i += parts
    if not sp.training:
        return
    barrier(parts)
    i = part
    while i < sp.count:
        if sp.is_double:
            sum_block(sp, i, <double*>NULL)
        else:
            sum_block(sp, i, <float*>NULL)
        i += parts


cdef inline bint splits_rows(const Shape* s, int parts) noexcept nogil:
    """Whether a call on `parts` threads runs as a split (its parts would split the batch rows)."""
    return split_enabled and parts > 1 and not split_columns(s, parts)


cdef int run_split(Split* sp, int parts) noexcept nogil:
    """Run a split on `parts` threads (or alone if the team is busy); returns how many ran."""
    cbptt_blas_hold()
    parts = cbptt_team_run(parts, split_task, sp)
    cbptt_blas_release()
    return parts


cdef int team_parts(const Shape* s, bint flow) noexcept nogil:
    """How many parts to split a call into: BLAS's thread count, capped by max_parts and by
    the batch (parts split the batch rows), when the call qualifies (see set_team); 1 without
    BLAS thread control (each part's BLAS calls would start threads of their own) or
    when the flow is recorded."""
    cdef int threads
    cdef double step_flops = 2.0 * s.batch * s.hidden_size * s.gates * s.hidden_size
    if (set_local_threads == NULL or get_blas_threads == NULL or max_parts <= 1 or flow or
            s.batch < team_min_batch or
            (step_flops < team_min_flops and step_flops * s.steps < team_min_call_flops)):
        return 1
    threads = max_parts if exact_parts else min(cbptt_blas_threads(), max_parts)
    return max(1, min(threads, s.batch))


cdef inline void* moved(void* data, Py_ssize_t offset_bytes) noexcept nogil:
    return NULL if data == NULL else <char*>data + offset_bytes


cdef inline void block_states(const States* st, States* block,
                              Py_ssize_t offset_bytes) noexcept nogil:
    """block = st with each state pointer moved offset_bytes into its layers' (B, H) blocks (a
    split's block of rows); layer_stride stays the caller's B*H."""
    block[0] = st[0]
    block.h0 = moved(st.h0, offset_bytes)
    block.c0 = moved(st.c0, offset_bytes)
    block.dh0 = moved(st.dh0, offset_bytes)
    block.dc0 = moved(st.dc0, offset_bytes)
    block.h_final = moved(st.h_final, offset_bytes)
    block.c_final = moved(st.c_final, offset_bytes)


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
    if not cnp.PyArray_ISWRITEABLE(a) and name in ("grads", "out", "dh0", "dc0", "h_final",
                                                   "c_final"):
        raise ValueError(f"{name}: must be writeable")
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
    cdef readonly double grad_sq_norm
    cdef readonly double loss_terms
    cdef readonly int last_parts   # threads the last call ran on (see team_parts)
    cdef unsigned last_path_flags  # the kernel paths the last call ran (_paths.h)
    cdef dict buffers
    cdef dict sizes                # the buffers' sizes, allocated at the first call that uses them
    cdef tuple config              # the arguments sub-engines are made with (see _split)
    cdef dict splits               # parts -> ([(row0, rows, sub-engine)], [gradient buffers])
    cdef int last_split            # sub-engines of the last call (0: it ran on this engine's)
    cdef Py_ssize_t n_params

    def __init__(self, str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                 Py_ssize_t hidden_size, Py_ssize_t output_size, Py_ssize_t batch,
                 Py_ssize_t steps, dtype, bint many_to_one=False, str loss="mse",
                 Py_ssize_t loss_start=0, bint training=True, *, Py_ssize_t chunk_steps=0):
        """chunk_steps: steps per chunk of the backward pass (0: from the shape, see
        set_chunking; a split's sub-engines take their parent's, so that their chunk buffers
        hold the parent's rows between them)."""
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
        self.shape.step_threads_one = (2 * batch * hidden_size * self.shape.gates * hidden_size
                                       < STEP_THREADS_FLOPS)
        self.training = training
        self.n_params = param_count(cell, num_layers, input_size, hidden_size, output_size)
        self.config = (cell, num_layers, input_size, hidden_size, output_size, steps,
                       self.dtype, many_to_one, loss, loss_start)
        self.splits = {}

        cdef Py_ssize_t B = batch, T = steps, H = hidden_size, L = num_layers
        cdef Py_ssize_t GH = self.shape.gates * H
        cdef Py_ssize_t out_rows = output_steps(&self.shape) * B
        cdef int c = self.shape.cell
        # Chunks of the backward pass: enough rows (steps x batch) for the per-chunk GEMMs
        # (Elman: 128 rows, at least 4 steps; its chunk buffers are what it keeps beyond its
        # one T*B*H tensor); for LSTM and GRU, whose chunk holds a sixth or a fifth of what one
        # step keeps, twice that and at least an eighth of the steps (fewer, larger chunks).
        self.shape.chunk_steps = min(T, max(chunk_min_steps, -(-chunk_rows // B)))
        # The first layer's input is copied time-major a chunk at a time for Elman, whose
        # backward floor is small; at once for LSTM and GRU (measured: chunks cost more time
        # than the 1-4 % of memory they save there).
        self.shape.input_steps = self.shape.chunk_steps
        if c == CELL_LSTM or c == CELL_GRU:
            self.shape.chunk_steps = min(T, max(2 * self.shape.chunk_steps, -(-T // 8)))
        if chunk_steps > 0:
            self.shape.chunk_steps = min(T, chunk_steps)
            self.shape.input_steps = self.shape.chunk_steps
        if c == CELL_LSTM or c == CELL_GRU:
            self.shape.input_steps = T if gated_input_whole else self.shape.chunk_steps
        # many-to-many training computes the head a chunk of steps at a time (backward)
        pred_rows = self.shape.chunk_steps * B if training and not many_to_one else out_rows
        sizes = {"x_chunk": self.shape.input_steps * B * input_size, "hs": L * (T + 1) * B * H,
                 "bias_sum": L * GH, "pred": pred_rows * output_size, "h_last": B * H}
        self.shape.panels = (panels_enabled and cbptt_panels_supported() and
                             <double>B * H * GH > panels_min_mnk)
        if self.shape.panels:
            width = CBPTT_PANEL_F32 if self.dtype == np.float32 else CBPTT_PANEL_F64
            sizes["panels"] = max(H * -(-GH // width) * width, GH * -(-H // width) * width)
        elif <double>B * H * GH <= transposed_limit:
            sizes["w_hh_t"] = H * GH      # see step_gemm
        if c == CELL_LSTM or c == CELL_GRU:
            sizes["gates"] = L * T * B * GH
        if c == CELL_LSTM:
            sizes["cs"] = L * (T + 1) * B * H
        if c == CELL_GRU:
            sizes.update({"hn": L * T * B * H, "rec": B * GH})
        if training:
            # many-to-many: two chunks' dpred (backward alternates between them)
            sizes.update({"dpred": pred_rows * output_size * (1 if many_to_one else 2),
                          "dh": B * H, "ones": T * B, "dh_last": B * H})
            if L > 1:
                sizes["inject"] = T * B * H
            if not many_to_one or c == CELL_TANH or c == CELL_RELU:
                sizes["chunk"] = self.shape.chunk_steps * B * H
            if c == CELL_LSTM:
                sizes["dc"] = B * H
        # allocated by the first call that runs on this engine's own buffers (a training call
        # split between sub-engines needs none of them)
        self.sizes = sizes
        self.buffers = {"last_step": np.full(B, T - 1, dtype=np.int64)}
        memset(&self.work, 0, sizeof(Work))
        self.work.last_step = <int64_t*>cnp.PyArray_DATA(self.buffers["last_step"])

    cdef int _allocate(self) except -1:
        """The engine's own buffers, once."""
        if self.sizes is None:
            return 0
        self.buffers.update({name: np.zeros(size, dtype=self.dtype)
                             for name, size in self.sizes.items()})
        self.sizes = None
        if self.training:
            self.buffers["ones"][:] = 1
        cdef Work* w = &self.work
        w.x_chunk = self._ptr("x_chunk")
        w.hs = self._ptr("hs")
        w.gates = self._ptr("gates")
        w.cs = self._ptr("cs")
        w.hn = self._ptr("hn")
        w.rec = self._ptr("rec")
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
    def panels(self):
        """Whether the per-step products multiply by packed W_hh panels (_panels.h)."""
        return bool(self.shape.panels)

    @property
    def chunk_steps(self):
        """Steps per chunk of the backward pass."""
        return self.shape.chunk_steps

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
             loss, loss_start) = self.config
            engines = []
            row0 = 0
            for part in range(count):
                rows = self.shape.batch // count + (part < self.shape.batch % count)
                sub = Engine(cell, num_layers, input_size, hidden_size, output_size, rows,
                             steps, dtype, many_to_one=many_to_one, loss=loss,
                             loss_start=loss_start, training=self.training,
                             chunk_steps=self.shape.chunk_steps)
                sub._allocate()
                engines.append((row0, rows, sub))
                row0 += rows
            grads = [np.zeros(self.n_params, dtype=self.dtype)
                     for _ in range(count - 1 if self.training else 0)]
            self.splits[count] = (engines, grads)
        return self.splits[count]

    cdef int _states(self, States* st, h0, c0, dh0, dc0, h_final, c_final) except -1:
        cdef Py_ssize_t size = self.shape.num_layers * self.shape.batch * self.shape.hidden_size
        st.h0 = optional_data_of(h0, self.dtype, size, "h0")
        st.dh0 = optional_data_of(dh0, self.dtype, size, "dh0")
        st.h_final = optional_data_of(h_final, self.dtype, size, "h_final")
        st.c0 = st.dc0 = st.c_final = NULL
        st.layer_stride = self.shape.batch * self.shape.hidden_size
        st.flow = NULL
        if self.shape.cell == CELL_LSTM:
            st.c0 = optional_data_of(c0, self.dtype, size, "c0")
            st.dc0 = optional_data_of(dc0, self.dtype, size, "dc0")
            st.c_final = optional_data_of(c_final, self.dtype, size, "c_final")
        elif c0 is not None or dc0 is not None or c_final is not None:
            raise ValueError("c0, dc0 and c_final are for the lstm cell only")
        return 0

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
        job.w = &self.work
        job.st = st
        job.x = x
        job.params = params
        job.grads = out
        job.n_params = self.n_params
        job.is_double = self.dtype == np.float64
        job.training = training

    cdef int _run(self, Job* job, int parts):
        """Run the job on `parts` threads (team_parts); returns how many it used."""
        cdef int i
        with nogil:
            parts = run_job(job, parts)
        self.last_path_flags = 0
        for i in range(parts):
            self.last_path_flags |= job.paths_parts[i]
        return parts

    @property
    def last_paths(self):
        """The kernel paths the last call ran, as names (see _paths.h): "step_panels" or
        "step_blas" (the per-step products), "input_panels"/"input_blas" (the input
        projection), "wgrad_kernel"/"wgrad_blas"/"wgrad_transposed" (weight gradients),
        "chunk_grads" (GRU's per-chunk weight gradients)."""
        return path_names(self.last_path_flags)

    def loss_and_grad(self, x, target, params, grads, h0=None, dh0=None, h_final=None,
                      c0=None, dc0=None, c_final=None, weight=None, lengths=None, flow=None):
        """Forward, loss and BPTT. Writes grads (and dh0/dc0, h_final/c_final, flow); returns
        the loss. Afterwards ``grad_sq_norm`` holds the squared norm of grads, summed in
        double (NaN or Inf when a gradient is not finite), and ``loss_terms`` the number of
        terms the loss is the mean of (the total mask weight, times O for mse).

        x (B, T, I), params/grads (flat) and the optional (L, B, H) states: C-contiguous arrays
        of the engine's dtype. target: (B, T_out, O) floats for mse, (B, T_out) int64 class ids
        for cross_entropy (T_out = T - loss_start, or 1 for many-to-one), C-contiguous; weight
        (B, T_out) of the engine's dtype or None; lengths (B,) integers (many-to-one);
        flow (L, T) float64 receives the mean over the batch of ||dL/dh_t||.
        """
        if not self.training:
            raise RuntimeError("this Engine was built for prediction only")
        cdef const Shape* s = &self.shape
        cdef Py_ssize_t out_rows = s.batch * output_steps(s)
        cdef void* px = data_of(x, self.dtype, s.batch * s.steps * s.input_size, "x")
        cdef void* pt
        if s.loss == LOSS_MSE:
            pt = data_of(target, self.dtype, out_rows * s.output_size, "target")
        else:
            pt = data_of(target, np.int64, out_rows, "target")
        cdef void* pw = optional_data_of(weight, self.dtype, out_rows, "weight")
        cdef void* pp = data_of(params, self.dtype, self.n_params, "params")
        cdef void* pg = data_of(grads, self.dtype, self.n_params, "grads")
        cdef States st
        self._states(&st, h0, c0, dh0, dc0, h_final, c_final)
        st.flow = <double*>optional_data_of(flow, np.float64, s.num_layers * s.steps, "flow")
        self._set_lengths(lengths)
        cdef int parts = team_parts(s, st.flow != NULL)
        if splits_rows(s, parts):
            return self._run_split(parts, True, &st, px, pp, pg, pt, pw, lengths)
        self._allocate()
        self.last_split = 0
        cdef Job job
        self._job(&job, &st, px, pp, pg, True)
        job.target = pt
        job.weight = pw
        self.last_parts = self._run(&job, parts)
        self.grad_sq_norm = job.sq_norm_parts[0]
        self.loss_terms = job.terms
        return job.loss

    cdef double _run_split(self, int count, bint training, const States* st, void* px,
                           void* pp, void* out, void* pt, void* pw, lengths) except? -1:
        """A call as a split (see run_split): sub-engine i runs on its block of rows of x, of
        the (L, B, H) states and of out: training, with the target and weight rows, at the
        whole batch's loss scale, into its own gradient buffer (out for i = 0), returning the
        loss; prediction, writing its rows of out (returns 0)."""
        cdef const Shape* s = &self.shape
        cdef Py_ssize_t itemsize = self.dtype.itemsize, row0, rows, i
        cdef Py_ssize_t target_row = output_steps(s) * (
            s.output_size * itemsize if s.loss == LOSS_MSE else sizeof(int64_t))
        cdef Job jobs[CBPTT_TEAM_MAX]
        cdef States sub_states[CBPTT_TEAM_MAX]
        cdef Split split
        cdef Engine sub
        cdef double terms = 0, scale = 0, loss = 0, sq_norm = 0
        cdef int ran
        engines, grads = self._split(count)
        if lengths is not None:
            lengths = np.asarray(lengths)
        if training:
            scale = (loss_scale(s, <double*>pw, &terms) if itemsize == 8 else
                     loss_scale(s, <float*>pw, &terms))
        for i in range(count):
            row0, rows, sub = engines[i]
            sub._set_lengths(None if lengths is None else lengths[row0:row0 + rows])
            block_states(st, &sub_states[i], row0 * s.hidden_size * itemsize)
            if not training:
                sub._job(&jobs[i], &sub_states[i],
                         <char*>px + row0 * s.steps * s.input_size * itemsize, pp,
                         <char*>out + row0 * output_steps(s) * s.output_size * itemsize, False)
            else:
                sub._job(&jobs[i], &sub_states[i],
                         <char*>px + row0 * s.steps * s.input_size * itemsize, pp,
                         out if i == 0 else cnp.PyArray_DATA(grads[i - 1]), True)
                jobs[i].target = <char*>pt + row0 * target_row
                jobs[i].weight = (NULL if pw == NULL else
                                  <char*>pw + row0 * output_steps(s) * itemsize)
                jobs[i].scale = scale
                jobs[i].terms = terms
                jobs[i].given_scale = True
            sub.last_parts = 1
        split.jobs = jobs
        split.count = count
        split.n_params = self.n_params
        split.is_double = itemsize == 8
        split.training = training
        with nogil:
            ran = run_split(&split, count if split_threads <= 0 else min(split_threads, count))
        self.last_parts = ran
        self.last_split = count
        self.last_path_flags = 0
        for i in range(count):
            self.last_path_flags |= jobs[i].paths_parts[0]
        if not training:
            return 0
        for i in range(count):       # in row order: one result for any number of threads
            loss += jobs[i].loss
            sq_norm += split.sq_norm_blocks[i]
        self.grad_sq_norm = sq_norm
        self.loss_terms = terms
        return loss

    def predict(self, x, params, out, h0=None, h_final=None, c0=None, c_final=None,
                lengths=None):
        """Forward only: out (B, T - loss_start, O), or (B, O) for many-to-one."""
        if self.training and not self.shape.many_to_one:
            raise RuntimeError("a many-to-many Engine built for training keeps the head's "
                               "outputs of one chunk of steps only; predict with training=False")
        cdef const Shape* s = &self.shape
        cdef void* px = data_of(x, self.dtype, s.batch * s.steps * s.input_size, "x")
        cdef void* pp = data_of(params, self.dtype, self.n_params, "params")
        cdef void* po = data_of(out, self.dtype, output_steps(s) * s.batch * s.output_size, "out")
        cdef States st
        self._states(&st, h0, c0, None, None, h_final, c_final)
        self._set_lengths(lengths)
        cdef int parts = team_parts(s, False)
        if splits_rows(s, parts):
            self._run_split(parts, False, &st, px, pp, po, NULL, NULL, lengths)
            return
        self._allocate()
        self.last_split = 0
        cdef Job job
        self._job(&job, &st, px, pp, po, False)
        self.last_parts = self._run(&job, parts)

    def states(self):
        """Views of the hidden states of the last call: h (L, T+1, B, H) with h[:, 0] the
        initial state, and c likewise for lstm (None otherwise). Overwritten by the next call.
        After a split call (see run_split) copies, joined from the sub-engines'."""
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


cdef extern from "_vmath.h" nogil:
    int cbptt_all_finite_f32(const float* x, Py_ssize_t n)
    int cbptt_all_finite_f64(const double* x, Py_ssize_t n)


cdef bint float_buffer(object array, str caller, void** data, Py_ssize_t* count) except -1:
    """Data pointer and size of a C-contiguous float32/float64 array; True for float64."""
    cdef cnp.ndarray a = array
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{caller} needs a C-contiguous float32 or float64 array, got "
                        f"{a.dtype}")
    data[0] = cnp.PyArray_DATA(a)
    count[0] = a.size
    return a.dtype == np.float64


def all_finite(array):
    """Whether a C-contiguous float32/float64 array holds no NaN or Inf (no temporaries)."""
    cdef void* data
    cdef Py_ssize_t count
    cdef bint result, is_double = float_buffer(array, "all_finite", &data, &count)
    with nogil:
        if is_double:
            result = cbptt_all_finite_f64(<double*>data, count)
        else:
            result = cbptt_all_finite_f32(<float*>data, count)
    return result


def squared_norm_of(array):
    """Sum of squares of a C-contiguous float32/float64 array, accumulated in double."""
    cdef void* data
    cdef Py_ssize_t count
    cdef double result
    cdef bint is_double = float_buffer(array, "squared_norm_of", &data, &count)
    with nogil:
        if is_double:
            result = squared_norm(<double*>data, count)
        else:
            result = squared_norm(<float*>data, count)
    return result


def _activation(str name, array):
    """sigmoid or tanh of a C-contiguous float32/float64 array, in place, through the cell
    kernels' vectorised functions (_vmath.h): for tests."""
    cdef void* data
    cdef Py_ssize_t count
    cdef bint is_double = float_buffer(array, "_activation", &data, &count)
    if name not in ("sigmoid", "tanh"):
        raise ValueError(f"name must be 'sigmoid' or 'tanh', got {name!r}")
    with nogil:
        if is_double:
            if name == "sigmoid":
                v_sigmoid(<double*>data, <double*>NULL, <double*>data, count)
            else:
                v_tanh(<double*>data, <double*>NULL, <double*>data, count)
        elif name == "sigmoid":
            v_sigmoid(<float*>data, <float*>NULL, <float*>data, count)
        else:
            v_tanh(<float*>data, <float*>NULL, <float*>data, count)
    return array
