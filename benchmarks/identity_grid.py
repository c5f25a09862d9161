"""The configurations of the bit-identity harness (benchmarks/identity.py) and how each one runs.

A configuration is a workload of the public API (cbptt.ManyToMany, ManyToOne, Truncated,
RNN.predict, optimiser steps) on one cell, depth, dtype, shape and number of BLAS threads
(threadpoolctl). It builds a fresh model and data from seeds fixed by its name and returns every
array it produced, keyed by what the array holds: "loss", "grads/weight_hh_l0", "final/h",
"params/head.bias" (after optimiser steps), ... and "meta/last_parts", the number of threads
the engines' last calls ran on (read from the trainer's engines, where the trainer keeps them).

The groups of shapes are chosen for the engine paths they reach (on an AVX-512 machine with 2
cores and SciPy's OpenBLAS):
- row: B=16, T=100, H=64: with 2 threads the team splits the batch rows (sub-engines); panel
  kernels for the per-step products and the weight gradients; chunked backward (chunk < T);
- small4, small9: H=4 and H=9, below the panel widths; too small for the team;
- long, long1: T of several hundred steps with B=2 (a row split of one row each) and B=1, so
  the backward runs in many chunks;
- cols: per-step products of 2*B*H*G*H >= 8e6 FLOPs (G gates; B large and H moderate, to keep
  the file small): with 2 threads the team splits each step's products by columns;
- gruchunk: GRU whose dA over all steps takes >= 16 MiB: weight gradients chunk by chunk.
"""
import zlib
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from threadpoolctl import threadpool_limits

import cbptt

CELLS = ("tanh", "relu", "lstm", "gru")
DTYPES = ("float32", "float64")
ALL_KINDS = ("m2m", "m2m_mask", "m2o", "m2o_len", "predict", "flow", "flow_m2o", "sgd", "adam",
             "trunc", "trunc_m2o")


@dataclass(frozen=True)
class Group:
    """A family of configurations: shapes (B, T, I, H, O) per cell, the kinds of workload run
    on them, and the depths, dtypes and BLAS thread counts."""
    shapes: dict
    kinds: tuple
    layers: tuple = (1, 2)
    threads: tuple = (1, 2)


def _every_cell(shape):
    return {cell: shape for cell in CELLS}


GROUPS = {
    "row": Group(_every_cell((16, 100, 8, 64, 3)), ALL_KINDS),
    "small4": Group(_every_cell((3, 20, 3, 4, 2)),
                    ("m2m", "m2m_mask", "m2o_len", "predict", "flow", "adam", "trunc")),
    "small9": Group(_every_cell((5, 30, 2, 9, 2)),
                    ("m2m", "m2m_mask", "m2o_len", "predict", "flow", "sgd", "trunc_m2o")),
    "long": Group(_every_cell((2, 400, 4, 32, 2)), ("m2m", "m2o_len", "flow", "sgd", "trunc")),
    "long1": Group(_every_cell((1, 300, 3, 16, 2)), ("m2m", "m2o_len")),
    "cols": Group({"tanh": (128, 6, 16, 192, 4), "relu": (128, 6, 16, 192, 4),
                   "lstm": (64, 8, 16, 128, 4), "gru": (96, 8, 16, 128, 4)},
                  ("m2m", "m2o_len", "predict", "adam")),
    "gruchunk": Group({"gru": (16, 200, 8, 512, 2)}, ("m2m",), layers=(1,)),
}


@dataclass(frozen=True)
class Case:
    """One configuration."""
    group: str
    kind: str
    cell: str
    layers: int
    dtype: str
    threads: int
    shape: tuple            # (B, T, I, H, O)

    @property
    def data_name(self):
        """The name without the thread count: the seed of the model and the data."""
        return f"{self.group}-{self.kind}-{self.cell}-L{self.layers}-{self.dtype}"

    @property
    def name(self):
        return f"{self.data_name}-t{self.threads}"


def all_cases():
    """Every configuration of the grid, in a fixed order."""
    cases = []
    for group_name, group in GROUPS.items():
        for kind in group.kinds:
            for cell, shape in group.shapes.items():
                for layers in group.layers:
                    for dtype in DTYPES:
                        for threads in group.threads:
                            cases.append(Case(group_name, kind, cell, layers, dtype, threads,
                                              shape))
    return cases


def run_case(case):
    """Run one configuration on case.threads BLAS threads; returns {key: array}."""
    model, data = _model_and_data(case)
    # the adaptive choice changes which threads run a split (meta/last_parts), never a bit
    with threadpool_limits(limits=case.threads, user_api="blas"), \
            cbptt.settings(adaptive=False):
        outputs = RUNNERS[case.kind](case, model, data)
    result = {}
    _put(result, "", outputs)
    return result


def _put(result, key, value):
    """Flatten dicts (into "key/name") and lstm state pairs (into "key/h", "key/c")."""
    if isinstance(value, dict):
        for name, item in value.items():
            _put(result, f"{key}/{name}" if key else name, item)
    elif isinstance(value, tuple):
        for name, item in zip(("h", "c"), value):
            _put(result, f"{key}/{name}", item)
    elif value is not None:
        result[key] = np.array(value)       # a copy; a Python float becomes a 0-d float64


def _model_and_data(case):
    """A fresh model and the workload's data, from a seed fixed by case.data_name."""
    seed = zlib.crc32(case.data_name.encode())
    batch, steps, inputs, hidden, outputs = case.shape
    dtype = np.dtype(case.dtype)
    model = cbptt.RNN(inputs, hidden, outputs, cell=case.cell, num_layers=case.layers,
                      dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    state_shape = (case.layers, batch, hidden)
    mask = rng.choice(np.array([0.0, 0.5, 1.0]), p=[0.2, 0.2, 0.6], size=(batch, steps))
    mask[0, 0] = 1.0
    mask[0, steps // 2 + 1:] = 0.0                # a padded sequence
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    lengths[-1] = max(1, steps // 3)
    data = SimpleNamespace(
        X=rng.standard_normal((batch, steps, inputs)).astype(dtype),
        Y=(0.5 * rng.standard_normal((batch, steps, outputs))).astype(dtype),
        Y_ids=rng.integers(0, outputs, size=(batch, steps)),
        y=rng.standard_normal((batch, outputs)).astype(dtype),
        y_ids=rng.integers(0, outputs, size=batch),
        h0=(0.5 * rng.standard_normal(state_shape)).astype(dtype),
        c0=(0.5 * rng.standard_normal(state_shape)).astype(dtype) if case.cell == "lstm" else None,
        mask=mask.astype(dtype), lengths=lengths)
    return model, data


def _last_parts(trainer):
    """The threads each of the trainer's engines ran its last call on (trainers keep their
    engines in ``_engines``, one per shape); None where that is not reachable."""
    engines = getattr(trainer, "_engines", None)
    if not isinstance(engines, dict):
        return None
    return np.array([getattr(engine, "last_parts", -1) for engine in engines.values()], np.int64)


def _predict_parts(model):
    engine = getattr(model, "_predict_engine", None)
    return None if engine is None else np.array([getattr(engine, "last_parts", -1)], np.int64)


def _parts_meta(parts):
    """One int64 array of the recorded thread counts (None entries dropped)."""
    parts = [p for p in parts if p is not None]
    return {"last_parts": np.concatenate(parts)} if parts else {}


# -- the workloads -----------------------------------------------------------------------------

def _graded(trainer, loss, grads, final=None, flow=None):
    """What a loss_and_grad call gives: loss, gradients (with h0, c0), final state, flow."""
    return {"loss": loss, "grads": grads, "final": final, "flow": flow,
            "meta": _parts_meta([_last_parts(trainer)])}


def _m2m(case, model, d):
    trainer = cbptt.ManyToMany(model, loss="mse")
    loss, grads, final = trainer.loss_and_grad(d.X, d.Y, h0=d.h0, c0=d.c0, return_state=True)
    return _graded(trainer, loss, grads, final)


def _m2m_mask(case, model, d):
    trainer = cbptt.ManyToMany(model, loss="cross_entropy")
    loss, grads, final = trainer.loss_and_grad(d.X, d.Y_ids, mask=d.mask, return_state=True)
    return _graded(trainer, loss, grads, final)


def _m2o(case, model, d):
    trainer = cbptt.ManyToOne(model, loss="mse")
    loss, grads, final = trainer.loss_and_grad(d.X, d.y, h0=d.h0, c0=d.c0, return_state=True)
    return _graded(trainer, loss, grads, final)


def _m2o_len(case, model, d):
    trainer = cbptt.ManyToOne(model, loss="cross_entropy")
    loss, grads, final = trainer.loss_and_grad(d.X, d.y_ids, h0=d.h0, c0=d.c0, lengths=d.lengths,
                                               return_state=True)
    return _graded(trainer, loss, grads, final)


def _predict(case, model, d):
    out, final = model.predict(d.X, d.h0, d.c0, return_state=True)
    first = _predict_parts(model)
    last = cbptt.ManyToOne(model).predict(d.X, lengths=d.lengths)
    return {"out": out, "final": final, "out_at_lengths": last,
            "meta": _parts_meta([first, _predict_parts(model)])}


def _flow(case, model, d):
    trainer = cbptt.ManyToMany(model, loss="mse")
    loss, grads, final, flow = trainer.loss_and_grad(d.X, d.Y, h0=d.h0, c0=d.c0,
                                                     return_state=True, return_flow=True)
    return _graded(trainer, loss, grads, final, flow)


def _flow_m2o(case, model, d):
    trainer = cbptt.ManyToOne(model, loss="mse")
    loss, grads, flow = trainer.loss_and_grad(d.X, d.y, lengths=d.lengths, return_flow=True)
    return _graded(trainer, loss, grads, flow=flow)


def _trained(trainer, losses, parts, final=None):
    """What a run of optimiser steps leaves: losses, weights, thread counts (the optimiser's
    state follows from the same gradients; it is left out to keep the file small)."""
    return {"losses": np.array(losses, np.float64), "params": trainer.model.state_dict(),
            "final": final, "meta": _parts_meta(parts)}


def _sgd(case, model, d):
    """Three many-to-many steps, SGD with Nesterov momentum and weight decay: plain, masked,
    then from h0 (and c0)."""
    optimizer = cbptt.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    trainer = cbptt.ManyToMany(model, loss="mse", optimizer=optimizer)
    losses = [trainer.step(d.X, d.Y)]
    parts = [_last_parts(trainer)]
    losses.append(trainer.step(d.X, d.Y, mask=d.mask))
    parts.append(_last_parts(trainer))
    loss, final = trainer.step(d.X, d.Y, h0=d.h0, c0=d.c0, return_state=True)
    losses.append(loss)
    parts.append(_last_parts(trainer))
    return _trained(trainer, losses, parts, final)


def _adam(case, model, d):
    """Three many-to-one cross-entropy steps with lengths, Adam with weight decay, the global
    gradient norm clipped (clip_norm small enough to clip)."""
    optimizer = cbptt.Adam(lr=1e-2, weight_decay=1e-2)
    trainer = cbptt.ManyToOne(model, loss="cross_entropy", optimizer=optimizer, clip_norm=0.05)
    losses, parts = [], []
    for _ in range(3):
        losses.append(trainer.step(d.X, d.y_ids, h0=d.h0, c0=d.c0, lengths=d.lengths))
        parts.append(_last_parts(trainer))
    return _trained(trainer, losses, parts)


def _trunc(case, model, d):
    """Truncated BPTT(k1 < k2) over the stream in two calls (the first masked): four blocks,
    windows reaching back into the ring; SGD with momentum and clipping."""
    steps = case.shape[1]
    k1, k2, split = max(1, steps * 3 // 10), max(2, steps // 2), steps * 6 // 10
    trainer = cbptt.Truncated(model, k1=k1, k2=k2, loss="mse",
                              optimizer=cbptt.SGD(lr=0.02, momentum=0.9), clip_norm=1.0)
    losses = [trainer.step(d.X[:, :split], d.Y[:, :split], mask=d.mask[:, :split])]
    parts = [_last_parts(trainer)]
    losses.append(trainer.step(d.X[:, split:], d.Y[:, split:]))
    parts.append(_last_parts(trainer))
    result = _trained(trainer, losses, parts, trainer.state)
    result["position"] = trainer.position
    return result


def _trunc_m2o(case, model, d):
    """Truncated many-to-one (cross entropy, Adam, clipping): BPTT over the last k2 steps after
    a forward without gradients, on the whole sequences and then on their first 3/4."""
    steps = case.shape[1]
    k2 = max(1, steps * 2 // 5)
    trainer = cbptt.Truncated(model, k1=k2, k2=k2, loss="cross_entropy",
                              optimizer=cbptt.Adam(lr=1e-2), clip_norm=0.5, many_to_one=True)
    losses = [trainer.step(d.X, d.y_ids)]
    parts = [_last_parts(trainer), _predict_parts(model)]
    losses.append(trainer.step(d.X[:, :steps * 3 // 4], d.y_ids))
    parts += [_last_parts(trainer), _predict_parts(model)]
    return _trained(trainer, losses, parts)


RUNNERS = {"m2m": _m2m, "m2m_mask": _m2m_mask, "m2o": _m2o, "m2o_len": _m2o_len,
           "predict": _predict, "flow": _flow, "flow_m2o": _flow_m2o, "sgd": _sgd,
           "adam": _adam, "trunc": _trunc, "trunc_m2o": _trunc_m2o}
