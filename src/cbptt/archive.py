"""Files that are whole or absent, and the ``.npz`` archive that model files and checkpoints
share.

Atomic writes: the content goes to a temporary file in the same folder, which is flushed and
fsynced, then renamed over the path (and the folder fsynced), so a crash or a Ctrl-C leaves
either the old file or the complete new one, never a half-written one.

The archive: a NumPy ``.npz`` (read without unpickling) holding

- ``__config__``: a JSON object, the model's constructor arguments (``RNN.config()``) and
  ``format_version``;
- ``param:NAME``: every parameter, keyed as ``RNN.state_dict()``;
- whatever else the writer adds under its own prefix (a checkpoint adds ``__run__``,
  ``optim:...`` and ``stream:...``; ``cbptt.load`` ignores them).
"""
import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1
CONFIG_ENTRY = "__config__"
PARAM_PREFIX = "param:"
# What reading a damaged or foreign archive raises (besides FileNotFoundError).
READ_ERRORS = (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile)


# -- atomic files -----------------------------------------------------------------------------
def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()     # what open() would give a new file (mkstemp gives 0600)


def _fsync_dir(folder):
    """Make a rename in folder durable (where folders can be opened: not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Write a file so that ``path`` holds either its old content or the complete new one:
    ``write(f)`` fills a binary temporary file in the same folder, which is flushed, fsynced
    and renamed over ``path`` (the folder is fsynced too). On any error (or Ctrl-C) the
    temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(path, text):
    """``atomic_write`` of a str, as UTF-8."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# -- the archive ------------------------------------------------------------------------------
def model_entries(model):
    """The archive entries of a model: ``__config__`` and one ``param:NAME`` per parameter
    (views of the model's buffer, not copies)."""
    entries = {PARAM_PREFIX + name: view for name, view in model.named_parameters()}
    entries[CONFIG_ENTRY] = json_entry(dict(model.config(), format_version=FORMAT_VERSION))
    return entries


def json_entry(value):
    """A JSON-serialisable value as an archive entry (a 0-d str array)."""
    return np.array(json.dumps(value))


def read_json_entry(entries, name):
    """The value a ``json_entry`` holds; ValueError when missing or not JSON."""
    if name not in entries:
        raise ValueError(f"no {name} entry")
    return json.loads(str(entries[name]))


def write_archive(path, entries):
    """``np.savez`` of entries to exactly ``path``, atomically."""
    atomic_write(path, lambda f: np.savez(f, **entries))


def read_archive(path, wanted=None):
    """The entries of an archive, as a dict of arrays (never unpickling): every one, or those
    whose name ``wanted(name)`` accepts (the others are not read). Raises what ``np.load``
    raises on a damaged file (one of READ_ERRORS), ValueError when the file is not an
    ``.npz`` archive, FileNotFoundError when it does not exist."""
    with np.load(path, allow_pickle=False) as data:
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        return {name: data[name] for name in data.files if wanted is None or wanted(name)}


def is_model_entry(name):
    """Whether an entry is part of the model (its configuration or a parameter)."""
    return name == CONFIG_ENTRY or name.startswith(PARAM_PREFIX)


def model_config_and_state(entries):
    """(constructor arguments, state dict) of the model an archive holds. ValueError when
    ``__config__`` is missing or is not a JSON object."""
    config = read_json_entry(entries, CONFIG_ENTRY)
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_ENTRY} is not a mapping")
    config = dict(config)
    config.pop("format_version", None)
    state = {name[len(PARAM_PREFIX):]: value for name, value in entries.items()
             if name.startswith(PARAM_PREFIX)}
    return config, state


def entries_with_prefix(entries, prefix):
    """{name without prefix: array} of the entries whose name starts with prefix."""
    return {name[len(prefix):]: value for name, value in entries.items()
            if name.startswith(prefix)}
