"""The data of a ``fit``: checked whole against the trainer before any update, then cut into
batches each epoch without ever copying it whole (an ``np.memmap`` is read a batch at a time).

What a trainer's fit reads (its *kind*):

- ``"many_to_many"`` (ManyToMany): X (N, T, I) or ids (N, T); Y (N, T, O) or class ids
  (N, T); ``mask`` (N, T); ``lengths`` (N,) for a bidirectional model;
- ``"many_to_one"`` (ManyToOne, and Truncated with many_to_one=True): X; y (N, O) or (N,);
  ``lengths`` (N,) (ManyToOne);
- ``"seq2seq"`` (Seq2Seq): X (N, T, I), Y_in (N, U, J), Y_out (N, U, O) (or ids and class
  ids), ``src_lengths``, ``tgt_lengths`` (N,);
- ``"streams"`` (Truncated): B streams of L steps, X (B, L, I), Y (B, L, O), ``mask``
  (B, L) (or one stream: (L, I), (L, O), (L,)); batches are blocks of steps, not sequences.

Batches are views of the arrays (in order) or rows gathered into buffers allocated once
(shuffled, or padded to full size for evaluation), in the dtype the trainer reads.
"""
import numpy as np

from ._checks import _shape_text

KIND_NAMES = {"many_to_many": ("X", "Y"), "many_to_one": ("X", "y"),
              "streams": ("X", "Y"), "seq2seq": ("X", "Y_in", "Y_out")}


def kind_of(trainer):
    """The kind of data ``trainer.fit`` reads (see the module's docstring)."""
    from .seq2seq import Seq2Seq
    from .trainers import ManyToMany, ManyToOne
    from .truncated import Truncated
    if isinstance(trainer, Seq2Seq):
        return "seq2seq"
    if isinstance(trainer, Truncated):
        return "many_to_one" if trainer.many_to_one else "streams"
    if isinstance(trainer, ManyToOne):
        return "many_to_one"
    if isinstance(trainer, ManyToMany):
        return "many_to_many"
    raise TypeError(f"fit trains a ManyToMany, ManyToOne, Truncated or Seq2Seq, got "
                    f"{type(trainer).__name__}")


def keywords_of(trainer, kind):
    """The per-sequence keyword arrays ``fit`` takes for this trainer (batched with X)."""
    if kind == "many_to_many":
        return ("mask", "lengths") if trainer.model.bidirectional else ("mask",)
    if kind == "many_to_one":
        from .truncated import Truncated
        return () if isinstance(trainer, Truncated) else ("lengths",)
    if kind == "streams":
        return ("mask",)
    return ("src_lengths", "tgt_lengths")


class FitData:
    """Arrays of one data set of a fit, all with ``count`` items along ``axis`` (0: sequences,
    1: the steps of streams): ``arrays`` (positional, as ``step`` takes them), ``named``
    (keyword arrays), and ``dtypes``, the dtype the trainer reads each in (positional, then
    named)."""

    def __init__(self, arrays, named, dtypes, axis, count):
        self.arrays, self.named, self.dtypes = list(arrays), dict(named), list(dtypes)
        self.axis, self.count = axis, count

    def _all(self):
        return self.arrays + list(self.named.values())

    def part(self, start, stop):
        """Items [start, stop) along the axis, as views."""
        index = (slice(None),) * self.axis + (slice(start, stop),)
        return FitData([a[index] for a in self.arrays],
                       {k: a[index] for k, a in self.named.items()}, self.dtypes, self.axis,
                       stop - start)

    def split(self, fraction):
        """(the first items, the last ``round(count * fraction)``): validation_split."""
        held = int(round(self.count * fraction))
        if held < 1 or held >= self.count:
            what = "steps" if self.axis else "sequences"
            raise ValueError(f"validation_split={fraction} of {self.count} {what} holds out "
                             f"{held}: it must leave at least one for training and one for "
                             f"validation")
        cut = self.count - held
        return self.part(0, cut), self.part(cut, self.count)


class BatchReader:
    """The batches of a FitData, ``size`` items each (the last may be fewer): each batch is
    (positional arrays, keyword arrays, number of items). In order they are views; with an
    ``order`` (a permutation) the rows are gathered into buffers allocated once. ``pad``:
    every batch fills whole buffers (the last one's tail holds earlier items, to be ignored),
    so the consumer always sees one shape."""

    def __init__(self, data, size, pad=False):
        self.data, self.pad = data, pad
        self.size = min(size, data.count)
        self._buffers = None

    def __len__(self):
        return -(-self.data.count // self.size)

    def _make_buffers(self):
        axis, size = self.data.axis, self.size
        buffers = []
        for array, dtype in zip(self.data._all(), self.data.dtypes):
            shape = list(array.shape)
            shape[axis] = size
            buffers.append(np.empty(shape, dtype))
        return buffers

    def batches(self, order=None):
        data, axis, size = self.data, self.data.axis, self.size
        sources = data._all()
        if (order is not None or self.pad) and self._buffers is None:
            self._buffers = self._make_buffers()
        for start in range(0, data.count, size):
            stop = min(start + size, data.count)
            n = stop - start
            index = (slice(None),) * axis + (slice(start, stop),)
            if order is None and not self.pad:
                parts = [a[index] for a in sources]
            else:
                head = (slice(None),) * axis + (slice(0, n),)
                parts = []
                for array, buffer in zip(sources, self._buffers):
                    if order is None:
                        buffer[head] = array[index]
                    elif array.dtype == buffer.dtype:
                        np.take(array, order[start:stop], axis=axis, out=buffer[head])
                    else:       # take casts into out only in some directions
                        buffer[head] = np.take(array, order[start:stop], axis=axis)
                    parts.append(buffer if self.pad else buffer[head])
            count = len(data.arrays)
            yield parts[:count], dict(zip(data.named, parts[count:])), n


# -- checks -----------------------------------------------------------------------------------
def check_data(trainer, kind, arrays, named, prefix=""):
    """The FitData of ``arrays`` (the positional arrays of ``step``) and ``named`` (keyword
    arrays, None values dropped), every shape and every integer's range checked against the
    trainer's model(s) without copying anything; ``prefix`` starts each message
    ("validation: "). ValueError/TypeError naming the array and the expected shape."""
    names = KIND_NAMES[kind]
    if len(arrays) != len(names):
        raise TypeError(f"{prefix}{type(trainer).__name__}.fit takes {len(names)} arrays "
                        f"({', '.join(names)}), got {len(arrays)}")
    arrays = [_as_array(a, f"{prefix}{n}") for a, n in zip(arrays, names)]
    allowed = keywords_of(trainer, kind)
    named = {k: _as_array(v, prefix + k) for k, v in named.items() if v is not None}
    for key in named:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "none"
            raise ValueError(f"{prefix}{key}: {type(trainer).__name__}"
                             f"{' (bidirectional)' if kind == 'many_to_many' else ''} does "
                             f"not take {key} (per-sequence arrays it takes: {takes})")
    check = _Checker(trainer, prefix)
    if kind == "seq2seq":
        return check.seq2seq(arrays, named)
    if kind == "streams":
        return check.streams(arrays, named)
    return check.sequences(arrays, named, kind)


def _as_array(value, name):
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: could not be read as an array ({exc})") from None
    if array.dtype == object:
        raise ValueError(f"{name}: could not be read as a numeric array")
    return array


class _Checker:
    """Shape and range checks of whole arrays, with the names of their axes in messages."""

    def __init__(self, trainer, prefix):
        self.trainer, self.prefix = trainer, prefix
        self.loss = trainer.loss

    def fail(self, name, expected, meaning, array):
        raise ValueError(f"{self.prefix}{name} must have shape {_shape_text(expected)} "
                         f"({meaning}), got {array.shape}")

    def integers(self, array, name, low, high, what):
        """Integers (or integral floats, for class ids) in [low, high)."""
        if array.dtype.kind not in "iuf" or array.dtype == np.bool_:
            raise TypeError(f"{self.prefix}{name} must hold {what}, got dtype {array.dtype}")
        if array.size == 0:
            raise ValueError(f"{self.prefix}{name} must not be empty, got shape {array.shape}")
        lo, hi = array.min(), array.max()
        if not (lo >= low and hi < high):
            raise ValueError(f"{self.prefix}{name}: {what} must be in [{low}, {high}), got "
                             f"values in [{lo}, {hi}]")

    def reals(self, array, name):
        if array.dtype.kind not in "iuf" or array.dtype == np.bool_:
            raise TypeError(f"{self.prefix}{name} must hold real numbers, got dtype "
                            f"{array.dtype}")

    def inputs(self, array, name, model, lead, meaning):
        """A model's input: floats lead + (I,) or token ids lead; returns the dtype read."""
        if model.vocab_size is not None:
            if array.shape != lead:
                self.fail(name, lead, meaning + ", token ids of the embedding", array)
            if array.dtype.kind == "f":
                raise TypeError(f"{self.prefix}{name} must hold token ids, got dtype "
                                f"{array.dtype}")
            self.integers(array, name, 0, model.vocab_size, "token ids")
            return np.int64
        if array.ndim == len(lead) and array.dtype.kind in "iu":
            if array.shape != lead:
                self.fail(name, lead, meaning + ", token ids", array)
            self.integers(array, name, 0, model.input_size, "token ids")
            return np.int64
        expected = lead + (model.input_size,)
        if array.shape != expected:
            self.fail(name, expected, meaning + ", inputs", array)
        self.reals(array, name)
        return model.dtype

    def targets(self, array, name, model, lead, meaning):
        if self.loss == "mse":
            expected = lead + (model.output_size,)
            if array.shape != expected:
                self.fail(name, expected, meaning + ", outputs", array)
            self.reals(array, name)
            return model.dtype
        if array.shape != lead:
            self.fail(name, lead, meaning + ", class ids", array)
        self.integers(array, name, 0, model.output_size, "class ids")
        return np.int64

    def mask(self, array, name, lead, meaning, dtype):
        if array.shape != lead:
            self.fail(name, lead, meaning, array)
        self.reals(array, name)
        if array.size and array.min() < 0:
            raise ValueError(f"{self.prefix}{name} must hold non-negative weights (0 masks a "
                             f"step out)")
        return dtype

    def lengths(self, array, name, count, steps):
        if array.shape != (count,):
            self.fail(name, (count,), "sequences", array)
        if array.dtype.kind not in "iu":
            raise TypeError(f"{self.prefix}{name} must hold integers, got dtype "
                            f"{array.dtype}")
        self.integers(array, name, 1, steps + 1, "lengths")
        return np.int64

    def lead_of(self, array, name, model, dims):
        """(count, steps) of a model's input: its first two axes."""
        if array.ndim < 2 or 0 in array.shape[:2]:
            raise ValueError(f"{self.prefix}{name} must have shape ({dims}, "
                             f"{model.input_size}) or token ids ({dims}) with at least one "
                             f"of each, got {array.shape}")
        return array.shape[:2]

    # -- the kinds ------------------------------------------------------------------------
    def sequences(self, arrays, named, kind):
        m = self.trainer.model
        X, Y = arrays
        count, steps = self.lead_of(X, "X", m, "sequences, steps")
        lead = (count, steps)
        dtypes = [self.inputs(X, "X", m, lead, "sequences, steps")]
        if kind == "many_to_one":
            dtypes.append(self.targets(Y, "y", m, (count,), "sequences"))
        else:
            dtypes.append(self.targets(Y, "Y", m, lead, "sequences, steps"))
        for key, array in named.items():
            dtypes.append(self.mask(array, key, lead, "sequences, steps", m.dtype)
                          if key == "mask" else self.lengths(array, key, count, steps))
        return FitData(arrays, named, dtypes, 0, count)

    def seq2seq(self, arrays, named):
        enc, dec = self.trainer.encoder, self.trainer.decoder
        X, Y_in, Y_out = arrays
        count, steps = self.lead_of(X, "X", enc, "sequences, steps")
        dtypes = [self.inputs(X, "X", enc, (count, steps), "sequences, steps")]
        if Y_in.ndim < 2 or Y_in.shape[0] != count or Y_in.shape[1] == 0:
            raise ValueError(f"{self.prefix}Y_in must have shape ({count}, target steps, "
                             f"{dec.input_size}) or token ids ({count}, target steps): X has "
                             f"{count} sequences; got {Y_in.shape}")
        target_steps = Y_in.shape[1]
        lead = (count, target_steps)
        dtypes.append(self.inputs(Y_in, "Y_in", dec, lead, "sequences, target steps"))
        dtypes.append(self.targets(Y_out, "Y_out", dec, lead, "sequences, target steps"))
        for key, array in named.items():
            dtypes.append(self.lengths(array, key, count,
                                       steps if key == "src_lengths" else target_steps))
        return FitData(arrays, named, dtypes, 0, count)

    def streams(self, arrays, named):
        m = self.trainer.model
        X, Y = arrays
        ids = m.vocab_size is not None or X.dtype.kind in "iu"
        if X.ndim == (1 if ids else 2):     # one stream: a view with a streams axis of 1
            arrays = [a[None] for a in arrays]
            named = {k: a[None] for k, a in named.items()}
            X, Y = arrays
        streams, steps = self.lead_of(X, "X", m, "streams, steps")
        lead = (streams, steps)
        dtypes = [self.inputs(X, "X", m, lead, "streams, steps"),
                  self.targets(Y, "Y", m, lead, "streams, steps")]
        if "mask" in named:
            dtypes.append(self.mask(named["mask"], "mask", lead, "streams, steps", m.dtype))
        return FitData(arrays, named, dtypes, 1, steps)

