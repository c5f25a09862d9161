"""Bidirectional layers, as ``torch.nn.RNN``/``LSTM``/``GRU(bidirectional=True)``.

Layer k runs two directions over its input: forward over steps 0 .. T-1, and reverse over
each sequence's own steps backwards, lengths[b] - 1 .. 0 (the padding after a sequence stays
where it is, after the reversed steps, so it changes nothing). Its output at step t is
[h_forward_t, h_reverse_t] (2H), the next layer's input; the head reads the top layer's.
Many-to-one reads [the forward state after step lengths[b] - 1, the reverse state after it
has run down to step 0], torch's ``h_n[-2:]`` under ``pack_padded_sequence``.

Each direction of each layer is one engine call of a one-layer engine without a head
(``Engine.encode``, then ``Engine.backward_from_final`` with the gradient of its every output,
``dh_steps``, or of its final state, and its input's gradient ``dx`` out), with the GIL
released: 2L calls forward and 2L back a step, no Python per time step. Where BLAS has two
threads or more and a direction's call is big enough for cbptt's team, a layer's two
directions run at once instead, one thread each (``settings.concurrent_directions``): each
call then runs alone, with its BLAS on one thread. The head and the loss (a few products over
all steps at once) are computed here in NumPy, in float64.

The parameters are torch's, in its order: per layer ``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}``, then the same with ``_reverse``; layer k > 0 takes 2H
inputs; ``head.weight`` is (O, 2H). Each (layer, direction) block is one engine's flat layout.
"""
import concurrent.futures
import threading

import numpy as np

from . import _settings
from ._dropout import dropout_mask
from ._engine import param_count, param_layout
from ._threads import blas_threads
from .bidirectional_flow import FlowReplay
from .data import log_softmax

DIRECTIONS = ("", "_reverse")


def layout(cell, num_layers, input_size, hidden_size, output_size):
    """[(name, shape, offset)] of a bidirectional model's parameters (output_size None: no
    head)."""
    entries, offset = [], 0
    for layer in range(num_layers):
        size = input_size if layer == 0 else 2 * hidden_size
        for suffix in DIRECTIONS:
            for name, shape, start in param_layout(cell, 1, size, hidden_size, 0):
                entries.append((name.replace("_l0", f"_l{layer}") + suffix, shape,
                                offset + start))
            offset += param_count(cell, 1, size, hidden_size, 0)
    if output_size is not None:
        entries.append(("head.weight", (output_size, 2 * hidden_size), offset))
        entries.append(("head.bias", (output_size,), offset + 2 * hidden_size * output_size))
    return entries


def reversal(lengths, batch, steps):
    """index (B, T): row b's steps read back to front within its length, its padding in place
    (index[b, index[b, t]] = t)."""
    t = np.arange(steps)
    if lengths is None:
        return np.broadcast_to(t[::-1], (batch, steps))
    lengths = np.asarray(lengths)[:, None]
    return np.where(t < lengths, lengths - 1 - t, t)


def _rows(array, flat):
    """array (B, T, ...) with each row's steps taken in the order of flat (B T,), the
    reversal's index as rows of array viewed as (B T, ...): one gather of whole rows."""
    return np.take(array.reshape((flat.size,) + array.shape[2:]), flat, axis=0).reshape(
        array.shape)


_pool = None                       # the second direction's thread, started on first use
_pool_lock = threading.Lock()
_worker_settings = {}              # the settings in force -> their twin for a direction's thread


def _in_pair(settings, call):
    """call() under settings (a direction's: alone, BLAS on one thread), in this thread."""
    previous = _settings._local.snapshot
    _settings._local.snapshot = settings
    try:
        return call()
    finally:
        _settings._local.snapshot = previous


def run_pair(first, second, together):
    """first() and second(), the two directions' calls: one after the other, or at once (the
    second on a thread of its own), each under settings that run it alone with BLAS on one
    thread, so that both give what they give alone at one thread."""
    global _pool
    if not together:
        first()
        second()
        return
    snapshot = _settings.current()
    twin = _worker_settings.get(id(snapshot))
    if twin is None or twin[0] is not snapshot:
        twin = (snapshot, snapshot._replace(team=1, one_blas_thread=True))
        _worker_settings.clear()
        _worker_settings[id(snapshot)] = twin
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(1, "cbptt-direction")
        pending = _pool.submit(_in_pair, twin[1], second)
    try:
        _in_pair(twin[1], first)
    finally:
        pending.result()


class Bidirectional:
    """The engine calls of one bidirectional model at one (batch, steps) shape, training or
    not; ``forward`` then (training) ``backward`` once each per step."""

    def __init__(self, model, batch, steps, training, ids):
        self.model = model
        self.batch, self.steps = batch, steps
        self.engines = [[model.make_layer_engine(layer, batch, steps, training,
                                                 ids=ids and layer == 0)
                         for _ in DIRECTIONS] for layer in range(model.num_layers)]
        self.training = training
        self.ids = ids
        self.replay = None      # the flow's one-step engines (bidirectional_flow.py)

    def concurrent(self):
        """Whether this call's two directions run at once (see the banner): decided per call,
        as BLAS's thread count may change between calls."""
        return (_settings.current().concurrent_directions and blas_threads() >= 2 and
                self.engines[0][0].plan["team"])

    def forward(self, X, lengths, h0=None, c0=None, dropout=(0, 0), top_outputs=True):
        """The top layer's outputs (B, T, 2H) and the final states (2L, B, H) (h, c or None);
        keeps what ``backward`` needs. dropout: (key, row0) of the call's masks (training,
        see _core/dropout.pxd): a layer above the first reads the (B, T, 2H) outputs below
        through the mask of stream 2 layer; each direction's engine draws its recurrent mask
        from its own stream, 2 (2 layer + direction) + 1. top_outputs False: the top layer's
        outputs are not made (many-to-one reads the final states only; returns None)."""
        m, B = self.model, self.batch
        key, row0 = dropout
        self.dropout = dropout
        self.masks = [None] * m.num_layers
        self.together = self.concurrent()
        self.index = reversal(lengths, B, self.steps)
        self.flat = (np.arange(B)[:, None] * self.steps + self.index).ravel()
        self.lengths = lengths
        shape = (2 * m.num_layers, B, m.hidden_size)
        h_final = np.empty(shape, m.dtype)
        c_final = np.empty(shape, m.dtype) if m.cell == "lstm" else None
        inputs = X
        self.inputs = [None] * (2 * m.num_layers)
        for layer, pair in enumerate(self.engines):
            if layer > 0 and self.training and m.dropout > 0:
                self.masks[layer] = np.ascontiguousarray(dropout_mask(
                    key, layer, m.dropout, B, 2 * m.hidden_size, steps=self.steps, row0=row0,
                    dtype=m.dtype).transpose(1, 0, 2))
                inputs = inputs * self.masks[layer]
            calls = []
            for direction, engine in enumerate(pair):
                k = 2 * layer + direction
                x = inputs if direction == 0 else _rows(inputs, self.flat)
                self.inputs[k] = x                 # the engine reads it again going back
                state = dict(h0=_layer(h0, k), c0=_layer(c0, k), h_final=h_final[k:k + 1],
                             c_final=None if c_final is None else c_final[k:k + 1])
                params = m.layer_params(layer, direction)
                if self.training:
                    engine.set_dropout(key, row0, k)
                calls.append(self._forward_call(engine, x, params, state, lengths))
            run_pair(*calls, self.together)
            if layer == m.num_layers - 1 and not top_outputs:
                return None, h_final, c_final
            H = m.hidden_size
            inputs = np.empty((B, self.steps, 2 * H), m.dtype)
            for direction, engine in enumerate(pair):   # [forward, reverse] at every step
                out = np.asarray(engine.states()[0][0, 1:]).transpose(1, 0, 2)
                if direction == 1:
                    out = _rows(np.ascontiguousarray(out), self.flat)
                inputs[:, :, direction * H:(direction + 1) * H] = out
        return inputs, h_final, c_final

    def _forward_call(self, engine, x, params, state, lengths):
        """A direction's forward call, to run (run_pair)."""
        if self.training:
            return lambda: engine.encode(x, params, state["h_final"], state["c_final"],
                                         lengths, state["h0"], state["c0"])
        return lambda: engine.predict(x, params, None, lengths=lengths, **state)

    def backward(self, grads, d_outputs=None, d_final=None, want_state_grads=False,
                 want_input_grads=False, flow=None):
        """BPTT through every layer and direction into grads (the model's flat layout) from
        dL/d outputs (B, T, 2H) of the top layer and/or dL/d its final states (B, 2H) ([the
        forward one, the reverse one]); returns (squared norm of grads' recurrent entries,
        dh0, dc0 (2L, B, H) or None, dL/dX (B, T, I) or None). flow (2L, T) float64, if
        given, receives the gradient flow (bidirectional_flow.py)."""
        m, B, T, H = self.model, self.batch, self.steps, self.model.hidden_size
        if flow is not None and self.replay is None:
            self.replay = FlowReplay(m, B)
        last_steps = np.full(B, T - 1) if self.lengths is None else self.lengths - 1
        shape = (2 * m.num_layers, B, H)
        dh0 = np.empty(shape, m.dtype) if want_state_grads else None
        dc0 = np.empty(shape, m.dtype) if want_state_grads and m.cell == "lstm" else None
        sq_norm = 0.0
        d_inputs = None
        for layer in range(m.num_layers - 1, -1, -1):
            size = m.input_size if layer == 0 else 2 * H
            need_dx = layer > 0 or want_input_grads
            d_inputs = np.zeros((B, T, size), m.dtype) if need_dx else None
            calls, dxs = [], []
            for direction, engine in enumerate(self.engines[layer]):
                k = 2 * layer + direction
                part = slice(direction * H, (direction + 1) * H)
                d_steps = None if d_outputs is None else np.ascontiguousarray(
                    d_outputs[:, :, part])
                if d_steps is not None and direction == 1:
                    d_steps = _rows(d_steps, self.flat)
                d_last = None
                if d_final is not None and layer == m.num_layers - 1:
                    d_last = np.ascontiguousarray(d_final[None, :, part])
                if flow is not None:    # before the engine's BPTT, from its forward states
                    norms = self.replay.row_norms(
                        layer, direction, self.inputs[k], engine.states(), d_steps,
                        None if d_last is None else d_last[0], last_steps, self.dropout)
                    flow[k] = (norms if direction == 0 else _rows(norms, self.flat)).mean(0)
                dx = np.empty((B, T, size), m.dtype) if need_dx else None
                block = m.layer_params(layer, direction, grads)
                calls.append(_backward_call(engine, block, d_last, dx, d_steps,
                                            None if dh0 is None else dh0[k:k + 1],
                                            None if dc0 is None else dc0[k:k + 1]))
                dxs.append(dx)
            run_pair(*calls, self.together)
            for direction, (engine, dx) in enumerate(zip(self.engines[layer], dxs)):
                sq_norm += engine.grad_sq_norm
                if dx is not None:
                    d_inputs += dx if direction == 0 else _rows(dx, self.flat)
            if self.masks[layer] is not None:     # the layer read its input masked
                d_inputs *= self.masks[layer]
            d_outputs, d_final = d_inputs, None
        return sq_norm, dh0, dc0, d_inputs


def _backward_call(engine, block, d_last, dx, d_steps, dh0, dc0):
    """A direction's backward call, to run (run_pair)."""
    return lambda: engine.backward_from_final(block, d_last, None, dx=dx, dh_steps=d_steps,
                                              dh0=dh0, dc0=dc0)


def _layer(state, k):
    return None if state is None else np.ascontiguousarray(state[k:k + 1])


def head_and_loss(model, top, target, loss, weight, grads):
    """The head on the top layer's outputs top (N, 2H) (many-to-many: every step's rows;
    many-to-one: one a sequence) and the loss against target (N, O) floats or (N,) ids, with
    per-row weights (N,) or None, as the engine's reductions (mse over O * sum w elements,
    cross-entropy over sum w targets). Writes head.weight's and head.bias's gradients into
    grads (flat layout); returns (loss, terms, dL/dtop (N, 2H), their squared norm)."""
    W = model.named_parameter("head.weight").astype(np.float64)
    b = model.named_parameter("head.bias").astype(np.float64)
    z = top.astype(np.float64)
    pred = z @ W.T + b                                   # (N, O) = top @ W^T + b
    w = np.ones(len(z)) if weight is None else weight.astype(np.float64)
    if loss == "mse":
        terms = model.output_size * w.sum()
        diff = pred - target
        value = float((w[:, None] * diff ** 2).sum() / terms) if terms else 0.0
        dpred = 2 * w[:, None] * diff / terms if terms else np.zeros_like(pred)
    else:
        terms = w.sum()
        logp = log_softmax(pred)
        rows = np.arange(len(z))
        value = float(-(w * logp[rows, target]).sum() / terms) if terms else 0.0
        dpred = np.exp(logp)
        dpred[rows, target] -= 1
        dpred *= (w / terms)[:, None] if terms else 0.0
    dW = dpred.T @ z                                     # dW = dpred^T @ top
    db = dpred.sum(axis=0)
    head = model.head_grads(grads)
    head[0][...] = dW
    head[1][...] = db
    return value, float(terms), dpred @ W, float((dW ** 2).sum() + (db ** 2).sum())
