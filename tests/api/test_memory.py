"""Requests too large for memory are refused before anything is allocated, naming the bytes
needed and available: a model's parameters, a trainer's gradients and optimiser state, a step's
or a prediction's workspace. The memory available is patched where a test needs a fixed amount
(the real one is read from /proc/meminfo on Linux)."""
import sys
import tracemalloc

import numpy as np
import pytest

import cbptt
from cbptt import memory

from helpers import CELLS

GIB = 2 ** 30


@pytest.fixture
def available(monkeypatch):
    """Set the memory available that the checks see: available(bytes)."""
    def set_to(count):
        monkeypatch.setattr(memory, "available_bytes", lambda: count)
    return set_to


def peak_allocated(call):
    """(exception raised by call(), peak bytes NumPy and Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        with pytest.raises(memory.InsufficientMemory) as raised:
            call()
        return raised.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MemAvailable is Linux's")
def test_available_bytes_reads_meminfo():
    with open("/proc/meminfo") as meminfo:
        line = next(line for line in meminfo if line.startswith("MemAvailable:"))
    reported = int(line.split()[1]) * 1024
    assert memory.available_bytes() == pytest.approx(reported, rel=0.2)   # it moves a little
    assert memory.available_bytes() > 0


def test_available_bytes_is_none_without_meminfo(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "absent"))
    assert memory.available_bytes() is None
    memory.require(10 ** 30, "anything")             # no figure: no refusal


def test_describe_bytes():
    assert memory.describe_bytes(512) == "512 bytes"
    assert memory.describe_bytes(3 * 1024 + 512) == "3.5 KiB"
    assert memory.describe_bytes(40 * 2 ** 20) == "40.0 MiB"
    assert memory.describe_bytes(149 * GIB) == "149.0 GiB"
    assert memory.describe_bytes(3 * 2 ** 50) == "3,145,728.0 GiB"


def test_a_model_too_large_is_refused_before_allocating(available):
    available(8 * GIB)
    needed = memory.parameter_bytes("lstm", 1, 30, 100_000, 30, np.float32)
    assert needed > 149 * GIB                        # 4 H (I + H) weights and more
    error, peak = peak_allocated(
        lambda: cbptt.RNN(30, 100_000, 30, cell="lstm", dtype=np.float32))
    assert isinstance(error, MemoryError)
    assert (error.needed, error.available) == (needed, 8 * GIB)
    message = str(error)
    assert "hidden_size=100000" in message and "40,015,800,030 parameters" in message
    assert f"needs {memory.describe_bytes(needed)} ({needed:,} bytes)" in message
    assert "149.1 GiB" in message and "8.0 GiB of memory available" in message
    assert peak < 2 ** 20                             # nothing of the sort was allocated


@pytest.mark.skipif(memory.available_bytes() is None, reason="memory available unknown")
def test_the_real_memory_available_refuses_a_model_no_machine_holds():
    error, peak = peak_allocated(lambda: cbptt.RNN(1, 10 ** 7, 1, cell="gru"))
    assert "GiB" in str(error) and error.available == pytest.approx(
        memory.available_bytes(), rel=0.5)
    assert peak < 2 ** 20


def test_a_trainer_too_large_is_refused_with_the_weights_untouched(available):
    model = cbptt.RNN(8, 64, 4, cell="lstm", seed=0)
    before = model.params.copy()
    available(2 * model.params.nbytes)      # the model fits; its gradients + Adam's 3 do not
    error, peak = peak_allocated(lambda: cbptt.ManyToMany(model, optimizer=cbptt.Adam()))
    assert error.needed == 4 * model.params.nbytes
    assert "gradients and the state of Adam" in str(error)
    assert memory.describe_bytes(4 * model.params.nbytes) in str(error)
    assert peak < model.params.nbytes
    np.testing.assert_array_equal(model.params, before)
    available(4 * model.params.nbytes)      # exactly enough
    cbptt.ManyToMany(model, optimizer=cbptt.Adam())


@pytest.mark.parametrize("optimizer, copies", [
    (lambda: cbptt.SGD(lr=0.1), 0), (lambda: cbptt.SGD(lr=0.1, momentum=0.9), 1),
    (lambda: cbptt.SGD(lr=0.1, momentum=0.9, weight_decay=1e-4), 2),
    (lambda: cbptt.Adam(), 3)])
def test_parameter_copies_are_what_the_optimiser_allocates(optimizer, copies):
    opt = optimizer()
    assert opt.parameter_copies == copies
    params, grads = np.ones(1000), np.full(1000, 0.1)
    tracemalloc.start()
    opt.step(params, grads)
    allocated = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert copies * params.nbytes <= allocated < copies * params.nbytes + 4096


def test_a_step_too_large_is_refused_with_the_weights_untouched(available):
    model = cbptt.RNN(1, 256, 1, cell="lstm", seed=0)
    trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=0.1))
    before = model.params.copy()
    X = np.ones((100, 1000, 1))
    needed = memory.step_bytes(model, 100, 1000)
    assert 1.1 * GIB < needed < 1.3 * GIB             # ~6 L (T + 1) B H float64 for lstm
    available(GIB)
    error, peak = peak_allocated(lambda: trainer.step(X, X))
    message = str(error)
    assert "a training step on 100 sequences of 1000 steps" in message
    assert memory.describe_bytes(needed) in message and "1.0 GiB of memory" in message
    assert peak < 2 ** 20
    np.testing.assert_array_equal(model.params, before)
    assert trainer.optimizer.steps == 0
    error, peak = peak_allocated(lambda: model.predict(X))
    assert "a prediction on 100 sequences" in str(error) and peak < 2 ** 20
    trainer.step(X[:2, :10], X[:2, :10])              # a step that fits goes ahead
    assert trainer.optimizer.steps == 1 and not np.array_equal(model.params, before)


def test_truncated_refuses_a_window_too_large(available):
    model = cbptt.RNN(1, 32, 1, cell="gru", seed=0)
    trainer = cbptt.Truncated(model, k1=50, k2=100, optimizer=cbptt.SGD(lr=0.1))
    available(memory.step_bytes(model, 10, 99))
    X = np.ones((10, 100, 1))
    with pytest.raises(MemoryError, match="on 10 sequences of 100 steps"):
        trainer.step(X, X)    # the first window, 50 steps, fits; the second, 100, does not
    assert trainer.optimizer.steps == 1 and trainer.position == 50
    params = model.params.copy()
    available(None)           # unknown: no check
    trainer.step(X[:, 50:], X[:, 50:])
    assert trainer.optimizer.steps == 2 and not np.array_equal(model.params, params)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("B, T, H", [(3, 40, 16), (32, 20, 128)])    # the second may split
@pytest.mark.parametrize("rates", [(0, 0), (0.2, 0.3)])               # dropout's buffers
def test_the_step_estimate_bounds_the_engines_workspace(cell, layers, many_to_one, B, T, H,
                                                        rates):
    model = cbptt.RNN(3, H, 2, cell=cell, num_layers=layers, seed=0, dropout=rates[0],
                      recurrent_dropout=rates[1])
    trainer = (cbptt.ManyToOne if many_to_one else cbptt.ManyToMany)(model)
    Y = np.zeros((B, 2)) if many_to_one else np.zeros((B, T, 2))
    trainer.step(np.zeros((B, T, 3)), Y)
    engine = trainer._last_engine
    used = engine.workspace_bytes
    estimate = memory.step_bytes(model, B, T, many_to_one=many_to_one, threads=engine.last_parts)
    assert used <= estimate < 1.5 * used
    assert memory.step_bytes(model, B, T, many_to_one=many_to_one) >= used   # threads unknown
