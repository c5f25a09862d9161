"""Data sets made on the fly (no downloads): small synthetic tasks, and a corpus of Python
standard-library docstrings collected at run time. (Dates written many ways paired with their ISO
form, a sequence-to-sequence task: ``cbptt.dates``.)"""
import importlib
import inspect

import numpy as np


def adding_problem(num_sequences, steps, seed=None, dtype=np.float64):
    """The adding problem of Hochreiter & Schmidhuber (1997).

    Each sequence has two channels: values uniform in [0, 1], and a marker that is 1 at two
    random steps (one in each half) and 0 elsewhere. The target is the sum of the two marked
    values. Always predicting the mean (1.0) gives an MSE of 1/6 ~ 0.167.

    Returns X (num_sequences, steps, 2) and y (num_sequences, 1).
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(num_sequences, steps))
    markers = np.zeros((num_sequences, steps))
    rows = np.arange(num_sequences)
    half = steps // 2
    first = rng.integers(0, half, size=num_sequences)
    second = rng.integers(half, steps, size=num_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    X = np.stack([values, markers], axis=2).astype(dtype)
    y = (values[rows, first] + values[rows, second])[:, None].astype(dtype)
    return X, y


def noisy_sine(num_sequences, steps, noise=0.05, seed=None, dtype=np.float64):
    """Sine waves of random frequency and phase with Gaussian noise, for one-step-ahead
    forecasting: X (N, steps, 1) holds s_0..s_{steps-1}, Y (N, steps, 1) holds s_1..s_steps."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.2, size=(num_sequences, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(num_sequences, 1))
    t = np.arange(steps + 1)[None, :]
    series = np.sin(2 * np.pi * freq * t + phase) + noise * rng.normal(size=(num_sequences,
                                                                               steps + 1))
    X = series[:, :-1, None].astype(dtype)
    Y = series[:, 1:, None].astype(dtype)
    return X, Y


STDLIB_MODULES = (
    "abc", "argparse", "array", "base64", "bisect", "calendar", "collections", "colorsys",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "enum", "filecmp", "fnmatch", "fractions", "functools", "getopt", "gettext",
    "glob", "gzip", "hashlib", "heapq", "hmac", "html", "inspect", "io", "ipaddress",
    "itertools", "json", "keyword", "linecache", "locale", "logging", "math", "mimetypes",
    "numbers", "operator", "optparse", "os", "pathlib", "pickle", "platform", "pprint",
    "queue", "random", "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "types", "typing",
    "unittest", "urllib.parse", "uuid", "warnings", "weakref", "zipfile", "zlib",
)


def stdlib_docstrings(max_chars=300_000, modules=STDLIB_MODULES, ascii_only=True):
    """A corpus of English technical prose: the docstrings of a fixed list of standard-library
    modules, their classes, functions and methods, in sorted order, each once, separated by
    blank lines, up to ``max_chars`` characters. The same Python gives the same text.

    ascii_only replaces non-ASCII characters with "?" (a handful of them would otherwise
    each take an output of a character model)."""
    seen, parts, total = set(), [], 0

    def add(doc):
        nonlocal total
        if not isinstance(doc, str):
            return
        doc = inspect.cleandoc(doc).strip()
        if len(doc) < 20 or doc in seen:
            return
        seen.add(doc)
        if ascii_only:
            doc = doc.encode("ascii", "replace").decode("ascii")
        parts.append(doc)
        total += len(doc) + 2

    for name in modules:
        if total >= max_chars:
            break
        try:
            module = importlib.import_module(name)
        except ImportError:      # a Python built without it
            continue
        add(module.__doc__)
        for attr in sorted(vars(module)):
            if attr.startswith("_"):
                continue
            obj = vars(module)[attr]
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj):
                add(obj.__doc__)
                for member in sorted(vars(obj)):
                    if member.startswith("_") and member != "__init__":
                        continue
                    value = vars(obj)[member]
                    if isinstance(value, (staticmethod, classmethod)):
                        value = value.__func__
                    if inspect.isfunction(value) or isinstance(value, property):
                        add(value.__doc__)
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                add(obj.__doc__)
    return "\n\n".join(parts)[:max_chars]
