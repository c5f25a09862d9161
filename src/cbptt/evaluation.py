"""Validation in ``fit``: the model's loss on held-out data and its metrics, from its
predictions, summed in float64 over batches of one shape.

The loss is the trainer's (mse or cross-entropy, the mean over the outputs the trainer's loss
is the mean of: masked steps, steps past a sequence's length and a decoder's padding left out)
and equals ``loss_and_grad``'s on the same data to rounding (without dropout: predictions
never drop units). Metrics, over the same outputs:
``"accuracy"`` (cross_entropy: the share of targets whose largest output is the target's),
``"mae"`` and ``"rmse"`` (mse: the mean absolute error and the root of the mean squared one,
over every output element). Truncated streams run from a zero state, carried through the held
-out stream a block at a time.
"""
import numpy as np

from .data import log_softmax
from .fit_data import BatchReader

METRICS = {"mse": ("mae", "rmse"), "cross_entropy": ("accuracy",)}


def check_metrics(metrics, loss):
    """The metric names of a fit: None gives the loss's own (accuracy, or mae and rmse)."""
    if metrics is None:
        return METRICS[loss]
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    for name in metrics:
        if name not in METRICS[loss]:
            every = sorted(set(sum(METRICS.values(), ())))
            if name in every:
                raise ValueError(f"metrics: {name!r} is not a metric of the {loss} loss "
                                 f"(its metrics: {', '.join(METRICS[loss])})")
            raise ValueError(f"metrics: unknown metric {name!r} (choose from "
                             f"{', '.join(every)})")
    return tuple(dict.fromkeys(metrics))


class Evaluator:
    """``evaluator()`` -> {"val_loss": ..., "val_<metric>": ...} for the data of a fit, read
    ``batch_size`` sequences (stream steps for Truncated) at a time into buffers made once."""

    def __init__(self, trainer, kind, data, batch_size, metrics):
        self.trainer, self.kind, self.metrics = trainer, kind, metrics
        self.reader = BatchReader(data, batch_size, pad=True)

    def __call__(self):
        sums = _Sums(self.trainer.loss)
        state = (None, None)
        for arrays, named, n in self.reader.batches():
            if self.kind == "streams":
                out, target, weight, state = self._stream_block(arrays, named, n, state)
            else:
                out, target, weight = self._outputs(arrays, named)
                out, target = out[:n], target[:n]
                weight = None if weight is None else weight[:n]
            sums.add(out, target, weight)
        return sums.logs(self.metrics)

    def _outputs(self, arrays, named):
        """(outputs, targets, weights or None) of a batch of sequences."""
        trainer, model = self.trainer, self.trainer.model
        if self.kind == "seq2seq":
            X, Y_in, Y_out = arrays
            out = trainer.predict(X, Y_in, src_lengths=named.get("src_lengths"))
            lengths = named.get("tgt_lengths")
            weight = None if lengths is None else _valid_steps(lengths, Y_in.shape[1])
            return out, Y_out, weight
        X, Y = arrays
        if self.kind == "many_to_one":
            if hasattr(trainer, "predict"):         # ManyToOne: at each sequence's length
                return trainer.predict(X, lengths=named.get("lengths")), Y, None
            return model.predict(X)[:, -1], Y, None     # Truncated(many_to_one=True)
        lengths, weight = named.get("lengths"), named.get("mask")
        if lengths is None:
            return model.predict(X), Y, weight
        valid = _valid_steps(lengths, X.shape[1]).astype(model.dtype)
        return (model.predict(X, lengths=lengths), Y,
                valid if weight is None else weight * valid)

    def _stream_block(self, arrays, named, n, state):
        """The next block of n steps of the held-out streams, from the carried state."""
        model = self.trainer.model
        X, Y = arrays
        h, c = state
        out, final = model.predict(X, h, c, return_state=True)
        state = final if model.cell == "lstm" else (final, None)
        weight = named.get("mask")
        return (out[:, :n], Y[:, :n], None if weight is None else weight[:, :n], state)


def _valid_steps(lengths, steps):
    """(B, steps) booleans: step t < lengths[b]."""
    return np.arange(steps) < np.asarray(lengths)[:, None]


class _Sums:
    """Float64 sums of the loss and the metrics over batches of outputs."""

    def __init__(self, loss):
        self.loss = loss
        self.weight = self.loss_sum = self.abs_sum = self.correct = 0.0

    def add(self, out, target, weight):
        out = np.asarray(out, np.float64)
        if self.loss == "mse":
            error = out - target
            terms, absolute = error * error, np.abs(error)
            if weight is None:
                self.weight += terms.size
                self.loss_sum += terms.sum()
                self.abs_sum += absolute.sum()
            else:
                w = np.asarray(weight, np.float64)[..., None]
                self.weight += w.sum() * out.shape[-1]
                self.loss_sum += (w * terms).sum()
                self.abs_sum += (w * absolute).sum()
            return
        target = np.asarray(target, np.int64)[..., None]
        nll = -np.take_along_axis(log_softmax(out), target, axis=-1)[..., 0]
        right = np.argmax(out, axis=-1) == target[..., 0]
        if weight is None:
            self.weight += nll.size
            self.loss_sum += nll.sum()
            self.correct += right.sum()
        else:
            w = np.asarray(weight, np.float64)
            self.weight += w.sum()
            self.loss_sum += (w * nll).sum()
            self.correct += (w * right).sum()

    def logs(self, metrics):
        if self.weight == 0:        # every output masked out: the trainer's loss is 0 too
            return {"val_loss": 0.0, **{"val_" + name: float("nan") for name in metrics}}
        loss = self.loss_sum / self.weight
        values = {"accuracy": self.correct / self.weight, "mae": self.abs_sum / self.weight,
                  "rmse": np.sqrt(loss)}
        logs = {"val_loss": float(loss)}
        logs.update({"val_" + name: float(values[name]) for name in metrics})
        return logs
