"""Speaker recognition on the Japanese Vowels data set with a bidirectional GRU (many-to-one,
variable lengths).

The data: nine male speakers say the Japanese vowels /ae/; each utterance is a series of 7 to
29 frames of 12 LPC cepstrum coefficients, and the task is to tell the speaker (9 classes).
The standard split has 270 training utterances (30 a speaker) and 370 test ones (24 to 88 a
speaker, recorded on other occasions). M. Kudo, J. Toyama and M. Shimbo, "Multidimensional
curve classification using passing-through regions", Pattern Recognition Letters 20 (11-13),
1103-1111, 1999; in the UCI Machine Learning Repository ("Japanese Vowels") and the UEA
multivariate time series classification archive ("JapaneseVowels").

Published test accuracies: 94.1% for Kudo et al.'s passing-through regions, and 96.2% for the
5-state continuous hidden Markov model they compare with (both as the UCI archive's page for
the data set lists them). Always answering the commonest test speaker scores 23.8% (88/370).

The series are padded to the longest and trained with ``lengths=``: each sequence's forward
direction is read at its own last frame, its reverse direction starts there. The data files
are the archive's ``.ts`` files that the ``sktime`` package ships inside it; they are found
without importing sktime and read with ``cbptt.ts_files.read_ts``. Install it with
``pip install sktime`` (or ``pip install -e ".[test]"`` in a checkout).

    python examples/japanese_vowels.py [--cell gru] [--hidden 32] [--epochs 30] [--seed 0]
"""
import argparse
import importlib.util
import os
import time

import numpy as np

import cbptt
from cbptt.ts_files import read_ts

PUBLISHED = {"passing-through regions (Kudo et al. 1999)": 0.941,
             "5-state continuous HMM (as reported there)": 0.962}


def data_path(split):
    """The path of sktime's copy of JapaneseVowels_{TRAIN,TEST}.ts (split "train" or "test"),
    found without importing sktime; FileNotFoundError if sktime is not installed."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the JapaneseVowels files come with sktime: pip install sktime")
    folder = os.path.join(spec.submodule_search_locations[0], "datasets", "data",
                          "JapaneseVowels")
    path = os.path.join(folder, f"JapaneseVowels_{split.upper()}.ts")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not in this sktime installation")
    return path


def load(dtype=np.float32):
    """(train, test) as LabelledSeries (X (N, T, 12), lengths (N,), y (N,) speaker ids 0-8,
    classes), their features standardised with the training frames' mean and deviation."""
    train, test = (read_ts(data_path(split), dtype=np.float64) for split in ("train", "test"))
    frames = np.concatenate([x[:n] for x, n in zip(train.X, train.lengths)])
    mean, std = frames.mean(axis=0), frames.std(axis=0)

    def standardised(data):
        valid = np.arange(data.X.shape[1]) < data.lengths[:, None]
        X = np.where(valid[:, :, None], (data.X - mean) / std, 0.0).astype(dtype)
        return data._replace(X=X)
    return standardised(train), standardised(test)


def accuracy(trainer, data, batch=128):
    """The share of data's sequences whose predicted class is right."""
    right = 0
    for start in range(0, len(data.y), batch):
        rows = slice(start, start + batch)
        scores = trainer.predict(data.X[rows], lengths=data.lengths[rows])
        right += int((scores.argmax(axis=1) == data.y[rows]).sum())
    return right / len(data.y)


def train(train_data, test_data, cell="gru", hidden_size=32, epochs=30, batch=16, lr=5e-3,
          seed=0, bidirectional=True, report_every=5, log=print):
    """Train a one-layer (bidirectional) model with Adam on shuffled batches; returns the
    trainer (its model trained) and the test accuracy after every epoch."""
    model = cbptt.RNN(train_data.X.shape[2], hidden_size, len(train_data.classes), cell=cell,
                      bidirectional=bidirectional, dtype=train_data.X.dtype, seed=seed)
    trainer = cbptt.ManyToOne(model, loss="cross_entropy", optimizer=cbptt.Adam(lr=lr),
                              clip_norm=1.0)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train_data.y))
        losses = []
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            losses.append(trainer.step(train_data.X[rows], train_data.y[rows],
                                       lengths=train_data.lengths[rows]))
        history.append(accuracy(trainer, test_data))
        if log and report_every and epoch % report_every == 0:
            log(f"  epoch {epoch:3d}  train loss {np.mean(losses):.4f}  "
                f"test accuracy {history[-1]:.1%}")
    return trainer, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="gru", choices=["tanh", "relu", "lstm", "gru"])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unidirectional", action="store_true",
                        help="one direction only (the forward one)")
    args = parser.parse_args(argv)
    train_data, test_data = load()
    print(f"JapaneseVowels: {len(train_data.y)} training and {len(test_data.y)} test "
          f"utterances, lengths {test_data.lengths.min()}-{test_data.lengths.max()}, "
          f"{train_data.X.shape[2]} features, {len(train_data.classes)} speakers")
    start = time.perf_counter()
    _, history = train(train_data, test_data, cell=args.cell, hidden_size=args.hidden,
                       epochs=args.epochs, lr=args.lr, seed=args.seed,
                       bidirectional=not args.unidirectional)
    elapsed = time.perf_counter() - start
    kind = "unidirectional" if args.unidirectional else "bidirectional"
    print(f"{kind} {args.cell}, H={args.hidden}: test accuracy {history[-1]:.1%} after "
          f"{args.epochs} epochs ({elapsed:.1f} s)")
    for name, value in PUBLISHED.items():
        print(f"  published: {name}: {value:.1%}")


if __name__ == "__main__":
    main()
