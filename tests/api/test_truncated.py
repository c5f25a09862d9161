"""Truncated BPTT(k1, k2): against a readable NumPy reference of the documented semantics
(built on tests/reference.py) and, where importable, against torch with the same windows and
detaching; stream bookkeeping, many-to-one, fit_stream and bad input."""
import tracemalloc

import numpy as np
import pytest

import cbptt

import reference
from helpers import CELLS


def reference_truncated(params, X, Y, *, cell, num_layers, loss, k1, k2, lr):
    """SGD(lr) over one stream batch by the documented semantics, written out plainly.

    entering[p] is the state that entered step p, as computed when p was first processed."""
    params = {k: v.copy() for k, v in params.items()}
    B, L, _ = X.shape
    H = params["weight_hh_l0"].shape[1]
    zeros = np.zeros((num_layers, B, H))
    entering = {0: (zeros, zeros if cell == "lstm" else None)}
    losses = []
    for s in range(0, L, k1):
        e = min(s + k1, L)
        ws = max(0, e - k2)
        h0, c0 = entering[ws]
        value, grads = reference.loss_and_grad(params, X[:, ws:e], Y[:, ws:e], cell=cell,
                                               num_layers=num_layers, mode="many_to_many",
                                               loss=loss, h0=h0, c0=c0, loss_start=s - ws)
        for p in range(s + 1, e + 1):       # states of this forward, before the update
            out = reference.forward(params, X[:, ws:p], cell=cell, num_layers=num_layers,
                                    h0=h0, c0=c0)
            entering[p] = (out["h_last"], out.get("c_last"))
        for k in params:
            params[k] = params[k] - lr * grads[k]
        losses.append((value, e - s))
    mean_loss = sum(v * n for v, n in losses) / L
    return params, mean_loss, entering[L]


def torch_truncated(model, X, Y, *, loss, k1, k2, lr):
    """The same semantics in torch: windows recomputed from detached stored states."""
    torch = pytest.importorskip("torch")
    rnn, head = model.to_torch()
    opt = torch.optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=lr)
    B, L, _ = X.shape
    zeros = torch.zeros(model.num_layers, B, model.hidden_size, dtype=torch.float64)
    entering = {0: (zeros, zeros.clone()) if model.cell == "lstm" else zeros}
    Xt = torch.from_numpy(X)
    for s in range(0, L, k1):
        e = min(s + k1, L)
        ws = max(0, e - k2)
        state = entering[ws]
        out, _ = rnn(Xt[:, ws:e], state)
        pred = head(out[:, s - ws:])
        if loss == "mse":
            value = torch.nn.MSELoss()(pred, torch.from_numpy(Y[:, s:e]))
        else:
            value = torch.nn.CrossEntropyLoss()(pred.reshape(-1, model.output_size),
                                                torch.from_numpy(Y[:, s:e]).reshape(-1))
        with torch.no_grad():
            for p in range(s + 1, e + 1):
                _, entering[p] = rnn(Xt[:, ws:p], state)
        opt.zero_grad()
        value.backward()
        opt.step()
    result = {k: v.detach().numpy() for k, v in rnn.state_dict().items()}
    result.update({f"head.{k}": v.detach().numpy() for k, v in head.state_dict().items()})
    return result


def make_stream(cell, num_layers, loss, batch=2, length=11, seed=0):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(3, 4, 3, cell=cell, num_layers=num_layers, seed=seed)
    X = rng.normal(size=(batch, length, 3))
    Y = rng.normal(size=(batch, length, 3)) if loss == "mse" else \
        rng.integers(0, 3, size=(batch, length))
    return model, X, Y


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("k1, k2", [(3, 3), (3, 5), (4, 9), (1, 2), (11, 11)])
def test_matches_reference_semantics(cell, num_layers, loss, k1, k2):
    model, X, Y = make_stream(cell, num_layers, loss)      # L = 11: not a multiple of k1
    expected, expected_loss, expected_state = reference_truncated(
        model.state_dict(), X, Y, cell=cell, num_layers=num_layers, loss=loss, k1=k1, k2=k2,
        lr=0.5)
    trainer = cbptt.Truncated(model, k1=k1, k2=k2, loss=loss, optimizer=cbptt.SGD(lr=0.5))
    mean_loss = trainer.step(X, Y)
    assert mean_loss == pytest.approx(expected_loss, rel=1e-10)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
    state = trainer.state
    h = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(h, expected_state[0], rtol=1e-9, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(state[1], expected_state[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("k1, k2", [(3, 3), (3, 5)])
def test_matches_torch(cell, num_layers, loss, k1, k2):
    model, X, Y = make_stream(cell, num_layers, loss)
    expected = torch_truncated(model, X, Y, loss=loss, k1=k1, k2=k2, lr=0.5)
    cbptt.Truncated(model, k1=k1, k2=k2, loss=loss, optimizer=cbptt.SGD(lr=0.5)).step(X, Y)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_k1_equals_k2_equals_length_is_many_to_many():
    model_a, X, Y = make_stream("gru", 2, "mse", length=9)
    model_b = cbptt.RNN(3, 4, 3, cell="gru", num_layers=2, seed=0)
    loss_a = cbptt.Truncated(model_a, k1=9, optimizer=cbptt.SGD(lr=0.3)).step(X, Y)
    loss_b = cbptt.ManyToMany(model_b, optimizer=cbptt.SGD(lr=0.3)).step(X, Y)
    assert loss_a == loss_b
    np.testing.assert_array_equal(model_a.params, model_b.params)


@pytest.mark.parametrize("k1, k2", [(3, 3), (3, 7)])
def test_stream_continues_across_calls(k1, k2):
    """Two calls over the halves (split at a multiple of k1) equal one call over the whole."""
    model_a, X, Y = make_stream("lstm", 1, "mse", length=12)
    model_b = cbptt.RNN(3, 4, 3, cell="lstm", seed=0)
    one = cbptt.Truncated(model_a, k1=k1, k2=k2, optimizer=cbptt.SGD(lr=0.2))
    two = cbptt.Truncated(model_b, k1=k1, k2=k2, optimizer=cbptt.SGD(lr=0.2))
    one.step(X, Y)
    two.step(X[:, :6], Y[:, :6])
    assert two.position == 6
    two.step(X[:, 6:], Y[:, 6:])
    np.testing.assert_allclose(model_a.params, model_b.params, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(one.state[1], two.state[1], rtol=1e-13)


def test_forgetting_the_carried_state_would_change_the_result():
    """reset_state() between the halves is not the same as continuing the stream."""
    model_a, X, Y = make_stream("tanh", 1, "mse", length=12)
    model_b = cbptt.RNN(3, 4, 3, seed=0)
    cont = cbptt.Truncated(model_a, k1=3, optimizer=cbptt.SGD(lr=0.2))
    reset = cbptt.Truncated(model_b, k1=3, optimizer=cbptt.SGD(lr=0.2))
    cont.step(X[:, :6], Y[:, :6])
    cont.step(X[:, 6:], Y[:, 6:])
    reset.step(X[:, :6], Y[:, :6])
    reset.reset_state()
    assert reset.state is None and reset.position == 0
    reset.step(X[:, 6:], Y[:, 6:])
    assert np.abs(model_a.params - model_b.params).max() > 1e-6


def test_mask_weights_the_blocks_outputs():
    """k1 = k2 = L with a mask equals ManyToMany with the same mask; an all-zero block makes
    no update."""
    model_a, X, Y = make_stream("tanh", 1, "mse", length=8)
    model_b = cbptt.RNN(3, 4, 3, seed=0)
    mask = np.ones((2, 8))
    mask[0, 5:] = 0
    a = cbptt.Truncated(model_a, k1=8, optimizer=cbptt.SGD(lr=0.3)).step(X, Y, mask=mask)
    b = cbptt.ManyToMany(model_b, optimizer=cbptt.SGD(lr=0.3)).step(X, Y, mask=mask)
    assert a == pytest.approx(b, rel=1e-12)
    np.testing.assert_allclose(model_a.params, model_b.params, rtol=1e-12)
    before = model_a.params.copy()
    trainer = cbptt.Truncated(model_a, k1=4, optimizer=cbptt.SGD(lr=0.3))
    trainer.step(X[:, :4], Y[:, :4], mask=np.zeros((2, 4)))
    np.testing.assert_array_equal(model_a.params, before)
    assert trainer.position == 4


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_many_to_one_backpropagates_through_the_last_k2_steps_only(cell):
    model_a, X, Y = make_stream(cell, 2, "mse", length=13)
    y = Y[:, -1]
    model_b = cbptt.RNN(3, 4, 3, cell=cell, num_layers=2, seed=0)
    cbptt.Truncated(model_a, k1=2, k2=5, many_to_one=True,
                    optimizer=cbptt.SGD(lr=0.4)).step(X, y)
    # by hand: the state after step 8 without gradients, then ManyToOne over the last 5 steps
    _, state = model_b.predict(X[:, :8], return_state=True)
    h0, c0 = state if cell == "lstm" else (state, None)
    cbptt.ManyToOne(model_b, optimizer=cbptt.SGD(lr=0.4)).step(X[:, 8:], y, h0=h0, c0=c0)
    np.testing.assert_allclose(model_a.params, model_b.params, rtol=1e-12, atol=1e-15)
    # with k2 >= T it is plain ManyToOne
    model_c = cbptt.RNN(3, 4, 3, cell=cell, num_layers=2, seed=0)
    model_d = cbptt.RNN(3, 4, 3, cell=cell, num_layers=2, seed=0)
    cbptt.Truncated(model_c, k1=5, k2=20, many_to_one=True,
                    optimizer=cbptt.SGD(lr=0.4)).step(X, y)
    cbptt.ManyToOne(model_d, optimizer=cbptt.SGD(lr=0.4)).step(X, y)
    np.testing.assert_allclose(model_c.params, model_d.params, rtol=1e-12, atol=1e-15)


def test_fit_stream_on_arrays_memmaps_and_iterators(tmp_path):
    model_a, X, Y = make_stream("gru", 1, "mse", batch=1, length=40)
    reference_model = cbptt.RNN(3, 4, 3, cell="gru", seed=0)
    cbptt.Truncated(reference_model, k1=4, k2=6, optimizer=cbptt.SGD(lr=0.1)).step(X, Y)

    path = tmp_path / "stream.dat"
    stream = np.memmap(path, dtype=np.float64, mode="w+", shape=(40, 3))
    stream[:] = X[0]
    stream.flush()
    source = np.memmap(path, dtype=np.float64, mode="r", shape=(40, 3))
    trainer = cbptt.Truncated(model_a, k1=4, k2=6, optimizer=cbptt.SGD(lr=0.1))
    losses = trainer.fit_stream(source, Y[0], chunk_steps=8)
    assert losses.shape == (5,)
    np.testing.assert_allclose(model_a.params, reference_model.params, rtol=1e-12)

    model_b = cbptt.RNN(3, 4, 3, cell="gru", seed=0)
    chunks = ((X[:, s:s + 12], Y[:, s:s + 12]) for s in range(0, 40, 12))
    cbptt.Truncated(model_b, k1=4, k2=6, optimizer=cbptt.SGD(lr=0.1)).fit_stream(chunks)
    np.testing.assert_allclose(model_b.params, reference_model.params, rtol=1e-12)


def test_memory_does_not_grow_with_the_stream():
    """Peak traced memory over a stream 10x longer stays the same (bounded by the window)."""
    def peak(length):
        model = cbptt.RNN(2, 8, 1, seed=0)
        trainer = cbptt.Truncated(model, k1=20, k2=40, optimizer=cbptt.SGD(lr=0.01))
        data = np.zeros((length, 2))
        targets = np.zeros((length, 1))
        tracemalloc.start()
        trainer.fit_stream(data, targets, chunk_steps=200)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top
    short, long = peak(2_000), peak(20_000)
    assert long < 1.2 * short + 50_000, (short, long)


def test_bad_arguments_leave_weights_and_state_untouched():
    model, X, Y = make_stream("tanh", 1, "mse", length=6)
    with pytest.raises(ValueError, match="k1"):
        cbptt.Truncated(model, k1=0)
    with pytest.raises(ValueError, match="k2 must be >= k1"):
        cbptt.Truncated(model, k1=4, k2=3)
    trainer = cbptt.Truncated(model, k1=3, optimizer=cbptt.SGD(lr=0.1, momentum=0.9))
    trainer.step(X, Y)
    params, state, position = model.params.copy(), trainer.state.copy(), trainer.position
    with pytest.raises(ValueError, match="reset_state"):
        trainer.step(np.zeros((3, 6, 3)), np.zeros((3, 6, 3)))
    with pytest.raises(ValueError, match="Y must have shape"):
        trainer.step(X, Y[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        trainer.step(X, np.full_like(Y, np.nan))
    np.testing.assert_array_equal(model.params, params)
    np.testing.assert_array_equal(trainer.state, state)
    assert trainer.position == position


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_stream_and_optimiser_state_round_trip(cell):
    """A trainer rebuilt from stream_state() and the optimiser's state_dict() continues
    exactly as the original would have."""
    model_a, X, Y = make_stream(cell, 2, "mse", length=16)
    model_b = cbptt.RNN(3, 4, 3, cell=cell, num_layers=2, seed=0)
    a = cbptt.Truncated(model_a, k1=3, k2=5, optimizer=cbptt.Adam(lr=1e-2))
    a.step(X[:, :8], Y[:, :8])
    model_b.load_state_dict(model_a.state_dict())
    b = cbptt.Truncated(model_b, k1=3, k2=5, optimizer=cbptt.Adam(lr=1e-2))
    b.optimizer.load_state_dict(a.optimizer.state_dict(), model_b.params)
    b.load_stream_state(a.stream_state())
    a.step(X[:, 8:], Y[:, 8:])
    b.step(X[:, 8:], Y[:, 8:])
    np.testing.assert_array_equal(model_a.params, model_b.params)
    with pytest.raises(ValueError, match="stream state"):
        state = a.stream_state()
        state["h"] = np.zeros((1, 1, 1))
        b.load_stream_state(state)
    with pytest.raises(ValueError, match="optimizer state"):
        b.optimizer.load_state_dict({"steps": 1, "exp_avg": np.zeros(3)}, model_b.params)


def test_stream_rows_and_join_streams_split_and_rejoin_a_stream_state():
    from cbptt.truncated import STREAM_BATCH_AXIS, join_streams, stream_rows
    rng = np.random.default_rng(4)
    trainer = cbptt.Truncated(cbptt.RNN(2, 4, 1, cell="lstm", num_layers=2, seed=0), k1=3, k2=5)
    trainer.step(rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 7, 1)))
    whole = trainer.stream_state()
    assert set(STREAM_BATCH_AXIS) <= set(whole)
    first, rest = stream_rows(whole, slice(0, 1)), stream_rows(whole, slice(1, 3))
    assert int(first["batch"]) == 1 and int(rest["batch"]) == 2
    np.testing.assert_array_equal(rest["h"], whole["h"][:, 1:3])
    np.testing.assert_array_equal(rest["ring_x"], whole["ring_x"][:, 1:3])
    np.testing.assert_array_equal(first["ring_c"], whole["ring_c"][:, :, :1])
    joined = join_streams([first, rest])
    assert joined.keys() == whole.keys()
    for name, value in whole.items():
        np.testing.assert_array_equal(joined[name], value, err_msg=name)
    # a part loads into a trainer of its own streams
    part = cbptt.Truncated(cbptt.RNN(2, 4, 1, cell="lstm", num_layers=2, seed=0), k1=3, k2=5)
    part.load_stream_state(rest)
    np.testing.assert_array_equal(part.state[0], whole["h"][:, 1:3])
    fresh = cbptt.Truncated(cbptt.RNN(2, 4, 1, seed=0), k1=3).stream_state()
    assert stream_rows(fresh, slice(0, 1)) is fresh          # no streams yet: nothing to split
