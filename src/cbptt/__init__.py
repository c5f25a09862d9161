"""cbptt: exact, fast backpropagation through time for recurrent networks on the CPU."""
from ._engine import Engine, param_count, param_layout
from .diagnostics import gradcheck
from .losses import LOSSES
from .model import RNN, load
from .optim import SGD, Adam, Optimizer
from .trainers import ManyToMany, ManyToOne
from .truncated import Truncated

__version__ = "0.1.0"
__all__ = ["RNN", "load", "ManyToMany", "ManyToOne", "Truncated", "gradcheck", "SGD", "Adam", "Optimizer", "LOSSES",
           "Engine", "param_layout", "param_count"]
