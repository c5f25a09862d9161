"""The adding problem (Hochreiter & Schmidhuber, 1997) with many-to-one training.

By default an LSTM and a tanh RNN of the same size are trained on sequences of T=100 steps
with the same seeds and budget: the LSTM solves it (test MSE well below 0.01) while the tanh
RNN stays near the 0.167 of always guessing the mean. ``--cell tanh --steps 20`` shows a
tanh RNN solving the short version.

    python examples/adding_problem.py [--cell lstm tanh] [--steps 100] [--updates 2000]
"""
import argparse
import time

import numpy as np

import cbptt
from cbptt.datasets import adding_problem


def train(cell, steps, hidden_size=32, batch=32, updates=2000, lr=1e-2, seed=0,
          dtype=np.float32, report_every=250, log=print):
    """Train one model; returns its test MSE."""
    X_train, y_train = adding_problem(20000, steps, seed=seed, dtype=dtype)
    X_test, y_test = adding_problem(1000, steps, seed=seed + 1, dtype=dtype)
    model = cbptt.RNN(input_size=2, hidden_size=hidden_size, output_size=1, cell=cell,
                      dtype=dtype, seed=seed)
    trainer = cbptt.ManyToOne(model, loss="mse", optimizer=cbptt.Adam(lr=lr), clip_norm=1.0)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for update in range(1, updates + 1):
        rows = rng.integers(0, len(X_train), size=batch)
        loss = trainer.step(X_train[rows], y_train[rows])
        if report_every and update % report_every == 0:
            test_mse = float(np.mean((trainer.predict(X_test) - y_test) ** 2))
            log(f"  {cell:5s} update {update:5d}  train loss {loss:.4f}  test MSE {test_mse:.4f}")
    elapsed = time.perf_counter() - start
    test_mse = float(np.mean((trainer.predict(X_test) - y_test) ** 2))
    log(f"{cell} T={steps}: test MSE {test_mse:.4f} (guessing the mean: 0.167), "
        f"{updates} updates of batch {batch} in {elapsed:.1f} s")
    return test_mse


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", nargs="+", default=["lstm", "tanh"],
                        choices=["tanh", "relu", "lstm", "gru"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for cell in args.cell:
        train(cell, args.steps, hidden_size=args.hidden, updates=args.updates, seed=args.seed)


if __name__ == "__main__":
    main()
