"""Data for the command line and for scripts: text and time series loading, windows, one-hot
encoding, standardisation, evaluation and sampling of character models. (Data sets made on the
fly, such as the demo's corpus, are in ``cbptt.datasets``.)

Everything here raises ``DataError`` (a ``ValueError``) with a one-line message naming the file
and what is wrong with it, so a caller can show it to a person as it is.
"""
import csv
import hashlib
import math
import os

import numpy as np

TEXT, CSV, NPY = "text", "csv", "npy"
FORMATS = (TEXT, CSV, NPY)


class DataError(ValueError):
    """A problem with a user's data (missing, empty, malformed, too short)."""


# -- files ------------------------------------------------------------------------------------
def detect_format(path, fmt="auto"):
    """"text", "csv" or "npy": from ``fmt``, or from the extension (.csv/.tsv, .npy; anything
    else is text)."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"unknown data format {fmt!r}; choose from auto, "
                            f"{', '.join(FORMATS)}")
        return fmt
    ext = os.path.splitext(os.fspath(path))[1].lower()
    return {".csv": CSV, ".tsv": CSV, ".npy": NPY}.get(ext, TEXT)


def _check_file(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a data file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")
    return path


def file_digest(path):
    """sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(path):
    """The file's text (UTF-8). DataError if it is missing, empty or not UTF-8."""
    path = _check_file(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                        f"{exc.start}); cbptt reads text files as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not text:
        raise DataError(f"{path}: the file is empty")
    return text


def _number(cell):
    value = float(cell)          # ValueError for anything that is not a number
    return value


def read_csv(path):
    """A numeric table from a CSV (or, for .tsv, tab-separated) file.

    The first row is a header when any of its cells is not a number; otherwise columns are
    named by their index ("0", "1", ...). Returns (values (N, C) float64, names).
    DataError for ragged rows, non-numeric or empty cells, NaN/Inf, or no data rows."""
    path = _check_file(path)
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(number, row) for number, row in enumerate(csv.reader(f, delimiter=delimiter),
                                                               start=1)
                    if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    names = None
    first = rows[0][1]
    try:
        [_number(cell) for cell in first]
    except ValueError:
        names = [cell.strip() for cell in first]
        rows = rows[1:]
        if len(set(names)) != len(names):
            raise DataError(f"{path} line 1: the header repeats a column name")
    if not rows:
        raise DataError(f"{path}: a header but no data rows")
    width = len(names) if names is not None else len(first)
    if names is None:
        names = [str(i) for i in range(width)]
    values = np.empty((len(rows), width))
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path} line {line}: {len(row)} cells, expected {width} (ragged "
                            f"rows)")
        for j, cell in enumerate(row):
            try:
                values[i, j] = _number(cell)
            except ValueError:
                what = "an empty cell" if not cell.strip() else f"{cell.strip()!r} is not a number"
                raise DataError(f"{path} line {line}, column {names[j]!r}: {what}") from None
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{path} line {rows[i][0]}, column {names[j]!r}: {values[i, j]} (NaN and "
                        f"Inf are not allowed)")
    return values, names


def read_npy(path):
    """A numeric (N,) or (N, C) array from a .npy file, as float64 (N, C) and column names
    "0", "1", ..."""
    path = _check_file(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: an .npz archive, not a single .npy array")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: holds {array.dtype} values, not numbers")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a (steps,) or (steps, columns) array, got shape "
                        f"{array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: the array is empty (shape {array.shape})")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise DataError(f"{path}: row {row} holds NaN or Inf")
    return values, [str(i) for i in range(values.shape[1])]


def read_series(path, fmt="auto"):
    """(values (N, C) float64, column names) from a CSV or .npy file."""
    fmt = detect_format(path, fmt)
    if fmt == NPY:
        return read_npy(path)
    if fmt == CSV:
        return read_csv(path)
    raise DataError(f"{path}: a time series must be a .csv, .tsv or .npy file")


def select_columns(names, spec, what="--columns"):
    """Indices of the columns named in ``spec`` (a comma-separated string or a list of names
    or indices; None for all)."""
    if spec is None:
        return list(range(len(names)))
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if str(s) != ""]
    if not items:
        raise DataError(f"{what}: no columns given")
    chosen = []
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item in names):
            index = names.index(item) if isinstance(item, str) else int(item)
        else:
            try:
                index = int(item)
            except ValueError:
                raise DataError(f"{what}: no column {item!r} (columns: "
                                f"{', '.join(names)})") from None
        if not -len(names) <= index < len(names):
            raise DataError(f"{what}: column index {index} out of range (the data has "
                            f"{len(names)} columns)")
        chosen.append(index % len(names))
    if len(set(chosen)) != len(chosen):
        raise DataError(f"{what}: a column is named twice")
    return chosen


# -- standardisation --------------------------------------------------------------------------
def fit_standardisation(values):
    """(mean, std) per column of a (N, C) array; a constant column gets std 1."""
    values = np.asarray(values, np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std[~(std > 1e-12)] = 1.0
    return mean, std


def standardise(values, mean, std):
    return (np.asarray(values, np.float64) - mean) / std


def unstandardise(values, mean, std):
    return np.asarray(values, np.float64) * std + mean


# -- windows ----------------------------------------------------------------------------------
def holdout_start(length, val_fraction):
    """Index where the held-out tail starts: the last ``val_fraction`` of ``length`` items
    (held-out data is the end of the series or text, never shuffled in)."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val must be in [0, 1), got {val_fraction}")
    return length - int(round(length * val_fraction))


def forecast_windows(inputs, targets, window, horizon=1, mode="many-to-many", stride=1):
    """Training windows for forecasting.

    inputs (N, I) and targets (N, O) are aligned rows. A window covers rows [s, s + window).
    many-to-one: X (W, window, I), Y (W, O) with the target at row s + window - 1 + horizon.
    many-to-many: X (W, window, I), Y (W, window, O) with the targets of rows
    [s + horizon, s + window + horizon). DataError if the series is too short."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    length = len(inputs)
    if window < 1 or horizon < 0:
        raise DataError(f"--window must be >= 1 and --horizon >= 0 (got {window}, {horizon})")
    count = length - window - horizon + 1
    if count < 1:
        raise DataError(f"the window ({window} steps) plus the horizon ({horizon}) is longer "
                        f"than the series ({length} rows); use a smaller --window")
    starts = np.arange(0, count, stride)
    steps = np.arange(window)
    X = inputs[starts[:, None] + steps]
    if mode == "many-to-one":
        Y = targets[starts + window - 1 + horizon]
    elif mode == "many-to-many":
        Y = targets[starts[:, None] + steps + horizon]
    else:
        raise DataError(f"unknown mode {mode!r}; choose many-to-many or many-to-one")
    return X, Y


def last_windows(inputs, window):
    """Every window of ``window`` rows ending at rows window-1 .. N-1: (N - window + 1,
    window, I). For forecasts: the model's output at a window's last step is its prediction
    for ``horizon`` rows later."""
    inputs = np.asarray(inputs)
    if window > len(inputs):
        raise DataError(f"the window ({window} steps) is longer than the series "
                        f"({len(inputs)} rows)")
    starts = np.arange(len(inputs) - window + 1)
    return inputs[starts[:, None] + np.arange(window)]


# -- characters -------------------------------------------------------------------------------
def build_vocab(text):
    """The sorted distinct characters of ``text``, as a string."""
    return "".join(sorted(set(text)))


def encode(text, vocab, what="text"):
    """Class ids (int64) of the characters of ``text``; DataError for characters outside
    ``vocab``."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    vocab_codes = np.frombuffer(vocab.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    order = np.argsort(vocab_codes, kind="stable")
    sorted_codes = vocab_codes[order]
    slot = np.minimum(np.searchsorted(sorted_codes, codes), max(len(vocab) - 1, 0))
    known = sorted_codes[slot] == codes if len(vocab) else np.zeros(len(codes), bool)
    if not known.all():
        unknown = text[int(np.argmin(known))]
        raise DataError(f"{what} holds {unknown!r}, which is not in the model's vocabulary of "
                        f"{len(vocab)} characters")
    return order[slot].astype(np.int64)


def decode(ids, vocab):
    return "".join(vocab[int(i)] for i in ids)


def one_hot(ids, size, dtype=np.float32):
    """(..., size) one-hot rows of integer ids."""
    ids = np.asarray(ids)
    out = np.zeros(ids.shape + (size,), dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


def char_windows(ids, window):
    """Non-overlapping windows of ``window`` characters with their next characters:
    (W, window + 1) ids; X is one_hot(w[:, :-1]) and the targets are w[:, 1:]."""
    ids = np.asarray(ids)
    count = (len(ids) - 1) // window
    if count < 1:
        raise DataError(f"the text ({len(ids)} characters) is shorter than one window of "
                        f"{window} + 1; use a smaller --window")
    starts = np.arange(count) * window
    return ids[starts[:, None] + np.arange(window + 1)]


def char_streams(ids, streams):
    """The text cut into ``streams`` parallel streams of equal length: (B, L + 1) ids, inputs
    [:, :-1] and next characters [:, 1:] (the tail that does not fill a stream is dropped)."""
    ids = np.asarray(ids)
    length = (len(ids) - 1) // streams
    if length < 1:
        raise DataError(f"the text ({len(ids)} characters) is too short for {streams} streams; "
                        f"use a smaller --batch")
    return np.stack([ids[b * length:b * length + length + 1] for b in range(streams)])


def unigram_bits(ids, size):
    """Entropy, in bits per character, of the character frequencies of ``ids``: the loss of
    the best model that ignores context."""
    counts = np.bincount(np.asarray(ids), minlength=size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits, targets):
    """Mean -log softmax(logits)[target] in nats; logits (..., V), targets (...)."""
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)
    return float(-picked.mean())


def char_loss(model, ids, window=None, streams=16, chunk=256):
    """Mean cross-entropy (nats per character) of a character model on a text's ids.

    window: score non-overlapping windows of that many characters, each from a zero state
    (as ManyToMany windows are trained). None: score the text as ``streams`` parallel
    streams read ``chunk`` characters at a time with the state carried (as Truncated
    streams are trained). The model reads the ids as token ids (its one-hot inputs)."""
    if window is not None:
        wins = char_windows(ids, window)
        total = 0.0
        for start in range(0, len(wins), 64):
            w = wins[start:start + 64]
            total += cross_entropy(model.predict(w[:, :-1]), w[:, 1:]) * len(w)
        return total / len(wins)
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    data = char_streams(ids, streams)
    state, total, count = (None, None), 0.0, 0
    for start in range(0, data.shape[1] - 1, chunk):
        block = data[:, start:start + chunk + 1]
        out, final = model.predict(block[:, :-1], *state, return_state=True)
        state = final if isinstance(final, tuple) else (final, None)
        n = block.shape[1] - 1
        total += cross_entropy(out, block[:, 1:]) * n
        count += n
    return total / count


def sample_chars(model, vocab, prime, length, temperature=0.8, rng=None):
    """``length`` characters generated by a character model after reading ``prime``.

    Each next character is drawn from softmax(logits / temperature) (temperature 0: the most
    likely one). Returns the generated text, without the prime."""
    if not prime:
        raise DataError("the prime text is empty")
    if not temperature >= 0:
        raise DataError(f"--temperature must be >= 0, got {temperature}")
    rng = np.random.default_rng(rng)
    size = len(vocab)
    ids = encode(prime, vocab, what="the prime text")
    out, final = model.predict(ids[None], return_state=True)     # token ids: one-hot rows
    generated = []
    for _ in range(length):
        logits = out[0, -1].astype(np.float64)
        if temperature == 0:
            nxt = int(np.argmax(logits))
        else:
            p = np.exp(log_softmax(logits / temperature))
            nxt = int(rng.choice(size, p=p / p.sum()))
        generated.append(vocab[nxt])
        h, c = final if isinstance(final, tuple) else (final, None)
        out, final = model.predict(np.array([[nxt]]), h, c, return_state=True)
    return "".join(generated)


def bits(nats):
    """Nats to bits."""
    return nats / math.log(2)
