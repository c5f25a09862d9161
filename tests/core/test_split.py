"""Training calls split between sub-engines (run_split in _engine.pyx): one sub-engine per
part trains on its block of batch rows at the whole batch's loss scale, and the gradients are
summed in sub-engine order. Checked against one thread on the engine's own buffers and the
NumPy reference, with every per-row input sliced (targets of both losses, weights, lengths,
initial states and the states handed back), and for results that do not depend on how many
threads ran the split. (A trainer on a split: tests/api/test_team_trainers.py.)"""
import numpy as np
import pytest

import cbptt
from cbptt import _engine

from helpers import set_parts
from reference import loss_and_grad as reference_loss_and_grad

pytestmark = pytest.mark.skipif(not _engine.team_available(),
                                reason="SciPy's BLAS has no per-thread thread control")


def call(cell, layers, batch, dtype, *, many_to_one=False, loss="mse", loss_start=0,
         weighted=False, lengths=False, states=True, seed=0, hidden=6, steps=7):
    """One loss_and_grad of a fresh training Engine on random data, with every optional
    input and output of the call; returns what it wrote."""
    rng = np.random.default_rng(seed)
    inputs, outputs = 3, 4
    model = cbptt.RNN(inputs, hidden, outputs, cell=cell, num_layers=layers, seed=seed,
                      dtype=dtype)
    out_steps = 1 if many_to_one else steps - loss_start
    X = rng.standard_normal((batch, steps, inputs)).astype(dtype)
    if loss == "mse":
        Y = rng.standard_normal((batch, outputs) if many_to_one else
                                (batch, out_steps, outputs)).astype(dtype)
    else:
        Y = rng.integers(0, outputs, size=(batch,) if many_to_one else (batch, out_steps))
    weight = rng.uniform(0, 2, size=(batch, out_steps)).astype(dtype) if weighted else None
    row_lengths = rng.integers(1, steps + 1, size=batch) if lengths else None
    engine = _engine.Engine(cell, layers, inputs, hidden, outputs, batch, steps, dtype,
                            many_to_one=many_to_one, loss=loss, loss_start=loss_start)
    shape = (layers, batch, hidden)
    lstm = cell == "lstm"
    given = dict(h0=rng.standard_normal(shape).astype(dtype),
                 c0=rng.standard_normal(shape).astype(dtype) if lstm else None) if states \
        else dict(h0=None, c0=None)
    back = {name: np.full(shape, np.nan, dtype) for name in
            (["dh0", "h_final"] + (["dc0", "c_final"] if lstm else []))} if states else {}
    grads = np.full(model.params.shape, np.nan, dtype)
    loss_value = engine.loss_and_grad(X, Y, model.params, grads, weight=weight,
                                      lengths=row_lengths, **given, **back)
    return dict(loss=loss_value, grads=grads, sq_norm=engine.grad_sq_norm,
                terms=engine.loss_terms, parts=engine.last_parts, engine=engine, model=model,
                X=X, Y=Y, weight=weight, lengths=row_lengths, **given, **back)


def assert_same(got, want, tol):
    for key in ("grads", "dh0", "h_final", "dc0", "c_final"):
        if key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=tol, atol=tol, err_msg=key)
    assert got["loss"] == pytest.approx(want["loss"], rel=tol, abs=tol)
    assert got["sq_norm"] == pytest.approx(want["sq_norm"], rel=10 * tol)
    assert got["terms"] == want["terms"]


CASES = [
    dict(),
    dict(loss_start=3),
    dict(weighted=True),
    dict(loss="cross_entropy", weighted=True),
    dict(many_to_one=True, lengths=True),
    dict(many_to_one=True, loss="cross_entropy", weighted=True, lengths=True),
    dict(states=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: ",".join(case) or "plain")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch,parts", [(5, 2), (5, 3), (5, 4), (8, 2)])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_a_split_call_computes_what_one_thread_computes(cell, layers, batch, parts, dtype,
                                                         case):
    set_parts(1)
    alone = call(cell, layers, batch, dtype, **case)
    assert alone["parts"] == 1
    set_parts(parts)
    split = call(cell, layers, batch, dtype, **case)
    assert split["parts"] == parts
    assert_same(split, alone, 1e-13 if dtype == np.float64 else 2e-6)
    assert np.abs(split["grads"]).max() > 0


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_a_split_call_matches_the_numpy_reference(cell, many_to_one):
    set_parts(3)
    got = call(cell, 2, 7, np.float64, many_to_one=many_to_one, lengths=many_to_one)
    assert got["parts"] == 3
    loss, want = reference_loss_and_grad(
        dict(got["model"].state_dict()), got["X"], got["Y"], cell=cell, num_layers=2,
        mode="many_to_one" if many_to_one else "many_to_many", loss="mse", h0=got["h0"],
        c0=got["c0"], lengths=got["lengths"])
    flat = np.concatenate([np.ravel(want[name]) for name, _, _ in
                           _engine.param_layout(cell, 2, 3, 6, 4)])
    np.testing.assert_allclose(got["grads"], flat, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["dh0"], want["h0"], rtol=1e-9, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(got["dc0"], want["c0"], rtol=1e-9, atol=1e-12)
    assert got["loss"] == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_a_split_gives_the_same_bits_on_any_number_of_threads(cell, dtype):
    """The sub-engines and the order of the sum are fixed by the split, not by the threads
    that run it (one thread takes them in turn, as when the team is busy)."""
    runs = []
    for threads in (0, 1, 2):
        set_parts(4)
        cbptt.set_settings(split=True, split_threads=threads)
        runs.append(call(cell, 2, 9, dtype, weighted=True))
        assert runs[-1]["parts"] == (threads or 4)
    for run in runs[1:]:
        for key in ("grads", "dh0", "h_final"):
            np.testing.assert_array_equal(run[key], runs[0][key], err_msg=key)
        assert run["loss"] == runs[0]["loss"] and run["sq_norm"] == runs[0]["sq_norm"]


def test_the_states_of_a_split_call_are_joined_in_row_order():
    set_parts(1)
    alone = call("lstm", 2, 7, np.float64)
    set_parts(3)
    split = call("lstm", 2, 7, np.float64)
    for got, want in zip(split["engine"].states(), alone["engine"].states()):
        assert got.shape == want.shape == (2, 8, 7, 6)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_a_split_engine_allocates_only_its_sub_engines():
    """A training engine that only ever splits keeps no T-sized buffer of its own: its
    workspace is its sub-engines' (the same T*B rows between them) and their gradients."""
    batch, steps, hidden = 16, 200, 32
    sizes = {}
    for split in ("rows", "shared"):
        set_parts(2, split)
        engine = _engine.Engine("lstm", 1, 3, hidden, 2, batch, steps, np.float32)
        params = cbptt.RNN(3, hidden, 2, cell="lstm", seed=0, dtype=np.float32).params
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch, steps, 3)).astype(np.float32)
        Y = rng.standard_normal((batch, steps, 2)).astype(np.float32)
        engine.loss_and_grad(X, Y, params, np.zeros_like(params))
        sizes[split] = engine.workspace_bytes
    gates_bytes = steps * batch * 4 * hidden * 4       # the stored LSTM gates, float32
    assert sizes["rows"] < sizes["shared"] + 16 * params.nbytes
    assert sizes["rows"] > gates_bytes                     # the sub-engines' are counted


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_a_split_prediction_writes_what_one_thread_writes(cell, dtype, many_to_one):
    """Prediction on sub-engines: each writes its block of rows of the output and of the
    final states, from its rows of the initial states and lengths."""
    rng = np.random.default_rng(2)
    batch, steps, layers, hidden = 7, 6, 2, 5
    model = cbptt.RNN(3, hidden, 4, cell=cell, num_layers=layers, seed=1, dtype=dtype)
    X = rng.standard_normal((batch, steps, 3)).astype(dtype)
    lstm = cell == "lstm"
    shape = (layers, batch, hidden)
    given = dict(h0=rng.standard_normal(shape).astype(dtype),
                 c0=rng.standard_normal(shape).astype(dtype) if lstm else None)
    lengths = rng.integers(1, steps + 1, size=batch) if many_to_one else None
    results = []
    for parts in (1, 3):
        set_parts(parts)
        engine = _engine.Engine(cell, layers, 3, hidden, 4, batch, steps, dtype,
                                many_to_one=many_to_one, training=False)
        out = np.full((batch, 4) if many_to_one else (batch, steps, 4), np.nan, dtype)
        final = {name: np.full(shape, np.nan, dtype)
                 for name in (["h_final", "c_final"] if lstm else ["h_final"])}
        engine.predict(X, model.params, out, lengths=lengths, **given, **final)
        assert engine.last_parts == parts
        results.append(dict(out=out, **final))
    tol = 1e-13 if dtype == np.float64 else 1e-6
    for key in results[0]:
        assert not np.isnan(results[1][key]).any(), key
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=tol, atol=tol,
                                   err_msg=key)
