"""``cbptt bench``: the benchmark suite of a source checkout (``python -m benchmarks``), which
is not installed with the package."""
import importlib.util
import os
import runpy
import sys

from .errors import UsageError


def _benchmarks_root():
    """The folder holding the ``benchmarks`` package of a source checkout (the current folder,
    or the checkout this cbptt is installed from in editable mode); "" when ``benchmarks`` is
    importable as it is; None when there is none."""
    here = os.path.dirname(os.path.abspath(__file__))       # src/cbptt/cli
    for root in (os.getcwd(), os.path.dirname(os.path.dirname(os.path.dirname(here)))):
        if (os.path.isfile(os.path.join(root, "benchmarks", "__main__.py"))
                and os.path.isfile(os.path.join(root, "pyproject.toml"))):
            return root
    try:
        if importlib.util.find_spec("benchmarks.__main__") is not None:
            return ""
    except (ImportError, ValueError):
        pass
    return None


def run_bench(args):
    """Run ``python -m benchmarks ARGS`` in this process; returns its exit code."""
    root = _benchmarks_root()
    if root is None:
        raise UsageError("cbptt bench runs the benchmark suite of a source checkout: run it "
                         "from the root of a cbptt git clone (the benchmarks/ folder is not "
                         "installed)")
    if root and os.path.abspath(root) not in [os.path.abspath(p or ".") for p in sys.path]:
        sys.path.insert(0, root)
    saved = sys.argv
    sys.argv = ["python -m benchmarks"] + list(args)
    try:
        runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0
