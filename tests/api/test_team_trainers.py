"""Trainers and models on the engine's team of threads (_core/team.h; the Engine's splits:
tests/core/test_team.py, test_split.py): training and prediction follow one thread's path,
recorded flows and small calls run on one thread and the default settings pick the team for
what measured faster on it; a busy team makes a second caller run alone, and concurrent
trainers leave BLAS's thread count as they found it."""
import threading

import numpy as np
import pytest

import cbptt
from cbptt import _engine

from helpers import scipy_blas_threads, set_parts

pytestmark = pytest.mark.skipif(not _engine.team_available(),
                                reason="SciPy's BLAS has no per-thread thread control")


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
    rng = np.random.default_rng(0)
    model = cbptt.RNN(3, 8, 2, seed=0)                # per-step product: 2*16*8*8 FLOPs
    trainer = cbptt.ManyToMany(model)
    trainer.step(rng.standard_normal((16, 5, 3)), rng.standard_normal((16, 5, 2)))
    assert trainer._last_engine.last_parts == 1
    cbptt.set_settings(team=1)
    model = cbptt.RNN(3, 128, 2, cell="lstm", seed=0)
    trainer = cbptt.ManyToMany(model)
    trainer.step(rng.standard_normal((16, 5, 3)), rng.standard_normal((16, 5, 2)))
    assert trainer._last_engine.last_parts == 1


def test_the_default_settings_let_small_batches_with_long_sequences_use_the_team():
    """Two rows qualify when their per-step products over all steps reach 0.5M FLOPs
    (from there on a split measured even or faster with the cores near or far apart,
    docs/DEVELOPMENT.md); a tiny call stays on one thread."""
    if scipy_blas_threads() < 2:
        pytest.skip("BLAS runs on one thread here")
    rng = np.random.default_rng(0)
    for steps, hidden, parts in ((200, 32, 2), (10, 32, 1)):   # 2.5M, 0.12M FLOPs
        trainer = cbptt.ManyToMany(cbptt.RNN(3, hidden, 2, cell="gru", seed=0))
        trainer.step(rng.standard_normal((2, steps, 3)),
                     rng.standard_normal((2, steps, 2)))
        assert trainer._last_engine.last_parts == parts, (steps, hidden)


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


def test_concurrent_trainers_leave_the_blas_thread_count_as_they_found_it():
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
    knobs = dict(team=2, team_min_flops=0, team_min_batch=2)    # BLAS's count decides the parts
    cbptt.set_settings(**knobs)

    def five_steps(trainer):
        with cbptt.settings(**knobs):      # the settings are thread-local
            for _ in range(5):
                trainer.step(X, Y)

    for _ in range(15):
        trainers = [cbptt.ManyToMany(cbptt.RNN(8, 32, 4, cell="lstm", seed=s))
                    for s in range(3)]
        threads = [threading.Thread(target=five_steps, args=(t,)) for t in trainers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert scipy_blas_threads() == before
    probe = cbptt.ManyToMany(cbptt.RNN(8, 32, 4, cell="lstm", seed=0))
    probe.step(X, Y)
    assert probe._last_engine.last_parts == 2


def test_a_trainer_on_a_split_learns_what_one_thread_learns():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6, 30, 4))
    Y = rng.integers(0, 3, size=(6, 30))
    weights = []
    for parts in (1, 2):
        set_parts(parts)
        model = cbptt.RNN(4, 16, 3, cell="gru", seed=0)
        trainer = cbptt.ManyToMany(model, loss="cross_entropy",
                                   optimizer=cbptt.Adam(lr=1e-2), clip_norm=0.5)
        for _ in range(8):
            trainer.step(X, Y)
        assert trainer._last_engine.last_parts == parts
        weights.append(model.params.copy())
    np.testing.assert_allclose(weights[1], weights[0], rtol=1e-12, atol=1e-13)
