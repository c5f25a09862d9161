# A call as a split: one sub-engine per part, each on its own block of the batch rows.
#
# Calls whose parts would split the batch rows run as a split instead (plan.pxd's
# runs_as_split): one sub-engine per part, each with its own workspaces for its rows, runs
# them as a one-part call (training: forward, loss at the caller's whole-batch scale, BPTT;
# prediction: forward into its rows of the output), then in training the parts add the
# sub-engines' gradients up. One barrier a call, and no part touches what another writes: in
# one engine's time-major buffers the parts' rows of a step lie next to each other, and with
# the two cores on different dies each part's hardware prefetches of the other's lines cost
# it up to 2x (docs/DEVELOPMENT.md). The sum runs in sub-engine order, so a split call's
# gradients do not depend on how many threads ran it (a busy team: one, in turn).

from cython cimport floating
from libc.stdint cimport int64_t

from .jobs cimport Job, job_task
from .norms cimport squared_norm
from .shape cimport LOSS_MSE, Shape, States, output_steps
from .team cimport (CBPTT_TEAM_MAX, barrier, cbptt_blas_hold, cbptt_blas_release,
                    cbptt_team_run, part_range)


cdef struct Split:
    Job* jobs            # one per sub-engine, in row order; jobs[0].out is the caller's
    int count
    Py_ssize_t n_params
    bint is_double
    bint training        # sum the sub-engines' gradients (a training call, but not an encoder's
                         # forward phase); else each sub-job writes its rows of the output
    double sq_norm_blocks[CBPTT_TEAM_MAX]   # the squared norm of each block of the sum


cdef inline void sum_block(Split* sp, int block, const floating* kind) noexcept nogil:
    """Block `block` (of sp.count) of the gradients: the sub-engines' sum, into jobs[0]'s."""
    cdef Py_ssize_t first, count, j
    cdef floating* total = <floating*>sp.jobs[0].out
    cdef const floating* other
    cdef int i
    part_range(sp.n_params, block, sp.count, 16, &first, &count)
    for i in range(1, sp.count):
        other = <const floating*>sp.jobs[i].out
        for j in range(first, first + count):
            total[j] += other[j]
    sp.sq_norm_blocks[block] = squared_norm(total + first, count)


cdef inline void split_task(void* context, int part, int parts) noexcept nogil:
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


cdef inline int run_split(Split* sp, int parts) noexcept nogil:
    """Run a split on `parts` threads (or alone if the team is busy); returns how many ran."""
    cbptt_blas_hold()
    parts = cbptt_team_run(parts, split_task, sp)
    cbptt_blas_release()
    return parts


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
    block.dh_final = moved(st.dh_final, offset_bytes)
    block.dc_final = moved(st.dc_final, offset_bytes)


cdef inline void rows_of_call(Job* job, const Job* whole, States* block, Py_ssize_t row0,
                              void* grads) noexcept nogil:
    """job (a sub-engine's: its shape, plan and workspaces) = whole's call on the batch rows
    from row0 on: its rows of x and of the (L, B, H) states (in block); training: of the target
    and weight, at whole's loss scale, into grads (NULL: whole's own gradient buffer);
    prediction: its rows of whole's outputs."""
    cdef const Shape* s = whole.s
    cdef Py_ssize_t itemsize = sizeof(double) if whole.is_double else sizeof(float)
    cdef Py_ssize_t steps_out = output_steps(s)
    block_states(whole.st, block, row0 * s.hidden_size * itemsize)
    block.drop.row0 = whole.st.drop.row0 + row0     # its rows' masks are the caller's
    block.dx = moved(whole.st.dx, row0 * s.steps * s.input_size * itemsize)
    block.dh_steps = moved(whole.st.dh_steps, row0 * s.steps * s.hidden_size * itemsize)
    job.st = block
    job.x = <const char*>whole.x + row0 * s.steps * (
        sizeof(int64_t) if s.ids else s.input_size * itemsize)
    job.params = whole.params
    job.phase = whole.phase
    if not whole.training:
        job.out = NULL if whole.out == NULL else <char*>whole.out + row0 * steps_out * s.output_size * itemsize
        return
    job.out = whole.out if grads == NULL else grads
    job.target = NULL if whole.target == NULL else <const char*>whole.target + \
        row0 * steps_out * (s.output_size * itemsize if s.loss == LOSS_MSE else sizeof(int64_t))
    job.weight = (NULL if whole.weight == NULL else
                  <const char*>whole.weight + row0 * steps_out * itemsize)
    job.scale = whole.scale
    job.terms = whole.terms
    job.given_scale = True
