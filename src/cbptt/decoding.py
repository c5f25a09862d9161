"""Decoding a Seq2Seq without teacher forcing: greedy and beam search.

The encoder runs once (each sequence's state after its own last step); then the decoder runs
one step per engine call on a one-step workspace, its state carried in and out (h, and c for
lstm: (L, rows, H) buffers swapped each step), and the next input is made from the output: the
chosen id (cross_entropy: the one-hot input as a token id, which the engine gathers) or the
output itself (mse). Python per step is a few
NumPy calls on (rows, O) arrays; the layers run in the engine.

Beam search keeps k hypotheses per sequence (rows b*k .. b*k + k - 1 of the decoder's batch),
scored by their total log-probability. At each step every hypothesis is extended by every id
(a finished one, which has emitted stop_id, only by stop_id, at no cost), the k best of the
k*O candidates per sequence are kept (ties: the lower hypothesis, then the lower id), and the
states of the rows are gathered to follow their hypotheses. At the start only the first
hypothesis is live (the others score -inf), so no two hypotheses are the same sequence.
"""
import numpy as np

from . import _checks
from .data import log_softmax


def generate(s2s, X, src_lengths, start, steps, stop_id, beam, length_penalty):
    """Seq2Seq.generate (see its docstring)."""
    dec = s2s.decoder
    inputs = dec.input_size if dec.vocab_size is None else dec.vocab_size
    if inputs != dec.output_size or (dec.vocab_size is not None and s2s.loss == "mse"):
        what = "input_size (J" if dec.vocab_size is None else "vocab_size (V"
        raise ValueError(f"generate feeds each output back in as the next input: the "
                         f"decoder's {what} = {inputs}) must equal its output_size "
                         f"(O = {dec.output_size}), with loss='cross_entropy' for a decoder "
                         f"with an embedding")
    steps = _checks.check_size(steps, "steps")
    beam = _checks.check_size(beam, "beam")
    if isinstance(length_penalty, bool) or not (
            isinstance(length_penalty, (int, float, np.floating, np.integer))
            and 0 <= length_penalty < np.inf):
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty!r}")
    X, _, src_lengths, _, _, _ = s2s._inputs(X, None, src_lengths)
    batch = X.shape[0]
    if s2s.loss == "cross_entropy":
        start = _class_id(start, "start", dec.output_size)
        if stop_id is not None:
            stop_id = _class_id(stop_id, "stop_id", dec.output_size)
    else:
        if beam != 1:
            raise ValueError(f"beam search ranks ids by log-probability: it needs "
                             f"loss='cross_entropy' (this Seq2Seq's loss is 'mse'); got "
                             f"beam={beam}")
        if stop_id is not None:
            raise ValueError("stop_id is for loss='cross_entropy' (mse outputs are not ids)")
        if start is None:
            raise ValueError(f"start: the first input, an array ({batch}, {dec.input_size}) "
                             f"or ({dec.input_size},), is needed with loss='mse'")
        start_array = np.asarray(start)
        if start_array.ndim == 1:
            start_array = np.broadcast_to(start_array, (batch,) + start_array.shape)
        start = _checks.float_array(start_array, "start", dec.dtype, (batch, dec.input_size))
    with s2s.model.lock:
        h, c = s2s._encode(X, src_lengths)
        stepper = _Stepper(s2s, batch * beam, h, c, beam, ids=s2s.loss == "cross_entropy")
        if s2s.loss == "mse":
            return _forecast(stepper, start, steps)
        if beam == 1:
            return _greedy(stepper, start, steps, stop_id)
        return _beam_search(stepper, batch, beam, start, steps, stop_id, length_penalty)


def _class_id(value, name, count):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a class id (an integer in [0, {count})), got "
                        f"{value!r}")
    if not 0 <= value < count:
        raise ValueError(f"{name} must be in [0, {count}) (the decoder's output_size), got "
                         f"{value}")
    return int(value)


class _Stepper:
    """One decoder step at a time for `rows` rows, from the encoder's state (each sequence's
    state repeated `copies` times). The input x: ids (rows, 1), the previous ids (the one-hot
    input as token ids, a gather in the engine; for a decoder with an embedding their rows of
    its table, (rows, 1, E)), or floats (rows, 1, J) with ids=False."""

    def __init__(self, s2s, rows, h, c, copies, ids=True):
        dec = s2s.decoder
        self.params = dec.engine_params
        self.table = None
        if ids and dec.vocab_size is not None:
            self.table = dec.named_parameters()[-1][1]     # embedding.weight (V, E)
            ids = False
        self.engine = s2s._engine("decoder", rows, 1, False, ids)
        self.h = np.repeat(h, copies, axis=1) if copies > 1 else h
        self.c = None if c is None else (np.repeat(c, copies, axis=1) if copies > 1 else c)
        self.h_next = np.empty_like(self.h)
        self.c_next = None if c is None else np.empty_like(self.c)
        self.x = (np.zeros((rows, 1), np.int64) if ids else
                  np.zeros((rows, 1, dec.input_size), dec.dtype))
        self.out = np.empty((rows, 1, dec.output_size), dec.dtype)

    def feed(self, ids):
        """The next step's input: the ids (rows,), as ids or as their embedding rows."""
        if self.table is None:
            self.x[:, 0] = ids
        else:
            np.take(self.table, ids, axis=0, out=self.x[:, 0])

    def step(self):
        """out (rows, O) of one step from self.x; the state moves on."""
        self.engine.predict(self.x, self.params, self.out, h0=self.h, h_final=self.h_next,
                            c0=self.c, c_final=self.c_next)
        self.h, self.h_next = self.h_next, self.h
        self.c, self.c_next = self.c_next, self.c
        return self.out[:, 0]

    def follow(self, index):
        """Rows i of the state become rows index[i] of it (beam search's reordering)."""
        np.take(self.h, index, axis=1, out=self.h_next)
        self.h, self.h_next = self.h_next, self.h
        if self.c is not None:
            np.take(self.c, index, axis=1, out=self.c_next)
            self.c, self.c_next = self.c_next, self.c


def _forecast(stepper, start, steps):
    """mse: each step's input is the previous output. (B, steps, O)."""
    batch = start.shape[0]
    result = np.empty((batch, steps, stepper.out.shape[2]), start.dtype)
    stepper.x[:, 0] = start
    for n in range(steps):
        result[:, n] = stepper.step()
        stepper.x[:, 0] = result[:, n]
    return result


def _greedy(stepper, start, steps, stop_id):
    """cross_entropy, beam 1: the most likely id at each step. ids (B, steps) int64."""
    rows = stepper.x.shape[0]
    ids = np.empty((rows, steps), np.int64)
    done = np.zeros(rows, bool)
    stepper.feed(np.full(rows, start))
    for n in range(steps):
        chosen = stepper.step().argmax(axis=1)
        if stop_id is not None:
            chosen[done] = stop_id
            done |= chosen == stop_id
        ids[:, n] = chosen
        if stop_id is not None and done.all():
            ids[:, n + 1:] = stop_id
            break
        stepper.feed(chosen)
    return ids


def _beam_search(stepper, batch, k, start, steps, stop_id, length_penalty):
    """cross_entropy, beam k > 1 (see the banner). ids (B, steps) int64."""
    count = stepper.out.shape[2]
    scores = np.full((batch, k), -np.inf)
    scores[:, 0] = 0.0
    finished = np.zeros((batch, k), bool)
    lengths = np.zeros((batch, k), np.int64)     # ids up to and including the stop
    history = np.zeros((batch, k, steps), np.int64)
    stepper.feed(np.full(batch * k, start))
    first_row = (np.arange(batch) * k)[:, None]
    for n in range(steps):
        logp = log_softmax(stepper.step()).reshape(batch, k, count)
        if stop_id is not None and finished.any():
            logp[finished] = -np.inf
            logp[finished, stop_id] = 0.0
        candidates = (scores[:, :, None] + logp).reshape(batch, k * count)
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
        source, chosen = np.divmod(best, count)
        scores = np.take_along_axis(candidates, best, axis=1)
        was_finished = np.take_along_axis(finished, source, axis=1)
        lengths = np.take_along_axis(lengths, source, axis=1) + ~was_finished
        finished = was_finished | (chosen == stop_id) if stop_id is not None else was_finished
        history = np.take_along_axis(history, source[:, :, None], axis=1)
        history[:, :, n] = chosen
        stepper.follow((first_row + source).ravel())
        stepper.feed(chosen.ravel())
        if stop_id is not None and finished[np.isfinite(scores)].all():
            history[:, :, n + 1:] = stop_id
            break
    if length_penalty:
        scores = scores / ((5.0 + lengths) / 6.0) ** length_penalty
    pick = scores.argmax(axis=1)
    return history[np.arange(batch), pick]
