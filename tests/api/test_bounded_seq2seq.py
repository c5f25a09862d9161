"""Memory-bounded encoder-decoder BPTT (bounded_seq2seq.py): a Seq2Seq step within
``memory_limit`` computes the unbounded step's loss and gradients (to rounding: the weight
gradients are summed unit by unit), whichever half is bounded, with the decoder's gradient
entering the encoder at each row's own last step wherever that falls among the units; its
plan says beforehand what it does and bounds what it allocates."""
import tracemalloc

import numpy as np
import pytest

import cbptt
from cbptt import bounded

from helpers import CELLS, PYTHON_OBJECT_BYTES, set_parts
from helpers import assert_same_loss_and_grads as assert_same

B, I, J, H, O = 3, 3, 2, 5, 4


def halves(cell, layers, seed=0, loss="mse", dtype=np.float64, **kw):
    encoder = cbptt.RNN(I, H, None, cell=cell, num_layers=layers, seed=seed, dtype=dtype, **kw)
    decoder = cbptt.RNN(J, H, O, cell=cell, num_layers=layers, seed=seed + 1, dtype=dtype, **kw)
    return encoder, decoder


def data(steps, target_steps, loss="mse", seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, steps, I)).astype(dtype)
    Y_in = rng.standard_normal((B, target_steps, J)).astype(dtype)
    Y_out = (rng.integers(0, O, (B, target_steps)) if loss == "cross_entropy" else
             rng.standard_normal((B, target_steps, O)).astype(dtype))
    return X, Y_in, Y_out


def plan_of(pair, steps, target_steps, limit="1TiB"):
    return cbptt.plan_memory(pair, B, (steps, target_steps), limit, trainer="seq2seq")


def source_lengths(plan, steps):
    """A full row, a row ending exactly at the end of the encoder's first unit and one a
    step after it: the decoder's gradient enters at a unit's last step and at a first."""
    leaf = min(plan.encoder.leaf_steps, steps - 1)
    return np.array([steps, leaf, leaf + 1])


# (source steps, target steps): a long source (the encoder bounded), a long target (the
# decoder bounded), both long
SHAPES = [(60, 4), (4, 60), (50, 40)]


@pytest.mark.parametrize("tight", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_a_bounded_seq2seq_step_equals_the_unbounded_one(cell, layers, shape, tight):
    steps, target_steps = shape
    loss = "cross_entropy" if layers == 2 else "mse"
    pair = halves(cell, layers, seed=layers, loss=loss)
    X, Y_in, Y_out = data(steps, target_steps, loss, seed=layers)
    generous = plan_of(pair, steps, target_steps)
    limit = (generous.minimum_bytes if tight else
             generous.minimum_bytes + (generous.unbounded_bytes - generous.minimum_bytes) // 3)
    trainer = cbptt.Seq2Seq(*pair, loss=loss, memory_limit=limit)
    plan = plan_of(pair, steps, target_steps, limit)
    lengths = source_lengths(plan, steps)
    targets = np.array([target_steps, 1, target_steps // 2])
    got = trainer.loss_and_grad(X, Y_in, Y_out, lengths, targets)
    want = cbptt.Seq2Seq(*pair, loss=loss).loss_and_grad(X, Y_in, Y_out, lengths, targets)
    assert_same(got, want)
    runner = trainer._last_bounded
    assert runner.plan == plan and plan.bounded and plan.peak_bytes <= limit
    long_halves = {"encoder": steps > 10, "decoder": target_steps > 10}
    for role, half_plan in (("encoder", plan.encoder), ("decoder", plan.decoder)):
        half = getattr(runner, role + "_runner")
        assert (half is None) == (half_plan.units == 1)    # unbounded: the trainer's engine
        if tight and long_halves[role]:
            assert half_plan.units > 1
        if half is not None:
            assert half.last_forward_steps == half_plan.forward_steps
            assert half.last_checkpoints == half_plan.checkpoints
            assert half.last_bytes <= half_plan.peak_bytes
    if tight:
        assert plan.recompute_factor > 1


def test_a_limit_the_whole_step_fits_runs_it_unbounded_bit_for_bit():
    pair = halves("lstm", 2)
    X, Y_in, Y_out = data(30, 20)
    plan = plan_of(pair, 30, 20)
    assert not plan.bounded and plan.recompute_factor == 1
    got = cbptt.Seq2Seq(*pair, memory_limit=plan.peak_bytes).loss_and_grad(X, Y_in, Y_out)
    want = cbptt.Seq2Seq(*pair).loss_and_grad(X, Y_in, Y_out)
    assert got[0] == want[0]
    for name in want[1]:
        np.testing.assert_array_equal(got[1][name], want[1][name])


@pytest.mark.parametrize("path", ["split", "columns"])
@pytest.mark.parametrize("cell", CELLS)
def test_bounded_seq2seq_on_the_team_equals_the_unbounded_step(cell, path):
    set_parts(2, "rows" if path == "split" else "columns")
    pair = halves(cell, 2, seed=3)
    X, Y_in, Y_out = data(40, 30, seed=3)
    limit = plan_of(pair, 40, 30).minimum_bytes
    lengths = np.array([40, 13, 29])
    got = cbptt.Seq2Seq(*pair, memory_limit=limit).loss_and_grad(X, Y_in, Y_out, lengths)
    want = cbptt.Seq2Seq(*pair).loss_and_grad(X, Y_in, Y_out, lengths)
    assert_same(got, want)


def test_finite_differences_through_the_handoff():
    """The encoder's recurrent weights reach the loss only through the state handed to the
    decoder: their gradient under a tight limit against central differences."""
    pair = halves("gru", 1, seed=7)
    X, Y_in, Y_out = data(30, 25, seed=7)
    lengths = np.array([30, 11, 20])
    trainer = cbptt.Seq2Seq(*pair, memory_limit=plan_of(pair, 30, 25).minimum_bytes)
    _, grads = trainer.loss_and_grad(X, Y_in, Y_out, lengths)
    assert trainer._last_bounded.encoder_runner is not None
    shape, offset = next((shape, offset) for name, shape, offset in trainer.model._layout
                         if name == "encoder.weight_hh_l0")
    weights = trainer.params[offset:offset + int(np.prod(shape))].reshape(shape)    # a view
    eps = 1e-5
    for index in [(0, 0), (4, 2), (11, 3)]:
        keep = weights[index]
        weights[index] = keep + eps
        up = trainer.loss_and_grad(X, Y_in, Y_out, lengths)[0]
        weights[index] = keep - eps
        down = trainer.loss_and_grad(X, Y_in, Y_out, lengths)[0]
        weights[index] = keep
        assert abs(up - down) > 1e-10
        assert grads["encoder.weight_hh_l0"][index] == pytest.approx((up - down) / (2 * eps),
                                                                     rel=1e-5, abs=1e-11)


def test_token_ids_float32_and_updates():
    rng = np.random.default_rng(2)
    pair = (cbptt.RNN(7, H, None, cell="lstm", seed=1, dtype=np.float32),
            cbptt.RNN(6, H, 6, cell="lstm", seed=2, dtype=np.float32))
    twin = (cbptt.RNN(7, H, None, cell="lstm", seed=1, dtype=np.float32),
            cbptt.RNN(6, H, 6, cell="lstm", seed=2, dtype=np.float32))
    src, tgt_in, tgt_out = (rng.integers(0, 7, (B, 45)), rng.integers(0, 6, (B, 35)),
                            rng.integers(0, 6, (B, 35)))
    limit = cbptt.plan_memory(pair, B, (45, 35), "1TiB", trainer="seq2seq",
                              ids=True).minimum_bytes
    bounded = cbptt.Seq2Seq(*pair, loss="cross_entropy", optimizer=cbptt.Adam(lr=0.01),
                            memory_limit=limit)
    plain = cbptt.Seq2Seq(*twin, loss="cross_entropy", optimizer=cbptt.Adam(lr=0.01))
    lengths = np.array([45, 20, 3])
    for _ in range(3):
        assert bounded.step(src, tgt_in, tgt_out, lengths) == pytest.approx(
            plain.step(src, tgt_in, tgt_out, lengths), rel=1e-5)
    np.testing.assert_allclose(bounded.params, plain.params, rtol=1e-4, atol=1e-6)
    assert bounded._last_bounded.plan.encoder.units > 1


def test_what_a_step_allocates_stays_within_the_limit():
    pair = halves("lstm", 2, seed=4)
    X, Y_in, Y_out = data(300, 200, seed=4)
    generous = plan_of(pair, 300, 200)
    limit = generous.minimum_bytes + (generous.unbounded_bytes - generous.minimum_bytes) // 10
    trainer = cbptt.Seq2Seq(*pair, optimizer=cbptt.SGD(lr=0.01), memory_limit=limit)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        trainer.step(X, Y_in, Y_out)        # the first step: the workspaces are made here
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    plan = trainer._last_bounded.plan
    assert plan.encoder.units > 1 and plan.decoder.units > 1
    assert peak <= plan.peak_bytes + PYTHON_OBJECT_BYTES
    assert plan.peak_bytes <= limit < plan.unbounded_bytes


def test_below_the_minimum_is_refused_naming_it_and_weights_stay():
    pair = halves("gru", 1)
    X, Y_in, Y_out = data(60, 50)
    minimum = plan_of(pair, 60, 50).minimum_bytes
    with pytest.raises(ValueError, match=f"below the minimum .*{minimum:,} bytes"):
        plan_of(pair, 60, 50, minimum - 1)
    trainer = cbptt.Seq2Seq(*pair, optimizer=cbptt.SGD(lr=0.1), memory_limit=minimum - 1)
    before = trainer.params.copy()
    with pytest.raises(ValueError, match="memory_limit"):
        trainer.step(X, Y_in, Y_out)
    np.testing.assert_array_equal(trainer.params, before)
    with pytest.raises(ValueError, match="model=\\(encoder, decoder\\)"):
        cbptt.plan_memory(pair[0], B, 60, "1MiB", trainer="seq2seq")


def test_what_it_does_not_bound_yet_is_refused():
    encoder, decoder = halves("tanh", 2)
    for pair in ((cbptt.RNN(I, H, None, vocab_size=9), cbptt.RNN(J, H, O)),
                 (encoder, cbptt.RNN(J, H, O, num_layers=2, vocab_size=7))):
        with pytest.raises(ValueError, match="memory_limit"):
            cbptt.Seq2Seq(*pair, memory_limit="1MiB")


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_in_both_halves_under_a_limit(cell):
    """The encoder's units and the decoder's draw the unbounded call's masks (the decoder's
    layers on the streams after the encoder's)."""
    pair, twin = (halves(cell, 2, seed=9, dropout=0.3, recurrent_dropout=0.2)
                  for _ in range(2))
    X, Y_in, Y_out = data(50, 40, seed=9)
    limit = plan_of(pair, 50, 40).minimum_bytes
    bounded = cbptt.Seq2Seq(*pair, memory_limit=limit, seed=6)
    plain = cbptt.Seq2Seq(*twin, seed=6)
    lengths = np.array([50, 12, 33])
    got = bounded.loss_and_grad(X, Y_in, Y_out, lengths)
    assert_same(got, plain.loss_and_grad(X, Y_in, Y_out, lengths))
    plan = bounded._last_bounded.plan
    assert plan.encoder.units > 1 and plan.decoder.units > 1
    again = bounded.loss_and_grad(X, Y_in, Y_out, lengths)
    assert_same(again, plain.loss_and_grad(X, Y_in, Y_out, lengths))
    assert again[0] != got[0]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_levels_of_the_programme_in_both_halves(cell, monkeypatch):
    """Units in groups (MAX_UNITS made 4): the first forward descent still reaches every
    unit before the first leaf, so each row hands off its own final state."""
    monkeypatch.setattr(bounded, "MAX_UNITS", 4)
    pair = halves(cell, 2, seed=11)
    X, Y_in, Y_out = data(40, 30, seed=11)
    lengths = np.array([40, 3, 22])
    minimum = plan_of(pair, 40, 30).minimum_bytes
    want = cbptt.Seq2Seq(*pair).loss_and_grad(X, Y_in, Y_out, lengths)
    for extra_slots in (0, 6):
        limit = minimum + extra_slots * bounded._state_bytes(pair[0], B, objects=True)
        trainer = cbptt.Seq2Seq(*pair, memory_limit=limit)
        assert_same(trainer.loss_and_grad(X, Y_in, Y_out, lengths), want)
        runner = trainer._last_bounded
        for half, plan in ((runner.encoder_runner, runner.plan.encoder),
                           (runner.decoder_runner, runner.plan.decoder)):
            assert plan.units > 4 and plan.splits["per_group"] > 1      # two levels
            assert half.last_forward_steps == plan.forward_steps
            assert half.last_checkpoints == plan.checkpoints
