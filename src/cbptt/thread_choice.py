"""An engine's adaptive choice between its team of threads and one thread.

A call that runs as a split (_core/split.pxd: one sub-engine per part, each on its block of
the batch rows) gives the same bits on any number of threads: the split and the order of its
sum are fixed by the thread count, not by how many threads run it. So an engine can run a
split's sub-engines on its whole team or in turn on one thread, whichever is faster here and
now, without changing a result. Alone on its cores the team is faster (about 2x at 2 threads);
beside another busy process its parts wait for a core the other holds, and one thread wins.

``ThreadChoice`` decides, before each call, how many threads run it:
- probing: a first call to warm the sub-engines up (not timed), then ``probes`` calls on each
  path, alternating; the path with the lower median call time is kept;
- settled: every call runs on the chosen path and is timed (two clock reads a call, nothing
  inside it); ``jump`` x the median of the chosen path's last ``window`` calls, twice in a
  row, starts a new probe (another process started), and so does a stay on one thread of
  ``recheck_first`` calls, doubling each time a probe keeps one thread, up to ``recheck``
  (the other process may be gone: a probe costs two calls on the team).
- start=ONE (an oversubscribed process, thread_policy.py): settled on one thread from the
  first call, until the first recheck.
Step times come from ``clock`` (``CLOCK``, time.perf_counter, when not given), or are given to
``record`` directly: the choice is deterministic for given times (tests use a fake clock).
"""
import statistics
import time
from collections import deque

TEAM, ONE = "team", "one thread"
CLOCK = time.perf_counter          # the clock of the choices engines make (tests: a fake)


class ThreadChoice:
    """The choice of one engine for one kind of call; ``summary()`` says what and why."""

    def __init__(self, clock=None, start=None, probes=2, jump=1.5, window=9,
                 recheck_first=32, recheck=1024):
        self.clock = CLOCK if clock is None else clock
        self.probes, self.jump, self.window = probes, jump, window
        self.recheck_first, self.recheck = recheck_first, recheck
        self.started = start is not None    # began on `start` without probing
        self.choice = start                 # TEAM or ONE once decided
        self.reason = ("probing: the first calls run on the team and on one thread"
                       if start is None else f"{start} until the first probe of the team")
        self.calls = 0
        self.path_calls = {TEAM: 0, ONE: 0}
        self.probings = 0                   # probes started (the first included)
        self.jumps = 0                      # probes started by a jump in the call time
        self.busy = 0                       # calls a busy team ran on fewer threads
        self._recent = deque(maxlen=window)
        self._high = 0                      # consecutive calls above jump x the median
        self._since_probe = 0
        self._recheck_after = recheck_first  # calls on one thread before probing the team
        self._schedule = [(start or TEAM, False)]   # (path, timed): the warm-up call first
        self._times = {TEAM: [], ONE: []}
        self._half = (0.0, False)           # an encoder's forward: (seconds, busy)
        if start is None:
            self._start_probe(TEAM)

    def _start_probe(self, first):
        other = ONE if first == TEAM else TEAM
        self._schedule += [(first if i % 2 == 0 else other, True)
                           for i in range(2 * self.probes)]
        self._times = {TEAM: [], ONE: []}
        self.probings += 1

    def threads(self, team):
        """How many threads run the next call, of a team of `team`."""
        path = self._schedule[0][0] if self._schedule else self.choice
        return team if path == TEAM else 1

    def record(self, planned, ran, seconds, first_half=False):
        """The call planned on `planned` threads ran on `ran` (fewer: the team was busy) and
        took `seconds`. first_half: an encoder's forward, whose time and threads count with
        the backward that follows it (the next record), as one call."""
        if first_half:
            self._half = (seconds, ran != planned)
            return
        seconds += self._half[0]
        busy, self._half = self._half[1] or ran != planned, (0.0, False)
        self.calls += 1
        if busy:
            self.busy += 1
            return
        path = TEAM if ran > 1 else ONE
        self.path_calls[path] += 1
        if self._schedule:
            _, timed = self._schedule.pop(0)
            if timed:
                self._times[path].append(seconds)
            if not self._schedule and self._times[TEAM] and self._times[ONE]:
                self._decide()
            return
        self._since_probe += 1
        if len(self._recent) >= 2 and seconds > self.jump * statistics.median(self._recent):
            self._high += 1
        else:
            self._high = 0
        self._recent.append(seconds)
        if self._high >= 2:
            self.jumps += 1
            self.reason = f"{self.choice}; call time jumped, probing again"
            self._start_probe(ONE if self.choice == TEAM else TEAM)
        elif self.choice == ONE and self._since_probe >= self._recheck_after:
            self._start_probe(TEAM)

    def _decide(self):
        team, one = (statistics.median(self._times[path]) for path in (TEAM, ONE))
        kept_one = self.choice == ONE and one < team
        self.choice = TEAM if team <= one else ONE
        self._recheck_after = (min(2 * self._recheck_after, self.recheck) if kept_one else
                               self.recheck_first)
        self.reason = (f"{self.choice}: {team * 1e3:.3g} ms a call on the team, "
                       f"{one * 1e3:.3g} ms on one thread (probe {self.probings})")
        self._recent = deque(self._times[self.choice], maxlen=self.window)
        self._high = 0
        self._since_probe = 0

    def summary(self):
        """What was chosen (None while probing), why, and the counters."""
        return {"choice": self.choice, "reason": self.reason, "calls": self.calls,
                "team_calls": self.path_calls[TEAM], "one_thread_calls": self.path_calls[ONE],
                "probings": self.probings, "jumps": self.jumps, "busy": self.busy}
