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
released: 2L calls forward and 2L back a step, no Python per time step. The head and the loss
(a few products over all steps at once) are computed here in NumPy, in float64.

The parameters are torch's, in its order: per layer ``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}``, then the same with ``_reverse``; layer k > 0 takes 2H
inputs; ``head.weight`` is (O, 2H). Each (layer, direction) block is one engine's flat layout.
"""
import numpy as np

from ._dropout import dropout_mask
from ._engine import param_count, param_layout
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


def _rows(array, index):
    """array (B, T, ...) with each row's steps taken in index's order."""
    return np.ascontiguousarray(np.take_along_axis(
        array, index.reshape(index.shape + (1,) * (array.ndim - 2)), axis=1))


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

    def forward(self, X, lengths, h0=None, c0=None, dropout=(0, 0)):
        """The top layer's outputs (B, T, 2H) and the final states (2L, B, H) (h, c or None);
        keeps what ``backward`` needs. dropout: (key, row0) of the call's masks (training,
        see _core/dropout.pxd): a layer above the first reads the (B, T, 2H) outputs below
        through the mask of stream 2 layer; each direction's engine draws its recurrent mask
        from its own stream, 2 (2 layer + direction) + 1."""
        m, B = self.model, self.batch
        key, row0 = dropout
        self.masks = [None] * m.num_layers
        self.index = reversal(lengths, B, self.steps)
        self.lengths = lengths
        shape = (2 * m.num_layers, B, m.hidden_size)
        h_final = np.empty(shape, m.dtype)
        c_final = np.empty(shape, m.dtype) if m.cell == "lstm" else None
        inputs = X
        self.inputs = []
        for layer, pair in enumerate(self.engines):
            if layer > 0 and self.training and m.dropout > 0:
                self.masks[layer] = np.ascontiguousarray(dropout_mask(
                    key, layer, m.dropout, B, 2 * m.hidden_size, steps=self.steps, row0=row0,
                    dtype=m.dtype).transpose(1, 0, 2))
                inputs = inputs * self.masks[layer]
            outputs = []
            for direction, engine in enumerate(pair):
                k = 2 * layer + direction
                x = inputs if direction == 0 else _rows(inputs, self.index)
                self.inputs.append(x)              # the engine reads it again going back
                state = dict(h0=_layer(h0, k), c0=_layer(c0, k), h_final=h_final[k:k + 1],
                             c_final=None if c_final is None else c_final[k:k + 1])
                params = m.layer_params(layer, direction)
                if self.training:
                    engine.set_dropout(key, row0, k)
                    engine.encode(x, params, state["h_final"], state["c_final"], lengths,
                                  state["h0"], state["c0"])
                else:
                    engine.predict(x, params, None, lengths=lengths, **state)
                out = np.asarray(engine.states()[0][0, 1:]).transpose(1, 0, 2)
                outputs.append(out if direction == 0 else _rows(out, self.index))
            inputs = np.concatenate(outputs, axis=2)
        return inputs, h_final, c_final

    def backward(self, grads, d_outputs=None, d_final=None, want_state_grads=False,
                 want_input_grads=False):
        """BPTT through every layer and direction into grads (the model's flat layout) from
        dL/d outputs (B, T, 2H) of the top layer and/or dL/d its final states (B, 2H) ([the
        forward one, the reverse one]); returns (squared norm of grads' recurrent entries,
        dh0, dc0 (2L, B, H) or None, dL/dX (B, T, I) or None)."""
        m, B, T, H = self.model, self.batch, self.steps, self.model.hidden_size
        shape = (2 * m.num_layers, B, H)
        dh0 = np.empty(shape, m.dtype) if want_state_grads else None
        dc0 = np.empty(shape, m.dtype) if want_state_grads and m.cell == "lstm" else None
        sq_norm = 0.0
        d_inputs = None
        for layer in range(m.num_layers - 1, -1, -1):
            size = m.input_size if layer == 0 else 2 * H
            need_dx = layer > 0 or want_input_grads
            d_inputs = np.zeros((B, T, size), m.dtype) if need_dx else None
            for direction, engine in enumerate(self.engines[layer]):
                k = 2 * layer + direction
                part = slice(direction * H, (direction + 1) * H)
                d_steps = None if d_outputs is None else np.ascontiguousarray(
                    d_outputs[:, :, part])
                if d_steps is not None and direction == 1:
                    d_steps = _rows(d_steps, self.index)
                d_last = None
                if d_final is not None and layer == m.num_layers - 1:
                    d_last = np.ascontiguousarray(d_final[None, :, part])
                dx = np.empty((B, T, size), m.dtype) if need_dx else None
                block = m.layer_params(layer, direction, grads)
                engine.backward_from_final(
                    block, d_last, None, dx=dx, dh_steps=d_steps,
                    dh0=None if dh0 is None else dh0[k:k + 1],
                    dc0=None if dc0 is None else dc0[k:k + 1])
                sq_norm += engine.grad_sq_norm
                if dx is not None:
                    d_inputs += dx if direction == 0 else _rows(dx, self.index)
            if self.masks[layer] is not None:     # the layer read its input masked
                d_inputs *= self.masks[layer]
            d_outputs, d_final = d_inputs, None
        return sq_norm, dh0, dc0, d_inputs


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
