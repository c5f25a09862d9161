"""Encoder-decoder training: an input sequence to an output sequence of another length.

``Seq2Seq(encoder, decoder)`` joins a model without a head (the encoder) and one with a head
(the decoder), of the same cell, hidden size and number of layers. The decoder's initial state
of layer l (h, and c for lstm) is the encoder's state of layer l after step
``src_lengths[b] - 1`` of sequence b. One training step is three engine calls, each with the
GIL released and no Python per time step:

1. the encoder's forward (``Engine.encode``): each sequence's state after its own last step;
2. the decoder's whole call (many-to-many, teacher forced): its loss, its gradients and
   dL/dh0 (dL/dc0), the gradient with respect to the state it started from;
3. the encoder's BPTT (``Engine.backward_from_final``) from that gradient, which enters every
   layer at each sequence's own last step.

Both halves' parameters live in one flat buffer (the encoder's, then the decoder's; each
model's ``params`` is its slice), so one optimiser step updates both, clipping by the norm of
both. Decoding (``generate``) runs the decoder one step at a time on a one-step engine with the
state carried in and out: greedy or beam search. The maths: docs/MATHS.md, "Encoder-decoder".
"""
import os
import threading

import numpy as np

from . import archive, bounded, embedding, memory
from ._arrays import squared_norm_of
from .bounded_seq2seq import BoundedSeq2Seq
from .losses import check_loss, check_targets
from .model import RNN
from .optim import SGD, Adam
from .trainers import _Trainer, check_lengths

__all__ = ["Seq2Seq"]


class _Halves:
    """The encoder and decoder as one model for the trainer machinery (``_Trainer._update``,
    ``DataParallel``): one flat buffer, keys ``encoder.NAME`` then ``decoder.NAME``."""

    def __init__(self, encoder, decoder):
        self.encoder, self.decoder = encoder, decoder
        self.dtype = encoder.dtype
        self.params = np.empty(encoder.num_parameters + decoder.num_parameters, self.dtype)
        split = encoder.num_parameters
        encoder.use_buffer(self.params[:split])
        decoder.use_buffer(self.params[split:])
        self.split = split
        self._layout = ([("encoder." + name, shape, offset)
                         for name, shape, offset in encoder._layout] +
                        [("decoder." + name, shape, split + offset)
                         for name, shape, offset in decoder._layout])
        self.lock = threading.RLock()

    @property
    def num_parameters(self):
        return self.params.size

    def config(self):
        return {"encoder": self.encoder.config(), "decoder": self.decoder.config()}

    def __repr__(self):
        return f"Seq2Seq halves ({self.encoder!r}, {self.decoder!r})"


def _check_halves(encoder, decoder):
    for name, model in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(model, RNN):
            raise TypeError(f"{name} must be a cbptt.RNN, got {type(model).__name__}")
    if encoder is decoder:
        raise ValueError("encoder and decoder must be two models")
    if encoder.has_head:
        raise ValueError(f"encoder: {encoder!r} has a head, which an encoder never uses; make "
                         f"it with output_size=None")
    decoder.require_head("the decoder of a Seq2Seq")
    for name, model in (("encoder", encoder), ("decoder", decoder)):
        if model.bidirectional:
            raise ValueError(f"{name}: a Seq2Seq takes one-way models so far ({model!r} is "
                             f"bidirectional)")
    for attribute in ("cell", "hidden_size", "num_layers", "dtype"):
        mine, theirs = getattr(encoder, attribute), getattr(decoder, attribute)
        if mine != theirs:
            raise ValueError(f"encoder and decoder must share {attribute} (the decoder starts "
                             f"from the encoder's state): got {mine!r} and {theirs!r}")


class Seq2Seq(_Trainer):
    """An encoder-decoder trained with teacher forcing, decoded greedily or by beam search.

    Parameters
    ----------
    encoder : RNN without a head (``output_size=None``), input size I
    decoder : RNN with a head, input size J, output size O; the same cell, hidden_size,
        num_layers and dtype as the encoder. Both models' parameters move into one buffer
        (``params``; each model's ``params`` becomes its slice, values kept).
    loss : "mse" or "cross_entropy"
    optimizer, clip_norm, on_nonfinite : as for ManyToMany (clipping by the norm of both
        halves' gradients together).
    memory_limit : bytes, or a string such as "64MiB"; None (default): store everything.
        Exact BPTT within that much added memory, shared by the two halves
        (bounded_seq2seq.py; ``cbptt.plan_memory(..., trainer="seq2seq")`` tells the plan).

    Shapes: X (B, T, I) floats; Y_in (B, U, J) the decoder's inputs (teacher forcing: usually
    the targets shifted right after a start symbol); X and Y_in may be token ids instead,
    (B, T) and (B, U) integers, the one-hot inputs without making them; Y_out (B, U, O)
    floats for mse or (B, U) class ids for cross_entropy; src_lengths, tgt_lengths (B,) integers in [1, T] and [1, U]
    (None: every sequence full). The loss is the mean over the decoder's outputs u <
    tgt_lengths[b]: over O * sum(tgt_lengths) elements (mse) or sum(tgt_lengths) targets
    (cross_entropy). Padding after a sequence's length changes nothing.
    """

    def __init__(self, encoder, decoder, loss="mse", optimizer=None, clip_norm=None,
                 on_nonfinite="raise", seed=None, memory_limit=None):
        _check_halves(encoder, decoder)
        self.loss = check_loss(loss)
        for model in (encoder, decoder):
            self.memory_limit = bounded.check_limit(model, memory_limit, "Seq2Seq")
        self._init_update(optimizer, clip_norm, on_nonfinite, seed)
        memory.require(memory.trainer_bytes(encoder, self.optimizer) +
                       memory.trainer_bytes(decoder, self.optimizer),
                       f"a Seq2Seq of {encoder!r} and {decoder!r} (its gradients and the "
                       f"state of {type(self.optimizer).__name__})")
        self.encoder, self.decoder = encoder, decoder
        self.model = _Halves(encoder, decoder)
        self._grads = np.zeros_like(self.model.params)
        self._engines = {}
        self._state_buffers = {}
        self._steps = np.arange(0)
        self._last_engine = None     # the decoder's of the last call
        self.last_calls = 0          # engine calls of the last step/loss_and_grad/predict

    @property
    def params(self):
        """Both halves' parameters, flat: the encoder's, then the decoder's."""
        return self.model.params

    def __repr__(self):
        return (f"cbptt.Seq2Seq({self.encoder!r}, {self.decoder!r}, loss={self.loss!r}, "
                f"optimizer={type(self.optimizer).__name__}, clip_norm={self.clip_norm})")

    # -- workspaces ---------------------------------------------------------------------------
    def _engine(self, role, batch, steps, training, ids=False):
        """The workspace of one half at one shape (ids: its input token ids), made on first
        use and kept: "encoder" (without a head, read at each row's last step) or "decoder"
        (many-to-many)."""
        key = (role, batch, steps, training, ids)
        engine = self._engines.get(key)
        if engine is None:
            if len(self._engines) >= 16:     # new batch shapes: drop the old workspaces
                self._engines.clear()
            if role == "encoder":
                engine = self.encoder.make_engine(batch, steps, training, many_to_one=True,
                                                  ids=ids)
            else:
                engine = self.decoder.make_engine(batch, steps, training, loss=self.loss,
                                                  ids=ids)
            self._engines[key] = engine
        return engine

    def _buffers(self, batch, target_steps):
        """(h, c, dh, dc, weight) of a training call: the handoff state and its gradient,
        (L, B, H) (c, dc None but for lstm), and the decoder's output weights (B, U); made
        once per shape and reused."""
        key = (batch, target_steps)
        if key not in self._state_buffers:
            if len(self._state_buffers) >= 16:
                self._state_buffers.clear()
            self._state_buffers[key] = (self.encoder.new_state(batch) +
                                        self.encoder.new_state(batch) +
                                        (np.empty((batch, target_steps), self.model.dtype),))
            if self._steps.size < target_steps:
                self._steps = np.arange(target_steps)
        return self._state_buffers[key]

    # -- arguments ----------------------------------------------------------------------------
    def _inputs(self, X, Y_in, src_lengths, tgt_lengths=None):
        """(X, Y_in, src_lengths, tgt_lengths, x_ids, y_ids) checked: X and Y_in as each
        half's engine reads them (RNN.engine_inputs: a half with an embedding gets its rows,
        and x_ids/y_ids are the ids they were read for, else None), the same batch size, the
        lengths int64 or None."""
        enc, dec = self.encoder, self.decoder
        X, x_ids = enc.engine_inputs(X)
        y_ids = None
        batch, steps = X.shape[:2]
        if Y_in is not None:
            Y_in, y_ids = dec.engine_inputs(Y_in, "Y_in")
            if Y_in.shape[0] != batch:
                raise ValueError(f"Y_in must have the batch size of X ({batch}), got "
                                 f"{Y_in.shape[0]} sequences")
        src_lengths = _lengths(src_lengths, batch, steps, "src_lengths")
        if tgt_lengths is not None:
            tgt_lengths = _lengths(tgt_lengths, batch, Y_in.shape[1], "tgt_lengths")
        return X, Y_in, src_lengths, tgt_lengths, x_ids, y_ids

    def _targets(self, Y_out, batch, steps):
        dec = self.decoder
        shape = (batch, steps, dec.output_size)
        return check_targets(self.loss, Y_out, "Y_out", shape, dec.output_size, dec.dtype)

    # -- training -----------------------------------------------------------------------------
    def _run(self, X, Y_in, Y_out, src_lengths, tgt_lengths):
        """Validate everything, then the three engine calls into self._grads. Returns the
        loss; the decoder's engine (loss_terms) is self._last_engine."""
        X, Y_in, src_lengths, tgt_lengths, x_ids, y_ids = self._inputs(X, Y_in, src_lengths,
                                                                       tgt_lengths)
        batch, steps = X.shape[:2]
        target_steps = Y_in.shape[1]
        Y_out = self._targets(Y_out, batch, target_steps)
        enc, dec = self.encoder, self.decoder
        encoder = self._engine("encoder", batch, steps, True, X.ndim == 2)
        decoder = self._engine("decoder", batch, target_steps, True, Y_in.ndim == 2)
        h, c, dh, dc, weight = self._buffers(batch, target_steps)
        if tgt_lengths is None:
            weight = None
        else:
            # 1 for the outputs u < tgt_lengths[b], 0 after: the mean runs over the first
            np.less(self._steps[:target_steps], tgt_lengths[:, None], out=weight)
        enc_grads = self._grads[:self.model.split]
        dec_grads = self._grads[self.model.split:]
        if self.memory_limit is not None:
            runner = self._bounded(batch, steps, target_steps, X.ndim == 2, Y_in.ndim == 2)
            if runner.plan.bounded:
                return self._run_bounded(runner, X, Y_in, Y_out, src_lengths, weight,
                                         (h, c, dh, dc), encoder, decoder)
        dx = None if x_ids is None else np.empty_like(X)
        dy = None if y_ids is None else np.empty_like(Y_in)
        # one key for the call: the decoder's layers draw from the streams after the encoder's
        key = self._next_dropout(encoder)
        decoder.set_dropout(key, self.dropout_row0, enc.num_layers)
        encoder.encode(X, enc.engine_params, h, c, lengths=src_lengths)
        loss = decoder.loss_and_grad(Y_in, Y_out, dec.engine_params, dec_grads[:dec.engine_size],
                                     h0=h, dh0=dh, c0=c, dc0=dc, weight=weight, dx=dy)
        encoder.backward_from_final(enc_grads[:enc.engine_size], dh, dc, dx=dx)
        self._last_engine = decoder
        self._last_terms = decoder.loss_terms
        self.last_calls = 3
        self._last_sq_norm = encoder.grad_sq_norm + decoder.grad_sq_norm
        for model, ids, d_input, grads in ((enc, x_ids, dx, enc_grads),
                                           (dec, y_ids, dy, dec_grads)):
            if ids is not None:     # the half's embedding: dL/dx summed by id
                self._last_sq_norm += embedding.learn_table(model, ids, d_input, grads)
        return loss

    def _bounded(self, batch, steps, target_steps, x_ids, y_ids):
        """The memory-bounded runner of this shape (bounded_seq2seq.py), made on first use."""
        key = ("bounded", batch, steps, target_steps, x_ids, y_ids)
        runner = self._engines.get(key)
        if runner is None:
            if len(self._engines) >= 16:
                self._engines.clear()
            runner = self._engines[key] = BoundedSeq2Seq(
                self.encoder, self.decoder, batch, steps, target_steps, self.memory_limit,
                self.loss, x_ids, y_ids)
        self._last_bounded = runner
        return runner

    def _run_bounded(self, runner, X, Y_in, Y_out, src_lengths, weight, state, encoder,
                     decoder):
        """A step within memory_limit: each half bounded or on its unbounded engine."""
        batch, target_steps = Y_in.shape[:2]
        per_output = self.decoder.output_size if self.loss == "mse" else 1
        terms = (batch * target_steps if weight is None else float(weight.sum())) * per_output
        enc, dec = self.encoder, self.decoder
        key = self._next_dropout(encoder)        # one key for the call, as unbounded
        loss = runner.run(
            X, Y_in, Y_out, src_lengths, weight, terms, state,
            (self._grads[:enc.engine_size], self._grads[self.model.split:][:dec.engine_size]),
            (None if runner.encoder_runner else encoder,
             None if runner.decoder_runner else decoder), (key, self.dropout_row0))
        self._last_engine = decoder
        self._last_terms = terms
        self._last_sq_norm = squared_norm_of(self._grads)
        self.last_calls = 0
        return loss

    def loss_and_grad(self, X, Y_in, Y_out, src_lengths=None, tgt_lengths=None):
        """Loss and gradients without an update: (loss, grads), grads mapping
        ``"encoder." + key`` and ``"decoder." + key`` for every key of the two models'
        ``state_dict()`` to a fresh array."""
        with self.model.lock:
            loss = self._run(X, Y_in, Y_out, src_lengths, tgt_lengths)
            return loss, self._grads_dict()

    def step(self, X, Y_in, Y_out, src_lengths=None, tgt_lengths=None):
        """Forward, BPTT through both halves, clipping (if clip_norm) and one optimiser update
        of both. Returns the loss before the update. A non-finite loss or gradient leaves
        weights and optimiser as they were (FloatingPointError, or with
        ``on_nonfinite="skip"`` a RuntimeWarning counted in ``skipped_updates``)."""
        with self.model.lock:
            loss = self._run(X, Y_in, Y_out, src_lengths, tgt_lengths)
            self._apply_update(loss, self._last_sq_norm, self._last_terms)
        return loss

    # -- inference ----------------------------------------------------------------------------
    def encode(self, X, src_lengths=None):
        """The encoder's state after each sequence's last step: h (L, B, H), or (h, c) for
        lstm: the decoder's initial state."""
        X, _, src_lengths, _, _, _ = self._inputs(X, None, src_lengths)
        with self.model.lock:
            h, c = self._encode(X, src_lengths)
        return h if c is None else (h, c)

    def _encode(self, X, src_lengths):
        batch, steps = X.shape[:2]
        engine = self._engine("encoder", batch, steps, False, X.ndim == 2)
        h, c = self.encoder.new_state(batch)
        engine.predict(X, self.encoder.engine_params, None, h_final=h, c_final=c,
                       lengths=src_lengths)
        return h, c

    def predict(self, X, Y_in, src_lengths=None):
        """The decoder's outputs with teacher forcing, (B, U, O): its inputs are Y_in."""
        X, Y_in, src_lengths, _, _, _ = self._inputs(X, Y_in, src_lengths)
        batch, target_steps = Y_in.shape[:2]
        with self.model.lock:
            h, c = self._encode(X, src_lengths)
            engine = self._engine("decoder", batch, target_steps, False, Y_in.ndim == 2)
            out = np.empty((batch, target_steps, self.decoder.output_size), self.model.dtype)
            engine.predict(Y_in, self.decoder.engine_params, out, h0=h, c0=c)
        self.last_calls = 2
        return out

    def generate(self, X, src_lengths=None, start=None, steps=None, stop_id=None, beam=1,
                 length_penalty=0.0):
        """Decode without teacher forcing, ``steps`` outputs per sequence.

        cross_entropy (decoder J == O): each step's input is the one-hot of the previous id,
        the first that of ``start`` (an id); returns ids (B, steps) int64. After a sequence
        emits ``stop_id`` (if given) the rest of its row is ``stop_id``. ``beam=k > 1``: beam
        search over k hypotheses per sequence by total log-probability; the hypothesis
        returned maximises log P / ((5 + n) / 6) ** length_penalty (GNMT's length
        normalisation, n its length up to and including its stop; 0: none). ``beam=1`` is
        greedy.

        mse (J == O, multi-step forecasting): each step's input is the previous output, the
        first ``start``, an array (B, J) or (J,); returns (B, steps, O). Beam 1 only.
        """
        from .decoding import generate
        return generate(self, X, src_lengths, start, steps, stop_id, beam, length_penalty)

    # -- gradients, files ---------------------------------------------------------------------
    def _grads_dict(self):
        return {name: self._grads[offset:offset + int(np.prod(shape))].reshape(shape).copy()
                for name, shape, offset in self.model._layout}

    def save(self, path):
        """Write both halves, the loss, clipping and the optimiser's kind and settings (not
        its state: a checkpoint of the command keeps that) to an ``.npz`` file, atomically
        (".npz" is appended to a path without it). ``cbptt.load`` reads it back."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        archive.write_archive(path, self.archive_entries())

    def archive_entries(self):
        """What ``save`` writes (a checkpoint of the command adds its own entries): the
        configuration as ``__config__`` and every parameter as ``param:encoder.NAME`` /
        ``param:decoder.NAME`` (views of the buffer, not copies)."""
        optimizer = self.optimizer
        settings = {name: value for name, value in vars(optimizer).items()
                    if name in _OPTIMIZER_SETTINGS}
        config = {"kind": "seq2seq", "format_version": archive.FORMAT_VERSION,
                  "encoder": self.encoder.config(), "decoder": self.decoder.config(),
                  "loss": self.loss, "clip_norm": self.clip_norm,
                  "on_nonfinite": self.on_nonfinite,
                  "optimizer": [type(optimizer).__name__, settings]}
        entries = {archive.PARAM_PREFIX + name: self.model.params[
            offset:offset + int(np.prod(shape))].reshape(shape)
            for name, shape, offset in self.model._layout}
        entries[archive.CONFIG_ENTRY] = archive.json_entry(config)
        return entries


_OPTIMIZER_SETTINGS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "betas",
                       "eps")
_OPTIMIZERS = {"SGD": SGD, "Adam": Adam}


def _lengths(lengths, batch, steps, name):
    """check_lengths, with the argument's name in its messages."""
    try:
        return check_lengths(lengths, batch, steps)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("lengths", name, 1)) from None


def from_archive(config, state):
    """The Seq2Seq a ``Seq2Seq.save`` file holds (config: its ``__config__``; state: its
    parameters keyed ``encoder.NAME``/``decoder.NAME``)."""
    halves = {}
    for role in ("encoder", "decoder"):
        model = RNN(**config[role])
        prefix = role + "."
        model.load_state_dict({name[len(prefix):]: value for name, value in state.items()
                               if name.startswith(prefix)})
        halves[role] = model
    kind, settings = config["optimizer"]
    if kind not in _OPTIMIZERS or not isinstance(settings, dict):
        raise ValueError(f"unknown optimizer {kind!r}")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    optimizer = _OPTIMIZERS[kind](**settings)
    return Seq2Seq(halves["encoder"], halves["decoder"], loss=config["loss"],
                   optimizer=optimizer, clip_norm=config["clip_norm"],
                   on_nonfinite=config["on_nonfinite"])

