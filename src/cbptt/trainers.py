"""Trainers: one forward pass, BPTT and (for ``step``) one optimiser update per call.

``ManyToMany``: an output and a loss at every step. ``ManyToOne``: one output per sequence,
read at its last (or last valid) step. Both use the model's flat parameter buffer and a
workspace (an ``Engine``) allocated once per (batch, steps) shape and reused. Truncated BPTT
is in ``truncated.py``.
"""
import warnings

import numpy as np

from . import _checks, bounded, embedding, memory
from ._arrays import squared_norm_of
from ._dropout import dropout_key
from .losses import check_loss, check_targets
from .bidirectional import Bidirectional, head_and_loss
from .fitting import FitMixin
from .model import RNN
from .optim import SGD, Optimizer


class _Trainer(FitMixin):
    """What every trainer shares: the model, loss, optimiser, clipping, the update and
    ``fit`` (fitting.py)."""

    many_to_one = False

    def __init__(self, model, loss="mse", optimizer=None, clip_norm=None,
                 on_nonfinite="raise", seed=None, memory_limit=None):
        if not isinstance(model, RNN):
            raise TypeError(f"model must be a cbptt.RNN, got {type(model).__name__}")
        model.require_head(type(self).__name__)
        self._init_update(optimizer, clip_norm, on_nonfinite, seed)
        self.memory_limit = bounded.check_limit(model, memory_limit, type(self).__name__)
        self.model = model
        self.loss = check_loss(loss)
        memory.require(memory.trainer_bytes(model, self.optimizer),
                       f"a trainer of {model!r} (its gradients and the state of "
                       f"{type(self.optimizer).__name__})")
        self._engines = {}
        self._grads = np.zeros_like(model.params)

    def _init_update(self, optimizer, clip_norm, on_nonfinite, seed=None):
        """The optimiser, clipping and non-finite policy of ``_update``, checked, and the
        dropout masks' seed (None: 0)."""
        if optimizer is None:
            optimizer = SGD(lr=0.01)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a cbptt optimiser (SGD, Adam), got "
                            f"{type(optimizer).__name__}")
        if clip_norm is not None and (isinstance(clip_norm, bool) or not clip_norm > 0):
            raise ValueError(f"clip_norm must be a positive number or None, got {clip_norm}")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.skipped_updates = 0
        # Called as reducer(grads, loss, loss_terms) -> (loss, loss_terms) before every update:
        # it may combine the gradients in place across processes (see cbptt.distributed).
        self.gradient_reducer = None
        self.optimizer = optimizer
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        if seed is not None and (isinstance(seed, bool) or
                                 not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        # A training call's dropout masks are those of (seed, dropout_calls): the same seed
        # and calls give bit-identical results; dropout_row0 numbers the batch's rows (a
        # DataParallel rank's block of the global batch).
        self.seed = 0 if seed is None else int(seed)
        self.dropout_calls = 0
        self.dropout_row0 = 0

    def _next_dropout(self, engine, stream0=0):
        """Key `engine`'s next call's dropout masks with this trainer's next call: (seed,
        dropout_calls), counted. Returns the key (for the other engines of one call)."""
        key = dropout_key(self.seed, self.dropout_calls)
        self.dropout_calls += 1
        engine.set_dropout(key, self.dropout_row0, stream0)
        return key

    def _engine_for(self, batch, steps, loss_start=0, many_to_one=None, ids=False):
        """The workspace for this shape (ids: of token ids), made on first use and kept.
        Trainers see few shapes (truncated BPTT: the full window, the first windows and a
        short last block)."""
        many_to_one = self.many_to_one if many_to_one is None else many_to_one
        key = (batch, steps, loss_start, many_to_one, ids)
        engine = self._engines.get(key)
        if engine is None:
            if len(self._engines) >= 8:     # a new batch shape: drop the old workspaces
                self._engines.clear()
            engine = self.model.make_engine(batch, steps, many_to_one=many_to_one,
                                            loss=self.loss, loss_start=loss_start, ids=ids)
            self._engines[key] = engine
        return engine

    def _grads_dict(self):
        """Copies of the flat gradient buffer, keyed like state_dict()."""
        return {name: self._grads[offset:offset + int(np.prod(shape))].reshape(shape).copy()
                for name, shape, offset in self.model._layout}

    def _update(self, engine, loss, where="this step"):
        """Check, clip and apply self._grads (just computed by engine): ``_apply_update``."""
        return self._apply_update(loss, engine.grad_sq_norm, engine.loss_terms, where)

    def _apply_update(self, loss, sq_norm, terms, where="this step"):
        """Check, clip and apply self._grads to self.model.params: sq_norm is their squared
        norm and terms the number of terms the loss is the mean of. A non-finite loss or
        gradient leaves weights and optimiser untouched: FloatingPointError, or with
        on_nonfinite="skip" a RuntimeWarning and a count in ``skipped_updates``.
        Returns whether the update was applied (not when every output was masked out)."""
        grads = self._grads
        if self.gradient_reducer is not None:
            loss, terms = self.gradient_reducer(grads, loss, terms)
            sq_norm = squared_norm_of(grads)
        if terms == 0:              # nothing to learn from (a fully masked block)
            return False
        if not (np.isfinite(loss) and np.isfinite(sq_norm)):
            message = (f"non-finite loss ({loss}) or gradient at {where}; the weights were "
                       "not updated (lower the learning rate or set clip_norm)")
            if self.on_nonfinite == "raise":
                raise FloatingPointError(message)
            self.skipped_updates += 1
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return False
        if self.clip_norm is not None:
            # as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when < 1
            coef = self.clip_norm / (np.sqrt(sq_norm) + 1e-6)
            if coef < 1:
                grads *= coef
        self.optimizer.step(self.model.params, grads)
        return True


class _FullBPTT(_Trainer):
    """Full BPTT over whole sequences: ManyToMany and ManyToOne."""

    def _targets(self, Y, batch, steps):
        m = self.model
        shape = (batch, m.output_size) if self.many_to_one else (batch, steps, m.output_size)
        return check_targets(self.loss, Y, "Y", shape, m.output_size, m.dtype)

    def _extras(self, batch, steps, mask, lengths):
        raise NotImplementedError

    def _run(self, X, Y, h0, c0, mask, lengths, want_state_grads, return_state, return_flow):
        """Validate everything, then forward + BPTT into self._grads.

        Returns (loss, state gradients or None, final state or None, flow or None)."""
        m = self.model
        X, ids = m.engine_inputs(X)
        batch, steps = X.shape[:2]
        Y = self._targets(Y, batch, steps)
        h0, c0 = m.check_state(h0, c0, batch)
        weight, lengths = self._extras(batch, steps, mask, lengths)
        if self.memory_limit is not None and \
                self._bounded(batch, steps, X.ndim == 2).plan.units > 1:
            if return_flow:
                raise ValueError("return_flow: the gradient flow is not recorded under a "
                                 "memory_limit")
            loss, state_grads, final = self._run_bounded(X, Y, h0, c0, weight, lengths,
                                                         return_state)
            return loss, state_grads if want_state_grads else None, final, None
        if m.bidirectional:
            loss, dx, state_grads, final, flow = self._run_bidirectional(
                X, Y, h0, c0, weight, lengths, want_state_grads, ids is not None, return_flow)
        else:
            loss, dx, state_grads, final, flow = self._run_engine(
                X, Y, h0, c0, weight, lengths, want_state_grads, return_state, return_flow,
                ids is not None)
        if ids is not None:     # the embedding's gradient: dL/dx summed by id
            self._last_sq_norm += embedding.learn_table(m, ids, dx, self._grads)
        return loss, state_grads, final, flow

    def _run_engine(self, X, Y, h0, c0, weight, lengths, want_state_grads, return_state,
                    return_flow, want_dx):
        """One engine call of the whole stack: (loss, dL/dX or None, state gradients or
        None, final state, flow or None)."""
        m = self.model
        batch, steps = X.shape[:2]
        dh0, dc0 = m.new_state(batch) if want_state_grads else (None, None)
        h_final, c_final = m.new_state(batch) if return_state else (None, None)
        flow = np.empty((m.num_layers, steps)) if return_flow else None
        engine = self._engine_for(batch, steps, ids=X.ndim == 2)
        self._last_engine = engine
        self._next_dropout(engine)
        dx = np.empty_like(X) if want_dx else None
        loss = engine.loss_and_grad(
            X, Y, m.engine_params, self._grads[:m.engine_size], h0, dh0, h_final, c0, dc0,
            c_final, weight=weight, lengths=lengths, flow=flow, dx=dx)
        self._last_sq_norm = engine.grad_sq_norm
        self._last_terms = engine.loss_terms
        state_grads = None
        if want_state_grads:
            state_grads = {"h0": dh0} if dc0 is None else {"h0": dh0, "c0": dc0}
        return loss, dx, state_grads, h_final if c_final is None else (h_final, c_final), flow

    def _bounded(self, batch, steps, ids):
        """The memory-bounded runner of this shape (ids: of token ids; bounded.py), made on
        first use: a plan of
        one unit runs the unbounded step (it fits), which allocates nothing of the runner's."""
        key = ("bounded", batch, steps, ids)
        runner = self._engines.get(key)
        if runner is None:
            if len(self._engines) >= 8:
                self._engines.clear()
            runner = self._engines[key] = bounded.BoundedBPTT(
                self.model, batch, steps, self.memory_limit, self.loss, self.many_to_one, ids)
        self._last_bounded = runner
        return runner

    def _run_bounded(self, X, Y, h0, c0, weight, lengths, return_state):
        """A step within memory_limit (bounded.py): (loss, state gradients, final state)."""
        m = self.model
        batch, steps = X.shape[:2]
        runner = self._bounded(batch, steps, X.ndim == 2)
        per_output = m.output_size if self.loss == "mse" else 1
        if self.many_to_one:
            rows = np.full(batch, steps - 1) if lengths is None else lengths - 1
            terms = batch * per_output
        else:
            rows = weight
            terms = (batch * steps if weight is None else float(weight.sum())) * per_output
        key = self._next_dropout(runner.train)
        loss, (dh0, dc0), final = runner.run(X, Y, rows, terms, h0, c0,
                                             self._grads[:m.engine_size], return_state,
                                             (key, self.dropout_row0, 0))
        self._last_sq_norm = squared_norm_of(self._grads)
        self._last_terms = terms
        state_grads = {"h0": dh0.copy()} if dc0 is None else {"h0": dh0.copy(),
                                                               "c0": dc0.copy()}
        if final is not None:
            final = final[0] if final[1] is None else final
        return loss, state_grads, final

    def _run_bidirectional(self, X, Y, h0, c0, weight, lengths, want_state_grads, want_dx,
                           return_flow=False):
        """A bidirectional model's step (bidirectional.py): the layers' engine calls, the
        head and the loss. (loss, dL/dX or None, state gradients or None, final state, flow
        (2L, T) or None)."""
        m = self.model
        batch, steps = X.shape[:2]
        key = ("bidirectional", batch, steps, X.ndim == 2)
        runner = self._engines.get(key)
        if runner is None:
            if len(self._engines) >= 8:
                self._engines.clear()
            runner = self._engines[key] = Bidirectional(m, batch, steps, True, X.ndim == 2)
        key = dropout_key(self.seed, self.dropout_calls)
        self.dropout_calls += 1
        top, h_final, c_final = runner.forward(X, lengths, h0, c0, (key, self.dropout_row0),
                                               top_outputs=not self.many_to_one)
        H = m.hidden_size
        if self.many_to_one:        # [the top forward state at the end, the reverse one]
            final = np.concatenate([h_final[-2], h_final[-1]], axis=1)
            loss, terms, d_final, head_sq = head_and_loss(m, final, Y, self.loss, None,
                                                          self._grads)
            d_outputs = None
        else:
            target = Y.reshape(batch * steps, *Y.shape[2:])
            loss, terms, d_top, head_sq = head_and_loss(
                m, top.reshape(-1, 2 * H), target, self.loss,
                None if weight is None else weight.reshape(-1), self._grads)
            d_outputs, d_final = d_top.reshape(batch, steps, 2 * H).astype(m.dtype), None
        flow = np.empty((2 * m.num_layers, steps)) if return_flow else None
        sq_norm, dh0, dc0, dx = runner.backward(
            self._grads, d_outputs, None if d_final is None else d_final.astype(m.dtype),
            want_state_grads, want_dx, flow)
        self._last_sq_norm = sq_norm + head_sq
        self._last_terms = terms
        state_grads = None
        if want_state_grads:
            state_grads = {"h0": dh0} if dc0 is None else {"h0": dh0, "c0": dc0}
        return (loss, dx, state_grads, h_final if c_final is None else (h_final, c_final),
                flow)

    def _loss_and_grad(self, X, Y, h0, c0, mask, lengths, return_state, return_flow):
        with self.model.lock:
            loss, state_grads, final, flow = self._run(X, Y, h0, c0, mask, lengths, True,
                                                       return_state, return_flow)
        grads = self._grads_dict()
        grads.update(state_grads)
        result = (loss, grads)
        if return_state:
            result += (final,)
        if return_flow:
            result += (flow,)
        return result

    def _step(self, X, Y, h0, c0, mask, lengths, return_state):
        with self.model.lock:
            loss, _, final, _ = self._run(X, Y, h0, c0, mask, lengths, False, return_state,
                                          False)
            self._apply_update(loss, self._last_sq_norm, self._last_terms)
        return (loss, final) if return_state else loss


_LOSS_AND_GRAD_DOC = """Loss and gradients without an update.

        Returns (loss, grads), then the final state if ``return_state`` and the gradient flow
        if ``return_flow``. grads maps every state_dict key to a fresh array, plus ``"h0"``
        (num_layers, B, H), the gradient with respect to the initial state (taken at the zero
        state when h0 is None), and ``"c0"`` for lstm. The final state is h
        (num_layers, B, H), or (h, c) for lstm. The flow is a (num_layers, T) float64 array:
        the mean over the batch of ||dL/dh_t|| for every layer and step, the
        vanishing/exploding-gradient picture; a bidirectional model's is (2 * num_layers, T),
        a row a layer and direction in torch's order of the states (h0's), the reverse
        direction's column t for its state at step t (see bidirectional_flow.py).
        """

_STEP_DOC = """Forward, BPTT, gradient clipping (if clip_norm) and one optimiser update.

        Returns the loss before the update (and the final state with ``return_state=True``).
        If the loss or a gradient is not finite, the weights and the optimiser state stay as
        they were and FloatingPointError is raised (with ``on_nonfinite="skip"``: a
        RuntimeWarning, and ``skipped_updates`` counts it).
        """


class ManyToMany(_FullBPTT):
    """An output and a loss at every step.

    X (B, T, I), or token ids (B, T) in [0, I): the one-hot input, never made (the first
    layer's projection is a gather, its gradient a scatter-add); Y (B, T, O) floats for
    ``loss="mse"``, (B, T) class ids for ``loss="cross_entropy"``. The loss is the mean over
    all B*T*O elements (mse) or all B*T targets (cross_entropy); every step injects its error
    into the backward pass.

    ``mask`` (B, T), optional, of 0/1 or non-negative weights: a step with weight 0 adds no
    loss, and the mean runs over the unmasked steps only (for mse, sum of w_bt * squared
    error over all (b, t, o), divided by O * sum w; for cross_entropy, divided by sum w).
    A mask of all zeros gives a zero loss and zero gradients.

    ``lengths`` (B,), bidirectional models only: sequence b's reverse direction starts at its
    own last step lengths[b] - 1, and its steps from lengths[b] on add no loss (as a mask).
    """

    def _extras(self, batch, steps, mask, lengths):
        if lengths is not None and not self.model.bidirectional:
            raise ValueError("lengths is for ManyToOne and bidirectional models; use mask "
                             "(B, T) with ManyToMany")
        weight = None if mask is None else check_mask(mask, batch, steps, self.model.dtype)
        lengths = check_lengths(lengths, batch, steps)
        if lengths is not None:     # the steps after a sequence's length add no loss
            valid = (np.arange(steps) < lengths[:, None]).astype(self.model.dtype)
            weight = valid if weight is None else weight * valid
        return weight, lengths

    def loss_and_grad(self, X, Y, h0=None, c0=None, mask=None, return_state=False,
                      return_flow=False, lengths=None):
        return self._loss_and_grad(X, Y, h0, c0, mask, lengths, return_state, return_flow)

    def step(self, X, Y, h0=None, c0=None, mask=None, return_state=False, lengths=None):
        return self._step(X, Y, h0, c0, mask, lengths, return_state)

    loss_and_grad.__doc__ = _LOSS_AND_GRAD_DOC
    step.__doc__ = _STEP_DOC


class ManyToOne(_FullBPTT):
    """One output per sequence, from its last step's state.

    X (B, T, I) or token ids (B, T); y (B, O) floats for ``loss="mse"``, (B,) class ids for
    ``loss="cross_entropy"``; the mean is over B*O elements or B targets.

    ``lengths`` (B,), optional, integers in [1, T]: the output of sequence b is read at step
    lengths[b] - 1, so padding after it affects neither the loss nor the gradients (the
    final state returned with ``return_state`` is still the one after all T steps).
    """
    many_to_one = True

    def _extras(self, batch, steps, mask, lengths):
        if mask is not None:
            raise ValueError("mask is for ManyToMany and Truncated; use lengths (B,) with "
                             "ManyToOne")
        return None, check_lengths(lengths, batch, steps)

    def loss_and_grad(self, X, y, h0=None, c0=None, lengths=None, return_state=False,
                      return_flow=False):
        return self._loss_and_grad(X, y, h0, c0, None, lengths, return_state, return_flow)

    def step(self, X, y, h0=None, c0=None, lengths=None, return_state=False):
        return self._step(X, y, h0, c0, None, lengths, return_state)

    loss_and_grad.__doc__ = _LOSS_AND_GRAD_DOC
    step.__doc__ = _STEP_DOC

    def predict(self, X, h0=None, c0=None, lengths=None):
        """Each sequence's output at its last (valid) step, (B, O); a bidirectional model's
        from [the forward state there, the reverse state after running down to step 0]."""
        m = self.model
        if m.bidirectional:
            _, final = m.predict(X, h0, c0, return_state=True, lengths=lengths)
            h = final[0] if m.cell == "lstm" else final
            return m.head_of(np.concatenate([h[-2], h[-1]], axis=1))
        out = self.model.predict(X, h0, c0)
        batch, steps = out.shape[:2]
        lengths = check_lengths(lengths, batch, steps)
        if lengths is None:
            return out[:, -1, :]
        return out[np.arange(batch), lengths - 1, :]


def check_mask(mask, batch, steps, dtype):
    """mask (B, T): finite, non-negative weights, as a C-contiguous array of dtype."""
    mask = _checks.float_array(mask, "mask", dtype, (batch, steps))
    if (mask < 0).any():
        raise ValueError("mask must hold non-negative weights (0 masks a step out)")
    return mask


check_lengths = _checks.lengths
