"""How much memory a model, a trainer and a step need, and the refusal of what cannot fit.

Every large allocation of the library is checked here first: ``RNN(...)`` (the parameters),
a trainer (its gradient buffer and its optimiser's state) and the workspace of a step or a
prediction (``RNN.make_engine``, sized from the shapes). When the bytes needed exceed the
memory available, ``InsufficientMemory`` (a ``MemoryError``) is raised naming both, before
anything is allocated or any weight is changed. The memory available is ``MemAvailable`` of
``/proc/meminfo`` (Linux); where that cannot be read no check is made and an allocation that
fails raises NumPy's own MemoryError.
"""
import os

import numpy as np

from ._engine import GATES, param_count

MEMINFO = "/proc/meminfo"


class InsufficientMemory(MemoryError):
    """A request that cannot fit in the memory available: ``needed`` and ``available`` are in
    bytes (None when unknown)."""

    def __init__(self, message, needed=None, available=None):
        super().__init__(message)
        self.needed, self.available = needed, available


def available_bytes():
    """The memory available for new allocations without swapping (Linux's MemAvailable), in
    bytes; None where it cannot be read."""
    try:
        with open(MEMINFO, "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    value, unit = line.split()[1:3]
                    return int(value) * (1024 if unit == b"kB" else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def describe_bytes(count):
    """A byte count for people: "512 bytes", "3.2 KiB", "40.0 MiB", "149.0 GiB" (GiB is the
    largest unit, so that large requests compare at a glance)."""
    count = int(count)
    if count < 1024:
        return f"{count} bytes"
    for unit, size in (("KiB", 2 ** 10), ("MiB", 2 ** 20)):
        if count < 1024 * size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 2 ** 30:,.1f} GiB"


def require(needed, what):
    """Raise InsufficientMemory unless ``needed`` bytes fit in the memory available;
    ``what`` names the request, as the subject of "needs" ("the parameters' buffer of ...")."""
    available = available_bytes()
    if available is not None and needed > available:
        raise InsufficientMemory(f"{what} needs {describe_bytes(needed)} ({needed:,} bytes), "
                                 f"more than the {describe_bytes(available)} of memory "
                                 f"available", needed, available)


# -- sizes from the shapes --------------------------------------------------------------------
def parameter_bytes(cell, num_layers, input_size, hidden_size, output_size, dtype):
    """Bytes of a model's flat parameter buffer."""
    count = param_count(cell, num_layers, input_size, hidden_size, output_size)
    return count * np.dtype(dtype).itemsize


def trainer_bytes(model, optimizer):
    """Bytes a trainer allocates for a model: its gradient buffer and the arrays its
    optimiser keeps (state and scratch), each the size of the parameters."""
    return (1 + optimizer.parameter_copies) * model.params.nbytes


def step_elements(cell, num_layers, input_size, hidden_size, output_size, batch, steps,
                  training=True, many_to_one=False, threads=None, dropout=0.0,
                  recurrent_dropout=0.0):
    """Elements of the workspace of one (batch, steps) call: the buffers ``Engine`` allocates
    (see Engine._layout in _engine.pyx), with its default chunks of the backward pass
    (cbptt.settings' chunk_rows, chunk_min_steps) taken at their largest. A call split over ``threads`` threads
    (default: the processor count; at most one per sequence) runs on one sub-engine per
    thread, which between them hold the same tensors plus, each, a copy of W_hh and, for
    training, a gradient buffer (all but the first). Dropout (training) keeps each layer's
    masked input but the first's, recurrent dropout each layer's masked h_{t-1}."""
    L, I, H, O, B, T = num_layers, input_size, hidden_size, output_size, batch, steps
    G = GATES[cell]
    chunk = min(T, max(8, -(-256 // B), -(-T // 8)))     # steps per chunk, at most
    total = L * (T + 1) * B * H                    # hs: every layer's state at every step
    total += (T if G > 1 else chunk) * B * I + 2 * B      # inputs; the step read per output
    if G > 1:
        total += L * T * B * G * H                 # the gates of every step
    if cell == "lstm":
        total += L * (T + 1) * B * H               # cs
    if cell == "gru":
        total += L * T * B * H + B * G * H         # hn, rec
    output_rows = B if many_to_one else T * B
    if training:
        pred_rows = output_rows if many_to_one else chunk * B
        total += pred_rows * O * (2 if many_to_one else 3) + 3 * B * H + T * B
        total += (L > 1) * T * B * H               # the gradient injected into lower layers
        total += chunk * B * H                     # a chunk's gradient
        if dropout > 0:
            total += (L - 1) * T * B * H           # the layers' inputs, masked
        if recurrent_dropout > 0:
            total += L * (T + 1) * B * H + B * G * H   # h_{t-1} masked, the masks; a product
    else:
        total += output_rows * O
    parts = max(1, min(B, (os.cpu_count() or 1) if threads is None else threads))
    # per part: the bias sums and a layer's W_hh, transposed or packed in panels of up to
    # 256 bytes (64 float32 values)
    total += parts * (L * G * H + max(H * (G * H + 63), G * H * (H + 63)))
    if training:
        total += (parts - 1) * param_count(cell, L, I, H, O)
    return total


def step_bytes(model, batch, steps, training=True, many_to_one=False, threads=None):
    """Bytes of the workspace of one (batch, steps) call of a model (``step_elements``)."""
    return model.dtype.itemsize * step_elements(
        model.cell, model.num_layers, model.input_size, model.hidden_size,
        model.output_size or 0, batch, steps, training, many_to_one, threads,
        model.dropout, model.recurrent_dropout)
