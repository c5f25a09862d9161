"""Run directories and checkpoints.

A run directory holds:

- ``checkpoint.npz``: everything needed to continue training exactly where it stopped, in one
  file written atomically (a temporary file in the same folder, flushed and fsynced, then
  ``os.replace``): the model as ``RNN.save`` (or ``Seq2Seq.save``) writes it (so
  ``cbptt.load("RUN/checkpoint.npz")`` gives the model), the optimiser's state (step count,
  momentum buffer or Adam's moments), the carried stream state of a ``Truncated`` trainer, and
  a JSON entry with the run's configuration and progress (epoch, step, the NumPy RNG state, ...).
- ``config.json``: a readable copy of the configuration.
- ``metrics.csv``: training loss every few steps and validation metrics every epoch (and the
  learning rate, in a run with a schedule).
- ``flow.csv``: the gradient flow ||dL/dh_t|| at the end of every epoch (optional).

A checkpoint is either the old file or the new one, never a half-written one.
"""
import csv
import datetime
import io
import os

import numpy as np

from . import archive
from .archive import atomic_write_text
from .model import RNN
from .names import OPTIMIZERS
from .optim import SGD, Adam
from .seq2seq import Seq2Seq
from .seq2seq import from_archive as seq2seq_from_archive
from .truncated import Truncated

CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
METRICS = "metrics.csv"
FLOW = "flow.csv"
CHECKPOINT_VERSION = 1
# Entries a checkpoint adds to the model archive (see cbptt.archive).
RUN_ENTRY, OPTIM_PREFIX, STREAM_PREFIX = "__run__", "optim:", "stream:"


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be used (missing, damaged, mismatched)."""


# -- run directories --------------------------------------------------------------------------
def new_run_dir(root="runs", name=None):
    """A new, empty folder ``root/<date>-<time>[-name][-n]``, created."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, stamp + (f"-{name}" if name else ""))
    os.makedirs(root, exist_ok=True)
    for n in range(1, 1000):
        path = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise CheckpointError(f"cannot make a new run folder under {root}")


def has_checkpoint(run_dir):
    return os.path.isfile(os.path.join(run_dir, CHECKPOINT))


# -- optimiser state --------------------------------------------------------------------------
def make_optimizer(name, lr, momentum=0.0, weight_decay=0.0):
    """cbptt.SGD or cbptt.Adam (``names.OPTIMIZERS``) from plain values."""
    if name == "sgd":
        return SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return Adam(lr=lr, weight_decay=weight_decay)
    raise CheckpointError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def optimizer_arrays(optimizer):
    """The optimiser's state as arrays (``Optimizer.state_dict``)."""
    return optimizer.state_dict()


def restore_optimizer(optimizer, arrays, params):
    """Load ``optimizer_arrays`` output into an optimiser for ``params``."""
    try:
        optimizer.load_state_dict(dict(arrays), params)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


# -- truncated-BPTT stream state --------------------------------------------------------------
def stream_arrays(trainer):
    """A Truncated trainer's carried stream (``Truncated.stream_state``)."""
    return trainer.stream_state()


def restore_stream(trainer, arrays):
    """Put a saved stream back into a Truncated trainer (same model shape, k1, k2)."""
    try:
        trainer.load_stream_state(dict(arrays))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


# -- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(run_dir, model, optimizer, run, trainer=None, stream=None):
    """Write ``run_dir/checkpoint.npz`` atomically (model: an RNN or a Seq2Seq).

    run: a JSON-serialisable dict (configuration and progress). trainer: the stream state of
    a Truncated trainer is saved with it. stream: that stream state given directly instead
    (e.g. gathered from the ranks of a data-parallel run)."""
    arrays = (model.archive_entries() if isinstance(model, Seq2Seq)
              else archive.model_entries(model))
    arrays[RUN_ENTRY] = archive.json_entry(dict(run, checkpoint_version=CHECKPOINT_VERSION))
    arrays.update({OPTIM_PREFIX + k: v for k, v in optimizer_arrays(optimizer).items()})
    if stream is None and isinstance(trainer, Truncated):
        stream = stream_arrays(trainer)
    if stream is not None:
        arrays.update({STREAM_PREFIX + k: v for k, v in stream.items()})
    path = os.path.join(run_dir, CHECKPOINT)
    archive.write_archive(path, arrays)
    return path


class Checkpoint:
    """A loaded checkpoint: ``model`` (cbptt.RNN or cbptt.Seq2Seq), ``run`` (dict),
    ``optimizer`` and ``stream`` (dicts of arrays; stream empty unless the run is truncated)."""

    def __init__(self, model, run, optimizer, stream, path):
        self.model, self.run, self.optimizer, self.stream, self.path = (model, run, optimizer,
                                                                         stream, path)


def load_checkpoint(run_dir):
    """Read ``run_dir/checkpoint.npz`` (or a checkpoint file given directly)."""
    run_dir = os.fspath(run_dir)
    path = run_dir if os.path.isfile(run_dir) else os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(run_dir):
        raise CheckpointError(f"{run_dir}: no such run folder")
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir}: no {CHECKPOINT} here (not a cbptt run folder, or "
                              f"its training saved nothing yet)")
    try:
        entries = archive.read_archive(path)
    except archive.READ_ERRORS as exc:
        raise CheckpointError(f"{path}: damaged or not a cbptt checkpoint ({exc})") from None
    if archive.CONFIG_ENTRY not in entries or RUN_ENTRY not in entries:
        raise CheckpointError(f"{path}: not a cbptt training checkpoint (a model file? it "
                              f"has no {RUN_ENTRY} entry)")
    try:
        config, state = archive.model_config_and_state(entries)
        run = archive.read_json_entry(entries, RUN_ENTRY)
        if config.get("kind") == "seq2seq":
            model = seq2seq_from_archive(config, state)
        else:
            model = RNN(**config)
            model.load_state_dict(state)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the model it describes "
                              f"({exc})") from None
    optimizer = archive.entries_with_prefix(entries, OPTIM_PREFIX)
    stream = archive.entries_with_prefix(entries, STREAM_PREFIX)
    if "steps" not in optimizer:
        raise CheckpointError(f"{path}: no optimizer state")
    return Checkpoint(model, run, optimizer, stream, path)


# -- metrics ----------------------------------------------------------------------------------
METRIC_FIELDS = ("step", "epoch", "train_loss", "val_loss", "val_metric", "seconds")


class MetricsLog:
    """Append rows to ``run_dir/metrics.csv`` (and gradient flow to ``flow.csv``); ``lr``: with
    an "lr" column before "seconds".

    ``rows()`` counts the data rows written so far; a checkpoint stores it, and
    ``truncate(rows, flow_rows)`` drops what was written after that checkpoint, so a resumed
    run ends with the files an uninterrupted one would have."""

    def __init__(self, run_dir, metric_name="val_metric", lr=False):
        self.path = os.path.join(run_dir, METRICS)
        self.flow_path = os.path.join(run_dir, FLOW)
        self.metric_name, self.lr = metric_name, bool(lr)
        self.fields = (list(METRIC_FIELDS[:4]) + [metric_name] + (["lr"] if lr else []) +
                       ["seconds"])
        self._counts = {self.path: _data_rows(self.path),
                        self.flow_path: _data_rows(self.flow_path)}

    def rows(self):
        return self._counts[self.path], self._counts[self.flow_path]

    def truncate(self, rows, flow_rows):
        for path, keep in ((self.path, rows), (self.flow_path, flow_rows)):
            if not os.path.exists(path):
                continue
            with open(path, newline="") as f:
                lines = list(csv.reader(f))
            kept = lines[:1 + keep] if keep else []
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(kept)
            atomic_write_text(path, buffer.getvalue())
            self._counts[path] = max(len(kept) - 1, 0)

    def _append(self, path, header, row):
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if new:
                writer.writerow(header)
            writer.writerow(row)
        self._counts[path] = self._counts.get(path, 0) + 1

    def write(self, step, epoch, train_loss=None, val_loss=None, val_metric=None, seconds=None,
              lr=None):
        def fmt(x):
            return "" if x is None else f"{x:.6g}"
        self._append(self.path, self.fields,
                     [step, epoch, fmt(train_loss), fmt(val_loss), fmt(val_metric)] +
                     ([fmt(lr)] if self.lr else []) +
                     ["" if seconds is None else f"{seconds:.3f}"])

    def write_flow(self, step, epoch, flow):
        flow = np.asarray(flow)
        header = ["step", "epoch", "layer"] + [f"t{t}" for t in range(flow.shape[1])]
        for layer, values in enumerate(flow):
            self._append(self.flow_path, header,
                         [step, epoch, layer] + [f"{v:.6g}" for v in values])


def _data_rows(path):
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as f:
        return max(sum(1 for row in csv.reader(f) if row) - 1, 0)


def read_metrics(run_dir):
    """metrics.csv as a dict of float arrays by column (NaN where empty), and the name of
    the validation metric column."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        raise CheckpointError(f"{run_dir}: no {METRICS} (not a cbptt run folder?)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise CheckpointError(f"{path}: no rows yet")
    header = rows[0]
    columns = {name: np.array([float(r[i]) if r[i] else np.nan for r in rows[1:]])
               for i, name in enumerate(header)}
    return columns, header[4]


def read_flow(run_dir):
    """flow.csv as (steps (R,), epochs (R,), layers (R,), flow (R, T)), or None."""
    path = os.path.join(run_dir, FLOW)
    if not os.path.isfile(path):
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)][1:]
    if not rows:
        return None
    table = np.array([[float(x) for x in r] for r in rows])
    return (table[:, 0].astype(int), table[:, 1].astype(int), table[:, 2].astype(int),
            table[:, 3:])
