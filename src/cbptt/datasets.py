"""Small synthetic tasks generated on the fly (no downloads)."""
import numpy as np


def adding_problem(num_sequences, steps, seed=None, dtype=np.float64):
    """The adding problem of Hochreiter & Schmidhuber (1997).

    Each sequence has two channels: values uniform in [0, 1], and a marker that is 1 at two
    random steps (one in each half) and 0 elsewhere. The target is the sum of the two marked
    values. Always predicting the mean (1.0) gives an MSE of 1/6 ~ 0.167.

    Returns X (num_sequences, steps, 2) and y (num_sequences, 1).
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(num_sequences, steps))
    markers = np.zeros((num_sequences, steps))
    rows = np.arange(num_sequences)
    half = steps // 2
    first = rng.integers(0, half, size=num_sequences)
    second = rng.integers(half, steps, size=num_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    X = np.stack([values, markers], axis=2).astype(dtype)
    y = (values[rows, first] + values[rows, second])[:, None].astype(dtype)
    return X, y


def noisy_sine(num_sequences, steps, noise=0.05, seed=None, dtype=np.float64):
    """Sine waves of random frequency and phase with Gaussian noise, for one-step-ahead
    forecasting: X (N, steps, 1) holds s_0..s_{steps-1}, Y (N, steps, 1) holds s_1..s_steps."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.2, size=(num_sequences, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(num_sequences, 1))
    t = np.arange(steps + 1)[None, :]
    series = np.sin(2 * np.pi * freq * t + phase) + noise * rng.normal(size=(num_sequences,
                                                                               steps + 1))
    X = series[:, :-1, None].astype(dtype)
    Y = series[:, 1:, None].astype(dtype)
    return X, Y
