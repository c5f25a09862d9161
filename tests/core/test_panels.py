"""Engines on the packed-panel product of the per-step recurrent GEMMs and on the
weight-gradient kernel (_core/panels.h; the kernels alone: test_products.py): against the NumPy
reference, against the same engine on OpenBLAS, and split over a team."""
import numpy as np
import pytest

import cbptt
from cbptt import _engine

from helpers import CELLS, engine_grads
from reference import loss_and_grad as reference_loss_and_grad

pytestmark = pytest.mark.skipif(not _engine.panels_supported(),
                                reason="the panel kernels are off (no AVX-512F, or CBPTT_ISA below avx512)")


def engine_run(cell, layers, batch, hidden, dtype, many_to_one):
    return engine_grads(cell, layers, batch, dtype, many_to_one, hidden=hidden)


def reference_flat(model, X, Y, cell, inputs, hidden, many_to_one=False, h0=None):
    """The NumPy reference's loss and gradients of a 2-layer model (2 outputs), flattened in
    the engine's parameter layout."""
    loss, want = reference_loss_and_grad(
        dict(model.state_dict()), X, Y, cell=cell, num_layers=2,
        mode="many_to_one" if many_to_one else "many_to_many", loss="mse", h0=h0)
    return loss, np.concatenate([np.ravel(want[name]) for name, _, _ in
                                 _engine.param_layout(cell, 2, inputs, hidden, 2)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch, hidden", [(1, 9), (7, 40), (8, 70)])
def test_an_engine_on_panels_computes_what_it_computes_on_openblas(
        panels, cell, layers, many_to_one, dtype, batch, hidden):
    panels(False)
    blas = engine_run(cell, layers, batch, hidden, dtype, many_to_one)
    assert not blas["engine"].panels
    assert "step_blas" in blas["engine"].last_paths
    assert "step_panels" not in blas["engine"].last_paths
    panels(True)
    packed = engine_run(cell, layers, batch, hidden, dtype, many_to_one)
    assert packed["engine"].panels
    assert "step_panels" in packed["engine"].last_paths
    assert "step_blas" not in packed["engine"].last_paths
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(packed[key], blas[key], rtol=tol, atol=tol, err_msg=key)
    assert packed["loss"] == pytest.approx(blas["loss"], rel=tol)
    assert np.abs(packed["grads"]).max() > 0


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_an_engine_matches_the_numpy_reference_on_panels_and_on_openblas(panels, cell,
                                                                        many_to_one, on):
    panels(on)
    got = engine_run(cell, 2, 7, 40, np.float64, many_to_one)
    assert got["engine"].panels == on
    _, flat = reference_flat(got["model"], got["X"], got["Y"], cell, 3, 40, many_to_one,
                             got["h0"])
    np.testing.assert_allclose(got["grads"], flat, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not _engine.team_available(),
                    reason="SciPy's BLAS has no per-thread thread control")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("split", ["rows", "columns"])
@pytest.mark.parametrize("on", [True, False])
def test_a_team_computes_what_one_thread_computes_on_panels_and_on_openblas(
        panels, on, split, parts, cell, dtype):
    panels(on)
    cbptt.set_settings(team=1)
    alone = engine_run(cell, 2, 8, 70, dtype, False)
    cbptt.set_settings(team=parts, team_min_flops=0, team_min_batch=2, team_exact=True,
                       team_column_flops=0 if split == "columns" else float("inf"))
    team = engine_run(cell, 2, 8, 70, dtype, False)
    assert team["engine"].last_parts == parts and team["engine"].panels == on
    tol = 1e-13 if dtype == np.float64 else 1e-6
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(team[key], alone[key], rtol=tol, atol=tol, err_msg=key)


def test_engines_use_panels_by_default_unless_told_not_to(panels):
    assert _engine.Engine("lstm", 1, 4, 256, 2, 8, 3, np.float32).panels
    assert _engine.Engine("tanh", 1, 4, 8, 2, 1, 3, np.float64).panels
    cbptt.set_settings(panels=True, panels_min_mnk=1e6)
    assert not _engine.Engine("lstm", 1, 4, 64, 2, 8, 3, np.float32).panels   # 131k <= 1e6
    assert _engine.Engine("lstm", 1, 4, 256, 2, 8, 3, np.float32).panels
    panels(False)
    assert not _engine.Engine("lstm", 1, 4, 256, 2, 8, 3, np.float32).panels


# Engines on the weight-gradient kernel: dW = dA^T @ inputs, read in place (cbptt_wgrad)

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_an_engine_computes_the_same_weight_gradients_on_the_kernel_and_on_openblas(
        wgrad, cell, many_to_one, dtype):
    wgrad(False)
    blas = engine_run(cell, 2, 8, 70, dtype, many_to_one)
    assert {"wgrad_kernel", "wgrad_transposed"}.isdisjoint(blas["engine"].last_paths)
    wgrad(True)
    kernel = engine_run(cell, 2, 8, 70, dtype, many_to_one)
    assert "wgrad_kernel" in kernel["engine"].last_paths
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(kernel[key], blas[key], rtol=tol, atol=tol, err_msg=key)
    assert np.abs(kernel["grads"]).max() > 0


@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_an_engine_on_the_weight_gradient_kernel_matches_the_numpy_reference(wgrad, cell):
    wgrad(True)
    got = engine_run(cell, 2, 7, 70, np.float64, False)
    _, flat = reference_flat(got["model"], got["X"], got["Y"], cell, 3, 70, h0=got["h0"])
    np.testing.assert_allclose(got["grads"], flat, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not _engine.team_available(),
                    reason="SciPy's BLAS has no per-thread thread control")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["tanh", "gru"])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("hidden", [70, 130])
def test_a_team_splits_the_weight_gradient_kernel_without_changing_results(wgrad, hidden,
                                                                          parts, cell, dtype):
    # H = 70: one panel of columns, split by rows of dW; H = 130: three panels, by columns
    wgrad(True)
    cbptt.set_settings(team=1)
    alone = engine_run(cell, 2, 8, hidden, dtype, False)
    cbptt.set_settings(team=parts, team_min_flops=0, team_min_batch=2, team_exact=True)
    team = engine_run(cell, 2, 8, hidden, dtype, False)
    assert team["engine"].last_parts == parts
    tol = 1e-13 if dtype == np.float64 else 1e-6
    for key in ("grads", "dh0"):
        np.testing.assert_allclose(team[key], alone[key], rtol=tol, atol=tol, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_the_input_projection_on_panels_computes_what_blas_computes(panel_input, cell, layers,
                                                                   dtype):
    panel_input(False)
    blas = engine_run(cell, layers, 8, 70, dtype, False)
    assert blas["engine"].last_paths >= {"input_blas"} and \
        "input_panels" not in blas["engine"].last_paths
    panel_input(True)
    packed = engine_run(cell, layers, 8, 70, dtype, False)
    assert "input_panels" in packed["engine"].last_paths   # 3 inputs <= 70: on panels
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for key in ("grads", "dh0", "h_final"):
        np.testing.assert_allclose(packed[key], blas[key], rtol=tol, atol=tol, err_msg=key)
    assert packed["loss"] == pytest.approx(blas["loss"], rel=tol)


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("inputs, hidden", [(5, 9), (20, 9)])
@pytest.mark.parametrize("cell", ["tanh", "lstm", "gru"])
def test_input_projections_match_the_numpy_reference_either_side_of_the_hidden_size(
        panel_input, cell, inputs, hidden, on):
    # inputs > hidden: W_ih^T does not fit the panel buffer, the first layer stays on BLAS
    panel_input(on)
    rng = np.random.default_rng(inputs)
    model = cbptt.RNN(inputs, hidden, 2, cell=cell, num_layers=2, seed=1)
    X = rng.standard_normal((4, 5, inputs))
    Y = rng.standard_normal((4, 5, 2))
    engine = _engine.Engine(cell, 2, inputs, hidden, 2, 4, 5, np.float64)
    grads = np.zeros_like(model.params)
    loss = engine.loss_and_grad(X, Y, model.params, grads)
    want_loss, flat = reference_flat(model, X, Y, cell, inputs, hidden)
    np.testing.assert_allclose(grads, flat, rtol=1e-9, atol=1e-12)
    assert loss == pytest.approx(want_loss, rel=1e-12)


def gated_grads(cell, inputs, hidden, dtype, parts=1, chunked_input=False):
    """Gradients of a 2-layer gated model with 10 inputs, through a fresh Engine."""
    rng = np.random.default_rng(3)
    model = cbptt.RNN(inputs, hidden, 2, cell=cell, num_layers=2, seed=2, dtype=dtype)
    X = rng.standard_normal((6, 7, inputs)).astype(dtype)
    Y = rng.standard_normal((6, 7, 2)).astype(dtype)
    chunks = dict(chunk_rows=6, chunk_min_steps=1, whole_gated_input=False) if chunked_input \
        else {}
    with cbptt.settings(team=parts, team_min_flops=0, team_min_batch=2, team_exact=True,
                        **chunks):
        engine = _engine.Engine(cell, 2, inputs, hidden, 2, 6, 7, dtype)
        grads = np.zeros_like(model.params)
        engine.loss_and_grad(X, Y, model.params, grads)
    assert engine.last_parts == parts
    return grads, model, X, Y, engine.last_paths


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunked_input", [False, True])
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_narrow_input_weight_gradients_on_the_transposed_kernel(wgrad, cell, parts,
                                                                chunked_input, dtype):
    # 10 inputs: dW_ih is computed as (inputs^T @ dA) in the panel buffer, added transposed
    if parts > 1 and not _engine.team_available():
        pytest.skip("SciPy's BLAS has no per-thread thread control")
    wgrad(False)
    blas, model, X, Y, blas_paths = gated_grads(cell, 10, 70, dtype)
    wgrad(True)
    kernel, _, _, _, kernel_paths = gated_grads(cell, 10, 70, dtype, parts, chunked_input)
    assert "wgrad_transposed" in kernel_paths and "wgrad_kernel" in kernel_paths
    assert blas_paths.isdisjoint({"wgrad_transposed", "wgrad_kernel"}) and "wgrad_blas" in blas_paths
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(kernel, blas, rtol=tol, atol=tol)
    if dtype == np.float64:
        _, flat = reference_flat(model, X, Y, cell, 10, 70)
        np.testing.assert_allclose(kernel, flat, rtol=1e-9, atol=1e-12)
