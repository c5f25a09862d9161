"""Property-based tests: random cells, layers, shapes (1s included), dtypes and losses."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cbptt

import reference
from helpers import CELLS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw):
    cell = draw(st.sampled_from(CELLS))
    num_layers = draw(st.integers(1, 3))
    batch, steps = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    input_size, hidden_size = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    output_size = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["many_to_many", "many_to_one"]))
    loss = draw(st.sampled_from(["mse", "cross_entropy"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(input_size, hidden_size, output_size, cell=cell, num_layers=num_layers,
                      seed=seed)
    X = rng.normal(size=(batch, steps, input_size))
    out = (batch, output_size) if mode == "many_to_one" else (batch, steps, output_size)
    Y = rng.normal(size=out) if loss == "mse" else rng.integers(0, output_size, size=out[:-1])
    trainer = (cbptt.ManyToOne if mode == "many_to_one" else cbptt.ManyToMany)(model, loss=loss)
    return model, trainer, X, Y, mode


@SETTINGS
@given(cases())
def test_compiled_gradients_match_the_reference(case):
    model, trainer, X, Y, mode = case
    loss, grads = trainer.loss_and_grad(X, Y)
    ref_loss, ref_grads = reference.loss_and_grad(
        model.state_dict(), X, Y, cell=model.cell, num_layers=model.num_layers, mode=mode,
        loss=trainer.loss)
    assert loss == pytest.approx(ref_loss, rel=1e-10, abs=1e-14)
    for name, expected in ref_grads.items():
        np.testing.assert_allclose(grads[name], expected, rtol=1e-9, atol=1e-12, err_msg=name)


@SETTINGS
@given(cases())
def test_predict_agrees_with_the_forward_pass_of_loss_and_grad(case):
    model, trainer, X, Y, mode = case
    loss, _ = trainer.loss_and_grad(X, Y)
    pred = model.predict(X)
    if mode == "many_to_one":
        pred = pred[:, -1]
    if trainer.loss == "mse":
        expected = np.mean((pred - Y) ** 2)
    else:
        logp = reference.log_softmax(pred)
        expected = -np.mean(np.take_along_axis(logp, Y[..., None], axis=-1))
    assert loss == pytest.approx(expected, rel=1e-10, abs=1e-14)


@SETTINGS
@given(cases(), st.data())
def test_batch_gradient_is_the_size_weighted_mean_of_its_parts(case, data):
    model, trainer, X, Y, _ = case
    if len(X) < 2:
        return
    cut = data.draw(st.integers(1, len(X) - 1))
    loss, grads = trainer.loss_and_grad(X, Y)
    loss_a, grads_a = trainer.loss_and_grad(X[:cut], Y[:cut])
    loss_b, grads_b = trainer.loss_and_grad(X[cut:], Y[cut:])
    wa, wb = cut / len(X), 1 - cut / len(X)
    assert loss == pytest.approx(wa * loss_a + wb * loss_b, rel=1e-10, abs=1e-14)
    for name, _ in model.named_parameters():
        np.testing.assert_allclose(grads[name], wa * grads_a[name] + wb * grads_b[name],
                                   rtol=1e-9, atol=1e-12, err_msg=name)


@SETTINGS
@given(cases())
def test_float32_agrees_with_float64(case):
    model, trainer, X, Y, _ = case
    model32 = cbptt.RNN(**dict(model.config(), dtype=np.float32))
    model32.load_state_dict(model.state_dict())
    trainer32 = type(trainer)(model32, loss=trainer.loss)
    loss, grads = trainer.loss_and_grad(X, Y)
    loss32, grads32 = trainer32.loss_and_grad(X, Y)
    assert loss32 == pytest.approx(loss, rel=1e-4, abs=1e-6)
    for name, _ in model.named_parameters():
        scale = max(np.abs(grads[name]).max(), 1e-3)
        assert np.abs(grads32[name] - grads[name]).max() <= 1e-4 * scale + 1e-6, name
