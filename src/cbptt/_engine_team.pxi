# BLAS's threads and cbptt's team of threads as Python sees them: included into _engine.pyx
# (textually, so that these functions reach the same team as the engine's calls: team.h's state
# is per compiled module).

def _use_local_thread_control(size_t set_address, size_t get_address=0):
    """Install OpenBLAS's openblas_set_num_threads_local and openblas_get_num_threads (their
    addresses; 0 turns the control off)."""
    cbptt_blas_control(<cbptt_set_threads_fn>set_address, <cbptt_get_threads_fn>get_address)


def local_thread_control():
    """Whether the engine can run the recurrent loop on one BLAS thread."""
    return bool(cbptt_blas_controlled())


def team_available():
    """Whether calls can be split over a team of threads (BLAS thread control found)."""
    return bool(cbptt_blas_counted())


def core_round_trip_ns(long rounds=20000):
    """Round trip in ns of a cache line between the team's first two threads (the caller and
    a helper): the median of 16 batches' means over `rounds` round trips in all; None when the
    team is busy or cannot start a helper. For benchmarks: where a host runs the two threads
    on cores far apart, 2-thread steps slow down (see _core/team.h)."""
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


def team_spin_ns(barrier=None, job=None):
    """The team's busy waits, in ns, before a part sleeps at a barrier and before a helper
    sleeps between jobs (_core/team.h; 0: sleep at once). Sets those given, for the whole
    process; returns the previous (barrier, job). Timing only: results never change."""
    cdef long old_barrier, old_job
    for name, value in (("barrier", barrier), ("job", job)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name}: expected None or an integer >= 0 (ns), got {value!r}")
    cbptt_team_get_spin(&old_barrier, &old_job)
    cbptt_team_set_spin(-1 if barrier is None else barrier, -1 if job is None else job)
    return old_barrier, old_job


def team_sleeps():
    """How many times a part of the team slept at a barrier, and a helper between jobs, since
    the process started (or forked): (barrier, job)."""
    cdef unsigned long long barrier, job
    cbptt_team_sleeps(&barrier, &job)
    return int(barrier), int(job)


def _team_late_barrier(int parts=2, double delay_s=1.0, bint until_sleep=True):
    """For tests: one team job whose part 0 waits at a barrier for the other parts, which come
    after delay_s, or, with until_sleep, as soon as a part sleeps there (delay_s at most)
    (_core/team.h); returns the parts it ran on."""
    cdef int ran
    cdef long delay_ns = <long>(delay_s * 1e9)
    with nogil:
        cbptt_blas_hold()       # the helpers ask BLAS for one thread, as in a training call
        ran = cbptt_team_late_barrier(parts, delay_ns, until_sleep)
        cbptt_blas_release()
    return ran
