"""A/B of two cbptt builds on the benchmark grid: is a change faster or slower, row by row?

    python -m benchmarks.ab --other ../old-checkout/src           # the whole grid, 1 and 2 threads
    python -m benchmarks.ab --other OLD/src --dtype float64 --threads 2 --shapes medium,long

"A" is the cbptt this Python imports (this checkout, installed or on PYTHONPATH); "B" the one
in --other (a source tree built in place: ``python setup.py build_ext --inplace``). Each build
runs in a worker process of its own that stays up for the whole run; for every row of the grid
(benchmarks/grid.py: shapes x cells x trainers, one dtype) the two workers set up the same
model and data, warm up, and then time blocks of steps in turn (A B, B A, ...), the other
worker waiting meanwhile, so that both see the same machine over the same minutes. At one
thread both workers are pinned to the first CPU of the process's mask. Prints, per row, the
median step of each and B / A (above 1: A is faster), and saves the rows as JSON.

Run with the OpenBLAS variables unset (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

WORKER = r"""
import json, os, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
sys.path.insert(0, os.environ["AB_BENCHMARKS_ROOT"])
import cbptt
from benchmarks import grid
print(json.dumps({"cbptt": os.path.dirname(cbptt.__file__)}), flush=True)
trainer = limits = None
for line in sys.stdin:
    msg = json.loads(line)
    if msg["op"] == "setup":
        shape = {s.name: s for s in grid.SHAPES}[msg["shape"]]
        case = grid.Case(shape, msg["cell"], msg["trainer"], np.dtype(msg["dtype"]).type)
        if limits is not None:
            limits.unregister()
        limits = threadpool_limits(msg["threads"], user_api="blas")
        if msg["pin"] is not None:
            os.sched_setaffinity(0, {msg["pin"]})
        else:
            os.sched_setaffinity(0, set(msg["cpus"]))
        params, X, Y = grid.make_problem(case)
        _, trainer = grid.build_cbptt(case, params)
        losses, times = [], []
        for _ in range(msg["warmup"]):
            t0 = time.perf_counter_ns()
            losses.append(float(trainer.step(X, Y)))
            times.append((time.perf_counter_ns() - t0) * 1e-6)
        print(json.dumps({"losses": losses, "ms": times}), flush=True)
    elif msg["op"] == "time":
        times = []
        for _ in range(msg["steps"]):
            t0 = time.perf_counter_ns()
            trainer.step(X, Y)
            times.append((time.perf_counter_ns() - t0) * 1e-6)
        print(json.dumps({"ms": times}), flush=True)
"""


class Worker:
    """One build in a process of its own, driven over stdin/stdout."""

    def __init__(self, name, pythonpath):
        env = dict(os.environ, AB_BENCHMARKS_ROOT=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.where = self.read()["cbptt"]

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended")
        return json.loads(line)

    def ask(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def run_row(workers, row, opts, cpus):
    """Both builds on one row: set up, warm up, then alternating timed blocks."""
    pin = cpus[0] if row["threads"] == 1 else None
    warm = [w.ask(op="setup", warmup=opts.warmup, pin=pin, cpus=cpus, **row) for w in workers]
    # a block: at least opts.steps steps and about opts.block_ms of them (small rows take
    # hundreds of steps a block, so that a block outlasts the scheduler's jitter)
    step_ms = min(min(w["ms"][1:] or w["ms"]) for w in warm)
    steps = max(opts.steps, round(opts.block_ms / max(step_ms, 1e-3)))
    samples = [[] for _ in workers]
    for r in range(opts.rounds):
        order = range(len(workers)) if r % 2 == 0 else reversed(range(len(workers)))
        for i in order:
            time.sleep(opts.settle)
            samples[i] += workers[i].ask(op="time", steps=steps)["ms"]
    medians = [statistics.median(s) for s in samples]
    return dict(row, median_ms=medians, ratio=medians[1] / medians[0], block_steps=steps,
                warmup_losses=[w["losses"] for w in warm])


def main(argv=None):
    from . import grid
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="src/ of the other build (B), built in place")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default=",".join(s.name for s in grid.SHAPES))
    ap.add_argument("--cells", default="tanh,lstm,gru")
    ap.add_argument("--trainers", default="many-to-many,many-to-one,truncated")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per block, at least")
    ap.add_argument("--block-ms", type=float, default=60.0,
                    help="timed steps per block: about this many milliseconds of them")
    ap.add_argument("--settle", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="JSON file of the rows (default: benchmarks/"
                                                "results/ab-<time>.json)")
    opts = ap.parse_args(argv)
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            print(f"warning: {name}={os.environ[name]} is set (unset it for figures)")
    cpus = sorted(os.sched_getaffinity(0))
    workers = [Worker("A", None), Worker("B", os.path.abspath(opts.other))]
    if workers[0].where == workers[1].where:
        sys.exit(f"both workers import cbptt from {workers[0].where}: is --other built?")
    print(f"A: {workers[0].where}\nB: {workers[1].where}")
    cells, trainers = opts.cells.split(","), opts.trainers.split(",")
    by_name = {s.name: s for s in grid.SHAPES}
    shapes = [by_name[name] for name in opts.shapes.split(",")]
    rows = []
    print(f"{'threads':>7} {'shape':>6} {'cell':>4} {'trainer':>12} {'A ms':>9} {'B ms':>9} "
          f"{'B / A':>6}")
    try:
        for threads in [int(t) for t in opts.threads.split(",")]:
            for case in grid.cases(shapes, cells, trainers, getattr(np, opts.dtype)):
                row = dict(threads=threads, shape=case.shape.name, cell=case.cell,
                           trainer=case.trainer, dtype=opts.dtype)
                out = run_row(workers, row, opts, cpus)
                rows.append(out)
                print(f"{threads:>7} {row['shape']:>6} {row['cell']:>4} {row['trainer']:>12} "
                      f"{out['median_ms'][0]:9.3f} {out['median_ms'][1]:9.3f} "
                      f"{out['ratio']:6.3f}", flush=True)
    finally:
        for w in workers:
            w.close()
    ratios = [r["ratio"] for r in rows]
    print(f"{len(rows)} rows: B / A from {min(ratios):.3f} to {max(ratios):.3f}, "
          f"geometric mean {statistics.geometric_mean(ratios):.3f}")
    path = opts.out or os.path.join(os.path.dirname(__file__), "results",
                                    time.strftime("ab-%Y%m%d-%H%M%S.json"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"a": workers[0].where, "b": workers[1].where, "rows": rows}, f, indent=1)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
