"""Engine.loss_and_grad(dx=...): dL/dx (B, T, I), the gradient with respect to the input
(what an embedding below the first layer learns from), against central differences on every
path of the first layer's backward."""
import numpy as np
import pytest

import cbptt

from helpers import CELLS, set_parts

B, T, I, H = 4, 6, 3, 5


@pytest.mark.parametrize("path", ["one thread", "split", "columns", "chunks"])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_the_input_gradient_is_finite_differences(cell, many_to_one, path):
    rng = np.random.default_rng(3)
    model = cbptt.RNN(I, H, 2, cell=cell, num_layers=2, seed=1)
    X = rng.standard_normal((B, T, I))
    Y = rng.standard_normal((B, 2) if many_to_one else (B, T, 2))
    settings = {"one thread": dict(team=1), "split": None, "columns": None,
                "chunks": dict(team=1, chunk_rows=8, chunk_min_steps=2,
                               whole_gated_input=False, gru_chunk_grads_bytes=0)}[path]
    if settings is None:
        set_parts(2, "rows" if path == "split" else "columns")
    else:
        cbptt.set_settings(**settings)
    engine = model.make_engine(B, T, many_to_one=many_to_one)
    dx = np.full_like(X, np.nan)
    engine.loss_and_grad(X, Y, model.params, np.zeros_like(model.params), dx=dx)
    assert engine.last_parts == (2 if path in ("split", "columns") else 1)

    def loss(Xp):
        return model.make_engine(B, T, many_to_one=many_to_one).loss_and_grad(
            Xp, Y, model.params, np.zeros_like(model.params))

    numeric = np.empty_like(X)
    for index in np.ndindex(X.shape):
        Xp = X.copy()
        Xp[index] += 1e-6
        up = loss(Xp)
        Xp[index] -= 2e-6
        numeric[index] = (up - loss(Xp)) / 2e-6
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-9)
