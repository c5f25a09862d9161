"""Learning-rate schedules for ``fit``: the optimiser's ``lr`` follows them.

A schedule gives the learning rate at a position counted in epochs: ``e`` for the whole of
epoch e (``every="epoch"``, the default), or ``e + j / n`` before the j-th of the epoch's n
steps (``every="step"``: the same curve, followed step by step; the outermost schedule's
``every`` rules a composition). Position 0 is at the optimiser's ``lr`` as it is when the first
fit starts (``base_lr``). Where torch.optim.lr_scheduler has the twin the arguments are
torch's, and so are the rates at whole epochs (torch's scheduler stepped once an epoch):

==============================================  ===============================================
cbptt                                           torch.optim.lr_scheduler
==============================================  ===============================================
``StepLR(step_size, gamma)``                    ``StepLR(step_size, gamma)``
``ExponentialLR(gamma)``                        ``ExponentialLR(gamma)``
``Cosine(total_epochs, min_lr)``                ``CosineAnnealingLR(T_max, eta_min)``
``Cosine(restart_epochs=T0, restart_mult=m)``   ``CosineAnnealingWarmRestarts(T_0, T_mult)``
``Warmup(w, then=S, start_factor=f)``           ``SequentialLR([LinearLR(f, total_iters=w), S],
                                                milestones=[w])``
``ReduceOnPlateau(monitor, factor, patience)``  ``ReduceLROnPlateau(mode, factor, patience)``
==============================================  ===============================================

A schedule's state is ``state_dict()`` (plain numbers, JSON-serialisable) and comes back with
``load_state_dict``, so a resumed fit follows the same rates (``callbacks.ModelCheckpoint``
keeps it with ``training_state=True``).
"""
import math
import numbers

__all__ = ["Schedule", "StepLR", "ExponentialLR", "Cosine", "Warmup", "ReduceOnPlateau"]

EVERY = ("epoch", "step")


def _number(value, name, low=0.0, low_open=False, high=None, high_open=False):
    """A finite real number in the given range, as float; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (value < low or (low_open and value == low) or
            (high is not None and (value > high or (high_open and value == high)))):
        interval = (("(" if low_open else "[") + f"{low:g}, " +
                    ("inf)" if high is None else f"{high:g}" + (")" if high_open else "]")))
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Schedule:
    """Base class: ``lr_at(position)``, the learning rate at a position in epochs (a float).

    Subclasses give ``_lr(t, base_lr)``; a schedule that reads a logged value at each epoch's
    end (ReduceOnPlateau) names it in ``monitors()`` and takes it in ``epoch_end``."""

    def __init__(self, every="epoch"):
        if every not in EVERY:
            raise ValueError(f"every must be 'epoch' or 'step', got {every!r}")
        self.every = every
        self.base_lr = None
        self._optimizer = None

    def start(self, optimizer):
        """Bind to ``optimizer`` at a fit's start: the base rate is its ``lr`` unless this
        schedule has one already (an earlier fit, or ``load_state_dict``). ValueError for a
        schedule that drives another optimiser already: one schedule per trainer."""
        if self._optimizer is not None and self._optimizer is not optimizer:
            raise ValueError(f"schedule: this {type(self).__name__} already drives another "
                             f"optimiser; make one schedule per trainer")
        if self.base_lr is None:
            self.base_lr = float(optimizer.lr)
        self._optimizer = optimizer
        self._started(self.base_lr)

    def _started(self, base_lr):
        pass

    def lr_at(self, position):
        """The learning rate at ``position`` epochs (>= 0) from the start."""
        if self.base_lr is None:
            raise ValueError(f"{type(self).__name__}: no base learning rate yet (start() "
                             f"binds it to an optimiser)")
        return self._lr(float(position), self.base_lr)

    def _lr(self, t, base_lr):
        raise NotImplementedError

    def monitors(self):
        """The logged values this schedule reads at each epoch's end."""
        return ()

    def epoch_end(self, epoch, logs):
        """Called after each epoch (0-based) with its logs."""

    def state_dict(self):
        """The schedule's state: plain numbers (and nested dicts), JSON-serialisable."""
        return {"kind": type(self).__name__, "base_lr": self.base_lr}

    def load_state_dict(self, state):
        """Restore ``state_dict()`` output of a schedule of the same kind."""
        if not isinstance(state, dict) or state.get("kind") != type(self).__name__:
            kind = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"schedule state: expected the state of a "
                             f"{type(self).__name__}, got {kind!r}")
        base = state.get("base_lr")
        self.base_lr = None if base is None else float(base)

    def __repr__(self):
        return f"cbptt.schedules.{type(self).__name__}(every={self.every!r})"


class StepLR(Schedule):
    """lr = base_lr * gamma ** floor(t / step_size), as torch's StepLR."""

    def __init__(self, step_size, gamma=0.1, every="epoch"):
        super().__init__(every)
        self.step_size = _number(step_size, "step_size", low_open=True)
        self.gamma = _number(gamma, "gamma", low_open=True)

    def _lr(self, t, base_lr):
        return base_lr * self.gamma ** math.floor(t / self.step_size)


class ExponentialLR(Schedule):
    """lr = base_lr * gamma ** t, as torch's ExponentialLR."""

    def __init__(self, gamma, every="epoch"):
        super().__init__(every)
        self.gamma = _number(gamma, "gamma", low_open=True)

    def _lr(self, t, base_lr):
        return base_lr * self.gamma ** t


def _linear_warmup(t, epochs, start_factor, base_lr):
    """torch's LinearLR to 1: base_lr * (f + (1 - f) * t / epochs) for t < epochs."""
    return base_lr * (start_factor + (1.0 - start_factor) * t / epochs)


class Cosine(Schedule):
    """Cosine annealing from base_lr down to ``min_lr``.

    ``Cosine(total_epochs)``: once, over total_epochs, then ``min_lr`` (torch's
    CosineAnnealingLR: min_lr + (base_lr - min_lr) (1 + cos(pi t / total_epochs)) / 2; torch's
    rises again after T_max, this one stays at min_lr). ``Cosine(restart_epochs=T0,
    restart_mult=m)``: warm restarts, the first period T0 epochs, each next m times longer
    (torch's CosineAnnealingWarmRestarts). ``warmup_epochs`` w > 0 first raises the rate
    linearly from ``start_factor * base_lr`` (``Warmup``), and the cosine starts after it:
    ``Cosine(total_epochs=30, warmup_epochs=2)`` anneals over epochs 2 to 30."""

    def __init__(self, total_epochs=None, min_lr=0.0, warmup_epochs=0, restart_epochs=None,
                 restart_mult=1, start_factor=1 / 3, every="epoch"):
        super().__init__(every)
        if (total_epochs is None) == (restart_epochs is None):
            raise ValueError("Cosine takes total_epochs (one annealing) or restart_epochs "
                             "(warm restarts), one of the two")
        self.min_lr = _number(min_lr, "min_lr")
        self.warmup_epochs = _number(warmup_epochs, "warmup_epochs")
        self.start_factor = _number(start_factor, "start_factor", low_open=True, high=1.0)
        self.total_epochs = self.restart_epochs = None
        if total_epochs is not None:
            self.total_epochs = _number(total_epochs, "total_epochs", low_open=True)
            if self.total_epochs <= self.warmup_epochs:
                raise ValueError(f"total_epochs ({total_epochs}) must be more than "
                                 f"warmup_epochs ({warmup_epochs})")
        else:
            self.restart_epochs = _number(restart_epochs, "restart_epochs", low_open=True)
        self.restart_mult = _count(restart_mult, "restart_mult", 1)

    def _lr(self, t, base_lr):
        if t < self.warmup_epochs:
            return _linear_warmup(t, self.warmup_epochs, self.start_factor, base_lr)
        t -= self.warmup_epochs
        if self.total_epochs is not None:
            period = self.total_epochs - self.warmup_epochs
            if t >= period:
                return self.min_lr
        else:       # torch's CosineAnnealingWarmRestarts.step(epoch), closed form
            period, mult = self.restart_epochs, self.restart_mult
            if t >= period:
                if mult == 1:
                    t = t % period
                else:
                    n = int(math.log(t / period * (mult - 1) + 1, mult))
                    t -= period * (mult ** n - 1) / (mult - 1)
                    period *= mult ** n
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * t / period)) / 2


class Warmup(Schedule):
    """A linear warmup from ``start_factor * base_lr`` up to base_lr over ``warmup_epochs``
    (torch's LinearLR), then the schedule ``then`` from its own position 0 (or base_lr held,
    without one): torch's SequentialLR of the two with the milestone at warmup_epochs.
    ``every`` defaults to ``then``'s."""

    def __init__(self, warmup_epochs, then=None, start_factor=1 / 3, every=None):
        if then is not None and not isinstance(then, Schedule):
            raise TypeError(f"then must be a cbptt schedule or None, got "
                            f"{type(then).__name__}")
        super().__init__(every or (then.every if then is not None else "epoch"))
        self.warmup_epochs = _number(warmup_epochs, "warmup_epochs", low_open=True)
        self.start_factor = _number(start_factor, "start_factor", low_open=True, high=1.0)
        self.then = then

    def _started(self, base_lr):
        if self.then is not None:
            self.then.base_lr = base_lr
            self.then._started(base_lr)

    def _lr(self, t, base_lr):
        if t < self.warmup_epochs:
            return _linear_warmup(t, self.warmup_epochs, self.start_factor, base_lr)
        return base_lr if self.then is None else self.then._lr(t - self.warmup_epochs, base_lr)

    def monitors(self):
        return () if self.then is None else self.then.monitors()

    def epoch_end(self, epoch, logs):
        # ``then`` sees the epochs that ran at its rates, counted from its own start
        first = math.ceil(self.warmup_epochs)
        if self.then is not None and epoch >= first:
            self.then.epoch_end(epoch - first, logs)

    def state_dict(self):
        state = super().state_dict()
        state["then"] = None if self.then is None else self.then.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.then is not None:
            self.then.load_state_dict(state.get("then"))


class ReduceOnPlateau(Schedule):
    """Divide the rate by 1/``factor`` when ``monitor`` stopped improving for ``patience``
    epochs, as torch's ReduceLROnPlateau (its arguments: ``threshold`` in ``threshold_mode``
    "rel" or "abs", ``cooldown``, ``min_lr``, ``eps``). ``mode`` "min", "max" or "auto" (max
    for an accuracy, else min). The rate changes at an epoch's end, for the next epoch."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto",
                 threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        super().__init__("epoch")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a logged name such as 'val_loss', got "
                            f"{type(monitor).__name__}")
        self.monitor = monitor
        self.factor = _number(factor, "factor", low_open=True, high=1.0, high_open=True)
        self.patience = _count(patience, "patience", 0)
        self.mode = resolve_mode(mode, monitor)
        self.threshold = _number(threshold, "threshold")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.threshold_mode = threshold_mode
        self.cooldown = _count(cooldown, "cooldown", 0)
        self.min_lr = _number(min_lr, "min_lr")
        self.eps = _number(eps, "eps")
        self.lr = None
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def _started(self, base_lr):
        if self.lr is None:
            self.lr = base_lr

    def _lr(self, t, base_lr):
        return base_lr if self.lr is None else self.lr

    def monitors(self):
        return (self.monitor,)

    def _is_better(self, value):
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if rel else
                            self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if rel else self.best + self.threshold)

    def epoch_end(self, epoch, logs):
        value = float(logs[self.monitor])
        if self._is_better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def state_dict(self):
        state = super().state_dict()
        state.update(lr=self.lr, best=self.best, num_bad_epochs=self.num_bad_epochs,
                     cooldown_counter=self.cooldown_counter)
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.lr = None if state.get("lr") is None else float(state["lr"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])

    def __repr__(self):
        return (f"cbptt.schedules.ReduceOnPlateau(monitor={self.monitor!r}, "
                f"factor={self.factor}, patience={self.patience}, mode={self.mode!r})")


def resolve_mode(mode, monitor):
    """"min" or "max" for a monitored value: "auto" is max for an accuracy, else min."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if monitor.endswith("accuracy") else "min"
    return mode
