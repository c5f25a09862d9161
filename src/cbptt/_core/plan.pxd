# The plan: every strategy decision of an engine, in one struct, filled once per engine from
# its shape and the settings in force (cbptt.settings, _settings.py), and again only when
# those change. The layers below it (products, team) take what they need of it as arguments;
# forward, backward and the jobs read it and never test a setting or a threshold themselves.

from .shape cimport Shape, CELL_LSTM, CELL_GRU
from .products cimport WgradRule, cbptt_panels_supported
from .team cimport CBPTT_TEAM_MAX, cbptt_blas_counted, cbptt_blas_threads

# Per-step products below this many FLOPs (2 B H G H) run on one BLAS thread.
cdef enum:
    STEP_THREADS_FLOPS = 1000000


cdef struct Plan:
    bint step_threads_one     # the per-step products on one BLAS thread (they are small)
    Py_ssize_t chunk_steps    # steps per chunk of the backward pass (see backward.pxd)
    Py_ssize_t input_steps    # steps per chunk of the first layer's input (w.x_chunk)
    bint panels               # per-step products on packed W_hh (w.panels, panels.h)
    bint w_hh_transposed      # without panels: W_hh^T kept (w.w_hh_t) for OpenBLAS's
                              # small-matrix path; else W_hh is used transposed
    bint panel_input          # with panels: the input projection on packed W_ih^T too
    WgradRule wgrad           # which weight gradients run on the panel kernel
    bint gru_chunk_grads      # GRU: weight gradients chunk by chunk (where its input is whole)
    bint team                 # calls qualify for the team of threads
    int max_parts             # at most this many parts (threads) a call
    bint exact_parts          # tests: max_parts exactly, whatever BLAS's thread count
    bint columns              # on a team: each step's products split by columns, not rows
    bint split                # on a team at a row split: one sub-engine per part
    int split_threads         # a split runs on at most this many threads (0: one a part)
    bint one_blas_thread      # a call alone holds BLAS at one thread too (concurrent callers)
    bint adaptive             # a split's threads chosen per call (thread_choice.py)


cdef inline int fill_plan(Plan* p, const Shape* s, object settings, Py_ssize_t itemsize,
                          bint training, Py_ssize_t chunk_steps) except -1:
    """p = the plan of an engine of shape s under settings (a _settings.Settings);
    chunk_steps > 0 fixes the backward's chunk (a split's sub-engines take their parent's)."""
    cdef Py_ssize_t B = s.batch, T = s.steps, H = s.hidden_size
    cdef Py_ssize_t GH = s.gate_count * H
    cdef bint gated = s.cell == CELL_LSTM or s.cell == CELL_GRU
    cdef double step_flops = 2.0 * B * H * GH
    cdef Py_ssize_t rows = max(1, settings.chunk_rows)
    cdef Py_ssize_t min_steps = max(1, settings.chunk_min_steps)
    # Chunks of the backward pass: enough rows (steps x batch) for the per-chunk GEMMs
    # (Elman: 128 rows, at least 4 steps; its chunk buffers are what it keeps beyond its
    # one T*B*H tensor); for LSTM and GRU, whose chunk holds a sixth or a fifth of what one
    # step keeps, twice that and at least an eighth of the steps (fewer, larger chunks).
    p.chunk_steps = min(T, max(min_steps, -(-rows // B)))
    # The first layer's input is copied time-major a chunk at a time for Elman, whose
    # backward floor is small; at once for LSTM and GRU (measured: chunks cost more time
    # than the 1-4 % of memory they save there).
    p.input_steps = p.chunk_steps
    if gated:
        p.chunk_steps = min(T, max(2 * p.chunk_steps, -(-T // 8)))
    if chunk_steps > 0:
        p.chunk_steps = min(T, chunk_steps)
        p.input_steps = p.chunk_steps
    if gated:
        p.input_steps = T if settings.whole_gated_input else p.chunk_steps
    p.step_threads_one = 2 * B * H * GH < STEP_THREADS_FLOPS
    # A one-step engine (a decoding step) neither packs nor transposes W_hh: either is a pass
    # over W_hh per call, as costly as the step's own product (measured, B=32 H=256, float32:
    # an LSTM step 290 us packed, 150 us on BLAS; tanh 76 against 29).
    p.panels = (settings.panels and cbptt_panels_supported() and T > 1 and
                <double>B * H * GH > settings.panels_min_mnk)
    p.w_hh_transposed = (not p.panels and T > 1 and
                         <double>B * H * GH <= settings.transposed_limit)
    p.panel_input = settings.panel_input
    p.wgrad.enabled = settings.wgrad and cbptt_panels_supported()
    p.wgrad.min_mnk = settings.wgrad_min_mnk
    p.wgrad.max_outputs = settings.wgrad_max_outputs
    p.gru_chunk_grads = (s.cell == CELL_GRU and
                         <double>T * B * GH * itemsize >= settings.gru_chunk_grads_bytes)
    p.max_parts = CBPTT_TEAM_MAX if settings.team is None else max(1, min(settings.team,
                                                                          CBPTT_TEAM_MAX))
    p.exact_parts = settings.team_exact
    p.one_blas_thread = settings.one_blas_thread
    p.adaptive = settings.adaptive and not settings.team_exact
    # the user's thread count: exactly that many parts, and with one, BLAS on one thread for
    # the whole call; no adapting
    if settings.threads is not None:
        p.max_parts = max(1, min(settings.threads, CBPTT_TEAM_MAX))
        p.exact_parts = True
        p.one_blas_thread = p.one_blas_thread or settings.threads == 1
        p.adaptive = False
    p.team = (p.max_parts > 1 and B >= max(2, settings.team_min_batch) and
              not (step_flops < settings.team_min_flops and
                   step_flops * T < settings.team_min_call_flops))
    p.columns = step_flops >= settings.team_column_flops
    p.split = settings.split
    p.split_threads = settings.split_threads
    return 0


cdef inline bint by_columns(const Plan* p, int parts) noexcept nogil:
    """Whether a call on `parts` threads splits its per-step products by columns rather than
    by batch rows: when they are so big that each part repacking all of W_hh per step (row
    split) costs more than two barriers per step."""
    return parts > 1 and p.columns


cdef inline bint runs_as_split(const Plan* p, int parts) noexcept nogil:
    """Whether a call on `parts` threads runs as a split (its parts would split the batch rows)."""
    return p.split and parts > 1 and not by_columns(p, parts)


cdef inline int call_parts(const Plan* p, Py_ssize_t batch, bint flow) noexcept nogil:
    """How many parts to split a call into: BLAS's thread count, capped by max_parts and by
    the batch (parts split the batch rows), when the call qualifies; 1 without BLAS thread
    control (each part's BLAS calls would start threads of their own) or when the flow is
    recorded."""
    cdef int threads
    if not cbptt_blas_counted() or not p.team or flow:
        return 1
    threads = p.max_parts if p.exact_parts else min(cbptt_blas_threads(), p.max_parts)
    return max(1, min(threads, batch))
