"""Ctrl-C during training: stop after the current step with a checkpoint, or at once."""
import signal
import threading


class Interrupt:
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
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
