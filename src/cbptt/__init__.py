"""cbptt: exact, fast backpropagation through time for recurrent networks on the CPU."""
from ._scipy_blas import preload as _preload_blas

_preload_blas()

# isort: split
try:
    from . import _isa  # noqa: F401  (first: refuses an unknown CBPTT_ISA)
except ValueError as _exc:
    import os as _os
    import sys as _sys
    if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "cbptt" or \
            getattr(_sys, "orig_argv", [])[1:3] == ["-m", "cbptt"]:
        # the cbptt command: a user's mistake is one line and exit status 2, not a traceback
        print(f"cbptt: {_exc}", file=_sys.stderr)
        raise SystemExit(2) from None
    raise

# isort: split
from ._engine import Engine, _use_local_thread_control, local_thread_control, param_count, \
    param_layout
from ._settings import get_settings, set_settings, settings
from ._threads import find_thread_control
from . import callbacks, schedules
from .bounded import plan_memory
from .diagnostics import gradcheck
from .distributed import DataParallel
from .losses import LOSSES
from .model import RNN, load
from .optim import SGD, Adam, Optimizer
from .seq2seq import Seq2Seq
from .sysinfo import show_config
from .trainers import ManyToMany, ManyToOne
from .truncated import Truncated

__version__ = "0.1.0"
__all__ = ["RNN", "load", "ManyToMany", "ManyToOne", "Truncated", "Seq2Seq", "gradcheck", "SGD", "Adam",
           "Optimizer", "LOSSES", "Engine", "param_layout", "param_count",
           "local_thread_control", "DataParallel", "settings", "get_settings", "set_settings",
           "show_config", "callbacks", "schedules", "plan_memory"]

_use_local_thread_control(*find_thread_control())
