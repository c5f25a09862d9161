"""Memory-bounded BPTT of an encoder-decoder: the two halves share one budget.

A Seq2Seq step with ``memory_limit`` runs each half either unbounded (when its whole step
fits its share) or by bounded.py's schedule. The decoder is a many-to-many sequence started
from a given state, which bounded.py's runner already takes (``h0``) and differentiates
(the gradient at its start). The encoder is the new shape: its gradient enters at each row's
own last step ``src_lengths[b] - 1``, inside some unit, and that gradient is known only after
the decoder has run, which needs every row's final state first.

``BoundedEncoder`` runs the same schedule as bounded.BoundedBPTT on a headless engine, each
unit read with per-row lengths (``unit_lengths``): a row ending in the unit is read at its
own last step, any other at the unit's end. So a forward sweep's output state holds, for a
row ending in the unit, the state it hands to the decoder (copied out the first time the
unit is swept), and a leaf's BPTT (``Engine.encode`` then ``backward_from_final``) takes one
gradient per row at that row's step: the decoder's for a row ending in the unit, the next
unit's carried gradient for a row going on past it, zero for a row already ended (nothing
after a row's end depends on its state). The schedule's first descent sweeps units 0 .. n-2
in order before its first leaf, unit n - 1; that leaf's forward completes the handoff, the
decoder runs (``decode``), and the leaves go on backwards with its gradient.

The budget: both halves' plans plus the handoff (the state and its gradient, the decoder's
output weights). The split between them is the cheapest (by the plans' cost model) of a few:
one half's share at a point of its range (from its minimum to all it needs, SPLIT_POINTS), the
other half the rest.
"""
import dataclasses

import numpy as np

from . import memory
from .bounded import (BoundedBPTT, MemoryPlan, _state_bytes, parse_limit,
                      plan_half, plan_memory)


@dataclasses.dataclass
class Seq2SeqMemoryPlan:
    """What a memory-bounded Seq2Seq step will do: ``encoder`` and ``decoder`` are each
    half's MemoryPlan (``units`` 1: that half runs unbounded); ``handoff_bytes`` the state
    passed between them, its gradient and the decoder's output weights. steps is (T, U)."""
    limit: int
    encoder: MemoryPlan
    decoder: MemoryPlan
    handoff_bytes: int
    minimum_bytes: int

    @property
    def steps(self):
        return self.encoder.steps, self.decoder.steps

    @property
    def forward_steps(self):
        return self.encoder.forward_steps + self.decoder.forward_steps

    @property
    def recompute_factor(self):
        return self.forward_steps / (self.encoder.steps + self.decoder.steps)

    @property
    def checkpoints(self):
        return self.encoder.checkpoints + self.decoder.checkpoints

    @property
    def peak_bytes(self):
        return self.encoder.peak_bytes + self.decoder.peak_bytes + self.handoff_bytes

    @property
    def unbounded_bytes(self):
        return self.encoder.unbounded_bytes + self.decoder.unbounded_bytes + \
            self.handoff_bytes

    @property
    def bounded(self):
        """True when either half runs by a schedule (else the step is the unbounded one)."""
        return self.encoder.units > 1 or self.decoder.units > 1


# where in its range (minimum to need) a half's share is tried, the other half taking the rest
SPLIT_POINTS = (0, 1 / 32, 1 / 8, 1 / 4, 1 / 2, 1)


def _half_minimum(model, batch, steps, kind, ids, parts):
    """(minimum, unbounded) bytes of one half (its plan under a limit it always fits)."""
    plan = plan_half(model, batch, steps, 2 ** 62, kind, ids, parts)
    return plan.minimum_bytes, plan.unbounded_bytes


def plan_seq2seq(models, batch, steps, limit, ids=False, parts=1):
    """plan_memory's "seq2seq": models (encoder, decoder), steps (T, U), ids a bool or a
    pair (each half's inputs are token ids), parts the most threads its calls run on. A
    Seq2SeqMemoryPlan; ValueError naming the minimum when limit is below it."""
    try:
        encoder, decoder = models
        src_steps, tgt_steps = steps
    except (TypeError, ValueError):
        raise ValueError("plan_memory(trainer='seq2seq') takes model=(encoder, decoder) and "
                         "steps=(source steps, target steps)") from None
    x_ids, y_ids = ids if isinstance(ids, tuple) else (ids, ids)
    limit = parse_limit(limit)
    handoff = 2 * _state_bytes(encoder, batch) + batch * tgt_steps * decoder.dtype.itemsize
    halves = ((encoder, src_steps, "encoder", x_ids), (decoder, tgt_steps, "many-to-many",
                                                       y_ids))
    (enc_min, enc_need), (dec_min, dec_need) = [_half_minimum(m, batch, n, kind, i, parts)
                                                for m, n, kind, i in halves]
    minimum = enc_min + dec_min + handoff
    if limit < minimum:
        raise ValueError(
            f"memory_limit: {memory.describe_bytes(limit)} is below the minimum of "
            f"{memory.describe_bytes(minimum)} ({minimum:,} bytes) for {batch} sequences of "
            f"{encoder!r} and {decoder!r}: each half's one step of activations, workspaces "
            f"and states, and the state passed between them")
    room = limit - handoff
    if enc_need + dec_need <= room:
        shares = [(enc_need, dec_need)]
    else:   # one half at a point of its range, the other the rest (each at least its minimum)
        shares = []
        for fraction in SPLIT_POINTS:
            enc = enc_min + int((min(enc_need, room - dec_min) - enc_min) * fraction)
            dec = dec_min + int((min(dec_need, room - enc_min) - dec_min) * fraction)
            shares += [(enc, min(dec_need, room - enc)), (min(enc_need, room - dec), dec)]
    costs, cache = {}, {}
    for index in (0, 1):    # each half's shares, the largest first (its costs serve all)
        model, steps_, kind, ids_ = halves[index]
        for share in sorted({pair[index] for pair in shares}, reverse=True):
            costs[index, share] = plan_half(model, batch, steps_, share, kind, ids_, parts,
                                            cache=cache)
    split = min(dict.fromkeys(shares), key=lambda pair: costs[0, pair[0]] + costs[1, pair[1]])
    enc_plan, dec_plan = [plan_half(m, batch, n, share, kind, i, parts)
                          for (m, n, kind, i), share in zip(halves, split)]
    return Seq2SeqMemoryPlan(limit=limit, encoder=enc_plan, decoder=dec_plan,
                             handoff_bytes=handoff, minimum_bytes=minimum)


def unit_lengths(lengths, first, leaf, out, ends):
    """Each row's steps read in the unit starting at step `first`: out (B,) int64 receives
    lengths - first for a row whose last step is in the unit, else leaf; ends (B,) bool
    whether it is. lengths (B,) int64, each row's length in the whole sequence."""
    np.subtract(lengths, first, out=out)
    np.greater_equal(out, 1, out=ends)
    np.logical_and(ends, out <= leaf, out=ends)
    np.copyto(out, leaf, where=~ends)


class BoundedEncoder(BoundedBPTT):
    """An encoder's memory-bounded BPTT by a plan (``plan_half(..., "encoder")``): run(X,
    lengths, handoff, decode, grads). Afterwards ``last_forward_steps``,
    ``last_checkpoints`` and ``last_bytes`` say what it did, as BoundedBPTT's."""

    def __init__(self, model, batch, steps, ids, plan):
        super().__init__(model, batch, steps, None, None, True, ids, plan=plan)
        self.lengths_in_unit = self.sweep_lengths = np.zeros(batch, np.int64)
        self.ends = np.zeros(batch, bool)
        # the gradient entering a leaf, and a leaf's states at each row's read step
        self.entering = self._state()
        self.read = self._state()

    def run(self, X, lengths, handoff, decode, grads, dropout=(0, 0, 0)):
        """The encoder's BPTT by the plan. X (B, T, I) or ids (B, T); lengths (B,) int64
        each row's length; handoff (h, c) (L, B, H) (c None but for lstm) receives each
        row's state after its last step; decode() is called once, when handoff is complete,
        and returns the gradient (dh, dc) with respect to it; grads (the engine's entries)
        receive the encoder's gradients; dropout the call's (key, row0, stream0)."""
        self.X, self.lengths, self.handoff, self.decode = X, lengths, handoff, decode
        self.decoded = None
        self._walk(grads, None, None, dropout)
        self._count_bytes((self.x, self.lengths_in_unit, self.ends, self.unit_grads), 9)

    def _inputs(self, unit):
        """Copy unit `unit`'s inputs into the leaf buffer and each row's steps read in it;
        returns its steps in the sequence."""
        n = super()._inputs(unit)
        leaf = self.plan.leaf_steps
        unit_lengths(self.lengths, unit * leaf, leaf, self.lengths_in_unit, self.ends)
        return n

    def _hand_off(self, state):
        """Copy the states of the rows ending in the unit just read into the handoff."""
        where = self.ends[None, :, None]
        for mine, theirs in zip(self.handoff, state):
            if mine is not None:
                np.copyto(mine, theirs, where=where)

    def _swept(self, state):
        """While the decoder has not run, the rows ending in a swept unit hand off their
        state (each row is read to its own last step in its unit: sweep_lengths)."""
        if self.decoded is None:
            self._hand_off(state)

    def _leaf(self, unit, state, dh_after):
        """The BPTT of unit `unit` from state, with dh_after (h, c) the gradient at its end
        (None: nothing after it); adds its gradients; returns the gradient at its start."""
        self.last_forward_steps += self._inputs(unit)
        state = self.start if state is None else state
        self._keyed(unit)
        self.train.encode(self.x, self.model.engine_params, self.read[0], self.read[1],
                          lengths=self.lengths_in_unit, h0=state[0], c0=state[1])
        if self.decoded is None:        # the first leaf: every row's handoff is now known
            self._hand_off(self.read)
            self.decoded = self.decode()
        ends = self.ends[None, :, None]
        # a row going on past the unit is read at its end (lengths_in_unit == leaf)
        after = (self.lengths > (unit + 1) * self.plan.leaf_steps)[None, :, None]
        for entering, decoded, carried in zip(self.entering, self.decoded,
                                              (None, None) if dh_after is None else dh_after):
            if entering is None:
                continue
            entering[...] = 0
            np.copyto(entering, decoded, where=ends)
            if carried is not None:
                np.copyto(entering, carried, where=after)
        out = self._carried(dh_after)
        self.train.backward_from_final(self.unit_grads, self.entering[0], self.entering[1],
                                       dh0=out[0], dc0=out[1])
        self.grads += self.unit_grads
        return out


class BoundedSeq2Seq:
    """The memory-bounded step of a Seq2Seq at one shape: its plan, and each half's runner
    (None where that half runs unbounded, on the trainer's own engine)."""

    def __init__(self, encoder, decoder, batch, src_steps, tgt_steps, limit, loss, x_ids,
                 y_ids):
        self.plan = plan_memory((encoder, decoder), batch, (src_steps, tgt_steps), limit,
                                "seq2seq", (x_ids, y_ids))
        self.encoder, self.decoder = encoder, decoder
        self.encoder_runner = (BoundedEncoder(encoder, batch, src_steps, x_ids,
                                              self.plan.encoder)
                               if self.plan.encoder.units > 1 else None)
        self.decoder_runner = (BoundedBPTT(decoder, batch, tgt_steps, None, loss, False, y_ids,
                                           plan=self.plan.decoder)
                               if self.plan.decoder.units > 1 else None)
        self.lengths = np.full(batch, src_steps, np.int64)

    def run(self, X, Y_in, Y_out, src_lengths, weight, terms, state, grads, engines,
            dropout=(0, 0)):
        """One step: X, Y_in, Y_out as the engines read them, src_lengths (B,) int64 or None,
        weight (B, U) the decoder's output weights or None, terms the loss's denominator,
        state (h, c, dh, dc) the handoff buffers, grads (encoder's, decoder's) the engines'
        entries, engines (encoder's, decoder's) the unbounded engines of the halves that run
        unbounded (else None); dropout (key, row0) the call's masks (the decoder's layers
        on the streams after the encoder's). Returns the loss."""
        key, row0 = dropout
        enc_drop, dec_drop = (key, row0, 0), (key, row0, self.encoder.num_layers)
        h, c, dh, dc = state
        enc_grads, dec_grads = grads
        enc_engine, dec_engine = engines

        def decode():
            if self.decoder_runner is None:
                dec_engine.set_dropout(*dec_drop)
                self.loss = dec_engine.loss_and_grad(
                    Y_in, Y_out, self.decoder.engine_params, dec_grads, h0=h, dh0=dh, c0=c,
                    dc0=dc, weight=weight)
            else:
                self.loss, (gh, gc), _ = self.decoder_runner.run(Y_in, Y_out, weight, terms,
                                                                 h, c, dec_grads, False,
                                                                 dec_drop)
                dh[...] = gh
                if dc is not None:
                    dc[...] = gc
            return dh, dc

        if self.encoder_runner is None:
            enc_engine.set_dropout(*enc_drop)
            enc_engine.encode(X, self.encoder.engine_params, h, c, lengths=src_lengths)
            decode()
            enc_engine.backward_from_final(enc_grads, dh, dc)
        else:
            lengths = self.lengths if src_lengths is None else src_lengths
            self.encoder_runner.run(X, lengths, (h, c), decode, enc_grads, enc_drop)
        return self.loss
