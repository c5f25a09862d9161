"""An embedding table below the first layer, as ``torch.nn.Embedding``.

A model made with ``vocab_size=V`` reads token ids (B, T) in [0, V): each id picks a row of
``embedding.weight`` (V, E), and the rows, (B, T, E) floats, are the first layer's input
(E = the model's ``input_size``). The engine returns dL/dx for that input
(``Engine.loss_and_grad(dx=...)``); the table's gradient is its scatter-add by id. The
``padding_idx`` row, as in torch, gets no gradient (and starts at zeros).
"""
import numpy as np

from . import _checks
from ._arrays import squared_norm_of


def check_ids(X, vocab_size, name="X"):
    """X as token ids (B, T), C-contiguous int64 in [0, vocab_size); a ValueError naming X
    otherwise (a model with an embedding reads ids only)."""
    array = _checks._as_array(X, name)
    if array.ndim != 2:
        raise ValueError(f"{name}: a model with an embedding (vocab_size={vocab_size}) reads "
                         f"token ids (batch, steps), got a {array.ndim}-d array of shape "
                         f"{array.shape}")
    return _checks.sequence_batch(array, vocab_size, np.float64, name)


def lookup(table, ids, out=None):
    """The rows of table (V, E) that ids (B, T) pick: (B, T, E)."""
    return np.take(table, ids, axis=0, out=out)


def table_gradient(ids, dx, padding_idx, out):
    """out (V, E) = dL/d table: each row the sum of dx (B, T, E) over the steps that read it;
    the padding row stays zero."""
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")     # rows of one id together, in step order
    keys = flat[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    out[...] = 0
    out[keys[starts]] = np.add.reduceat(dx.reshape(-1, dx.shape[-1])[order], starts, axis=0)
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


def learn_table(model, ids, dx, grads):
    """The table's gradient of a model with an embedding, from the engine's dx (B, T, E) for
    the ids (B, T) it read, into its entries of grads (the model's flat layout: they come
    last). Returns their squared norm (to add to the engine's)."""
    table = grads[model.engine_size:]
    table_gradient(ids, dx, model.padding_idx, table.reshape(model.vocab_size, model.input_size))
    return squared_norm_of(table)
