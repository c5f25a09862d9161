"""Fixtures shared by tests/core and tests/api.

The engine's settings are module globals set through the _engine.set_* test hooks (each sets
and returns the previous values). Every test starts from their defaults and leaves them as it
found them (engine_settings), so tests set what they need without restoring it; the named
fixtures below hand tests the setters they share.
"""
import pytest

from cbptt import _engine

from helpers import set_parts

# every _engine.set_* hook; called without arguments each sets its defaults
SETTERS = ("set_team", "set_split", "set_panels", "set_wgrad", "set_panel_input", "set_chunking",
           "set_transposed_limit", "set_gru_chunk_grads")


def _restore(setter, previous):
    """Call a set_* hook with what it returned (a dict, a tuple or one value)."""
    if isinstance(previous, dict):
        setter(**previous)
    elif isinstance(previous, tuple):
        setter(*previous)
    else:
        setter(previous)


@pytest.fixture(autouse=True)
def engine_settings():
    """The engine's default settings for the test; the previous ones restored after it."""
    previous = {name: getattr(_engine, name)() for name in SETTERS}
    yield
    for name, values in previous.items():
        _restore(getattr(_engine, name), values)


@pytest.fixture
def team():
    """set_parts (helpers.py): the number of threads and the split of the test's calls."""
    return set_parts


@pytest.fixture
def panels():
    """Set whether engines made in the test multiply by packed panels (on: every shape)."""
    return lambda on: _engine.set_panels(on, 0.0)


@pytest.fixture
def wgrad():
    """Set whether engines' weight gradients use the kernel (on: at every size it can take)."""
    return lambda on: _engine.set_wgrad(on, 0.0, float("inf"))


@pytest.fixture
def panel_input():
    """Set whether engines with panels run the forward's input projection on them."""
    return _engine.set_panel_input


@pytest.fixture
def chunking():
    """Set the backward's chunks of engines made in the test to `steps` steps of any batch."""
    return lambda steps: _engine.set_chunking(rows=1, min_steps=steps, whole_gated_input=False)


@pytest.fixture
def gru_chunk_grads():
    """Force GRU's weight gradients per chunk (True) or after the step loop (False)."""
    return lambda per_chunk: _engine.set_gru_chunk_grads(0 if per_chunk else float("inf"))
