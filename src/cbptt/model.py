"""The model: a stack of recurrent layers and a linear head, its parameters in one flat buffer."""
import os
import threading

import numpy as np

from . import _checks, archive, embedding, memory
from ._engine import GATES, Engine, param_count, param_layout
from .bidirectional import Bidirectional
from .bidirectional import layout as bidirectional_layout
from .names import CELLS


class RNN:
    """A stacked recurrent network with a linear head on the top layer, as
    ``torch.nn.RNN``/``LSTM``/``GRU(batch_first=True)`` followed by ``torch.nn.Linear``.

    - "tanh", "relu" (Elman): ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.
    - "lstm": gates i, f, g, o stacked in W_ih (4H, I), W_hh (4H, H); ``c_t = f c_{t-1} + i g``,
      ``h_t = o tanh(c_t)``; the state is (h, c).
    - "gru": gates r, z, n stacked in W_ih (3H, I), W_hh (3H, H);
      ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``.

    The head gives ``y_t = h_t^top W^T + b``.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        I, H and O. ``output_size=None`` makes a model without a head (its ``state_dict()``
        has no ``head.*``): an encoder only, which trainers and ``predict`` refuse.
    cell : {"tanh", "relu", "lstm", "gru"}
    num_layers : int
    dtype : float32 or float64
        Decides the dtype of every computation; other float inputs are converted once.
    seed : int or None
        Seeds PyTorch's initialisation, uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter
        (an embedding: normal(0, 1), as torch.nn.Embedding).
    vocab_size, padding_idx : int or None
        ``vocab_size=V``: the model reads token ids (B, T) in [0, V) through an embedding
        table ``embedding.weight`` (V, input_size), trained with the rest, as
        ``torch.nn.Embedding(V, input_size, padding_idx)`` (see embedding.py). Its entry comes
        last in ``params``: the other parameters are those of the model without it.
    bidirectional : bool
        Each layer runs forward and backward in time, as torch's ``bidirectional=True``.
    dropout, recurrent_dropout : float in [0, 1)
        Training only (trainers' ``step`` and ``loss_and_grad``; never ``predict`` or
        ``generate``), inverted (kept units scaled by 1/(1-p)). ``dropout=p``: as torch, on
        every layer's outputs but the top one's (the next layer's input), one mask entry per
        row, step and unit. ``recurrent_dropout=q``: one mask per sequence, layer and call on
        h_{t-1} where it enters the recurrent product (Gal and Ghahramani 2016; Keras's
        ``recurrent_dropout``; GRU's update ``z h_{t-1}`` reads it unmasked). The masks are drawn
        inside the engine from the trainer's ``seed`` and call count (``_core/dropout.pxd``).

    Raises ``cbptt.memory.InsufficientMemory`` (a MemoryError naming the bytes needed and
    available) before allocating when the parameters cannot fit in memory; so do trainers
    (gradients, optimiser state) and steps or predictions (their workspace, see
    ``make_engine``).

    Attributes
    ----------
    params : ndarray (num_parameters,)
        Every parameter, flat, in ``state_dict()`` order; ``named_parameters()`` gives views.
    """

    def __init__(self, input_size, hidden_size, output_size, cell="tanh", num_layers=1,
                 dtype=np.float64, seed=None, vocab_size=None, padding_idx=None,
                 bidirectional=False, dropout=0.0, recurrent_dropout=0.0):
        self.input_size = _checks.check_size(input_size, "input_size")
        self.hidden_size = _checks.check_size(hidden_size, "hidden_size")
        # None: no head, an encoder only (see has_head)
        self.output_size = (None if output_size is None else
                            _checks.check_size(output_size, "output_size"))
        self.num_layers = _checks.check_size(num_layers, "num_layers")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.cell = cell
        self.dtype = _checks.check_dtype(dtype)
        self.seed = seed
        self.vocab_size = (None if vocab_size is None else
                           _checks.check_size(vocab_size, "vocab_size"))
        if padding_idx is not None and (self.vocab_size is None or isinstance(
                padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) or
                not 0 <= padding_idx < self.vocab_size):
            raise ValueError(f"padding_idx must be an id in [0, vocab_size) of a model with a "
                             f"vocab_size, got {padding_idx!r}")
        self.padding_idx = None if padding_idx is None else int(padding_idx)
        self.bidirectional = bool(bidirectional)
        self.dropout = _checks.check_rate(dropout, "dropout")
        self.recurrent_dropout = _checks.check_rate(recurrent_dropout, "recurrent_dropout")
        # the (h, c) states' first axis: a layer's, or a layer's two directions' (torch's)
        self.state_layers = self.num_layers * (2 if self.bidirectional else 1)
        if self.bidirectional:      # torch's layout, one engine block a layer and direction
            self._layout = bidirectional_layout(cell, self.num_layers, self.input_size,
                                                self.hidden_size, self.output_size)
        else:
            # the engine's layout; a model without a head keeps everything before the head's
            # entries, which come last (so its recurrent weights are a headed model's, seed
            # for seed)
            layout = param_layout(cell, self.num_layers, self.input_size, self.hidden_size,
                                  self.output_size or 1)
            self._layout = [entry for entry in layout
                            if self.has_head or not entry[0].startswith("head.")]
        count = sum(int(np.prod(shape)) for _, shape, _ in self._layout)
        self.engine_size = count        # the entries the engine reads: all but the embedding
        if self.vocab_size is not None:
            self._layout.append(("embedding.weight", (self.vocab_size, self.input_size), count))
            count += self.vocab_size * self.input_size
        memory.require(count * self.dtype.itemsize,
                       f"{self!r}: the buffer of its {count:,} parameters")
        self.params = np.empty(count, self.dtype)
        self._views = {name: self.params[offset:offset + int(np.prod(shape))].reshape(shape)
                       for name, shape, offset in self._layout}
        self._predict_engine = None
        # Serialises the trainers and predict calls that share this model across threads.
        self.lock = threading.RLock()
        self.reset_parameters(seed)

    # -- configuration ------------------------------------------------------------------------
    @property
    def gates(self):
        """Gate blocks stacked in each weight matrix (1 Elman, 4 LSTM, 3 GRU)."""
        return GATES[self.cell]

    @property
    def has_head(self):
        """Whether the model has its linear head (``output_size`` given). A model without one
        (``output_size=None``) is an encoder only: it has no outputs, so trainers, ``predict``
        and the engine refuse it."""
        return self.output_size is not None

    def require_head(self, what):
        """ValueError naming ``what`` unless the model has a head."""
        if not self.has_head:
            raise ValueError(f"model: {what} needs outputs, and {self!r} has no head "
                             f"(output_size=None: an encoder only); give it an output_size")

    @property
    def num_parameters(self):
        return self.params.size

    def config(self):
        """The constructor's arguments (without seed), as plain values."""
        config = {"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "output_size": self.output_size, "cell": self.cell,
                  "num_layers": self.num_layers, "dtype": self.dtype.name}
        if self.vocab_size is not None:
            config.update(vocab_size=self.vocab_size, padding_idx=self.padding_idx)
        if self.bidirectional:
            config.update(bidirectional=True)
        if self.dropout:
            config.update(dropout=self.dropout)
        if self.recurrent_dropout:
            config.update(recurrent_dropout=self.recurrent_dropout)
        return config

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
            if name == "embedding.weight":
                self._views[name][...] = rng.standard_normal(shape)
                if self.padding_idx is not None:
                    self._views[name][self.padding_idx] = 0
            else:
                self._views[name][...] = rng.uniform(-bound, bound, size=shape)

    def named_parameter(self, name):
        """The view of one parameter (a state_dict key)."""
        return self._views[name]

    def head_grads(self, grads):
        """(head.weight, head.bias) views of a flat buffer laid out as the parameters."""
        return tuple(grads[offset:offset + int(np.prod(shape))].reshape(shape)
                     for name, shape, offset in self._layout if name.startswith("head."))

    def layer_params(self, layer, direction, buffer=None):
        """A bidirectional model's block of layer `layer`, direction 0 (forward) or 1
        (reverse), in params (or a buffer laid out as them): a one-layer engine's flat
        layout."""
        buffer = self.params if buffer is None else buffer
        name = f"weight_ih_l{layer}" + ("_reverse" if direction else "")
        offset = next(start for key, _, start in self._layout if key == name)
        size = self.input_size if layer == 0 else 2 * self.hidden_size
        return buffer[offset:offset + param_count(self.cell, 1, size, self.hidden_size, 0)]

    def make_layer_engine(self, layer, batch, steps, training=True, ids=False):
        """A one-layer engine without a head for layer `layer` of a bidirectional model
        (either direction): its forward and backward phases (see bidirectional.py)."""
        size = self.input_size if layer == 0 else 2 * self.hidden_size
        memory.require(self.dtype.itemsize * memory.step_elements(
            self.cell, 1, size, self.hidden_size, 0, batch, steps, training, True,
            recurrent_dropout=self.recurrent_dropout),
            f"the workspace of layer {layer} of {self!r} on {batch} sequences of {steps} steps")
        return Engine(self.cell, 1, size, self.hidden_size, 0, batch, steps, self.dtype,
                      many_to_one=True, training=training, ids=ids,
                      recurrent_dropout=self.recurrent_dropout if training else 0)

    @property
    def engine_params(self):
        """The entries of ``params`` the engine reads (all but an embedding's), a view."""
        return self.params[:self.engine_size]

    def engine_inputs(self, X, name="X"):
        """(the engine's input, token ids or None) for X: a model with an embedding reads
        ids (B, T) and gives the engine their rows (B, T, E); any other model gives it X
        checked (floats (B, T, I) or ids (B, T), see _checks.sequence_batch)."""
        if self.vocab_size is None:
            return _checks.sequence_batch(X, self.input_size, self.dtype, name), None
        ids = embedding.check_ids(X, self.vocab_size, name)
        return embedding.lookup(self._views["embedding.weight"], ids), ids

    def use_buffer(self, buffer):
        """Move the parameters into ``buffer`` (flat, ``num_parameters`` entries of the model's
        dtype; a Seq2Seq gives each half a slice of one buffer, which its optimiser steps as
        one): ``params`` and every view then live there, with the same values."""
        if (not isinstance(buffer, np.ndarray) or buffer.dtype != self.dtype or
                buffer.shape != self.params.shape or not buffer.flags.c_contiguous):
            raise ValueError(f"buffer: expected a C-contiguous {self.dtype} array of shape "
                             f"{self.params.shape}")
        buffer[...] = self.params
        self.params = buffer
        self._views = {name: buffer[offset:offset + int(np.prod(shape))].reshape(shape)
                       for name, shape, offset in self._layout}

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
            value = _checks._as_array(state[name], f"state dict key {name!r}")
            if value.shape != view.shape:
                raise ValueError(f"state dict key {name!r}: expected shape {view.shape}, got "
                                 f"{value.shape}")
            converted[name] = _checks.float_array(value, f"state dict key {name!r}",
                                                  self.dtype, view.shape)
        for name, value in converted.items():
            self._views[name][...] = value

    # -- PyTorch exchange (torch is imported only here) ----------------------------------------
    @classmethod
    def from_torch(cls, rnn_module, head_module, dtype=None, embedding=None):
        """A model with the weights of ``torch.nn.RNN``/``LSTM``/``GRU`` (batch_first, biases,
        no projections; its dropout too) and the ``torch.nn.Linear`` head (None:
        a model without a head), and of a ``torch.nn.Embedding`` below it if given. dtype
        defaults to the torch module's (float32 or float64)."""
        import torch

        kinds = {torch.nn.LSTM: "lstm", torch.nn.GRU: "gru"}
        if type(rnn_module) in kinds:
            cell = kinds[type(rnn_module)]
        elif isinstance(rnn_module, torch.nn.RNN):
            cell = rnn_module.nonlinearity
        else:
            raise TypeError(f"rnn_module must be torch.nn.RNN, LSTM or GRU, got "
                            f"{type(rnn_module).__name__}")
        if head_module is not None and not isinstance(head_module, torch.nn.Linear):
            raise TypeError(f"head_module must be torch.nn.Linear or None, got "
                            f"{type(head_module).__name__}")
        unsupported = [name for name, bad in (
            ("bias=False", not rnn_module.bias),
            ("batch_first=False", not rnn_module.batch_first),
            ("proj_size", getattr(rnn_module, "proj_size", 0)),
            ("head without bias", head_module is not None and head_module.bias is None))
            if bad]
        if unsupported:
            raise ValueError(f"cannot convert a torch module with {', '.join(unsupported)}")
        if embedding is not None and (not isinstance(embedding, torch.nn.Embedding) or
                                      embedding.embedding_dim != rnn_module.input_size or
                                      embedding.max_norm is not None):
            raise ValueError(f"embedding must be a torch.nn.Embedding of embedding_dim "
                             f"{rnn_module.input_size} (rnn_module.input_size), without "
                             f"max_norm; got {embedding!r}")
        width = rnn_module.hidden_size * (2 if rnn_module.bidirectional else 1)
        if head_module is not None and head_module.in_features != width:
            raise ValueError(f"head_module.in_features ({head_module.in_features}) must equal "
                             f"the rnn's output width ({width}: hidden_size"
                             f"{' x 2, bidirectional' if rnn_module.bidirectional else ''})")
        state = {k: v.detach().cpu().numpy() for k, v in rnn_module.state_dict().items()}
        if head_module is not None:
            state.update({f"head.{k}": v.detach().cpu().numpy()
                          for k, v in head_module.state_dict().items()})
        if embedding is not None:
            state["embedding.weight"] = embedding.weight.detach().cpu().numpy()
        if dtype is None:
            dtype = state["weight_ih_l0"].dtype
        model = cls(rnn_module.input_size, rnn_module.hidden_size,
                    None if head_module is None else head_module.out_features, cell=cell,
                    num_layers=rnn_module.num_layers, dtype=dtype,
                    vocab_size=None if embedding is None else embedding.num_embeddings,
                    padding_idx=None if embedding is None else embedding.padding_idx,
                    bidirectional=rnn_module.bidirectional, dropout=rnn_module.dropout)
        model.load_state_dict(state)
        return model

    def to_torch(self):
        """(rnn_module, head_module): ``torch.nn.RNN``/``LSTM``/``GRU(batch_first=True)`` and
        ``torch.nn.Linear`` (None for a model without a head) in this model's dtype, holding
        copies of its weights (and its dropout: torch has no recurrent dropout, whose model
        is exported without it); a model with an embedding adds a third, its
        ``torch.nn.Embedding``."""
        import torch

        size = (self.input_size, self.hidden_size)
        options = dict(num_layers=self.num_layers, batch_first=True,
                       bidirectional=self.bidirectional, dropout=self.dropout)
        if self.cell == "lstm":
            rnn = torch.nn.LSTM(*size, **options)
        elif self.cell == "gru":
            rnn = torch.nn.GRU(*size, **options)
        else:
            rnn = torch.nn.RNN(*size, nonlinearity=self.cell, **options)
        torch_dtype = torch.float64 if self.dtype == np.float64 else torch.float32
        rnn = rnn.to(torch_dtype)
        state = self.state_dict()
        rnn.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()
                             if not k.startswith(("head.", "embedding."))})
        head = None
        if self.has_head:
            head = torch.nn.Linear(self.hidden_size * (2 if self.bidirectional else 1),
                                   self.output_size).to(torch_dtype)
            head.load_state_dict({k[len("head."):]: torch.from_numpy(v)
                                  for k, v in state.items() if k.startswith("head.")})
        if self.vocab_size is None:
            return rnn, head
        table = torch.nn.Embedding(self.vocab_size, self.input_size,
                                   padding_idx=self.padding_idx).to(torch_dtype)
        with torch.no_grad():
            table.weight.copy_(torch.from_numpy(state["embedding.weight"]))
        return rnn, head, table

    # -- files --------------------------------------------------------------------------------
    def save(self, path):
        """Write the configuration and parameters to a ``.npz`` file, atomically: the data
        goes to a temporary file in the same folder, is flushed to disk, then renamed over
        path, so a crash leaves either the old file or the new one, whole. As with
        ``numpy.savez``, ".npz" is appended to a path without it."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        archive.write_archive(path, archive.model_entries(self))

    # -- workspaces ---------------------------------------------------------------------------
    def make_engine(self, batch, steps, training=True, many_to_one=False, loss="mse",
                    loss_start=0, ids=False):
        """A workspace (``cbptt.Engine``) for sequences of this model's shape, (batch, steps)
        at a time: for training (the loss, many-to-one or not, the first step with a loss) or,
        with ``training=False``, for ``predict``; ``ids``: for token ids (B, T) rather than
        float inputs (B, T, I). Its buffers are allocated by its first
        call; InsufficientMemory first when they cannot fit (``memory.step_bytes``).

        A model without a head makes an encoder's engine only (``many_to_one=True``): no
        outputs and no loss; its final state is each sequence's after its own last step, and
        its BPTT starts from the gradient with respect to that state (see Seq2Seq)."""
        what = "a training step" if training else "a prediction"
        if self.bidirectional:
            raise ValueError(f"{self!r} is bidirectional: each of its layers runs as two "
                             f"engines of its own (make_layer_engine, bidirectional.py)")
        if not many_to_one:
            self.require_head(what)
        memory.require(memory.step_bytes(self, batch, steps, training, many_to_one),
                       f"the workspace of {what} on {batch} sequences of {steps} steps "
                       f"with {self!r}")
        return Engine(self.cell, self.num_layers, self.input_size, self.hidden_size,
                      self.output_size or 0, batch, steps, self.dtype,
                      many_to_one=many_to_one, loss=loss, loss_start=loss_start,
                      training=training, ids=ids, dropout=self.dropout if training else 0,
                      recurrent_dropout=self.recurrent_dropout if training else 0)

    # -- inference ----------------------------------------------------------------------------
    def check_state(self, h0, c0, batch):
        """(h0, c0) as C-contiguous (num_layers, batch, hidden_size) arrays of the model's
        dtype, or None; c0 only for the lstm cell."""
        shape = (self.state_layers, batch, self.hidden_size)
        if c0 is not None and self.cell != "lstm":
            raise ValueError(f"c0 is for the lstm cell only (this model's cell is "
                             f"{self.cell!r})")
        h0 = None if h0 is None else _checks.float_array(h0, "h0", self.dtype, shape)
        c0 = None if c0 is None else _checks.float_array(c0, "c0", self.dtype, shape)
        return h0, c0

    def new_state(self, batch):
        """Empty arrays for a final state: h, or (h, c) for the lstm cell."""
        shape = (self.state_layers, batch, self.hidden_size)
        h = np.empty(shape, self.dtype)
        return (h, np.empty(shape, self.dtype)) if self.cell == "lstm" else (h, None)

    def predict(self, X, h0=None, c0=None, return_state=False, lengths=None):
        """Outputs of the head at every step.

        X (B, T, I), or token ids (B, T) integers in [0, I) (the one-hot input, never made);
        h0 (num_layers, B, H) or None for zeros; c0 likewise, for lstm only.
        Returns Y_hat (B, T, O), and with ``return_state=True`` also the final state:
        h (num_layers, B, H), or the pair (h, c) for lstm. A bidirectional model's states are
        (2 num_layers, B, H) in torch's order, and ``lengths`` (B,) starts each sequence's
        reverse direction at its own last step (its final states are then each sequence's).
        """
        self.require_head("predict")
        X, _ = self.engine_inputs(X)
        batch, steps = X.shape[:2]
        h0, c0 = self.check_state(h0, c0, batch)
        if lengths is not None and not self.bidirectional:
            raise ValueError("lengths is for bidirectional models (a one-way model's output "
                             "at a step does not depend on the steps after it)")
        lengths = _checks.lengths(lengths, batch, steps)
        with self.lock:
            if self.bidirectional:
                return self._predict_bidirectional(X, h0, c0, return_state, lengths)
            return self._predict(X, h0, c0, return_state)

    def _predict_bidirectional(self, X, h0, c0, return_state, lengths):
        batch, steps = X.shape[:2]
        runner = self._predict_engine
        if (runner is None or (runner.batch, runner.steps, runner.ids) !=
                (batch, steps, X.ndim == 2)):
            runner = Bidirectional(self, batch, steps, False, X.ndim == 2)
            self._predict_engine = runner
        top, h_final, c_final = runner.forward(X, lengths, h0, c0)
        out = self.head_of(top)
        if not return_state:
            return out
        return out, (h_final if c_final is None else (h_final, c_final))

    def head_of(self, top):
        """The head's outputs for top-layer states top (..., H or 2H): top @ W^T + b."""
        weight, bias = self._views["head.weight"], self._views["head.bias"]
        return (top.astype(np.float64) @ weight.T.astype(np.float64) + bias).astype(self.dtype)

    def _predict(self, X, h0, c0, return_state):
        batch, steps = X.shape[:2]
        engine = self._predict_engine
        if (engine is None or engine.batch != batch or engine.steps != steps or
                engine.ids != (X.ndim == 2)):
            engine = self.make_engine(batch, steps, training=False, ids=X.ndim == 2)
            self._predict_engine = engine
        out = np.empty((batch, steps, self.output_size), self.dtype)
        h_final, c_final = self.new_state(batch) if return_state else (None, None)
        engine.predict(X, self.engine_params, out, h0, h_final, c0, c_final)
        if not return_state:
            return out
        return out, (h_final if c_final is None else (h_final, c_final))


def load(path):
    """Read a model written by ``RNN.save`` (an RNN) or ``Seq2Seq.save`` (a Seq2Seq). Never
    unpickles; a truncated, corrupted or foreign file gives a ValueError naming the file and
    what is wrong."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path = path + ".npz"       # save() wrote it there
    try:
        entries = archive.read_archive(path, archive.is_model_entry)
        config, state = archive.model_config_and_state(entries)
        if config.get("kind") == "seq2seq":
            from .seq2seq import from_archive
            return from_archive(config, state)
        model = RNN(**config)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise
    except archive.READ_ERRORS as exc:
        raise ValueError(f"{path}: not a cbptt model file, or a damaged one ({exc})") from exc
    return model
