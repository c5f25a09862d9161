"""Failing loudly and early: non-finite steps, atomic files, threads."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cbptt


def exploding_case(dtype=np.float32):
    """A relu RNN whose recurrent weights make the activations overflow float32."""
    model = cbptt.RNN(2, 8, 1, cell="relu", dtype=dtype, seed=0)
    weights = model.state_dict()
    weights["weight_hh_l0"] = np.full((8, 8), 50.0)
    weights["bias_ih_l0"] = np.full(8, 1.0)
    model.load_state_dict(weights)
    X = np.ones((2, 40, 2))
    Y = np.zeros((2, 40, 1))
    return model, X, Y


def test_non_finite_step_raises_and_leaves_weights_and_optimiser_untouched():
    model, X, Y = exploding_case()
    trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=1e-3))
    trainer.step(X[:, :2], Y[:, :2])                  # a finite step: Adam has state now
    params = model.params.copy()
    moments = trainer.optimizer.exp_avg.copy(), trainer.optimizer.exp_avg_sq.copy()
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.step(X, Y)
    np.testing.assert_array_equal(model.params, params)
    np.testing.assert_array_equal(trainer.optimizer.exp_avg, moments[0])
    np.testing.assert_array_equal(trainer.optimizer.exp_avg_sq, moments[1])
    assert trainer.optimizer.steps == 1


def test_on_nonfinite_skip_counts_and_warns():
    model, X, Y = exploding_case()
    trainer = cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=0.1), on_nonfinite="skip")
    params = model.params.copy()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        trainer.step(X, Y)
    assert trainer.skipped_updates == 1
    np.testing.assert_array_equal(model.params, params)
    with pytest.raises(ValueError, match="on_nonfinite"):
        cbptt.ManyToMany(model, on_nonfinite="ignore")


def test_truncated_names_the_stream_position_of_a_non_finite_block():
    model, X, Y = exploding_case()
    trainer = cbptt.Truncated(model, k1=10, optimizer=cbptt.SGD(lr=1e-3))
    with pytest.raises(FloatingPointError, match=r"stream steps \[\d+, \d+\)"):
        trainer.step(X, Y)


def test_engine_reports_a_non_finite_gradient_norm():
    model, X, Y = exploding_case()
    trainer = cbptt.ManyToMany(model)
    loss, grads = trainer.loss_and_grad(X, Y)          # no update: just the numbers
    assert not np.isfinite(loss) or not all(np.isfinite(g).all() for g in grads.values())


WRITER = """
import sys, numpy as np, cbptt
model = cbptt.RNN(64, 256, 64, cell="lstm", num_layers=2, seed=1)
print("ready", flush=True)
while True:
    model.save(sys.argv[1])
"""


def test_a_killed_writer_never_leaves_a_broken_checkpoint(tmp_path):
    path = str(tmp_path / "model.npz")
    old = cbptt.RNN(64, 256, 64, cell="lstm", num_layers=2, seed=0)
    old.save(path)
    new = cbptt.RNN(64, 256, 64, cell="lstm", num_layers=2, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, path],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.2))
        writer.kill()
        writer.wait()
        loaded = cbptt.load(path)
        assert (np.array_equal(loaded.params, old.params)
                or np.array_equal(loaded.params, new.params))


def test_load_refuses_truncated_and_foreign_files(tmp_path):
    model = cbptt.RNN(2, 3, 1, seed=0)
    model.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        cbptt.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a cbptt model file"):
        cbptt.load(tmp_path / "foreign.npz")


def make_trainer(seed):
    model = cbptt.RNN(8, 64, 4, cell="lstm", seed=seed)
    return cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=0.01))


def test_two_trainers_in_two_threads_match_sequential_runs_and_overlap():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 60, 8))
    Y = rng.normal(size=(16, 60, 4))
    sequential = [make_trainer(0), make_trainer(1)]
    for trainer in sequential:
        for _ in range(20):
            trainer.step(X, Y)
    threaded = [make_trainer(0), make_trainer(1)]
    inside, most_inside = [0], [0]
    lock = threading.Lock()

    def run(trainer):
        for _ in range(20):
            with lock:
                inside[0] += 1
                most_inside[0] = max(most_inside[0], inside[0])
            trainer.step(X, Y)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=run, args=(t,)) for t in threaded]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, threaded):
        np.testing.assert_array_equal(a.model.params, b.model.params)
    assert most_inside[0] == 2     # both were inside step() at once: the GIL was released


def test_trainers_sharing_a_model_across_threads_are_serialised():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, 30, 8))
    Y = rng.normal(size=(4, 30, 4))
    reference = make_trainer(0)
    for _ in range(40):
        reference.step(X, Y)
    shared = cbptt.RNN(8, 64, 4, cell="lstm", seed=0)
    trainers = [cbptt.ManyToMany(shared, optimizer=cbptt.SGD(lr=0.01)) for _ in range(2)]
    threads = [threading.Thread(target=lambda t=t: [t.step(X, Y) for _ in range(20)])
               for t in trainers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 40 identical plain-SGD steps in any order equal 40 steps in one thread
    np.testing.assert_allclose(shared.params, reference.model.params, rtol=1e-12)


@pytest.mark.parametrize("make_optimizer", [
    lambda: cbptt.SGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda: cbptt.SGD(lr=0.01, momentum=0.9, dampening=0.1),
    lambda: cbptt.Adam(lr=1e-3, weight_decay=1e-4)], ids=["nesterov", "dampening", "adam"])
@pytest.mark.parametrize("trainer_class", [cbptt.ManyToMany, cbptt.ManyToOne])
def test_a_training_step_allocates_nothing_after_the_first(make_optimizer, trainer_class):
    """No array is allocated per step once the workspace exists: the traced peak over 20
    steps stays below 4 KiB, far under any buffer of this shape (X alone is 51 KiB)."""
    import tracemalloc
    model = cbptt.RNN(8, 32, 3, cell="lstm", seed=0)
    trainer = trainer_class(model, optimizer=make_optimizer(), clip_norm=0.1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 50, 8))
    Y = rng.normal(size=(16, 3) if trainer_class is cbptt.ManyToOne else (16, 50, 3))
    for _ in range(2):
        trainer.step(X, Y)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(20):
            trainer.step(X, Y)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 4096, peak - before
    assert after - before < 4096, after - before


def test_values_beyond_float32_range_are_named_as_such():
    model = cbptt.RNN(2, 3, 1, dtype=np.float32, seed=0)
    X = np.full((1, 4, 2), 1e300)
    with pytest.raises(ValueError, match="beyond the range of float32"):
        model.predict(X)
