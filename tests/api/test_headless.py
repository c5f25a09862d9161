"""Models without a head (output_size=None): an encoder's recurrent layers only. Their
parameters are a headed model's without head.*, seed for seed; they save, load and move to and
from torch; everything that needs outputs refuses them, naming the model, and moves nothing."""
import numpy as np
import pytest

import cbptt
from helpers import CELLS


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_a_headless_model_is_a_headed_one_without_its_head(cell, layers):
    encoder = cbptt.RNN(5, 7, None, cell=cell, num_layers=layers, seed=3)
    headed = cbptt.RNN(5, 7, 4, cell=cell, num_layers=layers, seed=3)
    state, full = encoder.state_dict(), headed.state_dict()
    assert not encoder.has_head and headed.has_head
    assert set(state) == {k for k in full if not k.startswith("head.")}
    for key, value in state.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)
    assert encoder.num_parameters == headed.num_parameters - 4 * (7 + 1)
    assert "output_size=None" in repr(encoder)


def test_a_headless_model_saves_and_loads(tmp_path):
    encoder = cbptt.RNN(3, 6, None, cell="gru", num_layers=2, dtype=np.float32, seed=1)
    encoder.save(tmp_path / "encoder.npz")
    loaded = cbptt.load(tmp_path / "encoder.npz")
    assert loaded.output_size is None and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.params, encoder.params)


def test_head_keys_do_not_load_into_a_headless_model():
    encoder = cbptt.RNN(3, 6, None, seed=1)
    before = encoder.params.copy()
    state = cbptt.RNN(3, 6, 2, seed=2).state_dict()
    with pytest.raises(ValueError, match="head.weight"):
        encoder.load_state_dict(state)
    np.testing.assert_array_equal(encoder.params, before)


@pytest.mark.parametrize("make", [
    lambda m: cbptt.ManyToMany(m), lambda m: cbptt.ManyToOne(m),
    lambda m: cbptt.Truncated(m, k1=2), lambda m: m.predict(np.zeros((2, 3, 3))),
    lambda m: m.make_engine(2, 3)])
def test_what_needs_outputs_refuses_a_headless_model(make):
    encoder = cbptt.RNN(3, 6, None, cell="lstm", seed=1)
    before = encoder.params.copy()
    with pytest.raises(ValueError, match="no head.*output_size=None"):
        make(encoder)
    np.testing.assert_array_equal(encoder.params, before)


@pytest.mark.parametrize("cell", CELLS)
def test_a_headless_model_goes_to_and_from_torch(cell):
    torch = pytest.importorskip("torch")
    encoder = cbptt.RNN(4, 5, None, cell=cell, num_layers=2, seed=0)
    rnn, head = encoder.to_torch()
    assert head is None
    for key, value in rnn.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), encoder.state_dict()[key], err_msg=key)
    back = cbptt.RNN.from_torch(rnn, None)
    assert back.output_size is None and back.cell == cell and back.dtype == np.float64
    np.testing.assert_array_equal(back.params, encoder.params)
    # the same layers run the same forward pass in torch and in a headed twin of cbptt's
    headed = cbptt.RNN(4, 5, 1, cell=cell, num_layers=2, seed=0)
    X = np.random.default_rng(0).standard_normal((2, 6, 4))
    _, h = headed.predict(X, return_state=True)
    with torch.no_grad():
        _, h_torch = rnn(torch.from_numpy(X))
    h_torch = h_torch[0] if cell == "lstm" else h_torch
    np.testing.assert_allclose(h[0] if cell == "lstm" else h, h_torch.numpy(), rtol=1e-12,
                               atol=1e-12)
