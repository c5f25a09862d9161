"""The compiled engine's loss and gradients against central finite differences, against the
independent NumPy reference in tests/reference.py, and (where importable) against torch."""
import numpy as np
import pytest

import cbptt

import reference
from helpers import CELLS

TRAINERS = {"many_to_many": cbptt.ManyToMany, "many_to_one": cbptt.ManyToOne}


def make_case(cell, num_layers, mode, loss, batch, steps, input_size=3, hidden_size=4,
              output_size=3, dtype=np.float64, seed=0, with_h0=True):
    """A model, its trainer and random data (X, Y, h0) for one configuration."""
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(input_size, hidden_size, output_size, cell=cell, num_layers=num_layers,
                      dtype=dtype, seed=seed)
    trainer = TRAINERS[mode](model, loss=loss)
    X = rng.normal(size=(batch, steps, input_size))
    out_shape = (batch, output_size) if mode == "many_to_one" else (batch, steps, output_size)
    if loss == "mse":
        Y = rng.normal(size=out_shape)
    else:
        Y = rng.integers(0, output_size, size=out_shape[:-1])
    state_shape = (num_layers, batch, hidden_size)
    h0 = rng.normal(scale=0.5, size=state_shape) if with_h0 else None
    c0 = rng.normal(scale=0.5, size=state_shape) if with_h0 and cell == "lstm" else None
    return model, trainer, X, Y, (h0, c0)


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(b)))


def as64(a):
    return None if a is None else np.asarray(a, np.float64)


def reference_grads(model, trainer, X, Y, state):
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    return reference.loss_and_grad(
        params, as64(X), Y, cell=model.cell, num_layers=model.num_layers,
        mode="many_to_one" if trainer.many_to_one else "many_to_many", loss=trainer.loss,
        h0=as64(state[0]), c0=as64(state[1]))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gradients_match_finite_differences(cell, num_layers, mode, loss):
    model, trainer, X, Y, state = make_case(cell, num_layers, mode, loss, batch=2, steps=5)
    value, grads = trainer.loss_and_grad(X, Y, *state)
    arrays = dict(model.named_parameters())
    arrays.update({name: a for name, a in zip(("h0", "c0"), state) if a is not None})
    numeric = reference.numerical_grad(lambda: trainer.loss_and_grad(X, Y, *state)[0], arrays,
                                       eps=1e-5)
    for name, expected in numeric.items():
        assert rel_err(grads[name], expected) < 1e-6, name


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("batch, steps, hidden_size", [(1, 1, 1), (3, 7, 5), (1, 6, 4),
                                                       (2, 1, 3)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_reference_float64(cell, num_layers, mode, loss, batch, steps, hidden_size,
                                   with_h0):
    model, trainer, X, Y, state = make_case(cell, num_layers, mode, loss, batch, steps,
                                         hidden_size=hidden_size, with_h0=with_h0)
    value, grads = trainer.loss_and_grad(X, Y, *state)
    ref_value, ref_grads = reference_grads(model, trainer, X, Y, state)
    assert value == pytest.approx(ref_value, rel=1e-12)
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        assert rel_err(grads[name], ref_grads[name]) < 1e-10, name


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one"])
def test_long_sequence_matches_reference(cell, mode):
    model, trainer, X, Y, state = make_case(cell, 2, mode, "mse", batch=2, steps=500,
                                         hidden_size=6)
    value, grads = trainer.loss_and_grad(X, Y, *state)
    ref_value, ref_grads = reference_grads(model, trainer, X, Y, state)
    assert value == pytest.approx(ref_value, rel=1e-12)
    for name in ref_grads:
        assert rel_err(grads[name], ref_grads[name]) < 1e-10, name


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_float32_matches_reference(cell, mode, loss):
    model, trainer, X, Y, state = make_case(cell, 2, mode, loss, batch=3, steps=20,
                                         hidden_size=8, dtype=np.float32)
    value, grads = trainer.loss_and_grad(X, Y, *state)
    assert all(g.dtype == np.float32 for g in grads.values())
    ref_value, ref_grads = reference_grads(model, trainer, X, Y, state)
    assert value == pytest.approx(ref_value, rel=1e-4)
    for name in ref_grads:
        assert rel_err(grads[name], ref_grads[name]) < 1e-4, name


def test_each_step_injects_error_in_many_to_many():
    """Changing a middle step's target changes the gradient; the reference agrees on how."""
    model, trainer, X, Y, state = make_case("tanh", 1, "many_to_many", "mse", batch=2, steps=6)
    _, g1 = trainer.loss_and_grad(X, Y, *state)
    Y2 = Y.copy()
    Y2[:, 2] += 1.0
    _, g2 = trainer.loss_and_grad(X, Y2, *state)
    _, r2 = reference_grads(model, trainer, X, Y2, state)
    assert rel_err(g1["weight_hh_l0"], g2["weight_hh_l0"]) > 1e-3
    assert rel_err(g2["weight_hh_l0"], r2["weight_hh_l0"]) < 1e-10


def test_many_to_one_ignores_all_but_the_last_output():
    """In many-to-one only the last step's output counts: a model whose head sees only the
    last state gives the same loss whatever earlier outputs would have been."""
    model, trainer, X, y, state = make_case("tanh", 1, "many_to_one", "mse", batch=2, steps=6)
    value, _ = trainer.loss_and_grad(X, y, *state)
    full = model.predict(X, *state)
    assert value == pytest.approx(np.mean((full[:, -1] - y) ** 2), rel=1e-12)


# ---------------------------------------------------------------------------------- torch


def torch_loss_and_grads(model, mode, loss, X, Y, state):
    torch = pytest.importorskip("torch")
    size = (model.input_size, model.hidden_size)
    if model.cell == "lstm":
        rnn = torch.nn.LSTM(*size, num_layers=model.num_layers, batch_first=True)
    elif model.cell == "gru":
        rnn = torch.nn.GRU(*size, num_layers=model.num_layers, batch_first=True)
    else:
        rnn = torch.nn.RNN(*size, num_layers=model.num_layers, nonlinearity=model.cell,
                           batch_first=True)
    rnn = rnn.double()
    head = torch.nn.Linear(model.hidden_size, model.output_size).double()
    params = model.state_dict()
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
        head.weight.copy_(torch.from_numpy(params["head.weight"]))
        head.bias.copy_(torch.from_numpy(params["head.bias"]))
    h0_t = torch.from_numpy(np.array(state[0])).requires_grad_(True)
    c0_t = None
    if model.cell == "lstm":
        c0_t = torch.from_numpy(np.array(state[1])).requires_grad_(True)
    out, _ = rnn(torch.from_numpy(np.array(X)), h0_t if c0_t is None else (h0_t, c0_t))
    if mode == "many_to_one":
        out = out[:, -1]
    pred = head(out)
    if loss == "mse":
        value = torch.nn.MSELoss()(pred, torch.from_numpy(np.array(Y)))
    else:
        target = torch.from_numpy(np.array(Y, dtype=np.int64))
        value = torch.nn.CrossEntropyLoss()(pred.reshape(-1, model.output_size),
                                            target.reshape(-1))
    value.backward()
    grads = {name: p.grad.numpy() for name, p in rnn.named_parameters()}
    grads["head.weight"] = head.weight.grad.numpy()
    grads["head.bias"] = head.bias.grad.numpy()
    grads["h0"] = h0_t.grad.numpy()
    if c0_t is not None:
        grads["c0"] = c0_t.grad.numpy()
    return value.item(), grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_matches_torch(cell, num_layers, mode, loss):
    model, trainer, X, Y, state = make_case(cell, num_layers, mode, loss, batch=3, steps=6,
                                         hidden_size=5)
    value, grads = trainer.loss_and_grad(X, Y, *state)
    t_value, t_grads = torch_loss_and_grads(model, mode, loss, X, Y, state)
    assert value == pytest.approx(t_value, rel=1e-10)
    for name, expected in t_grads.items():
        assert rel_err(grads[name], expected) < 1e-10, name


OPTIMIZERS = {
    "sgd": (lambda: cbptt.SGD(lr=0.1), lambda ps, torch: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum": (lambda: cbptt.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                     lambda ps, torch: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                                       weight_decay=0.01)),
    "adam": (lambda: cbptt.Adam(lr=0.01, weight_decay=0.01),
             lambda ps, torch: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01)),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("clip_norm", [None, 0.05])
def test_training_steps_match_torch(optimizer, clip_norm):
    """Three full steps (BPTT, clipping, update) leave the same weights as torch's."""
    torch = pytest.importorskip("torch")
    make_ours, make_theirs = OPTIMIZERS[optimizer]
    model, _, X, Y, state = make_case("tanh", 2, "many_to_many", "mse", batch=3, steps=6)
    trainer = cbptt.ManyToMany(model, loss="mse", optimizer=make_ours(), clip_norm=clip_norm)
    rnn = torch.nn.RNN(3, 4, num_layers=2, batch_first=True).double()
    head = torch.nn.Linear(4, 3).double()
    weights = model.state_dict()
    with torch.no_grad():
        for name, p in list(rnn.named_parameters()) + [("head.weight", head.weight),
                                                       ("head.bias", head.bias)]:
            p.copy_(torch.from_numpy(weights[name]))
    params = list(rnn.parameters()) + list(head.parameters())
    opt = make_theirs(params, torch)
    for _ in range(3):
        trainer.step(X, Y, *state)
        opt.zero_grad()
        out, _ = rnn(torch.from_numpy(X), torch.from_numpy(state[0]))
        torch.nn.MSELoss()(head(out), torch.from_numpy(Y)).backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
    ours = model.state_dict()
    theirs = {name: p.detach().numpy() for name, p in rnn.named_parameters()}
    theirs.update({"head.weight": head.weight.detach().numpy(),
                   "head.bias": head.bias.detach().numpy()})
    for name, expected in theirs.items():
        np.testing.assert_allclose(ours[name], expected, rtol=1e-10, atol=1e-13, err_msg=name)
