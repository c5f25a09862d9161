"""What ``fit`` shows while it runs: a bar of each epoch's steps (``tqdm.auto`` when tqdm is
installed, so a notebook gets its widget; otherwise one line rewritten in place) and a summary
line at each epoch's end, in Keras' spirit:

    epoch 3/30 - 1.2 s - loss 0.4121 - val_loss 0.4378 - val_accuracy 0.8600 - lr 0.001

``progress=None`` shows it only when someone watches (stderr is a terminal, or a notebook's
kernel runs); ``True`` always (the bar only where it can be drawn); ``False`` never.
"""
import sys
import time


def interactive(stream=None):
    """Whether output goes to a person: a terminal, or a Jupyter/IPython kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    return "ipykernel" in sys.modules


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class EpochProgress:
    """The bar and summary lines of a fit of ``epochs`` epochs of ``steps`` steps each."""

    def __init__(self, progress, epochs, steps):
        if progress not in (None, True, False):
            raise ValueError(f"progress must be None (when interactive), True or False, got "
                             f"{progress!r}")
        self.epochs, self.steps = epochs, steps
        self.enabled = interactive() if progress is None else progress
        self.draws = self.enabled and interactive()     # a bar where it can be drawn
        self._tqdm = _tqdm() if self.draws else None
        self._bar = None
        self._width = 0
        self._last = 0.0

    def epoch_begin(self, epoch):
        self._epoch = epoch
        self._started = time.perf_counter()
        self._count = 0
        if self._tqdm is not None:
            self._bar = self._tqdm(total=self.steps, desc=self._desc(), unit="step",
                                   leave=False, dynamic_ncols=True, mininterval=0.25)

    def _desc(self):
        return f"epoch {self._epoch + 1}/{self.epochs}"

    def step(self, loss):
        self._count += 1
        if not self.draws:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self._bar.update(1)
            return
        now = time.perf_counter()
        if now - self._last >= 0.1 or self._count == self.steps:
            self._last = now
            rate = self._count / max(now - self._started, 1e-9)
            self._draw(f"{self._desc()}  step {self._count}/{self.steps}  loss {loss:.4f}  "
                       f"{rate:.1f} steps/s")

    def _draw(self, text):
        sys.stderr.write("\r" + text.ljust(self._width))
        sys.stderr.flush()
        self._width = len(text)

    def _clear(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0

    def epoch_end(self, logs):
        self._clear()
        if not self.enabled:
            return
        seconds = time.perf_counter() - self._started
        parts = [f"{self._desc()} - {seconds:.1f} s"]
        parts += [f"{name} {value:.4g}" if name == "lr" else f"{name} {value:.4f}"
                  for name, value in logs.items()]
        print(" - ".join(parts), flush=True)

    def say(self, text):
        """A line to stderr (even when quiet: a reply to the user's Ctrl-C)."""
        self._clear()
        print(text, file=sys.stderr, flush=True)

    def close(self):
        self._clear()
