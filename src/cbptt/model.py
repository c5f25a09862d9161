"""The model: a stack of recurrent layers and a linear head, its parameters in one flat buffer."""
import json
import os

import numpy as np

from . import _checks
from ._engine import GATES, Engine, param_count, param_layout

CELLS = ("tanh", "relu")
FORMAT_VERSION = 1


class RNN:
    """A stacked recurrent network with a linear head on the top layer, as
    ``torch.nn.RNN(batch_first=True)`` followed by ``torch.nn.Linear``.

    Elman cells ("tanh", "relu"): ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``;
    the head gives ``y_t = h_t^top W^T + b``.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        I, H and O.
    cell : {"tanh", "relu"}
    num_layers : int
    dtype : float32 or float64
        Decides the dtype of every computation; other float inputs are converted once.
    seed : int or None
        Seeds PyTorch's initialisation, uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter.

    Attributes
    ----------
    params : ndarray (num_parameters,)
        Every parameter, flat, in ``state_dict()`` order; ``named_parameters()`` gives views.
    """

    def __init__(self, input_size, hidden_size, output_size, cell="tanh", num_layers=1,
                 dtype=np.float64, seed=None):
        self.input_size = _checks.check_size(input_size, "input_size")
        self.hidden_size = _checks.check_size(hidden_size, "hidden_size")
        self.output_size = _checks.check_size(output_size, "output_size")
        self.num_layers = _checks.check_size(num_layers, "num_layers")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.cell = cell
        self.dtype = _checks.check_dtype(dtype)
        self.seed = seed
        self._layout = param_layout(cell, self.num_layers, self.input_size, self.hidden_size,
                                    self.output_size)
        self.params = np.empty(param_count(cell, self.num_layers, self.input_size,
                                           self.hidden_size, self.output_size), self.dtype)
        self._views = {name: self.params[offset:offset + int(np.prod(shape))].reshape(shape)
                       for name, shape, offset in self._layout}
        self._predict_engine = None
        self.reset_parameters(seed)

    # -- configuration ------------------------------------------------------------------------
    @property
    def gates(self):
        """Gate blocks stacked in each weight matrix (1 for Elman cells)."""
        return GATES[self.cell]

    @property
    def num_parameters(self):
        return self.params.size

    def config(self):
        """The constructor's arguments (without seed), as plain values."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "output_size": self.output_size, "cell": self.cell,
                "num_layers": self.num_layers, "dtype": self.dtype.name}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"cbptt.RNN({args})"

    # -- parameters ---------------------------------------------------------------------------
    def reset_parameters(self, seed=None):
        """PyTorch's initialisation: every parameter uniform(-1/sqrt(H), 1/sqrt(H)), drawn in
        state_dict order from ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        for name, shape, _ in self._layout:
            self._views[name][...] = rng.uniform(-bound, bound, size=shape)

    def named_parameters(self):
        """(name, view) pairs in state_dict order; the views write through to ``params``."""
        return list(self._views.items())

    def state_dict(self):
        """Copies of every parameter, keyed as torch.nn.RNN(batch_first=True) plus ``head.``."""
        return {name: view.copy() for name, view in self._views.items()}

    def load_state_dict(self, state):
        """Copy parameters in from a mapping of arrays (e.g. a torch state dict turned into
        NumPy). Every key and shape is checked first; on any error nothing is loaded."""
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a mapping of parameter arrays, got "
                            f"{type(state).__name__}")
        missing = [name for name in self._views if name not in state]
        extra = [name for name in state if name not in self._views]
        if missing or extra:
            raise ValueError(f"state dict does not match this model: missing keys {missing}, "
                             f"unexpected keys {extra}")
        converted = {}
        for name, view in self._views.items():
            value = np.asarray(state[name])
            if value.shape != view.shape:
                raise ValueError(f"state dict key {name!r}: expected shape {view.shape}, got "
                                 f"{value.shape}")
            converted[name] = _checks.float_array(value, f"state dict key {name!r}",
                                                  self.dtype, view.shape)
        for name, value in converted.items():
            self._views[name][...] = value

    # -- files --------------------------------------------------------------------------------
    def save(self, path):
        """Write the configuration and parameters to a ``.npz`` file."""
        arrays = {f"param:{name}": view for name, view in self._views.items()}
        header = dict(self.config(), format_version=FORMAT_VERSION)
        np.savez(path, __config__=np.array(json.dumps(header)), **arrays)

    # -- inference ----------------------------------------------------------------------------
    def check_state(self, h0, batch, name="h0"):
        """h0 as a C-contiguous (num_layers, batch, hidden_size) array of the model's dtype."""
        if h0 is None:
            return None
        return _checks.float_array(h0, name, self.dtype,
                                   (self.num_layers, batch, self.hidden_size))

    def predict(self, X, h0=None, return_state=False):
        """Outputs of the head at every step.

        X (B, T, I), h0 (num_layers, B, H) or None for zeros. Returns Y_hat (B, T, O), and the
        final state (num_layers, B, H) too with ``return_state=True``.
        """
        X = _checks.sequence_batch(X, self.input_size, self.dtype)
        batch, steps = X.shape[:2]
        h0 = self.check_state(h0, batch)
        engine = self._predict_engine
        if engine is None or engine.batch != batch or engine.steps != steps:
            engine = Engine(self.cell, self.num_layers, self.input_size, self.hidden_size,
                            self.output_size, batch, steps, self.dtype, training=False)
            self._predict_engine = engine
        out = np.empty((batch, steps, self.output_size), self.dtype)
        h_final = np.empty((self.num_layers, batch, self.hidden_size), self.dtype) \
            if return_state else None
        engine.predict(X, self.params, out, h0, h_final)
        return (out, h_final) if return_state else out


def load(path):
    """Read a model written by ``RNN.save``."""
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as data:
        if "__config__" not in data.files:
            raise ValueError(f"{path}: not a cbptt model file (no __config__ entry)")
        config = json.loads(str(data["__config__"]))
        config.pop("format_version", None)
        model = RNN(**config)
        state = {name[len("param:"):]: data[name] for name in data.files
                 if name.startswith("param:")}
    model.load_state_dict(state)
    return model
