"""``cbptt demo``: an LSTM on the adding problem, a character model of Python's docstrings
trained with truncated BPTT, then an encoder-decoder writing dates in ISO form (about a
minute; ``--quick``: a few seconds)."""
import time

import numpy as np

from .. import __version__, data, datasets, dates, pairs
from ..fit_progress import StepBar
from ..model import RNN
from ..optim import Adam
from ..seq2seq import Seq2Seq
from ..trainers import ManyToOne
from ..truncated import Truncated
from .errors import PLOT_HINT, MissingExtra
from .plots import plot_demo

DEMO = {
    False: dict(adding_steps=50, adding_hidden=32, adding_updates=1500, adding_train=20000,
                adding_eval_every=250, corpus=400_000, char_hidden=128, char_batch=32, k1=32,
                k2=32, char_updates=3000, char_lr=3e-3, char_eval_every=500, sample=300,
                dates_train=20000, dates_test=1000, dates_hidden=128, dates_batch=64,
                dates_lr=3e-3, dates_updates=1800, dates_eval_every=300),
    True: dict(adding_steps=10, adding_hidden=16, adding_updates=400, adding_train=4000,
               adding_eval_every=100, corpus=30_000, char_hidden=48, char_batch=16, k1=16,
               k2=16, char_updates=300, char_lr=1e-2, char_eval_every=100, sample=80,
               dates_train=5000, dates_test=500, dates_hidden=64, dates_batch=32,
               dates_lr=1e-2, dates_updates=1000, dates_eval_every=250),
}


def demo_adding(s, seed=0, progress=True, log=print):
    """(a) of the demo: a many-to-one LSTM on the adding problem. Returns (test MSE, losses,
    evaluations [(update, test MSE)], seconds)."""
    T, dtype = s["adding_steps"], np.float32
    X, y = datasets.adding_problem(s["adding_train"], T, seed=seed, dtype=dtype)
    X_test, y_test = datasets.adding_problem(1000, T, seed=seed + 1, dtype=dtype)
    model = RNN(2, s["adding_hidden"], 1, cell="lstm", dtype=dtype, seed=seed)
    trainer = ManyToOne(model, loss="mse", optimizer=Adam(lr=1e-2), clip_norm=1.0)
    guess = float(np.mean((y_test - 1.0) ** 2))
    log(f"(a) adding problem: many-to-one LSTM, T={T}, H={s['adding_hidden']}, float32, "
        f"Adam 1e-2, clip 1.0, batch 32, {s['adding_updates']} updates")
    rng = np.random.default_rng(seed)

    def step():
        rows = rng.integers(0, len(X), size=32)
        return float(trainer.step(X[rows], y[rows]))

    losses, evals, seconds = _updates(
        s["adding_updates"], "adding", progress, step, s["adding_eval_every"],
        lambda: float(np.mean((trainer.predict(X_test) - y_test) ** 2)), "test MSE {:.4f}")
    mse = evals[-1][1]
    ratio = guess / mse
    better = (f"{ratio:.0f}x lower" if ratio >= 10 else f"{ratio:.1f}x lower" if ratio > 1
              else "no better")
    log(f"    test MSE {mse:.4f} vs {guess:.3f} for always guessing the mean ({better}), "
        f"{s['adding_updates']} updates in {seconds:.1f} s")
    return mse, losses, evals, seconds


def demo_chars(s, seed=0, progress=True, log=print):
    """(b) of the demo: a character-level LSTM language model of standard-library docstrings,
    trained with truncated BPTT. Returns (held-out bpc, unigram bpc, losses in bits,
    evaluations [(update, held-out bpc)], sample text, seconds)."""
    text = datasets.stdlib_docstrings(s["corpus"])
    vocab = data.build_vocab(text)
    ids = data.encode(text, vocab)
    cut = data.holdout_start(len(ids), 0.1)
    train_ids, val_ids = ids[:cut], ids[cut:]
    V, B, k1, k2 = len(vocab), s["char_batch"], s["k1"], s["k2"]
    streams = data.char_streams(train_ids, B)
    length = streams.shape[1] - 1
    unigram = data.unigram_bits(train_ids, V)
    log(f"(b) character model: {len(text):,} characters of standard-library docstrings "
        f"(vocabulary {V}), the last {len(val_ids):,} held out; LSTM H={s['char_hidden']}, "
        f"truncated BPTT k1={k1} k2={k2}, {B} streams, Adam {s['char_lr']:g}, "
        f"{s['char_updates']} updates")
    model = RNN(V, s["char_hidden"], V, cell="lstm", dtype=np.float32, seed=seed)
    trainer = Truncated(model, k1=k1, k2=k2, loss="cross_entropy",
                        optimizer=Adam(lr=s["char_lr"]), clip_norm=1.0)
    position = 0

    def step():
        nonlocal position
        if position >= length:
            trainer.reset_state()
            position = 0
        block = streams[:, position:position + k1 + 1]
        position += block.shape[1] - 1
        return data.bits(float(trainer.step(block[:, :-1], block[:, 1:])))    # token ids

    losses, evals, seconds = _updates(
        s["char_updates"], "chars", progress, step, s["char_eval_every"],
        lambda: data.bits(data.char_loss(model, val_ids)), "held-out {:.3f} bits/char")
    bpc = evals[-1][1]
    sample = data.sample_chars(model, vocab, "Return the", s["sample"], temperature=0.7,
                               rng=seed)
    log("    sample (temperature 0.7):\n" + _indent("Return the" + sample))
    log(f"    held-out {bpc:.3f} bits/char vs {unigram:.3f} for the unigram frequencies "
        f"(no context), {s['char_updates']} updates in {seconds:.1f} s")
    return bpc, unigram, losses, evals, sample, seconds


def demo_dates(s, seed=0, progress=True, log=print):
    """(c) of the demo: a GRU encoder-decoder writing dates (``cbptt.dates``, many formats)
    in ISO form, character level, scored by the exact match of greedy outputs on held-out
    dates (none of whose sources is a training source). Returns (held-out exact match,
    losses in nats per character, evaluations [(update, exact match)], examples [(source,
    output, target)], seconds)."""
    train = dates.date_pairs(s["dates_train"], seed=seed)
    test = dates.date_pairs(s["dates_test"], seed=seed + 1, exclude={x for x, _ in train})
    source = pairs.Vocabulary.of_texts(x for x, _ in train + test)
    target = pairs.Vocabulary.of_texts(y for _, y in train + test)
    H, B, dtype = s["dates_hidden"], s["dates_batch"], np.float32
    log(f"(c) dates to ISO form: {len(train):,} dates written {len(dates.FORMATS)} ways "
        f"(\"{train[0][0]}\" -> {train[0][1]}), {len(test):,} others held out; GRU "
        f"encoder-decoder H={H}, batch {B}, Adam {s['dates_lr']:g}, {s['dates_updates']} "
        f"updates, greedy decoding")
    encoder = RNN(source.size, H, None, cell="gru", dtype=dtype, seed=seed)
    decoder = RNN(target.size, H, target.size, cell="gru", dtype=dtype, seed=seed + 1)
    s2s = Seq2Seq(encoder, decoder, loss="cross_entropy", optimizer=Adam(lr=s["dates_lr"]),
                  clip_norm=1.0)
    steps = max(len(y) for _, y in train) + 1
    rng = np.random.default_rng(seed)
    outputs = []

    def step():
        chosen = [train[i] for i in rng.integers(0, len(train), size=B)]
        X, src_lengths = pairs.encode_sources([x for x, _ in chosen], source, dtype, ids=True)
        Y_in, Y_out, tgt_lengths = pairs.encode_targets([y for _, y in chosen], target, dtype,
                                                        ids=True)
        return float(s2s.step(X, Y_in, Y_out, src_lengths, tgt_lengths))

    def evaluate():
        outputs[:] = pairs.translate(s2s, [x for x, _ in test], source, target, steps)
        return float(np.mean([out == y for out, (_, y) in zip(outputs, test)]))

    losses, evals, seconds = _updates(s["dates_updates"], "dates", progress, step,
                                      s["dates_eval_every"], evaluate,
                                      "held-out exact match {:.1%}")
    exact = evals[-1][1]
    shown = test[:6]
    examples = [(x, out, y) for (x, y), out in zip(shown, outputs)]
    width = max(len(x) for x, _, _ in examples)
    log("    held-out examples (source -> output):")
    for x, out, y in examples:
        log(f"    | {x:<{width}} -> {out}{'' if out == y else f'   (wrong: {y})'}")
    log(f"    held-out exact match {exact:.1%} of {len(test):,} dates, {s['dates_updates']} "
        f"updates in {seconds:.1f} s")
    return exact, losses, evals, examples, seconds


def _updates(count, label, progress, step, eval_every, evaluate, line):
    """A demo part's training: ``count`` calls of step() (each returns its loss) under a
    progress bar, and every ``eval_every`` the value of evaluate() written as ``line``
    (a format of one value). Returns (losses, evaluations [(update, value)], seconds)."""
    losses, evals = [], []
    bar = StepBar(count, label, progress)
    start = time.perf_counter()
    try:
        for update in range(1, count + 1):
            losses.append(step())
            bar.update(1, losses[-1])
            if update % eval_every == 0:
                evals.append((update, evaluate()))
                bar.write(f"    update {update:5d}  " + line.format(evals[-1][1]))
    finally:
        bar.close()
    return losses, evals, time.perf_counter() - start


def _indent(text, prefix="    | "):
    return "\n".join((prefix + line).rstrip() for line in text.split("\n"))


def demo(quick=False, plot="cbptt-demo.png", seed=0, progress=True, log=print):
    """The ``cbptt demo`` command. Returns a dict of the measured results."""
    s = DEMO[bool(quick)]
    start = time.perf_counter()
    log(f"cbptt {__version__} demo{' (quick)' if quick else ''}: exact BPTT on the CPU")
    adding = demo_adding(s, seed, progress, log)
    chars = demo_chars(s, seed, progress, log)
    dated = demo_dates(s, seed, progress, log)
    if plot:
        try:
            plot_demo(plot, adding, chars, dated)
            log(f"loss curves: {plot}")
        except MissingExtra:
            log(f"loss curves: not drawn (matplotlib is not installed: {PLOT_HINT})")
    total = time.perf_counter() - start
    log(f"demo done in {total:.1f} s")
    return {"adding_mse": adding[0], "bpc": chars[0], "unigram_bpc": chars[1],
            "sample": chars[4], "dates_exact": dated[0], "dates_examples": dated[3],
            "seconds": total}
