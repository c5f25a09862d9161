"""Memory-bounded BPTT (bounded.py): a step within ``memory_limit`` computes the unbounded
step's loss and gradients (to rounding: the weight gradients are summed unit by unit), its
plan says beforehand what it does (forward steps, checkpoints, a peak that bounds what it
allocates), and the plan's dynamic programme is optimal for its cost model."""
import functools
import tracemalloc

import numpy as np
import pytest

import cbptt
from cbptt import bounded

from helpers import CELLS, PYTHON_OBJECT_BYTES, set_parts
from helpers import assert_same_loss_and_grads as assert_same

B, I, H, O = 3, 2, 5, 2


def data(cell, layers, steps, many_to_one, seed=0, loss="mse"):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=layers, seed=seed)
    X = rng.standard_normal((B, steps, I))
    if loss == "cross_entropy":
        Y = rng.integers(0, O, (B,) if many_to_one else (B, steps))
    else:
        Y = rng.standard_normal((B, O) if many_to_one else (B, steps, O))
    return model, X, Y


def limits(model, steps, many_to_one):
    """The minimum, a limit that needs checkpoints, and one where the whole step fits."""
    plan = cbptt.plan_memory(model, B, steps, "1GiB")
    minimum, unbounded = plan.minimum_bytes, plan.unbounded_bytes
    return [minimum, minimum + (unbounded - minimum) // 3, unbounded]


@pytest.mark.parametrize("limit_index", [0, 1, 2])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_a_bounded_step_equals_the_unbounded_one(cell, layers, many_to_one, limit_index):
    steps = 60
    model, X, Y = data(cell, layers, steps, many_to_one, seed=layers)
    kind = cbptt.ManyToOne if many_to_one else cbptt.ManyToMany
    rng = np.random.default_rng(5)
    extra = ({"lengths": np.array([60, 7, 45])} if many_to_one else
             {"mask": (rng.random((B, steps)) < 0.7).astype(float)})
    h0 = rng.standard_normal((layers, B, H))
    c0 = rng.standard_normal((layers, B, H)) if cell == "lstm" else None
    limit = limits(model, steps, many_to_one)[limit_index]
    trainer = kind(model, memory_limit=limit)
    got = trainer.loss_and_grad(X, Y, h0=h0, c0=c0, return_state=True, **extra)
    want = kind(model).loss_and_grad(X, Y, h0=h0, c0=c0, return_state=True, **extra)
    assert_same(got[:2], want[:2])
    final, want_final = got[2], want[2]
    for a, b in zip(final if cell == "lstm" else [final],
                    want_final if cell == "lstm" else [want_final]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    runner, plan = trainer._last_bounded, trainer._last_bounded.plan
    assert (plan.units == 1) == (limit >= plan.unbounded_bytes)
    if plan.units == 1:     # the unbounded step fits: it runs, bit for bit
        assert plan.recompute_factor == 1
        np.testing.assert_array_equal(got[1]["weight_hh_l0"], want[1]["weight_hh_l0"])
        return
    assert plan.units > 1
    assert runner.last_forward_steps == plan.forward_steps
    assert runner.last_checkpoints == plan.checkpoints
    assert runner.last_bytes <= plan.peak_bytes <= limit
    if limit_index == 0:
        assert plan.leaf_steps == 1 and plan.recompute_factor > 1


@pytest.mark.parametrize("path", ["split", "columns"])
@pytest.mark.parametrize("cell", CELLS)
def test_bounded_steps_on_the_team_equal_the_unbounded_ones(cell, path):
    set_parts(2, "rows" if path == "split" else "columns")
    model, X, Y = data(cell, 2, 40, False, seed=3, loss="cross_entropy")
    limit = limits(model, 40, False)[1]
    got = cbptt.ManyToMany(model, loss="cross_entropy", memory_limit=limit).loss_and_grad(X, Y)
    want = cbptt.ManyToMany(model, loss="cross_entropy").loss_and_grad(X, Y)
    assert_same(got, want)


def test_token_ids_and_float32_and_updates():
    rng = np.random.default_rng(2)
    model = cbptt.RNN(6, H, O, cell="gru", num_layers=2, seed=1, dtype=np.float32)
    twin = cbptt.RNN(6, H, O, cell="gru", num_layers=2, seed=1, dtype=np.float32)
    ids = rng.integers(0, 6, (B, 30))
    Y = rng.standard_normal((B, 30, O)).astype(np.float32)
    limit = limits(model, 30, False)[1]
    bounded_trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=0.01),
                                       memory_limit=limit)
    plain = cbptt.ManyToMany(twin, optimizer=cbptt.Adam(lr=0.01))
    for _ in range(3):
        assert bounded_trainer.step(ids, Y) == pytest.approx(plain.step(ids, Y), rel=1e-5)
    np.testing.assert_allclose(model.params, twin.params, rtol=1e-4, atol=1e-6)
    assert bounded_trainer._last_bounded.plan.units > 1


def test_what_a_step_allocates_stays_within_the_limit():
    model, X, Y = data("lstm", 2, 400, False, seed=4)
    minimum, _, generous = limits(model, 400, False)
    limit = minimum + (generous - minimum) // 10
    trainer = cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=0.01), memory_limit=limit)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        trainer.step(X, Y)                  # the first step: the workspaces are made here
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    plan = trainer._last_bounded.plan
    assert plan.units > 1 and peak <= plan.peak_bytes + PYTHON_OBJECT_BYTES
    assert plan.peak_bytes <= limit
    assert plan.unbounded_bytes > 2 * plan.peak_bytes and plan.unbounded_bytes > limit


def test_the_plan_tells_the_minimum_and_refuses_below_it_leaving_weights_alone():
    model, X, Y = data("gru", 2, 50, False)
    plan = cbptt.plan_memory(model, batch=B, steps=50, limit="1GiB")
    assert plan.recompute_factor == 1 and plan.units == 1
    before = model.params.copy()
    with pytest.raises(ValueError, match="below the minimum of .* bytes"):
        cbptt.plan_memory(model, batch=B, steps=50, limit=plan.minimum_bytes - 1)
    trainer = cbptt.ManyToMany(model, memory_limit=plan.minimum_bytes - 1)
    with pytest.raises(ValueError, match="minimum"):
        trainer.step(X, Y)
    np.testing.assert_array_equal(model.params, before)
    tight = cbptt.plan_memory(model, batch=B, steps=50, limit=plan.minimum_bytes)
    assert tight.leaf_steps == 1 and tight.recompute_factor > 1


@pytest.mark.parametrize("text, value", [("64MiB", 64 * 2 ** 20), ("1.5 GiB", 1.5 * 2 ** 30),
                                         ("200kB", 200_000), ("4096", 4096), (4096, 4096)])
def test_limits_read_as_bytes(text, value):
    assert bounded.parse_limit(text) == int(value)


@pytest.mark.parametrize("bad", ["-1MiB", "lots", "12 parsecs", 0, -5, True, 2.5])
def test_bad_limits_are_refused_naming_memory_limit(bad):
    with pytest.raises(ValueError, match="memory_limit"):
        cbptt.ManyToMany(cbptt.RNN(I, H, O), memory_limit=bad)


def test_what_it_does_not_bound_yet_is_refused():
    for model in (cbptt.RNN(I, H, O, bidirectional=True), cbptt.RNN(I, H, O, vocab_size=9)):
        with pytest.raises(ValueError, match="memory_limit"):
            cbptt.ManyToMany(model, memory_limit="1MiB")
    model, X, Y = data("tanh", 1, 200, False)
    tight = limits(model, 200, False)[0]
    with pytest.raises(ValueError, match="return_flow"):
        cbptt.ManyToMany(model, memory_limit=tight).loss_and_grad(X, Y, return_flow=True)
    # where the whole step fits it runs unbounded, and records the flow
    flow = cbptt.ManyToMany(model, memory_limit="1GiB").loss_and_grad(X, Y, return_flow=True)[2]
    assert flow.shape == (1, 200)


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_under_a_limit_draws_the_unbounded_steps_masks(cell, many_to_one):
    """Each unit's calls key the masks at the unit's own steps (Engine.set_dropout's step0),
    so a bounded step with dropout equals the unbounded step of the same seed and call, and
    the next call draws other masks."""
    rng = np.random.default_rng(8)
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=2, seed=2, dropout=0.3,
                      recurrent_dropout=0.2)
    X = rng.standard_normal((B, 50, I))
    Y = rng.standard_normal((B, O) if many_to_one else (B, 50, O))
    extra = {"lengths": np.array([50, 9, 31])} if many_to_one else {}
    kind = cbptt.ManyToOne if many_to_one else cbptt.ManyToMany
    limit = cbptt.plan_memory(model, B, 50, "1TiB").minimum_bytes
    bounded_trainer, plain = kind(model, memory_limit=limit, seed=5), kind(model, seed=5)
    first = bounded_trainer.loss_and_grad(X, Y, **extra)
    assert_same(first, plain.loss_and_grad(X, Y, **extra))
    assert bounded_trainer._last_bounded.plan.units > 1
    second = bounded_trainer.loss_and_grad(X, Y, **extra)
    assert_same(second, plain.loss_and_grad(X, Y, **extra))
    assert second[0] != first[0] and bounded_trainer.dropout_calls == 2


@pytest.mark.parametrize("units, slots", [(7, 0), (9, 2), (12, 3), (6, 5)])
def test_the_programme_finds_the_cheapest_schedule(units, slots):
    """Against an exhaustive search of the same recursion (every split, or the walk)."""
    leaf = 3
    f = leaf + bounded.CALL_COST
    b = bounded.BACKWARD_COST * leaf + bounded.CALL_COST

    @functools.lru_cache(None)
    def best(n, k):
        if n == 1:
            return f + b
        walk = n * (f + b) + f * n * (n - 1) / 2
        if k == 0:
            return walk
        return min([walk] + [y * f + best(n - y, k - 1) + best(y, k) for y in range(1, n)])

    totals, choice = bounded._costs(units, slots, f, np.full(slots + 1, f + b), choices=True)
    for k in range(slots + 1):
        assert totals[k] == pytest.approx(best(units, k))
    assert (np.diff(totals) <= 0).all()       # more slots never cost more
    assert choice.dtype == np.int16 and choice.shape == (units + 1, slots + 1)


@pytest.mark.parametrize("cell", CELLS)
def test_two_levels_of_the_programme(cell, monkeypatch):
    """Beyond MAX_UNITS units the programme groups them (here MAX_UNITS is made 4, so 40
    steps in units of a step or two go in groups): the step still equals the unbounded one,
    and the plan's counts are what the step does."""
    monkeypatch.setattr(bounded, "MAX_UNITS", 4)
    model, X, Y = data(cell, 2, 40, False, seed=6)
    minimum = cbptt.plan_memory(model, B, 40, "1GiB").minimum_bytes
    for extra_slots in (0, 3, 12):
        limit = minimum + extra_slots * (bounded._state_bytes(model, B) + 20)
        trainer = cbptt.ManyToMany(model, memory_limit=limit)
        got = trainer.loss_and_grad(X, Y)
        assert_same(got, cbptt.ManyToMany(model).loss_and_grad(X, Y))
        runner, plan = trainer._last_bounded, trainer._last_bounded.plan
        assert plan.splits["per_group"] > 1          # two levels
        assert runner.last_forward_steps == plan.forward_steps
        assert runner.last_checkpoints == plan.checkpoints <= extra_slots
        assert runner.last_bytes <= plan.peak_bytes <= limit


@pytest.mark.parametrize("cell", CELLS)
def test_room_for_every_units_start_keeps_them_all_in_one_sweep(cell):
    model, X, Y = data(cell, 2, 300, False, seed=7)
    plan = cbptt.plan_memory(model, B, 300, "1GiB")
    limit = plan.unbounded_bytes - 1               # just too little for the whole step
    trainer = cbptt.ManyToMany(model, memory_limit=limit)
    assert_same(trainer.loss_and_grad(X, Y), cbptt.ManyToMany(model).loss_and_grad(X, Y))
    runner, plan = trainer._last_bounded, trainer._last_bounded.plan
    assert plan.splits.get("store_all") and plan.checkpoints == plan.units - 1
    last = 300 - (plan.units - 1) * plan.leaf_steps
    assert runner.last_forward_steps == plan.forward_steps == 2 * 300 - last
    assert runner.last_checkpoints == plan.checkpoints
    assert runner.last_bytes <= plan.peak_bytes <= limit


def test_the_plan_counts_the_threads_its_calls_run_on_and_holds_them_to_it():
    """A plan made for one thread counts one part's workspaces (a smaller minimum than for
    two), and its calls stay on one part when the team would later take two."""
    model, X, Y = data("lstm", 1, 200, False, seed=6)
    set_parts(2)
    two = cbptt.plan_memory(model, B, 200, "1TiB")
    with cbptt.settings(team=1):
        one = cbptt.plan_memory(model, B, 200, "1TiB")
        assert (one.parts, two.parts) == (1, 2) and one.minimum_bytes < two.minimum_bytes
        limit = one.minimum_bytes
        assert limit < two.minimum_bytes
        trainer = cbptt.ManyToMany(model, memory_limit=limit)
        want = cbptt.ManyToMany(model).loss_and_grad(X, Y)
        assert_same(trainer.loss_and_grad(X, Y), want)
    runner = trainer._last_bounded
    assert runner.plan.parts == 1 and runner.plan.units > 1
    got = trainer.loss_and_grad(X, Y)         # the team in force now would take two
    assert runner.train.last_parts == 1 and runner.last_bytes <= runner.plan.peak_bytes
    assert_same(got, want)
    assert cbptt.get_settings()["team"] == 2          # the cap is the step's only
