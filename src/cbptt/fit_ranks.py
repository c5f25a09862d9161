"""The processes of a ``fit``: one, or the ranks of a ``DataParallel`` trainer, which fit keeps
in step. Under DataParallel every rank is given the whole data and reads its own rows of each
global batch (``shard``: the first ``n % size`` ranks one row more, as
``cbptt.distributed.shard``), or its own streams of a Truncated trainer's; each makes the same
steps. Rank 0 draws the seed, runs the validation and shows the progress; the others get its
values. A Ctrl-C or a callback's ``stop_training`` on any rank stops every rank at the same
step.
"""
import numpy as np


class Ranks:
    """The ranks of a fit on ``trainer`` (``size`` 1 for anything but a DataParallel)."""

    def __init__(self, trainer):
        from .distributed import DataParallel       # which imports the trainers, and fit
        self.comm = trainer.comm if isinstance(trainer, DataParallel) else None
        self.rank = 0 if self.comm is None else self.comm.Get_rank()
        self.size = 1 if self.comm is None else self.comm.Get_size()
        self.root = self.rank == 0

    def part(self, n):
        """This rank's slice of a global batch of n items."""
        from .distributed import shard
        return shard(n, self.rank, self.size)

    def check_batches(self, counts, what):
        """ValueError when some batch (of ``counts`` items each) has fewer items than ranks."""
        if self.size > 1 and min(counts) < self.size:
            which = "every" if len(counts) == 1 or counts[0] < self.size else "the last"
            raise ValueError(f"batch_size: DataParallel over {self.size} ranks needs at least "
                             f"{self.size} {what} in every batch; {which} batch has "
                             f"{min(counts)}")

    def seed(self, seed):
        """Rank 0's seed on every rank."""
        return seed if self.comm is None else self.comm.bcast(seed, root=0)

    def any(self, *flags):
        """Each flag, true on every rank when true on some rank."""
        if self.comm is None:
            return tuple(bool(f) for f in flags)
        from mpi4py import MPI
        values = np.array([1 if f else 0 for f in flags], np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MAX)
        return tuple(bool(v) for v in values)

    def from_root(self, function):
        """``function()`` run on rank 0, its value on every rank; an exception there is raised
        on every rank (a RuntimeError naming it on the others), none is left waiting."""
        if self.comm is None:
            return function()
        value = failure = None
        if self.root:
            try:
                value = function()
            except Exception as exc:        # noqa: BLE001 -- passed on to every rank
                failure = exc
        sent = self.comm.bcast((value, None if failure is None else
                                f"{type(failure).__name__}: {failure}"), root=0)
        if failure is not None:
            raise failure
        if sent[1] is not None:
            raise RuntimeError(f"rank 0 failed: {sent[1]}")
        return sent[0]
