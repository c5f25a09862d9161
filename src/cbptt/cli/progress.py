"""Progress bars of training: tqdm's on a terminal when it is installed (the ``cli`` extra),
otherwise a line rewritten in place, or a plain line every few seconds into a file or pipe."""
import sys
import time


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """A progress bar of steps with the latest loss and steps/s on a terminal: tqdm's when it
    is installed, otherwise one line rewritten in place. When stderr is a file or a pipe, a
    plain line every few seconds and at the end. ``enabled=False`` shows nothing.
    ``write(text)`` prints a line to stdout without breaking the bar."""

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
