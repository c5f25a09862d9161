"""Variable lengths, masks, the gradient-flow picture and the public gradcheck."""
import numpy as np
import pytest

import cbptt


def test_padded_many_to_one_batch_equals_each_sequence_alone():
    rng = np.random.default_rng(0)
    lengths = [5, 8, 3]
    seqs = [rng.normal(size=(n, 2)) for n in lengths]
    y = rng.normal(size=(3, 2))
    X = rng.normal(size=(3, 8, 2)) * 100          # garbage in the padding
    for b, s in enumerate(seqs):
        X[b, :len(s)] = s
    model = cbptt.RNN(2, 4, 2, cell="lstm", num_layers=2, seed=0)
    trainer = cbptt.ManyToOne(model, loss="mse")
    loss, grads = trainer.loss_and_grad(X, y, lengths=np.array(lengths))
    alone = [trainer.loss_and_grad(s[None], y[b:b + 1]) for b, s in enumerate(seqs)]
    assert loss == pytest.approx(np.mean([a[0] for a in alone]), rel=1e-12)
    for name, _ in model.named_parameters():
        expected = np.mean([a[1][name] for a in alone], axis=0)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(trainer.predict(X, lengths=lengths),
                               np.concatenate([trainer.predict(s[None]) for s in seqs]),
                               rtol=1e-12)


def test_masked_many_to_many_batch_equals_each_sequence_alone():
    rng = np.random.default_rng(1)
    lengths = [6, 2, 4]
    X = rng.normal(size=(3, 6, 2))
    Y = rng.integers(0, 3, size=(3, 6))
    mask = (np.arange(6)[None, :] < np.array(lengths)[:, None]).astype(float)
    model = cbptt.RNN(2, 5, 3, cell="gru", seed=0)
    trainer = cbptt.ManyToMany(model, loss="cross_entropy")
    loss, grads = trainer.loss_and_grad(X, Y, mask=mask)
    alone = [trainer.loss_and_grad(X[b:b + 1, :n], Y[b:b + 1, :n])
             for b, n in enumerate(lengths)]
    weights = np.array(lengths) / sum(lengths)     # the mean runs over unmasked steps
    assert loss == pytest.approx(sum(w * a[0] for w, a in zip(weights, alone)), rel=1e-12)
    for name, _ in model.named_parameters():
        expected = sum(w * a[1][name] for w, a in zip(weights, alone))
        np.testing.assert_allclose(grads[name], expected, rtol=1e-10, atol=1e-14)


def test_mask_and_lengths_are_checked():
    model = cbptt.RNN(2, 3, 1, seed=0)
    X, Y = np.zeros((2, 4, 2)), np.zeros((2, 4, 1))
    with pytest.raises(ValueError, match="mask must have shape"):
        cbptt.ManyToMany(model).loss_and_grad(X, Y, mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        cbptt.ManyToMany(model).loss_and_grad(X, Y, mask=-np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 4\]"):
        cbptt.ManyToOne(model).loss_and_grad(X, Y[:, 0], lengths=[0, 4])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        cbptt.ManyToOne(model).loss_and_grad(X, Y[:, 0], lengths=[1, 2, 3])


def flow_of(cell, recurrent_scale, steps=30):
    rng = np.random.default_rng(0)
    model = cbptt.RNN(3, 16, 1, cell=cell, seed=0)
    weights = model.state_dict()
    weights["weight_hh_l0"] = recurrent_scale * np.eye(16)
    if cell == "relu":                       # keep every unit active: relu' = 1 everywhere
        weights["bias_ih_l0"] = np.full(16, 1.0)
        weights["weight_ih_l0"] = np.abs(weights["weight_ih_l0"])
    model.load_state_dict(weights)
    X = np.abs(rng.normal(size=(4, steps, 3)))
    trainer = cbptt.ManyToOne(model, loss="mse")
    *_, flow = trainer.loss_and_grad(X, np.zeros((4, 1)), return_flow=True)
    assert flow.shape == (1, steps)
    return flow[0]


def test_flow_vanishes_geometrically_for_a_contractive_tanh_rnn():
    flow = flow_of("tanh", 0.5)
    ratios = flow[:-1] / flow[1:]            # going back one step multiplies by < 0.5
    assert np.all(ratios < 0.5 + 1e-12)
    assert flow[0] < 1e-8 * flow[-1]


def test_flow_explodes_for_a_relu_rnn_with_large_recurrent_weights():
    flow = flow_of("relu", 1.5)
    np.testing.assert_allclose(flow[:-1] / flow[1:], 1.5, rtol=1e-10)


def test_flow_has_one_row_per_layer_in_many_to_many():
    model = cbptt.RNN(2, 3, 1, num_layers=3, seed=0)
    X = np.random.default_rng(0).normal(size=(2, 7, 2))
    loss, grads, state, flow = cbptt.ManyToMany(model).loss_and_grad(
        X, np.zeros((2, 7, 1)), return_state=True, return_flow=True)
    assert flow.shape == (3, 7) and np.all(flow > 0)
    assert state.shape == (3, 2, 3)


@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_gradcheck_reports_small_errors_and_leaves_the_model_alone(cell):
    model = cbptt.RNN(2, 3, 2, cell=cell, num_layers=2, dtype=np.float32, seed=0)
    before = model.params.copy()
    X = np.random.default_rng(0).normal(size=(2, 4, 2))
    errors = cbptt.gradcheck(cbptt.ManyToMany(model, loss="cross_entropy"), X,
                             np.array([[0, 1, 1, 0], [1, 1, 0, 0]]))
    assert set(errors) == set(model.state_dict())
    assert max(errors.values()) < 1e-6
    np.testing.assert_array_equal(model.params, before)


def test_gradcheck_refuses_truncated():
    with pytest.raises(TypeError, match="ManyToMany or ManyToOne"):
        cbptt.gradcheck(cbptt.Truncated(cbptt.RNN(2, 3, 1), k1=2), np.zeros((1, 4, 2)),
                        np.zeros((1, 4, 1)))
