"""A many-to-one tanh RNN learns the adding problem (T=20): test MSE against the 0.167 of
always guessing the mean. Runs in a few seconds."""
import time

import numpy as np

import cbptt
from cbptt.datasets import adding_problem


def main(steps=20, hidden_size=32, batch=32, updates=3000, seed=0):
    X_train, y_train = adding_problem(20000, steps, seed=seed)
    X_test, y_test = adding_problem(2000, steps, seed=seed + 1)
    model = cbptt.RNN(input_size=2, hidden_size=hidden_size, output_size=1, cell="tanh",
                      seed=seed)
    trainer = cbptt.ManyToOne(model, loss="mse", optimizer=cbptt.Adam(lr=3e-3), clip_norm=1.0)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for update in range(1, updates + 1):
        rows = rng.integers(0, len(X_train), size=batch)
        loss = trainer.step(X_train[rows], y_train[rows])
        if update % 500 == 0:
            test_mse = float(np.mean((trainer.predict(X_test) - y_test) ** 2))
            print(f"update {update:5d}  train loss {loss:.4f}  test MSE {test_mse:.4f}")
    elapsed = time.perf_counter() - start
    test_mse = float(np.mean((trainer.predict(X_test) - y_test) ** 2))
    print(f"adding problem T={steps}: test MSE {test_mse:.4f} (guessing the mean: 0.167), "
          f"{updates} updates in {elapsed:.1f} s")
    return test_mse


if __name__ == "__main__":
    main()
