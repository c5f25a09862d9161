"""Fixtures shared by tests/core and tests/api.

The engine's settings (cbptt.settings, src/cbptt/_settings.py) are thread-local. Every test
starts from their defaults and leaves them as it found them (engine_settings), so tests set
what they need with cbptt.set_settings without restoring it; the named fixtures below hand
tests the settings they share.
"""
import pytest

import cbptt
from cbptt import _settings

from helpers import set_parts


@pytest.fixture(autouse=True)
def engine_settings():
    """The default settings for the test; the previous ones restored after it."""
    previous = _settings.current()
    _settings._local.snapshot = _settings.DEFAULTS
    yield
    _settings._local.snapshot = previous


@pytest.fixture
def team():
    """set_parts (helpers.py): the number of threads and the split of the test's calls."""
    return set_parts


@pytest.fixture
def panels():
    """Set whether engines multiply by packed panels (on: every shape)."""
    return lambda on: cbptt.set_settings(panels=on, panels_min_mnk=0.0)


@pytest.fixture
def wgrad():
    """Set whether engines' weight gradients use the kernel (on: at every size it can take)."""
    return lambda on: cbptt.set_settings(wgrad=on, wgrad_min_mnk=0.0,
                                         wgrad_max_outputs=float("inf"))


@pytest.fixture
def panel_input():
    """Set whether engines with panels run the forward's input projection on them."""
    return lambda on: cbptt.set_settings(panel_input=on)


@pytest.fixture
def chunking():
    """Set the backward's chunks of engines to `steps` steps of any batch."""
    return lambda steps: cbptt.set_settings(chunk_rows=1, chunk_min_steps=steps,
                                            whole_gated_input=False)


@pytest.fixture
def gru_chunk_grads():
    """Force GRU's weight gradients per chunk (True) or after the step loop (False)."""
    return lambda per_chunk: cbptt.set_settings(
        gru_chunk_grads_bytes=0 if per_chunk else float("inf"))
