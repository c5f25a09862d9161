"""Smoke test of an installed cbptt, run from outside the source tree: import, ten training
steps of every cell with every trainer, save, load, predict."""
import os
import sys
import tempfile
import time

import numpy as np

start = time.perf_counter()
import cbptt  # noqa: E402

import_ms = (time.perf_counter() - start) * 1e3
assert sys.prefix != sys.base_prefix, "not running inside the fresh virtual environment"
assert not os.path.abspath(cbptt.__file__).startswith(os.path.abspath(sys.argv[1])), \
    f"imported the source tree's cbptt ({cbptt.__file__}), not the installed one"

rng = np.random.default_rng(0)
X = rng.normal(size=(4, 12, 3))
for cell in ("tanh", "relu", "lstm", "gru"):
    for dtype in (np.float32, np.float64):
        model = cbptt.RNN(3, 8, 2, cell=cell, num_layers=2, dtype=dtype, seed=0)
        trainers = [(cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=1e-2)), rng.normal(size=(4, 12, 2))),
                    (cbptt.ManyToOne(model, loss="cross_entropy"), rng.integers(0, 2, size=4)),
                    (cbptt.Truncated(model, k1=4, k2=6), rng.normal(size=(4, 12, 2)))]
        for trainer, Y in trainers:
            losses = [trainer.step(X, Y) for _ in range(10)]
            assert all(np.isfinite(losses)), (cell, type(trainer).__name__, losses)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.npz")
            model.save(path)
            loaded = cbptt.load(path)
            np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
print(f"smoke test passed: cbptt {cbptt.__version__} from {os.path.dirname(cbptt.__file__)}, "
      f"import {import_ms:.0f} ms, BLAS thread control: {cbptt.local_thread_control()}")
