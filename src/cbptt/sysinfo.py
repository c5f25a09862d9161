"""cbptt.show_config(): what cbptt was built with and runs on, as numpy.show_config() does.

For bug reports and for reading benchmarks: which kernels run (the instruction set compiled in
and the one in use, which CBPTT_ISA caps), which BLAS SciPy brings (cbptt calls SciPy's) with
its version, the kernels it picked for this processor and its thread count, whether the
engine can split calls over its own team of threads, and the thread policy in force (how
many threads a call runs on, and why: thread_policy.py).
"""
import ctypes
import os
import platform
import sys

MODES = ("stdout", "dicts")
_GET_CONFIG = ("openblas_get_config", "scipy_openblas_get_config")
_GET_CORENAME = ("openblas_get_corename", "scipy_openblas_get_corename")
_GET_THREADS = ("openblas_get_num_threads", "scipy_openblas_get_num_threads")


def _symbol(library, names, restype):
    function = next((getattr(library, name) for name in names if hasattr(library, name)), None)
    if function is not None:
        function.restype = restype
        function.argtypes = []
    return function


def _blas_from_threadpoolctl(paths):
    """threadpoolctl's record of SciPy's BLAS (the library at one of paths), or None without
    threadpoolctl or such a record."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    real = {os.path.realpath(path) for path in paths}
    ours = [info for info in threadpoolctl.threadpool_info()
            if os.path.realpath(info.get("filepath", "")) in real]
    if not ours:
        return None
    info = ours[0]
    return {"library": info.get("internal_api"), "version": info.get("version"),
            "core_type": info.get("architecture"), "threads": info.get("num_threads"),
            "source": "threadpoolctl"}


def _blas_from_openblas(paths):
    """The same read from SciPy's OpenBLAS itself (what threadpoolctl calls), or None."""
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        get_config = _symbol(library, _GET_CONFIG, ctypes.c_char_p)
        if get_config is None:
            continue
        get_corename = _symbol(library, _GET_CORENAME, ctypes.c_char_p)
        get_threads = _symbol(library, _GET_THREADS, ctypes.c_int)
        config = (get_config() or b"").decode(errors="replace").split()
        return {"library": "openblas", "version": config[1] if len(config) > 1 else None,
                "core_type": get_corename().decode(errors="replace") if get_corename else None,
                "threads": get_threads() if get_threads else None, "source": "openblas"}
    return None


def _blas_from_scipy():
    """SciPy's build record (the library it was built against, not the kernels picked here:
    those are OPENBLAS_CORETYPE's when it is set)."""
    import scipy

    blas = scipy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return {"library": blas.get("name"), "version": blas.get("version"),
            "core_type": os.environ.get("OPENBLAS_CORETYPE"), "threads": None,
            "source": "scipy.show_config"}


def blas_info():
    """SciPy's BLAS: library, version, core_type (the kernels it runs here), threads, and
    source (where that was read: threadpoolctl, openblas, or scipy.show_config)."""
    from ._threads import _scipy_blas_libraries

    paths = _scipy_blas_libraries()
    return _blas_from_threadpoolctl(paths) or _blas_from_openblas(paths) or _blas_from_scipy()


def config():
    """show_config's record as nested dicts: cbptt, blas, python."""
    import numpy
    import scipy

    import cbptt

    from . import _engine, _isa, thread_policy

    return {
        "cbptt": {"version": cbptt.__version__, "isa_compiled": _isa.isa_compiled(),
                  "isa_in_use": _isa.isa_in_use(), "CBPTT_ISA": _isa.isa_requested(),
                  "panels": bool(_engine.panels_supported()),
                  "team_available": bool(_engine.team_available())},
        "blas": blas_info(),
        "threads": thread_policy.describe(),
        "python": {"version": platform.python_version(), "implementation":
                   platform.python_implementation(), "machine": platform.machine(),
                   "numpy": numpy.__version__, "scipy": scipy.__version__},
    }


def show_config(mode="stdout"):
    """Print cbptt's build and run-time configuration (mode="stdout"), or return it as a dict
    of dicts (mode="dicts"): cbptt (version, isa_compiled, isa_in_use, CBPTT_ISA, panels,
    team_available), blas (library, version, core_type, threads, source), threads (the thread
    policy: threads, policy, reason, blas_threads, cores, runnable, mpi_local_ranks), python
    (version, implementation, machine, numpy, scipy)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    record = config()
    if mode == "dicts":
        return record
    for section, values in record.items():
        sys.stdout.write(f"{section}:\n")
        for key, value in values.items():
            sys.stdout.write(f"  {key}: {'-' if value is None else value}\n")
    return None
