"""One process of the contention benchmark (benchmarks/contention.py): trainers of one grid row,
driven over stdin/stdout (one JSON object a line), or one MPI rank (``--mpi``, one shot).

The driver starts it with the thread setting of its configuration already in the environment
(``CONTENTION_CONFIG``: ``default`` sets nothing; ``one`` comes with ``OPENBLAS_NUM_THREADS=1``
and sets ``cbptt.set_settings(team=1)`` in every thread that trains). Requests:

- ``setup`` {shape, cell, trainers, torch}: build ``trainers`` cbptt trainers of the row (the
  grid's ManyToMany, same weights and data) and, if ``torch``, the same step in torch; warm up.
- ``window`` {start, seconds}: from wall time ``start`` until ``start + seconds``, every trainer
  steps back to back, each in a Python thread of its own when there are two or more; returns
  every step's time in ms, per trainer.
- ``alternate`` {seconds}: cbptt alone, torch alone, then torch and cbptt steps alternating,
  about ``seconds`` each; returns the three blocks' step times.
"""
import json
import os
import sys
import threading
import time

import numpy as np

ONE = os.environ.get("CONTENTION_CONFIG") == "one"


def _per_thread_settings():
    """The configuration's cbptt settings, in the calling thread (they are thread-local)."""
    import cbptt
    if ONE:
        cbptt.set_settings(team=1)


class Row:
    """The trainers (and torch's step) of one grid row, from the grid's shared starting point."""

    def __init__(self, shape, cell, trainers, torch):
        from . import grid
        from .contenders import Torch
        case = grid.Case({s.name: s for s in grid.SHAPES}[shape], cell, "many-to-many", np.float32)
        params, X, Y = grid.make_problem(case)
        self.trainers = [grid.build_cbptt(case, params)[1] for _ in range(trainers)]
        self.X, self.Y = X, Y
        self.torch = None
        if torch:
            contender = Torch()
            ok, _ = contender.available()
            if ok:
                if ONE:
                    contender.set_threads(1)
                contender.setup(case, (params, X, Y))
                self.torch = contender

    def cbptt_step(self, i=0):
        return float(self.trainers[i].step(self.X, self.Y))

    def threads_used(self):
        return max(e.last_parts for t in self.trainers for e in t._engines.values())


def _timed(step, until):
    """Steps back to back until wall time ``until``; their times in ms."""
    times = []
    while time.time() < until:
        t0 = time.perf_counter_ns()
        step()
        times.append((time.perf_counter_ns() - t0) * 1e-6)
    return times


def _window(row, start, seconds):
    """Every trainer of the row steps from ``start`` to ``start + seconds`` (wall time)."""
    results = [None] * len(row.trainers)

    def run(i):
        _per_thread_settings()
        delay = start - time.time()
        if delay > 0:
            time.sleep(delay)
        results[i] = _timed(lambda: row.cbptt_step(i), start + seconds)

    if len(row.trainers) == 1:
        run(0)
    else:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(row.trainers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return results


def _alternate(row, seconds):
    """cbptt alone, torch alone, and the two alternating, about ``seconds`` each (ms per step)."""
    out = {"cbptt_alone": _timed(row.cbptt_step, time.time() + seconds),
           "torch_alone": _timed(row.torch.step, time.time() + seconds),
           "cbptt_alternating": [], "torch_alternating": []}
    until = time.time() + seconds
    while time.time() < until:
        for name, step in (("torch", row.torch.step), ("cbptt", row.cbptt_step)):
            t0 = time.perf_counter_ns()
            step()
            out[name + "_alternating"].append((time.perf_counter_ns() - t0) * 1e-6)
    return out


def _set_spin():
    """The team's spins of ``--spin`` (CONTENTION_SPIN="barrier,job" in ns), if given."""
    spin = os.environ.get("CONTENTION_SPIN")
    from cbptt import _engine
    if spin and hasattr(_engine, "team_spin_ns"):          # builds before issue 22 spin only
        barrier, job = (int(x) if x else None for x in spin.split(","))
        _engine.team_spin_ns(barrier, job)


def serve():
    """The stdin/stdout loop of a worker driven by the benchmark."""
    import cbptt
    _per_thread_settings()
    _set_spin()
    print(json.dumps({"cbptt": os.path.dirname(cbptt.__file__)}), flush=True)
    row = None
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "setup":
            row = None
            row = Row(msg["shape"], msg["cell"], msg["trainers"], msg["torch"])
            warm = [row.cbptt_step(i) for i in range(len(row.trainers)) for _ in range(msg["warmup"])]
            if row.torch is not None:
                for _ in range(msg["warmup"]):
                    row.torch.step()
            reply = {"losses": warm, "threads_used": row.threads_used(), "torch": row.torch is not None}
        elif msg["op"] == "window":
            reply = {"ms": _window(row, msg["start"], msg["seconds"]), "threads_used": row.threads_used()}
        elif msg["op"] == "alternate":
            reply = _alternate(row, msg["seconds"])
        print(json.dumps(reply), flush=True)


def mpi_rank(shape, cell, seconds, warmup):
    """One rank of ``mpiexec -n N``: cbptt.distributed.DataParallel over the row's full batch on
    every rank (the global batch N times the row's), steps timed over a window that starts at
    the same moment on every rank; rank 0 prints every rank's step times as JSON."""
    from mpi4py import MPI
    from cbptt.distributed import DataParallel
    comm = MPI.COMM_WORLD
    _per_thread_settings()
    _set_spin()
    row = Row(shape, cell, 1, False)
    parallel = DataParallel(row.trainers[0], comm=comm, check_every=0)
    for _ in range(warmup):
        parallel.step(row.X, row.Y)
    comm.Barrier()
    start = comm.bcast(time.time() + 0.1, root=0)
    time.sleep(max(0.0, start - time.time()))
    # every rank takes the same number of steps (the step is collective): rank 0 decides
    times, until = [], start + seconds
    while comm.bcast(time.time() < until, root=0):
        t0 = time.perf_counter_ns()
        parallel.step(row.X, row.Y)
        times.append((time.perf_counter_ns() - t0) * 1e-6)
    gathered = comm.gather({"ms": times, "threads_used": row.threads_used(),
                            "comm_seconds": parallel.comm_seconds}, root=0)
    if comm.Get_rank() == 0:
        print(json.dumps({"ranks": gathered}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--mpi":
        mpi_rank(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    else:
        serve()
