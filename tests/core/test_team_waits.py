"""How the team waits (_core/team.h): a part at a barrier and a helper between jobs spin for a
set time, then sleep (a futex or a condition variable). With both spins at 0 every wait sleeps:
the results stay bit-identical to the default spins' and the sleep counters rise; the spins
are set and read through _engine.team_spin_ns, checked."""
import time

import numpy as np
import pytest

from cbptt import _engine

from helpers import CELLS, engine_grads, set_parts

pytestmark = pytest.mark.skipif(not _engine.team_available(),
                                reason="SciPy's BLAS has no per-thread thread control")


@pytest.fixture
def spins():
    """Set the team's spins for the test; the previous ones come back after it."""
    previous = _engine.team_spin_ns()
    yield _engine.team_spin_ns
    _engine.team_spin_ns(*previous)


def _call(cell, split, parts, dtype):
    set_parts(parts, split)
    got = engine_grads(cell, 2, 6, dtype, hidden=12)
    assert got["parts"] == parts
    return got


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("split", ["rows", "shared", "columns"])
@pytest.mark.parametrize("cell", CELLS)
def test_sleeping_waits_give_the_spinning_waits_results_bit_for_bit(spins, cell, split, parts, dtype):
    spinning = _call(cell, split, parts, dtype)
    spins(0, 0)
    sleeping = _call(cell, split, parts, dtype)
    for key in ("grads", "dh0", "h_final"):
        np.testing.assert_array_equal(sleeping[key], spinning[key], err_msg=key)
    assert sleeping["loss"] == spinning["loss"]
    assert sleeping["sq_norm"] == spinning["sq_norm"]
    assert np.abs(sleeping["grads"]).max() > 0


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("spin", [0, 20_000])
def test_a_part_waiting_past_its_spin_sleeps_at_the_barrier_and_is_woken(spins, spin, parts):
    # the other parts arrive only once part 0 sleeps (1 s at most): it cannot spin them out
    spins(barrier=spin)
    before = _engine.team_sleeps()[0]
    assert _engine._team_late_barrier(parts, 1.0) == parts
    assert _engine.team_sleeps()[0] > before


def test_a_part_whose_partner_comes_within_its_spin_does_not_sleep(spins):
    spins(barrier=10 ** 10)                     # 10 s: the partner comes after 1 ms
    before = _engine.team_sleeps()[0]
    assert _engine._team_late_barrier(2, 0.001) == 2
    assert _engine.team_sleeps()[0] == before


def test_a_helper_without_job_spin_sleeps_between_jobs(spins):
    spins(job=0)
    _engine._team_late_barrier(2, 0.0)          # wakes the helper if it slept already
    before = _engine.team_sleeps()[1]
    _engine._team_late_barrier(2, 0.0)
    deadline = time.monotonic() + 5.0           # the helper gets to its sleep after the job
    while _engine.team_sleeps()[1] == before and time.monotonic() < deadline:
        time.sleep(0.001)
    assert _engine.team_sleeps()[1] > before


def test_the_spins_are_set_and_returned(spins):
    default = _engine.team_spin_ns()
    assert all(isinstance(ns, int) and ns > 0 for ns in default)
    assert spins(1234) == default
    assert spins(job=5678) == (1234, default[1])
    assert spins() == (1234, 5678)
    assert _engine.team_spin_ns() == (1234, 5678)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
@pytest.mark.parametrize("which", ["barrier", "job"])
def test_a_bad_spin_is_refused_and_nothing_changes(spins, which, bad):
    before = _engine.team_spin_ns()
    with pytest.raises(ValueError, match=which):
        _engine.team_spin_ns(**{which: bad})
    assert _engine.team_spin_ns() == before


def test_after_a_wait_longer_than_its_spin_a_barrier_spins_an_eighth_until_a_wait_is_shorter(spins):
    # spin 240 ms, an eighth 30 ms; the other part comes after 600 or 120 ms: 90 ms or more
    # from every limit
    spins(barrier=240_000_000)
    sleeps = _engine.team_sleeps
    before = sleeps()[0]
    _engine._team_late_barrier(2, 0.6, False)   # longer than the whole spin: sleeps
    assert sleeps()[0] == before + 1
    _engine._team_late_barrier(2, 0.12, False)  # the short spin: sleeps, but the wait was
    assert sleeps()[0] == before + 2            # shorter than the whole spin
    _engine._team_late_barrier(2, 0.12, False)  # so the whole spin again: no sleep
    assert sleeps()[0] == before + 2


def test_after_a_gap_longer_than_its_spin_a_helper_spins_an_eighth_until_a_gap_is_shorter(spins):
    # every helper of the process waits for each job (those a job leaves out too), so each
    # gap adds the same number of sleeps, one per helper, or none
    spins(job=240_000_000)                      # an eighth: 30 ms
    sleeps = _engine.team_sleeps
    _engine._team_late_barrier(2, 0.0)
    added = []
    for gap in (0.6, 0.12, 0.12):
        before = sleeps()[1]
        time.sleep(gap)                         # the helpers wait for the next job
        _engine._team_late_barrier(2, 0.0)      # which they take: their sleeps counted
        added.append(sleeps()[1] - before)
    # longer than the whole spin: they sleep; the short spin: they sleep again, but the gap
    # was shorter than the whole spin; so the whole spin again: no sleep
    assert added[0] >= 1
    assert added == [added[0], added[0], 0]
