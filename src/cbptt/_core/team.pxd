# The team of threads (team.h) and BLAS's thread count (blas_threads.h), as the layers
# above use them.
#
# Every function of the layers above that takes (part, parts) runs in each part of a team at
# once, as part `part` of `parts` (1 part: the whole work, no synchronisation). The time loops
# split by batch rows: each part carries its own rows (independent sequences) through every
# step, so the loops need no barrier. Very large per-step products are split by columns
# instead (each part then repacks only its share of W_hh per step), at the price of two
# barriers per step. The hoisted GEMMs, which mix all rows and steps, are cut along their
# larger side, and the parts meet at barrier() before and after them. The split is static: a
# result depends on the number of parts (and the split chosen), never on timing.

cdef extern from "_core/blas_threads.h" nogil:
    ctypedef int (*cbptt_set_threads_fn)(int)
    ctypedef int (*cbptt_get_threads_fn)()
    void cbptt_blas_control(cbptt_set_threads_fn set, cbptt_get_threads_fn get)
    int cbptt_blas_controlled()
    int cbptt_blas_counted()
    void cbptt_blas_hold()
    void cbptt_blas_release()
    int cbptt_blas_threads()

cdef extern from "_core/team.h" nogil:
    enum: CBPTT_TEAM_MAX
    ctypedef void (*cbptt_team_task)(void* ctx, int part, int parts) noexcept nogil
    int cbptt_team_run(int parts, cbptt_team_task task, void* ctx)
    void cbptt_team_barrier(int parts)
    double cbptt_team_round_trip_ns(long rounds)
    void cbptt_team_set_spin(long barrier_ns, long job_ns)
    void cbptt_team_get_spin(long* barrier_ns, long* job_ns)
    void cbptt_team_sleeps(unsigned long long* barrier, unsigned long long* job)
    int cbptt_team_late_barrier(int parts, long delay_ns, int until_sleep)


cdef inline void part_range(Py_ssize_t total, int part, int parts, Py_ssize_t align,
                            Py_ssize_t* start, Py_ssize_t* count) noexcept nogil:
    """[start, start + count) of part's block of total items, blocks rounded up to align."""
    cdef Py_ssize_t chunk = (total + parts - 1) // parts
    chunk = (chunk + align - 1) // align * align
    start[0] = min(part * chunk, total)
    count[0] = min(start[0] + chunk, total) - start[0]


cdef inline void barrier(int parts) noexcept nogil:
    cbptt_team_barrier(parts)


cdef inline int enter_step_loop(bint one_thread) noexcept nogil:
    """Run the coming per-step products on one BLAS thread if one_thread (plan.step_threads_one)
    and BLAS can be held; returns whether it is held (pass it to leave_step_loop)."""
    if not cbptt_blas_controlled() or not one_thread:
        return 0
    cbptt_blas_hold()
    return 1


cdef inline void leave_step_loop(int held) noexcept nogil:
    if held:
        cbptt_blas_release()
