"""What test modules in tests/core and tests/api share besides conftest.py's fixtures: the cells,
one engine call on random data, the team settings, BLAS's thread count, the MPI launcher.

tests/ is on sys.path for pytest (pyproject.toml's pythonpath) and for tests/mpi_worker.py (a
script's folder), so every test module and the worker import it as ``helpers``.
"""
import os
import shutil
import sys

import numpy as np
import pytest

import cbptt
from cbptt import _engine

from reference import CELLS, GATES  # noqa: F401 - the cells and their gate counts, defined once


def set_parts(parts, split="rows"):
    """Every qualifying call on exactly `parts` threads, splitting the per-step products by
    batch rows ("rows": training on one sub-engine per part; "shared": on the engine's own
    buffers) or by columns."""
    cbptt.set_settings(split=split == "rows")
    cbptt.set_settings(team=parts, team_min_flops=0, team_min_batch=2, team_exact=True,
                       team_column_flops=0 if split == "columns" else float("inf"))


def engine_grads(cell, layers, batch, dtype, many_to_one=False, lengths=None, seed=0,
                 hidden=10):
    """One loss_and_grad call of a fresh Engine on random data (6 steps, 3 inputs, 2 outputs,
    an h0 and its gradient): what it returned and wrote, the model, the data and the engine."""
    rng = np.random.default_rng(seed)
    steps, inputs, outputs = 6, 3, 2
    model = cbptt.RNN(inputs, hidden, outputs, cell=cell, num_layers=layers, seed=seed,
                      dtype=dtype)
    X = rng.standard_normal((batch, steps, inputs)).astype(dtype)
    Y = rng.standard_normal((batch, outputs) if many_to_one else
                            (batch, steps, outputs)).astype(dtype)
    h0 = rng.standard_normal((layers, batch, hidden)).astype(dtype)
    engine = _engine.Engine(cell, layers, inputs, hidden, outputs, batch, steps, dtype,
                            many_to_one=many_to_one)
    grads = np.zeros_like(model.params)
    dh0 = np.zeros_like(h0)
    h_final = np.zeros_like(h0)
    loss = engine.loss_and_grad(X, Y, model.params, grads, h0=h0, dh0=dh0, h_final=h_final,
                                lengths=lengths)
    return dict(loss=loss, grads=grads, dh0=dh0, h_final=h_final,
                sq_norm=engine.grad_sq_norm, parts=engine.last_parts, model=model, X=X, Y=Y,
                h0=h0, engine=engine)


def scipy_blas_threads():
    """SciPy's OpenBLAS thread count, read through the getter the engine uses."""
    import ctypes
    from cbptt._threads import find_thread_control
    getter = find_thread_control()[1]
    return ctypes.CFUNCTYPE(ctypes.c_int)(getter)()


def find_mpiexec():
    """mpiexec beside this Python (the MPICH wheel installs it into the venv's bin), else on
    PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


def mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return find_mpiexec() is not None


REQUIRED = bool(os.environ.get("CBPTT_REQUIRE_MPI"))     # set by .ci/run: never skip there
needs_mpi = pytest.mark.skipif(not (mpi_available() or REQUIRED),
                               reason='mpi4py or mpiexec not installed (pip install -e ".[mpi]")')


def run_main(capsys, *args):
    """(exit code, stdout, stderr) of the command (in this process) with these arguments."""
    from cbptt import cli
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *args):
    """The command's stdout, asserting it exited 0."""
    code, out, err = run_main(capsys, *args)
    assert code == 0, (args, out, err)
    return out


# what Python's objects add to a memory-bounded step's arrays (tracemalloc counts them): the
# arrays' headers and NumPy's cache of small blocks, 14 KiB measured at one thread for the
# smallest models (bounded.MemoryPlan counts the arrays' bytes)
PYTHON_OBJECT_BYTES = 16 * 2 ** 10


def assert_same_loss_and_grads(got, want, rtol=1e-10):
    """(loss, {name: gradient}) pairs equal to rounding: the loss to 1e-12, each gradient to
    rtol (memory-bounded steps against unbounded ones)."""
    (loss, grads), (want_loss, want_grads) = got, want
    assert loss == pytest.approx(want_loss, rel=1e-12, abs=1e-15)
    assert grads.keys() == want_grads.keys()
    for name in want_grads:
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=rtol, atol=1e-13,
                                   err_msg=name)
