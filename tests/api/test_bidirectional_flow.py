"""return_flow=True for bidirectional models: the (2L, T) mean ||dL/dh_t|| per layer and
direction against a NumPy twin of the bidirectional model written here from the reference's
one-step forward and backward (tests/reference.py), in float64 for every cell, 1 and 2
layers, many-to-many and many-to-one, with lengths and initial states, and with dropout and
recurrent dropout (the twin applies the call's masks); float32 close to it; steps after every
sequence's end at zero; token ids as their one-hot input; the loss and gradients unchanged by
asking."""
import numpy as np
import pytest

import cbptt
import reference
from cbptt._dropout import dropout_key, dropout_mask

from helpers import CELLS

B, T, I, H, O = 3, 6, 3, 4, 2
LENGTHS = np.array([5, 2, 4])          # step 5 is padding in every row
KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def reversed_rows(array, lengths):
    """array (B, T, ...) with row b's first lengths[b] steps back to front, padding kept."""
    out = array.copy()
    for b, n in enumerate(lengths):
        out[b, :n] = array[b, :n][::-1]
    return out


def twin_loss_and_flow(model, X, y, lengths, h0, c0, many_to_one, key=0):
    """The loss (cross-entropy, mean over valid targets) and the flow (2L, T) of a
    bidirectional model, step by step in NumPy; dropout with the masks of the call keyed
    key."""
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    cell, L = model.cell, model.num_layers
    last = lengths - 1
    inputs, runs, between = X, [], [None] * L
    for layer in range(L):
        if layer > 0 and model.dropout > 0:     # on the outputs below, (B, T, 2H)
            between[layer] = dropout_mask(key, layer, model.dropout, B, 2 * H,
                                          steps=T).transpose(1, 0, 2)
            inputs = inputs * between[layer]
        outputs = []
        for direction, suffix in enumerate(("", "_reverse")):
            k = 2 * layer + direction
            p = {f"{name}_l0": state[f"{name}_l{layer}{suffix}"] for name in KEYS}
            x = inputs if direction == 0 else reversed_rows(inputs, lengths)
            h, c = h0[k], None if c0 is None else c0[k]
            rmask = None if model.recurrent_dropout == 0 else dropout_mask(
                key, 0, model.recurrent_dropout, B, H, stream0=k)
            caches, hs = [], []
            for t in range(T):
                h, c, cache = reference._step(cell, p, 0, x[:, t], h, c, rmask)
                caches.append(cache)
                hs.append(h)
            out = np.stack(hs, axis=1)                          # (B, T, H), direction's order
            runs.append((p, caches, out[np.arange(B), last]))
            outputs.append(out if direction == 0 else reversed_rows(out, lengths))
        inputs = np.concatenate(outputs, axis=2)
    W, bias = state["head.weight"], state["head.bias"]
    if many_to_one:            # [top forward state at its last step, top reverse one]
        top = np.concatenate([runs[-2][2], runs[-1][2]], axis=1)
        logp = reference.log_softmax(top @ W.T + bias)
        loss = -logp[np.arange(B), y].mean()
        dlogits = np.exp(logp)
        dlogits[np.arange(B), y] -= 1
        d_final, d_out = dlogits / B @ W, np.zeros((B, T, 2 * H))
    else:
        valid = np.arange(T) < lengths[:, None]
        logp = reference.log_softmax(inputs @ W.T + bias)
        picked = np.take_along_axis(logp, y[:, :, None], axis=2)[:, :, 0]
        loss = -(picked * valid).sum() / valid.sum()
        dlogits = np.exp(logp)
        np.put_along_axis(dlogits, y[:, :, None], np.take_along_axis(
            dlogits, y[:, :, None], axis=2) - 1, axis=2)
        d_final, d_out = None, (dlogits * valid[:, :, None] / valid.sum()) @ W
    flow = np.zeros((2 * L, T))
    for layer in range(L - 1, -1, -1):
        d_in = 0
        for direction in (0, 1):
            k = 2 * layer + direction
            p, caches, _ = runs[k]
            inject = d_out[:, :, direction * H:(direction + 1) * H]
            if direction == 1:
                inject = reversed_rows(inject, lengths)
            inject = inject.copy()
            if d_final is not None and layer == L - 1:
                inject[np.arange(B), last] += d_final[:, direction * H:(direction + 1) * H]
            grads = {name: np.zeros_like(v) for name, v in p.items()}
            dh_next, dc = np.zeros((B, H)), (np.zeros((B, H)) if cell == "lstm" else None)
            norms, dx = np.zeros((B, T)), []
            for t in range(T - 1, -1, -1):
                dh = inject[:, t] + dh_next
                norms[:, t] = np.linalg.norm(dh, axis=1)
                dx_t, dh_next, dc = reference._step_backward(cell, p, 0, caches[t], dh, dc,
                                                             grads)
                dx.append(dx_t)
            dx = np.stack(dx[::-1], axis=1)
            if direction == 1:
                norms, dx = reversed_rows(norms, lengths), reversed_rows(dx, lengths)
            flow[k] = norms.mean(axis=0)
            d_in = d_in + dx
        d_out = d_in if between[layer] is None else d_in * between[layer]
    return loss, flow


def case(cell, layers, many_to_one, dtype=np.float64, seed=0, **dropout):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=layers, bidirectional=True, seed=seed,
                      dtype=dtype, **dropout)
    X = rng.standard_normal((B, T, I))
    y = rng.integers(0, O, B if many_to_one else (B, T))
    h0 = rng.standard_normal((2 * layers, B, H)) * 0.5
    c0 = rng.standard_normal((2 * layers, B, H)) * 0.5 if cell == "lstm" else None
    kind = cbptt.ManyToOne if many_to_one else cbptt.ManyToMany
    return model, kind(model, loss="cross_entropy", seed=7), X, y, h0, c0


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_flow_against_the_numpy_twin(cell, layers, many_to_one):
    model, trainer, X, y, h0, c0 = case(cell, layers, many_to_one)
    loss, _, flow = trainer.loss_and_grad(X, y, h0=h0, c0=c0, lengths=LENGTHS,
                                          return_flow=True)
    want_loss, want_flow = twin_loss_and_flow(model, X, y, LENGTHS, h0, c0, many_to_one)
    assert loss == pytest.approx(want_loss, rel=1e-12)      # the twin is the model
    assert flow.shape == (2 * layers, T) and flow.dtype == np.float64
    np.testing.assert_allclose(flow, want_flow, rtol=1e-10, atol=1e-14)
    assert (flow[:, :T - 1] > 0).all()
    assert (flow[:, T - 1] == 0).all()       # no sequence reaches the last step


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_flow_is_close_to_float64s(cell, many_to_one):
    flows = []
    for dtype in (np.float64, np.float32):
        _, trainer, X, y, h0, c0 = case(cell, 2, many_to_one, dtype=dtype)
        flows.append(trainer.loss_and_grad(X, y, h0=h0, c0=c0, lengths=LENGTHS,
                                           return_flow=True)[-1])
    np.testing.assert_allclose(flows[1], flows[0], rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("many_to_one", [False, True])
def test_asking_for_the_flow_changes_nothing_else(many_to_one):
    _, trainer, X, y, h0, c0 = case("lstm", 2, many_to_one)
    loss, grads, state = trainer.loss_and_grad(X, y, h0=h0, c0=c0, lengths=LENGTHS,
                                               return_state=True)
    loss2, grads2, state2, flow = trainer.loss_and_grad(X, y, h0=h0, c0=c0, lengths=LENGTHS,
                                                        return_state=True, return_flow=True)
    assert loss2 == loss and grads2.keys() == grads.keys()
    for name in grads:
        np.testing.assert_array_equal(grads2[name], grads[name])
    np.testing.assert_array_equal(state2[0], state[0])
    np.testing.assert_array_equal(state2[1], state[1])


def test_without_lengths_every_step_has_flow_and_the_first_is_the_reverse_end():
    """No lengths: every row runs all T steps; the reverse direction's last step is step 0,
    where many-to-one's gradient enters it: there its flow is the head's gradient alone."""
    model, trainer, X, y, h0, _ = case("gru", 1, True)
    _, _, flow = trainer.loss_and_grad(X, y, h0=h0, return_flow=True)
    full = np.full(B, T)
    _, want = twin_loss_and_flow(model, X, y, full, h0, None, True)
    np.testing.assert_allclose(flow, want, rtol=1e-10)
    assert (flow > 0).all()
    W = model.state_dict()["head.weight"]
    p = np.exp(reference.log_softmax(trainer.predict(X, h0=h0)))      # softmax of the logits
    p[np.arange(B), y] -= 1
    np.testing.assert_allclose(flow[1, 0], np.linalg.norm(p / B @ W[:, H:], axis=1).mean(),
                               rtol=1e-10)


@pytest.mark.parametrize("many_to_one", [False, True])
def test_token_ids_give_the_flow_of_their_one_hot_input(many_to_one):
    model, trainer, _, y, h0, _ = case("gru", 2, many_to_one)
    ids = np.random.default_rng(3).integers(0, I, (B, T))
    one_hot = np.eye(I)[ids]
    flows = [trainer.loss_and_grad(x, y, h0=h0, lengths=LENGTHS, return_flow=True)[-1]
             for x in (ids, one_hot)]
    np.testing.assert_allclose(flows[0], flows[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("many_to_one", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_flow_with_dropout_against_the_twin_with_the_calls_masks(cell, many_to_one):
    model, trainer, X, y, h0, c0 = case(cell, 2, many_to_one, dropout=0.4,
                                        recurrent_dropout=0.3)
    key = dropout_key(7, trainer.dropout_calls)
    loss, _, flow = trainer.loss_and_grad(X, y, h0=h0, c0=c0, lengths=LENGTHS,
                                          return_flow=True)
    want_loss, want_flow = twin_loss_and_flow(model, X, y, LENGTHS, h0, c0, many_to_one, key)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(flow, want_flow, rtol=1e-10, atol=1e-14)
    _, plain = twin_loss_and_flow(model, X, y, LENGTHS, h0, c0, many_to_one, key + 1)
    assert not np.allclose(flow, plain)          # the masks matter
