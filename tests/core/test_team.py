"""The engine's team of threads (_team.h): a call split over 2, 3 or 4 threads computes what
one thread computes, checked against the independent NumPy reference too; busy teams, forks
and recorded flows fall back to one thread."""
import multiprocessing
import os
import threading

import numpy as np
import pytest

import cbptt
from cbptt import _engine

from reference import loss_and_grad as reference_loss_and_grad

pytestmark = pytest.mark.skipif(not _engine.team_available(),
                                reason="SciPy's BLAS has no per-thread thread control")


def set_parts(parts, split="rows"):
    """Every qualifying call on exactly `parts` threads, splitting the per-step products by
    batch rows ("rows": training on one sub-engine per part; "shared": on the engine's own
    buffers) or by columns."""
    _engine.set_split(split == "rows")
    _engine.set_team(parts, min_flops=0, min_batch=2, exact=True,
                     column_flops=0 if split == "columns" else float("inf"))


@pytest.fixture
def team():
    """Set the team for a test (see set_parts)."""
    previous, previous_split = _engine.set_team(), _engine.set_split()
    yield set_parts
    _engine.set_team(**previous)
    _engine.set_split(*previous_split)


def engine_grads(cell, layers, batch, dtype, many_to_one=False, lengths=None, seed=0,
                 hidden=10):
    """One loss_and_grad call of a fresh Engine on random data (also used by test_panels)."""
    rng = np.random.default_rng(seed)
    steps, inputs, outputs = 6, 3, 2
    model = cbptt.RNN(inputs, hidden, outputs, cell=cell, num_layers=layers, seed=seed,
                      dtype=dtype)
    X = rng.standard_normal((batch, steps, inputs)).astype(dtype)
    Y = rng.standard_normal((batch, outputs) if many_to_one else
                            (batch, steps, outputs)).astype(dtype)
    h0 = rng.standard_normal((layers, batch, hidden)).astype(dtype)
    engine = _engine.Engine(cell, layers, inputs, hidden, outputs, batch, steps, dtype,
                            many_to_one=many_to_one)
    grads = np.zeros_like(model.params)
    dh0 = np.zeros_like(h0)
    h_final = np.zeros_like(h0)
    loss = engine.loss_and_grad(X, Y, model.params, grads, h0=h0, dh0=dh0, h_final=h_final,
                                lengths=lengths)
    return dict(loss=loss, grads=grads, dh0=dh0, h_final=h_final,
                sq_norm=engine.grad_sq_norm, parts=engine.last_parts, model=model, X=X, Y=Y,
                h0=h0, engine=engine)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("batch", [3, 8])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["tanh", "relu", "lstm", "gru"])
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


@pytest.mark.parametrize("split", ["rows", "shared", "columns"])
@pytest.mark.parametrize("trainer", ["many-to-many", "many-to-one", "truncated"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_on_the_team_follows_the_same_path(team, trainer, dtype, split):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 40, 4)).astype(dtype)
    Y = rng.standard_normal((6, 4) if trainer == "many-to-one" else (6, 40, 4)).astype(dtype)
    weights = []
    for parts in (1, 2):
        team(parts, split)
        model = cbptt.RNN(4, 16, 4, cell="lstm", seed=0, dtype=dtype)
        optimizer = cbptt.Adam(lr=1e-2)
        if trainer == "many-to-many":
            fit = cbptt.ManyToMany(model, optimizer=optimizer, clip_norm=1.0)
        elif trainer == "many-to-one":
            fit = cbptt.ManyToOne(model, optimizer=optimizer, clip_norm=1.0)
        else:
            fit = cbptt.Truncated(model, k1=7, k2=12, optimizer=optimizer, clip_norm=1.0)
        for _ in range(5):
            fit.step(X, Y)
        weights.append(model.params.copy())
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(weights[1], weights[0], rtol=tol, atol=tol)
    assert not np.array_equal(weights[0], cbptt.RNN(4, 16, 4, cell="lstm", seed=0,
                                                    dtype=dtype).params)


def test_prediction_on_the_team_equals_one_thread(team):
    model = cbptt.RNN(3, 12, 2, cell="gru", num_layers=2, seed=1)
    X = np.random.default_rng(0).standard_normal((7, 9, 3))
    team(1)
    alone = model.predict(X)
    for split in ("rows", "shared", "columns"):
        team(3, split)
        np.testing.assert_allclose(model.predict(X), alone, rtol=1e-13, atol=1e-14)
        assert model._predict_engine.last_parts == 3


def test_recording_the_flow_runs_on_one_thread(team):
    team(2)
    model = cbptt.RNN(3, 12, 2, cell="tanh", seed=1)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6, 9, 3)), rng.standard_normal((6, 9, 2))
    trainer = cbptt.ManyToMany(model)
    trainer.loss_and_grad(X, Y, return_flow=True)
    assert trainer._last_engine.last_parts == 1
    trainer = cbptt.ManyToMany(cbptt.RNN(3, 12, 2, cell="tanh", seed=1))
    trainer.step(X, Y)
    assert trainer._last_engine.last_parts == 2


def test_small_calls_and_the_default_settings_choose_one_thread():
    previous = _engine.set_team()
    try:
        rng = np.random.default_rng(0)
        model = cbptt.RNN(3, 8, 2, seed=0)                # per-step product: 2*16*8*8 FLOPs
        trainer = cbptt.ManyToMany(model)
        trainer.step(rng.standard_normal((16, 5, 3)), rng.standard_normal((16, 5, 2)))
        assert trainer._last_engine.last_parts == 1
        _engine.set_team(1)
        model = cbptt.RNN(3, 128, 2, cell="lstm", seed=0)
        trainer = cbptt.ManyToMany(model)
        trainer.step(rng.standard_normal((16, 5, 3)), rng.standard_normal((16, 5, 2)))
        assert trainer._last_engine.last_parts == 1
    finally:
        _engine.set_team(**previous)


def test_the_default_settings_let_small_batches_with_long_sequences_use_the_team():
    """Two rows qualify when their per-step products over all steps reach 0.5M FLOPs
    (from there on a split measured even or faster with the cores near or far apart,
    docs/DEVELOPMENT.md); a tiny call stays on one thread."""
    if scipy_blas_threads() < 2:
        pytest.skip("BLAS runs on one thread here")
    previous = _engine.set_team()
    try:
        rng = np.random.default_rng(0)
        for steps, hidden, parts in ((200, 32, 2), (10, 32, 1)):   # 2.5M, 0.12M FLOPs
            trainer = cbptt.ManyToMany(cbptt.RNN(3, hidden, 2, cell="gru", seed=0))
            trainer.step(rng.standard_normal((2, steps, 3)),
                         rng.standard_normal((2, steps, 2)))
            assert trainer._last_engine.last_parts == parts, (steps, hidden)
    finally:
        _engine.set_team(**previous)


def test_a_busy_team_makes_the_second_caller_run_alone(team):
    """Two trainers in two threads: one holds the team, the other runs on one thread; both
    end where sequential runs end, bit for bit (a split's sub-engines, and the order their
    gradients are summed in, do not depend on the threads that run them)."""
    team(2)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 50, 4)), rng.standard_normal((8, 50, 3))

    def make(seed):
        return cbptt.ManyToMany(cbptt.RNN(4, 32, 3, cell="lstm", seed=seed))

    sequential = [make(0), make(1)]
    for trainer in sequential:
        for _ in range(30):
            trainer.step(X, Y)
    threaded = [make(0), make(1)]
    parts_seen = [set(), set()]

    def run(index):
        for _ in range(30):
            threaded[index].step(X, Y)
            parts_seen[index].add(threaded[index]._last_engine.last_parts)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, threaded):
        np.testing.assert_array_equal(b.model.params, a.model.params)
    assert parts_seen[0] | parts_seen[1] <= {1, 2}


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


def scipy_blas_threads():
    """SciPy's OpenBLAS thread count, read through the getter the engine uses."""
    import ctypes
    from cbptt._threads import find_thread_control
    getter = find_thread_control()[1]
    return ctypes.CFUNCTYPE(ctypes.c_int)(getter)()


def test_concurrent_trainers_leave_the_blas_thread_count_as_they_found_it(team):
    """openblas_set_num_threads_local sets the count of the whole process in SciPy's OpenBLAS:
    two trainers saving and restoring it around their calls in two threads used to leave it
    at 1 now and then, and every later call then ran alone (a different split, so different
    rounding: a fixed-seed training run gave another result after it)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 30, 8))
    Y = rng.normal(size=(16, 30, 4))
    before = scipy_blas_threads()
    if before < 2:
        pytest.skip("BLAS runs on one thread here: nothing to lose")
    _engine.set_team(2, min_flops=0, min_batch=2)     # BLAS's count decides the parts
    for _ in range(15):
        trainers = [cbptt.ManyToMany(cbptt.RNN(8, 32, 4, cell="lstm", seed=s))
                    for s in range(3)]
        threads = [threading.Thread(target=lambda t=t: [t.step(X, Y) for _ in range(5)])
                   for t in trainers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert scipy_blas_threads() == before
    probe = cbptt.ManyToMany(cbptt.RNN(8, 32, 4, cell="lstm", seed=0))
    probe.step(X, Y)
    assert probe._last_engine.last_parts == 2


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
