import numpy as np

import cbptt


def test_readme_example_runs_and_learns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 20, 8))
    Y = np.sin(X.sum(axis=2, keepdims=True))
    model = cbptt.RNN(input_size=8, hidden_size=16, output_size=1, seed=0)
    trainer = cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.Adam(lr=1e-2))
    first = trainer.step(X, Y)
    for _ in range(30):
        last = trainer.step(X, Y)
    assert last < 0.5 * first
    assert model.predict(X).shape == (4, 20, 1)
