"""Load SciPy's BLAS pointer module before the engine needs it, without SciPy's linalg package.

The compiled engine cimports scipy.linalg.cython_blas, which Python would import through
scipy/linalg/__init__.py: about 100 ms of modules cbptt never uses. That extension module
stands alone, so it is loaded here directly under its own name; if anything about it is not
as expected, the ordinary import runs instead. Either way the engine gets the same BLAS.
"""
import glob
import importlib.util
import os
import sys

NAME = "scipy.linalg.cython_blas"


def preload():
    """Make sure scipy.linalg.cython_blas is in sys.modules; returns the module."""
    if NAME in sys.modules:
        return sys.modules[NAME]
    try:
        import scipy

        folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
        paths = sorted(glob.glob(os.path.join(folder, "cython_blas.*")))
        paths = [p for p in paths if not p.endswith((".pxd", ".pyi", ".py"))]
        spec = importlib.util.spec_from_file_location(NAME, paths[0])
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
        if not hasattr(module, "__pyx_capi__"):
            raise ImportError("no C API table")
        return module
    except Exception:                       # fall back to the ordinary, slower import
        sys.modules.pop(NAME, None)
        import scipy.linalg.cython_blas as module
        return module
