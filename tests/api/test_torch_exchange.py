"""Weight exchange with PyTorch, and training steps that match torch's for every cell."""
import numpy as np
import pytest

import cbptt

from helpers import CELLS

torch = pytest.importorskip("torch")


def torch_modules(cell, input_size, hidden_size, output_size, num_layers, dtype):
    size = (input_size, hidden_size)
    if cell == "lstm":
        rnn = torch.nn.LSTM(*size, num_layers=num_layers, batch_first=True)
    elif cell == "gru":
        rnn = torch.nn.GRU(*size, num_layers=num_layers, batch_first=True)
    else:
        rnn = torch.nn.RNN(*size, num_layers=num_layers, nonlinearity=cell, batch_first=True)
    head = torch.nn.Linear(hidden_size, output_size)
    return rnn.to(dtype), head.to(dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_from_torch_and_back(cell):
    torch.manual_seed(0)
    rnn, head = torch_modules(cell, 3, 5, 2, 2, torch.float64)
    model = cbptt.RNN.from_torch(rnn, head)
    assert (model.cell, model.num_layers, model.dtype) == (cell, 2, np.float64)
    X = np.random.default_rng(0).normal(size=(4, 6, 3))
    out, _ = rnn(torch.from_numpy(X))
    np.testing.assert_allclose(model.predict(X), head(out).detach().numpy(), rtol=1e-12,
                               atol=1e-14)
    rnn2, head2 = model.to_torch()
    for (k1, v1), (k2, v2) in zip(rnn.state_dict().items(), rnn2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert torch.equal(head.weight, head2.weight) and torch.equal(head.bias, head2.bias)


@pytest.mark.parametrize("cell", CELLS)
def test_numpy_state_dict_from_torch_loads(cell):
    torch.manual_seed(1)
    rnn, head = torch_modules(cell, 3, 4, 2, 1, torch.float32)
    state = {k: v.numpy() for k, v in rnn.state_dict().items()}
    state.update({f"head.{k}": v.numpy() for k, v in head.state_dict().items()})
    model = cbptt.RNN(3, 4, 2, cell=cell, dtype=np.float32)
    model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name])


def test_from_torch_refuses_what_cbptt_does_not_compute():
    rnn = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    with pytest.raises(ValueError, match="hidden_size x 2, bidirectional"):
        cbptt.RNN.from_torch(rnn, torch.nn.Linear(4, 2))
    # dropout is computed now: carried over (tests/api/test_dropout.py)
    assert cbptt.RNN.from_torch(torch.nn.GRU(3, 4, 2, batch_first=True, dropout=0.5),
                                None).dropout == 0.5
    with pytest.raises(ValueError, match="batch_first"):
        cbptt.RNN.from_torch(torch.nn.GRU(3, 4), torch.nn.Linear(4, 2))
    with pytest.raises(TypeError, match="rnn_module"):
        cbptt.RNN.from_torch(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


OPTIMIZERS = {
    "sgd": (lambda: cbptt.SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum": (lambda: cbptt.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adam": (lambda: cbptt.Adam(lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_steps_match_torch(cell, optimizer, mode, dtype):
    """Three steps (BPTT, clipping, update): same losses and weights as torch.
    float64 to 1e-10, float32 to 1e-4 relative."""
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    tol = 1e-10 if dtype == np.float64 else 1e-4
    make_ours, make_theirs = OPTIMIZERS[optimizer]
    model = cbptt.RNN(3, 5, 2, cell=cell, num_layers=2, dtype=dtype, seed=3)
    rnn, head = model.to_torch()
    Trainer = cbptt.ManyToOne if mode == "many_to_one" else cbptt.ManyToMany
    trainer = Trainer(model, loss="cross_entropy", optimizer=make_ours(), clip_norm=0.5)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 7, 3)).astype(dtype)
    Y = rng.integers(0, 2, size=(4,) if mode == "many_to_one" else (4, 7))
    params = list(rnn.parameters()) + list(head.parameters())
    opt = make_theirs(params)
    for _ in range(3):
        ours = trainer.step(X, Y)
        opt.zero_grad()
        out, _ = rnn(torch.from_numpy(X))
        if mode == "many_to_one":
            out = out[:, -1]
        logits = head(out).reshape(-1, 2)
        theirs = torch.nn.CrossEntropyLoss()(logits, torch.from_numpy(Y).reshape(-1))
        theirs.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        assert ours == pytest.approx(theirs.item(), rel=tol)
    expected = {k: v.detach().numpy() for k, v in rnn.state_dict().items()}
    expected.update({f"head.{k}": v.detach().numpy() for k, v in head.state_dict().items()})
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[name], rtol=tol, atol=tol * 1e-2,
                                   err_msg=name)
