"""Every knob of the engine in one place: thread-local settings with a context manager.

    with cbptt.settings(threads=1):       # this thread's calls run on one thread
        trainer.step(X, Y)
    cbptt.get_settings()["team"]          # what is in force in this thread

An engine reads the settings in force in the calling thread when it plans a call (see
``_core/plan.pxd``): it fills its plan once, and again only when the settings it finds differ
from those it planned with (a changed snapshot), so a step pays one identity check for them.
Each thread starts from the defaults; ``settings(...)`` changes them for the ``with`` block
and ``set_settings(...)`` for the rest of the thread's life.

The knobs, in two groups:

- ``threads``: how many threads an engine call uses, the team's and BLAS's. N: a call that
  qualifies for the team runs on exactly min(N, batch, 16) parts, and with N = 1 every BLAS
  call of a call runs on one thread; results are bit-identical for a given N. It wins over
  ``team`` and ``adaptive``. None: BLAS's thread count, and where a call runs as a split
  (its bits fixed by that count) each engine runs it on its team or on one thread,
  whichever its call times say is faster (thread_choice.py; on one thread from the start in
  a process that is oversubscribed or one of too many MPI ranks on a node,
  thread_policy.py). The one a user sets.
- ``team``: at most this many threads of cbptt's own team run a call (None: as many as
  BLAS's thread count, up to the team's maximum of 16; 1: never the team).
- ``adaptive``: with ``threads`` None, the choice above (False: a split runs on the team;
  ``team_exact`` turns it off too).
- Tuning, measured on this project's benchmark grid (docs/DEVELOPMENT.md has the figures): when
  a call qualifies for the team, when it splits its per-step products by columns, when it runs
  as sub-engines, which kernels the products take, how the backward pass is chunked. They
  change speed only: results agree to rounding whatever they are (and are bit-identical for a
  given setting and thread count). Knobs marked "tests" force a path for the tests.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple, Optional

SMALL_GEMM_MNK = 1_000_000        # OpenBLAS's small-matrix path, as in _blas.pxd


class Settings(NamedTuple):
    """One immutable snapshot of the knobs (a changed knob makes a new snapshot)."""
    threads: Optional[int] = None
    team: Optional[int] = None
    adaptive: bool = True
    # the team: a call qualifies with at least team_min_batch rows and a per-step product
    # 2 B H G H of at least team_min_flops, or those over all T steps of team_min_call_flops
    team_min_batch: int = 2
    team_min_flops: float = 50_000
    team_min_call_flops: float = 500_000
    team_exact: bool = False                 # tests: exactly `team` parts, whatever BLAS says
    # from this many FLOPs per per-step product, the parts split each step's products by
    # columns (two barriers a step) instead of by batch rows
    team_column_flops: float = 8_000_000
    # calls whose parts split the batch rows run on one sub-engine per part (tests: False
    # runs them on one engine's shared buffers); split_threads > 0 caps the threads a split
    # runs on (fewer take the sub-engines in turn)
    split: bool = True
    split_threads: int = 0
    # a bidirectional layer's two directions at once, one engine call each on a thread of its
    # own, where BLAS has two threads or more and a direction's call qualifies for the team
    concurrent_directions: bool = True
    # every BLAS call of an engine call on one thread even when the call runs alone (set in
    # the threads that run engine calls at once, as the directions do)
    one_blas_thread: bool = False
    # per-step products on W_hh packed into panels (AVX-512) where B * H * G*H > panels_min_mnk
    panels: bool = True
    panels_min_mnk: float = 0
    # the forward's input projection on packed W_ih^T (engines with panels, in_size <= H)
    panel_input: bool = True
    # weight gradients on the panel kernel where m * n * k > wgrad_min_mnk and
    # m * n <= wgrad_max_outputs (else BLAS)
    wgrad: bool = True
    wgrad_min_mnk: float = SMALL_GEMM_MNK
    wgrad_max_outputs: float = 262_144
    # without panels, keep W_hh^T for OpenBLAS's small-matrix path while B * H * G*H is at
    # most this (the per-step product's 8 slices of the small-matrix size, _blas.pxd)
    transposed_limit: float = 8.0 * SMALL_GEMM_MNK
    # the backward pass in chunks of max(chunk_min_steps, ceil(chunk_rows / B)) steps (LSTM
    # and GRU: twice that, at least T/8); LSTM's and GRU's first-layer input copied whole
    # unless whole_gated_input is False (tests)
    chunk_rows: int = 128
    chunk_min_steps: int = 4
    whole_gated_input: bool = True
    # GRU's weight gradients chunk by chunk where dA over all steps takes this many bytes
    gru_chunk_grads_bytes: float = 16 * 1024 * 1024


DEFAULTS = Settings()


class _Local(threading.local):
    snapshot = DEFAULTS


_local = _Local()


def current() -> Settings:
    """The snapshot in force in this thread (the engine compares it by identity)."""
    return _local.snapshot


def get_settings() -> dict[str, Any]:
    """The settings in force in this thread, as a dict."""
    return _local.snapshot._asdict()


def _checked(snapshot: Settings, knobs: dict[str, Any]) -> Settings:
    unknown = sorted(set(knobs) - set(Settings._fields))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; the settings are {list(Settings._fields)}")
    for name in ("threads", "team"):
        value = knobs.get(name, getattr(snapshot, name))
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or
                                  value < 1):
            raise ValueError(f"{name}: expected None or an integer >= 1, got {value!r}")
    if not isinstance(knobs.get("adaptive", True), bool):
        raise ValueError(f"adaptive: expected True or False, got {knobs['adaptive']!r}")
    for name, least in (("team_min_batch", 1), ("chunk_rows", 1), ("chunk_min_steps", 1),
                        ("split_threads", 0)):
        value = knobs.get(name, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
    return snapshot._replace(**knobs)


def set_settings(**knobs: Any) -> dict[str, Any]:
    """Change knobs for the rest of this thread's life; returns the previous settings."""
    previous = get_settings()
    _local.snapshot = _checked(_local.snapshot, knobs)
    return previous


@contextmanager
def settings(**knobs: Any) -> Iterator[Settings]:
    """Change knobs for the ``with`` block in this thread; the previous ones come back after."""
    previous = _local.snapshot
    _local.snapshot = _checked(previous, knobs)
    try:
        yield _local.snapshot
    finally:
        _local.snapshot = previous
