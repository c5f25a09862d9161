"""The backward pass in chunks of steps (Engine.chunk_steps): any chunk size gives the gradients
of one chunk over all steps, and the NumPy reference's, including a loss that starts inside a
chunk, many-to-one rows ending in different chunks, stacked layers and the team of threads."""
import numpy as np
import pytest

import cbptt

from cbptt import _engine

from helpers import CELLS
from reference import loss_and_grad as reference_loss_and_grad

STEPS, INPUTS, HIDDEN, OUTPUTS = 7, 3, 5, 4


def run(cell, layers, batch, mode, loss, loss_start, seed=0, stale=0.0):
    """Engine loss and flat gradients, with h0 (and c0) and their gradients; the gradient buffer
    starts out holding `stale` (the engine overwrites it)."""
    rng = np.random.default_rng(seed)
    params = np.asarray(rng.uniform(-0.6, 0.6, _engine.param_count(cell, layers, INPUTS, HIDDEN,
                                                                      OUTPUTS)))
    X = rng.standard_normal((batch, STEPS, INPUTS))
    h0 = rng.standard_normal((layers, batch, HIDDEN))
    c0 = rng.standard_normal((layers, batch, HIDDEN)) if cell == "lstm" else None
    many_to_one = mode == "many_to_one"
    out_steps = 1 if many_to_one else STEPS - loss_start
    if loss == "mse":
        Y = rng.standard_normal((batch, OUTPUTS) if many_to_one else (batch, STEPS, OUTPUTS))
        target = Y.reshape(batch, out_steps if many_to_one else STEPS, OUTPUTS)[:, -out_steps:]
    else:
        Y = rng.integers(0, OUTPUTS, (batch,) if many_to_one else (batch, STEPS))
        target = Y.reshape(batch, -1)[:, -out_steps:].astype(np.int64)
    lengths = (np.arange(batch) * 3) % STEPS + 1 if many_to_one else None
    engine = _engine.Engine(cell, layers, INPUTS, HIDDEN, OUTPUTS, batch, STEPS, np.float64,
                            many_to_one=many_to_one, loss=loss,
                            loss_start=0 if many_to_one else loss_start)
    grads = np.full_like(params, stale)
    dh0 = np.zeros_like(h0)
    dc0 = None if c0 is None else np.zeros_like(c0)
    value = engine.loss_and_grad(X, np.ascontiguousarray(target), params, grads, h0=h0, dh0=dh0,
                                 c0=c0, dc0=dc0, lengths=lengths)
    return dict(value=value, grads=grads, dh0=dh0, dc0=dc0, params=params, X=X, Y=Y, h0=h0,
                c0=c0, lengths=lengths, chunk_steps=engine.chunk_steps,
                paths=engine.last_paths)


CASES = [(cell, layers, mode, loss, loss_start)
         for cell in CELLS
         for layers in (1, 3)
         for mode, loss_start in (("many_to_many", 0), ("many_to_many", 3),
                                  ("many_to_one", 0))
         for loss in ("mse", "cross_entropy")]


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("cell,layers,mode,loss,loss_start", CASES)
def test_chunked_backward_equals_one_chunk_and_the_reference(chunking, cell, layers, mode, loss,
                                                             loss_start, chunk):
    chunking(STEPS)
    whole = run(cell, layers, 4, mode, loss, loss_start)
    assert whole["chunk_steps"] == STEPS
    chunking(chunk)
    chunked = run(cell, layers, 4, mode, loss, loss_start)
    assert chunked["chunk_steps"] == (chunk if cell in ("tanh", "relu") else 2 * chunk)
    assert chunked["value"] == pytest.approx(whole["value"], rel=1e-14)
    for key in ("grads", "dh0", "dc0"):
        if whole[key] is not None:
            np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-12, atol=1e-14,
                                       err_msg=key)

    layout = _engine.param_layout(cell, layers, INPUTS, HIDDEN, OUTPUTS)
    params = {name: chunked["params"][offset:offset + int(np.prod(shape))].reshape(shape)
              for name, shape, offset in layout}
    value, want = reference_loss_and_grad(
        params, chunked["X"], chunked["Y"], cell=cell, num_layers=layers, mode=mode, loss=loss,
        h0=chunked["h0"], c0=chunked["c0"], loss_start=loss_start, lengths=chunked["lengths"])
    assert chunked["value"] == pytest.approx(value, rel=1e-12)
    flat = np.concatenate([np.ravel(want[name]) for name, _, _ in layout])
    np.testing.assert_allclose(chunked["grads"], flat, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(chunked["dh0"], want["h0"], rtol=1e-9, atol=1e-12)
    assert np.abs(flat).max() > 0


@pytest.mark.skipif(not _engine.team_available(), reason="no per-thread BLAS control")
@pytest.mark.parametrize("split", ["rows", "columns"])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_chunks_on_the_team(chunking, cell, split):
    chunking(STEPS)
    cbptt.set_settings(team=1)
    whole = run(cell, 2, 5, "many_to_many", "mse", 2)
    chunking(2)
    cbptt.set_settings(team=3, team_min_flops=0, team_min_batch=2, team_exact=True,
                       team_column_flops=0 if split == "columns" else float("inf"))
    chunked = run(cell, 2, 5, "many_to_many", "mse", 2)
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-12, atol=1e-14)


def test_chunk_size_follows_the_batch():
    def chunk_steps(batch, steps):
        return _engine.Engine("tanh", 1, 2, 3, 1, batch, steps, np.float64).chunk_steps
    assert chunk_steps(1, 100) == 100          # 128 rows would need 128 steps
    assert chunk_steps(16, 100) == 8
    assert chunk_steps(64, 50) == 4            # at least 4 steps
    assert chunk_steps(16, 5) == 5
    lstm = _engine.Engine("lstm", 1, 2, 3, 1, 16, 100, np.float64).chunk_steps
    assert lstm == 16                          # twice Elman's, at least T / 8


@pytest.mark.parametrize("split", ["alone", "rows", "columns"])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_w_hh_used_transposed_in_blas_gives_the_same_gradients(cell, split):
    """Large per-step products multiply by W_hh transposed in BLAS instead of a copy of W_hh^T
    (set_transposed_limit); forced here on a small shape, with the packed panels off (the
    path of processors without AVX-512)."""
    cbptt.set_settings(panels=False)
    if split == "alone":
        cbptt.set_settings(team=1)
    else:
        cbptt.set_settings(team=2, team_min_flops=0, team_min_batch=2, team_exact=True,
                           team_column_flops=0 if split == "columns" else float("inf"))
    copy = run(cell, 2, 5, "many_to_many", "mse", 1)
    cbptt.set_settings(transposed_limit=0)
    blas = run(cell, 2, 5, "many_to_many", "mse", 1)
    assert blas["value"] == pytest.approx(copy["value"], rel=1e-13)
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(blas[key], copy[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("layers,mode,loss_start", [(1, "many_to_many", 0), (3, "many_to_many", 3),
                                                    (2, "many_to_one", 0)])
def test_gru_weight_gradients_per_chunk_equal_the_end_products(gru_chunk_grads, chunk, layers,
                                                               mode, loss_start):
    """GRU's dW_hh, dW_ih and biases summed chunk by chunk (large dA) equal one product over all
    steps and the reference: every chunk counted once, in its own steps' rows."""
    cbptt.set_settings(chunk_rows=1, chunk_min_steps=chunk, whole_gated_input=True)
    gru_chunk_grads(False)
    end = run("gru", layers, 4, mode, "mse", loss_start)
    gru_chunk_grads(True)
    per_chunk = run("gru", layers, 4, mode, "mse", loss_start, stale=np.nan)
    assert per_chunk["chunk_steps"] == 2 * chunk < STEPS
    assert "chunk_grads" in per_chunk["paths"] and "chunk_grads" not in end["paths"]
    assert per_chunk["value"] == pytest.approx(end["value"], rel=1e-14)
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(per_chunk[key], end[key], rtol=1e-12, atol=1e-14, err_msg=key)
    layout = _engine.param_layout("gru", layers, INPUTS, HIDDEN, OUTPUTS)
    params = {name: per_chunk["params"][offset:offset + int(np.prod(shape))].reshape(shape)
              for name, shape, offset in layout}
    _, want = reference_loss_and_grad(
        params, per_chunk["X"], per_chunk["Y"], cell="gru", num_layers=layers, mode=mode,
        loss="mse", h0=per_chunk["h0"], loss_start=loss_start, lengths=per_chunk["lengths"])
    flat = np.concatenate([np.ravel(want[name]) for name, _, _ in layout])
    np.testing.assert_allclose(per_chunk["grads"], flat, rtol=1e-9, atol=1e-12)
    assert np.abs(flat).max() > 0


@pytest.mark.skipif(not _engine.team_available(), reason="no per-thread BLAS control")
@pytest.mark.parametrize("split", ["rows", "columns"])
def test_gru_weight_gradients_per_chunk_on_the_team(gru_chunk_grads, split):
    cbptt.set_settings(chunk_rows=1, chunk_min_steps=1, whole_gated_input=True)
    cbptt.set_settings(team=1)
    gru_chunk_grads(False)
    alone = run("gru", 2, 5, "many_to_many", "mse", 2)
    cbptt.set_settings(team=3, team_min_flops=0, team_min_batch=2, team_exact=True,
                       team_column_flops=0 if split == "columns" else float("inf"))
    gru_chunk_grads(True)
    team = run("gru", 2, 5, "many_to_many", "mse", 2, stale=np.nan)
    assert "chunk_grads" in team["paths"] and "chunk_grads" not in alone["paths"]
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(team[key], alone[key], rtol=1e-12, atol=1e-14, err_msg=key)

