"""Bit-identity harness: does a change to the engine leave every result the same, bit for bit?

    python -m benchmarks.identity save FILE.npz     # at the baseline commit
    python -m benchmarks.identity check FILE.npz    # after the change: recompute and compare

``save`` runs every configuration of benchmarks/identity_grid.py (cells, depths, float32 and
float64, trainers, losses, masks, lengths, states, prediction, gradient flow, optimiser steps,
1 and 2 BLAS threads; about 1150 configurations) through the public API and stores each array
it produced as "CONFIGURATION/KEY" in FILE. ``check`` recomputes the configurations stored in
FILE and compares every array bitwise (same dtype, shape and bytes: NaN-safe, and -0.0 differs
from 0.0); "meta/last_parts" (the threads each engine's last call ran on) is compared too. It
prints one line per configuration that differs and a summary line; exit status 0 when all are
bit-identical, 1 when any differs, 2 for a missing or foreign FILE. ``-k TEXT`` runs only the
configurations whose name contains TEXT (e.g. ``-k row-m2m-lstm``).

Results depend on the machine (its instruction set, BLAS kernels and cores) and on
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: compare files made on one machine in one environment
(``check`` warns when the recorded environment differs).
"""
import argparse
import io
import json
import os
import sys
import time
import zipfile

import numpy as np

FORMAT = "cbptt-identity"
VERSION = 1
HEADER = "__identity__"
SHOWN = 4               # differing arrays named per configuration
ENVIRONMENT_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                         "OMP_NUM_THREADS", "CBPTT_NO_THREAD_CONTROL")


class FileProblem(Exception):
    """A missing, unreadable or foreign FILE (exit status 2)."""


def environment():
    """What the results depend on besides the code: library versions, the BLAS and its kernels,
    the CPUs, the OpenBLAS environment variables."""
    import platform

    import scipy
    import threadpoolctl

    import cbptt
    blas = sorted(({key: info.get(key) for key in ("internal_api", "version", "architecture",
                                                   "prefix")}
                   for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"),
                  key=lambda info: json.dumps(info, sort_keys=True))
    return {"cbptt": cbptt.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "blas": blas, "variables": {name: os.environ.get(name)
                                        for name in ENVIRONMENT_VARIABLES}}


def select(cases, pattern):
    return [case for case in cases if pattern is None or pattern in case.name]


def save(path, pattern):
    from .identity_grid import all_cases, run_case
    cases = select(all_cases(), pattern)
    if not cases:
        raise FileProblem(f"no configuration name contains {pattern!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileProblem(f"{path}: no folder {folder}")
    start = time.perf_counter()
    arrays = {}
    for case in cases:
        for key, value in run_case(case).items():
            arrays[f"{case.name}/{key}"] = value
    elapsed = time.perf_counter() - start
    header = {"format": FORMAT, "version": VERSION, "configurations": [c.name for c in cases],
              "environment": environment()}
    buffer = io.BytesIO()
    np.savez(buffer, **{HEADER: np.array(json.dumps(header))}, **arrays)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as stream:
            stream.write(buffer.getvalue())
        os.replace(temporary, path)
    except OSError as exc:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise FileProblem(f"{path}: cannot write it ({exc.strerror})") from exc
    print(f"{len(cases)} configurations, {len(arrays)} arrays computed in {elapsed:.1f} s, "
          f"saved to {path}")


def load(path):
    """(header, {key: array}) of a file written by save; FileProblem otherwise."""
    if not os.path.exists(path):
        raise FileProblem(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile) or HEADER not in data.files:
                raise FileProblem(f"{path}: not a file of benchmarks.identity (no {HEADER})")
            header = json.loads(str(data[HEADER]))
            arrays = {key: data[key] for key in data.files if key != HEADER}
    except FileProblem:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise FileProblem(f"{path}: not a file of benchmarks.identity, or a damaged one "
                          f"({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FileProblem(f"{path}: not a file of benchmarks.identity (format "
                          f"{header.get('format') if isinstance(header, dict) else header!r})")
    if header.get("version") != VERSION or not isinstance(header.get("configurations"), list):
        raise FileProblem(f"{path}: format version {header.get('version')}, this harness reads "
                          f"{VERSION}")
    return header, arrays


def bit_identical(saved, computed):
    """Same dtype, shape and bytes (NaN-safe; -0.0 and 0.0 differ)."""
    return (saved.dtype == computed.dtype and saved.shape == computed.shape and
            np.array_equal(np.ascontiguousarray(saved).reshape(-1).view(np.uint8),
                           np.ascontiguousarray(computed).reshape(-1).view(np.uint8)))


def describe(key, saved, computed):
    """How one array differs, in a few words."""
    if saved is None:
        return f"{key} (new, not in the file)"
    if computed is None:
        return f"{key} (not computed)"
    if saved.dtype != computed.dtype or saved.shape != computed.shape:
        return (f"{key} ({saved.dtype}{list(saved.shape)} now "
                f"{computed.dtype}{list(computed.shape)})")
    if key.startswith("meta/last_parts"):
        return f"{key} (threads {saved.tolist()} now {computed.tolist()})"
    a, b = saved.astype(np.float64), computed.astype(np.float64)
    unequal = ~(((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b)))
    finite = unequal & np.isfinite(a) & np.isfinite(b)
    worst = (f"max abs diff {np.abs(a - b)[finite].max():.3g}" if finite.any() else
             "NaN or Inf differ")
    return f"{key} ({worst}, {int(unequal.sum())} of {a.size} elements)"


def compare(saved, computed):
    """Descriptions of the differing arrays of one configuration, the thread counts first
    (empty: bit-identical)."""
    problems = []
    keys = sorted(set(saved) | set(computed), key=lambda key: (not key.startswith("meta/"), key))
    for key in keys:
        old, new = saved.get(key), computed.get(key)
        if old is None or new is None or not bit_identical(old, new):
            problems.append(describe(key, old, new))
    return problems


def check(path, pattern):
    from .identity_grid import all_cases, run_case
    header, arrays = load(path)
    warn_environment(path, header.get("environment", {}))
    grid = {case.name: case for case in all_cases()}
    names = [name for name in header["configurations"] if pattern is None or pattern in name]
    if not names:
        raise FileProblem(f"{path}: no configuration name contains {pattern!r}")
    by_configuration = {}
    for key, value in arrays.items():
        name, _, array_key = key.partition("/")
        by_configuration.setdefault(name, {})[array_key] = value
    start = time.perf_counter()
    differing = compared = 0
    for name in names:
        saved = by_configuration.get(name, {})
        if name not in grid:
            problems = ["not in this version's grid (benchmarks/identity_grid.py)"]
        else:
            problems = compare(saved, run_case(grid[name]))
        compared += len(saved)
        if problems:
            differing += 1
            more = f"; and {len(problems) - SHOWN} more arrays" if len(problems) > SHOWN else ""
            print(f"{name}: " + "; ".join(problems[:SHOWN]) + more)
    elapsed = time.perf_counter() - start
    unsaved = [name for name in grid if name not in header["configurations"] and
               (pattern is None or pattern in name)]
    if unsaved:
        print(f"note: {len(unsaved)} configurations of the grid are not in {path} "
              f"(not checked), e.g. {unsaved[0]}")
    verdict = "all bit-identical" if not differing else f"{differing} differ"
    print(f"{len(names)} configurations, {compared} arrays, {verdict} ({elapsed:.1f} s)")
    return 1 if differing else 0


def warn_environment(path, recorded):
    """A warning on stderr for every fact of the environment that differs from FILE's."""
    current = environment()
    for key in sorted(set(recorded) | set(current)):
        if recorded.get(key) != current.get(key):
            print(f"warning: {path} was made with {key} = {recorded.get(key)!r}, this run has "
                  f"{current.get(key)!r}: results may differ for that reason", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.identity",
        description="Save every result of a grid of configurations, or check that they are "
                    "bit-identical to a saved file.")
    parser.add_argument("command", choices=("save", "check"))
    parser.add_argument("file", help="the .npz file to write (save) or compare with (check)")
    parser.add_argument("-k", dest="pattern", default=None,
                        help="only the configurations whose name contains this text")
    options = parser.parse_args(argv)
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        print("benchmarks.identity needs threadpoolctl (pip install threadpoolctl)",
              file=sys.stderr)
        return 2
    try:
        if options.command == "save":
            save(options.file, options.pattern)
            return 0
        return check(options.file, options.pattern)
    except FileProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
