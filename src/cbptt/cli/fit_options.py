"""The ``cbptt train`` options that become ``fit``'s learning-rate schedule and early stopping:
their checks and defaults (``complete_fit_options``, for a new run's configuration) and the
objects (``make_schedule``, ``make_early_stopping``).

- ``--schedule cosine``: the rate anneals from --lr to 0 over the run's epochs, step by step
  (``schedules.Cosine``); ``step``: it is multiplied by --schedule-gamma (0.1) every
  --step-size epochs (a third of --epochs) (``schedules.StepLR``); ``plateau``: by
  --schedule-gamma when the validation loss has not improved for --schedule-patience (2)
  epochs (``schedules.ReduceOnPlateau``).
- ``--warmup EPOCHS``: the rate first rises linearly from a third of --lr to --lr over that
  many epochs, step by step (``schedules.Warmup``), then follows --schedule (the cosine anneals
  over the epochs after the warmup).
- ``--early-stopping PATIENCE``: the run stops when the validation loss has not improved for
  PATIENCE epochs (``callbacks.EarlyStopping``); the best epoch's weights are kept in
  RUN/best.npz (``callbacks.ModelCheckpoint``), which sample, predict and translate use.
"""
import os

from ..callbacks import EarlyStopping, ModelCheckpoint
from ..schedules import Cosine, ReduceOnPlateau, StepLR, Warmup
from .errors import UsageError

BEST = "best.npz"
SCHEDULES = ("cosine", "step", "plateau")
# the options of the schedules, each for the schedules listed
SCHEDULE_OPTIONS = {"schedule_gamma": ("step", "plateau"), "step_size": ("step",),
                    "schedule_patience": ("plateau",)}
DEFAULT_GAMMA, DEFAULT_PATIENCE = 0.1, 2


def complete_fit_options(c):
    """Check the schedule and early-stopping options of a new run's configuration c and fill
    in their defaults (UsageError for a mistake)."""
    kind = c.get("schedule")
    for name, kinds in SCHEDULE_OPTIONS.items():
        if c.get(name) is not None and kind not in kinds:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"cbptt train: {flag} is for --schedule {' or '.join(kinds)}")
    if kind in ("step", "plateau") and c.get("schedule_gamma") is None:
        c["schedule_gamma"] = DEFAULT_GAMMA
    if kind == "step" and c.get("step_size") is None:
        c["step_size"] = max(1, c["epochs"] // 3)
    if kind == "plateau" and c.get("schedule_patience") is None:
        c["schedule_patience"] = DEFAULT_PATIENCE
    watching = ["--schedule plateau"] if kind == "plateau" else []
    watching += ["--early-stopping"] if c.get("early_stopping") else []
    if watching and not c["val"] > 0:
        raise UsageError(f"cbptt train: {' and '.join(watching)} watch the validation loss: "
                         f"they need --val > 0")
    if kind == "cosine":
        if (c.get("warmup") or 0) >= c["epochs"]:
            raise UsageError(f"cbptt train: --warmup {c['warmup']:g} leaves no epoch of the "
                             f"{c['epochs']} for the cosine; use a shorter --warmup")
        c["schedule_epochs"] = c["epochs"]      # the cosine's span, kept on resume


def check_resumed_epochs(c, epochs):
    """UsageError when a resumed run's new --epochs would change its cosine's span."""
    if c.get("schedule") == "cosine" and epochs != c["schedule_epochs"]:
        raise UsageError(f"cbptt train: this run's cosine schedule anneals over the "
                         f"{c['schedule_epochs']} epochs it started with; --epochs {epochs} "
                         f"cannot change them (start a new run)")


def make_schedule(c):
    """The ``cbptt.schedules`` schedule of a run's configuration, or None."""
    kind, warmup = c.get("schedule"), c.get("warmup") or 0
    if kind == "cosine":
        return Cosine(total_epochs=c["schedule_epochs"], warmup_epochs=warmup, every="step")
    then = None
    if kind == "step":
        then = StepLR(c["step_size"], gamma=c["schedule_gamma"])
    elif kind == "plateau":
        then = ReduceOnPlateau("val_loss", factor=c["schedule_gamma"],
                               patience=c["schedule_patience"])
    if warmup:
        return Warmup(warmup, then=then, every="step")
    return then


def make_early_stopping(c, run_dir):
    """(EarlyStopping, ModelCheckpoint of the best weights into RUN/best.npz) of a run's
    configuration, or (None, None)."""
    if not c.get("early_stopping"):
        return None, None
    path = os.path.join(run_dir, BEST).replace("{", "{{").replace("}", "}}")   # no fields
    return (EarlyStopping("val_loss", patience=c["early_stopping"]),
            ModelCheckpoint(path, "val_loss", save_best_only=True))
