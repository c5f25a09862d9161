"""--memory: the peak memory one training step adds, for cbptt and torch, each measured in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks --memory [--shapes medium,large] ...

Method (Linux). For every row and contender the driver starts `python -m benchmarks.memory --worker SPEC`.
The worker imports its library and sets the thread count; runs two steps of a tiny model with the same cell
and trainer (loads the code pages, starts the thread pools, does one-time library initialisation, none of
which belongs to the step); builds the row's model, trainer and data (and, for torch, creates the .grad
tensors, as cbptt's gradient buffer exists from the trainer's construction); collects garbage and disables
the collector. Then, around one step:

    reset the peak (write 5 to /proc/self/clear_refs: VmHWM := VmRSS)
    before = VmRSS
    step()
    peak step memory = VmHWM - before

RSS, not tracemalloc: torch allocates outside Python's allocator, so only the resident set sees both
libraries alike. VmHWM is the kernel's per-process peak RSS, the figure getrusage() reports as ru_maxrss,
but ru_maxrss cannot be reset and, in a process started by another one, also includes the parent's peak from
before exec (the kernel keeps the larger of the two): a worker spawned by a driver that once held 400 MB
reports ru_maxrss >= 400 MB from its first line. The worker records ru_maxrss - VmRSS(before) too; it is the
same number whenever the worker's ru_maxrss before the step was not above its RSS, and the JSON says so
(ru_maxrss_valid). Without /proc/self/clear_refs the report falls back to ru_maxrss and marks the figure.

The first step is reported: it is the one that creates cbptt's workspaces (kept for later steps of the
same shape; trainer._engines[...].workspace_bytes) and torch's autograd graph. The JSON also holds a second
step measured the same way (what a step adds once the first has run).
"""
import argparse
import gc
import json
import subprocess
import sys

import numpy as np

from .facts import ROOT, blas_threads, reset_peak_rss, rss_status, ru_maxrss_bytes
from .grid import SHAPES, TRUNCATED_K, Case, Shape, make_problem

MIB = 2 ** 20
CONTENDERS = ("cbptt", "torch")


# ----------------------------------------------------------------------------------------------- worker
def _measure(step):
    gc.collect()
    reset = reset_peak_rss()
    before, ru_before = rss_status(), ru_maxrss_bytes()
    step()
    after, ru_after = rss_status(), ru_maxrss_bytes()
    rss = before.get("VmRSS")
    out = {"rss_before": rss, "rss_after": after.get("VmRSS"), "hwm_reset": reset,
           "ru_maxrss_before": ru_before, "ru_maxrss_after": ru_after,
           "ru_maxrss_delta": None if rss is None else ru_after - rss,
           "ru_maxrss_valid": rss is not None and ru_before <= rss,
           "hwm_delta": after["VmHWM"] - rss if reset and "VmHWM" in after else None}
    out["peak_delta"] = out["hwm_delta"] if out["hwm_delta"] is not None else out["ru_maxrss_delta"]
    out["method"] = "VmHWM" if out["hwm_delta"] is not None else "ru_maxrss"
    return out


def worker(spec):
    from .contenders import Cbptt, Torch

    shape = next(s for s in SHAPES if s.name == spec["shape"])
    case = Case(shape, spec["cell"], spec["trainer"], np.dtype(spec["dtype"]).type)
    contender = {"cbptt": Cbptt, "torch": Torch}[spec["contender"]]()
    ok, why = contender.available()
    if not ok:
        return {"error": why}
    contender.keep_grads = True
    with blas_threads(spec["threads"]):
        contender.set_threads(spec["threads"])
        tiny_T = 2 * TRUNCATED_K if case.trainer == "truncated" else 10
        tiny = Case(Shape("tiny", 2, tiny_T, shape.I, 4, shape.O), case.cell, case.trainer, case.dtype)
        contender.setup(tiny, make_problem(tiny))
        contender.step()
        contender.step()
        contender.teardown()
        contender.setup(case, make_problem(case))
        gc.disable()
        first = _measure(contender.step)
        second = _measure(contender.step)
        gc.enable()
    result = {"first_step": first, "second_step": second}
    if spec["contender"] == "cbptt":
        result["workspace_bytes"] = contender.workspace_bytes()
    return result


# ----------------------------------------------------------------------------------------------- driver
def _spawn(spec):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--worker", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
    return json.loads(lines[-1])


def _mib(x):
    return "n/a" if x is None else f"{x / MIB:.2f}" if abs(x) < 10 * MIB else f"{x / MIB:.1f}"


SMALL = MIB // 2        # below this, RSS deltas are at the granularity of pages and malloc arenas: no ratio


HEADER = ("| threads | shape (B, T, I, H, O) | trainer | cell | cbptt step MiB | torch step MiB | torch / cbptt "
          "| backward floor MiB | cbptt / floor | cbptt workspace MiB |\n"
          "|---:|---|---|---|---:|---:|---:|---:|---:|---:|")


def table_line(row):
    res = row["contenders"]
    peak = {n: r["first_step"]["peak_delta"] for n, r in res.items() if "error" not in r}
    mark = {n: "" if r["first_step"]["method"] == "VmHWM" else " (ru)" for n, r in res.items() if "error" not in r}
    cells = [str(row["threads"]), row["shape_label"], row["trainer"], row["cell"]]
    cells += [_mib(peak[n]) + mark[n] if n in peak else ("error" if n in res else "n/a") for n in CONTENDERS]
    both = "cbptt" in peak and "torch" in peak
    cells.append("n/a" if not both else f"{peak['torch'] / peak['cbptt']:.2f}×"
                 if min(peak["torch"], peak["cbptt"]) >= SMALL else "(small)")
    cells += [_mib(row["floor_bytes"]), f"{peak['cbptt'] / row['floor_bytes']:.2f}" if "cbptt" in peak else "n/a",
              _mib(res.get("cbptt", {}).get("workspace_bytes"))]
    return "| " + " | ".join(cells) + " |"


def run(opts, cases, contenders):
    """Print and return the memory rows for every thread count and case (contenders: names to measure)."""
    print(HEADER, flush=True)
    rows = []
    for threads in opts.threads:
        for case in cases:
            row = {"threads": threads, "shape": case.shape.name, "shape_label": str(case.shape),
                   "cell": case.cell, "trainer": case.trainer, "floor_bytes": case.backward_floor_bytes(),
                   "contenders": {}}
            for name in contenders:
                spec = {"contender": name, "shape": case.shape.name, "cell": case.cell, "trainer": case.trainer,
                        "dtype": opts.dtype_name, "threads": threads}
                row["contenders"][name] = _spawn(spec)
                if "error" in row["contenders"][name]:
                    print(f"{case.shape.name} {case.trainer} {case.cell} {name}: ERROR "
                          f"{row['contenders'][name]['error']}", file=sys.stderr)
            rows.append(row)
            print(table_line(row), flush=True)
    return rows


def notes(rows, opts):
    ru = [f"{r['shape']} {r['trainer']} {r['cell']} {n}" for r in rows for n, c in r["contenders"].items()
          if "error" not in c and c["first_step"]["method"] != "VmHWM"]
    errors = [f"{r['shape']} {r['trainer']} {r['cell']} {n}: {c['error']}" for r in rows
              for n, c in r["contenders"].items() if "error" in c]
    lines = [
        "",
        f"Peak RSS a first training step adds (dtype {opts.dtype_name}), each contender in a fresh process after a "
        "tiny warm-up model: VmHWM after the step minus VmRSS before it, with VmHWM reset just before the step "
        "(see benchmarks/memory.py). torch's .grad tensors exist before the step, as cbptt's gradient buffer does.",
        "backward floor: what full BPTT must keep (docs/MATHS.md), T·B·H (tanh), 5·T·B·H (GRU), 6·T·B·H "
        f"(LSTM) elements per layer (truncated: T = the {TRUNCATED_K}-step window). cbptt workspace: "
        "Engine.workspace_bytes of the trainer's engines (allocated in the first step, kept for later steps). "
        f"(small): a figure under {SMALL / MIB:g} MiB, at the granularity of pages and malloc arenas, so no ratio.",
    ]
    if ru:
        lines.append("(ru): /proc/self/clear_refs unavailable, ru_maxrss used instead at: " + "; ".join(ru) + ".")
    if errors:
        lines.append("Errors: " + "; ".join(errors) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="memory worker (started by `python -m benchmarks --memory`)")
    p.add_argument("--worker", required=True, help="JSON spec: contender, shape, cell, trainer, dtype, threads")
    print(json.dumps(worker(json.loads(p.parse_args().worker))))
