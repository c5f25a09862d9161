"""Data-parallel training over MPI: steps per second on 1 and 2 ranks, and the Allreduce's cost.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_mpi.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_mpi.py --shapes medium \\
        --cells lstm --seconds 1 --rounds 1 --out mpi.json

Needs mpi4py and mpiexec (pip install -e ".[mpi]"); threadpoolctl (".[bench]") makes the BLAS
thread limits certain (OPENBLAS_NUM_THREADS is set in every launched process either way).

For every shape x cell, ManyToMany (mse, SGD lr=0.01, one layer), the same global batch:

- "1 proc x 1 thr": one process, the plain trainer, 1 BLAS thread;
- "1 proc x 2 thr": one process, the plain trainer, 2 BLAS threads;
- "2 ranks x 1 thr": ``mpiexec -n 2``, cbptt.distributed.DataParallel, each rank half the
  batch, 1 BLAS thread per rank.

Each variant is a fresh process (or pair), run in turn, ``--rounds`` times, alternating; the best
round is reported (the machine may be shared: the last column is how many cores other
programs kept busy during the kept 1x1 / 1x2 / 2x1 runs, from /proc/stat; above ~0.2 the row
is contaminated). Steps per second
are of the global batch. For 2 ranks the script also reports the time per step spent in the
gradient Allreduce as DataParallel measures it (``comm_seconds``: the exchange itself plus
waiting for the slower rank), the same Allreduce timed alone after a barrier (the pure exchange
of the buffer), and, for the extrapolation in docs/distributed.md, the 1-thread step time of
one rank, alone on the machine, at the per-rank batch sizes of 2, 16 and 64 ranks
(``--extra-batches``).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

SHAPES = {"medium": (16, 100, 32, 128, 8), "large": (64, 50, 128, 512, 32)}   # B, T, I, H, O
FORCED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# -- one measurement, in a fresh process (or one per rank) ------------------------------------
def worker(opts):
    import numpy as np

    import cbptt
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(opts.threads, user_api="blas")
        blas = [(i.get("internal_api"), i.get("version"), i.get("architecture"),
                 i.get("num_threads"))
                for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        threads = os.environ.get("OPENBLAS_NUM_THREADS")
        blas = f"threadpoolctl missing; OPENBLAS_NUM_THREADS={threads}"

    comm = None
    rank, size = 0, 1
    if opts.mpi:
        from mpi4py import MPI

        from cbptt.distributed import DataParallel, shard
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    B, T, I, H, O = SHAPES[opts.shape]
    if opts.batch:
        B = opts.batch
    dtype = np.dtype(opts.dtype)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(B, T, I)).astype(dtype)
    Y = rng.normal(size=(B, T, O)).astype(dtype)
    model = cbptt.RNN(I, H, O, cell=opts.cell, dtype=dtype, seed=0)
    trainer = cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.SGD(lr=0.01))
    runner = trainer
    if comm is not None:
        runner = DataParallel(trainer, comm=comm)
        part = shard(B, rank, size)
        X, Y = np.ascontiguousarray(X[part]), np.ascontiguousarray(Y[part])

    start = time.perf_counter()
    for _ in range(opts.warmup):
        runner.step(X, Y)
    per_step = (time.perf_counter() - start) / max(opts.warmup, 1)
    steps = max(opts.min_steps, int(opts.seconds / max(per_step, 1e-6)))
    if comm is not None:                     # every rank must make the same number of steps
        steps = comm.bcast(steps, root=0)
        comm.Barrier()
        comm_before = runner.comm_seconds
    start = time.perf_counter()
    for _ in range(steps):
        runner.step(X, Y)
    elapsed = time.perf_counter() - start
    result = {"seconds_per_step": elapsed / steps, "steps": steps, "blas": blas,
              "params": int(model.params.size), "batch_per_rank": int(X.shape[0])}
    if comm is not None:
        result["allreduce_in_step"] = (runner.comm_seconds - comm_before) / steps
        buffer = np.zeros(model.params.size + 6)
        times = []
        for _ in range(opts.allreduce_repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        result["allreduce_alone"] = float(np.median(times))
        result["buffer_bytes"] = int(buffer.nbytes)
        gathered = comm.gather(result, root=0)
        if rank != 0:
            return
        result = dict(gathered[0], ranks=gathered,
                      seconds_per_step=max(r["seconds_per_step"] for r in gathered),
                      allreduce_in_step=float(np.mean([r["allreduce_in_step"] for r in gathered])),
                      allreduce_alone=max(r["allreduce_alone"] for r in gathered))
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver ---------------------------------------------------------------------------------
def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    from shutil import which
    found = which("mpiexec")
    if not found:
        sys.exit("mpiexec not found: pip install -e \".[mpi]\" (mpi4py and the MPICH wheel)")
    return found


def busy_seconds():
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; None if absent."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)       # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(limit):
    """Wait (at most limit seconds) for a 0.5 s window in which other programs keep less than
    a quarter of a core busy (nothing of ours runs meanwhile). Returns their load."""
    deadline = time.monotonic() + limit
    while True:
        before, t0 = busy_seconds(), time.perf_counter()
        if before is None:
            return None
        time.sleep(0.5)
        load = (busy_seconds() - before) / (time.perf_counter() - t0)
        if load < 0.25 or time.monotonic() > deadline:
            return load


def launch(opts, shape, cell, ranks, threads, batch=None):
    args = [sys.executable, os.path.abspath(__file__), "--worker", "--shape", shape, "--cell",
            cell, "--threads", str(threads), "--dtype", opts.dtype, "--seconds",
            str(opts.seconds), "--warmup", str(opts.warmup), "--min-steps", str(opts.min_steps)]
    if batch:
        args += ["--batch", str(batch)]
    if ranks:
        args = [mpiexec(), "-n", str(ranks)] + args + ["--mpi"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    if opts.wait_quiet:
        wait_quiet(opts.wait_quiet)
    busy, ours, wall = busy_seconds(), children_seconds(), time.perf_counter()
    proc = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(lines[-1][len("RESULT "):])
    if busy is not None:       # the cores that other programs kept busy meanwhile
        wall = time.perf_counter() - wall
        others = (busy_seconds() - busy) - (children_seconds() - ours)
        result["others_cores"] = max(0.0, others / wall)
    return result


VARIANTS = [("1x1", None, 1), ("1x2", None, 2), ("2x1", 2, 1)]   # name, mpiexec ranks, threads


def driver(opts):
    forced = {k: os.environ[k] for k in FORCED_ENV if k in os.environ}
    if forced:
        print(f"warning: {forced} set; run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
              "python benchmarks/bench_mpi.py`", file=sys.stderr)
    rows = []
    for shape in opts.shapes.split(","):
        for cell in opts.cells.split(","):
            best = {}
            for _ in range(opts.rounds):
                for name, ranks, threads in VARIANTS:
                    r = launch(opts, shape, cell, ranks, threads)
                    if name not in best or r["seconds_per_step"] < best[name]["seconds_per_step"]:
                        best[name] = r
            B = SHAPES[shape][0]
            extra = {}
            for ranks in (int(k) for k in opts.extra_batches.split(",") if k):
                local = -(-B // ranks)           # the largest shard
                if local < B:
                    extra[ranks] = launch(opts, shape, cell, None, 1, batch=local)
            rows.append({"shape": shape, "cell": cell, "B": B, "variants": best,
                         "one_rank_at_batch": {k: {"batch": v["batch_per_rank"],
                                                   "seconds_per_step": v["seconds_per_step"]}
                                               for k, v in extra.items()}})
            print(row_text(rows[-1]), flush=True)
    print()
    print(table(rows, opts))
    if opts.out:
        meta = {"loadavg": os.getloadavg(), "dtype": opts.dtype, "rounds": opts.rounds,
                "seconds": opts.seconds, "forced_env": forced, "cpus": os.cpu_count()}
        with open(opts.out, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)


def row_text(row):
    v = row["variants"]
    return (f"{row['shape']:6s} {row['cell']:4s} " + "  ".join(
        f"{k}: {1 / r['seconds_per_step']:.2f} steps/s (others {r.get('others_cores', 0):.2f} "
        f"cores)" for k, r in v.items()))


def table(rows, opts):
    out = [(f"ManyToMany, mse, SGD, one layer, {opts.dtype}; steps/s of the global batch, best "
            f"of {opts.rounds} round(s); load average {os.getloadavg()[0]:.2f} on "
            f"{os.cpu_count()} CPUs at the end"),
           "",
           ("| shape (B, T, I, H, O) | cell | 1 proc x 1 thr | 1 proc x 2 thr | 2 ranks x 1 thr "
            "| 2 ranks / 1x1 | 2 ranks / 1x2 | Allreduce in step (ms) | Allreduce alone (ms) "
            "| buffer (MB) | 1 rank alone, B/2 (ms) | B/16 (ms) | B/64 (ms) "
            "| others' load (cores) |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        v = row["variants"]
        s11, s12, s21 = (1 / v[k]["seconds_per_step"] for k in ("1x1", "1x2", "2x1"))
        two = v["2x1"]
        extra = row["one_rank_at_batch"]

        def at(k, extra=extra):
            e = extra.get(k)
            return f"{e['seconds_per_step'] * 1e3:.2f} (b={e['batch']})" if e else "-"
        out.append(f"| {row['shape']} {SHAPES[row['shape']]} | {row['cell']} | {s11:.2f} | "
                   f"{s12:.2f} | {s21:.2f} | {s21 / s11:.2f} | {s21 / s12:.2f} | "
                   f"{two['allreduce_in_step'] * 1e3:.3f} | {two['allreduce_alone'] * 1e3:.3f} | "
                   f"{two['buffer_bytes'] / 1e6:.2f} | {at(2)} | {at(16)} | {at(64)} | "
                   + " / ".join(f"{v[k].get('others_cores', float('nan')):.2f}"
                                for k in ("1x1", "1x2", "2x1")) + " |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="medium,large")
    p.add_argument("--cells", default="lstm,tanh")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--extra-batches", default="2,16,64",
                   help="also time one rank, 1 thread, at the per-rank batch of this many ranks")
    p.add_argument("--wait-quiet", type=float, default=20.0,
                   help="before each measurement, wait up to this many seconds for the other "
                        "programs on the machine to use less than 0.25 cores (0: never wait)")
    p.add_argument("--out", help="write the results as JSON here")
    # worker options
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--allreduce-repeats", type=int, default=30, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.worker:
        worker(opts)
    else:
        driver(opts)


if __name__ == "__main__":
    main()
