"""The ``cbptt`` command: a thin layer over the Python API.

    cbptt demo [--quick]                          an LSTM on the adding problem, then a character
                                                  model of Python's docstrings (under a minute)
    cbptt train DATA [options]                    train on a text file (character model) or a
                                                  CSV/.npy time series (forecasting) into a run
                                                  folder; --resume RUN continues one
    cbptt sample RUN [--prime TEXT] [-n N]        generate text from a character model
    cbptt predict RUN DATA [--output FILE]        forecasts of a forecasting model, as CSV
    cbptt plot RUN [--output PNG]                 loss curves (and gradient flow) of a run
    cbptt bench [ARGS...]                         the benchmark suite (from a source checkout)

Everything the command does can be done from Python: the run is ``train_run(config, run_dir)``,
data handling is in ``cbptt.data`` and run folders in ``cbptt.checkpoint``. A user's mistake
(missing or malformed data, an unknown option value, a run that does not fit) ends with one
line on stderr and exit code 2.
"""
import argparse
import contextlib
import math
import os
import signal
import sys
import time
import traceback

import numpy as np

from . import __version__, data, datasets
from .archive import atomic_write, atomic_write_text
from .checkpoint import (CONFIG, CheckpointError, MetricsLog,
                         has_checkpoint, load_checkpoint, make_optimizer, new_run_dir,
                         read_flow, read_metrics, restore_optimizer, restore_stream,
                         save_checkpoint)
from .data import DataError
from .distributed import DataParallel, shard
from .model import RNN
from .names import CELLS, DTYPES, OPTIMIZERS
from .trainers import ManyToMany, ManyToOne
from .truncated import Truncated, join_streams, stream_rows

PLOT_HINT = 'pip install "cbptt[plot]"'
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(Exception):
    """A user's mistake: shown as one line on stderr, exit code 2."""


class MissingExtra(UsageError):
    """An optional dependency that this command needs is not installed."""


# -- progress ---------------------------------------------------------------------------------
def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """A progress bar of steps with the latest loss and steps/s on a terminal: tqdm's when it
    is installed, otherwise one line rewritten in place. When stderr is a file or a pipe, a
    plain line every few seconds and at the end. ``enabled=False`` shows nothing. ``write(text)`` prints a line
    to stdout without breaking the bar."""

    def __init__(self, total, desc="", enabled=True, initial=0, stream=None):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count = self.start_count = initial
        self.loss = None
        self.start = self.last_draw = time.perf_counter()
        self._bar = None
        tqdm = _tqdm() if enabled and self.stream.isatty() else None
        if tqdm is not None:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                             file=self.stream, dynamic_ncols=True, mininterval=0.25,
                             leave=False)
        self._tty = enabled and self._bar is None and self.stream.isatty()
        self._interval = 0.1 if self._tty else 5.0

    def update(self, n=1, loss=None):
        self.count += n
        if loss is not None:
            self.loss = loss
        if not self.enabled:
            return
        if self._bar is not None:
            if loss is not None:
                self._bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last_draw >= self._interval or self.count == self.total:
            self.last_draw = now
            self._draw(now)

    def rate(self):
        elapsed = time.perf_counter() - self.start
        return (self.count - self.start_count) / elapsed if elapsed > 0 else 0.0

    def _line(self, now):
        loss = "" if self.loss is None else f"  loss {self.loss:.4f}"
        total = f"/{self.total}" if self.total else ""
        return f"{self.desc}  step {self.count}{total}{loss}  {self.rate():.1f} steps/s"

    def _draw(self, now):
        if self._tty:
            self.stream.write("\r\x1b[2K" + self._line(now))
        else:
            self.stream.write(self._line(now) + "\n")
        self.stream.flush()

    def write(self, text):
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
            return
        if self._tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        print(text, flush=True)
        if self._tty:
            self._draw(time.perf_counter())

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


# -- tasks: what a run trains on --------------------------------------------------------------
class CharTask:
    """A character model of a text file: next-character prediction with cross-entropy, on
    shuffled non-overlapping windows (ManyToMany) or, with k1, on ``batch`` parallel streams
    (Truncated BPTT(k1, k2))."""

    kind = "char"
    metric = "val_bpc"

    def __init__(self, config):
        self.config = config
        text = data.read_text(config["data"])
        if "vocab" not in config:
            config["vocab"] = data.build_vocab(text)
        self.vocab = config["vocab"]
        ids = data.encode(text, self.vocab, what=f"{config['data']}")
        cut = data.split_point(len(ids), config["val"])
        self.train_ids, self.val_ids = ids[:cut], ids[cut:]
        self.size = len(self.vocab)
        self.input_size = self.output_size = self.size
        self.truncated = config.get("k1") is not None
        part = (f"the training part of the text ({len(self.train_ids)} of {len(ids)} characters"
                f" with --val {config['val']:g})")
        if self.truncated:
            if len(self.train_ids) - 1 < config["batch"]:
                raise DataError(f"{part} is too short for {config['batch']} streams; use a "
                                f"smaller --batch")
            self.streams = data.char_streams(self.train_ids, config["batch"])
        else:
            if len(self.train_ids) < config["window"] + 1:
                raise DataError(f"{part} is shorter than one window of {config['window']} + 1"
                                f"; use a smaller --window")
            self.windows = data.char_windows(self.train_ids, config["window"])
        if config["val"] > 0:
            need = 2 if self.truncated else config["window"] + 1
            if len(self.val_ids) < need:
                raise DataError(f"the validation part ({len(self.val_ids)} characters, --val "
                                f"{config['val']}) is shorter than "
                                f"{'one window' if not self.truncated else 'two characters'}; "
                                f"use --val 0 or a larger --val")

    def describe(self):
        how = (f"{self.streams.shape[0]} streams of {self.streams.shape[1] - 1} characters, "
               f"truncated BPTT(k1={self.config['k1']}, k2={self.config['k2']})"
               if self.truncated else
               f"{len(self.windows)} windows of {self.config['window']} characters")
        return (f"{len(self.train_ids) + len(self.val_ids)} characters, vocabulary "
                f"{self.size}; training on {how}; {len(self.val_ids)} held-out characters")

    def make_trainer(self, model, optimizer, clip):
        c = self.config
        if self.truncated:
            return Truncated(model, k1=c["k1"], k2=c["k2"], loss="cross_entropy",
                             optimizer=optimizer, clip_norm=clip)
        return ManyToMany(model, loss="cross_entropy", optimizer=optimizer, clip_norm=clip)

    def epoch_batches(self, rng):
        """The epoch's batches, in order (drawing the shuffle from rng)."""
        if self.truncated:
            length, k1 = self.streams.shape[1] - 1, self.config["k1"]
            return [slice(s, min(s + k1, length)) for s in range(0, length, k1)]
        order = rng.permutation(len(self.windows))
        b = self.config["batch"]
        return [order[i:i + b] for i in range(0, len(order), b)]

    def start_epoch(self, trainer):
        if self.truncated:
            trainer.reset_state()

    def batch(self, which, dtype, rows=None):
        """Inputs and targets of a batch; rows: only these of its sequences (a rank's)."""
        if self.truncated:
            streams = self.streams if rows is None else self.streams[rows]
            ids = streams[:, which.start:which.stop + 1]
        else:
            ids = self.windows[which if rows is None else which[rows]]
        return data.one_hot(ids[:, :-1], self.size, dtype), ids[:, 1:]

    def evaluate(self, model):
        """(val loss in nats per character, bits per character)."""
        window = None if self.truncated else self.config["window"]
        loss = data.char_loss(model, self.val_ids, window=window)
        return loss, data.bits(loss)

    def flow_batch(self, dtype):
        """A few held-out windows for the gradient-flow picture."""
        steps = self.config["k2"] if self.truncated else self.config["window"]
        count = min(8, (len(self.val_ids) - 1) // steps)
        if count < 1:
            return None
        ids = np.stack([self.val_ids[i * steps:i * steps + steps + 1] for i in range(count)])
        return data.one_hot(ids[:, :-1], self.size, dtype), ids[:, 1:]


class ForecastTask:
    """Forecasting a CSV or .npy time series: windows of ``window`` rows of the input columns,
    targets ``horizon`` rows ahead (at every step, or at the window's last step only), MSE on
    standardised values (the statistics of the training part, stored with the run)."""

    kind = "forecast"
    metric = "val_rmse"

    def __init__(self, config):
        self.config = c = config
        values, names = data.read_series(c["data"], c["format"])
        if "input_columns" in c:           # a stored run: find its columns by name
            missing = [n for n in c["input_columns"] + c["target_columns"] if n not in names]
            if missing:
                raise DataError(f"{c['data']} has no column {missing[0]!r} (the model reads "
                                f"{', '.join(c['input_columns'])})")
            inputs = [names.index(n) for n in c["input_columns"]]
            targets = [names.index(n) for n in c["target_columns"]]
        else:
            inputs = data.select_columns(names, c.get("columns"), "--columns")
            targets = (inputs if c.get("target") is None
                       else data.select_columns(names, c["target"], "--target"))
            c["input_columns"] = [names[i] for i in inputs]
            c["target_columns"] = [names[i] for i in targets]
        X_all, Y_all = values[:, inputs], values[:, targets]
        cut = data.split_point(len(values), c["val"])
        if "input_mean" not in c:
            c["input_mean"], c["input_std"] = map(list, data.fit_standardisation(X_all[:cut]))
            c["target_mean"], c["target_std"] = map(list, data.fit_standardisation(Y_all[:cut]))
        X_all = data.standardise(X_all, c["input_mean"], c["input_std"])
        Y_all = data.standardise(Y_all, c["target_mean"], c["target_std"])
        self.input_size, self.output_size = len(inputs), len(targets)
        self.rows = len(values)
        if cut < c["window"] + c["horizon"]:
            raise DataError(f"the window ({c['window']} rows) plus the horizon "
                            f"({c['horizon']}) is longer than the training part of the series "
                            f"({cut} of {len(values)} rows with --val {c['val']:g}); use a "
                            f"smaller --window")
        self.X, self.Y = data.forecast_windows(X_all[:cut], Y_all[:cut], c["window"],
                                               c["horizon"], c["mode"])
        self.Xv = self.Yv = None
        if c["val"] > 0:
            try:
                self.Xv, self.Yv = data.forecast_windows(X_all[cut:], Y_all[cut:], c["window"],
                                                         c["horizon"], c["mode"])
            except DataError:
                raise DataError(f"the validation part ({len(values) - cut} rows, --val "
                                f"{c['val']}) is shorter than the window ({c['window']}) plus "
                                f"the horizon ({c['horizon']}); use --val 0, a larger --val or "
                                f"a smaller --window") from None

    def describe(self):
        c = self.config
        ahead = f"{c['horizon']} row{'s' if c['horizon'] > 1 else ''} ahead"
        return (f"{self.rows} rows; input columns [{', '.join(c['input_columns'])}], target "
                f"columns [{', '.join(c['target_columns'])}] {ahead}, {c['mode']}; "
                f"{len(self.X)} training windows of {c['window']} rows, "
                f"{0 if self.Xv is None else len(self.Xv)} validation windows")

    def make_trainer(self, model, optimizer, clip):
        cls = ManyToOne if self.config["mode"] == "many-to-one" else ManyToMany
        return cls(model, loss="mse", optimizer=optimizer, clip_norm=clip)

    def epoch_batches(self, rng):
        order = rng.permutation(len(self.X))
        b = self.config["batch"]
        return [order[i:i + b] for i in range(0, len(order), b)]

    def start_epoch(self, trainer):
        pass

    def batch(self, which, dtype, rows=None):
        if rows is not None:
            which = which[rows]
        return self.X[which].astype(dtype), self.Y[which].astype(dtype)

    def predict_windows(self, model, X):
        out = np.concatenate([model.predict(X[i:i + 256].astype(model.dtype))
                              for i in range(0, len(X), 256)])
        return out if self.config["mode"] == "many-to-many" else out[:, -1]

    def evaluate(self, model):
        """(val MSE on standardised values, RMSE in the data's units)."""
        pred = self.predict_windows(model, self.Xv).astype(np.float64)
        loss = float(np.mean((pred - self.Yv) ** 2))
        std = np.asarray(self.config["target_std"])
        rmse = float(np.sqrt(np.mean(((pred - self.Yv) * std) ** 2)))
        return loss, rmse

    def flow_batch(self, dtype):
        if self.Xv is None:
            return None
        return self.Xv[:16].astype(dtype), self.Yv[:16].astype(dtype)


def make_task(config):
    return CharTask(config) if config["task"] == "char" else ForecastTask(config)


# -- training ---------------------------------------------------------------------------------
class _Interrupt:
    """While active (in the main thread): the first Ctrl-C asks the run to stop after the
    current step and save a checkpoint; a second one aborts at once (the last checkpoint
    stays as it was)."""

    def __init__(self, say):
        self.requested = False
        self.say = say
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("interrupted: saving a checkpoint after this step (Ctrl-C again to abort)")

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _rng_from_state(state):
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def _flow(model, task, loss):
    batch = task.flow_batch(model.dtype)
    if batch is None:
        return None
    trainer = (ManyToOne if getattr(task, "config", {}).get("mode") == "many-to-one"
               else ManyToMany)(model, loss=loss)
    return trainer.loss_and_grad(*batch, return_flow=True)[-1]


# -- under mpiexec: the ranks of one run ---------------------------------------------------------
# Environment variables by which launchers give the number of processes (MPICH/Intel hydra,
# Open MPI, MVAPICH, Slurm's srun). mpi4py is imported only when one says more than one.
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                   "SLURM_STEP_NUM_TASKS")


def mpi_world():
    """MPI.COMM_WORLD when this process is one of several started by an MPI launcher, else
    None (without importing mpi4py)."""
    launched = 1
    for name in _LAUNCHER_SIZES:
        with contextlib.suppress(ValueError, TypeError):
            launched = max(launched, int(os.environ.get(name)))
    if launched < 2:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise MissingExtra(f"cbptt train: started as one of {launched} processes (mpiexec/srun) "
                           f"but mpi4py is not installed: pip install \"cbptt[mpi]\", or run "
                           f"one process") from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def _portable(exc, rank):
    """An exception to send to the other ranks: a user's mistake keeps its class (so that
    every rank exits with code 2), anything else becomes a RuntimeError naming it."""
    where = "" if rank == 0 else f"rank {rank}: "
    if isinstance(exc, (UsageError, DataError, CheckpointError, FloatingPointError)):
        cls = type(exc) if type(exc).__module__ in (__name__, data.__name__,
                                                    "cbptt.checkpoint", "builtins") else None
        if cls is FloatingPointError:
            return cls(f"{where}{exc}")
        if cls is not None:
            text = str(exc)
            if where and text.startswith("cbptt train: "):
                text = text[len("cbptt train: "):]
            return cls(f"cbptt train: {where}{text}" if where else text)
    return RuntimeError(f"{where}{type(exc).__name__}: {exc}")


class _World:
    """The processes of one run: one (comm None), or the ranks of an MPI communicator, of
    which rank 0 (the root) alone prints and writes files. Every helper is collective."""

    def __init__(self, comm=None):
        if comm is not None and comm.Get_size() < 2:
            comm = None
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.root = self.rank == 0

    def shard(self, n):
        return shard(n, self.rank, self.size)

    def bcast(self, value):
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def any(self, flag):
        """True on every rank when flag is true on some rank."""
        if self.comm is None:
            return bool(flag)
        return bool(self.comm.allreduce(1 if flag else 0, op=self._max()))

    def _max(self):
        from mpi4py import MPI
        return MPI.MAX

    def on_root(self, fn, *args, **kwargs):
        """fn on rank 0 only; an exception there is raised on every rank (no rank is left
        waiting in a collective). Returns fn's value on rank 0, None elsewhere."""
        if self.comm is None:
            return fn(*args, **kwargs)
        value = failure = None
        if self.root:
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:        # noqa: BLE001 -- passed on to every rank
                failure = exc
        sent = self.comm.bcast(None if failure is None else _portable(failure, 0), root=0)
        if failure is not None:
            raise failure
        if sent is not None:
            raise sent
        return value

    def agree(self, fn, *args):
        """fn on every rank; if it fails on any, every rank raises (the first failing rank's
        error, naming the rank)."""
        if self.comm is None:
            return fn(*args)
        value = failure = None
        try:
            value = fn(*args)
        except Exception as exc:            # noqa: BLE001 -- passed on to every rank
            failure = exc
        sent = self.comm.allgather(None if failure is None else _portable(failure, self.rank))
        first = next((r for r, e in enumerate(sent) if e is not None), None)
        if first is None:
            return value
        if first == self.rank:
            raise failure
        raise sent[first]

    def gather_stream(self, trainer):
        """The whole stream state of a Truncated trainer whose streams are split over the
        ranks (rank 0 gets it, the others None): what one process would hold."""
        state = trainer.stream_state()
        if self.comm is None:
            return state
        parts = self.comm.gather(state, root=0)
        return join_streams(parts) if self.root else None

    def local_stream(self, state):
        """This rank's streams of a whole stream state (``gather_stream``'s inverse)."""
        batch = int(state["batch"])
        if self.comm is None or batch < 0:
            return state
        return stream_rows(state, self.shard(batch))


class _NoMetrics:
    """The metrics log of a rank other than 0: writes nothing."""

    def rows(self):
        return 0, 0

    def truncate(self, rows, flow_rows):
        pass

    def write(self, *args, **kwargs):
        pass

    def write_flow(self, *args, **kwargs):
        pass


def check_shards(task, config, size):
    """Every batch must give each of ``size`` ranks at least one sequence."""
    if size < 2:
        return
    b = config["batch"]
    if getattr(task, "truncated", False):
        if b < size:
            raise UsageError(f"cbptt train: --batch {b} streams cannot be split over {size} "
                             f"processes; use --batch {size} or more")
        return
    n = len(task.windows) if task.kind == "char" else len(task.X)
    last = n - b * ((n - 1) // b)
    if last < size:
        raise UsageError(f"cbptt train: with {size} processes every batch needs at least "
                         f"{size} windows, but the epoch's {'last' if n > b else 'one'} batch "
                         f"has {last} ({n} windows, --batch {b}); change --batch or run fewer "
                         f"processes")


class RunResult:
    """What ``train_run`` did: ``status`` ("finished", "interrupted", "max_steps",
    "nothing"), the step count, the model and the last validation metrics."""

    def __init__(self, status, step, model, val=None):
        self.status, self.step, self.model, self.val = status, step, model, val


def train_run(config, run_dir, resume=None, max_steps=None, progress=True, log=print,
              task=None, comm=None):
    """Train (or, with ``resume`` a loaded Checkpoint, continue) the run described by
    ``config`` in ``run_dir``. Returns a RunResult.

    config holds the data path and format, the task ("char" or "forecast") and its options,
    the model (cell, hidden, layers, dtype, seed), the optimiser (optimizer, lr, momentum,
    clip) and the schedule (epochs, batch, val, log_every, checkpoint_every). A resumed run
    continues exactly as the uninterrupted one would have (same batches, optimiser moments,
    stream state and RNG state). ``task``: the ``make_task(config)`` already made, if any
    (making it reads the data and completes config with the vocabulary, the columns and the
    standardisation).

    ``comm``: an mpi4py communicator of several ranks (each calling train_run with the same
    arguments) makes the run data-parallel: every rank trains on its share of every batch (or
    of the ``batch`` streams) under ``DataParallel``, and the run equals the one-process run
    to rounding. Rank 0 alone writes the run folder and calls ``log``; it returns the same
    status and step on every rank."""
    world = _World(comm)
    root = world.root
    if task is None:
        task = make_task(config)
    check_shards(task, config, world.size)
    dtype = np.dtype(config["dtype"])
    model = RNN(task.input_size, config["hidden"], task.output_size, cell=config["cell"],
                num_layers=config["layers"], dtype=dtype, seed=config["seed"])
    optimizer = make_optimizer(config["optimizer"], config["lr"], config["momentum"])
    trainer = task.make_trainer(model, optimizer, config["clip"] or None)
    metrics = MetricsLog(run_dir, task.metric) if root else _NoMetrics()
    if not root:
        log = _quiet
    loss_name = "cross_entropy" if task.kind == "char" else "mse"

    if resume is not None:
        saved = resume.model
        if saved.config() != model.config():
            raise CheckpointError(f"{resume.path}: the checkpoint's model {saved.config()} does "
                                  f"not fit this run's data and options ({model.config()})")
        model.params[...] = saved.params
        restore_optimizer(optimizer, resume.optimizer, model.params)
        if isinstance(trainer, Truncated) and resume.stream:
            restore_stream(trainer, world.local_stream(resume.stream))
        state = dict(resume.run["progress"])
        world.on_root(metrics.truncate, state["metrics_rows"], state["flow_rows"])
    else:
        state = {"epoch": 0, "batch_index": 0, "step": 0,
                 "epoch_rng": np.random.default_rng(config["seed"]).bit_generator.state,
                 "log_sum": 0.0, "log_count": 0, "epoch_sum": 0.0, "epoch_count": 0,
                 "seconds": 0.0, "metrics_rows": 0, "flow_rows": 0, "val": None}
    world.on_root(atomic_write_text, os.path.join(run_dir, CONFIG), _json(config))
    stepper = trainer if world.size == 1 else DataParallel(trainer, world.comm)
    sharded_streams = world.size > 1 and isinstance(trainer, Truncated)

    def rows_of(which):
        """This rank's sequences of a batch (None: all of them)."""
        if world.size == 1:
            return None
        return world.shard(config["batch"] if isinstance(which, slice) else len(which))

    def save():
        stream = world.gather_stream(trainer) if sharded_streams else None

        def write():
            state["metrics_rows"], state["flow_rows"] = metrics.rows()
            save_checkpoint(run_dir, model, optimizer, {"config": config, "progress": state},
                            trainer, stream=stream)
        world.on_root(write)

    epochs, log_every = config["epochs"], config["log_every"]
    every = config["checkpoint_every"]
    if state["epoch"] >= epochs:
        return RunResult("nothing", state["step"], model, state.get("val"))
    if max_steps is not None and state["step"] >= max_steps:
        return RunResult("max_steps", state["step"], model, state.get("val"))
    status = "finished"
    started = time.perf_counter() - state["seconds"]
    with _Interrupt(lambda text: print(text, file=sys.stderr, flush=True) if root
                    else None) as interrupt:
        while state["epoch"] < epochs:
            rng = _rng_from_state(state["epoch_rng"])
            batches = task.epoch_batches(rng)
            if state["batch_index"] == 0:
                task.start_epoch(trainer)
            bar = Progress(len(batches), f"epoch {state['epoch'] + 1}/{epochs}",
                           progress and root, initial=state["batch_index"])
            try:
                for index in range(state["batch_index"], len(batches)):
                    which = batches[index]
                    X, Y = task.batch(which, dtype, rows=rows_of(which))
                    loss = float(stepper.step(X, Y))
                    state["step"] += 1
                    state["batch_index"] = index + 1
                    state["log_sum"] += loss
                    state["log_count"] += 1
                    state["epoch_sum"] += loss
                    state["epoch_count"] += 1
                    state["seconds"] = time.perf_counter() - started
                    bar.update(1, loss)
                    if state["step"] % log_every == 0:
                        world.on_root(metrics.write, state["step"], state["epoch"] + 1,
                                      train_loss=state["log_sum"] / state["log_count"],
                                      seconds=state["seconds"])
                        state["log_sum"], state["log_count"] = 0.0, 0
                    requested = world.any(interrupt.requested)    # Ctrl-C on any rank
                    stop = requested or (max_steps is not None and state["step"] >= max_steps)
                    if stop or (every and state["step"] % every == 0):
                        save()
                    if stop:
                        status = "interrupted" if requested else "max_steps"
                        break
            finally:
                bar.close()
            if status != "finished":
                break
            # the epoch's end: validation, gradient flow (on rank 0 only), a checkpoint
            def end_epoch():
                train_loss = state["epoch_sum"] / max(state["epoch_count"], 1)
                val_loss = val_metric = None
                if config["val"] > 0:
                    val_loss, val_metric = task.evaluate(model)
                    flow = _flow(model, task, loss_name)
                    if flow is not None:
                        metrics.write_flow(state["step"], state["epoch"] + 1, flow)
                state["seconds"] = time.perf_counter() - started
                metrics.write(state["step"], state["epoch"] + 1, train_loss=train_loss,
                              val_loss=val_loss, val_metric=val_metric,
                              seconds=state["seconds"])
                line = f"epoch {state['epoch'] + 1}/{epochs}  train loss {train_loss:.4f}"
                if val_loss is not None:
                    line += (f"  val loss {val_loss:.4f}  {task.metric[4:].replace('_', ' ')} "
                             f"{val_metric:.4f}")
                    state["val"] = [val_loss, val_metric]
                log(f"{line}  ({state['step']} steps, {state['seconds']:.1f} s)")
            world.on_root(end_epoch)
            state.update(epoch=state["epoch"] + 1, batch_index=0, epoch_sum=0.0,
                         epoch_count=0, epoch_rng=rng.bit_generator.state)
            save()
            if world.any(interrupt.requested):
                status = "interrupted"
                break
    return RunResult(status, state["step"], model, state.get("val"))


def _quiet(*args, **kwargs):
    pass


def _json(value):
    import json
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


# -- demo -------------------------------------------------------------------------------------
DEMO = {
    False: dict(adding_steps=50, adding_hidden=32, adding_updates=1500, adding_train=20000,
                adding_eval_every=250, corpus=400_000, char_hidden=128, char_batch=32, k1=32,
                k2=32, char_updates=3000, char_lr=3e-3, char_eval_every=500, sample=300),
    True: dict(adding_steps=10, adding_hidden=16, adding_updates=400, adding_train=4000,
               adding_eval_every=100, corpus=30_000, char_hidden=48, char_batch=16, k1=16,
               k2=16, char_updates=300, char_lr=1e-2, char_eval_every=100, sample=80),
}


def demo_adding(s, seed=0, progress=True, log=print):
    """(a) of the demo: a many-to-one LSTM on the adding problem. Returns (test MSE, losses,
    evaluations [(update, test MSE)], seconds)."""
    from .datasets import adding_problem
    from .optim import Adam

    T, dtype = s["adding_steps"], np.float32
    X, y = adding_problem(s["adding_train"], T, seed=seed, dtype=dtype)
    X_test, y_test = adding_problem(1000, T, seed=seed + 1, dtype=dtype)
    model = RNN(2, s["adding_hidden"], 1, cell="lstm", dtype=dtype, seed=seed)
    trainer = ManyToOne(model, loss="mse", optimizer=Adam(lr=1e-2), clip_norm=1.0)
    guess = float(np.mean((y_test - 1.0) ** 2))
    log(f"(a) adding problem: many-to-one LSTM, T={T}, H={s['adding_hidden']}, float32, "
        f"Adam 1e-2, clip 1.0, batch 32, {s['adding_updates']} updates")
    rng = np.random.default_rng(seed)
    losses, evals = [], []
    bar = Progress(s["adding_updates"], "adding", progress)
    start = time.perf_counter()
    try:
        for update in range(1, s["adding_updates"] + 1):
            rows = rng.integers(0, len(X), size=32)
            losses.append(float(trainer.step(X[rows], y[rows])))
            bar.update(1, losses[-1])
            if update % s["adding_eval_every"] == 0:
                mse = float(np.mean((trainer.predict(X_test) - y_test) ** 2))
                evals.append((update, mse))
                bar.write(f"    update {update:5d}  test MSE {mse:.4f}")
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    mse = evals[-1][1]
    ratio = guess / mse
    better = (f"{ratio:.0f}x lower" if ratio >= 10 else f"{ratio:.1f}x lower" if ratio > 1
              else "no better")
    log(f"    test MSE {mse:.4f} vs {guess:.3f} for always guessing the mean ({better}), "
        f"{s['adding_updates']} updates in {seconds:.1f} s")
    return mse, losses, evals, seconds


def demo_chars(s, seed=0, progress=True, log=print):
    """(b) of the demo: a character-level LSTM language model of standard-library docstrings,
    trained with truncated BPTT. Returns (held-out bpc, unigram bpc, losses in bits,
    evaluations [(update, held-out bpc)], sample text, seconds)."""
    from .optim import Adam

    text = datasets.stdlib_docstrings(s["corpus"])
    vocab = data.build_vocab(text)
    ids = data.encode(text, vocab)
    cut = data.split_point(len(ids), 0.1)
    train_ids, val_ids = ids[:cut], ids[cut:]
    V, B, k1, k2 = len(vocab), s["char_batch"], s["k1"], s["k2"]
    streams = data.char_streams(train_ids, B)
    length = streams.shape[1] - 1
    unigram = data.unigram_bits(train_ids, V)
    log(f"(b) character model: {len(text):,} characters of standard-library docstrings "
        f"(vocabulary {V}), the last {len(val_ids):,} held out; LSTM H={s['char_hidden']}, "
        f"truncated BPTT k1={k1} k2={k2}, {B} streams, Adam {s['char_lr']:g}, "
        f"{s['char_updates']} updates")
    model = RNN(V, s["char_hidden"], V, cell="lstm", dtype=np.float32, seed=seed)
    trainer = Truncated(model, k1=k1, k2=k2, loss="cross_entropy",
                        optimizer=Adam(lr=s["char_lr"]), clip_norm=1.0)
    losses, evals, position = [], [], 0
    bar = Progress(s["char_updates"], "chars", progress)
    start = time.perf_counter()
    try:
        for update in range(1, s["char_updates"] + 1):
            if position >= length:
                trainer.reset_state()
                position = 0
            block = streams[:, position:position + k1 + 1]
            position += block.shape[1] - 1
            loss = trainer.step(data.one_hot(block[:, :-1], V), block[:, 1:])
            losses.append(data.bits(float(loss)))
            bar.update(1, losses[-1])
            if update % s["char_eval_every"] == 0:
                bpc = data.bits(data.char_loss(model, val_ids))
                evals.append((update, bpc))
                bar.write(f"    update {update:5d}  held-out {bpc:.3f} bits/char")
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    bpc = evals[-1][1]
    sample = data.sample_chars(model, vocab, "Return the", s["sample"], temperature=0.7,
                               rng=seed)
    log(f"    sample (temperature 0.7):\n" + _indent("Return the" + sample))
    log(f"    held-out {bpc:.3f} bits/char vs {unigram:.3f} for the unigram frequencies "
        f"(no context), {s['char_updates']} updates in {seconds:.1f} s")
    return bpc, unigram, losses, evals, sample, seconds


def _indent(text, prefix="    | "):
    return "\n".join((prefix + line).rstrip() for line in text.split("\n"))


def plot_demo(path, adding, chars):
    """Loss curves of the demo's two models in one PNG. MissingExtra without matplotlib."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    mse, losses, evals, _ = adding
    a.semilogy(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.6, label="train (batch)")
    a.semilogy(*zip(*evals), "o-", label="test MSE")
    a.axhline(1 / 6, color="gray", ls="--", label="guessing the mean")
    a.set(title="(a) adding problem, many-to-one LSTM", xlabel="update", ylabel="MSE")
    a.legend()
    bpc, unigram, closses, cevals, _, _ = chars
    b.plot(np.arange(1, len(closses) + 1), closses, lw=0.6, alpha=0.6, label="train (block)")
    b.plot(*zip(*cevals), "o-", label="held-out")
    b.axhline(unigram, color="gray", ls="--", label="unigram entropy")
    b.set(title="(b) character LSTM, truncated BPTT", xlabel="update", ylabel="bits per char")
    b.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def demo(quick=False, plot="cbptt-demo.png", seed=0, progress=True, log=print):
    """The ``cbptt demo`` command. Returns a dict of the measured results."""
    s = DEMO[bool(quick)]
    start = time.perf_counter()
    log(f"cbptt {__version__} demo{' (quick)' if quick else ''}: exact BPTT on the CPU")
    adding = demo_adding(s, seed, progress, log)
    chars = demo_chars(s, seed, progress, log)
    if plot:
        try:
            plot_demo(plot, adding, chars)
            log(f"loss curves: {plot}")
        except MissingExtra:
            log(f"loss curves: not drawn (matplotlib is not installed: {PLOT_HINT})")
    total = time.perf_counter() - start
    log(f"demo done in {total:.1f} s")
    return {"adding_mse": adding[0], "bpc": chars[0], "unigram_bpc": chars[1],
            "sample": chars[4], "seconds": total}


# -- plots ------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra(f"plots need matplotlib, which is not installed: {PLOT_HINT}") \
            from None
    return plt


def _save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def plot_run(run_dir, output=None):
    """Loss curves of a run (and a heat map of its gradient flow, when recorded) to a PNG;
    returns its path."""
    columns, metric = read_metrics(run_dir)
    flow = read_flow(run_dir)
    plt = _pyplot()
    output = output or os.path.join(run_dir, "curves.png")
    panels = 2 if flow is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    step, train, val = columns["step"], columns["train_loss"], columns["val_loss"]
    is_val = ~np.isnan(val)
    train_rows = ~is_val & ~np.isnan(train)
    ax.plot(step[train_rows], train[train_rows], lw=0.8, label="train")
    if is_val.any():
        ax.plot(step[is_val], val[is_val], "o-", label="validation")
    ax.set(title=os.path.basename(os.path.abspath(run_dir)), xlabel="step", ylabel="loss")
    ax.legend()
    if flow is not None:
        steps, epochs, layers, values = flow
        top = layers == layers.max()
        image = np.log10(np.maximum(values[top], 1e-30))
        ax = axes[0, 1]
        im = ax.imshow(image, aspect="auto", origin="lower", cmap="viridis",
                       extent=(-0.5, image.shape[1] - 0.5, 0.5, image.shape[0] + 0.5))
        ax.set(title=f"gradient flow, layer {layers.max()}: log10 ||dL/dh_t||",
               xlabel="time step t", ylabel="epoch")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    _save_figure(fig, output)
    plt.close(fig)
    return output


# -- bench ------------------------------------------------------------------------------------
def _benchmarks_root():
    """The folder holding the ``benchmarks`` package of a source checkout (the current folder,
    or the checkout this cbptt is installed from in editable mode); "" when ``benchmarks`` is
    importable as it is; None when there is none."""
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.getcwd(), os.path.dirname(os.path.dirname(here))):
        if (os.path.isfile(os.path.join(root, "benchmarks", "__main__.py"))
                and os.path.isfile(os.path.join(root, "pyproject.toml"))):
            return root
    try:
        if importlib.util.find_spec("benchmarks.__main__") is not None:
            return ""
    except (ImportError, ValueError):
        pass
    return None


def bench(args):
    """Run ``python -m benchmarks ARGS`` in this process; returns its exit code."""
    import runpy
    root = _benchmarks_root()
    if root is None:
        raise UsageError("cbptt bench runs the benchmark suite of a source checkout: run it "
                         "from the root of a cbptt git clone (the benchmarks/ folder is not "
                         "installed)")
    if root and os.path.abspath(root) not in [os.path.abspath(p or ".") for p in sys.path]:
        sys.path.insert(0, root)
    saved = sys.argv
    sys.argv = ["python -m benchmarks"] + list(args)
    try:
        runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


# -- sample, predict --------------------------------------------------------------------------
def load_run(run_dir, kind=None):
    """(Checkpoint, config) of a run, checking it is of the ``kind`` a command needs."""
    ckpt = load_checkpoint(run_dir)
    config = ckpt.run.get("config", {})
    if kind is not None and config.get("task") != kind:
        what = {"char": "a character model (trained on text)",
                "forecast": "a forecasting model (trained on a CSV or .npy series)"}
        other = "predict" if kind == "char" else "sample"
        raise UsageError(f"{run_dir} is not {what[kind]}; use cbptt {other}")
    return ckpt, config


def sample_run(run_dir, prime=None, length=500, temperature=0.8, seed=None):
    """Text generated by a run's character model (the prime included)."""
    ckpt, config = load_run(run_dir, "char")
    vocab = config["vocab"]
    if prime is None:
        prime = "\n" if "\n" in vocab else vocab[0]
    return prime + data.sample_chars(ckpt.model, vocab, prime, length, temperature, seed)


def predict_run(run_dir, data_path, fmt="auto"):
    """Forecasts of a run's model for a series: (header, rows) where each row is
    [row index of the forecast target, one value per target column, in the data's units].
    The forecast for row t + horizon reads the ``window`` rows ending at row t."""
    ckpt, config = load_run(run_dir, "forecast")
    values, names = data.read_series(data_path, fmt)
    missing = [n for n in config["input_columns"] if n not in names]
    if missing:
        raise DataError(f"{data_path} has no column {missing[0]!r} (the model reads columns "
                        f"{', '.join(config['input_columns'])})")
    inputs = values[:, [names.index(n) for n in config["input_columns"]]]
    model = ckpt.model
    if inputs.shape[1] != model.input_size:
        raise CheckpointError(f"{run_dir}: the model takes {model.input_size} inputs, "
                              f"{data_path} gives {inputs.shape[1]}")
    X = data.last_windows(data.standardise(inputs, config["input_mean"], config["input_std"]),
                          config["window"])
    out = np.concatenate([model.predict(X[i:i + 256].astype(model.dtype))[:, -1]
                          for i in range(0, len(X), 256)])
    out = data.unstandardise(out, config["target_mean"], config["target_std"])
    first = config["window"] - 1 + config["horizon"]
    header = ["row"] + list(config["target_columns"])
    rows = [[first + i] + list(r) for i, r in enumerate(out)]
    return header, rows


def _csv_text(header, rows):
    lines = [",".join(header)]
    lines += [",".join([str(r[0])] + [f"{v:.8g}" for v in r[1:]]) for r in rows]
    return "\n".join(lines) + "\n"


# -- argument parsing -------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _float(low, high=None, low_open=False, high_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if (not math.isfinite(value) or value < low or (low_open and value == low)
                or (high is not None and (value > high or (high_open and value == high)))):
            left = "(" if low_open else "["
            right = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
            span = f"{left}{low}, {right}"
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return value
    return parse


# Options a resumed run keeps (the value in the run wins; giving another one is an error).
FIXED_ON_RESUME = ("cell", "hidden", "layers", "dtype", "optimizer", "lr", "momentum", "clip",
                   "batch", "seed", "val", "window", "k1", "k2", "mode", "horizon", "columns",
                   "target", "format")
DEFAULTS = dict(cell="lstm", hidden=64, layers=1, dtype="float32", optimizer="adam",
                momentum=0.0, clip=1.0, epochs=10, batch=32, seed=0, val=0.1, horizon=1,
                mode="many-to-many", checkpoint_every=500, log_every=10, format="auto")
DEFAULT_LR = {"adam": 2e-3, "sgd": 0.05}
DEFAULT_WINDOW = {"char": 64, "forecast": 32}


def build_parser():
    p = _Parser(prog="cbptt", description="Exact, fast BPTT for recurrent networks on the CPU.",
                epilog="Run 'cbptt COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"cbptt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="train two small models and show what they learnt "
                                    "(under a minute)")
    d.add_argument("--quick", action="store_true", help="a reduced demo (a few seconds)")
    d.add_argument("--plot", default="cbptt-demo.png", metavar="PNG",
                   help="where to draw the loss curves (default %(default)s; needs matplotlib)")
    d.add_argument("--no-plot", action="store_true", help="draw no PNG")
    d.add_argument("--seed", type=_int(0), default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train a model on a text file or a CSV/.npy series",
                       description="Train on DATA: a text file gives a character model (windows, "
                       "or truncated BPTT with --k1/--k2); a .csv/.tsv/.npy series gives a "
                       "forecasting model. Writes a run folder (--out) with checkpoints, "
                       "config.json and metrics.csv; --resume RUN continues a run exactly.")
    t.add_argument("data", nargs="?", metavar="DATA", help="text file, or .csv/.tsv/.npy series "
                   "(optional with --resume: the run's own data file)")
    t.add_argument("--format", choices=["auto", "text", "csv", "npy"],
                   help="how to read DATA (default: by its extension; .csv .tsv .npy are "
                        "series, anything else text)")
    g = t.add_argument_group("run folder")
    g.add_argument("--out", metavar="RUN", help="run folder to create (default: a new one "
                   "under runs/)")
    g.add_argument("--resume", metavar="RUN", help="continue the run in RUN where its last "
                   "checkpoint left it; --epochs gives the new total")
    g.add_argument("--checkpoint-every", type=_int(0), metavar="N",
                   help="save a checkpoint every N steps (default 500; 0: at epoch ends only)")
    g.add_argument("--log-every", type=_int(1), metavar="N",
                   help="write the mean training loss to metrics.csv every N steps (default 10)")
    g.add_argument("--max-steps", type=_int(1), metavar="N",
                   help="stop (with a checkpoint) once the run has made N steps in all")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = t.add_argument_group("model")
    g.add_argument("--cell", choices=CELLS, help="default lstm")
    g.add_argument("--hidden", type=_int(1), help="hidden units per layer (default 64)")
    g.add_argument("--layers", type=_int(1), help="default 1")
    g.add_argument("--dtype", choices=DTYPES, help="default float32")
    g.add_argument("--seed", type=_int(0), help="initialisation and shuffling (default 0)")
    g = t.add_argument_group("training")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam")
    g.add_argument("--lr", type=_float(0, low_open=True),
                   help="learning rate (default 2e-3 for adam, 0.05 for sgd)")
    g.add_argument("--momentum", type=_float(0, 1), help="SGD momentum (default 0)")
    g.add_argument("--clip", type=_float(0), help="clip the gradient norm to this (default 1.0; "
                                                  "0: no clipping)")
    g.add_argument("--epochs", type=_int(1), help="total epochs (default 10)")
    g.add_argument("--batch", type=_int(1), help="windows per batch, or parallel streams with "
                                                 "--k1 (default 32)")
    g.add_argument("--val", type=_float(0, 1), help="fraction held out for validation, taken "
                   "from the end of the data (default 0.1; 0: none)")
    g.add_argument("--window", type=_int(1), help="steps per training window (default 64 for "
                   "text, 32 for series)")
    g = t.add_argument_group("text (character model)")
    g.add_argument("--k1", type=_int(1), help="truncated BPTT: update every k1 characters of "
                   "--batch parallel streams carrying their state")
    g.add_argument("--k2", type=_int(1), help="truncated BPTT: back-propagate k2 >= k1 steps "
                   "(default k1)")
    g = t.add_argument_group("series (forecasting)")
    g.add_argument("--mode", choices=["many-to-many", "many-to-one"],
                   help="a forecast at every step of a window, or at its last step only "
                        "(default many-to-many)")
    g.add_argument("--horizon", type=_int(1), help="forecast this many rows ahead (default 1)")
    g.add_argument("--columns", help="input columns, by name or index, comma-separated "
                   "(default all)")
    g.add_argument("--target", help="columns to forecast, by name or index (default the "
                   "input columns)")

    s = sub.add_parser("sample", help="generate text from a character model")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--prime", help="text to start from (default a newline)")
    s.add_argument("-n", type=_int(0), default=500, help="characters to generate (default 500)")
    s.add_argument("--temperature", type=_float(0), default=0.8,
                   help="softmax temperature (default 0.8; 0: always the likeliest)")
    s.add_argument("--seed", type=_int(0), help="seed of the sampling")

    r = sub.add_parser("predict", help="forecast a series with a forecasting model")
    r.add_argument("run", metavar="RUN")
    r.add_argument("data", metavar="DATA")
    r.add_argument("--format", choices=["auto", "csv", "npy"], default="auto")
    r.add_argument("--output", "-o", metavar="CSV", help="write here instead of stdout")

    pl = sub.add_parser("plot", help="loss curves (and gradient flow) of a run, as PNG")
    pl.add_argument("run", metavar="RUN")
    pl.add_argument("--output", "-o", metavar="PNG", help="default RUN/curves.png")

    b = sub.add_parser("bench", help="run the benchmark suite (python -m benchmarks) of a "
                                     "source checkout", add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    return p


def train_config(args):
    """The run configuration from parsed ``cbptt train`` options (defaults filled in)."""
    if args.data is None:
        raise UsageError("cbptt train: DATA is required (or --resume RUN)")
    fmt = data.detect_format(args.data, args.format or "auto")
    task = "char" if fmt == data.TEXT else "forecast"
    given = {k: getattr(args, k) for k in FIXED_ON_RESUME + ("epochs", "checkpoint_every",
                                                             "log_every")}
    c = {k: (v if v is not None else DEFAULTS.get(k)) for k, v in given.items()}
    c.update(task=task, data=os.path.abspath(args.data), format=fmt)
    if c["lr"] is None:
        c["lr"] = DEFAULT_LR[c["optimizer"]]
    if c["momentum"] and c["optimizer"] != "sgd":
        raise UsageError("cbptt train: --momentum is for --optimizer sgd")
    if task == "char":
        for name in ("mode", "horizon", "columns", "target"):
            if getattr(args, name) is not None:
                raise UsageError(f"cbptt train: --{name} is for time series (.csv/.npy), and "
                                 f"{args.data} is read as text")
        for name in ("mode", "horizon", "columns", "target"):
            c.pop(name)
        if c["k2"] is not None and c["k1"] is None:
            raise UsageError("cbptt train: --k2 needs --k1")
        if c["k1"] is not None:
            if args.window is not None:
                raise UsageError("cbptt train: --window is for window training; with --k1 the "
                                 "text is read as --batch streams")
            c["k2"] = c["k2"] or c["k1"]
            if c["k2"] < c["k1"]:
                raise UsageError(f"cbptt train: --k2 must be >= --k1 (got k1={c['k1']}, "
                                 f"k2={c['k2']})")
            c["window"] = None
        else:
            c["window"] = c["window"] or DEFAULT_WINDOW[task]
    else:
        if args.k1 is not None or args.k2 is not None:
            raise UsageError("cbptt train: --k1/--k2 are for text files; a series trains on "
                             "windows (--window)")
        c.pop("k1")
        c.pop("k2")
        c["window"] = c["window"] or DEFAULT_WINDOW[task]
    return c


def resume_config(args, stored):
    """The stored configuration of a run being resumed, with the options that may change."""
    c = dict(stored)
    for name in FIXED_ON_RESUME:
        value = getattr(args, name, None)
        if value is None or (name == "format" and value == "auto"):
            continue
        if name not in c:
            raise UsageError(f"cbptt train: --{name} does not apply to this run (a "
                             f"{'character' if c['task'] == 'char' else 'forecasting'} model)")
        if value != c[name]:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"cbptt train: {flag} {value} differs from the run's "
                             f"{c[name]}; a resumed run keeps its settings (only --epochs, "
                             f"--checkpoint-every, --log-every and --max-steps may change)")
    for name in ("epochs", "checkpoint_every", "log_every"):
        if getattr(args, name) is not None:
            c[name] = getattr(args, name)
    if args.data is not None:
        c["data"] = os.path.abspath(args.data)
    if not os.path.exists(c["data"]):
        raise UsageError(f"cbptt train: the run's data file {c['data']} is gone; pass it as "
                         f"DATA")
    digest = data.file_digest(c["data"])
    if digest != stored.get("data_sha256"):
        raise UsageError(f"cbptt train: {c['data']} is not the file the run was trained on "
                         f"(its content differs); a resumed run needs the same data")
    return c


def cmd_train(args):
    comm = mpi_world()
    if comm is None:
        return _train_command(args, _World())
    world = _World(comm)
    try:
        return _train_command(args, world)
    except (UsageError, DataError, CheckpointError):
        if world.root:          # raised on every rank; rank 0 alone says it
            raise
        return EXIT_USAGE
    except KeyboardInterrupt:   # a second Ctrl-C: the ranks may be anywhere, end them all
        if world.root:
            print("cbptt train: aborted; the run folder keeps its last checkpoint",
                  file=sys.stderr, flush=True)
        comm.Abort(EXIT_INTERRUPTED)
    except BaseException:       # noqa: BLE001 -- not a user's mistake: other ranks may wait; end them all
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    return 1


def _prepare_train(args, say):
    """The run to train: (config, run folder, Checkpoint or None, task), after checking the
    options and reading the data and the checkpoint; or None when the run is already done."""
    if args.resume is not None:
        if args.out is not None:
            raise UsageError("cbptt train: give --resume RUN or --out RUN, not both")
        ckpt = load_checkpoint(args.resume)
        if "config" not in ckpt.run or "progress" not in ckpt.run:
            raise CheckpointError(f"{ckpt.path}: not a checkpoint of cbptt train")
        config = resume_config(args, ckpt.run["config"])
        run_dir = os.path.dirname(ckpt.path) or "."
        progress = ckpt.run["progress"]
        if progress["epoch"] >= config["epochs"]:
            say(f"{run_dir}: already trained for {config['epochs']} epochs ({progress['step']} "
                f"steps); pass a larger --epochs to train on")
            return None
        say(f"resuming {run_dir} at epoch {progress['epoch'] + 1}/{config['epochs']}, step "
            f"{progress['step']}")
    else:
        config = train_config(args)
        ckpt = None
        run_dir = args.out
        if run_dir is not None:
            if os.path.exists(run_dir) and not os.path.isdir(run_dir):
                raise UsageError(f"cbptt train: --out {run_dir} is a file, not a folder")
            if has_checkpoint(run_dir) or os.path.exists(os.path.join(run_dir, "metrics.csv")):
                raise UsageError(f"cbptt train: {run_dir} already holds a run; continue it "
                                 f"with --resume {run_dir} or choose another --out")
    task = make_task(config)          # reads and checks the data before any folder is made
    check_shards(task, config, getattr(args, "processes", 1))
    if ckpt is None:
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)
        else:
            stem = os.path.splitext(os.path.basename(config["data"]))[0]
            run_dir = new_run_dir("runs", stem)
        config["data_sha256"] = data.file_digest(config["data"])
    return config, run_dir, ckpt, task


def _train_command(args, world):
    say = print if world.root else _quiet
    args.processes = world.size
    # rank 0 checks the options, reads the checkpoint and the data and makes the folder; the
    # others then read the same data (and checkpoint) into the configuration it completed
    prepared = world.on_root(_prepare_train, args, say)
    if world.size > 1:
        shared = None if prepared is None else (prepared[0], prepared[1],
                                                prepared[2] and prepared[2].path)
        shared = world.bcast(shared if world.root else None)
        if shared is None:
            return 0
        if world.root:
            config, run_dir, ckpt, task = prepared
        else:
            config, run_dir, path = shared
            ckpt = task = None

        def read():
            nonlocal ckpt, task
            if not world.root:
                task = make_task(config)
                ckpt = None if path is None else load_checkpoint(path)
        world.agree(read)
    elif prepared is None:
        return 0
    else:
        config, run_dir, ckpt, task = prepared
    m = config
    if world.size > 1:
        say(f"data-parallel over {world.size} processes (MPI)")
    params = RNN(task.input_size, m["hidden"], task.output_size, m["cell"], m["layers"],
                 m["dtype"]).num_parameters
    say(f"run folder: {run_dir}")
    say(f"data: {config['data']}: {task.describe()}")
    say(f"model: {m['cell']} x{m['layers']}, {m['hidden']} hidden, {params:,} parameters, "
        f"{m['dtype']}; {m['optimizer']} lr {m['lr']:g}, clip {m['clip']:g}, batch "
        f"{m['batch']}, {m['epochs']} epochs")
    try:
        result = train_run(config, run_dir, resume=ckpt, max_steps=args.max_steps,
                           progress=not args.no_progress, log=say, task=task, comm=world.comm)
    except FloatingPointError as exc:     # raised on every rank under DataParallel
        if world.root:
            print(f"cbptt train: training diverged: {exc}; {run_dir} keeps the last "
                  f"checkpoint", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if world.size > 1:
            raise
        print(f"cbptt train: aborted; {run_dir} keeps its last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.status == "interrupted":
        if world.root:
            print(f"cbptt train: interrupted at step {result.step}; checkpoint saved; continue "
                  f"with: cbptt train --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.status == "max_steps":
        say(f"stopped at step {result.step} (--max-steps); continue with: cbptt train "
            f"--resume {run_dir}")
        return 0
    next_cmd = (f"cbptt sample {run_dir}" if config["task"] == "char"
                else f"cbptt predict {run_dir} DATA")
    say(f"done: {result.step} steps; checkpoint {os.path.join(run_dir, 'checkpoint.npz')}; "
        f"next: {next_cmd}, cbptt plot {run_dir}")
    return 0


def cmd_predict(args):
    header, rows = predict_run(args.run, args.data, args.format)
    text = _csv_text(header, rows)
    if args.output:
        atomic_write_text(args.output, text)
        print(f"{len(rows)} forecasts written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def main(argv=None):
    """The ``cbptt`` command; returns its exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        if argv and argv[0] == "bench":      # everything after "bench" is the suite's
            return bench(argv[1:])
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "demo":
            demo(quick=args.quick, plot=None if args.no_plot else args.plot, seed=args.seed,
                 progress=not args.no_progress)
            return 0
        if args.command == "train":
            return cmd_train(args)
        if args.command == "sample":
            print(sample_run(args.run, args.prime, args.n, args.temperature, args.seed))
            return 0
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "plot":
            path = plot_run(args.run, args.output)
            print(f"wrote {path}")
            return 0
    except (UsageError, DataError, CheckpointError) as exc:
        message = str(exc)
        if not message.startswith("cbptt"):
            message = f"cbptt {getattr(args, 'command', '') or ''}: {message}".replace("  ", " ")
        print(message.replace("\n", " "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cbptt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:           # e.g. cbptt sample ... | head
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0
    return 0
