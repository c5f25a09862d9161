"""``train_run``: the training of a run folder, through ``trainer.fit`` (the library's one
loop over epochs): the run's model, optimiser and trainer (a ``DataParallel`` of it on the
ranks of an MPI launch), the data its task gives fit, its schedule and early stopping, and the
``RunFolder`` callback that writes the metrics and checkpoints; an exact resume, also in the
middle of an epoch, from the run's checkpoint."""
import json
import os

import numpy as np

from .. import memory
from ..bounded import plan_memory
from ..archive import atomic_write_text
from ..checkpoint import CONFIG, CheckpointError, make_optimizer, restore_optimizer, \
    restore_stream
from ..distributed import DataParallel
from ..evaluation import Validation
from ..seq2seq import Seq2Seq
from ..truncated import Truncated
from . import tasks
from .errors import UsageError
from .fit_options import make_early_stopping, make_schedule
from .run_folder import RunFolder, check_progress, fresh_progress
from .world import World


class RunResult:
    """What ``train_run`` did: ``status`` ("finished", "stopped_early", "interrupted",
    "max_steps", "nothing"), the step count, the model and the last validation metrics."""

    def __init__(self, status, step, model, val=None):
        self.status, self.step, self.model, self.val = status, step, model, val


def train_run(config, run_dir, resume=None, max_steps=None, progress=True, log=print,
              task=None, comm=None):
    """Train (or, with ``resume`` a loaded Checkpoint, continue) the run described by
    ``config`` in ``run_dir``. Returns a RunResult.

    config holds the data path and format, the task ("char", "forecast" or "seq2seq") and its
    options, the model (cell, hidden, layers, dtype, seed), the optimiser (optimizer, lr,
    momentum, clip), the learning-rate schedule and early stopping (``fit_options``) and the
    run (epochs, batch, val, log_every, checkpoint_every). A resumed run continues exactly as
    the uninterrupted one would have (same batches, optimiser moments, stream state, dropout
    masks, schedule). ``task``: the ``make_task(config)`` already made, if any (making it
    reads the data and completes config with the vocabulary, the columns and the
    standardisation). ``progress``: a progress bar.

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
    run = _Run(config, run_dir, task, world, resume)
    saved = run.saved
    if saved["epoch"] >= config["epochs"] or saved["stopped_early"]:
        return RunResult("nothing", saved["step"], run.model, saved["val"])
    if max_steps is not None and saved["step"] >= max_steps:
        return RunResult("max_steps", saved["step"], run.model, saved["val"])
    folder = RunFolder(run, saved, log if world.root else _quiet)
    history = run.fit(folder, max_steps, "bar" if progress and world.root else False)
    status = ("interrupted" if history.interrupted else
              "max_steps" if history.reached_max_steps else
              "stopped_early" if history.stopped_early else "finished")
    return RunResult(status, folder.position["step"], run.model, folder.val)


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
    if c.get("memory_limit") is not None:      # the bounded step's plan (bounded.py)
        halves = task.step_models(config, ranks)
        (_, batch, steps, many_to_one) = halves[0]
        model = task.make_model(config, np.dtype(c["dtype"]))
        try:
            if task.kind == "seq2seq":      # source and target steps share the limit
                plan = plan_memory(model, batch, (steps, halves[1][2]), c["memory_limit"],
                                   "seq2seq")
            else:
                plan = plan_memory(model, batch, steps, c["memory_limit"], "many-to-one"
                                   if many_to_one else "many-to-many", ids=task.kind == "char")
        except ValueError as exc:
            raise UsageError(f"cbptt train: --memory-limit{str(exc)[len('memory_limit'):]}") \
                from None
        step = plan.peak_bytes
    return {"parameters": params, "training": training, "step": step}


class _Run:
    """One run on the processes of ``world``: the model, optimiser, trainer, schedule and
    early stopping, made fresh or restored from the Checkpoint ``resume`` (``saved``: its
    progress); writes config.json (rank 0)."""

    def __init__(self, config, run_dir, task, world, resume=None):
        self.config, self.run_dir, self.task, self.world = config, run_dir, task, world
        self.dtype = np.dtype(config["dtype"])
        model = task.make_model(config, self.dtype)
        self.optimizer = make_optimizer(config["optimizer"], config["lr"], config["momentum"])
        self.trainer = task.make_trainer(model, self.optimizer, config["clip"] or None)
        self.model = task.trained_model(model, self.trainer)     # an RNN, or a Seq2Seq
        self.schedule = make_schedule(config)
        self.early_stopping, self.best_checkpoint = make_early_stopping(config, run_dir)
        self.best_path = None if self.best_checkpoint is None else self.best_checkpoint.path
        self.saved = fresh_progress() if resume is None else self._restore(resume)
        world.on_root(atomic_write_text, os.path.join(run_dir, CONFIG), _json(config))
        self.stepper = (self.trainer if world.size == 1
                        else DataParallel(self.trainer, world.comm))
        self.sharded_streams = world.size > 1 and isinstance(self.trainer, Truncated)

    def _restore(self, resume):
        """The weights, optimiser, stream, dropout masks' count, schedule and early stopping
        of a checkpoint; returns its progress."""
        saved, model = resume.model, self.model
        if model_config(saved) != model_config(model):
            raise CheckpointError(f"{resume.path}: the checkpoint's model {model_config(saved)} "
                                  f"does not fit this run's data and options "
                                  f"({model_config(model)})")
        progress = {**fresh_progress(), "format": 1, **resume.run["progress"]}
        check_progress(progress, resume.path)
        model.params[...] = saved.params
        restore_optimizer(self.optimizer, resume.optimizer, model.params)
        if isinstance(self.trainer, Truncated) and resume.stream:
            restore_stream(self.trainer, self.world.local_stream(resume.stream))
        self.trainer.dropout_calls = progress["dropout_calls"]      # the masks go on
        try:
            for part, state in ((self.schedule, progress["schedule"]),
                                (self.early_stopping, progress["early_stopping"]),
                                (self.best_checkpoint, progress["best_checkpoint"])):
                if part is not None and state is not None:
                    part.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{resume.path}: {exc}") from None
        return progress

    def fit(self, folder, max_steps, progress):
        """``fit`` from the saved position on, with ``folder`` keeping the run folder."""
        config, task, saved = self.config, self.task, self.saved
        arrays, named = task.fit_data()
        validation = None
        if config["val"] > 0:
            names = ("val_loss", task.metric)
            validation = Validation(lambda: dict(zip(names, task.evaluate(self.model))), names)
        callbacks = [c for c in (self.early_stopping, self.best_checkpoint) if c is not None]
        resumed_mid_epoch = saved["batch_index"] > 0
        return self.stepper.fit(
            *arrays, **named, epochs=config["epochs"], batch_size=task.fit_batch_size(),
            shuffle=not task.truncated, seed=config["seed"], validation=validation,
            callbacks=callbacks + [folder], schedule=self.schedule, progress=progress,
            initial_epoch=saved["epoch"], initial_batch=saved["batch_index"],
            initial_sums=((saved["loss_sum"], saved["size_sum"]) if resumed_mid_epoch
                          else None), max_steps=max_steps)


def model_config(model):
    """A model's configuration: an RNN's, or both halves' of a Seq2Seq."""
    return model.model.config() if isinstance(model, Seq2Seq) else model.config()


def _quiet(*args, **kwargs):
    pass


def _json(value):
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
