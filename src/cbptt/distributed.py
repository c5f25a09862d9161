"""Data-parallel training over MPI: every process (rank) trains the same model on its own part
of the batch, and one ``Allreduce`` per update combines the gradients.

``DataParallel(trainer)`` wraps a ManyToMany, ManyToOne, Truncated or Seq2Seq trainer. Each
rank calls ``step`` (or ``loss_and_grad``, ``fit_stream``) with its own shard: its slice of
the global batch (``shard``/``local`` give it), or its own streams for Truncated. Before every update the
trainer's ``gradient_reducer`` hook sums, over all ranks and in one ``Allreduce`` of one
preallocated float64 buffer, each rank's gradients and loss weighted by the number of terms
its loss is the mean of (n_r), with n_r itself. The global gradient is then
sum_r n_r g_r / sum_r n_r: exactly the gradient of the single-process mean over the global
batch (to rounding), and every rank applies the same clipping and optimiser update, so the
weights stay identical without ever being sent again.

Guards, all collective (every rank raises, none is left waiting in a collective):

- at construction, rank 0's weights are broadcast into every rank's ``model.params`` (and
  rank 0's optimiser state, when it has one), after checking that every rank holds the same
  model configuration, trainer settings and optimiser hyperparameters;
- a rank whose call fails locally (bad input, any exception before its update) still takes
  part in the update's ``Allreduce`` with a failure flag set in the same buffer; then the
  failing ranks' messages are gathered and every other rank raises RuntimeError naming
  them, while the failing rank raises its own exception;
- the buffer also carries the number of updates each rank's call will make (Truncated
  streams of different lengths on different ranks would otherwise leave some ranks waiting):
  a disagreement raises ValueError on every rank at the first update;
- non-finite gradients on any rank make the summed gradient non-finite on every rank: every
  rank raises FloatingPointError (or skips the update, with ``on_nonfinite="skip"``), and the
  message names the ranks whose local loss or gradients were not finite;
- every ``check_every`` updates, a checksum of the weights (sum and sum of squares) and the
  optimiser's step count are compared across ranks (one tiny MAX ``Allreduce``): ranks that
  drifted apart raise RuntimeError on every rank.

mpi4py is imported only when a DataParallel is made: ``pip install "cbptt[mpi]"`` installs
it with the MPICH wheel. Launch with ``mpiexec -n 4 python train.py`` (or ``srun``); see
docs/distributed.md.
"""
import math
import time
import warnings

import numpy as np

from . import thread_policy
from ._arrays import all_finite, squared_norm_of
from .fitting import FitMixin
from .seq2seq import Seq2Seq
from .trainers import _FullBPTT, _Trainer
from .truncated import Truncated, _is_ids, stream_length

__all__ = ["DataParallel", "shard"]

# Slots after the P gradient entries of the reduction buffer.
_LOSS, _TERMS, _FAILED, _NONFINITE, _SIG, _SIG_SQ = range(6)
_EXTRA = 6
# Call kinds, part of the signature that every rank must agree on.
_STEP, _LOSS_AND_GRAD, _LOSS_AND_GRAD_FLOW, _FIT_STREAM = 1, 2, 3, 4


def _signature(kind, rounds):
    """A small integer naming a call and its number of updates. Small, so that the sums of
    it and of its square over thousands of ranks are exact in float64."""
    return kind * 4096 + rounds % 4096


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "cbptt.DataParallel needs mpi4py and an MPI library: pip install \"cbptt[mpi]\" "
            "(mpi4py and the MPICH wheel), or pip install mpi4py against your cluster's "
            f"MPI ({exc})") from exc
    return MPI


def shard(global_batch_size, rank, size):
    """The slice of a global batch of ``global_batch_size`` sequences that ``rank`` of
    ``size`` ranks trains on: contiguous, the first ``global_batch_size % size`` ranks taking
    one sequence more. A rank gets an empty slice when the batch is smaller than ``size``
    (and DataParallel refuses empty shards: use at least one sequence per rank)."""
    for name, value in (("global_batch_size", global_batch_size), ("rank", rank),
                        ("size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    if global_batch_size < 0:
        raise ValueError(f"global_batch_size must be >= 0, got {global_batch_size}")
    base, extra = divmod(int(global_batch_size), int(size))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _warn(line):
    warnings.warn(line, RuntimeWarning, stacklevel=3)


def _describe(trainer):
    """What must be equal on every rank: model, trainer settings, optimiser hyperparameters."""
    model, optimizer = trainer.model, trainer.optimizer
    hyper = {name: value for name, value in vars(optimizer).items()
             if not name.startswith("_") and name != "steps"
             and isinstance(value, (int, float, bool, str, tuple))}
    description = {"model": model.config(), "parameters": int(model.params.size),
                   "trainer": type(trainer).__name__, "loss": trainer.loss,
                   "clip_norm": trainer.clip_norm, "on_nonfinite": trainer.on_nonfinite,
                   "many_to_one": trainer.many_to_one,
                   "optimizer": (type(optimizer).__name__, sorted(hyper.items()))}
    if isinstance(trainer, Truncated):
        description.update(k1=trainer.k1, k2=trainer.k2)
    return description


class DataParallel(FitMixin):
    """Data-parallel training of one trainer's model over the ranks of an MPI communicator.

    Parameters
    ----------
    trainer : ManyToMany, ManyToOne, Truncated or Seq2Seq
        Made the same way on every rank (same model configuration, loss, clipping and a
        fresh optimiser with the same hyperparameters); rank 0's weights and optimiser state
        are broadcast to the others here. The trainer's ``gradient_reducer`` is taken over.
    comm : mpi4py communicator, optional
        ``MPI.COMM_WORLD`` by default. With two ranks or more, BLAS runs one thread per rank
        (where the ranks on a node times BLAS's threads exceed its cores, or the launcher
        does not say how many share it) unless the user chose a count:
        ``cbptt.settings(threads=N)`` in force, OPENBLAS_NUM_THREADS or OMP_NUM_THREADS;
        rank 0 says so once (a RuntimeWarning; cbptt/thread_policy.py).
    check_every : int or None
        Compare a checksum of the weights across ranks every this many updates (None or 0:
        never; ``check_consistency()`` does it on demand).

    Every method that trains is collective: all ranks must call it, in the same order, each
    with its own shard (at least one sequence), and with the same number of steps per call
    (Truncated streams advance in lockstep). ``step`` and ``loss_and_grad`` return the global
    loss, the mean over the global batch. ``comm_seconds`` accumulates the time spent in the
    gradient ``Allreduce`` (including waiting for slower ranks) and ``updates`` counts them.
    ``fit`` is collective too: every rank gives it the whole data and trains on its rows of
    each batch (``cbptt.fit_ranks``). Attributes not defined here (``model``, ``predict``,
    ``state``, ``reset_state``, ...) are the wrapped trainer's, and act on this rank only.
    """

    check_rtol = 1e-12       # tolerance of the weight checksum (summation order only)

    def __init__(self, trainer, comm=None, check_every=100):
        MPI = _import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # one BLAS thread per rank unless the user chose (thread_policy.py), said on rank 0
        thread_policy.one_thread_per_rank(self.size, say=_warn if self.rank == 0 else None)
        if check_every is not None and (isinstance(check_every, bool) or
                                        not isinstance(check_every, (int, np.integer))
                                        or check_every < 0):
            raise ValueError(f"check_every must be a non-negative integer or None, got "
                             f"{check_every!r}")
        self.check_every = int(check_every or 0)
        self.trainer = trainer
        self.updates = 0
        self.comm_seconds = 0.0
        self.nonfinite_ranks = []
        self._agreed = False         # the current exception is raised on every rank
        self._in_collective = False
        self._signature = 0.0
        self._acc_loss = self._acc_terms = 0.0

        # Local problems first, then one allgather: every rank sees every problem.
        problem = description = None
        if not isinstance(trainer, _Trainer):
            problem = (f"trainer must be a cbptt trainer (ManyToMany, ManyToOne, Truncated, "
                       f"Seq2Seq), got {type(trainer).__name__}")
        elif trainer.gradient_reducer is not None:
            problem = "the trainer already has a gradient_reducer (wrapped twice?)"
        else:
            description = dict(_describe(trainer), check_every=self.check_every)
        gathered = self.comm.allgather((problem, description))
        problems = [(r, p) for r, (p, _) in enumerate(gathered) if p is not None]
        if problems:
            text = "; ".join(f"rank {r}: {p}" for r, p in problems)
            raise (TypeError if problem else RuntimeError)(f"DataParallel: {text}")
        reference = gathered[0][1]
        different = [r for r, (_, d) in enumerate(gathered) if d != reference]
        if different:
            keys = sorted(k for k in reference
                          if any(gathered[r][1].get(k) != reference[k] for r in different))
            raise ValueError(f"DataParallel: rank(s) {different} hold a different model, "
                             f"trainer or optimiser than rank 0 (differing: {', '.join(keys)}); "
                             "make the same trainer on every rank")

        model = trainer.model
        self.comm.Bcast(model.params, root=0)
        self._sync_optimizer()
        n = model.params.size
        self._n = n
        self._buffer = np.zeros(n + _EXTRA, np.float64)     # the one reduction buffer
        self._check = np.zeros(6, np.float64)
        trainer.gradient_reducer = self._reduce

    # -- construction helpers -----------------------------------------------------------------
    def _sync_optimizer(self):
        """Give every rank rank 0's optimiser state (step count, momentum buffer or Adam's
        moments; a fresh optimiser has only its step count, 0)."""
        optimizer, params = self.trainer.optimizer, self.trainer.model.params
        state = optimizer.state_dict() if self.rank == 0 else None
        meta = self.comm.bcast(None if state is None else
                               (int(state["steps"]), sorted(set(state) - {"steps"})), root=0)
        steps, arrays = meta
        if self.rank != 0:
            state = {"steps": np.array(steps, np.int64)}
            state.update({name: np.empty_like(params) for name in arrays})
        for name in arrays:
            self.comm.Bcast(state[name], root=0)
        if self.rank != 0:
            optimizer.load_state_dict(state, params)

    # -- sharding -----------------------------------------------------------------------------
    def shard(self, global_batch_size):
        """This rank's slice of a global batch (see the module-level ``shard``)."""
        return shard(global_batch_size, self.rank, self.size)

    def local(self, *arrays):
        """This rank's rows of arrays whose first axis is the global batch (X, Y, mask,
        lengths; None passes through). One array gives one array, several a tuple."""
        sizes = {len(a) for a in arrays if a is not None}
        if len(sizes) > 1:
            raise ValueError(f"arrays of different batch sizes: {sorted(sizes)}")
        part = self.shard(sizes.pop() if sizes else 0)
        out = tuple(None if a is None else a[part] for a in arrays)
        return out[0] if len(out) == 1 else out

    # -- the collective round -----------------------------------------------------------------
    def _allreduce(self, array, op):
        self._in_collective = True
        self.comm.Allreduce(self._MPI.IN_PLACE, array, op=op)
        self._in_collective = False

    def check_consistency(self):
        """Collective: raise RuntimeError on every rank if the weights (or the optimiser's step
        count) differ between ranks."""
        params = self.trainer.model.params
        total = float(params.sum(dtype=np.float64))
        squares = squared_norm_of(params)
        steps = float(self.trainer.optimizer.steps)
        check = self._check
        check[:] = (total, squares, steps, -total, -squares, -steps)
        self._allreduce(check, self._MPI.MAX)
        high, low = check[:3], -check[3:]
        h, lo = [float(v) for v in high], [float(v) for v in low]
        # |sum p| <= sqrt(P * sum p^2): the scale of the sum's rounding; steps compare exactly
        scale = np.array([math.sqrt(abs(high[1]) * params.size), abs(high[1]), 0.0])
        if not np.all(np.abs(high - low) <= self.check_rtol * scale):   # NaN fails too
            self._agreed = True
            raise RuntimeError(
                f"DataParallel: the ranks' weights have drifted apart (after {self.updates} "
                f"updates: parameter sum in [{lo[0]!r}, {h[0]!r}], sum of squares in "
                f"[{lo[1]!r}, {h[1]!r}], optimiser steps in [{lo[2]:g}, {h[2]:g}]); "
                "every rank must make the same calls with the same settings")

    def _round(self, grads, loss, terms, error=None):
        """One update's exchange: checksum when due, then ONE Allreduce(SUM) of
        [grads * terms, loss * terms, terms, failed, non-finite, signature, signature^2].
        Writes the global mean gradient into grads; returns (global loss, global terms)."""
        if self.check_every and self.updates % self.check_every == 0:
            self.check_consistency()
        n, buf = self._n, self._buffer
        extra = buf[n:]
        local_finite = True
        if error is None:
            np.multiply(grads, terms, out=buf[:n], dtype=np.float64)
            extra[_LOSS] = loss * terms if terms else 0.0
            extra[_TERMS] = terms
            extra[_FAILED] = 0.0
            local_finite = bool(np.isfinite(extra[_LOSS]) and all_finite(buf[:n]))
            extra[_NONFINITE] = 0.0 if local_finite else 1.0
        else:
            buf[:] = 0.0
            extra[_FAILED] = 1.0
        extra[_SIG] = self._signature
        extra[_SIG_SQ] = self._signature * self._signature
        start = time.perf_counter()
        self._allreduce(buf, self._MPI.SUM)
        self.comm_seconds += time.perf_counter() - start
        self.updates += 1

        if extra[_FAILED]:
            self._agreed = True
            self._in_collective = True
            mine = None if error is None else f"{type(error).__name__}: {error}"
            messages = self.comm.allgather(mine)
            self._in_collective = False
            if error is not None:
                return 0.0, 0.0          # the failing rank re-raises its own exception
            failed = "; ".join(f"rank {r} failed: {m}" for r, m in enumerate(messages)
                               if m is not None)
            raise RuntimeError(f"DataParallel: {failed} (every rank stops)")
        # every rank agrees on the signature iff size * sum(s^2) == (sum s)^2
        if int(extra[_SIG]) ** 2 != self.size * int(extra[_SIG_SQ]):
            self._agreed = True
            raise ValueError(
                "DataParallel: the ranks disagree on the number of updates in this call (or "
                "call different methods): Truncated streams must have the same length on "
                "every rank, and every rank must make the same calls")
        total_terms = float(extra[_TERMS])
        if total_terms > 0:
            np.divide(buf[:n], total_terms, out=grads, casting="same_kind")
            global_loss = float(extra[_LOSS]) / total_terms
        else:
            grads[...] = 0.0
            global_loss = 0.0
        self.nonfinite_ranks = []
        if extra[_NONFINITE] or not (np.isfinite(global_loss) and all_finite(grads)):
            self._in_collective = True
            flags = self.comm.allgather(local_finite)
            self._in_collective = False
            self.nonfinite_ranks = [r for r, ok in enumerate(flags) if not ok]
            if self.trainer.on_nonfinite == "raise":
                self._agreed = True      # _update raises FloatingPointError on every rank
            elif self.nonfinite_ranks:
                warnings.warn(f"DataParallel: non-finite local loss or gradients on rank(s) "
                              f"{self.nonfinite_ranks}; every rank skips this update",
                              RuntimeWarning, stacklevel=4)
        self._acc_loss += global_loss * total_terms
        self._acc_terms += total_terms
        return global_loss, total_terms

    def _reduce(self, grads, loss, terms):
        """The trainer's gradient_reducer."""
        return self._round(grads, loss, terms)

    def _collective(self, signature, call):
        """Run call() as one collective call; a local failure becomes a failure round."""
        self._agreed = False
        self._acc_loss = self._acc_terms = 0.0
        try:
            self._signature = float(signature())
            return call()
        except Exception as exc:
            if self._in_collective:     # an MPI error: nothing more can be exchanged
                self._in_collective = False
                raise
            if self._agreed:
                if isinstance(exc, FloatingPointError) and self.nonfinite_ranks:
                    message = (f"{exc} [non-finite local loss or gradients on rank(s) "
                               f"{self.nonfinite_ranks}]")
                    exc.args = (message,) + exc.args[1:]
                raise
            self._agreed = True
            self._round(None, 0.0, 0.0, error=exc)
            raise
        finally:
            self._signature = 0.0

    def _number_rows(self, batch):
        """Collective, for a model with dropout: the trainer's dropout_row0 = the global index
        of this rank's first sequence (an Exscan of the ranks' batch sizes), so that every
        sequence draws the masks it would draw in one process on the whole batch."""
        models = [self.trainer.model] if not isinstance(self.trainer, Seq2Seq) else [
            self.trainer.encoder, self.trainer.decoder]
        if not any(m.dropout or m.recurrent_dropout for m in models):
            return
        mine = np.array([batch], dtype=np.int64)
        before = np.zeros(1, dtype=np.int64)
        self.comm.Exscan(mine, before, op=self._MPI.SUM)
        self.trainer.dropout_row0 = int(before[0]) if self.rank > 0 else 0

    def _global_loss(self):
        return self._acc_loss / self._acc_terms if self._acc_terms else 0.0

    # -- training -----------------------------------------------------------------------------
    def step(self, X, Y, *args, **kwargs):
        """Collective: the wrapped trainer's ``step`` on this rank's shard (X, Y and any
        mask/lengths/h0 for this rank's sequences), with the gradients averaged over all
        ranks. Returns the global loss (the mean over the global batch; for Truncated the
        mean over the call's outputs on every rank), and this rank's final state where the
        trainer returns one."""
        trainer = self.trainer

        def signature():
            if isinstance(trainer, Truncated) and not trainer.many_to_one:
                length = np.shape(X)[1]
                rounds = -(-length // trainer.k1)
            else:
                rounds = 1
            return _signature(_STEP, rounds)

        def call():
            self._number_rows(np.shape(X)[0])
            result = trainer.step(X, Y, *args, **kwargs)
            if isinstance(result, tuple):
                return (self._global_loss(),) + result[1:]
            return self._global_loss()

        return self._collective(signature, call)

    def loss_and_grad(self, X, Y, *args, **kwargs):
        """Collective: loss and gradients of the global batch, without an update (ManyToMany
        and ManyToOne). Returns what the trainer's ``loss_and_grad`` returns, with the global
        loss and the parameter gradients of the mean over the global batch; ``"h0"``/``"c0"``
        are this rank's rows of the global-batch gradient, the final state is this rank's, and
        the flow is the global batch's (one more small Allreduce)."""
        trainer = self.trainer
        if not isinstance(trainer, (_FullBPTT, Seq2Seq)):
            raise TypeError(f"loss_and_grad is for ManyToMany, ManyToOne and Seq2Seq, not "
                            f"{type(trainer).__name__}")
        flow_wanted = bool(kwargs.get("return_flow", False))

        def signature():
            return _signature(_LOSS_AND_GRAD_FLOW if flow_wanted else _LOSS_AND_GRAD, 1)

        def call():
            self._number_rows(np.shape(X)[0])
            result = trainer.loss_and_grad(X, Y, *args, **kwargs)
            local_loss, local_grads = result[0], result[1]
            local_terms = trainer._last_terms
            loss, terms = self._round(trainer._grads, local_loss, local_terms)
            grads = trainer._grads_dict()
            scale = local_terms / terms if terms else 0.0
            for key in ("h0", "c0"):
                if key in local_grads:
                    grads[key] = local_grads[key] * scale
            result = (loss, grads) + tuple(result[2:])
            if flow_wanted:
                flow = result[-1]
                # global flow = sum_r (B_r / B) (n_r / N) flow_r
                batch = np.shape(X)[0]
                part = np.empty(flow.size + 1)
                part[:-1] = flow.ravel() * (batch * scale)
                part[-1] = batch
                self._allreduce(part, self._MPI.SUM)
                result = result[:-1] + ((part[:-1] / part[-1]).reshape(flow.shape),)
            return result

        return self._collective(signature, call)

    def fit_stream(self, source, targets=None, mask=None, chunk_steps=None):
        """Collective: Truncated.fit_stream over this rank's streams (every rank's streams of
        the same length). Returns the global mean loss of every chunk."""
        trainer = self.trainer
        if not isinstance(trainer, Truncated):
            raise TypeError(f"fit_stream is for Truncated, not {type(trainer).__name__}")

        def signature():
            if targets is None:          # an iterable: its length is not known beforehand
                return _signature(_FIT_STREAM, 0)
            rounds = -(-stream_length(source) // trainer.k1)
            return _signature(_FIT_STREAM, rounds)

        def global_step(*step_args):
            self._acc_loss = self._acc_terms = 0.0
            Truncated.step(trainer, *step_args)
            return self._global_loss()

        def call():
            if targets is not None:        # arrays: (B, L, ...) streams, or one stream
                one = np.ndim(source) == (1 if _is_ids(source) else 2)
                self._number_rows(1 if one else np.shape(source)[0])
            trainer.step = global_step      # fit_stream's chunks report the global loss
            try:
                return trainer.fit_stream(source, targets, mask=mask, chunk_steps=chunk_steps)
            finally:
                del trainer.step

        return self._collective(signature, call)

    # -- everything else is the trainer's -----------------------------------------------------
    def __getattr__(self, name):
        if name.startswith("_") or name == "trainer":
            raise AttributeError(name)
        return getattr(self.trainer, name)

    def __repr__(self):
        return (f"DataParallel({type(self.trainer).__name__}, rank {self.rank} of "
                f"{self.size}, {self.updates} updates)")
