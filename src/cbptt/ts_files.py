"""Labelled time series in the ``.ts`` format of the UEA & UCR classification archives (the
files sktime and aeon ship), read into the arrays a ``ManyToOne`` trainer takes.

A ``.ts`` file is a header of ``@`` lines (``@problemName``, ``@dimensions``,
``@equalLength``, ``@classLabel true c1 c2 ...``, ...) and ``#`` comments, then ``@data`` and
one case a line: its dimensions separated by ``:``, each a comma-separated series, the class
label last. Series may differ in length from case to case (all dimensions of one case have the
same length). Only class-labelled files without timestamps and without missing values (``?``)
are read here.

Everything here raises ``DataError`` (``cbptt.data``) with a one-line message naming the file,
and the line where the problem is.
"""
from typing import NamedTuple

import numpy as np

from .data import DataError, _check_file, read_text


class LabelledSeries(NamedTuple):
    """A ``.ts`` file's cases, zero-padded to the longest.

    X (N, T, D) of the dtype asked for, case n's steps at X[n, :lengths[n]] and zeros after;
    lengths (N,) int64 in [1, T]; y (N,) int64 class ids, indices into ``classes``, the labels
    in the order the header's ``@classLabel`` line lists them."""
    X: np.ndarray
    lengths: np.ndarray
    y: np.ndarray
    classes: tuple


def read_ts(path, dtype=np.float64):
    """The cases of a class-labelled ``.ts`` file as a ``LabelledSeries`` (X, lengths, y,
    classes). DataError for a file that is not one: no ``@data``, no ``@classLabel true``
    line, a label it does not list, a case whose dimension count differs from ``@dimensions``
    or whose dimensions differ in length, a value that is not a finite number, timestamps or
    missing values."""
    path = _check_file(path)
    lines = read_text(path).splitlines()
    header, start = _header(path, lines)
    classes = header["classes"]
    index = {label: i for i, label in enumerate(classes)}
    cases, labels, numbers = [], [], []
    for number, line in enumerate(lines[start:], start=start + 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        *fields, label = line.split(":")
        where = f"{path} line {number}"
        if label.strip() not in index:
            raise DataError(f"{where}: class label {label.strip()!r} is not one of "
                            f"@classLabel's ({' '.join(classes)})")
        cases.append(_case(where, fields, header["dimensions"]))
        labels.append(index[label.strip()])
        numbers.append(number)
    if not cases:
        raise DataError(f"{path}: no cases after @data")
    dims = header["dimensions"] or cases[0].shape[1]
    for case, number in zip(cases, numbers):
        if case.shape[1] != dims:
            raise DataError(f"{path} line {number}: {case.shape[1]} dimensions, expected "
                            f"{dims} (as the first case)")
    lengths = np.array([len(case) for case in cases], dtype=np.int64)
    X = np.zeros((len(cases), int(lengths.max()), dims), dtype=dtype)
    for n, case in enumerate(cases):
        X[n, :len(case)] = case
    return LabelledSeries(X, lengths, np.array(labels, dtype=np.int64), tuple(classes))


def _header(path, lines):
    """({"dimensions": int or None, "classes": [labels]}, index of the first line after
    @data)."""
    dimensions, classes = None, None
    for i, line in enumerate(lines):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        tag = words[0].lower()
        where = f"{path} line {i + 1}"
        if tag == "@data":
            if classes is None:
                raise DataError(f"{path}: no '@classLabel true ...' line before @data (only "
                                "class-labelled .ts files are read)")
            return {"dimensions": dimensions, "classes": classes}, i + 1
        if tag == "@classlabel":
            if len(words) < 3 or words[1].lower() != "true":
                raise DataError(f"{where}: expected '@classLabel true label1 label2 ...' "
                                "(only class-labelled .ts files are read)")
            classes = words[2:]
        elif tag == "@dimensions":
            if len(words) != 2 or not words[1].isdigit() or int(words[1]) < 1:
                raise DataError(f"{where}: @dimensions must be a positive integer")
            dimensions = int(words[1])
        elif tag in ("@timestamps", "@missing") and words[1:] != ["false"]:
            raise DataError(f"{where}: {words[0]} {' '.join(words[1:])} is not supported "
                            f"(only series without timestamps or missing values)")
        elif not tag.startswith("@"):
            raise DataError(f"{where}: data before @data")
    raise DataError(f"{path}: no @data line")


def _case(where, fields, dimensions):
    """One case's dimensions (comma-separated series) as (length, D) float64."""
    if dimensions is not None and len(fields) != dimensions:
        raise DataError(f"{where}: {len(fields)} dimensions, expected {dimensions} "
                        f"(@dimensions)")
    if not fields:
        raise DataError(f"{where}: a class label without a series")
    series = []
    for d, field in enumerate(fields):
        if "?" in field or "(" in field:
            raise DataError(f"{where}, dimension {d}: missing values (?) and timestamps are "
                            "not supported")
        try:
            series.append([float(value) for value in field.split(",")])
        except ValueError:
            raise DataError(f"{where}, dimension {d}: not a comma-separated list of "
                            "numbers") from None
    length = len(series[0])
    if any(len(s) != length for s in series):
        raise DataError(f"{where}: dimensions of different lengths "
                        f"({', '.join(str(len(s)) for s in series)})")
    values = np.array(series).T
    if not np.isfinite(values).all():
        raise DataError(f"{where}: NaN or Inf (only finite values are read)")
    return values
