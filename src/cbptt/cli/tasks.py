"""What a run trains on: a character model of a text file (CharTask) or forecasts of a CSV or
.npy series (ForecastTask): loading and checking the data, the model, the arrays ``fit`` reads
and how it batches them, the trainer, the validation metric and the gradient-flow batch. (An
encoder-decoder of source<TAB>target lines: seq2seq_task.py.)"""
import numpy as np

from .. import data
from ..data import DataError
from ..model import RNN
from ..trainers import ManyToMany, ManyToOne
from ..truncated import Truncated
from .errors import UsageError


class _Task:
    """What the tasks share: the loss, and the gradient flow of a few held-out sequences."""

    loss = "mse"
    truncated = False       # Truncated BPTT on streams (else full BPTT on windows)
    many_to_one = False     # one output per window (else one per step)

    def fit_batch_size(self):
        """``fit``'s batch_size: windows (or pairs) a step, or stream steps (k1) a step."""
        return self.config["k1"] if self.truncated else self.config["batch"]

    def model_shapes(self, config):
        """(cell, layers, input size, hidden, output size) of each model the run trains."""
        c = config
        return [(c["cell"], c["layers"], self.input_size, c["hidden"], self.output_size)]

    def step_models(self, config, ranks=1):
        """(shape, batch, steps, many_to_one) of each model's largest step on one of
        ``ranks`` processes (``model_shapes``, ``step_shape``)."""
        return [(self.model_shapes(config)[0],) + self.step_shape(ranks) +
                (self.many_to_one,)]

    def make_model(self, config, dtype):
        """The model of a new run (seeded with config["seed"])."""
        c = config
        return RNN(self.input_size, c["hidden"], self.output_size, cell=c["cell"],
                   num_layers=c["layers"], dtype=dtype, seed=c["seed"], **model_options(c))

    def trained_model(self, model, trainer):
        """What a checkpoint holds and the metrics score: the model."""
        return model

    def flow_trainer(self, model):
        """A full-BPTT trainer of the task's shape, for the gradient flow (no updates)."""
        return ManyToMany(model, loss=self.loss)

    def gradient_flow(self, model):
        """The gradient flow (num_layers, T) of ``flow_batch``, or None without one (or for
        a bidirectional model: flow.csv's rows are layers, its flow's a layer's directions)."""
        batch = self.flow_batch(model.dtype)
        if batch is None or model.bidirectional:
            return None
        return self.flow_trainer(model).loss_and_grad(*batch, return_flow=True)[-1]


class CharTask(_Task):
    """A character model of a text file: next-character prediction with cross-entropy, on
    shuffled non-overlapping windows (ManyToMany) or, with k1, on ``batch`` parallel streams
    (Truncated BPTT(k1, k2))."""

    kind = "char"
    metric = "val_bpc"
    loss = "cross_entropy"

    def __init__(self, config):
        self.config = config
        text = data.read_text(config["data"])
        if "vocab" not in config:
            config["vocab"] = data.build_vocab(text)
        self.vocab = config["vocab"]
        ids = data.encode(text, self.vocab, what=f"{config['data']}")
        cut = data.holdout_start(len(ids), config["val"])
        self.train_ids, self.val_ids = ids[:cut], ids[cut:]
        self.size = len(self.vocab)
        self.output_size = self.size
        # the first layer's input: the characters' one-hot rows (read as token ids), or the
        # rows of an embedding table of config["embedding"] columns
        self.input_size = config.get("embedding") or self.size
        self.truncated = config.get("k1") is not None
        part = (f"the training part of the text ({len(self.train_ids)} of {len(ids)} characters"
                f" with --val {config['val']:g})")
        if self.truncated:
            if len(self.train_ids) - 1 < config["batch"]:
                raise DataError(f"{part} is too short for {config['batch']} streams; use a "
                                f"smaller --batch")
            self.streams = data.char_streams(self.train_ids, config["batch"])
        else:
            if len(self.train_ids) < config["window"] + 1:
                raise DataError(f"{part} is shorter than one window of {config['window']} + 1"
                                f"; use a smaller --window")
            self.windows = data.char_windows(self.train_ids, config["window"])
        if config["val"] > 0:
            need = 2 if self.truncated else config["window"] + 1
            if len(self.val_ids) < need:
                raise DataError(f"the validation part ({len(self.val_ids)} characters, --val "
                                f"{config['val']}) is shorter than "
                                f"{'one window' if not self.truncated else 'two characters'}; "
                                f"use --val 0 or a larger --val")

    def describe(self):
        how = (f"{self.streams.shape[0]} streams of {self.streams.shape[1] - 1} characters, "
               f"truncated BPTT(k1={self.config['k1']}, k2={self.config['k2']})"
               if self.truncated else
               f"{len(self.windows)} windows of {self.config['window']} characters")
        return (f"{len(self.train_ids) + len(self.val_ids)} characters, vocabulary "
                f"{self.size}; training on {how}; {len(self.val_ids)} held-out characters")

    def make_trainer(self, model, optimizer, clip):
        c = self.config
        if self.truncated:
            return Truncated(model, k1=c["k1"], k2=c["k2"], loss=self.loss,
                             optimizer=optimizer, clip_norm=clip, seed=c["seed"])
        return ManyToMany(model, loss=self.loss, optimizer=optimizer, clip_norm=clip,
                          seed=c["seed"], memory_limit=c.get("memory_limit"))

    def step_shape(self, ranks=1):
        """(sequences, steps) of the largest step on one of ``ranks`` processes."""
        batch = -(-self.config["batch"] // ranks)
        if self.truncated:
            return batch, self.config["k2"]
        return batch, self.config["window"]

    @property
    def sequences(self):
        """Training windows per epoch (streams with truncated BPTT)."""
        return len(self.streams) if self.truncated else len(self.windows)

    def fit_data(self):
        """(arrays, keyword arrays) that ``fit`` trains on: the ids of the windows (or of
        the streams, read k1 steps a step) and of their next characters, as views. Token
        ids: the one-hot inputs are never made (the engine gathers W_ih's columns)."""
        ids = self.streams if self.truncated else self.windows
        return [ids[:, :-1], ids[:, 1:]], {}

    def evaluate(self, model):
        """(val loss in nats per character, bits per character)."""
        window = None if self.truncated else self.config["window"]
        loss = data.char_loss(model, self.val_ids, window=window)
        return loss, data.bits(loss)

    def flow_batch(self, dtype):
        """A few held-out windows for the gradient-flow picture."""
        steps = self.config["k2"] if self.truncated else self.config["window"]
        count = min(8, (len(self.val_ids) - 1) // steps)
        if count < 1:
            return None
        ids = np.stack([self.val_ids[i * steps:i * steps + steps + 1] for i in range(count)])
        return np.ascontiguousarray(ids[:, :-1]), ids[:, 1:]

    def make_model(self, config, dtype):
        """The model of a new run: with --embedding, its table below the first layer."""
        if not config.get("embedding"):
            return super().make_model(config, dtype)
        c = config
        return RNN(c["embedding"], c["hidden"], self.size, cell=c["cell"],
                   num_layers=c["layers"], dtype=dtype, seed=c["seed"], vocab_size=self.size,
                   **model_options(c))


class ForecastTask(_Task):
    """Forecasting a CSV or .npy time series: windows of ``window`` rows of the input columns,
    targets ``horizon`` rows ahead (at every step, or at the window's last step only), MSE on
    standardised values (the statistics of the training part, stored with the run)."""

    kind = "forecast"
    metric = "val_rmse"
    loss = "mse"

    def __init__(self, config):
        self.config = c = config
        values, names = data.read_series(c["data"], c["format"])
        inputs, targets = _columns(c, names)
        X_all, Y_all = values[:, inputs], values[:, targets]
        cut = data.holdout_start(len(values), c["val"])
        if "input_mean" not in c:
            c["input_mean"], c["input_std"] = map(list, data.fit_standardisation(X_all[:cut]))
            c["target_mean"], c["target_std"] = map(list, data.fit_standardisation(Y_all[:cut]))
        X_all = data.standardise(X_all, c["input_mean"], c["input_std"])
        Y_all = data.standardise(Y_all, c["target_mean"], c["target_std"])
        self.input_size, self.output_size = len(inputs), len(targets)
        self.rows = len(values)
        if cut < c["window"] + c["horizon"]:
            raise DataError(f"the window ({c['window']} rows) plus the horizon "
                            f"({c['horizon']}) is longer than the training part of the series "
                            f"({cut} of {len(values)} rows with --val {c['val']:g}); use a "
                            f"smaller --window")
        self.X, self.Y = data.forecast_windows(X_all[:cut], Y_all[:cut], c["window"],
                                               c["horizon"], c["mode"])
        self.Xv = self.Yv = None
        if c["val"] > 0:
            try:
                self.Xv, self.Yv = data.forecast_windows(X_all[cut:], Y_all[cut:], c["window"],
                                                         c["horizon"], c["mode"])
            except DataError:
                raise DataError(f"the validation part ({len(values) - cut} rows, --val "
                                f"{c['val']}) is shorter than the window ({c['window']}) plus "
                                f"the horizon ({c['horizon']}); use --val 0, a larger --val or "
                                f"a smaller --window") from None

    def describe(self):
        c = self.config
        ahead = f"{c['horizon']} row{'s' if c['horizon'] > 1 else ''} ahead"
        return (f"{self.rows} rows; input columns [{', '.join(c['input_columns'])}], target "
                f"columns [{', '.join(c['target_columns'])}] {ahead}, {c['mode']}; "
                f"{len(self.X)} training windows of {c['window']} rows, "
                f"{0 if self.Xv is None else len(self.Xv)} validation windows")

    @property
    def many_to_one(self):
        return self.config["mode"] == "many-to-one"

    def make_trainer(self, model, optimizer, clip):
        cls = ManyToOne if self.many_to_one else ManyToMany
        return cls(model, loss=self.loss, optimizer=optimizer, clip_norm=clip,
                   seed=self.config["seed"], memory_limit=self.config.get("memory_limit"))

    def flow_trainer(self, model):
        return (ManyToOne if self.many_to_one else ManyToMany)(model, loss=self.loss)

    def step_shape(self, ranks=1):
        return -(-self.config["batch"] // ranks), self.config["window"]

    @property
    def sequences(self):
        return len(self.X)

    def fit_data(self):
        """(arrays, keyword arrays) that ``fit`` trains on: the standardised windows and
        their targets (fit reads each batch in the model's dtype)."""
        return [self.X, self.Y], {}

    def predict_windows(self, model, X):
        out = np.concatenate([model.predict(X[i:i + 256].astype(model.dtype))
                              for i in range(0, len(X), 256)])
        return out[:, -1] if self.many_to_one else out

    def evaluate(self, model):
        """(val MSE on standardised values, RMSE in the data's units)."""
        pred = self.predict_windows(model, self.Xv).astype(np.float64)
        loss = float(np.mean((pred - self.Yv) ** 2))
        std = np.asarray(self.config["target_std"])
        rmse = float(np.sqrt(np.mean(((pred - self.Yv) * std) ** 2)))
        return loss, rmse

    def flow_batch(self, dtype):
        if self.Xv is None:
            return None
        return self.Xv[:16].astype(dtype), self.Yv[:16].astype(dtype)


def model_options(config):
    """The RNN's options of a run beyond its sizes: dropout, recurrent dropout, directions
    (a run made before they existed has none of them)."""
    return dict(dropout=config.get("dropout") or 0.0,
                recurrent_dropout=config.get("recurrent_dropout") or 0.0,
                bidirectional=bool(config.get("bidirectional")))


def _columns(c, names):
    """(input, target) column indices of a series with columns ``names``: a stored run's by
    name, else from --columns/--target (recorded in c)."""
    if "input_columns" in c:           # a stored run: find its columns by name
        missing = [n for n in c["input_columns"] + c["target_columns"] if n not in names]
        if missing:
            raise DataError(f"{c['data']} has no column {missing[0]!r} (the model reads "
                            f"{', '.join(c['input_columns'])})")
        return ([names.index(n) for n in c["input_columns"]],
                [names.index(n) for n in c["target_columns"]])
    inputs = data.select_columns(names, c.get("columns"), "--columns")
    targets = (inputs if c.get("target") is None
               else data.select_columns(names, c["target"], "--target"))
    c["input_columns"] = [names[i] for i in inputs]
    c["target_columns"] = [names[i] for i in targets]
    return inputs, targets


def make_task(config):
    """The task of a run configuration (reading its data, completing config with the
    vocabulary, the columns and the standardisation)."""
    if config["task"] == "seq2seq":
        from .seq2seq_task import Seq2SeqTask
        return Seq2SeqTask(config)
    return CharTask(config) if config["task"] == "char" else ForecastTask(config)


def check_shards(task, config, size):
    """Every batch must give each of ``size`` ranks at least one sequence."""
    if size < 2:
        return
    b = config["batch"]
    if task.truncated:
        if b < size:
            raise UsageError(f"cbptt train: --batch {b} streams cannot be split over {size} "
                             f"processes; use --batch {size} or more")
        return
    n = task.sequences
    last = n - b * ((n - 1) // b)
    if last < size:
        raise UsageError(f"cbptt train: with {size} processes every batch needs at least "
                         f"{size} windows, but the epoch's {'last' if n > b else 'one'} batch "
                         f"has {last} ({n} windows, --batch {b}); change --batch or run fewer "
                         f"processes")
