"""Token ids: a 2-D integer X (B, T) is the one-hot input (B, T, I), never made (the first
layer's projection a gather of W_ih's columns, its gradient a scatter-add). Losses, every
gradient and predictions equal the one-hot input's, for every trainer that takes ids, on every
path of the first layer (one thread, a split, a column partition, chunked backward passes,
GRU's per-chunk gradients); what ran is read from Engine.last_paths."""
import numpy as np
import pytest

import cbptt

from helpers import CELLS, set_parts

B, T, I, H, O = 5, 9, 7, 6, 3
PATHS = {
    "one thread": lambda: cbptt.set_settings(team=1),
    "chunks": lambda: cbptt.set_settings(team=1, chunk_rows=8, chunk_min_steps=2,
                                         whole_gated_input=False, gru_chunk_grads_bytes=0),
    "split": lambda: set_parts(2),
    "columns": lambda: set_parts(2, "columns"),
}


def data(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, I, (B, T))
    return ids, np.eye(I, dtype=dtype)[ids], rng


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_many_to_many_on_ids_is_the_one_hot_input(cell, layers, path):
    PATHS[path]()
    ids, onehot, rng = data()
    Y = rng.integers(0, O, (B, T))
    mask = (rng.random((B, T)) < 0.8).astype(float)
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=layers, seed=1)
    trainer = cbptt.ManyToMany(model, loss="cross_entropy")
    want = trainer.loss_and_grad(onehot, Y, mask=mask, return_state=True)
    assert "input_ids" not in trainer._last_engine.last_paths
    got = trainer.loss_and_grad(ids, Y, mask=mask, return_state=True)
    assert "input_ids" in trainer._last_engine.last_paths
    assert trainer._last_engine.last_parts == (1 if path in ("one thread", "chunks") else 2)
    assert got[0] == pytest.approx(want[0], rel=1e-14)
    for name in want[1]:
        close(got[1][name], want[1][name])
    assert np.abs(got[1]["weight_ih_l0"]).max() > 1e-3
    close(got[2][0] if cell == "lstm" else got[2], want[2][0] if cell == "lstm" else want[2])
    close(model.predict(ids), model.predict(onehot))


@pytest.mark.parametrize("cell", CELLS)
def test_many_to_one_with_lengths_on_ids(cell):
    ids, onehot, rng = data(1)
    y = rng.standard_normal((B, O))
    lengths = rng.integers(1, T + 1, B)
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=2)
    trainer = cbptt.ManyToOne(model, loss="mse")
    loss, grads = trainer.loss_and_grad(onehot, y, lengths=lengths)
    loss_ids, grads_ids = trainer.loss_and_grad(ids, y, lengths=lengths)
    assert loss_ids == pytest.approx(loss, rel=1e-14)
    for name in grads:
        close(grads_ids[name], grads[name])


def test_a_step_on_ids_moves_the_weights_as_on_one_hot_floats_in_float32():
    ids, onehot, rng = data(2, np.float32)
    Y = rng.standard_normal((B, T, O)).astype(np.float32)
    models = [cbptt.RNN(I, H, O, cell="lstm", dtype=np.float32, seed=3) for _ in range(2)]
    for model, X in zip(models, (onehot, ids)):
        trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=1e-2))
        for _ in range(3):
            trainer.step(X, Y)
    np.testing.assert_allclose(models[1].params, models[0].params, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_seq2seq_on_ids(cell):
    """Both halves on ids (encoder source, decoder teacher-forcing inputs) against one-hot."""
    ids, onehot, rng = data(3)
    target = rng.integers(0, I, (B, 4))
    enc = cbptt.RNN(I, H, None, cell=cell, num_layers=2, seed=4)
    dec = cbptt.RNN(I, H, I, cell=cell, num_layers=2, seed=5)
    s2s = cbptt.Seq2Seq(enc, dec, loss="cross_entropy")
    src, tgt = rng.integers(1, T + 1, B), rng.integers(1, 5, B)
    loss, grads = s2s.loss_and_grad(onehot, np.eye(I)[target], target, src, tgt)
    loss_ids, grads_ids = s2s.loss_and_grad(ids, target, target, src, tgt)
    assert loss_ids == pytest.approx(loss, rel=1e-14)
    for name in grads:
        close(grads_ids[name], grads[name])
    close(s2s.predict(ids, target, src), s2s.predict(onehot, np.eye(I)[target], src))


def test_what_ids_refuse_leaves_the_weights_untouched():
    ids, onehot, rng = data(4)
    model = cbptt.RNN(I, H, O, seed=6)
    trainer = cbptt.ManyToMany(model, loss="cross_entropy")
    before = model.params.copy()
    Y = rng.integers(0, O, (B, T))
    for bad, kind, message in [
            (np.where(ids == 0, I, ids), ValueError, r"token ids must be in \[0, 7\)"),
            (ids - 1, ValueError, r"token ids must be in \[0, 7\)"),
            (ids.astype(float), ValueError, "a 2-D input is token ids"),
            (ids[:, :0], ValueError, "must have shape"),
    ]:
        with pytest.raises(kind, match=message):
            trainer.step(bad, Y if bad.shape[1] else Y[:, :0])
    np.testing.assert_array_equal(model.params, before)
    engine = model.make_engine(B, T, ids=True)
    with pytest.raises(ValueError, match="token ids must be in"):
        engine.loss_and_grad(ids + I, rng.standard_normal((B, T, O)), model.params,
                             np.zeros_like(model.params))


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_truncated_on_ids_is_the_one_hot_stream(cell, many_to_one):
    """The same updates, carried states and losses, block after block and across calls, and
    fit_stream over a 1-D stream of ids against its one-hot floats; a stream saved and
    loaded goes on the same."""
    rng = np.random.default_rng(5)
    ids = rng.integers(0, I, (B, 20))
    onehot = np.eye(I)[ids]
    Y = rng.integers(0, O, B if many_to_one else (B, 20))
    results = []
    for X in (onehot, ids):
        model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=6)
        trainer = cbptt.Truncated(model, k1=3, k2=5, loss="cross_entropy",
                                  many_to_one=many_to_one, optimizer=cbptt.Adam(lr=1e-2))
        losses = [trainer.step(X[:, :11], Y if many_to_one else Y[:, :11])]
        if not many_to_one:
            saved = trainer.stream_state()
            trainer.load_stream_state(saved)
            losses.append(trainer.step(X[:, 11:], Y[:, 11:]))
            trainer.reset_state()
            losses.extend(trainer.fit_stream(X[0], Y[0], chunk_steps=6))
        results.append((np.array(losses), model.params.copy()))
    close(results[1][0], results[0][0])
    close(results[1][1], results[0][1])
    if not many_to_one:
        trainer.reset_state()
        trainer.step(ids[:, :4], Y[:, :4])
        with pytest.raises(ValueError, match="current stream's inputs are token ids"):
            trainer.step(onehot[:, :4], Y[:, :4])
