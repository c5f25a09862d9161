"""The engine's team of threads (_core/team.h): an Engine call split over 2, 3 or 4 threads (by
batch rows on sub-engines or on shared buffers, or by columns between barriers) computes what
one thread computes, checked against the independent NumPy reference too; the team in a
forked child; the round trip between two of its threads. (Trainers and models on the team:
tests/api/test_team_trainers.py.)"""
import multiprocessing
import os

import numpy as np
import pytest

from cbptt import _engine

from helpers import CELLS, engine_grads, scipy_blas_threads
from reference import loss_and_grad as reference_loss_and_grad

pytestmark = pytest.mark.skipif(not _engine.team_available(),
                                reason="SciPy's BLAS has no per-thread thread control")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("batch", [3, 8])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("split", ["rows", "shared", "columns"])
def test_a_split_call_computes_what_one_thread_computes(team, split, cell, layers, many_to_one,
                                                        batch, parts, dtype):
    lengths = np.arange(batch) % 6 + 1 if many_to_one else None
    team(1)
    alone = engine_grads(cell, layers, batch, dtype, many_to_one, lengths)
    assert alone["parts"] == 1
    team(parts, split)
    split = engine_grads(cell, layers, batch, dtype, many_to_one, lengths)
    assert split["parts"] == min(parts, batch)
    tol = 1e-13 if dtype == np.float64 else 1e-6
    for key in ("grads", "dh0", "h_final"):
        np.testing.assert_allclose(split[key], alone[key], rtol=tol, atol=tol, err_msg=key)
    assert split["loss"] == pytest.approx(alone["loss"], rel=tol)
    assert split["sq_norm"] == pytest.approx(alone["sq_norm"], rel=10 * tol)
    assert np.abs(split["grads"]).max() > 0


@pytest.mark.parametrize("split", ["rows", "shared", "columns"])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_a_split_call_matches_the_numpy_reference(team, cell, split):
    team(2, split)
    got = engine_grads(cell, 2, 5, np.float64)
    assert got["parts"] == 2
    model = got["model"]
    params = model.state_dict()
    _, want = reference_loss_and_grad(
        dict(params), got["X"], got["Y"], cell=cell, num_layers=2,
        mode="many_to_many", loss="mse", h0=got["h0"])
    flat = np.concatenate([np.ravel(want[name]) for name, _, _ in
                           _engine.param_layout(cell, 2, 3, 10, 2)])
    np.testing.assert_allclose(got["grads"], flat, rtol=1e-9, atol=1e-12)


def _step_in_child(queue):
    try:
        got = engine_grads("lstm", 1, 6, np.float64)
        queue.put((got["parts"], got["grads"]))
    except BaseException as error:      # pragma: no cover - reported to the parent
        queue.put((None, repr(error)))


def test_the_team_works_in_a_forked_child(team):
    team(2)
    parent = engine_grads("lstm", 1, 6, np.float64)      # the parent's helpers exist now
    assert parent["parts"] == 2
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(queue,))
    child.start()
    parts, grads = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert parts == 2, grads
    np.testing.assert_allclose(grads, parent["grads"], rtol=1e-13)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a round trip between two threads on "
                    "one CPU takes a scheduler time slice")
def test_the_core_round_trip_is_measured_between_two_threads():
    # a cache line passed between the caller and a helper: tens of ns to a few microseconds
    # on any real pair of cores
    before = scipy_blas_threads()
    ns = _engine.core_round_trip_ns(2000)
    assert ns is not None and 5 < ns < 1e5
    # the helper held BLAS at one thread, process-wide in SciPy's OpenBLAS: the count is back
    # (it once stayed at 1, and every later call then ran on one part)
    assert scipy_blas_threads() == before
    with pytest.raises(ValueError, match="rounds"):
        _engine.core_round_trip_ns(0)
