"""RNN(..., bidirectional=True): against torch's bidirectional RNN/LSTM/GRU (float64, 1e-10)
under pack_padded_sequence — many-to-many with lengths, many-to-one with lengths, h0/c0 and
the final states in torch's order, predictions, an Adam step — plus finite differences of
every parameter, token ids and embeddings, save/load, and what it refuses."""
import numpy as np
import pytest

import cbptt

from helpers import CELLS

B, T, I, H, O = 4, 6, 3, 5, 2
LENGTHS = np.array([6, 3, 5, 1])


def data(many_to_one, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, T, I))
    y = rng.integers(0, O, B if many_to_one else (B, T))
    h0 = rng.standard_normal((2 * 2, B, H))
    return X, y, h0, rng


def trainer_of(model, many_to_one, **kwargs):
    kind = cbptt.ManyToOne if many_to_one else cbptt.ManyToMany
    return kind(model, loss="cross_entropy", **kwargs)


def torch_loss(torch, rnn, head, X, y, lengths, many_to_one, state):
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(X), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    out, final = rnn(packed, state)
    if many_to_one:
        h = final[0] if isinstance(final, tuple) else final
        logits = head(torch.cat([h[-2], h[-1]], dim=1))
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)), logits, final
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    valid = torch.arange(T)[None] < torch.from_numpy(lengths)[:, None]
    logits = head(out)
    return (torch.nn.functional.cross_entropy(logits[valid], torch.from_numpy(y)[valid]),
            logits, final)


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_against_torch(cell, layers, many_to_one):
    torch = pytest.importorskip("torch")
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=layers, bidirectional=True, seed=1)
    X, y, h0, rng = data(many_to_one)
    h0 = h0[:2 * layers]
    c0 = rng.standard_normal(h0.shape) if cell == "lstm" else None
    trainer = trainer_of(model, many_to_one)
    loss, grads, final = trainer.loss_and_grad(X, y, h0=h0, c0=c0, lengths=LENGTHS,
                                               return_state=True)
    rnn, head = model.to_torch()
    state = torch.from_numpy(h0).requires_grad_()
    cstate = None if c0 is None else torch.from_numpy(c0).requires_grad_()
    want, logits, want_final = torch_loss(torch, rnn, head, X, y, LENGTHS, many_to_one,
                                          state if c0 is None else (state, cstate))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)
    named = dict(rnn.named_parameters())
    named.update({"head." + k: p for k, p in head.named_parameters()})
    assert sorted(named) == sorted(model.state_dict())
    for name, parameter in named.items():
        np.testing.assert_allclose(grads[name], parameter.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["h0"], state.grad.numpy(), rtol=0, atol=1e-10)
    if c0 is not None:
        np.testing.assert_allclose(grads["c0"], cstate.grad.numpy(), rtol=0, atol=1e-10)
        final, want_final = final[0], want_final[0]
    np.testing.assert_allclose(final, want_final.detach().numpy(), rtol=0, atol=1e-12)
    predicted = (trainer.predict(X, h0, c0, lengths=LENGTHS) if many_to_one else
                 model.predict(X, h0, c0, lengths=LENGTHS))
    logits = logits.detach().numpy()
    if not many_to_one:
        valid = np.arange(T)[None] < LENGTHS[:, None]
        predicted, logits = predicted[valid], logits[valid]
    np.testing.assert_allclose(predicted, logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["tanh", "gru"])
def test_finite_differences_of_every_parameter(cell):
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, bidirectional=True, seed=2)
    X, y, _, _ = data(False, 3)
    trainer = trainer_of(model, False)
    _, grads = trainer.loss_and_grad(X, y, lengths=LENGTHS)
    for name, view in model.named_parameters():
        numeric = np.empty_like(view)
        for index in np.ndindex(view.shape):
            keep = view[index]
            view[index] = keep + 1e-6
            up = trainer.loss_and_grad(X, y, lengths=LENGTHS)[0]
            view[index] = keep - 1e-6
            numeric[index] = (up - trainer.loss_and_grad(X, y, lengths=LENGTHS)[0]) / 2e-6
            view[index] = keep
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-9, err_msg=name)


def test_an_adam_step_is_torchs():
    torch = pytest.importorskip("torch")
    model = cbptt.RNN(I, H, O, cell="lstm", num_layers=2, bidirectional=True, seed=3)
    X, y, _, _ = data(True, 4)
    rnn, head = model.to_torch()
    trainer = trainer_of(model, True, optimizer=cbptt.Adam(lr=1e-2), clip_norm=0.3)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(3):
        trainer.step(X, y, lengths=LENGTHS)
        optimizer.zero_grad()
        torch_loss(torch, rnn, head, X, y, LENGTHS, True, None)[0].backward()
        torch.nn.utils.clip_grad_norm_([*rnn.parameters(), *head.parameters()], 0.3)
        optimizer.step()
    back = cbptt.RNN.from_torch(rnn, head)
    assert back.bidirectional
    np.testing.assert_allclose(model.params, back.params, rtol=0, atol=1e-10)


def test_token_ids_embeddings_and_files(tmp_path):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 7, (B, T))
    model = cbptt.RNN(7, H, O, cell="gru", num_layers=2, bidirectional=True, seed=4)
    trainer = trainer_of(model, False)
    y = rng.integers(0, O, (B, T))
    loss, grads = trainer.loss_and_grad(ids, y, lengths=LENGTHS)
    loss_hot, grads_hot = trainer.loss_and_grad(np.eye(7)[ids], y, lengths=LENGTHS)
    assert loss == pytest.approx(loss_hot, rel=1e-13)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_hot[name], rtol=0, atol=1e-12)
    table = cbptt.RNN(I, H, O, cell="lstm", bidirectional=True, vocab_size=7, seed=5)
    value, table_grads = trainer_of(table, True).loss_and_grad(ids, y[:, 0], lengths=LENGTHS)
    assert np.isfinite(value) and np.abs(table_grads["embedding.weight"]).max() > 0
    model.save(tmp_path / "bi")
    back = cbptt.load(tmp_path / "bi.npz")
    assert back.bidirectional and back.config() == model.config()
    np.testing.assert_array_equal(back.predict(ids, lengths=LENGTHS),
                                  model.predict(ids, lengths=LENGTHS))


def test_what_it_refuses():
    model = cbptt.RNN(I, H, O, bidirectional=True)
    X, y, _, _ = data(False)
    with pytest.raises(ValueError, match="Truncated does not train a bidirectional model"):
        cbptt.Truncated(model, k1=2)
    with pytest.raises(ValueError, match="bidirectional"):
        cbptt.Seq2Seq(cbptt.RNN(I, H, None, bidirectional=True), cbptt.RNN(I, H, O))
    with pytest.raises(ValueError, match="h0 must have shape"):
        trainer_of(model, False).loss_and_grad(X, y, h0=np.zeros((1, B, H)))
    with pytest.raises(ValueError, match="lengths is for bidirectional models"):
        cbptt.RNN(I, H, O).predict(X, lengths=LENGTHS)
    with pytest.raises(ValueError, match="lengths is for ManyToOne and bidirectional"):
        trainer_of(cbptt.RNN(I, H, O), False).step(X, y, lengths=LENGTHS)


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_the_two_directions_at_once_give_what_they_give_one_after_the_other(cell, many_to_one):
    """With BLAS on two threads and calls that qualify for the team, a layer's directions run
    at once, one thread each (Bidirectional.together); each call then runs alone with BLAS on
    one thread, so the results are those of the directions run in turn at one thread."""
    from cbptt._threads import blas_threads
    if blas_threads() < 2:
        pytest.skip("BLAS runs one thread here: the directions never run at once")
    rng = np.random.default_rng(4)
    B, T, I, H, O = 6, 9, 3, 5, 2
    X = rng.standard_normal((B, T, I))
    Y = rng.standard_normal((B, O) if many_to_one else (B, T, O))
    lengths = np.array([9, 3, 7, 1, 9, 5])
    results = []
    for knobs in (dict(team_min_flops=0, team_min_call_flops=0, team_min_batch=2),
                  dict(team=1, concurrent_directions=False)):
        with cbptt.settings(**knobs):
            model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, bidirectional=True, seed=3,
                              dropout=0.3, recurrent_dropout=0.2)
            trainer = (cbptt.ManyToOne if many_to_one else cbptt.ManyToMany)(
                model, optimizer=cbptt.Adam(lr=0.01), seed=2)
            losses = [trainer.step(X, Y, lengths=lengths) for _ in range(3)]
            runner = trainer._engines[("bidirectional", B, T, False)]
            results.append((losses, model.params.copy(), runner.together))
    (together_losses, together_params, together), (alone_losses, alone_params, alone) = results
    assert together and not alone
    assert together_losses == alone_losses
    np.testing.assert_array_equal(together_params, alone_params)
