"""Dropout and recurrent dropout through the trainers: each training call draws the masks of
(seed, dropout_calls) (``_dropout.dropout_mask`` gives them, the test hook), so with them the
loss and gradients equal the NumPy reference's; the same seed and calls give bit-identical
results; rates of 0 are the model without dropout; predictions never drop."""
import numpy as np
import pytest

import cbptt
from cbptt import _dropout

import reference
from helpers import CELLS

B, T, I, H, O = 4, 5, 3, 6, 2


def call_masks(trainer, layers, batch=B, steps=T, stream0=0, units=H):
    """The masks the trainer's next call draws, scaled, as reference.forward takes them."""
    m_p, m_q = trainer.model.dropout, trainer.model.recurrent_dropout
    key = _dropout.dropout_key(trainer.seed, trainer.dropout_calls)
    between = [None] + [_dropout.dropout_mask(key, k, m_p, batch, units, steps=steps,
                                             stream0=stream0) if m_p else None
                        for k in range(1, layers)]
    recurrent = [_dropout.dropout_mask(key, k, m_q, batch, units, stream0=stream0) if m_q
                 else None for k in range(layers)]
    return {"between": between, "recurrent": recurrent}


def data(seed=0, many_to_one=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, T, I))
    Y = rng.standard_normal((B, O) if many_to_one else (B, T, O))
    return X, Y


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_a_training_call_equals_the_reference_with_its_masks(cell, many_to_one):
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=3, seed=1, dropout=0.35,
                      recurrent_dropout=0.3)
    kind = cbptt.ManyToOne if many_to_one else cbptt.ManyToMany
    trainer = kind(model, seed=42)
    X, Y = data(2, many_to_one)
    lengths = np.array([5, 3, 1, 4]) if many_to_one else None
    extra = {"lengths": lengths} if many_to_one else {}
    for call in range(3):                # a new mask each call
        masks = call_masks(trainer, 3)
        want, want_grads = reference.loss_and_grad(
            model.state_dict(), X, Y, cell=cell, num_layers=3,
            mode="many_to_one" if many_to_one else "many_to_many", loss="mse",
            lengths=lengths, masks=masks)
        loss, grads = trainer.loss_and_grad(X, Y, **extra)
        assert trainer.dropout_calls == call + 1
        assert loss == pytest.approx(want, rel=1e-12)
        for name in model.state_dict():
            np.testing.assert_allclose(grads[name], want_grads[name], rtol=1e-10,
                                       atol=1e-12, err_msg=name)


def test_the_same_seed_and_calls_are_bit_identical_and_another_seed_differs():
    X, Y = data(3)

    def run(seed):
        model = cbptt.RNN(I, H, O, cell="lstm", num_layers=2, seed=0, dtype=np.float32,
                          dropout=0.5, recurrent_dropout=0.5)
        trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=0.01), seed=seed)
        losses = [trainer.step(X, Y) for _ in range(4)]
        return losses, model.params.copy()

    first, again, other = run(3), run(3), run(4)
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    assert first[0][1:] != other[0][1:]


@pytest.mark.parametrize("cell", CELLS)
def test_rates_of_zero_are_the_model_without_dropout(cell):
    X, Y = data(4)
    results = []
    for rates in ({}, {"dropout": 0.0, "recurrent_dropout": 0.0}):
        model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=5, **rates)
        trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=0.01), seed=9)
        results.append(([trainer.step(X, Y) for _ in range(3)], model.params.copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_predict_never_drops_and_training_does():
    X, Y = data(5)
    plain = cbptt.RNN(I, H, O, cell="gru", num_layers=2, seed=6)
    dropped = cbptt.RNN(I, H, O, cell="gru", num_layers=2, seed=6, dropout=0.5,
                        recurrent_dropout=0.5)
    np.testing.assert_array_equal(dropped.predict(X), plain.predict(X))
    trainer = cbptt.ManyToMany(dropped)
    assert trainer.loss_and_grad(X, Y)[0] != cbptt.ManyToMany(plain).loss_and_grad(X, Y)[0]


def test_gradcheck_holds_the_masks_of_the_trainers_next_call():
    X, Y = data(6)
    model = cbptt.RNN(I, 3, O, cell="gru", num_layers=2, seed=7, dropout=0.4,
                      recurrent_dropout=0.4)
    trainer = cbptt.ManyToMany(model, seed=1)
    errors = cbptt.gradcheck(trainer, X, Y)
    assert max(errors.values()) < 1e-6
    assert trainer.dropout_calls == 0          # the trainer's own count untouched


@pytest.mark.parametrize("cell", CELLS)
def test_a_truncated_window_draws_its_calls_masks(cell):
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=2, dropout=0.3,
                      recurrent_dropout=0.2)
    trainer = cbptt.Truncated(model, k1=T, k2=T, optimizer=cbptt.SGD(lr=0.1), seed=8)
    X, Y = data(7)
    masks = call_masks(trainer, 2)
    want, want_grads = reference.loss_and_grad(model.state_dict(), X, Y, cell=cell,
                                               num_layers=2, mode="many_to_many", loss="mse",
                                               masks=masks)
    before = model.params.copy()
    loss = trainer.step(X, Y)
    assert loss == pytest.approx(want, rel=1e-12)
    flat = np.concatenate([want_grads[name].ravel() for name in model.state_dict()])
    np.testing.assert_allclose(model.params, before - 0.1 * flat, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_a_seq2seq_step_draws_the_encoders_and_decoders_masks(cell):
    enc = cbptt.RNN(I, H, None, cell=cell, num_layers=2, seed=3, dropout=0.3,
                    recurrent_dropout=0.3)
    dec = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=4, dropout=0.2,
                    recurrent_dropout=0.4)
    trainer = cbptt.Seq2Seq(enc, dec, seed=5)
    X, _ = data(8)
    rng = np.random.default_rng(9)
    Y_in = rng.standard_normal((B, 3, I))
    Y_out = rng.standard_normal((B, 3, O))
    key = _dropout.dropout_key(5, 0)
    enc_masks = {"between": [None, _dropout.dropout_mask(key, 1, 0.3, B, H, steps=T)],
                 "recurrent": [_dropout.dropout_mask(key, k, 0.3, B, H) for k in range(2)]}
    dec_masks = {"between": [None, _dropout.dropout_mask(key, 1, 0.2, B, H, steps=3,
                                                        stream0=2)],
                 "recurrent": [_dropout.dropout_mask(key, k, 0.4, B, H, stream0=2)
                               for k in range(2)]}
    head = {"head.weight": np.zeros((1, H)), "head.bias": np.zeros(1)}
    state = reference.forward(enc.state_dict() | head, X, cell=cell, num_layers=2,
                              masks=enc_masks)
    h0 = state["h_last"]
    c0 = state.get("c_last")
    want = reference.loss_value(dec.state_dict(), Y_in, Y_out, cell=cell, num_layers=2,
                                mode="many_to_many", loss="mse", h0=h0, c0=c0, masks=dec_masks)
    loss, grads = trainer.loss_and_grad(X, Y_in, Y_out)
    assert loss == pytest.approx(want, rel=1e-12)
    assert trainer.dropout_calls == 1


@pytest.mark.parametrize("cell", CELLS)
def test_a_bidirectional_model_with_dropout_is_finite_differences(cell):
    model = cbptt.RNN(I, 3, O, cell=cell, num_layers=2, seed=2, bidirectional=True,
                      dropout=0.4, recurrent_dropout=0.3)
    trainer = cbptt.ManyToOne(model, seed=3)
    X, Y = data(10, many_to_one=True)
    errors = cbptt.gradcheck(trainer, X, Y, lengths=np.array([5, 2, 4, 1]))
    assert max(errors.values()) < 1e-6
    plain = cbptt.RNN(I, 3, O, cell=cell, num_layers=2, seed=2, bidirectional=True)
    assert trainer.loss_and_grad(X, Y)[0] != cbptt.ManyToOne(plain).loss_and_grad(X, Y)[0]


def test_save_and_load_keep_the_rates(tmp_path):
    model = cbptt.RNN(I, H, O, cell="lstm", num_layers=2, dropout=0.25,
                      recurrent_dropout=0.1)
    model.save(tmp_path / "m.npz")
    loaded = cbptt.load(tmp_path / "m.npz")
    assert (loaded.dropout, loaded.recurrent_dropout) == (0.25, 0.1)
    assert "dropout=0.25" in repr(loaded)


@pytest.mark.parametrize("bad", [dict(dropout=1.0), dict(dropout=-0.2),
                                 dict(recurrent_dropout="0.1"), dict(dropout=True)])
def test_bad_rates_are_refused_naming_them(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        cbptt.RNN(I, H, O, **bad)


def test_a_bad_seed_is_refused():
    model = cbptt.RNN(I, H, O, dropout=0.1)
    for seed in (-1, 1.5, "x"):
        with pytest.raises(ValueError, match="seed"):
            cbptt.ManyToMany(model, seed=seed)


def test_torch_exchange_carries_dropout():
    torch = pytest.importorskip("torch")
    model = cbptt.RNN(I, H, O, cell="gru", num_layers=2, dropout=0.3)
    rnn, head = model.to_torch()
    assert rnn.dropout == 0.3
    back = cbptt.RNN.from_torch(torch.nn.LSTM(I, H, 2, batch_first=True, dropout=0.2),
                                torch.nn.Linear(H, O))
    assert back.dropout == 0.2
