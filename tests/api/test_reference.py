"""Checks of the pure-NumPy reference (tests/reference.py): central finite differences, and PyTorch where available."""
import numpy as np
import pytest

from reference import (CELLS, forward, init_params, log_softmax, loss_and_grad, loss_value, numerical_grad,
                       sigmoid)

B, T, I, H, O = 3, 4, 2, 3, 3
LENGTHS = np.array([2, T, 1])  # many_to_one with lengths: includes 1 and T
LOSS_START = 2                 # many_to_many with a truncated loss window

MODES_LOSSES = [(m, l) for m in ("many_to_many", "many_to_one") for l in ("mse", "cross_entropy")]
# variant: (initial state given?, lengths / loss_start used?)
VARIANTS = {"plain": (False, False), "state": (True, False), "extra": (False, True), "state+extra": (True, True)}


def rel_err(a, b):
    """max|a - b| / max(1e-8, max|b|)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(b)))


def make_case(cell, num_layers, mode, loss, variant, seed=0):
    """Parameters, data and keyword arguments of one test case (float64).

    For relu, seeds are skipped until no pre-activation is within 1e-3 of the kink, so that finite differences
    (steps of 3e-5 on entries of size <~ 3) never cross it.
    """
    with_state, extra = VARIANTS[variant]
    for s in range(seed, seed + 100):
        rng = np.random.default_rng(s)
        params = init_params(cell, I, H, O, num_layers, rng)
        X = rng.standard_normal((B, T, I))
        h0 = 0.5 * rng.standard_normal((num_layers, B, H)) if with_state else None
        c0 = 0.5 * rng.standard_normal((num_layers, B, H)) if with_state and cell == "lstm" else None
        ydims = (B, T) if mode == "many_to_many" else (B,)
        Y = rng.standard_normal(ydims + (O,)) if loss == "mse" else rng.integers(0, O, size=ydims)
        kw = dict(cell=cell, num_layers=num_layers, mode=mode, loss=loss, h0=h0, c0=c0)
        if extra and mode == "many_to_many":
            kw["loss_start"] = LOSS_START
        if extra and mode == "many_to_one":
            kw["lengths"] = LENGTHS
        if cell != "relu":
            break
        caches = forward(params, X, cell=cell, num_layers=num_layers, h0=h0)["caches"]
        if min(np.abs(c["a"]).min() for layer in caches for c in layer) > 1e-3:
            break
    else:
        raise RuntimeError("no kink-free seed found")
    return params, X, Y, kw


def case_params(variants):
    return pytest.mark.parametrize(
        "cell,num_layers,mode,loss,variant",
        [(c, n, m, l, v) for c in CELLS for n in (1, 2) for m, l in MODES_LOSSES for v in variants],
    )


# ----------------------------------------------------------------------------------------------- finite differences
# Finite differences are the slow part: two variants cover every code path ('plain' also checks h0=None against an
# explicit zeros state); the torch cross-check below runs all four.
@case_params(["plain", "state+extra"])
def test_gradients_match_finite_differences(cell, num_layers, mode, loss, variant):
    params, X, Y, kw = make_case(cell, num_layers, mode, loss, variant)
    value, grads = loss_and_grad(params, X, Y, **kw)
    assert set(grads) == set(params) | {"h0"} | ({"c0"} if cell == "lstm" else set())

    # Perturb the initial state too; when the case has none, differentiate at an explicit zeros state,
    # which must give the same loss and the same gradient as h0=None.
    state = {"h0": kw["h0"] if kw["h0"] is not None else np.zeros((num_layers, B, H))}
    if cell == "lstm":
        state["c0"] = kw["c0"] if kw["c0"] is not None else np.zeros((num_layers, B, H))
    fd_kw = {**kw, **state}
    assert loss_and_grad(params, X, Y, **fd_kw)[0] == pytest.approx(value, rel=1e-14)
    assert loss_value(params, X, Y, **fd_kw) == value

    arrays = {**params, **state}
    # eps = 3e-5 balances truncation (~eps^2) against round-off (~1e-16 / eps): relu cases with mostly dead units
    # have keys whose gradients are ~1e-5, where eps = 1e-6 leaves only ~1e-6 relative accuracy.
    num = numerical_grad(lambda: loss_value(params, X, Y, **fd_kw), arrays, eps=3e-5)
    errors = {k: rel_err(grads[k], num[k]) for k in arrays}
    assert max(errors.values()) < 1e-6, errors


# ----------------------------------------------------------------------------------------------- PyTorch
def torch_loss_and_grad(torch, params, X, Y, *, cell, num_layers, mode, loss, h0=None, c0=None, loss_start=0,
                        lengths=None):
    """The same computation with torch.nn.RNN/LSTM/GRU + nn.Linear and autograd (float64)."""
    kind = {"tanh": torch.nn.RNN, "relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    extra = {"nonlinearity": cell} if cell in ("tanh", "relu") else {}
    rnn = kind(I, H, num_layers=num_layers, batch_first=True, **extra).double()
    head = torch.nn.Linear(H, O).double()
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in params.items() if not k.startswith("head.")})
    head.load_state_dict({"weight": torch.from_numpy(params["head.weight"]),
                          "bias": torch.from_numpy(params["head.bias"])})
    zeros = np.zeros((num_layers, B, H))
    th0 = torch.tensor(zeros if h0 is None else h0, requires_grad=True)
    tc0 = torch.tensor(zeros if c0 is None else c0, requires_grad=True)
    out, state = rnn(torch.from_numpy(X), (th0, tc0) if cell == "lstm" else th0)
    y = head(out)
    if mode == "many_to_many":
        ys, Ys = y[:, loss_start:], torch.from_numpy(np.asarray(Y)[:, loss_start:])
    else:
        t_idx = (np.full(B, T) if lengths is None else np.asarray(lengths)) - 1
        ys, Ys = y[torch.arange(B), torch.from_numpy(t_idx)], torch.from_numpy(np.asarray(Y))
    if loss == "mse":
        value = torch.nn.MSELoss()(ys, Ys)
    else:
        value = torch.nn.CrossEntropyLoss()(ys.reshape(-1, O), Ys.reshape(-1).long())
    value.backward()
    grads = {k: p.grad.numpy() for k, p in rnn.named_parameters()}
    grads.update({f"head.{k}": p.grad.numpy() for k, p in head.named_parameters()})
    grads["h0"] = th0.grad.numpy()
    fw = {"y": y.detach().numpy()}
    if cell == "lstm":
        grads["c0"] = tc0.grad.numpy()
        fw["h_last"], fw["c_last"] = (s.detach().numpy() for s in state)
    else:
        fw["h_last"] = state.detach().numpy()
    return value.item(), grads, fw


@case_params(VARIANTS)
def test_matches_torch(cell, num_layers, mode, loss, variant):
    torch = pytest.importorskip("torch")
    params, X, Y, kw = make_case(cell, num_layers, mode, loss, variant)
    value, grads = loss_and_grad(params, X, Y, **kw)
    t_value, t_grads, t_fw = torch_loss_and_grad(torch, params, X, Y, **kw)

    fw = forward(params, X, cell=cell, num_layers=num_layers, h0=kw["h0"], c0=kw["c0"])
    for k in t_fw:
        assert rel_err(fw[k], t_fw[k]) < 1e-10, k
    assert value == pytest.approx(t_value, rel=1e-10)
    assert set(grads) == set(t_grads)
    errors = {k: rel_err(grads[k], t_grads[k]) for k in grads}
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("cell", CELLS)
def test_init_params_matches_torch_layout(cell):
    torch = pytest.importorskip("torch")
    p = init_params(cell, 5, 4, 2, 3, np.random.default_rng(0))
    kind = {"tanh": torch.nn.RNN, "relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    ref = kind(5, 4, num_layers=3, batch_first=True).state_dict()
    ref.update({f"head.{k}": v for k, v in torch.nn.Linear(4, 2).state_dict().items()})
    assert list(p) == list(ref)
    for k, v in p.items():
        assert v.shape == tuple(ref[k].shape) and v.dtype == np.float64, k
        assert np.abs(v).max() <= 0.5  # 1/sqrt(H)


# ----------------------------------------------------------------------------------------------- small properties
def test_numerical_grad_restores_and_differentiates():
    a = np.array([[1.0, -2.0], [0.5, 3.0]])
    b = np.array([0.25, -1.5, 2.0])
    a0, b0 = a.copy(), b.copy()
    g = numerical_grad(lambda: float((a ** 3).sum() + np.sin(b).sum()), {"a": a, "b": b})
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_allclose(g["a"], 3 * a0 ** 2, rtol=1e-8)
    np.testing.assert_allclose(g["b"], np.cos(b0), rtol=1e-8)


def test_stable_sigmoid_and_log_softmax():
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        s = sigmoid(np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0]))
        lp = log_softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(lp[0], [0.0, -1000.0, -2000.0])
    np.testing.assert_allclose(np.exp(lp[1]).sum(), 1.0, rtol=1e-15)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_stays_float32(cell):
    rng = np.random.default_rng(1)
    params = init_params(cell, I, H, O, 2, rng, dtype=np.float32)
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    Y = rng.standard_normal((B, T, O)).astype(np.float32)
    fw = forward(params, X, cell=cell, num_layers=2)
    assert fw["y"].dtype == fw["h_last"].dtype == np.float32
    _, grads = loss_and_grad(params, X, Y, cell=cell, num_layers=2, mode="many_to_many", loss="mse")
    assert all(g.dtype == np.float32 for g in grads.values())


def test_lengths_all_T_equals_no_lengths():
    params, X, Y, kw = make_case("lstm", 2, "many_to_one", "cross_entropy", "state")
    v1, g1 = loss_and_grad(params, X, Y, **kw)
    v2, g2 = loss_and_grad(params, X, Y, lengths=np.full(B, T), **kw)
    assert v1 == v2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
