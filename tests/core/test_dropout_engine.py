"""Dropout inside the engine (_core/dropout.pxd): the masks a call draws are those
``_dropout.dropout_mask`` returns for its key (the test hook), and with them fixed the loss and
every gradient equal the NumPy reference's (tests/reference.py, masks given) and central
differences, on every path of the forward and backward (one thread, a split, a column
partition, chunks)."""
import numpy as np
import pytest

import cbptt
from cbptt import _dropout, _engine

import reference
from helpers import CELLS, set_parts

B, T, I, H, O = 5, 6, 3, 4, 2
KEY = _dropout.dropout_key(7, 3)


def masks_of(key, num_layers, p, q, row0=0, dtype=np.float64):
    """The scaled masks of a call keyed `key`, as the reference takes them."""
    between = [None] + [_dropout.dropout_mask(key, k, p, B, H, steps=T, row0=row0, dtype=dtype)
                        if p > 0 else None for k in range(1, num_layers)]
    recurrent = [_dropout.dropout_mask(key, k, q, B, H, row0=row0, dtype=dtype) if q > 0
                 else None for k in range(num_layers)]
    return {"between": between, "recurrent": recurrent}


def settings_for(path):
    if path in ("split", "columns", "shared"):
        set_parts(2, {"split": "rows", "columns": "columns", "shared": "shared"}[path])
    else:
        cbptt.set_settings(**{"one thread": dict(team=1),
                              "chunks": dict(team=1, chunk_rows=8, chunk_min_steps=2,
                                             whole_gated_input=False,
                                             gru_chunk_grads_bytes=0)}[path])


def test_a_mask_keeps_each_unit_with_probability_one_minus_p():
    mask = _dropout.dropout_mask(KEY, 1, 0.3, 64, 500, steps=10)
    assert mask.shape == (10, 64, 500)
    assert set(np.unique(mask)) == {0.0, 1 / 0.7}
    assert abs((mask == 0).mean() - 0.3) < 0.005
    recurrent = _dropout.dropout_mask(KEY, 1, 0.3, 64, 500)
    assert recurrent.shape == (64, 500) and abs((recurrent == 0).mean() - 0.3) < 0.01
    # another key, layer, stream or row offset draws another mask
    others = [_dropout.dropout_mask(_dropout.dropout_key(7, 4), 1, 0.3, 64, 500, steps=10),
              _dropout.dropout_mask(KEY, 2, 0.3, 64, 500, steps=10),
              _dropout.dropout_mask(KEY, 1, 0.3, 64, 500, steps=10, stream0=1)]
    for other in others:
        assert 0.3 < (other != mask).mean() < 0.6
    # rows from row0 are the caller's rows row0 ...
    shifted = _dropout.dropout_mask(KEY, 1, 0.3, 60, 500, steps=10, row0=4)
    np.testing.assert_array_equal(shifted, mask[:, 4:])
    assert not (mask[1:] == mask[:-1]).all()          # a new mask each step
    single = _dropout.dropout_mask(KEY, 1, 0.3, 64, 500, steps=10, dtype=np.float32)
    np.testing.assert_array_equal(single == 0, mask == 0)     # the same units, either dtype
    assert single.max() == np.float32(1 / 0.7)


@pytest.mark.parametrize("path", ["one thread", "split", "columns", "shared", "chunks"])
@pytest.mark.parametrize("rates", [(0.4, 0.0), (0.0, 0.3), (0.5, 0.25)])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_the_masks_equal_the_reference(cell, many_to_one, rates, path):
    p, q = rates
    rng = np.random.default_rng(5)
    layers = 2
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=layers, seed=2)
    X = rng.standard_normal((B, T, I))
    Y = rng.standard_normal((B, O) if many_to_one else (B, T, O))
    h0 = rng.standard_normal((layers, B, H))
    lengths = np.array([6, 2, 5, 1, 6]) if many_to_one else None
    settings_for(path)
    engine = _engine.Engine(cell, layers, I, H, O, B, T, np.float64, many_to_one=many_to_one,
                            dropout=p, recurrent_dropout=q)
    engine.set_dropout(KEY)
    grads = np.zeros_like(model.params)
    dh0 = np.zeros_like(h0)
    loss = engine.loss_and_grad(X, Y, model.params, grads, h0=h0, dh0=dh0, lengths=lengths)
    assert engine.last_parts == (2 if path in ("split", "columns", "shared") else 1)
    mode = "many_to_one" if many_to_one else "many_to_many"
    masks = masks_of(KEY, layers, p, q)
    want, want_grads = reference.loss_and_grad(model.state_dict(), X, Y, cell=cell,
                                               num_layers=layers, mode=mode, loss="mse",
                                               h0=h0, lengths=lengths, masks=masks)
    assert loss == pytest.approx(want, rel=1e-12)
    got = dict(zip([name for name, _, _ in model._layout],
                   [grads[o:o + int(np.prod(s))].reshape(s) for _, s, o in model._layout]))
    for name, value in got.items():
        np.testing.assert_allclose(value, want_grads[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(dh0, want_grads["h0"], rtol=1e-10, atol=1e-12)
    # the same call again draws the same masks: bit for bit
    again = np.zeros_like(grads)
    assert engine.loss_and_grad(X, Y, model.params, again, h0=h0, lengths=lengths) == loss
    np.testing.assert_array_equal(again, grads)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_dropout_are_finite_differences(cell):
    rng = np.random.default_rng(8)
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=4)
    X = rng.standard_normal((B, T, I))
    Y = rng.standard_normal((B, T, O))

    def call(params, grads):
        engine = _engine.Engine(cell, 2, I, H, O, B, T, np.float64, dropout=0.3,
                                recurrent_dropout=0.4)
        engine.set_dropout(KEY)
        return engine.loss_and_grad(X, Y, params, grads)

    grads = np.zeros_like(model.params)
    call(model.params, grads)
    numeric = np.empty_like(grads)
    scratch = np.zeros_like(grads)
    for j in range(grads.size):
        params = model.params.copy()
        params[j] += 1e-6
        up = call(params, scratch)
        params[j] -= 2e-6
        numeric[j] = (up - call(params, scratch)) / 2e-6
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_an_encoder_with_dropout_equals_the_reference_masks(cell, dtype):
    """The headless engine's two phases (encode, backward_from_final) draw the same masks."""
    rng = np.random.default_rng(1)
    model = cbptt.RNN(I, H, None, cell=cell, num_layers=2, seed=3, dtype=dtype)
    X = rng.standard_normal((B, T, I)).astype(dtype)
    whole = _engine.Engine(cell, 2, I, H, 0, B, T, dtype, many_to_one=True, dropout=0.5,
                           recurrent_dropout=0.5)
    whole.set_dropout(KEY)
    h_final = np.zeros((2, B, H), dtype)
    whole.encode(X, model.params, h_final)
    dh_final = rng.standard_normal((2, B, H)).astype(dtype)
    grads = np.zeros_like(model.params)
    whole.backward_from_final(grads, dh_final)
    plain = _engine.Engine(cell, 2, I, H, 0, B, T, dtype, many_to_one=True)
    plain_final = np.zeros_like(h_final)
    plain.encode(X, model.params, plain_final)
    assert not np.array_equal(plain_final, h_final)       # the masks changed the states
    params = model.state_dict()
    masks = masks_of(KEY, 2, 0.5, 0.5, dtype=dtype)
    fw = reference.forward({k: v.astype(np.float64) for k, v in params.items()} |
                           {"head.weight": np.zeros((1, H)), "head.bias": np.zeros(1)},
                           X.astype(np.float64), cell=cell, num_layers=2, masks=masks)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(h_final, fw["h_last"], rtol=tol, atol=tol)


def test_rates_are_checked():
    for bad in (dict(dropout=1.0), dict(dropout=-0.1), dict(recurrent_dropout=1.5),
                dict(dropout=0.2, training=False)):
        with pytest.raises(ValueError, match="dropout"):
            _engine.Engine("gru", 2, I, H, O, B, T, np.float64, **bad)
