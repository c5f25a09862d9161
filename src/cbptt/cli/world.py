"""The processes of one run: one, or the ranks started by an MPI launcher (mpiexec, srun),
of which rank 0 alone prints and writes files. mpi4py is imported only when a launcher says
there are several."""
import contextlib
import os

from ..checkpoint import CheckpointError
from ..data import DataError
from ..distributed import shard
from ..memory import InsufficientMemory
from ..truncated import join_streams, stream_rows
from . import errors
from .errors import MissingExtra, UsageError

# Errors that keep their class when passed to the other ranks (so that every rank exits with
# the same code), when they are of these modules' classes (not a subclass from elsewhere).
_PORTABLE = (UsageError, DataError, CheckpointError, InsufficientMemory, FloatingPointError)
_PORTABLE_MODULES = (errors.__name__, DataError.__module__, CheckpointError.__module__,
                     InsufficientMemory.__module__, "builtins")

# Environment variables by which launchers give the number of processes (MPICH/Intel hydra,
# Open MPI, MVAPICH, Slurm's srun). mpi4py is imported only when one says more than one.
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                   "SLURM_STEP_NUM_TASKS")


def mpi_world():
    """MPI.COMM_WORLD when this process is one of several started by an MPI launcher, else
    None (without importing mpi4py)."""
    launched = 1
    for name in _LAUNCHER_SIZES:
        with contextlib.suppress(ValueError, TypeError):
            launched = max(launched, int(os.environ.get(name)))
    if launched < 2:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise MissingExtra(f"cbptt train: started as one of {launched} processes (mpiexec/srun) "
                           f"but mpi4py is not installed: pip install \"cbptt[mpi]\", or run "
                           f"one process") from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def _portable(exc, rank):
    """An exception to send to the other ranks: a user's mistake keeps its class (so that
    every rank exits with code 2), anything else becomes a RuntimeError naming it."""
    where = "" if rank == 0 else f"rank {rank}: "
    if isinstance(exc, _PORTABLE):
        cls = type(exc) if type(exc).__module__ in _PORTABLE_MODULES else None
        if cls is FloatingPointError:
            return cls(f"{where}{exc}")
        if cls is not None:
            text = str(exc)
            if where and text.startswith("cbptt train: "):
                text = text[len("cbptt train: "):]
            return cls(f"cbptt train: {where}{text}" if where else text)
    return RuntimeError(f"{where}{type(exc).__name__}: {exc}")


class World:
    """The processes of one run: one (comm None), or the ranks of an MPI communicator, of
    which rank 0 (the root) alone prints and writes files. Every helper is collective."""

    def __init__(self, comm=None):
        if comm is not None and comm.Get_size() < 2:
            comm = None
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.root = self.rank == 0

    def shard(self, n):
        return shard(n, self.rank, self.size)

    def bcast(self, value):
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def any(self, flag):
        """True on every rank when flag is true on some rank."""
        if self.comm is None:
            return bool(flag)
        return bool(self.comm.allreduce(1 if flag else 0, op=self._max()))

    def _max(self):
        from mpi4py import MPI
        return MPI.MAX

    def on_root(self, fn, *args, **kwargs):
        """fn on rank 0 only; an exception there is raised on every rank (no rank is left
        waiting in a collective). Returns fn's value on rank 0, None elsewhere."""
        if self.comm is None:
            return fn(*args, **kwargs)
        value = failure = None
        if self.root:
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:        # noqa: BLE001 -- passed on to every rank
                failure = exc
        sent = self.comm.bcast(None if failure is None else _portable(failure, 0), root=0)
        if failure is not None:
            raise failure
        if sent is not None:
            raise sent
        return value

    def agree(self, fn, *args):
        """fn on every rank; if it fails on any, every rank raises (the first failing rank's
        error, naming the rank)."""
        if self.comm is None:
            return fn(*args)
        value = failure = None
        try:
            value = fn(*args)
        except Exception as exc:            # noqa: BLE001 -- passed on to every rank
            failure = exc
        sent = self.comm.allgather(None if failure is None else _portable(failure, self.rank))
        first = next((r for r, e in enumerate(sent) if e is not None), None)
        if first is None:
            return value
        if first == self.rank:
            raise failure
        raise sent[first]

    def gather_stream(self, trainer):
        """The whole stream state of a Truncated trainer whose streams are split over the
        ranks (rank 0 gets it, the others None): what one process would hold."""
        state = trainer.stream_state()
        if self.comm is None:
            return state
        parts = self.comm.gather(state, root=0)
        return join_streams(parts) if self.root else None

    def local_stream(self, state):
        """This rank's streams of a whole stream state (``gather_stream``'s inverse)."""
        batch = int(state["batch"])
        if self.comm is None or batch < 0:
            return state
        return stream_rows(state, self.shard(batch))
