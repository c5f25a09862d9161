"""What dropout costs a training step: cbptt's step with dropout and recurrent dropout against
the same step without, in one process, alternating blocks of steps so both see the same
machine over the same seconds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.dropout_cost
    python -m benchmarks.dropout_cost --shapes medium --threads 1 --blocks 9

Rows: the grid's shapes (benchmarks/grid.py) with two layers, every cell, many-to-many, SGD
step, float32. For each, three models with the same weights: no dropout, ``dropout=0.3``
(between the two layers) and ``dropout=0.3, recurrent_dropout=0.3``. Prints the median step
of each and its ratio to the one without (the issue's target: at most 1.10).
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

import cbptt

from .grid import CELLS, SHAPES

VARIANTS = {"none": {}, "dropout": {"dropout": 0.3},
            "both": {"dropout": 0.3, "recurrent_dropout": 0.3}}


def trainers(shape, cell, dtype):
    """{variant: (trainer, X, Y)} with the same weights and data."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((shape.B, shape.T, shape.I)).astype(dtype)
    Y = rng.standard_normal((shape.B, shape.T, shape.O)).astype(dtype)
    out = {}
    for name, rates in VARIANTS.items():
        model = cbptt.RNN(shape.I, shape.H, shape.O, cell=cell, num_layers=2, dtype=dtype,
                          seed=0, **rates)
        out[name] = (cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=1e-4), seed=0), X, Y)
    return out


def time_row(shape, cell, dtype, blocks, per_block):
    runs = trainers(shape, cell, dtype)
    for trainer, X, Y in runs.values():        # warm up: workspaces, caches
        for _ in range(2):
            trainer.step(X, Y)
    samples = {name: [] for name in runs}
    for block in range(blocks):
        order = list(runs) if block % 2 == 0 else list(runs)[::-1]
        for name in order:
            trainer, X, Y = runs[name]
            t0 = time.perf_counter()
            for _ in range(per_block):
                trainer.step(X, Y)
            samples[name].append((time.perf_counter() - t0) / per_block)
    median = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
    return {"shape": shape.name, "cell": cell, "ms": median,
            "ratio": {name: median[name] / median["none"] for name in median}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="medium,long")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--per-block", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits
    shapes = {s.name: s for s in SHAPES}
    rows = []
    with threadpool_limits(args.threads):
        print(f"dropout cost, float32, 2 layers, many-to-many, {args.threads} thread(s); "
              f"median ms a step and ratio to no dropout")
        for name in args.shapes.split(","):
            for cell in args.cells.split(","):
                row = time_row(shapes[name], cell, np.float32, args.blocks, args.per_block)
                rows.append(row)
                ms, ratio = row["ms"], row["ratio"]
                print(f"{name:7s} {cell:5s} none {ms['none']:8.2f}  dropout {ms['dropout']:8.2f}"
                      f" ({ratio['dropout']:.3f})  +recurrent {ms['both']:8.2f}"
                      f" ({ratio['both']:.3f})", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "cpu_count": os.cpu_count(), "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
