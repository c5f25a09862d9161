"""Pictures as PNG (matplotlib, the ``plot`` extra): a run's loss curves and gradient flow,
and the demo's curves."""
import os

import numpy as np

from ..archive import atomic_write
from ..checkpoint import read_flow, read_metrics
from .errors import PLOT_HINT, MissingExtra


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra(f"plots need matplotlib, which is not installed: {PLOT_HINT}") \
            from None
    return plt


def _save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def plot_run(run_dir, output=None):
    """Loss curves of a run (and a heat map of its gradient flow, when recorded) to a PNG;
    returns its path."""
    columns, metric = read_metrics(run_dir)
    flow = read_flow(run_dir)
    plt = _pyplot()
    output = output or os.path.join(run_dir, "curves.png")
    panels = 2 if flow is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    step, train, val = columns["step"], columns["train_loss"], columns["val_loss"]
    is_val = ~np.isnan(val)
    train_rows = ~is_val & ~np.isnan(train)
    ax.plot(step[train_rows], train[train_rows], lw=0.8, label="train")
    if is_val.any():
        ax.plot(step[is_val], val[is_val], "o-", label="validation")
    ax.set(title=os.path.basename(os.path.abspath(run_dir)), xlabel="step", ylabel="loss")
    ax.legend()
    if flow is not None:
        steps, epochs, layers, values = flow
        top = layers == layers.max()
        image = np.log10(np.maximum(values[top], 1e-30))
        ax = axes[0, 1]
        im = ax.imshow(image, aspect="auto", origin="lower", cmap="viridis",
                       extent=(-0.5, image.shape[1] - 0.5, 0.5, image.shape[0] + 0.5))
        ax.set(title=f"gradient flow, layer {layers.max()}: log10 ||dL/dh_t||",
               xlabel="time step t", ylabel="epoch")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    _save_figure(fig, output)
    plt.close(fig)
    return output


def plot_demo(path, adding, chars, dated):
    """Loss curves of the demo's three models in one PNG. MissingExtra without matplotlib."""
    plt = _pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4))
    mse, losses, evals, _ = adding
    a.semilogy(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.6, label="train (batch)")
    a.semilogy(*zip(*evals), "o-", label="test MSE")
    a.axhline(1 / 6, color="gray", ls="--", label="guessing the mean")
    a.set(title="(a) adding problem, many-to-one LSTM", xlabel="update", ylabel="MSE")
    a.legend()
    bpc, unigram, closses, cevals, _, _ = chars
    b.plot(np.arange(1, len(closses) + 1), closses, lw=0.6, alpha=0.6, label="train (block)")
    b.plot(*zip(*cevals), "o-", label="held-out")
    b.axhline(unigram, color="gray", ls="--", label="unigram entropy")
    b.set(title="(b) character LSTM, truncated BPTT", xlabel="update", ylabel="bits per char")
    b.legend()
    _, dlosses, devals, _, _ = dated
    c.semilogy(np.arange(1, len(dlosses) + 1), dlosses, lw=0.6, alpha=0.6, color="C0")
    c.set(title="(c) dates to ISO, GRU encoder-decoder", xlabel="update",
          ylabel="train loss (batch, nats per character)")
    exact = c.twinx()
    exact.plot(*zip(*devals), "o-", color="C1")
    exact.set(ylim=(0, 1), ylabel="held-out exact match (greedy)")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
