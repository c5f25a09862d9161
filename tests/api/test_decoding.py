"""Seq2Seq.generate: greedy decoding against the decoder run step by step from the encoder's
state, beam search against every output sequence enumerated, multi-step forecasting (mse),
and what it refuses."""
import itertools

import numpy as np
import pytest

import cbptt
from cbptt import decoding

from helpers import CELLS

B, T, I, H = 3, 5, 2, 6


def make(cell="lstm", layers=1, vocab=4, loss="cross_entropy", dtype=np.float64, seed=0):
    enc = cbptt.RNN(I, H, None, cell=cell, num_layers=layers, seed=seed, dtype=dtype)
    dec = cbptt.RNN(vocab, H, vocab, cell=cell, num_layers=layers, seed=seed + 1, dtype=dtype)
    # larger weights: outputs that differ enough between ids for a decisive search
    dec.params *= 3
    return cbptt.Seq2Seq(enc, dec, loss=loss)


def source(dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(dtype)


SRC = np.array([5, 3, 1])


def step_by_step(s2s, X, src, start, steps, stop_id=None):
    """Greedy decoding with the decoder's predict, one step at a time from encode's state."""
    state = s2s.encode(X, src)
    h, c = state if isinstance(state, tuple) else (state, None)
    vocab = s2s.decoder.output_size
    ids = np.empty((X.shape[0], steps), np.int64)
    previous = np.full(X.shape[0], start)
    for n in range(steps):
        x = np.eye(vocab, dtype=s2s.decoder.dtype)[previous][:, None]
        out, final = s2s.decoder.predict(x, h0=h, c0=c, return_state=True)
        h, c = final if isinstance(final, tuple) else (final, None)
        previous = out[:, 0].argmax(axis=1)
        ids[:, n] = previous
    if stop_id is not None:
        for row in ids:
            hits = np.flatnonzero(row == stop_id)
            if hits.size:
                row[hits[0]:] = stop_id
    return ids


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_greedy_is_the_decoder_step_by_step(cell, layers):
    s2s = make(cell, layers)
    X = source()
    ids = s2s.generate(X, SRC, start=0, steps=6)
    np.testing.assert_array_equal(ids, step_by_step(s2s, X, SRC, 0, 6))
    stopped = s2s.generate(X, SRC, start=0, steps=6, stop_id=1)
    np.testing.assert_array_equal(stopped, step_by_step(s2s, X, SRC, 0, 6, stop_id=1))


def test_after_the_stop_id_a_row_is_stop_ids():
    s2s = make("gru", 1, vocab=3, seed=3)
    X = source()
    ids = s2s.generate(X, None, start=0, steps=12)
    stop = int(ids[0, 1])             # an id the first sequence emits early
    stopped = s2s.generate(X, None, start=0, steps=12, stop_id=stop)
    for row, free in zip(stopped, ids):
        hits = np.flatnonzero(free == stop)
        if hits.size:
            np.testing.assert_array_equal(row[:hits[0]], free[:hits[0]])
            assert (row[hits[0]:] == stop).all()
        else:
            np.testing.assert_array_equal(row, free)


@pytest.mark.parametrize("cell", CELLS)
def test_beam_one_is_greedy(cell):
    """The beam search's own code path at k = 1 (generate takes the greedy loop for beam=1)."""
    s2s = make(cell, 2)
    X = source()
    for stop_id in (None, 2):
        greedy = s2s.generate(X, SRC, start=0, steps=7, stop_id=stop_id)
        h, c = s2s._encode(X, SRC)
        stepper = decoding._Stepper(s2s, B, h, c, 1)
        beam = decoding._beam_search(stepper, B, 1, 0, 7, stop_id, 0.0)
        np.testing.assert_array_equal(beam, greedy)


def sequence_scores(s2s, X, src, start, steps, stop_id):
    """{ids: total log-probability} of every output sequence (after the first stop, stops),
    by running the decoder on each with teacher forcing."""
    vocab = s2s.decoder.output_size
    seen = {}
    for ids in itertools.product(range(vocab), repeat=steps):
        ids = list(ids)
        if stop_id is not None and stop_id in ids:
            first = ids.index(stop_id)
            ids = ids[:first + 1] + [stop_id] * (steps - first - 1)
        seen[tuple(ids)] = None
    inputs = [[start] + list(ids[:-1]) for ids in seen]
    eye = np.eye(vocab)
    scores = {}
    for b in range(X.shape[0]):
        Xb = np.repeat(X[b:b + 1], len(inputs), axis=0)
        src_b = np.full(len(inputs), src[b])
        out = s2s.predict(Xb, eye[np.array(inputs)], src_b)
        logp = decoding.log_softmax(out)
        for row, ids in enumerate(seen):
            n = steps if stop_id not in ids else ids.index(stop_id) + 1
            scores[b, ids] = (logp[row, np.arange(n), list(ids[:n])].sum(), n)
    return list(seen), scores


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("stop_id", [None, 1])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_beam_as_wide_as_every_sequence_finds_the_best(cell, stop_id, length_penalty):
    vocab, steps = 3, 4
    s2s = make(cell, 1, vocab=vocab, seed=5)
    X = source(seed=2)
    sequences, scores = sequence_scores(s2s, X, SRC, 0, steps, stop_id)
    got = s2s.generate(X, SRC, start=0, steps=steps, stop_id=stop_id, beam=vocab ** steps,
                       length_penalty=length_penalty)
    for b in range(B):
        def value(ids):
            total, n = scores[b, ids]
            return total / ((5 + n) / 6) ** length_penalty
        best = max(sequences, key=value)
        assert tuple(got[b]) == best
        # and a narrow beam finds no better sequence than the best
        narrow = s2s.generate(X, SRC, start=0, steps=steps, stop_id=stop_id, beam=2,
                              length_penalty=length_penalty)
        assert value(tuple(narrow[b])) <= value(best) + 1e-12


def test_forecasting_feeds_each_output_back():
    s2s = make("gru", 2, vocab=3, loss="mse")
    X = source()
    start = np.array([0.5, -1.0, 0.25])
    got = s2s.generate(X, SRC, start=start, steps=5)
    assert got.shape == (B, 5, 3)
    h = s2s.encode(X, SRC)
    x = np.repeat(start[None, None], B, axis=0)
    for n in range(5):
        out, h = s2s.decoder.predict(x, h0=h, return_state=True)
        np.testing.assert_allclose(got[:, n], out[:, 0], rtol=0, atol=1e-14)
        x = out
    per_row = s2s.generate(X, SRC, start=np.repeat(start[None], B, axis=0), steps=5)
    np.testing.assert_array_equal(per_row, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_generation_is_deterministic_in_both_dtypes(dtype):
    s2s = make("lstm", 2, dtype=dtype)
    X = source(dtype)
    for beam in (1, 3):
        first = s2s.generate(X, SRC, start=0, steps=6, stop_id=3, beam=beam)
        assert first.dtype == np.int64 and first.shape == (B, 6)
        np.testing.assert_array_equal(s2s.generate(X, SRC, start=0, steps=6, stop_id=3,
                                                   beam=beam), first)


def test_what_generate_refuses():
    s2s = make("lstm", 1)
    X = source()
    before = s2s.params.copy()
    cases = [
        (dict(start=4), ValueError, r"start must be in \[0, 4\)"),
        (dict(start=-1), ValueError, "start must be in"),
        (dict(start=None), TypeError, "start must be a class id"),
        (dict(stop_id=9), ValueError, r"stop_id must be in \[0, 4\)"),
        (dict(steps=0), ValueError, "steps must be at least 1"),
        (dict(beam=0), ValueError, "beam must be at least 1"),
        (dict(length_penalty=-1), ValueError, "length_penalty"),
        (dict(src_lengths=[5, 0, 1]), ValueError, "src_lengths"),
        (dict(X=X[..., :1]), ValueError, "X"),
    ]
    for change, kind, message in cases:
        args = dict(X=X, src_lengths=None, start=0, steps=3)
        args.update(change)
        with pytest.raises(kind, match=message):
            s2s.generate(**args)
    enc = cbptt.RNN(I, H, None, cell="lstm")
    other = cbptt.Seq2Seq(enc, cbptt.RNN(3, H, 4, cell="lstm"), loss="cross_entropy")
    with pytest.raises(ValueError, match=r"input_size \(J = 3\) must equal its output_size"):
        other.generate(X, start=0, steps=2)
    mse = make("gru", 1, vocab=3, loss="mse")
    with pytest.raises(ValueError, match="start"):
        mse.generate(X, start=None, steps=2)
    with pytest.raises(ValueError, match="start"):
        mse.generate(X, start=np.zeros(2), steps=2)
    with pytest.raises(ValueError, match="cross_entropy"):
        mse.generate(X, start=np.zeros(3), steps=2, beam=2)
    np.testing.assert_array_equal(s2s.params, before)
