"""The process's thread policy: how an engine call starts when ``cbptt.settings(threads=...)``
leaves the thread count open.

A call that qualifies for cbptt's team (_core/team.h) runs on BLAS's thread count. Where it
runs as a split (one sub-engine per part, _core/split.pxd), the split, and so every bit of the
result, is fixed by that count; how many threads run its sub-engines is each engine's choice
(thread_choice.py): alone on its cores the team, beside other busy processes one thread, since
a team whose parts wait for a core another process holds makes a step slower than one thread
would. A process that finds itself oversubscribed starts those calls on one thread (and
probes the team later):

- oversubscribed: the threads runnable on the machine when the first engine calls (the
  running field of /proc/loadavg, or procs_running of /proc/stat), this one included and the
  others scaled to the cores of this process's affinity mask, exceed those cores;
- MPI local ranks: an MPI launcher's count of ranks on this node (Open MPI, MPICH/Hydra,
  Intel MPI, MVAPICH, Slurm's srun) times BLAS's threads exceeds the cores.

A thread count the user gave wins: OPENBLAS_NUM_THREADS or OMP_NUM_THREADS in the environment
(read by OpenBLAS at start) and ``cbptt.settings(threads=N)``. Under an MPI launch,
DataParallel and ``cbptt train`` go further (``one_thread_per_rank``): BLAS at one thread per
rank, said once. The facts are read once (one small file; nothing without /proc).
``policy()`` says what was decided and why; ``describe()`` is what ``cbptt info`` prints.
"""
import os
import sys
from typing import Mapping, NamedTuple, Optional

from .thread_choice import ONE, ThreadChoice

# Launchers' counts of the ranks on this node, first found wins. Slurm's count is the step's
# (srun), read only inside a step: a batch script alone is no rank.
LOCAL_RANK_COUNTS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE",
                     "MV2_COMM_WORLD_LOCAL_SIZE", "PALS_LOCAL_SIZE")
SLURM_LOCAL_COUNTS = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE")
# Environment variables by which a user fixes BLAS's thread count (OpenBLAS reads them).
USER_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")

USER, ENVIRONMENT, OVERSUBSCRIBED, MPI, ADAPTIVE, DEFAULT = (
    "user setting", "environment", "oversubscribed", "MPI local ranks", "adaptive", "default")


class Facts(NamedTuple):
    """What the policy is decided from: the team's threads (BLAS's count), the cores of the
    affinity mask, the cores online, the threads runnable on the machine (None: unknown), the
    MPI ranks on this node (None: no launcher) and the user's thread variable (or None)."""
    blas_threads: int
    cores: int
    online: int
    runnable: Optional[int]
    local_ranks: Optional[int]
    user_variable: Optional[str]


class Policy(NamedTuple):
    """threads: 1 where calls start on one thread (None: on the team, each engine probing
    it against one thread); policy: one of the names above; reason: one line saying why."""
    threads: Optional[int]
    policy: str
    reason: str


def _leading_int(text) -> Optional[int]:
    """The integer text starts with ("2(x3),1" -> 2), or None."""
    digits = ""
    for char in str(text or "").strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def local_ranks(environ: Mapping[str, str]) -> Optional[int]:
    """The MPI ranks on this node as a launcher says them, or None."""
    for name in LOCAL_RANK_COUNTS:
        count = _leading_int(environ.get(name))
        if count:
            return count
    if "SLURM_LOCALID" in environ:          # a task of an srun step
        for name in SLURM_LOCAL_COUNTS:
            count = _leading_int(environ.get(name))
            if count:
                return count
    return None


def runnable_threads(proc: str = "/proc") -> Optional[int]:
    """Threads runnable on the machine now, this one included: /proc/loadavg's running field
    ("0.50 0.40 0.30 2/345 6789" -> 2), else /proc/stat's procs_running; None without them."""
    try:
        with open(os.path.join(proc, "loadavg")) as file:
            return int(file.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(os.path.join(proc, "stat")) as file:
            for line in file:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def affinity_cores() -> int:
    """Cores this process may run on (its affinity mask; all online where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def read_facts(environ: Mapping[str, str] = os.environ, proc: str = "/proc") -> Facts:
    """The facts of this process now (one read of /proc; environ is the process's)."""
    from ._threads import blas_threads

    user = next((f"{name}={environ[name]}" for name in USER_THREAD_VARIABLES
                 if environ.get(name, "").strip()), None)
    return Facts(blas_threads(), affinity_cores(), max(1, os.cpu_count() or 1),
                 runnable_threads(proc), local_ranks(environ), user)


def decide(facts: Facts) -> Policy:
    """The policy of a process with these facts (see the module's docstring)."""
    wanted, cores = facts.blas_threads, facts.cores
    if facts.user_variable is not None:
        return Policy(None, ENVIRONMENT, f"{facts.user_variable}, the user's: " + (
            "calls run on one thread" if wanted <= 1 else
            f"{wanted} threads; each engine keeps the faster of its team and one thread"))
    if wanted <= 1:
        return Policy(None, DEFAULT, "BLAS runs one thread: calls run on one")
    if facts.local_ranks is not None and facts.local_ranks * wanted > cores:
        return Policy(1, MPI, f"{facts.local_ranks} MPI ranks on this node x {wanted} "
                      f"threads > {cores} cores: calls start on one thread")
    if facts.runnable is not None:
        # this thread and the others' runnable threads, as many of them as fall on our cores
        here = 1 + max(0, facts.runnable - 1) * min(cores, facts.online) / facts.online
        if here > cores:
            return Policy(1, OVERSUBSCRIBED, f"{facts.runnable} threads runnable on "
                          f"{facts.online} cores, {cores} of them ours: calls start on one "
                          "thread")
    return Policy(None, ADAPTIVE, f"{wanted} BLAS threads on {cores} cores; each engine keeps "
                  "the faster of its team and one thread")


_decided: Optional[Policy] = None
_facts: Optional[Facts] = None       # what it was decided from


def policy() -> Policy:
    """The process's policy, decided at the first call (the first engine's call) and kept."""
    global _decided, _facts
    if _decided is None:
        _facts = read_facts()
        _decided = decide(_facts)
    return _decided


def new_choice() -> ThreadChoice:
    """A new engine's adaptive choice (thread_choice.py): on one thread from the start where
    the policy says one thread, else probing."""
    return ThreadChoice(start=ONE if policy().threads == 1 else None)


class EngineChoices:
    """An engine's adaptive choices of the threads that run its splits, one per kind of call
    (training or not, parts), and the last one used (None before any); the choices outlive a
    new plan (a with-block around each call must not restart their probes)."""

    def __init__(self):
        self.kinds, self.last, self._timing = {}, None, None
        self.settings, self.adaptive, self.split_threads, self.team = None, False, 0, False

    def planned(self, settings, adaptive, split_threads, team) -> None:
        """The engine's plan now: its settings and the plan's adaptive, split_threads, team."""
        self.settings, self.adaptive = settings, adaptive
        self.split_threads, self.team = split_threads, team

    def pick(self, training, parts) -> int:
        """The threads to run a split of `parts` sub-engines on (split_threads > 0 caps them;
        under an adaptive plan the kind's ThreadChoice picks the team or one thread, and the
        call is timed from here to ``ran``)."""
        threads = parts if self.split_threads <= 0 else min(self.split_threads, parts)
        self._timing = None
        if self.adaptive and threads > 1:
            choice = self.kinds.get((training, parts))
            if choice is None:
                choice = self.kinds[(training, parts)] = new_choice()
            self.last = choice
            threads = choice.threads(threads)
            self._timing = (choice, choice.clock())
        return threads

    def ran(self, planned, ran, first_half) -> None:
        """The split planned on `planned` threads ran on `ran`; first_half: an encoder's
        forward, whose time counts with its backward's (ThreadChoice.record)."""
        if self._timing is not None:
            choice, start = self._timing
            choice.record(planned, ran, choice.clock() - start, first_half)

    def summary(self, parts, counted, split) -> dict:
        """engine_summary of the engine, whose next call runs on `parts` (split: as a split;
        counted: BLAS's thread count known)."""
        alone = ("no control" if not counted else "not qualified" if not self.team else
                 "one BLAS thread")
        return engine_summary(self.settings, parts, alone, split, self.adaptive, self.last)


_ALONE = {"no control": "one thread: no BLAS thread control",
          "not qualified": "one thread: the call does not qualify for the team (batch, size, "
                           "settings)",
          "one BLAS thread": "one thread: BLAS's thread count is 1"}


def engine_summary(settings, parts, alone, split, adaptive, choice) -> dict:
    """Engine.thread_choice: how an engine's calls choose their threads under settings, with
    `parts` the next call's, `alone` why it runs on one (a key of _ALONE), `split` whether it
    runs as a split, `adaptive` the plan's, choice the last call's ThreadChoice (or None).
    Returns threads (what the next call runs on), policy (user setting, environment,
    oversubscribed, MPI local ranks, adaptive, default), reason; with the adaptive choice its
    choice (team, one thread, or None while probing) and counters (calls, team_calls,
    one_thread_calls, probings, jumps, busy)."""
    decided = policy()
    if settings.threads is not None:
        return {"threads": parts, "policy": USER,
                "reason": f"cbptt.settings(threads={settings.threads})"}
    if parts < 2:
        if alone == "one BLAS thread" and decided.policy == ENVIRONMENT:
            return {"threads": 1, "policy": ENVIRONMENT, "reason": decided.reason}
        return {"threads": 1, "policy": DEFAULT, "reason": _ALONE[alone]}
    if not split or not adaptive:
        return {"threads": parts, "policy": DEFAULT, "reason": (
            "the team: cbptt.settings(adaptive=False)" if split else
            "the team: its parts are in the result (each step's products split by columns, "
            "or settings(split=False))")}
    choice = choice if choice is not None else new_choice()
    summary = dict(choice.summary(), threads=choice.threads(parts), policy=ADAPTIVE)
    if choice.started:
        summary.update(policy=decided.policy, reason=f"{decided.reason}; then {choice.reason}")
    return summary


def reset(decided: Optional[Policy] = None) -> None:
    """Forget the decision (tests), or impose one."""
    global _decided, _facts
    _decided, _facts = decided, None


def describe(settings=None) -> dict:
    """The policy in force for this thread's calls, as ``cbptt info`` prints it: threads,
    policy, reason and the facts it was decided from."""
    from ._settings import current

    global _facts
    settings = current() if settings is None else settings
    decided = policy()
    if _facts is None:      # a policy set without reading them (reset): read them once
        _facts = read_facts()
    facts = _facts
    if settings.threads is not None:
        decided = Policy(settings.threads, USER, f"cbptt.settings(threads={settings.threads})")
    elif decided.threads is None and not settings.adaptive:
        decided = Policy(None, DEFAULT, "cbptt.settings(adaptive=False): calls on the team")
    return {"threads": facts.blas_threads if decided.threads is None else decided.threads,
            "policy": decided.policy, "reason": decided.reason,
            "blas_threads": facts.blas_threads, "cores": facts.cores,
            "runnable": facts.runnable, "mpi_local_ranks": facts.local_ranks}


# -- MPI ranks: one BLAS thread each ------------------------------------------------------------

_ranks_said = False


def one_thread_per_rank(ranks: int, say=None, environ: Mapping[str, str] = os.environ,
                        settings=None) -> Optional[str]:
    """Under an MPI launch of `ranks` processes (DataParallel, ``cbptt train``): BLAS at one
    thread in this process, and the policy at one thread, unless the user chose a count
    (cbptt.settings(threads=N), OPENBLAS_NUM_THREADS, OMP_NUM_THREADS) or the ranks on this
    node times BLAS's threads fit its cores. The first time in a process it returns the one
    line that says so (and gives it to say, on rank 0 only: pass say=None elsewhere); None
    after, or when nothing changed."""
    global _ranks_said
    from ._settings import current
    from ._threads import blas_threads, set_blas_threads

    settings = current() if settings is None else settings
    if ranks < 2 or settings.threads is not None or _ranks_said:
        return None
    if any(environ.get(name, "").strip() for name in USER_THREAD_VARIABLES):
        return None
    threads, cores = blas_threads(), affinity_cores()
    on_node = local_ranks(environ)
    if threads <= 1 or (on_node is not None and on_node * threads <= cores):
        return None
    if not set_blas_threads(1):
        return None
    reset(Policy(1, MPI, f"{ranks} MPI ranks: one BLAS thread each"))
    _ranks_said = True
    line = (f"cbptt: {ranks} MPI ranks: BLAS and cbptt's calls at one thread per rank (was "
            f"{threads}); set OPENBLAS_NUM_THREADS or cbptt.settings(threads=N) to choose")
    if say is not None:
        say(line)
    return line


def say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
