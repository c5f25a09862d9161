"""Trainers: one forward pass, BPTT and (for ``step``) one optimiser update per call.

``ManyToMany``: an output and a loss at every step. ``ManyToOne``: one output per sequence,
read at its last step. Both use the model's flat parameter buffer and a workspace (an
``Engine``) allocated once per (batch, steps) shape and reused.
"""
import numpy as np

from . import _checks
from ._engine import Engine
from .losses import check_loss, check_targets
from .model import RNN
from .optim import SGD, Optimizer


class _Trainer:
    many_to_one = False

    def __init__(self, model, loss="mse", optimizer=None, clip_norm=None):
        if not isinstance(model, RNN):
            raise TypeError(f"model must be a cbptt.RNN, got {type(model).__name__}")
        if optimizer is None:
            optimizer = SGD(lr=0.01)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a cbptt optimiser (SGD, Adam), got "
                            f"{type(optimizer).__name__}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be a positive number or None, got {clip_norm}")
        self.model = model
        self.loss = check_loss(loss)
        self.optimizer = optimizer
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self._engine = None
        self._grads = np.zeros_like(model.params)

    # -- argument checks ----------------------------------------------------------------------
    def _targets(self, Y, batch, steps):
        m = self.model
        shape = (batch, m.output_size) if self.many_to_one else (batch, steps, m.output_size)
        return check_targets(self.loss, Y, "Y", shape, m.output_size, m.dtype)

    def _prepare(self, X, Y, h0, c0):
        m = self.model
        X = _checks.sequence_batch(X, m.input_size, m.dtype)
        batch, steps = X.shape[:2]
        Y = self._targets(Y, batch, steps)
        h0, c0 = m.check_state(h0, c0, batch)
        return X, Y, h0, c0

    def _engine_for(self, batch, steps):
        engine = self._engine
        if engine is None or engine.batch != batch or engine.steps != steps:
            m = self.model
            engine = Engine(m.cell, m.num_layers, m.input_size, m.hidden_size, m.output_size,
                            batch, steps, m.dtype, many_to_one=self.many_to_one, loss=self.loss)
            self._engine = engine
        return engine

    def _run(self, X, Y, h0, c0, want_state_grads, return_state):
        """Forward + BPTT into self._grads.

        Returns (loss, state gradients {"h0": .., "c0": ..} or None, final state or None)."""
        m = self.model
        batch = X.shape[0]
        dh0, dc0 = m.new_state(batch) if want_state_grads else (None, None)
        h_final, c_final = m.new_state(batch) if return_state else (None, None)
        loss = self._engine_for(batch, X.shape[1]).loss_and_grad(
            X, Y, m.params, self._grads, h0, dh0, h_final, c0, dc0, c_final)
        state_grads = None
        if want_state_grads:
            state_grads = {"h0": dh0} if dc0 is None else {"h0": dh0, "c0": dc0}
        final = h_final if c_final is None else (h_final, c_final)
        return loss, state_grads, final

    # -- public -------------------------------------------------------------------------------
    def loss_and_grad(self, X, Y, h0=None, c0=None, return_state=False):
        """Loss and gradients without an update.

        Returns (loss, grads) or, with ``return_state=True``, (loss, grads, final_state).
        grads maps every state_dict key to a fresh array, plus ``"h0"`` (num_layers, B, H),
        the gradient with respect to the initial state (zeros when h0 is None), and ``"c0"``
        for lstm. The final state is h (num_layers, B, H), or (h, c) for lstm.
        """
        X, Y, h0, c0 = self._prepare(X, Y, h0, c0)
        loss, state_grads, final = self._run(X, Y, h0, c0, True, return_state)
        grads = {name: self._grads[offset:offset + int(np.prod(shape))].reshape(shape).copy()
                 for name, shape, offset in self.model._layout}
        grads.update(state_grads)
        return (loss, grads, final) if return_state else (loss, grads)

    def step(self, X, Y, h0=None, c0=None, return_state=False):
        """Forward, BPTT, gradient clipping (if clip_norm) and one optimiser update.

        Returns the loss before the update (and the final state with ``return_state=True``).
        Raises FloatingPointError, with the weights unchanged, if the loss or a gradient is
        not finite.
        """
        X, Y, h0, c0 = self._prepare(X, Y, h0, c0)
        loss, _, final = self._run(X, Y, h0, c0, False, return_state)
        grads = self._grads
        sq_norm = float(np.dot(grads, grads))
        if not (np.isfinite(loss) and np.isfinite(sq_norm)):
            raise FloatingPointError(f"non-finite loss ({loss}) or gradient norm; the weights "
                                     "were not updated (lower the learning rate or set "
                                     "clip_norm)")
        if self.clip_norm is not None:
            # as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when < 1
            coef = self.clip_norm / (np.sqrt(sq_norm) + 1e-6)
            if coef < 1:
                grads *= coef
        self.optimizer.step(self.model.params, grads)
        return (loss, final) if return_state else loss


class ManyToMany(_Trainer):
    """An output and a loss at every step.

    X (B, T, I); Y (B, T, O) floats for ``loss="mse"``, (B, T) class ids for
    ``loss="cross_entropy"``. The loss is the mean over all B*T*O elements (mse) or all B*T
    targets (cross_entropy); every step injects its error into the backward pass.
    """


class ManyToOne(_Trainer):
    """One output per sequence, from the last step's state.

    X (B, T, I); y (B, O) floats for ``loss="mse"``, (B,) class ids for
    ``loss="cross_entropy"``; the mean is over B*O elements or B targets.
    """
    many_to_one = True

    def predict(self, X, h0=None, c0=None):
        """The last step's outputs, (B, O)."""
        return self.model.predict(X, h0, c0)[:, -1, :]
