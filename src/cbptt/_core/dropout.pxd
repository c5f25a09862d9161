# Dropout masks, drawn where they are used: no mask is stored or built outside the engine.
#
# Contract: every mask entry is a pure function of (the call's key, a stream, a row, a unit),
# hashed by a counter-based generator (SplitMix64's finaliser), so any number of threads, any
# split of the batch rows and any order of evaluation draw the same bits, and the backward
# pass redraws the forward's masks between layers instead of keeping them (the recurrent
# masks, (B, H) a layer, are drawn once a call into w.rec_mask). A unit draws 32 bits from its
# row's key (dropout_rows.h, vectorised) and is kept when they are at least p 2^32
# (probability 1 - p within 2^-32), then scaled by 1 / (1 - p) ("inverted" dropout, as torch
# and Keras). The loops have no branch on the draws: a kept unit is multiplied by the scale, a
# dropped one by 0.
#
# Streams: layer k of an engine (plus Drop.stream0, which a bidirectional model's per-layer,
# per-direction engines set apart) draws
#   - between layers, the mask on its input (the layer below's h_t) at stream 2 (stream0 + k),
#     one entry per (step t, row b, unit j): the row key hashes (t, b);
#   - recurrent, the mask on h_{t-1} entering its per-step product at stream 2 (stream0 + k)
#     + 1, one entry per (row b, unit j), the same at every step (Gal and Ghahramani 2016).
# Rows are the caller's: a split's sub-engine adds its first row (Drop.row0). Steps are the
# caller's too: an engine running steps [step0, step0 + T) of a longer sequence (a memory-
# bounded step's unit, bounded.py) adds Drop.step0, so its masks are the whole sequence's.

from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t


cdef struct Drop:
    uint64_t key           # the call's key (the trainer's seed and call count, hashed)
    uint64_t threshold     # p * 2^32: a unit is kept when its 32-bit draw is >= this
    uint64_t rec_threshold # likewise for the recurrent mask (q)
    double scale           # 1 / (1 - p)
    double rec_scale       # 1 / (1 - q)
    Py_ssize_t row0        # the caller's index of this engine's first batch row
    Py_ssize_t stream0     # added to the layer index in the streams
    Py_ssize_t step0       # added to the step index of the between-layer masks


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    """SplitMix64's finaliser: a bijection whose outputs pass as independent uniform bits."""
    z = (z ^ (z >> 30)) * <uint64_t>0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef inline uint64_t row_key(uint64_t key, Py_ssize_t stream, Py_ssize_t step,
                             Py_ssize_t row) noexcept nogil:
    """The key of one row of a mask: (stream, step, row) hashed under the call's key (step 0
    for the recurrent masks)."""
    cdef uint64_t base = mix64(key + <uint64_t>0x9e3779b97f4a7c15ULL * <uint64_t>(stream + 1))
    return mix64(base ^ ((<uint64_t>step << 32) + <uint64_t>row))


cdef extern from "_core/dropout_rows.h" nogil:
    void cbptt_drop_row_f32(const float* source, float* target, Py_ssize_t n, uint64_t rkey,
                            uint32_t threshold, float scale, int add)
    void cbptt_drop_row_f64(const double* source, double* target, Py_ssize_t n,
                            uint64_t rkey, uint32_t threshold, double scale, int add)


cdef inline void drop_row(const floating* source, floating* target, Py_ssize_t n,
                          uint64_t rkey, uint64_t threshold, floating scale,
                          bint add) noexcept nogil:
    """target[j] (+)= source[j] * (scale where unit j is kept, else 0): a row of n units
    (source may be target; NULL: target = the scaled mask itself). The loop is in
    dropout_rows.h."""
    if floating is float:
        cbptt_drop_row_f32(source, target, n, rkey, <uint32_t>threshold, scale, add)
    else:
        cbptt_drop_row_f64(source, target, n, rkey, <uint32_t>threshold, scale, add)


cdef inline void drop_between(const Drop* d, Py_ssize_t layer, const floating* source,
                              floating* target, Py_ssize_t batch, Py_ssize_t first_row,
                              Py_ssize_t rows, Py_ssize_t n) noexcept nogil:
    """Rows [first_row, first_row + rows) of the (T, B, n) input of `layer`, time-major (row r
    is step r // B, batch row r % B): target = source with the between-layer mask."""
    cdef Py_ssize_t r
    cdef Py_ssize_t stream = 2 * (d.stream0 + layer)
    for r in range(first_row, first_row + rows):
        drop_row(source + r * n, target + r * n, n,
                 row_key(d.key, stream, d.step0 + r // batch, d.row0 + r % batch), d.threshold,
                 <floating>d.scale, False)


cdef inline uint64_t threshold_of(double p) noexcept nogil:
    """p as the threshold of a 32-bit draw (0: every unit kept)."""
    return <uint64_t>(p * 4294967296.0)


cdef inline void recurrent_mask(const Drop* d, Py_ssize_t layer, floating* mask,
                                Py_ssize_t row0, Py_ssize_t rows,
                                Py_ssize_t n) noexcept nogil:
    """Batch rows [row0, row0 + rows) of the layer's recurrent mask (B, n), scaled: 1/(1-q)
    where a unit is kept, else 0 (what masked_rows multiplies by)."""
    cdef Py_ssize_t b
    cdef Py_ssize_t stream = 2 * (d.stream0 + layer) + 1
    for b in range(row0, row0 + rows):
        drop_row(<const floating*>NULL, mask + b * n, n, row_key(d.key, stream, 0, d.row0 + b),
                 d.rec_threshold, <floating>d.rec_scale, False)


cdef inline void masked_rows(const floating* source, const floating* mask, floating* target,
                             Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t n,
                             bint add) noexcept nogil:
    """Rows [row0, row0 + rows) of (B, n) arrays: target (+)= source * mask."""
    cdef Py_ssize_t i
    cdef Py_ssize_t first = row0 * n, last = (row0 + rows) * n
    if add:
        for i in range(first, last):
            target[i] += source[i] * mask[i]
    else:
        for i in range(first, last):
            target[i] = source[i] * mask[i]

