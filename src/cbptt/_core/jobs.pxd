# One call as a job that the parts of a team run together (team.h): training (forward,
# the loss, BPTT, each part's share of the gradient's squared norm) or prediction (forward
# into the outputs, batch-first).
#
# Contract: run_job(job, parts) runs job_task in `parts` threads (or alone if the team is
# busy) with BLAS on one thread per part, and returns how many parts ran; the job's loss,
# out, states and sq_norm_parts[0] (training) are complete on return.

from cython cimport floating
from libc.string cimport memcpy, memset

from .backward cimport backward
from .forward cimport forward
from .head cimport loss_scale, output_loss
from .norms cimport squared_norm
from .paths cimport cbptt_paths_take
from .plan cimport Plan
from .shape cimport CELL_LSTM, Shape, States, Work, has_head, layer_offset, output_steps
from .team cimport (CBPTT_TEAM_MAX, barrier, cbptt_blas_hold, cbptt_blas_release,
                    cbptt_team_run, part_range)


cdef inline void copy_final_state(const Shape* s, Work* w, const States* st,
                                  floating* kind) noexcept nogil:
    """h_final, c_final (L, B, H) of every layer (where asked for): h_T, c_T; a headless
    engine's (an encoder's) each row's after its own last step, h_{last_step[b] + 1}."""
    cdef Py_ssize_t B = s.batch, H = s.hidden_size, BH = B * H, T = s.steps, layer, b, t
    cdef bint per_row = not has_head(s)
    for layer in range(s.num_layers):
        for b in range(B if per_row else 1):
            t = w.last_step[b] + 1 if per_row else T
            if st.h_final != NULL:
                memcpy(<floating*>st.h_final + layer * st.layer_stride + b * H,
                       <floating*>w.hs + (layer * (T + 1) + t) * BH + b * H,
                       (H if per_row else BH) * sizeof(floating))
            if st.c_final != NULL and s.cell == CELL_LSTM:
                memcpy(<floating*>st.c_final + layer * st.layer_stride + b * H,
                       <floating*>w.cs + (layer * (T + 1) + t) * BH + b * H,
                       (H if per_row else BH) * sizeof(floating))


cdef enum:
    PHASE_WHOLE = 0
    PHASE_FORWARD = 1
    PHASE_BACKWARD = 2


cdef struct Job:
    const Shape* s
    const Plan* p
    Work* w
    const States* st
    const void* x
    const void* target
    const void* weight
    const void* params
    void* out            # training: the gradients (flat); prediction: the outputs
    Py_ssize_t n_params
    bint is_double
    bint training
    int phase            # training: PHASE_WHOLE, or an encoder's call in two (PHASE_FORWARD
                         # keeps the activations and writes the final state; PHASE_BACKWARD
                         # then runs BPTT from st.dh_final on them)
    double loss
    double terms
    double scale         # what the summed loss is multiplied by (see loss_scale)
    bint fixed_scale     # scale and terms given by the caller (a segment of a longer
                         # sequence: the loss is the whole's mean)
    bint given_scale     # a split's sub-job: scale and terms are the caller's (its whole
                         # batch's), and the squared norm is taken after the sum (split_task)
    double sq_norm_parts[CBPTT_TEAM_MAX]   # each part's share of the gradient's squared norm
    double loss_parts[CBPTT_TEAM_MAX]      # many-to-many: each part's share of the loss
    unsigned paths_parts[CBPTT_TEAM_MAX]   # the kernel paths each part ran (paths.h)


cdef inline void train_step(Job* job, const floating* kind, int part,
                            int parts) noexcept nogil:
    cdef const Shape* s = job.s
    cdef floating* grads = <floating*>job.out
    cdef const floating* weight = <const floating*>job.weight
    cdef Py_ssize_t first, count
    cdef double loss
    cdef int other
    if job.phase != PHASE_BACKWARD:
        forward(s, job.p, job.w, <const floating*>job.x, <const floating*>job.params, job.st,
                s.many_to_one and has_head(s), part, parts)
    if job.phase == PHASE_FORWARD:
        if part == 0:    # the layers' last barrier passed: every row's states are complete
            copy_final_state(s, job.w, job.st, grads)
        return
    if part == 0 and not has_head(s):
        job.loss = 0      # an encoder: its gradient enters through st.dh_final, no loss
    elif part == 0:
        if not job.given_scale and not job.fixed_scale:
            job.scale = loss_scale(s, weight, &job.terms)
        if s.many_to_one:
            job.loss = output_loss(s, <floating*>job.w.pred, job.target, weight, job.scale, 0, 1,
                                  0, s.batch, <floating*>job.w.dpred)
        else:
            job.loss = 0   # the head's gradients accumulate chunk by chunk
            memset(grads + layer_offset(s, s.num_layers), 0,
                   s.output_size * (s.hidden_size + 1) * sizeof(floating))
    barrier(parts)
    loss = backward(s, job.p, job.w, <const floating*>job.x, <const floating*>job.params,
                    grads, job.st, job.target, weight, job.scale, part, parts)
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


cdef inline void predict_into(Job* job, const floating* kind, int part,
                              int parts) noexcept nogil:
    """out: (B, O) for many-to-one, else (B, T - loss_start, O) batch-first (headless: none,
    the final states only)."""
    cdef const Shape* s = job.s
    cdef Py_ssize_t B = s.batch, O = s.output_size, steps = output_steps(s), t, b
    cdef floating* out = <floating*>job.out
    forward(s, job.p, job.w, <const floating*>job.x, <const floating*>job.params, job.st,
            has_head(s), part, parts)
    if part != 0:
        return
    for t in range(steps):
        for b in range(B):
            memcpy(out + (b * steps + t) * O, <floating*>job.w.pred + (t * B + b) * O,
                   O * sizeof(floating))
    copy_final_state(s, job.w, job.st, out)


cdef inline void job_task(void* context, int part, int parts) noexcept nogil:
    """A team task (see team.h): part `part` of the job."""
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


cdef inline int run_job(Job* job, int parts) noexcept nogil:
    """Run the job on `parts` threads (the caller and parts - 1 helpers) or alone if the team
    is busy; returns the number of parts that ran. BLAS runs one thread per part meanwhile
    (and on one thread for a call alone under plan.one_blas_thread)."""
    cdef int i
    if parts > 1 or job.p.one_blas_thread:
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
