"""cbptt.settings: one thread-local object for every knob of the engine, and the engine's plan
that is filled from it (once per engine, again when the settings change)."""
import threading

import numpy as np
import pytest

import cbptt
from cbptt import _engine

from helpers import engine_grads
from reference import loss_and_grad as reference_loss_and_grad


def test_the_context_manager_changes_knobs_for_its_block_only():
    assert cbptt.get_settings()["team"] is None
    with cbptt.settings(team=1, panels=False) as inside:
        assert cbptt.get_settings()["team"] == 1 and inside.panels is False
        with cbptt.settings(team=3):
            assert cbptt.get_settings()["team"] == 3 and not cbptt.get_settings()["panels"]
        assert cbptt.get_settings()["team"] == 1
    assert cbptt.get_settings()["team"] is None and cbptt.get_settings()["panels"] is True


def test_set_settings_returns_what_was_in_force():
    previous = cbptt.set_settings(chunk_rows=7)
    assert previous["chunk_rows"] == 128 and cbptt.get_settings()["chunk_rows"] == 7


def test_settings_are_thread_local():
    seen = {}

    def other():
        seen["team"] = cbptt.get_settings()["team"]
        cbptt.set_settings(team=5)           # does not reach the main thread

    with cbptt.settings(team=1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert cbptt.get_settings()["team"] == 1
    assert seen["team"] is None


@pytest.mark.parametrize("knobs, error, words", [
    (dict(tema=1), TypeError, "unknown setting"),
    (dict(team=0), ValueError, "team"),
    (dict(team=1.5), ValueError, "team"),
    (dict(chunk_rows=0), ValueError, "chunk_rows"),
    (dict(split_threads=-1), ValueError, "split_threads"),
])
def test_bad_knobs_are_refused_and_change_nothing(knobs, error, words):
    before = cbptt.get_settings()
    with pytest.raises(error, match=words):
        cbptt.set_settings(**knobs)
    with pytest.raises(error, match=words):
        with cbptt.settings(**knobs):
            pass
    assert cbptt.get_settings() == before


def test_the_plan_holds_what_the_settings_decide():
    engine = _engine.Engine("gru", 1, 3, 40, 2, 8, 6, np.float64)
    with cbptt.settings(team=1, chunk_rows=1, chunk_min_steps=2, whole_gated_input=False,
                        panels=False, wgrad=False, split=False):
        plan = engine.plan
        assert plan["max_parts"] == 1 and not plan["team"]
        assert plan["chunk_steps"] == 4 and plan["input_steps"] == 4   # GRU: twice 2 steps
        assert not plan["panels"] and not plan["wgrad"]["enabled"] and not plan["split"]
    plan = engine.plan
    assert plan["max_parts"] == _engine.TEAM_MAX and plan["split"]
    assert plan["panels"] == _engine.panels_supported()


@pytest.mark.skipif(not _engine.team_available(), reason="no per-thread BLAS control")
def test_an_engine_follows_the_settings_in_force_at_each_call():
    """One engine, three settings: each call runs as the settings at that call say, and the
    same settings give the same bits."""
    alone = engine_grads("lstm", 2, 8, np.float64, hidden=12)
    engine, model, X, Y, h0 = (alone[k] for k in ("engine", "model", "X", "Y", "h0"))

    def call():
        grads = np.zeros_like(model.params)
        loss = engine.loss_and_grad(X, Y, model.params, grads, h0=h0)
        return loss, grads

    with cbptt.settings(team=2, team_min_flops=0, team_exact=True):
        loss2, grads2 = call()
        assert engine.last_parts == 2
    loss1, grads1 = call()
    assert engine.last_parts == alone["parts"]
    np.testing.assert_array_equal(grads1, alone["grads"])
    np.testing.assert_allclose(grads2, grads1, rtol=1e-13, atol=1e-15)
    with cbptt.settings(team=2, team_min_flops=0, team_exact=True):
        loss2_again, grads2_again = call()
    np.testing.assert_array_equal(grads2_again, grads2)
    assert loss2_again == loss2 and loss1 == alone["loss"]


@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_a_change_of_layout_makes_new_buffers_and_the_same_gradients(cell):
    """Settings that change the buffers an engine needs (panels off: a transposed W_hh copy;
    other chunks) take effect on an engine made before them, and it still computes the
    reference's gradients."""
    rng = np.random.default_rng(1)
    model = cbptt.RNN(3, 20, 2, cell=cell, num_layers=2, seed=1)
    X, Y = rng.standard_normal((4, 9, 3)), rng.standard_normal((4, 9, 2))
    engine = _engine.Engine(cell, 2, 3, 20, 2, 4, 9, np.float64)
    _, want = reference_loss_and_grad(dict(model.state_dict()), X, Y, cell=cell, num_layers=2,
                                      mode="many_to_many", loss="mse")
    flat = np.concatenate([np.ravel(want[name]) for name, _, _ in
                           _engine.param_layout(cell, 2, 3, 20, 2)])
    for knobs in (dict(), dict(panels=False), dict(chunk_rows=1, chunk_min_steps=1,
                                                    whole_gated_input=False)):
        with cbptt.settings(**knobs):
            grads = np.zeros_like(model.params)
            engine.loss_and_grad(X, Y, model.params, grads)
            assert engine.panels == (_engine.panels_supported() and "panels" not in knobs)
            if "chunk_rows" in knobs:
                assert engine.chunk_steps == (1 if cell == "tanh" else 2)
        np.testing.assert_allclose(grads, flat, rtol=1e-9, atol=1e-12, err_msg=str(knobs))
