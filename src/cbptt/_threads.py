"""Find OpenBLAS's thread-count setter and getter in the BLAS that SciPy ships.

cbptt calls BLAS through scipy.linalg.cython_blas. When that BLAS is OpenBLAS >= 0.3.27 it
exports ``openblas_set_num_threads_local``. Despite the name, in SciPy's pthreads build it sets
the thread count of the whole process (it calls ``openblas_set_num_threads``), so the engine
holds it at one thread only for the duration of a call, under a lock shared by every caller
(_core/blas_threads.h): to run the small per-step products of the time loop on one thread, and, with
``openblas_get_num_threads``, to split larger calls over its own team of threads with BLAS on
one thread in each. Anything else (MKL, an older OpenBLAS, a library we cannot locate) leaves
BLAS threading as it is.
"""
import ctypes
import glob
import os

_SETTERS = ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local")
_GETTERS = ("openblas_get_num_threads", "scipy_openblas_get_num_threads")


def _scipy_blas_libraries():
    import scipy

    from ._scipy_blas import preload
    preload()                            # loads the library

    root = os.path.dirname(scipy.__file__)
    patterns = [os.path.join(root + ".libs", "*openblas*"),   # Linux and Windows wheels
                os.path.join(root, ".dylibs", "*openblas*")]   # macOS wheels
    return [path for pattern in patterns for path in sorted(glob.glob(pattern))]


_getter = None     # openblas_get_num_threads, once found
_setter = None     # openblas_set_num_threads_local, once found


def blas_threads():
    """SciPy's OpenBLAS thread count now (1 where it cannot be read)."""
    return 1 if _getter is None else max(1, int(_getter()))


def set_blas_threads(count):
    """Set SciPy's OpenBLAS thread count for the process (not while an engine call runs:
    the thread policy does it once, before training); returns whether it could."""
    if _setter is None:
        return False
    _setter(int(count))
    return True


def find_thread_control():
    """Addresses of openblas_set_num_threads_local and openblas_get_num_threads in SciPy's
    BLAS, or (0, 0) when it has no such setter (CBPTT_NO_THREAD_CONTROL=1: always)."""
    if os.environ.get("CBPTT_NO_THREAD_CONTROL"):
        return 0, 0
    for path in _scipy_blas_libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(library, name) for name in _SETTERS if hasattr(library, name)),
                      None)
        if setter is None:
            continue
        getter = next((getattr(library, name) for name in _GETTERS if hasattr(library, name)),
                      None)
        global _getter, _setter
        _getter = None if getter is None else ctypes.CFUNCTYPE(ctypes.c_int)(
            ctypes.cast(getter, ctypes.c_void_p).value)
        _setter = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(
            ctypes.cast(setter, ctypes.c_void_p).value)
        return (ctypes.cast(setter, ctypes.c_void_p).value or 0,
                0 if getter is None else ctypes.cast(getter, ctypes.c_void_p).value or 0)
    return 0, 0
