"""RNN(..., vocab_size=V, padding_idx=p): token ids through an embedding table, as
torch.nn.Embedding below torch.nn.RNN/LSTM/GRU. Against torch (float64, 1e-10) where installed,
the table's gradient against finite differences, the padding row, save/load, the torch
exchange, and what it refuses."""
import numpy as np
import pytest

import cbptt

from helpers import CELLS

B, T, V, E, H, O = 4, 6, 11, 5, 7, 3


def make(cell="lstm", layers=1, padding_idx=2, dtype=np.float64, seed=0):
    return cbptt.RNN(E, H, O, cell=cell, num_layers=layers, vocab_size=V,
                     padding_idx=padding_idx, dtype=dtype, seed=seed)


def ids_and_targets(seed=0, many_to_one=False):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (B, T))
    ids[0, :3] = 2                                   # the padding id, read a few times
    return ids, rng.integers(0, O, B if many_to_one else (B, T)), rng


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_against_torch(cell, layers, many_to_one):
    torch = pytest.importorskip("torch")
    model = make(cell, layers)
    ids, y, rng = ids_and_targets(1, many_to_one)
    lengths = rng.integers(1, T + 1, B) if many_to_one else None
    trainer = (cbptt.ManyToOne(model, loss="cross_entropy") if many_to_one else
               cbptt.ManyToMany(model, loss="cross_entropy"))
    loss, grads = trainer.loss_and_grad(ids, y, **({"lengths": lengths} if many_to_one else {}))
    rnn, head, table = model.to_torch()
    out, _ = rnn(table(torch.from_numpy(ids)))
    if many_to_one:
        out = out[torch.arange(B), torch.from_numpy(lengths - 1)]
        want = torch.nn.functional.cross_entropy(head(out), torch.from_numpy(y))
    else:
        want = torch.nn.functional.cross_entropy(head(out).reshape(-1, O),
                                                 torch.from_numpy(y).reshape(-1))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)
    torch_grads = {f"{k}": p.grad for k, p in rnn.named_parameters()}
    torch_grads.update({f"head.{k}": p.grad for k, p in head.named_parameters()})
    torch_grads["embedding.weight"] = table.weight.grad
    assert sorted(torch_grads) == sorted(model.state_dict())
    for name, value in torch_grads.items():
        np.testing.assert_allclose(grads[name], value.numpy(), rtol=0, atol=1e-10)
    assert np.abs(grads["embedding.weight"]).max() > 1e-4
    assert not grads["embedding.weight"][2].any()          # the padding row learns nothing
    np.testing.assert_allclose(model.predict(ids), head(rnn(table(torch.from_numpy(ids)))[0])
                               .detach().numpy(), rtol=0, atol=1e-12)


def test_the_tables_gradient_is_finite_differences():
    model = make("gru", 2, padding_idx=None)
    ids, y, _ = ids_and_targets(2)
    trainer = cbptt.ManyToMany(model, loss="cross_entropy")
    _, grads = trainer.loss_and_grad(ids, y)
    table = model.named_parameters()[-1][1]
    numeric = np.empty_like(table)
    for index in np.ndindex(table.shape):
        keep = table[index]
        table[index] = keep + 1e-6
        up = trainer.loss_and_grad(ids, y)[0]
        table[index] = keep - 1e-6
        numeric[index] = (up - trainer.loss_and_grad(ids, y)[0]) / 2e-6
        table[index] = keep
    np.testing.assert_allclose(grads["embedding.weight"], numeric, rtol=1e-6, atol=1e-9)


def test_a_step_updates_the_table_and_the_rest_as_torch():
    torch = pytest.importorskip("torch")
    model = make("lstm", 1)
    ids, y, _ = ids_and_targets(3)
    rnn, head, table = model.to_torch()
    trainer = cbptt.ManyToMany(model, loss="cross_entropy", optimizer=cbptt.Adam(lr=1e-2),
                               clip_norm=0.5)
    parameters = [*rnn.parameters(), *head.parameters(), *table.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    for _ in range(3):
        trainer.step(ids, y)
        optimizer.zero_grad()
        out, _ = rnn(table(torch.from_numpy(ids)))
        torch.nn.functional.cross_entropy(head(out).reshape(-1, O),
                                          torch.from_numpy(y).reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 0.5)
        optimizer.step()
    back = cbptt.RNN.from_torch(rnn, head, embedding=table)
    np.testing.assert_allclose(model.params, back.params, rtol=0, atol=1e-10)
    assert (back.vocab_size, back.padding_idx) == (V, 2)


def test_layout_seed_save_and_load(tmp_path):
    model = make("gru", 2, dtype=np.float32, seed=7)
    plain = cbptt.RNN(E, H, O, cell="gru", num_layers=2, dtype=np.float32, seed=7)
    assert list(model.state_dict())[-1] == "embedding.weight"
    np.testing.assert_array_equal(model.params[:model.engine_size], plain.params)
    assert not model.state_dict()["embedding.weight"][2].any()
    model.save(tmp_path / "m")
    back = cbptt.load(tmp_path / "m.npz")
    assert back.config() == model.config()
    np.testing.assert_array_equal(back.params, model.params)


def test_what_it_refuses_leaves_the_weights_untouched():
    model = make()
    ids, y, _ = ids_and_targets(4)
    trainer = cbptt.ManyToMany(model, loss="cross_entropy")
    before = model.params.copy()
    for bad, message in [(ids + V, r"token ids must be in \[0, 11\)"),
                         (np.eye(V)[ids], "reads token ids"),
                         (ids.astype(float), "a 2-D input is token ids")]:
        with pytest.raises(ValueError, match=message):
            trainer.step(bad, y)
    np.testing.assert_array_equal(model.params, before)
    with pytest.raises(ValueError, match="padding_idx"):
        cbptt.RNN(E, H, O, vocab_size=V, padding_idx=V)
    with pytest.raises(ValueError, match="padding_idx"):
        cbptt.RNN(E, H, O, padding_idx=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_seq2seq_of_halves_with_embeddings(cell):
    """Its loss and recurrent gradients are those of the same halves without tables fed the
    tables' rows; each table's gradient is finite differences; greedy decoding feeds the
    decoder its table's rows of the ids it chose."""
    enc = cbptt.RNN(E, H, None, cell=cell, num_layers=2, vocab_size=V, padding_idx=0, seed=1)
    dec = cbptt.RNN(E, H, V, cell=cell, num_layers=2, vocab_size=V, seed=2)
    s2s = cbptt.Seq2Seq(enc, dec, loss="cross_entropy")
    plain = cbptt.Seq2Seq(cbptt.RNN(E, H, None, cell=cell, num_layers=2),
                          cbptt.RNN(E, H, V, cell=cell, num_layers=2), loss="cross_entropy")
    plain.encoder.params[:] = enc.engine_params
    plain.decoder.params[:] = dec.engine_params
    rng = np.random.default_rng(5)
    src, tgt = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, 4))
    y_in = np.concatenate([np.zeros((B, 1), int), tgt[:, :-1]], axis=1)
    lengths = (rng.integers(1, T + 1, B), rng.integers(1, 5, B))
    loss, grads = s2s.loss_and_grad(src, y_in, tgt, *lengths)
    tables = [enc.state_dict()["embedding.weight"], dec.state_dict()["embedding.weight"]]
    want, want_grads = plain.loss_and_grad(tables[0][src], tables[1][y_in], tgt, *lengths)
    assert loss == pytest.approx(want, rel=1e-13)
    for name, value in want_grads.items():
        np.testing.assert_allclose(grads[name], value, rtol=0, atol=1e-12)
    for half, model in (("encoder", enc), ("decoder", dec)):
        table = model.named_parameters()[-1][1]
        numeric = np.empty_like(table)
        for index in np.ndindex(table.shape):
            keep = table[index]
            table[index] = keep + 1e-6
            up = s2s.loss_and_grad(src, y_in, tgt, *lengths)[0]
            table[index] = keep - 1e-6
            numeric[index] = (up - s2s.loss_and_grad(src, y_in, tgt, *lengths)[0]) / 2e-6
            table[index] = keep
        if model.padding_idx is not None:    # as torch: no gradient, whatever its effect
            assert numeric[model.padding_idx].any()
            assert not grads[half + ".embedding.weight"][model.padding_idx].any()
            numeric[model.padding_idx] = 0
        np.testing.assert_allclose(grads[half + ".embedding.weight"], numeric, rtol=1e-6,
                                   atol=1e-9)
    ids = s2s.generate(src, lengths[0], start=0, steps=5)
    state = s2s.encode(src, lengths[0])
    h, c = state if cell == "lstm" else (state, None)
    previous = np.zeros(B, int)
    for n in range(5):
        out, final = dec.predict(previous[:, None], h0=h, c0=c, return_state=True)
        h, c = final if cell == "lstm" else (final, None)
        previous = out[:, 0].argmax(axis=1)
        np.testing.assert_array_equal(ids[:, n], previous)


def test_gradcheck_of_a_model_with_an_embedding():
    model = make("lstm", 1, dtype=np.float32)
    ids, y, _ = ids_and_targets(6, many_to_one=True)
    errors = cbptt.gradcheck(cbptt.ManyToOne(model, loss="cross_entropy"), ids, y)
    assert sorted(errors) == sorted(model.state_dict())
    assert max(errors.values()) < 1e-6


@pytest.mark.parametrize("many_to_one", [False, True])
def test_truncated_with_an_embedding(many_to_one):
    """One window over the whole stream is the full-BPTT trainer's step (the table moved by
    its gradient); over several blocks the table learns at every one."""
    rng = np.random.default_rng(7)
    ids = rng.integers(0, V, (B, 10))
    y = rng.integers(0, O, B if many_to_one else (B, 10))
    models = [make("gru", 2, seed=8) for _ in range(3)]
    full = (cbptt.ManyToOne if many_to_one else cbptt.ManyToMany)(
        models[0], loss="cross_entropy", optimizer=cbptt.SGD(lr=0.5))
    loss = full.step(ids, y)
    window = cbptt.Truncated(models[1], k1=10, loss="cross_entropy", many_to_one=many_to_one,
                             optimizer=cbptt.SGD(lr=0.5))
    assert window.step(ids, y) == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(models[1].params, models[0].params, rtol=0, atol=1e-13)
    blocks = cbptt.Truncated(models[2], k1=3, k2=4, loss="cross_entropy",
                             many_to_one=many_to_one, optimizer=cbptt.SGD(lr=0.5))
    before = models[2].state_dict()["embedding.weight"]
    assert np.isfinite(blocks.step(ids, y))
    moved = models[2].state_dict()["embedding.weight"] != before
    assert moved.any() and not moved[2].any()             # never the padding row
