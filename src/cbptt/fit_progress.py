"""What training shows while it runs: a bar of steps (``StepBar``: ``tqdm.auto`` when tqdm is
installed, so a notebook gets its widget; otherwise one line rewritten in place; into a file or
a pipe, a plain line every few seconds) and, for ``fit``, a summary line at each epoch's end in
Keras' spirit (``EpochProgress``):

    epoch 3/30 - 1.2 s - loss 0.4121 - val_loss 0.4378 - val_accuracy 0.8600 - lr 0.001

``fit(progress=None)`` shows both only when someone watches (stderr is a terminal, or a
notebook's kernel runs); ``True`` always; ``"bar"`` the bar alone (a caller that writes its own
epoch lines: the ``cbptt train`` command); ``False`` nothing.
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


class StepBar:
    """A bar of ``total`` steps (the first ``initial`` done already) with the latest loss and
    steps/s, to ``stream`` (stderr): tqdm's where someone watches and tqdm is installed,
    otherwise one line rewritten in place; into a file or a pipe, a plain line every few
    seconds and at the last step. ``enabled=False`` shows nothing. ``write(text)`` prints a
    line to stdout without breaking the bar."""

    def __init__(self, total, desc="", enabled=True, initial=0, stream=None):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = sys.stderr if stream is None else stream
        self.count = self.start_count = initial
        self.loss = None
        self.start = time.perf_counter()
        self._width = 0
        self._bar = None
        self._live = enabled and interactive(self.stream)      # drawn in place
        tqdm = _tqdm() if self._live else None
        if tqdm is not None:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                             file=self.stream, dynamic_ncols=True, mininterval=0.25,
                             leave=False)
        self._interval = 0.1 if self._live else 5.0
        self._last = 0.0 if self._live else self.start      # a file: the first after 5 s

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
        if now - self._last >= self._interval or self.count == self.total:
            self._last = now
            self._draw()

    def rate(self):
        """Steps a second since the bar started."""
        elapsed = time.perf_counter() - self.start
        return (self.count - self.start_count) / elapsed if elapsed > 0 else 0.0

    def line(self):
        """The bar's text: ``DESC  step N/TOTAL  loss L  R steps/s``."""
        loss = "" if self.loss is None else f"  loss {self.loss:.4f}"
        total = f"/{self.total}" if self.total else ""
        return f"{self.desc}  step {self.count}{total}{loss}  {self.rate():.1f} steps/s"

    def _draw(self):
        text = self.line()
        if self._live:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self):
        """Take the bar off the screen (it comes back at the next update)."""
        if self._bar is not None:
            self._bar.clear()
        elif self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def write(self, text):
        """A line to stdout, the bar kept below it."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
            return
        self.clear()
        print(text, flush=True)
        if self._live and self.count:
            self._draw()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._width:
            self.clear()


class EpochProgress:
    """The bars and summary lines of a fit of ``epochs`` epochs of ``steps`` steps each;
    ``progress`` as ``fit`` takes it (see the module's docstring)."""

    def __init__(self, progress, epochs, steps):
        if not (progress is None or isinstance(progress, bool) or
                (isinstance(progress, str) and progress == "bar")):
            raise ValueError(f"progress must be None (when interactive), True, False or "
                             f"'bar', got {progress!r}")
        self.epochs, self.steps = epochs, steps
        watched = interactive()
        self.summary = watched if progress is None else progress is True
        self.bars = watched if progress is None else progress in (True, "bar")
        self._bar = None

    def epoch_begin(self, epoch, done=0):
        """Epoch ``epoch`` (from 0) starts, ``done`` of its steps made already (resumed)."""
        self._epoch = epoch
        self._started = time.perf_counter()
        self._bar = StepBar(self.steps, self._desc(), self.bars, initial=done)

    def _desc(self):
        return f"epoch {self._epoch + 1}/{self.epochs}"

    def step(self, loss):
        self._bar.update(1, loss)

    def epoch_end(self, logs):
        self.close()
        if not self.summary:
            return
        seconds = time.perf_counter() - self._started
        parts = [f"{self._desc()} - {seconds:.1f} s"]
        parts += [f"{name} {value:.4g}" if name == "lr" else f"{name} {value:.4f}"
                  for name, value in logs.items()]
        print(" - ".join(parts), flush=True)

    def say(self, text):
        """A line to stderr (even when quiet: a reply to the user's Ctrl-C)."""
        if self._bar is not None:
            self._bar.clear()
        print(text, file=sys.stderr, flush=True)

    def write(self, text):
        """A line to stdout, the bar kept below it."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
