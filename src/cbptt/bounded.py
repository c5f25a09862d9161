"""Exact full-sequence BPTT within a memory budget: keep a few states, recompute the rest.

A step of ManyToMany or ManyToOne with ``memory_limit`` cuts the sequence into units of
``leaf_steps`` steps (the last one padded with steps of weight 0 after the sequence's end,
which add nothing). One training engine of one unit's length runs a *leaf*: forward over the
unit from a state, its loss (at the whole sequence's scale), and BPTT from the gradient that
the units after it pass back (``Engine.loss_and_grad(h0=..., dh_final=..., terms=...)``),
returning the gradient at the unit's start. The same engine runs the forward sweeps
(``Engine.forward_states``), whose final states are the checkpoints.

The schedule is Gruslys et al.'s (2016, "Memory-Efficient Backpropagation Through Time",
BPTT-HSM) dynamic programme over units, with k free checkpoint slots: to run BPTT over n
units from a stored state, either n = 1 (a leaf), or with k = 0 walk forward from the stored
state to each unit's start in turn, last unit first (quadratic), or pick y, sweep forward y
units, store that state in a slot, run the last n - y units with k - 1 slots, then the first
y with k. Its cost counts forward steps (a backward step as ``BACKWARD_COST`` of them); the
plan takes the leaf length and slot count that the budget allows with the least cost.

The budget covers what the step adds: the two engines' workspaces (``memory.step_bytes``),
the checkpoints, the carried states and gradients, one unit's copy of the inputs, targets
and weights, and a gradient buffer for a leaf's gradients. The model, the inputs, the targets
and the trainer's gradient buffer are the caller's and are not counted. Results equal the
unbounded step's to rounding (the weight gradients are summed unit by unit rather than in one
product over all steps), and are the same for any limit that gives the same plan.
"""
import dataclasses
import functools
import re

import numpy as np

from . import _settings, memory
from ._threads import blas_threads

BACKWARD_COST = 2.0        # a backward step costs about two forward steps (its products)
CALL_COST = 4.0            # an engine call's fixed cost, in forward steps (favours long leaves)
MAX_UNITS = 256            # items a level of the programme takes (it is O(items^2 slots))
MAX_SLOTS = 256            # checkpoints a plan may hold at once
CANDIDATES = 6             # leaf lengths a plan compares (the longest that fit)
# leaves whose training workspace is at most this are preferred: a leaf that stays in the
# caches runs faster than the cost model counts (measured, LSTM B=8 H=128 float32 T=10,000:
# leaves of 2,048 steps 1.29-1.39x the unbounded step, of 64-128 steps 1.10-1.20x)
PREFERRED_LEAF_BYTES = 4 * 2 ** 20
# a held state's Python objects: a tuple (64 bytes) and two arrays' headers (128 each, as
# tracemalloc counts them); they matter only for tiny models, where they are most of a state
STATE_OBJECT_BYTES = 64 + 2 * 128
LONG_LEAF_COST = 1.2       # a longer leaf's cost, against the model's (the same measurement)
_UNITS = {"": 1, "b": 1, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40,
          "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12}


def parse_limit(limit, name="memory_limit"):
    """Bytes of a limit given as a number of bytes or a string "64MiB", "1.5 GiB", "200kB"."""
    if isinstance(limit, (int, np.integer)) and not isinstance(limit, bool) and limit > 0:
        return int(limit)
    if isinstance(limit, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtKMGT]?i?[bB]?)\s*", limit)
        if match and match.group(2).lower() in _UNITS:
            value = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if value >= 1:
                return int(value)
    raise ValueError(f"{name} must be a positive number of bytes or a string such as "
                     f"'64MiB', got {limit!r}")


@dataclasses.dataclass
class MemoryPlan:
    """What a memory-bounded step will do (``plan_memory``): ``leaf_steps`` steps a unit,
    ``units`` of them, at most ``checkpoints`` states stored at once, ``forward_steps``
    forward steps computed in all (the leaves' own included) against the sequence's
    ``steps``: ``recompute_factor`` = forward_steps / steps (1: no recomputation).
    ``peak_bytes`` bounds what the step adds; ``unbounded_bytes`` is what the store-everything
    step would add (both count the arrays' bytes; Python's own objects, the arrays' headers
    and NumPy's cache of small blocks, add a few KiB, which matter only for the smallest
    models); ``minimum_bytes`` the least limit any plan fits in; ``parts`` the most
    threads its engine calls run on (the workspaces are counted for that many)."""
    limit: int
    steps: int
    leaf_steps: int
    units: int
    checkpoints: int
    forward_steps: int
    peak_bytes: int
    unbounded_bytes: int
    minimum_bytes: int
    parts: int = 1
    splits: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @property
    def recompute_factor(self):
        return self.forward_steps / self.steps

    @property
    def expected_time_factor(self):
        """The step's cost against the unbounded step's, by the plan's cost model."""
        return (self.forward_steps + BACKWARD_COST * self.steps) / ((1 + BACKWARD_COST) *
                                                                     self.steps)


def _state_bytes(model, batch, objects=False):
    """Bytes of a state (h, and c for lstm) of every layer; with objects, and of the Python
    objects that hold it (a held state is a tuple of arrays: at most STATE_OBJECT_BYTES)."""
    return model.num_layers * batch * model.hidden_size * model.dtype.itemsize * (
        2 if model.cell == "lstm" else 1) + (STATE_OBJECT_BYTES if objects else 0)


def check_limit(model, limit, trainer):
    """A trainer's memory_limit in bytes (None: none), for a model it can bound."""
    if limit is None:
        return None
    limit = parse_limit(limit)
    refused = [what for what, bad in (
        ("bidirectional", model.bidirectional), ("an embedding", model.vocab_size is not None))
        if bad]
    if refused:
        raise ValueError(f"memory_limit: {trainer} does not bound the memory of a model with "
                         f"{' or '.join(refused)} yet; use memory_limit=None")
    return limit


def team_parts(batch):
    """The most parts an engine call on `batch` rows would run on in this thread now: the
    user's threads, else the team's cap in force (exact for the tests' forced parts), BLAS's
    threads, the rows."""
    snapshot = _settings.current()
    if snapshot.threads is not None:
        return max(1, min(batch, snapshot.threads, 16))
    if snapshot.team_exact and snapshot.team is not None:
        return max(1, min(batch, snapshot.team))
    team = 16 if snapshot.team is None else snapshot.team
    return max(1, min(batch, team, blas_threads()))


class capped_team:
    """Run a plan's engine calls with the team capped at the parts it counted: a context
    manager over the settings in force, keeping one capped snapshot per snapshot it finds
    (the engines compare snapshots by identity and keep their plans while it is the same)."""

    def __init__(self, parts):
        self.parts, self.found, self.capped, self.previous = parts, None, None, None

    def __enter__(self):
        found = self.previous = _settings.current()
        if found is not self.found:
            team = self.parts if found.team is None else min(found.team, self.parts)
            threads = None if found.threads is None else min(found.threads, self.parts)
            self.found, self.capped = found, found._replace(team=team, threads=threads)
        _settings._local.snapshot = self.capped

    def __exit__(self, *exc):
        _settings._local.snapshot = self.previous


def fixed_bytes(model, batch, leaf, ids=False, kind="many-to-many", parts=None):
    """Bytes of a plan with leaves of `leaf` steps, besides its checkpoints: the leaf's engine,
    a leaf's inputs, targets, weights and gradients, and seven states (two for a forward
    sweep, each level's walk, the carried gradient and its next value, the initial one).
    An encoder's (kind "encoder", bounded_seq2seq.py) has no targets but each row's step in
    the unit and two more states (the gradient entering the unit, the states it hands off)."""
    itemsize = model.dtype.itemsize
    encoder = kind == "encoder"
    train = memory.step_bytes(model, batch, leaf, training=True, many_to_one=encoder,
                              threads=parts)
    inputs = batch * leaf * (8 if ids else model.input_size * itemsize)
    if encoder:
        targets = 8 * batch + batch            # the rows' lengths in the unit, where they end
    else:
        targets = batch * leaf * max(8, model.output_size * itemsize) + batch * leaf * itemsize
    return (train + inputs + targets + model.params.nbytes +
            (9 if encoder else 7) * _state_bytes(model, batch, objects=True))


def _costs(units, slots, unit_forward, leaf_cost, choices=False):
    """The programme over n <= units units with k <= slots free slots, a unit's forward
    sweep costing unit_forward and BPTT over one unit with k slots leaf_cost[k]: (the cost of
    all `units` for each k, (slots + 1,)), and with ``choices`` the table choice[n, k] of the
    best split's y (0: one unit, or the walk), int16 where it fits. It keeps two columns of
    the cost (k - 1 and k): what it holds is the choice table at most."""
    n = np.arange(units + 1)
    totals = np.empty(slots + 1)
    choice = (np.zeros((units + 1, slots + 1), np.int16 if units < 2 ** 15 else np.int32)
              if choices else None)
    previous = None
    for k in range(slots + 1):
        walk = n * leaf_cost[k] + unit_forward * n * (n - 1) / 2     # the quadratic walk
        current = walk.copy()
        for m in range(2, units + 1) if k > 0 else ():
            y = n[1:m]
            total = y * unit_forward + previous[m - y] + current[1:m]
            best = int(np.argmin(total))
            if total[best] < walk[m]:
                current[m] = total[best]
                if choices:
                    choice[m, k] = best + 1
        totals[k] = current[units]
        previous = current
    return totals, choice


def _levels(steps, leaf, slots, cache=None):
    """The programme's tables for leaves of `leaf` steps: (cost, per_group, (group choice,
    unit choice)). Up to MAX_UNITS units it is one level (groups of one unit); beyond, the
    units go in groups of per_group (a power of two, at most MAX_UNITS groups), and a group's
    BPTT with k slots is itself the programme over its units (its cost, for each k, is the
    upper level's leaf cost). With cache (a dict) the cost alone: (cost, per_group, ()); as
    the programme with k slots reads only its columns k' <= k, the costs made for more slots
    serve fewer, and the cache keeps them (plans of one sequence under several limits)."""
    held = None if cache is None else cache.get((steps, leaf))
    if held is not None and held[0] >= slots:
        return held[1][slots], held[2], ()
    units = -(-steps // leaf)
    per_group, groups = _grouping(units)
    unit_forward, leaf_cost = leaf + CALL_COST, (1 + BACKWARD_COST) * leaf + CALL_COST
    choices = cache is None
    inner, inner_choice = _costs(per_group, slots, unit_forward,
                                 np.full(slots + 1, leaf_cost), choices=choices)
    totals, outer_choice = _costs(groups, slots, per_group * unit_forward, inner,
                                  choices=choices)
    if not choices:
        cache[steps, leaf] = (slots, totals, per_group)
        return totals[slots], per_group, ()
    return totals[slots], per_group, (outer_choice, inner_choice)


def walk_schedule(plan, sweep, leaf, slot, state, start_dh=None):
    """Run (or count) plan's schedule: sweep(first_unit, count, from_state, into) runs the
    forward over units; leaf(unit, state, dh_after) runs a unit's BPTT and returns the
    gradient at its start; slot(+1 / -1) takes or gives back a checkpoint and returns it;
    state(level) the walk's buffer of a level. Returns the gradient at the sequence's start."""
    units = plan.units
    if plan.splits.get("store_all"):    # one sweep keeps every unit's start, then the leaves
        starts = [None]
        for unit in range(units - 1):
            starts.append(sweep(unit, 1, starts[-1], slot(+1)))
        dh = start_dh
        for unit in range(units - 1, -1, -1):
            dh = leaf(unit, starts[unit], dh)
            if unit > 0:
                slot(-1)
        return dh
    outer, inner = plan.splits["choice"]
    per_group = plan.splits["per_group"]

    def run(level, first, count, k, at, dh):
        size = per_group if level == 1 else 1          # units a level's item spans
        if count == 1 and level == 1:
            first_unit = first * per_group
            return run(0, first_unit, min(per_group, units - first_unit), k, at, dh)
        if count == 1:
            return leaf(first, at, dh)
        y = int((outer if level == 1 else inner)[count, k])
        if y == 0:              # walk forward to each item's start, the last item first
            for j in range(count - 1, -1, -1):
                here = at if j == 0 else sweep(first * size, j * size, at, state(level))
                dh = run(level, first + j, 1, k, here, dh)
            return dh
        mid = slot(+1)
        sweep(first * size, y * size, at, mid)
        dh = run(level, first + y, count - y, k - 1, mid, dh)
        slot(-1)
        return run(level, first, y, k, at, dh)

    return run(1, 0, -(-units // per_group), plan.splits["slots"], None, start_dh)


def plan_memory(model, batch, steps, limit, trainer="many-to-many", ids=False, threads=None,
                leaf_steps=None):
    """The plan of a memory-bounded step of ``model`` on ``batch`` sequences of ``steps``
    steps within ``limit`` (bytes, or "64MiB"), without running it: a MemoryPlan. trainer:
    "many-to-many" or "many-to-one" (the same plan), or "seq2seq" with model the pair
    (encoder, decoder) and steps the pair (source steps, target steps): a Seq2SeqMemoryPlan
    (bounded_seq2seq.py). threads: the most threads the step's engine calls may run on
    (None: as a call in this thread would now; the step then holds them to it). leaf_steps:
    units of this length rather than the cheapest (e.g. Chen et al.'s sqrt(T) segments, for
    comparison; many-to-many and many-to-one only). ValueError naming the minimum when limit
    is below it."""
    parts = team_parts(batch) if threads is None else max(1, min(batch, int(threads)))
    if trainer == "seq2seq":
        from .bounded_seq2seq import plan_seq2seq
        return plan_seq2seq(model, batch, steps, limit, ids, parts)
    if trainer not in ("many-to-many", "many-to-one"):
        raise ValueError(f"trainer must be 'many-to-many', 'many-to-one' or 'seq2seq', got "
                         f"{trainer!r}")
    return plan_half(model, batch, steps, parse_limit(limit), trainer, ids, parts, leaf_steps)


def plan_half(model, batch, steps, limit, kind, ids=False, parts=1, leaf_steps=None,
              cache=None):
    """plan_memory of one model: kind "many-to-many", "many-to-one" or "encoder" (a model
    without a head whose gradient enters at each row's last step); limit in bytes; parts the
    most threads its calls run on. With cache (a dict, _levels's: for several limits) the
    plan's cost alone, in forward steps (bounded_seq2seq.py compares splits by it)."""
    state = _state_bytes(model, batch, objects=True)
    fixed = functools.partial(fixed_bytes, ids=ids, kind=kind, parts=parts)
    minimum = fixed(model, batch, 1) + _table_bytes(steps, 0)
    unbounded = memory.step_bytes(model, batch, steps, training=True,
                                  many_to_one=kind != "many-to-many")
    minimum = min(minimum, unbounded)       # a short sequence: less than the bounded least
    if limit < minimum:
        raise ValueError(
            f"memory_limit: {memory.describe_bytes(limit)} is below the minimum of "
            f"{memory.describe_bytes(minimum)} ({minimum:,} bytes) for {batch} sequences of "
            f"{model!r}: one step's activations, the workspaces and a state per layer")
    if unbounded <= limit:       # the whole step fits: it runs unbounded, as one leaf
        if cache is not None:
            return (1 + BACKWARD_COST) * steps + CALL_COST
        return MemoryPlan(limit=limit, steps=steps, leaf_steps=steps, units=1, checkpoints=0,
                          forward_steps=steps, peak_bytes=unbounded, unbounded_bytes=unbounded,
                          minimum_bytes=minimum, parts=parts, splits={})
    best = None
    fitting = [leaf for leaf in sorted({min(steps, 2 ** i) for i in range(64)
                                        if 2 ** (i - 1) < steps}, reverse=True)
               if fixed(model, batch, leaf) + _table_bytes(-(-steps // leaf), 0) <= limit]
    # two levels of the programme cover MAX_UNITS^2 units; a shorter leaf than that needs
    # is taken only when nothing longer fits (its groups are then long)
    fitting = [leaf for leaf in fitting if steps <= leaf * MAX_UNITS ** 2] or fitting[:1]

    def long(leaf):
        return memory.step_bytes(model, batch, leaf) > PREFERRED_LEAF_BYTES

    def keeps_all(leaf):
        units = -(-steps // leaf)
        return fixed(model, batch, leaf) + _table_bytes(units, 0) + (units - 1) * state <= limit

    # the longest short leaves that fit (fewest calls), and the shortest long one that keeps
    # every unit's start (sqrt(T)-like segments, where no short leaf can keep them all)
    candidates = [leaf for leaf in fitting if not long(leaf)][:CANDIDATES] or fitting[-1:]
    kept = [leaf for leaf in fitting if long(leaf) and keeps_all(leaf)]
    if kept and not any(keeps_all(leaf) for leaf in candidates):
        candidates.append(kept[-1])
    if leaf_steps is not None:
        if fixed(model, batch, leaf_steps) + _table_bytes(-(-steps // leaf_steps), 0) > limit:
            raise ValueError(f"leaf_steps: units of {leaf_steps} steps do not fit in "
                             f"{memory.describe_bytes(limit)}")
        candidates = [leaf_steps]
    for leaf in candidates:
        units = -(-steps // leaf)
        spare = limit - fixed(model, batch, leaf) - _table_bytes(units, 0)
        # a slot holds a state, and its columns of the choice tables (2 bytes a row)
        slots = int(min(units - 1, MAX_SLOTS, spare // (state + _table_bytes(units, 1) -
                                                        _table_bytes(units, 0))))
        if spare >= (units - 1) * state:
            # room for every unit's start: one sweep keeps them all (no programme needed)
            cost = (units - 1) * (leaf + CALL_COST) + units * ((1 + BACKWARD_COST) * leaf +
                                                               CALL_COST)
            splits = {"store_all": True, "choice": ()}
        else:
            cost, per_group, tables = _levels(steps, leaf, slots, cache)
            splits = {"choice": tables, "slots": slots, "per_group": per_group}
        if long(leaf):
            cost *= LONG_LEAF_COST
        if best is None or cost < best[0]:
            best = (cost, leaf, units, splits)
    if cache is not None:
        return best[0]
    _, leaf, units, splits = best
    tables = splits["choice"]
    plan = MemoryPlan(limit=limit, steps=steps, leaf_steps=leaf, units=units, checkpoints=0,
                      forward_steps=0, peak_bytes=0, unbounded_bytes=unbounded,
                      minimum_bytes=minimum, parts=parts, splits=splits)
    count = _Count(plan)
    walk_schedule(plan, count.sweep, count.leaf, count.slot, lambda level: None)
    plan.forward_steps, plan.checkpoints = count.forward, count.most
    plan.peak_bytes = (fixed(model, batch, leaf) + count.most * state +
                       sum(table.nbytes for table in tables))
    return plan


def _grouping(units):
    """(units a group, groups): one level up to MAX_UNITS units, else groups of a power of
    two units, at most MAX_UNITS of them."""
    per_group = 1
    while -(-units // per_group) > MAX_UNITS:
        per_group *= 2
    return per_group, -(-units // per_group)


def _table_bytes(units, slots):
    """Bytes of the two choice tables (int16) of `units` units and `slots` slots."""
    per_group, groups = _grouping(units)
    return 2 * (per_group + groups + 2) * (slots + 1)


class _Count:
    """What a schedule does, counted without running it (forward steps, checkpoints)."""

    def __init__(self, plan):
        self.plan, self.forward, self.held, self.most = plan, 0, 0, 0

    def steps(self, first, count):
        return min(self.plan.steps, (first + count) * self.plan.leaf_steps) - \
            first * self.plan.leaf_steps

    def sweep(self, first, count, at, into):
        self.forward += self.steps(first, count)
        return into

    def leaf(self, unit, at, dh):
        self.forward += self.steps(unit, 1)
        return dh

    def slot(self, change):
        self.held += change
        self.most = max(self.most, self.held)


class BoundedBPTT:
    """The memory-bounded step of one trainer at one (batch, steps) shape: its plan, its two
    engines and buffers, made once and reused. ``run`` executes the plan; afterwards
    ``last_forward_steps``, ``last_checkpoints`` and ``last_bytes`` (the engines' workspaces,
    the buffers and the most checkpoints held at once) say what it did."""

    def __init__(self, model, batch, steps, limit, loss, many_to_one, ids, plan=None):
        self.model, self.batch, self.steps = model, batch, steps
        self.loss, self.many_to_one, self.ids = loss, many_to_one, ids
        self.plan = plan or plan_memory(model, batch, steps, limit,
                                        "many-to-one" if many_to_one else "many-to-many", ids)
        if self.plan.units == 1:
            return              # the trainer runs the unbounded step
        self.cap = capped_team(self.plan.parts)
        leaf, dtype = self.plan.leaf_steps, model.dtype
        self.train = (model.make_engine(batch, leaf, many_to_one=True, ids=ids) if loss is None
                      else model.make_engine(batch, leaf, loss=loss, ids=ids))
        self.x = (np.zeros((batch, leaf), np.int64) if ids else
                  np.zeros((batch, leaf, model.input_size), dtype))
        if loss is not None:    # an encoder's (bounded_seq2seq.py) has no targets
            self.y = (np.zeros((batch, leaf), np.int64) if loss == "cross_entropy" else
                      np.zeros((batch, leaf, model.output_size), dtype))
            self.w = np.zeros((batch, leaf), dtype)
        self.unit_grads = np.zeros(model.engine_size, dtype)
        self.lstm = model.cell == "lstm"
        self.states = [self._state() for _ in range(7)]     # see fixed_bytes
        self.slot_pool = [self._state() for _ in range(self.plan.checkpoints)]
        self.slots = 0          # checkpoints held

    def _state(self):
        shape = (self.model.num_layers, self.batch, self.model.hidden_size)
        return (np.zeros(shape, self.model.dtype),
                np.zeros(shape, self.model.dtype) if self.lstm else None)

    def run(self, X, Y, weight, terms, h0, c0, grads, want_final, dropout=(0, 0, 0)):
        """BPTT of the whole sequence by the plan: grads (the engine's entries) receive the
        gradients; returns (loss, (dh0, dc0), final state (h, c) or None). X (B, T, I) or
        ids (B, T); Y many-to-many's (B, T, O) / (B, T), many-to-one's (B, O) / (B,);
        weight: many-to-many's (B, T) or None, many-to-one's (B,) step of each row's output;
        terms the loss's denominator; dropout (key, row0, stream0) the call's masks, as
        Engine.set_dropout takes them (each unit's call adds its first step)."""
        self.X, self.Y, self.weight, self.terms = X, Y, weight, terms
        self.loss_sum, self.final, self.want_final = 0.0, None, want_final
        dh = self._walk(grads, h0, c0, dropout)
        self._count_bytes((self.x, self.y, self.w, self.unit_grads), 7)
        return self.loss_sum, dh, self.final

    def _walk(self, grads, h0, c0, dropout):
        """The plan's schedule from the state (h0, c0) (None: zeros), its gradients into
        grads, its calls keyed with dropout and held to the plan's threads; returns the
        gradient at the sequence's start."""
        self.dropout, self.grads = dropout, grads
        self.last_forward_steps = 0
        self.last_checkpoints = 0
        grads[...] = 0
        self.start = self.states[5]
        self.start[0][...] = 0 if h0 is None else h0
        if self.lstm:
            self.start[1][...] = 0 if c0 is None else c0
        self._free = [self.states[3], self.states[4]]    # the carried gradient's two buffers
        with self.cap:
            return walk_schedule(self.plan, self._sweep, self._leaf, self._slot,
                                 lambda level: self.states[2] if level == 0 else self.states[6])

    def _carried(self, dh_after):
        """The buffer for the gradient at a unit's start: the one dh_after does not hold."""
        return self._free[1] if dh_after is self._free[0] else self._free[0]

    def _count_bytes(self, buffers, states):
        """last_bytes: the engines' workspaces, the buffers, `states` states, the most
        checkpoints held at once and the plan's tables."""
        self.last_bytes = (self.train.workspace_bytes +
                           sum(a.nbytes for a in buffers) +
                           (states + self.last_checkpoints) * _state_bytes(self.model,
                                                                           self.batch) +
                           sum(table.nbytes for table in self.plan.splits["choice"]))

    def _slot(self, change):
        """Take (+1) or give back (-1) a checkpoint; returns the one taken."""
        if change < 0:
            self.slots -= 1
            return None
        self.slots += 1
        self.last_checkpoints = max(self.last_checkpoints, self.slots)
        return self.slot_pool[self.slots - 1]

    def _keyed(self, unit):
        """Key the engine's next call with the step's dropout masks at unit `unit`'s steps."""
        key, row0, stream0 = self.dropout
        self.train.set_dropout(key, row0, stream0, unit * self.plan.leaf_steps)

    def _inputs(self, unit):
        """Copy unit `unit`'s inputs into the leaf buffer; returns its steps in the sequence
        (the rest of the buffer: padding)."""
        leaf = self.plan.leaf_steps
        a = unit * leaf
        n = min(leaf, self.steps - a)
        self.x[:, :n] = self.X[:, a:a + n]
        self.x[:, n:] = 0
        return n

    def _unit(self, unit):
        """Copy unit `unit`'s inputs, targets and weights into the leaf buffers; returns its
        steps in the sequence (the rest of the buffers: padding of weight 0)."""
        a = unit * self.plan.leaf_steps
        n = self._inputs(unit)
        self.w[:, n:] = 0
        if self.many_to_one:         # the output at each row's last step, if in this unit
            self.y[...] = 0
            self.w[:, :n] = 0
            rows = np.nonzero((self.weight >= a) & (self.weight < a + n))[0]
            self.y[rows, self.weight[rows] - a] = self.Y[rows]
            self.w[rows, self.weight[rows] - a] = 1
        else:
            self.y[:, :n] = self.Y[:, a:a + n]
            self.y[:, n:] = 0
            self.w[:, :n] = 1 if self.weight is None else self.weight[:, a:a + n]
        return n

    def _sweep(self, first, count, state, into):
        """Forward over units [first, first + count) from state; the state after them goes
        into `into`, which it returns (each unit read to sweep_lengths, None: its end; and
        its state given to _swept)."""
        ping = (self.states[0], self.states[1])
        current = self.start if state is None else state
        for index, unit in enumerate(range(first, first + count)):
            self.last_forward_steps += self._inputs(unit)
            target = into if index == count - 1 else ping[index % 2]
            self._keyed(unit)
            self.train.forward_states(self.x, self.model.engine_params, target[0], target[1],
                                      h0=current[0], c0=current[1],
                                      lengths=self.sweep_lengths)
            self._swept(target)
            current = target
        return into

    sweep_lengths = None

    def _swept(self, state):
        """What a unit's forward sweep leaves in state, for a subclass (an encoder's)."""

    def _leaf(self, unit, state, dh_after):
        """The leaf of unit `unit` from state, with the gradient dh_after (h, c) entering after
        its last step (None: the sequence's end); adds its gradients and loss; returns the
        gradient at its start, in one of the two carried buffers."""
        n = self._unit(unit)
        self.last_forward_steps += n
        state = self.start if state is None else state
        out = self._carried(dh_after)
        entering = (None, None) if dh_after is None else dh_after
        self._keyed(unit)
        self.loss_sum += self.train.loss_and_grad(
            self.x, self.y, self.model.engine_params, self.unit_grads, h0=state[0],
            dh0=out[0], c0=state[1], dc0=out[1], weight=self.w, dh_final=entering[0],
            dc_final=entering[1], terms=self.terms)
        self.grads += self.unit_grads
        if self.want_final and unit == self.plan.units - 1:
            h, c = self.train.states()
            self.final = (h[:, n].copy(), None if c is None else c[:, n].copy())
        return out
