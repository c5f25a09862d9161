"""``RunFolder``: the callback by which ``fit`` keeps a run folder while it trains.

- metrics.csv: every ``log_every`` steps a row of the mean loss of those steps; at each
  epoch's end a row of the epoch's loss (fit's, the steps' losses weighted by their sizes),
  the validation loss and the task's metric; with a schedule, the learning rate (rank 0).
- flow.csv: the gradient flow of a few held-out sequences at each epoch's end (rank 0).
- a line an epoch on stdout (rank 0, through ``log``).
- checkpoint.npz: every ``checkpoint_every`` steps, at each epoch's end and where the fit
  stops mid-epoch (Ctrl-C, --max-steps); atomic, written by rank 0, the carried streams of
  every rank gathered first. Its "progress" holds fit's position (epoch, batch, loss sums),
  this callback's own sums and row counts, the dropout masks' call count and the states of
  the schedule, the early stopping and the best-weights checkpoint: everything a resumed run
  needs to go on as the uninterrupted one, bit for bit (``restore``).
"""
import time

from ..callbacks import Callback
from ..checkpoint import CheckpointError, MetricsLog, save_checkpoint

# the version of the "progress" entry of a checkpoint (1: before fit trained the command)
PROGRESS_FORMAT = 2


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


def fresh_progress():
    """The progress of a run that has not started."""
    return {"format": PROGRESS_FORMAT, "epoch": 0, "batch_index": 0, "step": 0,
            "loss_sum": 0.0, "size_sum": 0, "log_sum": 0.0, "log_count": 0, "seconds": 0.0,
            "metrics_rows": 0, "flow_rows": 0, "val": None, "dropout_calls": 0,
            "schedule": None, "early_stopping": None, "best_checkpoint": None,
            "stopped_early": False}


def check_progress(progress, path):
    """CheckpointError for a checkpoint that this version cannot resume exactly: one saved
    mid-epoch before fit trained the command (its batches were drawn another way)."""
    if progress.get("format", 1) < PROGRESS_FORMAT and progress.get("batch_index", 0):
        raise CheckpointError(f"{path}: saved in the middle of an epoch by an earlier cbptt, "
                              f"which drew its batches otherwise; resume it with that "
                              f"version, or start a new run")


class RunFolder(Callback):
    """Keeps ``run.run_dir`` (a ``cli.run._Run``: its config, task, world, model, trainer,
    schedule and early-stopping callbacks) while fit trains; ``progress`` is the run's saved
    progress (``fresh_progress()`` for a new run)."""

    def __init__(self, run, progress, log):
        super().__init__()
        self.run, self.log = run, log
        config, world = run.config, run.world
        self.metric = run.task.metric
        self.metrics = (MetricsLog(run.run_dir, self.metric, lr=run.schedule is not None)
                        if world.root else _NoMetrics())
        self.log_sum, self.log_count = progress["log_sum"], progress["log_count"]
        self.val = progress["val"]
        self.started = time.perf_counter() - progress["seconds"]
        self.every = config["checkpoint_every"]
        self.saved_at = None            # (epoch, batch) of the last checkpoint
        if progress["step"]:            # rows written after the checkpoint go
            world.on_root(self.metrics.truncate, progress["metrics_rows"],
                          progress["flow_rows"])

    @property
    def position(self):
        return self.params["position"]

    def seconds(self):
        return time.perf_counter() - self.started

    # -- fit's calls ----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        position = self.position
        self.saved_at = (position["epoch"], position["batch"])    # what the run holds

    def on_batch_end(self, batch, logs=None):
        position = self.position
        step = position["step"]
        self.log_sum += logs["loss"]
        self.log_count += 1
        if step % self.run.config["log_every"] == 0:
            self.run.world.on_root(self.metrics.write, step, position["epoch"] + 1,
                                   train_loss=self.log_sum / self.log_count,
                                   seconds=self.seconds(), lr=self._lr(logs))
            self.log_sum, self.log_count = 0.0, 0
        if self.every and step % self.every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.run.world.on_root(self._epoch_rows, epoch, logs)
        self.save()

    def on_train_end(self, logs=None):
        position = self.position
        if (position["epoch"], position["batch"]) != self.saved_at:    # stopped mid-epoch
            self.save()

    # -- rank 0 -------------------------------------------------------------------------
    def _lr(self, logs):
        return float(logs["lr"]) if self.run.schedule is not None else None

    def _epoch_rows(self, epoch, logs):
        """The epoch's rows of metrics.csv and flow.csv and its line."""
        run, step = self.run, self.position["step"]
        val_loss, val_metric = logs.get("val_loss"), logs.get(self.metric)
        if val_loss is not None:
            flow = run.task.gradient_flow(run.model)
            if flow is not None:
                self.metrics.write_flow(step, epoch + 1, flow)
            self.val = [val_loss, val_metric]
        seconds = self.seconds()
        self.metrics.write(step, epoch + 1, train_loss=logs["loss"], val_loss=val_loss,
                           val_metric=val_metric, seconds=seconds, lr=self._lr(logs))
        line = f"epoch {epoch + 1}/{run.config['epochs']}  train loss {logs['loss']:.4f}"
        if val_loss is not None:
            line += (f"  val loss {val_loss:.4f}  {self.metric[4:].replace('_', ' ')} "
                     f"{val_metric:.4f}")
        if run.schedule is not None:
            line += f"  lr {logs['lr']:.4g}"
        self.log(f"{line}  ({step} steps, {seconds:.1f} s)")
        stopper = run.early_stopping
        if stopper is not None and stopper.stop_training:
            self.log(f"early stopping: the val loss has not improved for {stopper.patience} "
                     f"epochs; the best, {stopper.best:.4f} after epoch "
                     f"{stopper.best_epoch + 1}, is in {run.best_path}")

    # -- checkpoints ------------------------------------------------------------------------
    def progress(self):
        """What the checkpoint stores as "progress" (see the module's docstring)."""
        run, position = self.run, self.position
        rows, flow_rows = self.metrics.rows()
        stopper, best = run.early_stopping, run.best_checkpoint
        return {"format": PROGRESS_FORMAT, "epoch": position["epoch"],
                "batch_index": position["batch"], "step": position["step"],
                "loss_sum": position["loss_sum"], "size_sum": position["size_sum"],
                "log_sum": self.log_sum, "log_count": self.log_count,
                "seconds": self.seconds(), "metrics_rows": rows, "flow_rows": flow_rows,
                "val": self.val, "dropout_calls": run.trainer.dropout_calls,
                "schedule": None if run.schedule is None else run.schedule.state_dict(),
                "early_stopping": None if stopper is None else stopper.state_dict(),
                "best_checkpoint": None if best is None else best.state_dict(),
                "stopped_early": bool(stopper is not None and stopper.stop_training)}

    def save(self):
        """A checkpoint of the run as it stands (collective; rank 0 writes it)."""
        run = self.run
        stream = run.world.gather_stream(run.trainer) if run.sharded_streams else None

        def write():
            save_checkpoint(run.run_dir, run.model, run.optimizer,
                            {"config": run.config, "progress": self.progress()}, run.trainer,
                            stream=stream)
        run.world.on_root(write)
        self.saved_at = (self.position["epoch"], self.position["batch"])
