"""``fit``: the training loop over epochs every trainer has (``FitMixin``), with batching,
shuffling, validation, metrics, callbacks, learning-rate schedules, a progress display and
Ctrl-C. The data it reads and how it is cut into batches: ``fit_data.py``; validation:
``evaluation.py``; callbacks and schedules: ``callbacks.py``, ``schedules.py``.

An epoch is one pass of ``trainer.step`` over consecutive batches (``shuffle=False``: exactly
the calls a loop over ``step`` makes, the last partial batch included), or over a permutation
drawn from (seed, epoch) (so a fit resumed at ``initial_epoch`` sees the same batches).
"""
import signal
import threading

import numpy as np

from . import _checks
from .callbacks import Callback, History
from .evaluation import Evaluator, check_metrics
from .fit_data import KIND_NAMES, BatchReader, check_data, kind_of
from .fit_progress import EpochProgress
from .schedules import Schedule

__all__ = ["FitMixin", "fit"]


class FitMixin:
    """Gives a trainer ``fit``."""

    def fit(self, *data, epochs=1, batch_size=None, shuffle=None, seed=None,
            validation=None, validation_split=0.0, validation_batch_size=None, metrics=None,
            callbacks=(), schedule=None, progress=None, initial_epoch=0, mask=None,
            lengths=None, src_lengths=None, tgt_lengths=None):
        """Train for ``epochs`` epochs; returns a ``cbptt.callbacks.History``.

        data: the arrays ``step`` takes, whole data sets: ``X, Y`` (ManyToMany: X (N, T, I)
        or ids (N, T), Y (N, T, O) or class ids (N, T); ManyToOne: y (N, O) or (N,)),
        ``X, Y_in, Y_out`` (Seq2Seq), or streams ``X, Y`` (Truncated: (B, L, I) and
        (B, L, O), or one stream (L, I) and (L, O)). Arrays or ``np.memmap``: never copied
        whole. ``mask``/``lengths`` (ManyToMany, ManyToOne) and ``src_lengths``/
        ``tgt_lengths`` (Seq2Seq) are per-sequence arrays batched with X; Truncated takes a
        ``mask`` (B, L).

        batch_size: sequences a step (default 32); for Truncated, stream steps a step, a
        multiple of k1 (default k1), and each epoch starts the streams again from a zero
        state. shuffle (default True; Truncated reads its streams in order) draws each
        epoch's order from ``seed`` and the epoch's number. validation: held-out data as
        ``(X, Y)`` (or the trainer's arrays, then optionally a dict of its keyword arrays:
        ``(X, Y, {"mask": M})``), or ``validation_split``: that fraction at the end of the
        data (of the streams' steps for Truncated). After each epoch the logs hold "loss"
        (the mean of the steps' losses weighted by their batch sizes), "val_loss" (the
        trainer's loss on the validation data, without dropout as ``predict``; Truncated's
        streams from a zero state),
        "val_<metric>" (``metrics``: "accuracy" for cross_entropy, "mae" and "rmse" for mse:
        by default the loss's) and "lr".

        callbacks: ``cbptt.callbacks`` objects (EarlyStopping, ModelCheckpoint, CSVLogger,
        LambdaCallback or your own). schedule: a ``cbptt.schedules`` schedule that sets the
        optimiser's ``lr`` each epoch (or each step). progress: None shows a bar and a line
        an epoch when interactive, True always, False never. initial_epoch: the epoch to
        start from (a resumed fit: ``callbacks.restore_checkpoint``).

        Every argument is checked first: bad input raises ValueError or TypeError before any
        update, the weights untouched. Ctrl-C ends the current step, runs the callbacks'
        ``on_train_end`` and returns the history (``history.interrupted``); a second Ctrl-C
        aborts at once.
        """
        named = {"mask": mask, "lengths": lengths, "src_lengths": src_lengths,
                 "tgt_lengths": tgt_lengths}
        return fit(self, data, named, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                   seed=seed, validation=validation, validation_split=validation_split,
                   validation_batch_size=validation_batch_size, metrics=metrics,
                   callbacks=callbacks, schedule=schedule, progress=progress,
                   initial_epoch=initial_epoch)


def fit(trainer, data, named, *, epochs=1, batch_size=None, shuffle=None, seed=None,
        validation=None, validation_split=0.0, validation_batch_size=None, metrics=None,
        callbacks=(), schedule=None, progress=None, initial_epoch=0):
    """``trainer.fit(*data, **named, ...)``: see ``FitMixin.fit``."""
    run = _FitRun(trainer, data, named, epochs, batch_size, shuffle, seed, validation,
                  validation_split, validation_batch_size, metrics, callbacks, schedule,
                  progress, initial_epoch)
    return run.run()


class _FitRun:
    """One fit: its arguments checked (in __init__, before any update), then ``run``."""

    def __init__(self, trainer, data, named, epochs, batch_size, shuffle, seed, validation,
                 validation_split, validation_batch_size, metrics, callbacks, schedule,
                 progress, initial_epoch):
        self.trainer = trainer
        self.kind = kind = kind_of(trainer)
        streams = kind == "streams"
        self.epochs = _checks.check_size(epochs, "epochs")
        self.initial_epoch = _checks.check_size(initial_epoch, "initial_epoch", 0)
        if self.initial_epoch > self.epochs:
            raise ValueError(f"initial_epoch ({initial_epoch}) must be at most epochs "
                             f"({epochs})")
        if batch_size is None:
            batch_size = trainer.k1 if streams else 32
        self.batch_size = _checks.check_size(batch_size, "batch_size")
        if streams and self.batch_size % trainer.k1:
            raise ValueError(f"batch_size: a Truncated trainer's batch is a block of stream "
                             f"steps, a multiple of k1={trainer.k1}; got {batch_size}")
        if shuffle is None:
            shuffle = not streams
        if streams and shuffle:
            raise ValueError("shuffle: a Truncated trainer reads its streams in order (give "
                             "shuffle=False or leave it out)")
        self.shuffle = bool(shuffle)
        self.seed = _seed(seed)
        self.metrics = check_metrics(metrics, trainer.loss)
        self.train = check_data(trainer, kind, list(data), named)
        self.val = self._validation(validation, validation_split)
        self.callbacks = _callbacks(callbacks)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a cbptt.schedules schedule or None, got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.logs = ["loss"]
        if self.val is not None:
            self.logs += ["val_loss"] + ["val_" + name for name in self.metrics]
        self.logs.append("lr")
        for monitor in () if schedule is None else schedule.monitors():
            if monitor not in self.logs:
                raise ValueError(f"schedule: unknown monitor {monitor!r}; this fit logs "
                                 f"{', '.join(self.logs)}")
        self.reader = BatchReader(self.train, self.batch_size)
        self.evaluator = None
        if self.val is not None:
            if validation_batch_size is None:     # streams: longer blocks, fewer calls
                validation_batch_size = max(self.batch_size, 512) if streams else \
                    self.batch_size
            size = _checks.check_size(validation_batch_size, "validation_batch_size")
            self.evaluator = Evaluator(trainer, kind, self.val, size, self.metrics)
        self.progress = EpochProgress(progress, self.epochs, len(self.reader))
        self.history = History()
        params = {"epochs": self.epochs, "steps": len(self.reader),
                  "batch_size": self.batch_size, "seed": self.seed, "logs": list(self.logs),
                  "schedule": schedule}
        self.history.params = params
        for callback in [self.history] + self.callbacks:
            callback.set_fit(trainer, params)
        if schedule is not None:
            schedule.start(trainer.optimizer)

    def _validation(self, validation, split):
        if validation is not None and split:
            raise ValueError("give validation or validation_split, not both")
        if validation is not None:
            arrays, named = _validation_parts(validation, KIND_NAMES[self.kind])
            return check_data(self.trainer, self.kind, arrays, named, prefix="validation: ")
        if isinstance(split, bool) or not isinstance(split, (int, float)) or \
                not 0 <= split < 1:
            raise ValueError(f"validation_split must be a fraction in [0, 1), got {split!r}")
        if not split:
            return None
        self.train, val = self.train.split(split)
        return val

    # -- the loop -------------------------------------------------------------------------
    def run(self):
        everyone = [self.history] + self.callbacks
        logs = {}
        try:
            with _CtrlC(self.progress.say) as ctrl_c:
                for callback in everyone:
                    callback.on_train_begin({})
                for epoch in range(self.initial_epoch, self.epochs):
                    logs = self._epoch(epoch, everyone, ctrl_c) or logs    # the last whole
                    if ctrl_c.requested:        # in a step, or in the epoch's validation
                        self.history.interrupted = True
                        break
                    if any(c.stop_training for c in everyone):
                        self.history.stopped_early = True
                        break
                for callback in everyone:
                    callback.on_train_end(logs or {})
        finally:
            self.progress.close()
        return self.history

    def _set_lr(self, position):
        self.trainer.optimizer.lr = self.schedule.lr_at(position)

    def _epoch(self, epoch, everyone, ctrl_c):
        """Train one epoch; its logs (None when Ctrl-C ended it in a step)."""
        trainer, schedule = self.trainer, self.schedule
        per_step = schedule is not None and schedule.every == "step"
        if schedule is not None and not per_step:
            self._set_lr(epoch)
        for callback in everyone:
            callback.on_epoch_begin(epoch, {})
        if hasattr(trainer, "reset_state"):     # Truncated: the streams start again
            trainer.reset_state()
        order = None
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.train.count)
        self.progress.epoch_begin(epoch)
        steps, loss_sum, size_sum = len(self.reader), 0.0, 0
        for index, (arrays, named, size) in enumerate(self.reader.batches(order)):
            if per_step:
                self._set_lr(epoch + index / steps)
            loss = float(trainer.step(*arrays, **named))
            loss_sum += loss * size
            size_sum += size
            self.progress.step(loss)
            batch_logs = {"loss": loss, "size": size, "lr": trainer.optimizer.lr}
            for callback in everyone:
                callback.on_batch_end(index, batch_logs)
            if ctrl_c.requested or any(c.stop_training for c in everyone):
                break
        if ctrl_c.requested:
            return None
        logs = {"loss": loss_sum / size_sum}
        if self.evaluator is not None:
            logs.update(self.evaluator())
        logs["lr"] = float(trainer.optimizer.lr)
        if schedule is not None:        # before the callbacks: a checkpoint keeps its state
            schedule.epoch_end(epoch, logs)
        for callback in everyone:
            callback.on_epoch_end(epoch, logs)
        self.progress.epoch_end(logs)
        return logs


def _seed(seed):
    """The fit's seed: a non-negative integer, or fresh entropy for None."""
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def _validation_parts(validation, names):
    """(arrays, named) of ``validation=(X, Y[, {keyword arrays}])``."""
    expected = f"({', '.join(names)}) or ({', '.join(names)}, {{keyword arrays}})"
    if not isinstance(validation, (tuple, list)):
        raise TypeError(f"validation must be a tuple {expected}, got "
                        f"{type(validation).__name__}")
    arrays, named = list(validation), {}
    if arrays and isinstance(arrays[-1], dict):
        named = arrays.pop()
    if len(arrays) != len(names):
        raise ValueError(f"validation must be {expected}: got {len(arrays)} arrays")
    return arrays, named


def _callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be cbptt.callbacks.Callback objects, got "
                            f"{type(callback).__name__}")
    return callbacks


class _CtrlC:
    """While active (in the main thread): the first Ctrl-C asks fit to stop after the current
    step; a second one raises KeyboardInterrupt at once."""

    def __init__(self, say):
        self.requested = False
        self.say = say
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("interrupted: fit stops after this step (Ctrl-C again to abort)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
