"""Callbacks of ``fit``: code that runs at the start and end of training, of each epoch and
after each step, in Keras' spirit.

A callback sees the trainer (``self.trainer``) and the fit's ``params`` ({"epochs",
"steps", "batch_size", "seed", "logs": the names each epoch's logs hold, "schedule"}) from
``set_fit``, before training starts; it stops training by setting ``self.stop_training``
(after the current epoch, or after the current step when set in ``on_batch_end``, which
ends the epoch there). An epoch's logs hold "loss" (the mean of its steps' losses, weighted by
their batch sizes), "val_loss" and "val_<metric>" with validation data, and "lr" (the
learning rate of its last step). Epochs are counted from 0.
"""
import csv
import io
import math
import os

import numpy as np

from . import archive
from .schedules import resolve_mode

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LambdaCallback", "restore_checkpoint"]

FIT_ENTRY, OPTIM_PREFIX = "__fit__", "optim:"


class Callback:
    """Base class: override any of the ``on_*`` methods."""

    def __init__(self):
        self.stop_training = False
        self.trainer = None
        self.params = {}

    def set_fit(self, trainer, params):
        """Called by fit before ``on_train_begin``: a ValueError here (a monitor that the
        logs will not hold) stops fit before any update."""
        self.trainer, self.params = trainer, params
        self.stop_training = False

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        """After each step: logs {"loss", "size" (sequences, or stream steps), "lr"}."""


class History(Callback):
    """What ``fit`` returns: ``history`` {name: [one value per epoch]}, ``epoch`` (the epochs'
    numbers), ``params``, ``interrupted`` (Ctrl-C ended the fit) and ``stopped_early`` (a
    callback stopped it)."""

    def __init__(self):
        super().__init__()
        self.history, self.epoch = {}, []
        self.interrupted = self.stopped_early = False

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self):
        return f"<History of {len(self.epoch)} epochs: {', '.join(self.history)}>"


def _check_monitor(owner, monitor, params):
    names = params.get("logs", ())
    if monitor not in names:
        hint = (" (val_ names need validation data: validation= or validation_split=)"
                if monitor.startswith("val_") and "val_loss" not in names else "")
        raise ValueError(f"{owner}: unknown monitor {monitor!r}; this fit logs "
                         f"{', '.join(names)}{hint}")


class _Monitoring(Callback):
    """A callback that watches one logged value for improvements."""

    def __init__(self, monitor, mode, min_delta=0.0):
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a logged name such as 'val_loss', got "
                            f"{type(monitor).__name__}")
        if not (min_delta >= 0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.mode = monitor, resolve_mode(mode, monitor)
        self.min_delta = float(min_delta)
        self.best = self._worst()

    def _worst(self):
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, value):
        """Whether value beats the best so far by more than min_delta (NaN never does)."""
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitoring):
    """Stop when ``monitor`` has not improved (by more than ``min_delta``) for ``patience``
    epochs in a row. ``mode`` "min", "max" or "auto" (max for an accuracy). ``restore_best``:
    at the end of training the weights of the best epoch come back (the optimiser's state
    stays as it is). After a fit: ``stopped_epoch`` (None if it ran to the end),
    ``best``, ``best_epoch``."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best=False):
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        self.patience, self.restore_best = patience, bool(restore_best)
        self.wait, self.stopped_epoch, self.best_epoch = 0, None, None
        self.best_weights = None

    def set_fit(self, trainer, params):
        _check_monitor("EarlyStopping", self.monitor, params)
        super().set_fit(trainer, params)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, None, None
        self.best, self.best_weights = self._worst(), None

    def on_epoch_end(self, epoch, logs=None):
        value = float(logs[self.monitor])
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_weights = self.trainer.model.params.copy()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best and self.best_weights is not None:
            self.trainer.model.params[...] = self.best_weights


class ModelCheckpoint(_Monitoring):
    """Save the model at each epoch's end, atomically (the file is either the old one or the
    complete new one): with the model's or Seq2Seq's ``save``, so ``cbptt.load`` reads it.
    ``path`` may hold format fields of the epoch (counted from 1, as Keras) and the logs:
    "model-{epoch:02d}-{val_loss:.3f}.npz". ``save_best_only``: only when ``monitor`` improved.

    ``training_state=True`` adds what resuming needs to the same file: the optimiser's state,
    the schedule's state, the dropout masks' seed and call count and the number of epochs
    done (``restore_checkpoint`` puts them back; a fit then continues with ``initial_epoch=``
    what it returns and follows the uninterrupted one bit for bit)."""

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto",
                 training_state=False):
        super().__init__(monitor, mode)
        self.path = os.fspath(path)
        self.save_best_only, self.training_state = bool(save_best_only), bool(training_state)
        self.last_path = None

    def set_fit(self, trainer, params):
        if self.save_best_only:
            _check_monitor("ModelCheckpoint", self.monitor, params)
        super().set_fit(trainer, params)

    def on_train_begin(self, logs=None):
        self.best = self._worst()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = float(logs[self.monitor])
            if not self.improved(value):
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        if not path.endswith(".npz"):
            path += ".npz"
        if self.training_state:
            save_training_state(path, self.trainer, self.params.get("schedule"), epoch + 1)
        else:
            saver = self.trainer if hasattr(self.trainer, "save") else self.trainer.model
            saver.save(path)
        self.last_path = path


def _model_entries(trainer):
    if hasattr(trainer, "archive_entries"):       # Seq2Seq: both halves
        return trainer.archive_entries()
    return archive.model_entries(trainer.model)


def save_training_state(path, trainer, schedule, epochs_done):
    """Write the model, the optimiser's state, the schedule's state, the dropout masks' seed
    and call count and ``epochs_done`` to ``path`` (an ``.npz``), atomically."""
    entries = _model_entries(trainer)
    entries.update({OPTIM_PREFIX + k: v for k, v in trainer.optimizer.state_dict().items()})
    entries[FIT_ENTRY] = archive.json_entry({
        "epochs_done": int(epochs_done),
        "schedule": None if schedule is None else schedule.state_dict(),
        "dropout": [trainer.seed, trainer.dropout_calls]})
    archive.write_archive(path, entries)


def restore_checkpoint(path, trainer, schedule=None):
    """Put a ``ModelCheckpoint(training_state=True)`` file back into ``trainer`` (the same
    model shapes): its weights, its optimiser's state, the dropout masks' seed and call count
    (``trainer.seed``, ``trainer.dropout_calls``) and, when given, ``schedule``'s state.
    Returns the number of epochs it had done: pass it to ``fit`` as ``initial_epoch``. Checks
    everything before changing anything; ValueError naming the file otherwise."""
    path = os.fspath(path)
    try:
        entries = archive.read_archive(path)
        config, state = archive.model_config_and_state(entries)
        fit = archive.read_json_entry(entries, FIT_ENTRY)
    except FileNotFoundError:
        raise
    except archive.READ_ERRORS as exc:
        raise ValueError(f"{path}: not a checkpoint of fit's training state ({exc})") from None
    mine = trainer.model.config()
    if config.get("kind") == "seq2seq":
        config = {"encoder": config.get("encoder"), "decoder": config.get("decoder")}
    if config != mine:
        raise ValueError(f"{path}: its model {config} is not this trainer's {mine}")
    params = trainer.model.params
    layout = trainer.model._layout
    for name, shape, _ in layout:
        if name not in state or state[name].shape != tuple(shape):
            raise ValueError(f"{path}: parameter {name!r} missing or of another shape")
    optim = archive.entries_with_prefix(entries, OPTIM_PREFIX)
    saved_schedule = fit.get("schedule")
    if schedule is not None and saved_schedule is None:
        raise ValueError(f"{path}: it holds no schedule state (it was saved by a fit without "
                         f"a schedule)")
    backup = (params.copy(), trainer.optimizer.state_dict(),
              None if schedule is None else schedule.state_dict())
    try:
        for name, shape, offset in layout:
            params[offset:offset + int(np.prod(shape))] = state[name].reshape(-1)
        trainer.optimizer.load_state_dict(optim, params)
        if schedule is not None:
            schedule.load_state_dict(saved_schedule)
        trainer.seed, trainer.dropout_calls = (int(n) for n in fit.get("dropout", (0, 0)))
    except (ValueError, KeyError, TypeError) as exc:
        params[...] = backup[0]
        trainer.optimizer.load_state_dict(backup[1], params)
        if schedule is not None:
            schedule.load_state_dict(backup[2])
        raise ValueError(f"{path}: {exc}") from None
    return int(fit["epochs_done"])


class CSVLogger(Callback):
    """Append each epoch's logs to a CSV file: a header ("epoch", then the fit's log names)
    and a row an epoch, flushed at once. ``append``: keep an existing file's rows (its header
    is not written again)."""

    def __init__(self, path, separator=",", append=False):
        super().__init__()
        self.path, self.separator, self.append = os.fspath(path), separator, bool(append)
        self._columns = None

    def on_train_begin(self, logs=None):
        self._columns = ["epoch"] + list(self.params.get("logs", ()))
        keep = self.append and os.path.isfile(self.path) and os.path.getsize(self.path) > 0
        if not keep:
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                f.write(self._row(self._columns))

    def _row(self, values):
        text = io.StringIO()
        csv.writer(text, delimiter=self.separator, lineterminator="\n").writerow(values)
        return text.getvalue()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = [epoch] + [_cell(logs.get(name)) for name in self._columns[1:]]
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            f.write(self._row(values))


def _cell(value):
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, (float, np.floating)) else value


class LambdaCallback(Callback):
    """A callback of plain functions: ``on_train_begin(logs)``, ``on_train_end(logs)``,
    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_batch_end(batch,
    logs)``; each optional."""

    def __init__(self, on_train_begin=None, on_train_end=None, on_epoch_begin=None,
                 on_epoch_end=None, on_batch_end=None):
        super().__init__()
        for name, function in (("on_train_begin", on_train_begin),
                               ("on_train_end", on_train_end),
                               ("on_epoch_begin", on_epoch_begin),
                               ("on_epoch_end", on_epoch_end), ("on_batch_end", on_batch_end)):
            if function is not None:
                if not callable(function):
                    raise TypeError(f"{name} must be callable, got {type(function).__name__}")
                setattr(self, name, function)
