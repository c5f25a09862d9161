"""Fixtures shared by tests/core and tests/api.

The engine's settings (cbptt.settings, src/cbptt/_settings.py) are thread-local. Every test
starts from their defaults and leaves them as it found them (engine_settings), so tests set
what they need with cbptt.set_settings without restoring it; the named fixtures below hand
tests the settings they share.

The thread policy (src/cbptt/thread_policy.py) reads the machine's load, and each engine's
adaptive choice times its calls: neither changes a result, but both change which threads run
a call (``Engine.last_parts``). So the tests start from the policy "default" and with
adaptive=False; tests/api/test_thread_policy.py turns them on with fakes.
"""
import pytest

import cbptt
from cbptt import _settings, thread_policy

TEST_DEFAULTS = _settings.DEFAULTS._replace(adaptive=False)
thread_policy.reset(thread_policy.Policy(None, thread_policy.DEFAULT, "the tests' own"))

from helpers import set_parts


@pytest.fixture(autouse=True)
def engine_settings():
    """The default settings for the test (without the adaptive choice); the previous ones
    restored after it."""
    previous = _settings.current()
    _settings._local.snapshot = TEST_DEFAULTS
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
