"""Dropout's masks seen from Python (_core/dropout.pxd draws them inside the engine): the key
of a trainer's call, and the mask a call keyed so applies, for the tests (the hook that fixes
the masks of a reference computation) and for bidirectional models, whose layers' outputs
are masked between their engines."""
import numpy as np

from libc.stdint cimport uint64_t

from ._core.dropout cimport Drop, drop_between, mix64, recurrent_mask, threshold_of


def dropout_mask(uint64_t key, Py_ssize_t layer, double p, Py_ssize_t batch, Py_ssize_t units,
                 Py_ssize_t steps=0, Py_ssize_t row0=0, Py_ssize_t stream0=0,
                 dtype=np.float64, Py_ssize_t step0=0):
    """The mask an engine's call keyed `key` applies (dropout.pxd), scaled: 1/(1-p) where a
    unit is kept, else 0. steps > 0: the mask on layer `layer`'s input, (steps, batch, units);
    steps 0: its recurrent mask on h_{t-1}, (batch, units). Rows from row0, layers from
    stream0, steps from step0, as set_dropout's."""
    cdef Drop d
    d.key = key
    d.row0 = row0
    d.stream0 = stream0
    d.step0 = step0
    d.threshold = d.rec_threshold = threshold_of(p)
    d.scale = d.rec_scale = 1 / (1 - p)
    shape = (batch, units)
    if steps:
        shape = (steps, batch, units)
    ones = np.ones(shape, dtype=dtype)
    out = np.empty_like(ones)
    cdef double[::1] o64, i64
    cdef float[::1] o32, i32
    if out.dtype == np.float64:
        o64, i64 = out.reshape(-1), ones.reshape(-1)
        if steps:
            drop_between(&d, layer, &i64[0], &o64[0], batch, 0, steps * batch, units)
        else:
            recurrent_mask(&d, layer, &o64[0], 0, batch, units)
    else:
        o32, i32 = out.reshape(-1), ones.reshape(-1)
        if steps:
            drop_between(&d, layer, &i32[0], &o32[0], batch, 0, steps * batch, units)
        else:
            recurrent_mask(&d, layer, &o32[0], 0, batch, units)
    return out


def dropout_key(uint64_t seed, uint64_t call):
    """The key of a trainer's call `call` under `seed` (set_dropout's)."""
    return mix64(mix64(seed) + call)
