"""The gradient flow of a bidirectional model (``return_flow=True``): the mean over the batch
of ||dL/dh_t|| for every layer, direction and step.

flow (2L, T) float64, its rows in torch's order of the states (layer 0 forward, layer 0
reverse, layer 1 forward, ...), its columns the steps in the data's order: row 2k+1, column t
is the reverse direction's state at step t, the one in layer k's output at t. dL/dh_t is the
whole gradient of that state, from the layer above (or the head) at step t and from the step
its direction runs next; for an LSTM the cell's gradient is not part of it. Steps after a
sequence's length get no gradient and add 0 to the mean, as in a unidirectional model's flow.

The layer engines record no flow, so it is computed beside their BPTT: each direction's BPTT
is run again one step at a time on a one-step engine without a head, from the states its
forward pass kept (``Engine.states``) and the gradient entering it from above: step t's
gradient dh_t enters as ``dh_final`` (dc_t as ``dc_final``), and the one-step call's dh0 (dc0)
is the gradient the state before t receives, the recurrent part of dh_{t-1}. With recurrent
dropout the one-step engine is keyed as the direction's engine was (``set_dropout``): its
mask on h_{t-1} is one per row and unit, the same at every step, so each replayed step
applies the one the call applied. The cells' algebra is the engine's own; it costs two small
engine calls a step and direction, and runs only when the flow is asked for.
"""
import numpy as np


class FlowReplay:
    """The one-step engines of one bidirectional model at one batch size (one a layer: the
    directions of a layer share its input size), made on first use."""

    def __init__(self, model, batch):
        self.model = model
        self.batch = batch
        self.engines = {}

    def _engine(self, layer, ids):
        key = (layer, ids)
        if key not in self.engines:
            self.engines[key] = self.model.make_layer_engine(layer, self.batch, 1, True,
                                                             ids=ids)
        return self.engines[key]

    def row_norms(self, layer, direction, x, states, inject, last, last_steps, dropout):
        """||dL/dh_t|| (B, T) of one direction of a layer, in the direction's own step order.

        x (B, T, size) (or ids (B, T)): the direction's input as its engine read it; states:
        its engine's ``states()`` after the forward pass (h (1, T+1, B, H) with the initial
        state first, c likewise or None); inject (B, T, H) or None: the gradient entering from
        above at every step; last (B, H) or None: the gradient entering at each row's last
        step last_steps (B,) (many-to-one's final state); dropout: the call's (key, row0)."""
        m, B = self.model, self.batch
        T, H = states[0].shape[1] - 1, m.hidden_size
        engine = self._engine(layer, x.ndim == 2)
        engine.set_dropout(dropout[0], dropout[1], 2 * layer + direction)
        params = m.layer_params(layer, direction)
        scratch = np.empty_like(params)          # the one-step weight gradients, unused
        h, c = states[0][0], (None if states[1] is None else states[1][0])
        h_out = np.empty((1, B, H), m.dtype)
        c_out = None if c is None else np.empty((1, B, H), m.dtype)
        dh_prev = np.zeros((1, B, H), m.dtype)    # the recurrent part of dh_t, from step t + 1
        dc_prev = None if c is None else np.zeros((1, B, H), m.dtype)
        dh = np.empty((1, B, H), m.dtype)
        norms = np.empty((B, T))
        for t in range(T - 1, -1, -1):
            dh[...] = dh_prev
            if inject is not None:
                dh[0] += inject[:, t]
            if last is not None:
                at_t = last_steps == t
                dh[0, at_t] += last[at_t]
            norms[:, t] = np.sqrt((dh[0].astype(np.float64) ** 2).sum(axis=1))
            if t == 0:
                break
            engine.encode(np.ascontiguousarray(x[:, t:t + 1]), params, h_out, c_out, None,
                          np.ascontiguousarray(h[t][None]),
                          None if c is None else np.ascontiguousarray(c[t][None]))
            engine.backward_from_final(scratch, dh, None if c is None else dc_prev.copy(),
                                       dh0=dh_prev, dc0=dc_prev)
        return norms
