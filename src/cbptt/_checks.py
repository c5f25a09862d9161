"""Argument checks shared by models and trainers: every rejected call fails here, before any
buffer or weight is touched, with the argument's name and the shape that was expected."""
import numbers

import numpy as np

from ._arrays import all_finite
from .names import DTYPES

FLOAT_DTYPES = tuple(np.dtype(name) for name in DTYPES)


def check_dtype(dtype):
    """The model dtype: float32 or float64, anything else is a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_rate(value, name):
    """A dropout rate: a real number in [0, 1), as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_size(value, name, minimum=1):
    """A positive integer argument (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _as_array(value, name):
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:   # ragged lists and the like
        raise ValueError(f"{name}: could not be read as an array ({exc})") from exc


def _shape_text(shape):
    if len(shape) == 1:                      # "(4,)", as Python and NumPy write it
        return f"({shape[0]},)"
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_shape(array, name, expected):
    """expected: tuple of ints or names (names match anything); name the mismatch."""
    if array.ndim != len(expected):
        raise ValueError(f"{name} must have shape {_shape_text(expected)}, got {array.ndim}-d "
                         f"array of shape {array.shape}")
    for got, want in zip(array.shape, expected):
        if isinstance(want, int) and got != want:
            raise ValueError(f"{name} must have shape {_shape_text(expected)}, got {array.shape}")


def float_array(value, name, dtype, expected):
    """A finite, C-contiguous array of dtype with the expected shape (lists, other float and
    integer dtypes, strided, read-only and Fortran-ordered arrays are converted)."""
    array = _as_array(value, name)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    _check_shape(array, name, expected)
    if 0 in array.shape:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if not all_finite(converted):
        if array.dtype.kind == "f" and np.isfinite(array).all():
            raise ValueError(f"{name} has values beyond the range of {np.dtype(dtype).name} "
                             f"(largest magnitude {np.abs(array).max():g})")
        raise ValueError(f"{name} contains NaN or Inf")
    return converted


def class_ids(value, name, expected, num_classes):
    """Integer class ids in [0, num_classes) as a C-contiguous int64 array."""
    array = _as_array(value, name)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.all(array == np.round(array)):
            raise TypeError(f"{name} must hold integer class ids for cross_entropy, "
                            f"got non-integral {array.dtype} values")
    elif array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold integer class ids for cross_entropy, "
                        f"got dtype {array.dtype}")
    _check_shape(array, name, expected)
    if 0 in array.shape:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    # range check on the values as given: casting first would wrap large unsigned ids and
    # turn huge floats into INT64_MIN (with a RuntimeWarning), and report the wrong values
    low, high = array.min(), array.max()
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name}: class ids must be in [0, {num_classes}), got values in "
                         f"[{low}, {high}]")
    return np.ascontiguousarray(array, dtype=np.int64)


def sequence_batch(X, input_size, dtype, name="X"):
    """X as (B, T, I) floats, or as token ids: a 2-D integer X (B, T) holds ids in
    [0, input_size), the one-hot input (B, T, I) without making it (returned as C-contiguous
    int64; ``X.ndim == 2`` tells the callers)."""
    array = _as_array(X, name)
    if array.ndim == 2:
        if array.dtype.kind not in "iu" or array.dtype == np.bool_:
            raise ValueError(f"{name}: a 2-D input is token ids (B, T), integers in "
                            f"[0, {input_size}); got dtype {array.dtype} (float inputs are "
                            f"(batch, steps, {input_size}))")
        if 0 in array.shape:
            raise ValueError(f"{name} must have shape (batch, steps) with batch >= 1 and "
                             f"steps >= 1, got {array.shape}")
        low, high = array.min(), array.max()
        if low < 0 or high >= input_size:
            raise ValueError(f"{name}: token ids must be in [0, {input_size}) (the model's "
                             f"input_size), got values in [{low}, {high}]")
        return np.ascontiguousarray(array, dtype=np.int64)
    if array.ndim == 3 and (array.shape[0] == 0 or array.shape[1] == 0):
        raise ValueError(f"{name} must have shape (batch, steps, {input_size}) with batch >= 1 "
                         f"and steps >= 1, got {array.shape}")
    return float_array(array, name, dtype, ("batch", "steps", input_size))


def lengths(lengths, batch, steps):
    """lengths (B,): integers in [1, T], as int64, or None."""
    if lengths is None:
        return None
    array = np.asarray(lengths)
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise TypeError(f"lengths must hold integers, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {array.shape}")
    if array.min() < 1 or array.max() > steps:
        raise ValueError(f"lengths must be in [1, {steps}] (the number of steps), got values "
                         f"in [{array.min()}, {array.max()}]")
    return np.ascontiguousarray(array, dtype=np.int64)
