"""Truncated BPTT(k1, k2) on streams of any length."""
import numpy as np

from . import _checks, embedding
from .losses import check_targets
from .trainers import _Trainer, check_mask

# The arrays of a stream state (``Truncated.stream_state``) and the axis of each that runs
# over the streams: the ring of the last k2 inputs (k2, B, I) and entering states
# (k2, L, B, H), the carried state (L, B, H).
STREAM_BATCH_AXIS = {"ring_x": 1, "ring_h": 2, "ring_c": 2, "h": 1, "c": 1}


class Truncated(_Trainer):
    """Truncated backpropagation through time, BPTT(k1, k2), on stateful streams.

    The stream is consumed k1 steps at a time (k2 >= k1; k2 defaults to k1). For each block
    [s, e): the model is run with the current weights over the window [max(0, e - k2), e),
    starting from the state that entered the window's first step (as computed when that step
    was first processed; zeros at the stream's start), treated as a constant - no gradient
    crosses the window's start. The loss is the mean over the block's own outputs [s, e)
    only. Back-propagate through the whole window, update once. The states this forward pass
    computes for steps [s, e) are kept, and the state after e is carried into the next block.
    With k1 == k2 this is the usual "detach between chunks" training; with k1 = k2 = T it
    equals ManyToMany.

    ``step(X, Y)`` takes a (B, L, I) batch of B parallel streams and does ceil(L / k1)
    updates (the last block may be shorter); the stream continues across calls until
    ``reset_state()``. Memory is bounded by the window: the trainer keeps the inputs and
    entering states of the last k2 steps, nothing that grows with the stream.

    ``mask`` (B, L) weights the outputs as in ManyToMany (the mean of a block runs over its
    unmasked outputs); a block with no unmasked output makes no update.

    With ``many_to_one=True`` every call is one batch of whole sequences with a single target
    per sequence (y (B, O) or (B,)), read at the last step: the sequence is run forward
    without gradients up to its last k2 steps, then back-propagated through those k2 steps
    only, with one update per call. The state starts from zeros (or ``reset_state``'s h0/c0)
    at every call.
    """

    def __init__(self, model, k1, k2=None, loss="mse", optimizer=None, clip_norm=None,
                 many_to_one=False, on_nonfinite="raise", seed=None):
        super().__init__(model, loss=loss, optimizer=optimizer, clip_norm=clip_norm,
                         on_nonfinite=on_nonfinite, seed=seed)
        if model.bidirectional:
            raise ValueError("model: Truncated does not train a bidirectional model: its "
                             "reverse direction reads the stream's future, which a stream "
                             "has not reached yet")
        self.k1 = _checks.check_size(k1, "k1")
        self.k2 = self.k1 if k2 is None else _checks.check_size(k2, "k2")
        if self.k2 < self.k1:
            raise ValueError(f"k2 must be >= k1 (got k1={self.k1}, k2={self.k2})")
        self.many_to_one = bool(many_to_one)
        self.reset_state()

    # -- stream state -------------------------------------------------------------------------
    def reset_state(self, h0=None, c0=None):
        """Start a new stream: position 0, state zeros (or h0, c0 of shape (L, B, H))."""
        self.position = 0
        self._batch = None
        self._ring_x = self._ring_h = self._ring_c = None
        self._h = self._c = None
        given = h0 if h0 is not None else c0
        if given is not None:
            shape = np.shape(given)
            batch = shape[1] if len(shape) == 3 else "batch"   # check_state names the shape
            self._h, self._c = self.model.check_state(h0, c0, batch)
            self._batch = batch

    @property
    def state(self):
        """The carried state (a copy): h (L, B, H), or (h, c) for lstm; None at a stream's
        start with no h0."""
        if self._h is None and self._c is None:
            return None
        h = None if self._h is None else self._h.copy()
        if self.model.cell != "lstm":
            return h
        return h, (None if self._c is None else self._c.copy())

    _STREAM_ARRAYS = tuple(STREAM_BATCH_AXIS)

    def stream_state(self):
        """The stream as copies of plain arrays, for checkpoints: position, batch (-1 when
        none yet), the carried state and the ring of the last k2 inputs and entering states."""
        state = {"position": np.array(self.position, np.int64),
                 "batch": np.array(-1 if self._batch is None else self._batch, np.int64)}
        for name in self._STREAM_ARRAYS:
            value = getattr(self, "_" + name)
            if value is not None:
                state[name] = value.copy()
        return state

    def load_stream_state(self, state):
        """Continue the stream saved by ``stream_state()`` (same model shape, k1 and k2)."""
        m = self.model
        batch = int(state["batch"])
        ids = "ring_x" in state and np.ndim(state["ring_x"]) == 2     # a stream of token ids
        expected = {"ring_x": (self.k2, batch) if ids else (self.k2, batch, m.input_size),
                    "ring_h": (self.k2, m.num_layers, batch, m.hidden_size),
                    "ring_c": (self.k2, m.num_layers, batch, m.hidden_size),
                    "h": (m.num_layers, batch, m.hidden_size),
                    "c": (m.num_layers, batch, m.hidden_size)}
        for name, shape in expected.items():
            if name in state and np.shape(state[name]) != shape:
                raise ValueError(f"stream state {name!r} has shape {np.shape(state[name])}, "
                                 f"expected {shape} for this trainer")
        self.reset_state()
        self._batch = None if batch < 0 else batch
        self.position = int(state["position"])
        for name in self._STREAM_ARRAYS:
            value = state.get(name)
            dtype = np.int64 if name == "ring_x" and ids else m.dtype
            setattr(self, "_" + name,
                    None if value is None else np.array(value, dtype=dtype, copy=True))

    def _alloc_ring(self, batch, ids):
        """Inputs (ids: token ids) and entering states of the last k2 stream steps, slot =
        step % k2; slot 0 starts with the stream's initial state."""
        m = self.model
        self._ring_x = (np.zeros((self.k2, batch), np.int64) if ids else
                        np.zeros((self.k2, batch, m.input_size), m.dtype))
        self._ring_h = np.zeros((self.k2, m.num_layers, batch, m.hidden_size), m.dtype)
        if self._h is not None:
            self._ring_h[0] = self._h
        if m.cell == "lstm":
            self._ring_c = np.zeros_like(self._ring_h)
            if self._c is not None:
                self._ring_c[0] = self._c

    # -- validation ---------------------------------------------------------------------------
    def _prepare(self, X, Y, mask):
        m = self.model
        X = (_checks.sequence_batch(X, m.input_size, m.dtype) if m.vocab_size is None else
             embedding.check_ids(X, m.vocab_size))
        batch, length = X.shape[:2]
        if self._ring_x is not None and not self.many_to_one and \
                (self._ring_x.ndim == 2) != (X.ndim == 2):
            raise ValueError(f"X: the current stream's inputs are "
                             f"{'token ids' if X.ndim == 3 else 'floats'}, these are "
                             f"{'token ids' if X.ndim == 2 else 'floats'}; call "
                             f"reset_state() to start new streams")
        if self._batch is not None and batch != self._batch and not self.many_to_one:
            raise ValueError(f"X has {batch} streams but the current stream has "
                             f"{self._batch}; call reset_state() to start new streams")
        if self.many_to_one:
            if mask is not None:
                raise ValueError("mask is not used with many_to_one=True")
            shape = (batch, m.output_size)
        else:
            shape = (batch, length, m.output_size)
        Y = check_targets(self.loss, Y, "Y", shape, m.output_size, m.dtype)
        if mask is not None:
            mask = check_mask(mask, batch, length, m.dtype)
        return X, Y, mask

    # -- training -----------------------------------------------------------------------------
    def step(self, X, Y, mask=None):
        """Train on the next L steps of the streams: ceil(L / k1) updates (one with
        many_to_one). X (B, L, I); Y (B, L, O) floats for mse or (B, L) class ids for
        cross_entropy ((B, O) / (B,) with many_to_one); mask (B, L) or None.

        Returns the mean loss over the call's outputs (each block's loss weighted by its
        number of outputs, or its total mask weight)."""
        X, Y, mask = self._prepare(X, Y, mask)
        with self.model.lock:
            if self.many_to_one:
                return self._step_many_to_one(X, Y)
            return self._step_blocks(X, Y, mask)

    def _step_blocks(self, X, Y, mask):
        batch, length = X.shape[:2]
        if self._ring_x is None:
            self._alloc_ring(batch, X.ndim == 2)
            self._batch = batch
        total_loss = total_weight = 0.0
        for start in range(0, length, self.k1):
            stop = min(start + self.k1, length)
            weight = None if mask is None else np.ascontiguousarray(mask[:, start:stop])
            block_weight = (stop - start) if weight is None else float(weight.sum())
            loss = self._block(X, Y, weight, start, stop)
            total_loss += loss * block_weight
            total_weight += block_weight
        return total_loss / total_weight if total_weight else 0.0

    def _block(self, X, Y, weight, start, stop):
        """One block [start, stop) of this call's data (stream steps offset by position)."""
        k2 = self.k2
        block_start, block_stop = self.position, self.position + (stop - start)
        window_start = max(0, block_stop - k2)
        past = block_start - window_start           # window steps taken from the ring
        steps = block_stop - window_start
        batch = X.shape[0]

        Xw = np.empty((batch, steps) + X.shape[2:], X.dtype)
        ring_rows = np.arange(window_start, block_start) % k2
        Xw[:, :past] = np.swapaxes(self._ring_x[ring_rows], 0, 1)
        Xw[:, past:] = X[:, start:stop]
        if past:
            h0 = self._ring_h[window_start % k2]
            c0 = None if self._ring_c is None else self._ring_c[window_start % k2]
        else:
            h0, c0 = self._h, self._c
        Yw = np.ascontiguousarray(Y[:, start:stop])

        loss, engine = self._window(Xw, Yw, past, _BlockPlace(block_start, block_stop,
                                                              start // self.k1),
                                    h0=h0, c0=c0, weight=weight)
        hs, cs = engine.states()
        # keep the block's inputs and the states its steps computed (the state entering step
        # p + 1 is the one step p computed); carry the last one
        _ring_write(self._ring_x, block_start, np.swapaxes(X[:, start:stop], 0, 1))
        _ring_write(self._ring_h, block_start + 1, hs[:, past + 1:].transpose(1, 0, 2, 3))
        self._h = hs[:, steps].copy()
        if cs is not None:
            _ring_write(self._ring_c, block_start + 1, cs[:, past + 1:].transpose(1, 0, 2, 3))
            self._c = cs[:, steps].copy()
        self.position = block_stop
        return loss

    def _step_many_to_one(self, X, Y):
        """Forward without gradients up to the last k2 steps, then BPTT over those."""
        m = self.model
        batch, length = X.shape[:2]
        h, c = (self._h, self._c) if self._batch == batch else (None, None)
        window_start = max(0, length - self.k2)
        for start in range(0, window_start, self.k2):
            stop = min(start + self.k2, window_start)
            h, c = _run_forward(m, X[:, start:stop], h, c)
        Xw = np.ascontiguousarray(X[:, window_start:])
        loss, _ = self._window(Xw, Y, 0, where=f"the window [{window_start}, {length})",
                               h0=h, c0=c)
        return loss

    def _window(self, Xw, Yw, past, where, **call):
        """Forward and BPTT over one window of inputs Xw (floats, or ids: a model with an
        embedding gets their rows, and its table the engine's dL/dx summed by id), then the
        update. Returns (loss, engine)."""
        m = self.model
        batch, steps = Xw.shape[:2]
        ids = None
        if m.vocab_size is not None:
            ids, Xw = Xw, m.engine_inputs(Xw)[0]
        engine = self._engine_for(batch, steps, loss_start=past, ids=Xw.ndim == 2)
        self._next_dropout(engine)
        dx = None if ids is None else np.empty_like(Xw)
        loss = engine.loss_and_grad(Xw, Yw, m.engine_params, self._grads[:m.engine_size],
                                    dx=dx, **call)
        sq_norm = engine.grad_sq_norm
        if ids is not None:
            sq_norm += embedding.learn_table(m, ids, dx, self._grads)
        self._apply_update(loss, sq_norm, engine.loss_terms, where)
        return loss, engine

    def fit_stream(self, source, targets=None, mask=None, chunk_steps=None):
        """Train over a whole stream, chunk by chunk, in memory bounded by the window.

        source: an array or ``np.memmap`` of shape (L, I) (one stream) or (B, L, I), or of
        token ids (L,) or (B, L) (integers: the one-hot input, never made), with
        targets of shape (L, O)/(B, L, O) (or class ids (L,)/(B, L)) and optional mask;
        or an iterable of (X_chunk, Y_chunk) pairs, each a ``step`` argument pair.
        chunk_steps (a multiple of k1; default the multiple of k1 nearest 4096) sets how
        many steps are read from an array at a time; block boundaries are the same as one
        ``step`` over the whole stream. For an iterable, blocks restart at each chunk, so
        chunks should hold a multiple of k1 steps.

        Continues the current stream (call reset_state() first for a new one). Returns the
        per-chunk mean losses as an array.
        """
        if self.many_to_one:
            raise ValueError("fit_stream trains many-to-many streams; use step() with "
                             "many_to_one=True")
        losses = []
        if targets is None:
            if isinstance(source, np.ndarray):
                raise ValueError("targets are required when source is an array")
            for pair in source:
                if not isinstance(pair, tuple) or len(pair) not in (2, 3):
                    raise TypeError("an iterable source must yield (X_chunk, Y_chunk) or "
                                    "(X_chunk, Y_chunk, mask_chunk) tuples")
                losses.append(self.step(*pair))
            return np.asarray(losses)
        if chunk_steps is None:
            chunk_steps = max(1, round(4096 / self.k1)) * self.k1
        chunk_steps = _checks.check_size(chunk_steps, "chunk_steps")
        if chunk_steps % self.k1:
            raise ValueError(f"chunk_steps must be a multiple of k1={self.k1}, got "
                             f"{chunk_steps}")
        ids = _is_ids(source)
        single = np.ndim(source) == (1 if ids else 2)
        length = stream_length(source)
        target_length = np.shape(targets)[0 if single else 1]
        if target_length != length:
            raise ValueError(f"targets have {target_length} steps but source has {length}")
        for start in range(0, length, chunk_steps):
            stop = min(start + chunk_steps, length)
            if single:
                X, Y = source[None, start:stop], targets[None, start:stop]
                M = None if mask is None else mask[None, start:stop]
            else:
                X, Y = source[:, start:stop], targets[:, start:stop]
                M = None if mask is None else mask[:, start:stop]
            losses.append(self.step(X, Y, M))
        return np.asarray(losses)


def stream_rows(state, rows):
    """The stream state of the streams ``rows`` (a slice) of a whole ``stream_state()``; a
    state with no streams yet (batch -1) is returned as it is."""
    batch = int(state["batch"])
    if batch < 0:
        return state
    start, stop, _ = rows.indices(batch)
    part = {"position": state["position"], "batch": np.array(stop - start, np.int64)}
    for name, axis in STREAM_BATCH_AXIS.items():
        if name in state:
            index = [slice(None)] * np.ndim(state[name])
            index[axis] = slice(start, stop)
            part[name] = state[name][tuple(index)]
    return part


def join_streams(parts):
    """The stream state of all the streams of ``parts`` (``stream_state()`` of trainers that
    each hold some streams of one stream, in order): ``stream_rows``'s inverse."""
    batches = [int(p["batch"]) for p in parts]
    whole = {"position": parts[0]["position"],
             "batch": np.array(-1 if min(batches) < 0 else sum(batches), np.int64)}
    for name, axis in STREAM_BATCH_AXIS.items():
        if all(name in p for p in parts):
            whole[name] = np.concatenate([p[name] for p in parts], axis=axis)
    return whole


def _is_ids(source):
    """Whether a stream array holds token ids (integers) rather than float inputs."""
    return np.asarray(source[:0] if hasattr(source, "dtype") else source).dtype.kind in "iu"


def stream_length(source):
    """Steps of a stream array: (L, I) / (B, L, I) floats, or (L,) / (B, L) token ids."""
    return np.shape(source)[-1 if _is_ids(source) else -2]


def _run_forward(model, X, h0, c0):
    """The state after running X (B, T, I) or ids (B, T) from (h0, c0), without
    gradients."""
    _, final = model.predict(X, h0, c0, return_state=True)
    return final if model.cell == "lstm" else (final, None)


def _ring_write(ring, first, values):
    """ring[(first + i) % k2] = values[i] for the len(values) <= k2 values: one or two slices
    (a block's rows of the ring, wrapping around at most once)."""
    k2 = ring.shape[0]
    slot = first % k2
    head = min(len(values), k2 - slot)
    ring[slot:slot + head] = values[:head]
    if head < len(values):
        ring[:len(values) - head] = values[head:]


class _BlockPlace:
    """Where a block is, for the non-finite update message (formatted only when raised)."""
    __slots__ = ("start", "stop", "index")

    def __init__(self, start, stop, index):
        self.start, self.stop, self.index = start, stop, index

    def __str__(self):
        return f"stream steps [{self.start}, {self.stop}) (block {self.index} of this call)"
