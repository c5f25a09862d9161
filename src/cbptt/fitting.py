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
from .evaluation import Evaluator, Validation, check_metrics
from .fit_data import KIND_NAMES, BatchReader, check_data, kind_of, unwrapped
from .fit_progress import EpochProgress
from .fit_ranks import Ranks
from .schedules import Schedule

__all__ = ["FitMixin", "fit"]


class FitMixin:
    """Gives a trainer (and a DataParallel) ``fit``."""

    def fit(self, *data, epochs=1, batch_size=None, shuffle=None, seed=None,
            validation=None, validation_split=0.0, validation_batch_size=None, metrics=None,
            callbacks=(), schedule=None, progress=None, initial_epoch=0, initial_batch=0,
            initial_sums=None, max_steps=None, mask=None, lengths=None, src_lengths=None,
            tgt_lengths=None):
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
        data (of the streams' steps for Truncated), or a ``cbptt.evaluation.Validation``
        (a function of one's own and the names of the values it returns). After each epoch
        the logs hold "loss" (the mean of the steps' losses weighted by their batch sizes),
        "val_loss" (the trainer's loss on the validation data, without dropout as
        ``predict``; Truncated's streams from a zero state), "val_<metric>" (``metrics``:
        "accuracy" for cross_entropy, "mae" and "rmse" for mse: by default the loss's) and
        "lr".

        callbacks: ``cbptt.callbacks`` objects (EarlyStopping, ModelCheckpoint, CSVLogger,
        LambdaCallback or your own). schedule: a ``cbptt.schedules`` schedule that sets the
        optimiser's ``lr`` each epoch (or each step). progress: None shows a bar and a line
        an epoch when interactive, True always, "bar" the bar alone, False nothing.

        Resuming: initial_epoch, the epoch to start from (``callbacks.restore_checkpoint``
        gives it); a fit resumed mid-epoch also takes ``initial_batch``, the steps of that
        epoch made already (its batches go on from there, in the same order, and the carried
        streams of a Truncated trainer are not reset), and ``initial_sums``, (the sum of those
        steps' losses weighted by their sizes, the sum of their sizes), so that the epoch's
        loss is the uninterrupted one's. While fit runs, ``params["position"]`` (callbacks
        read it) holds these as {"epoch", "batch", "loss_sum", "size_sum"} and "step" (the
        steps made since epoch 0), updated after each step and, at an epoch's end, to the
        next epoch's start before ``on_epoch_end``: a checkpoint of them, the weights and the
        optimiser's, schedule's and callbacks' state taken then resumes bit for bit.
        max_steps: stop once "step" reaches it, leaving the epoch unfinished (no validation
        or ``on_epoch_end``; ``history.reached_max_steps``).

        A ``DataParallel`` trainer's fit is collective: every rank calls it with the same
        arguments and the whole data; each trains on its rows of every batch (or on its
        streams of a Truncated trainer's), so every rank makes the same steps and the run is
        the one-process run to rounding. Rank 0 draws the seed (seed=None), validates and
        shows the progress; every rank's callbacks get the same logs.

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
                   initial_epoch=initial_epoch, initial_batch=initial_batch,
                   initial_sums=initial_sums, max_steps=max_steps)


def fit(trainer, data, named, **options):
    """``trainer.fit(*data, **named, **options)``: see ``FitMixin.fit``."""
    return _FitRun(trainer, data, named, **options).run()


class _FitRun:
    """One fit: its arguments checked (in __init__, before any update), then ``run``."""

    def __init__(self, trainer, data, named, *, epochs=1, batch_size=None, shuffle=None,
                 seed=None, validation=None, validation_split=0.0, validation_batch_size=None,
                 metrics=None, callbacks=(), schedule=None, progress=None, initial_epoch=0,
                 initial_batch=0, initial_sums=None, max_steps=None):
        self.trainer = trainer                  # what steps: the trainer, or a DataParallel
        self.inner = inner = unwrapped(trainer)
        self.ranks = ranks = Ranks(trainer)
        self.kind = kind = kind_of(trainer)
        streams = kind == "streams"
        self.epochs = _checks.check_size(epochs, "epochs")
        if batch_size is None:
            batch_size = inner.k1 if streams else 32
        self.batch_size = _checks.check_size(batch_size, "batch_size")
        if streams and self.batch_size % inner.k1:
            raise ValueError(f"batch_size: a Truncated trainer's batch is a block of stream "
                             f"steps, a multiple of k1={inner.k1}; got {batch_size}")
        if shuffle is None:
            shuffle = not streams
        if streams and shuffle:
            raise ValueError("shuffle: a Truncated trainer reads its streams in order (give "
                             "shuffle=False or leave it out)")
        self.shuffle = bool(shuffle)
        self.seed = ranks.seed(_seed(seed))
        self.metrics = check_metrics(metrics, inner.loss)
        self.train = check_data(inner, kind, list(data), named)
        self.evaluator, val_logs = self._evaluator(validation, validation_split,
                                                   validation_batch_size)
        self.callbacks = _callbacks(callbacks)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a cbptt.schedules schedule or None, got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.logs = ["loss"] + val_logs + ["lr"]
        for monitor in () if schedule is None else schedule.monitors():
            if monitor not in self.logs:
                raise ValueError(f"schedule: unknown monitor {monitor!r}; this fit logs "
                                 f"{', '.join(self.logs)}")
        self.part = None
        if streams:
            count = self.train.arrays[0].shape[0]
            ranks.check_batches([count], "streams")
            self.train = self.train.streams(ranks.part(count))
        self.reader = BatchReader(self.train, self.batch_size)
        if ranks.size > 1 and not streams:
            ranks.check_batches(self.reader.batch_counts(), "sequences")
            self.part = ranks.part
        steps = len(self.reader)
        self.position = _position(initial_epoch, initial_batch, initial_sums, self.epochs,
                                  steps)
        self.max_steps = None if max_steps is None else _checks.check_size(max_steps,
                                                                           "max_steps")
        self.progress = EpochProgress(progress, self.epochs, steps)
        if not ranks.root:
            self.progress = EpochProgress(False, self.epochs, steps)
        self.history = History()
        params = {"epochs": self.epochs, "steps": steps, "batch_size": self.batch_size,
                  "seed": self.seed, "logs": list(self.logs), "schedule": schedule,
                  "position": self.position, "max_steps": self.max_steps}
        self.history.params = params
        for callback in [self.history] + self.callbacks:
            callback.set_fit(trainer, params)
        if schedule is not None:
            schedule.start(inner.optimizer)

    def _evaluator(self, validation, split, batch_size):
        """(what validates after each epoch or None, the names of the logs it gives)."""
        if isinstance(validation, Validation):
            if split:
                raise ValueError("give validation or validation_split, not both")
            return validation, list(validation.names)
        val = self._validation(validation, split)
        if val is None:
            return None, []
        if batch_size is None:     # streams: longer blocks, fewer calls
            batch_size = max(self.batch_size, 512) if self.kind == "streams" else \
                self.batch_size
        size = _checks.check_size(batch_size, "validation_batch_size")
        evaluator = Evaluator(self.inner, self.kind, val, size, self.metrics)
        return evaluator, ["val_loss"] + ["val_" + name for name in self.metrics]

    def _validation(self, validation, split):
        if validation is not None and split:
            raise ValueError("give validation or validation_split, not both")
        if validation is not None:
            arrays, named = _validation_parts(validation, KIND_NAMES[self.kind])
            return check_data(self.inner, self.kind, arrays, named, prefix="validation: ")
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
        history, position = self.history, self.position
        logs = {}
        say = self.progress.say if self.ranks.root else _quiet
        try:
            with _CtrlC(say) as ctrl_c:
                for callback in everyone:
                    callback.on_train_begin({})
                while position["epoch"] < self.epochs:
                    if self._at_max_steps():
                        break
                    logs = self._epoch(position["epoch"], everyone, ctrl_c) or logs
                    if history.interrupted or history.reached_max_steps:
                        break
                    interrupted, stopping = self.ranks.any(
                        ctrl_c.requested, any(c.stop_training for c in everyone))
                    if interrupted:         # in the epoch's validation or callbacks
                        history.interrupted = True
                        break
                    if stopping:
                        history.stopped_early = True
                        break
                for callback in everyone:
                    callback.on_train_end(logs or {})
        finally:
            self.progress.close()
        return history

    def _at_max_steps(self):
        if self.max_steps is not None and self.position["step"] >= self.max_steps:
            self.history.reached_max_steps = True
        return self.history.reached_max_steps

    def _set_lr(self, position):
        self.inner.optimizer.lr = self.schedule.lr_at(position)

    def _epoch(self, epoch, everyone, ctrl_c):
        """Train (the rest of) one epoch; its logs, or None when it ended in a step (Ctrl-C,
        max_steps, or a callback's stop_training in ``on_batch_end``, which skips the rest of
        the epoch's steps but not its end)."""
        trainer, schedule, position = self.trainer, self.schedule, self.position
        first = position["batch"]
        per_step = schedule is not None and schedule.every == "step"
        steps = len(self.reader)
        if schedule is not None:        # a resumed epoch: the rate of its last step
            self._set_lr(epoch + (first - 1) / steps if per_step and first else epoch)
        for callback in everyone:
            callback.on_epoch_begin(epoch, {})
        if first == 0 and hasattr(self.inner, "reset_state"):    # Truncated: streams again
            self.inner.reset_state()
        order = None
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.train.count)
        self.progress.epoch_begin(epoch, first)
        batches = self.reader.batches(order, first, self.part)
        for index, (arrays, named, size) in enumerate(batches, first):
            if per_step:
                self._set_lr(epoch + index / steps)
            loss = float(trainer.step(*arrays, **named))
            position["batch"] = index + 1
            position["loss_sum"] += loss * size
            position["size_sum"] += size
            position["step"] += 1
            self.progress.step(loss)
            batch_logs = {"loss": loss, "size": size, "lr": self.inner.optimizer.lr}
            for callback in everyone:
                callback.on_batch_end(index, batch_logs)
            interrupted, stopping = self.ranks.any(
                ctrl_c.requested, any(c.stop_training for c in everyone))
            if interrupted:
                self.history.interrupted = ctrl_c.requested = True
                return None
            if self._at_max_steps():
                return None
            if stopping:
                break
        self.progress.close()           # the bar, before validation and the epoch's lines
        logs = {"loss": position["loss_sum"] / position["size_sum"]}
        if self.evaluator is not None:
            logs.update(self.ranks.from_root(self.evaluator))
        logs["lr"] = float(self.inner.optimizer.lr)
        position.update(epoch=epoch + 1, batch=0, loss_sum=0.0, size_sum=0)
        if schedule is not None:        # before the callbacks: a checkpoint keeps its state
            schedule.epoch_end(epoch, logs)
        for callback in everyone:
            callback.on_epoch_end(epoch, logs)
        self.progress.epoch_end(logs)
        return logs


def _position(epoch, batch, sums, epochs, steps):
    """The checked start of a fit: {"epoch", "batch", "loss_sum", "size_sum", "step"}."""
    epoch = _checks.check_size(epoch, "initial_epoch", 0)
    if epoch > epochs:
        raise ValueError(f"initial_epoch ({epoch}) must be at most epochs ({epochs})")
    batch = _checks.check_size(batch, "initial_batch", 0)
    if batch > steps or (batch and epoch == epochs):
        raise ValueError(f"initial_batch must be in [0, {steps}] (the epoch's steps) and "
                         f"name a step of an epoch before epochs={epochs}; got {batch} in "
                         f"epoch {epoch}")
    loss_sum, size_sum = 0.0, 0
    if sums is not None:
        try:
            loss_sum, size_sum = (float(x) for x in sums)
        except (TypeError, ValueError):
            raise TypeError(f"initial_sums must be (sum of the losses times the sizes, sum "
                            f"of the sizes), two numbers; got {sums!r}") from None
        if not (np.isfinite(loss_sum) and size_sum >= 0) or (size_sum > 0) != (batch > 0):
            raise ValueError(f"initial_sums {sums!r} must be finite, with a sum of sizes > 0 "
                             f"exactly when initial_batch > 0 (got initial_batch={batch})")
    elif batch:
        raise ValueError("initial_sums: a fit resumed mid-epoch (initial_batch > 0) needs the "
                         "sums of its steps' losses (times their sizes) and of their sizes")
    return {"epoch": epoch, "batch": batch, "loss_sum": loss_sum, "size_sum": size_sum,
            "step": epoch * steps + batch}


def _quiet(*args, **kwargs):
    pass


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
        self.say("interrupted: stopping after this step (Ctrl-C again to abort)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
