"""``train_run``: the training loop of a run folder, the library's one loop over epochs with
validation, metrics, checkpoints every few steps and at every epoch's end, and an exact
resume (same batches, optimiser moments, stream state and RNG state)."""
import json
import os
import sys
import time

import numpy as np

from .. import memory
from ..archive import atomic_write_text
from ..checkpoint import (CONFIG, CheckpointError, MetricsLog, make_optimizer,
                          restore_optimizer, restore_stream, save_checkpoint)
from ..distributed import DataParallel
from ..seq2seq import Seq2Seq
from ..truncated import Truncated
from . import tasks
from .interrupt import Interrupt
from .progress import Progress
from .world import World


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
    status and step on every rank.

    A model, trainer or step too large for the memory available raises
    ``cbptt.memory.InsufficientMemory`` before it is allocated."""
    world = World(comm)
    if task is None:
        task = tasks.make_task(config)
    tasks.check_shards(task, config, world.size)
    run = _Run(config, run_dir, task, world, log if world.root else _quiet, resume)
    state = run.state
    if state["epoch"] >= config["epochs"]:
        return RunResult("nothing", state["step"], run.model, state.get("val"))
    if max_steps is not None and state["step"] >= max_steps:
        return RunResult("max_steps", state["step"], run.model, state.get("val"))
    status = "finished"
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if world.root else _quiet
    with Interrupt(say) as interrupt:
        while state["epoch"] < config["epochs"]:
            status = run.train_epoch(interrupt, max_steps, progress and world.root)
            if status != "finished":
                break
            run.end_epoch()
            if world.any(interrupt.requested):
                status = "interrupted"
                break
    return RunResult(status, state["step"], run.model, state.get("val"))


def run_memory(config, task, ranks=1):
    """The bytes ``train_run`` allocates for a run on each of ``ranks`` processes, by part:
    "parameters"; "training": the gradients, the optimiser's state, the gradient-flow
    trainer's gradients and, with several ranks, the float64 reduction buffer; "step": the
    workspace of the largest step (``cbptt.memory.step_elements``). The data are not
    counted: the task holds them already."""
    c = config
    params = sum(memory.parameter_bytes(*shape, c["dtype"])
                 for shape in task.model_shapes(config))
    itemsize = np.dtype(c["dtype"]).itemsize
    copies = 1 + make_optimizer(c["optimizer"], c["lr"], c["momentum"]).parameter_copies
    training = (copies + (c["val"] > 0)) * params
    if ranks > 1:
        training += params // itemsize * 8
    step = itemsize * sum(memory.step_elements(*shape, batch, steps, many_to_one=many_to_one)
                          for shape, batch, steps, many_to_one in task.step_models(config,
                                                                                   ranks))
    return {"parameters": params, "training": training, "step": step}


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


def _fresh_state(seed):
    """The progress of a run that has not started: what a checkpoint stores as "progress"."""
    return {"epoch": 0, "batch_index": 0, "step": 0,
            "epoch_rng": np.random.default_rng(seed).bit_generator.state,
            "log_sum": 0.0, "log_count": 0, "epoch_sum": 0.0, "epoch_count": 0,
            "seconds": 0.0, "metrics_rows": 0, "flow_rows": 0, "val": None}


class _Run:
    """One run on the processes of ``world``: the model, optimiser, trainer and metrics log,
    and ``state``, the progress a checkpoint stores. Made fresh, or restored from the
    Checkpoint ``resume``; writes config.json (rank 0)."""

    def __init__(self, config, run_dir, task, world, log, resume=None):
        self.config, self.run_dir, self.task, self.world, self.log = (config, run_dir, task,
                                                                      world, log)
        self.dtype = np.dtype(config["dtype"])
        model = task.make_model(config, self.dtype)
        self.optimizer = make_optimizer(config["optimizer"], config["lr"], config["momentum"])
        self.trainer = task.make_trainer(model, self.optimizer, config["clip"] or None)
        self.model = task.trained_model(model, self.trainer)     # an RNN, or a Seq2Seq
        self.metrics = MetricsLog(run_dir, task.metric) if world.root else _NoMetrics()
        self.state = _fresh_state(config["seed"]) if resume is None else self._restore(resume)
        world.on_root(atomic_write_text, os.path.join(run_dir, CONFIG), _json(config))
        self.stepper = (self.trainer if world.size == 1
                        else DataParallel(self.trainer, world.comm))
        self.sharded_streams = world.size > 1 and isinstance(self.trainer, Truncated)
        self.started = time.perf_counter() - self.state["seconds"]
        self._rng = None

    def _restore(self, resume):
        """The weights, optimiser and stream of a checkpoint; returns its progress."""
        saved, model = resume.model, self.model
        if model_config(saved) != model_config(model):
            raise CheckpointError(f"{resume.path}: the checkpoint's model {model_config(saved)} "
                                  f"does not fit this run's data and options "
                                  f"({model_config(model)})")
        model.params[...] = saved.params
        restore_optimizer(self.optimizer, resume.optimizer, model.params)
        if isinstance(self.trainer, Truncated) and resume.stream:
            restore_stream(self.trainer, self.world.local_stream(resume.stream))
        state = dict(resume.run["progress"])
        self.trainer.dropout_calls = state.get("dropout_calls", 0)   # the masks go on
        self.world.on_root(self.metrics.truncate, state["metrics_rows"], state["flow_rows"])
        return state

    # -- checkpoints ------------------------------------------------------------------------
    def save(self):
        """A checkpoint of the run as it stands (collective; rank 0 writes it)."""
        stream = self.world.gather_stream(self.trainer) if self.sharded_streams else None

        def write():
            state = self.state
            state["metrics_rows"], state["flow_rows"] = self.metrics.rows()
            state["dropout_calls"] = self.trainer.dropout_calls
            save_checkpoint(self.run_dir, self.model, self.optimizer,
                            {"config": self.config, "progress": state}, self.trainer,
                            stream=stream)
        self.world.on_root(write)

    # -- an epoch ---------------------------------------------------------------------------
    def _rows_of(self, which):
        """This rank's sequences of a batch (None: all of them)."""
        if self.world.size == 1:
            return None
        return self.world.shard(self.config["batch"] if isinstance(which, slice)
                                else len(which))

    def train_epoch(self, interrupt, max_steps, show_progress):
        """The rest of the current epoch's batches: "finished", or "interrupted" (Ctrl-C) or
        "max_steps" after a checkpoint."""
        state, config = self.state, self.config
        self._rng = _rng_from_state(state["epoch_rng"])
        batches = self.task.epoch_batches(self._rng)
        if state["batch_index"] == 0:
            self.task.start_epoch(self.trainer)
        bar = Progress(len(batches), f"epoch {state['epoch'] + 1}/{config['epochs']}",
                       show_progress, initial=state["batch_index"])
        try:
            for index in range(state["batch_index"], len(batches)):
                which = batches[index]
                batch = self.task.batch(which, self.dtype, rows=self._rows_of(which))
                loss = float(self.stepper.step(*batch))
                self._record_step(index, loss)
                bar.update(1, loss)
                requested = self.world.any(interrupt.requested)    # Ctrl-C on any rank
                stop = requested or (max_steps is not None and state["step"] >= max_steps)
                every = config["checkpoint_every"]
                if stop or (every and state["step"] % every == 0):
                    self.save()
                if stop:
                    return "interrupted" if requested else "max_steps"
        finally:
            bar.close()
        return "finished"

    def _record_step(self, index, loss):
        """Count a step of batch ``index`` and its loss; log the mean loss every log_every."""
        state = self.state
        state["step"] += 1
        state["batch_index"] = index + 1
        state["log_sum"] += loss
        state["log_count"] += 1
        state["epoch_sum"] += loss
        state["epoch_count"] += 1
        state["seconds"] = time.perf_counter() - self.started
        if state["step"] % self.config["log_every"] == 0:
            self.world.on_root(self.metrics.write, state["step"], state["epoch"] + 1,
                               train_loss=state["log_sum"] / state["log_count"],
                               seconds=state["seconds"])
            state["log_sum"], state["log_count"] = 0.0, 0

    def end_epoch(self):
        """The epoch's end: validation and gradient flow (rank 0), the next epoch's state, a
        checkpoint."""
        self.world.on_root(self._validate)
        self.state.update(epoch=self.state["epoch"] + 1, batch_index=0, epoch_sum=0.0,
                          epoch_count=0, epoch_rng=self._rng.bit_generator.state)
        self.save()

    def _validate(self):
        state, task, epochs = self.state, self.task, self.config["epochs"]
        train_loss = state["epoch_sum"] / max(state["epoch_count"], 1)
        val_loss = val_metric = None
        if self.config["val"] > 0:
            val_loss, val_metric = task.evaluate(self.model)
            flow = task.gradient_flow(self.model)
            if flow is not None:
                self.metrics.write_flow(state["step"], state["epoch"] + 1, flow)
        state["seconds"] = time.perf_counter() - self.started
        self.metrics.write(state["step"], state["epoch"] + 1, train_loss=train_loss,
                           val_loss=val_loss, val_metric=val_metric, seconds=state["seconds"])
        line = f"epoch {state['epoch'] + 1}/{epochs}  train loss {train_loss:.4f}"
        if val_loss is not None:
            line += (f"  val loss {val_loss:.4f}  {task.metric[4:].replace('_', ' ')} "
                     f"{val_metric:.4f}")
            state["val"] = [val_loss, val_metric]
        self.log(f"{line}  ({state['step']} steps, {state['seconds']:.1f} s)")


def model_config(model):
    """A model's configuration: an RNN's, or both halves' of a Seq2Seq."""
    return model.model.config() if isinstance(model, Seq2Seq) else model.config()


def _rng_from_state(state):
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def _quiet(*args, **kwargs):
    pass


def _json(value):
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
