"""An Engine without a head (output_size 0): an encoder. Its final state is each row's after
its own last step lengths[b] - 1, and its BPTT starts from the gradient with respect to that
state (dh_final, dc_final), entering every layer at each row's last step (the encoder half of
cbptt.Seq2Seq). Checked against finite differences of the final state, against the state of
each sequence run alone, and split between sub-engines against one thread."""
import numpy as np
import pytest

import cbptt
from cbptt._engine import Engine, param_layout

from helpers import CELLS, set_parts

B, T, I, H = 4, 6, 3, 5
LENGTHS = np.array([6, 2, 4, 1])


def make(cell, layers, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed + 7)
    enc = cbptt.RNN(I, H, None, cell=cell, num_layers=layers, seed=seed, dtype=dtype)
    X = rng.standard_normal((B, T, I)).astype(dtype)
    shape = (layers, B, H)
    dh = rng.standard_normal(shape).astype(dtype)
    dc = rng.standard_normal(shape).astype(dtype) if cell == "lstm" else None
    return enc, X, dh, dc


def encode(enc, X, lengths, params=None, training=False, dh=None, dc=None):
    """(h_final, c_final), and the gradients (training)."""
    batch, steps = X.shape[:2]
    engine = enc.make_engine(batch, steps, training=training, many_to_one=True)
    h, c = enc.new_state(batch)
    params = enc.params if params is None else params
    if not training:
        engine.predict(X, params, None, h_final=h, c_final=c, lengths=lengths)
        return h, c
    grads = np.zeros_like(params)
    loss = engine.loss_and_grad(X, None, params, grads, h_final=h, c_final=c,
                                lengths=lengths, dh_final=dh, dc_final=dc)
    assert loss == 0 and engine.loss_terms == 0
    return h, c, grads, engine


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_the_gradient_is_that_of_the_final_state(cell, layers):
    """grads = d(sum dh * h_final + sum dc * c_final)/dparams, by central differences."""
    enc, X, dh, dc = make(cell, layers)
    h, c, grads, _ = encode(enc, X, LENGTHS, training=True, dh=dh, dc=dc)

    def objective(params):
        h, c = encode(enc, X, LENGTHS, params)
        return (h * dh).sum() + (0 if c is None else (c * dc).sum())

    numeric = np.empty_like(grads)
    for i in range(grads.size):
        p = enc.params.copy()
        p[i] += 1e-6
        up = objective(p)
        p[i] -= 2e-6
        numeric[i] = (up - objective(p)) / 2e-6
    assert np.abs(grads).max() > 0.1
    np.testing.assert_allclose(grads, numeric, atol=2e-8, rtol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_the_final_state_is_each_rows_at_its_own_last_step(cell):
    enc, X, _, _ = make(cell, 2)
    h, c = encode(enc, X, LENGTHS)
    h_train = encode(enc, X, LENGTHS, training=True, dh=np.zeros_like(h))[0]
    np.testing.assert_array_equal(h_train, h)
    for b, length in enumerate(LENGTHS):
        alone_h, alone_c = encode(enc, X[b:b + 1, :length], None)
        np.testing.assert_allclose(h[:, b], alone_h[:, 0], rtol=0, atol=1e-14)
        if c is not None:
            np.testing.assert_allclose(c[:, b], alone_c[:, 0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_after_the_last_step_changes_nothing(cell):
    enc, X, dh, dc = make(cell, 2)
    h, c, grads, _ = encode(enc, X, LENGTHS, training=True, dh=dh, dc=dc)
    X2 = X.copy()
    for b, length in enumerate(LENGTHS):
        X2[b, length:] = 1e3
    h2, c2, grads2, _ = encode(enc, X2, LENGTHS, training=True, dh=dh, dc=dc)
    np.testing.assert_array_equal(h2, h)
    np.testing.assert_array_equal(grads2, grads)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", CELLS)
def test_a_split_encoder_call_computes_what_one_thread_computes(cell, dtype):
    enc, X, dh, dc = make(cell, 2, dtype)
    alone = encode(enc, X, LENGTHS, training=True, dh=dh, dc=dc)
    assert alone[3].last_parts == 1
    set_parts(2)
    split = encode(enc, X, LENGTHS, training=True, dh=dh, dc=dc)
    assert split[3].last_parts == 2
    tol = 1e-13 if dtype == np.float64 else 2e-6
    for got, want in zip(split[:3], alone[:3]):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    h, c = encode(enc, X, LENGTHS)
    np.testing.assert_allclose(h, alone[0], rtol=0, atol=tol)


def test_the_layout_of_an_encoder_has_no_head():
    names = [name for name, _, _ in param_layout("gru", 2, I, H, 0)]
    assert names == [f"{kind}_l{layer}" for layer in range(2)
                     for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def test_what_an_encoder_engine_refuses():
    enc, X, dh, dc = make("lstm", 1)
    with pytest.raises(ValueError, match="many_to_one=True"):
        Engine("lstm", 1, I, H, 0, B, T, np.float64)
    with pytest.raises(ValueError, match="has no head"):
        enc.make_engine(B, T)
    engine = enc.make_engine(B, T, many_to_one=True)
    grads = np.zeros_like(enc.params)
    with pytest.raises(ValueError, match="no target"):
        engine.loss_and_grad(X, np.zeros((B, 1)), enc.params, grads, dh_final=dh)
    with pytest.raises(ValueError, match="dh_final: expected"):
        engine.loss_and_grad(X, None, enc.params, grads, dh_final=dh[:, :2].copy())
    headed = cbptt.RNN(I, H, 2, cell="lstm")
    engine = headed.make_engine(B, T, many_to_one=True)
    with pytest.raises(ValueError, match="without a head"):
        engine.loss_and_grad(X, np.zeros((B, 2)), headed.params, np.zeros_like(headed.params),
                             dh_final=dh)
    gru = cbptt.RNN(I, H, None, cell="gru")
    engine = gru.make_engine(B, T, many_to_one=True)
    with pytest.raises(ValueError, match="lstm cell only"):
        engine.loss_and_grad(X, None, gru.params, np.zeros_like(gru.params), dh_final=dh,
                             dc_final=dc)


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_encode_then_backward_from_final_is_the_whole_call(cell, parts):
    """The two halves of an encoder's call (the decoder runs between them in Seq2Seq) write
    the bits of the one call: the final state, then the gradients."""
    enc, X, dh, dc = make(cell, 2)
    if parts == 2:
        set_parts(2)
    h, c, grads, _ = encode(enc, X, LENGTHS, training=True, dh=dh, dc=dc)
    engine = enc.make_engine(B, T, many_to_one=True)
    h2, c2 = enc.new_state(B)
    engine.encode(X, enc.params, h2, c2, lengths=LENGTHS)
    assert engine.last_parts == parts
    np.testing.assert_array_equal(h2, h)
    grads2 = np.full_like(grads, np.nan)
    assert engine.backward_from_final(grads2, dh, dc) == 0
    assert engine.last_parts == parts
    np.testing.assert_array_equal(grads2, grads)
    assert engine.grad_sq_norm == pytest.approx(float((grads ** 2).sum()), rel=1e-12)
    with pytest.raises(RuntimeError, match="needs an encode call"):
        engine.backward_from_final(grads2, dh, dc)



@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_a_gradient_entering_at_every_step(cell, parts):
    """backward_from_final(dh_steps=G): the gradient of sum_{b,t} G[b, t] . h_t (the top
    layer's states), with dL/dx: one layer of a stack, or one direction of a bidirectional
    one, as a differentiable function."""
    enc, X, dh, dc = make(cell, 2)
    rng = np.random.default_rng(9)
    G = rng.standard_normal((B, T, H))
    if parts == 2:
        set_parts(2)

    def run(params, x=X):
        engine = enc.make_engine(B, T, many_to_one=True)
        h, c = enc.new_state(B)
        engine.encode(x, params, h, c)
        top = np.array(engine.states()[0][-1, 1:]).transpose(1, 0, 2)     # (B, T, H)
        grads, dx = np.zeros_like(params), np.zeros_like(X)
        engine.backward_from_final(grads, None, None, dx=dx, dh_steps=G)
        assert engine.last_parts == parts
        return (G * top).sum(), grads, dx

    value, grads, dx = run(enc.params)
    numeric = np.empty_like(grads)
    for i in range(grads.size):
        p = enc.params.copy()
        p[i] += 1e-6
        up = run(p)[0]
        p[i] -= 2e-6
        numeric[i] = (up - run(p)[0]) / 2e-6
    np.testing.assert_allclose(grads, numeric, rtol=1e-6, atol=2e-8)
    numeric = np.empty_like(X)
    for index in np.ndindex(X.shape):
        x = X.copy()
        x[index] += 1e-6
        up = run(enc.params, x)[0]
        x[index] -= 2e-6
        numeric[index] = (up - run(enc.params, x)[0]) / 2e-6
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=2e-8)
