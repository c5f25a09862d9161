"""cbptt.Seq2Seq against the same encoder-decoder in torch (float64, to 1e-10): an nn.LSTM /
nn.GRU / nn.RNN encoder, a decoder of the same kind with an nn.Linear head, the weights copied
from cbptt's models. The loss, every gradient of both halves, the teacher-forced predictions,
greedy generation (one-hot feedback, a stop id) and forecasting (mse), and optimiser steps
(Adam, clipping by the norm of both halves together). With ragged lengths torch runs each
sequence alone to its own length (no packing), and the loss is the sum over the sequences
divided as the issue says: over sum(tgt_lengths) targets (cross_entropy) or O times that
(mse). The padding after the lengths is random, so cbptt must ignore it as torch never sees
it."""
import numpy as np
import pytest

import cbptt

from helpers import CELLS

torch = pytest.importorskip("torch")
F = torch.nn.functional

B, T, U, I, H = 3, 6, 4, 3, 6
O = J = 4                   # the decoder reads its own outputs when generating
SRC = np.array([6, 2, 4])
TGT = np.array([4, 1, 3])
TOL = 1e-10
LOSSES = ["mse", "cross_entropy"]


def make(cell, layers, loss, seed=0, scale=2, **kwargs):
    """(s2s, encoder rnn, decoder rnn, decoder head): cbptt's Seq2Seq and torch modules holding
    copies of its weights (the decoder's initial weights times scale)."""
    enc = cbptt.RNN(I, H, None, cell=cell, num_layers=layers, seed=seed)
    dec = cbptt.RNN(J, H, O, cell=cell, num_layers=layers, seed=seed + 1)
    dec.params *= scale     # outputs that differ between ids: greedy choices with a margin
    s2s = cbptt.Seq2Seq(enc, dec, loss=loss, **kwargs)
    enc_rnn, none = enc.to_torch()
    assert none is None
    dec_rnn, head = dec.to_torch()
    return s2s, enc_rnn, dec_rnn, head


def data(loss, seed=0):
    rng = np.random.default_rng(seed + 7)
    X = rng.standard_normal((B, T, I))
    Y_in = rng.standard_normal((B, U, J))
    Y_out = rng.standard_normal((B, U, O)) if loss == "mse" else rng.integers(0, O, (B, U))
    return X, Y_in, Y_out


def lengths_or_full(src, tgt):
    return (np.full(B, T) if src is None else src), (np.full(B, U) if tgt is None else tgt)


def torch_encode(enc_rnn, X, src):
    """The encoder's final state of each sequence run alone to its length, stacked on the
    batch axis: h (L, B, H), or (h, c) for lstm."""
    states = [enc_rnn(torch.from_numpy(X[b:b + 1, :src[b]]))[1] for b in range(len(src))]
    if isinstance(states[0], tuple):
        return tuple(torch.cat([s[i] for s in states], dim=1) for i in range(2))
    return torch.cat(states, dim=1)


def torch_loss(modules, loss, X, Y_in, Y_out, src, tgt):
    """torch's loss: the whole batch at once with the mean reductions if there are no lengths,
    else each sequence alone, the sums divided by the valid targets' count."""
    enc_rnn, dec_rnn, head = modules
    if src is None and tgt is None:
        out = head(dec_rnn(torch.from_numpy(Y_in), enc_rnn(torch.from_numpy(X))[1])[0])
        if loss == "mse":
            return F.mse_loss(out, torch.from_numpy(Y_out))
        return F.cross_entropy(out.reshape(-1, O), torch.from_numpy(Y_out).reshape(-1))
    src, tgt = lengths_or_full(src, tgt)
    total = 0.0
    for b in range(B):
        state = enc_rnn(torch.from_numpy(X[b:b + 1, :src[b]]))[1]
        out = head(dec_rnn(torch.from_numpy(Y_in[b:b + 1, :tgt[b]]), state)[0])[0]
        target = torch.from_numpy(Y_out[b, :tgt[b]])
        if loss == "mse":
            total = total + F.mse_loss(out, target, reduction="sum")
        else:
            total = total + F.cross_entropy(out, target, reduction="sum")
    return total / (tgt.sum() * (O if loss == "mse" else 1))


def torch_grads(modules):
    """torch's gradients under cbptt's keys."""
    enc_rnn, dec_rnn, head = modules
    grads = {"encoder." + k: p.grad for k, p in enc_rnn.named_parameters()}
    grads.update({"decoder." + k: p.grad for k, p in dec_rnn.named_parameters()})
    grads.update({"decoder.head." + k: p.grad for k, p in head.named_parameters()})
    return {k: v.numpy() for k, v in grads.items()}


def assert_close(got, expected, what):
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL, err_msg=what)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_loss_and_every_gradient_match_torch(cell, layers, ragged, loss):
    s2s, *modules = make(cell, layers, loss)
    X, Y_in, Y_out = data(loss)
    src, tgt = (SRC, TGT) if ragged else (None, None)
    ours, grads = s2s.loss_and_grad(X, Y_in, Y_out, src, tgt)
    theirs = torch_loss(modules, loss, X, Y_in, Y_out, src, tgt)
    theirs.backward()
    assert ours == pytest.approx(theirs.item(), rel=TOL, abs=TOL)
    expected = torch_grads(modules)
    assert sorted(grads) == sorted(expected)
    for name in expected:
        assert_close(grads[name], expected[name], name)
    assert np.abs(expected["encoder.weight_ih_l0"]).max() > 1e-3     # the encoder learns


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_teacher_forced_predictions_match_torch(cell, layers, ragged):
    s2s, enc_rnn, dec_rnn, head = make(cell, layers, "mse")
    X, Y_in, _ = data("mse")
    src = SRC if ragged else None
    state = torch_encode(enc_rnn, X, lengths_or_full(src, None)[0])
    with torch.no_grad():
        expected = head(dec_rnn(torch.from_numpy(Y_in), state)[0]).numpy()
    assert_close(s2s.predict(X, Y_in, src), expected, "predict")


def torch_greedy(modules, X, src, start, steps, stop_id):
    """Greedy decoding in torch, one decoder step at a time: argmax, its one-hot the next
    input; a row that has emitted stop_id repeats it."""
    enc_rnn, dec_rnn, head = modules
    with torch.no_grad():
        state = torch_encode(enc_rnn, X, src)
        previous = torch.full((B,), start)
        done = torch.zeros(B, dtype=torch.bool)
        ids = []
        for _ in range(steps):
            x = F.one_hot(previous, O).to(torch.float64)[:, None]
            out, state = dec_rnn(x, state)
            chosen = head(out[:, 0]).argmax(dim=1)
            if stop_id is not None:
                chosen[done] = stop_id
                done |= chosen == stop_id
            ids.append(chosen)
            previous = chosen
    return torch.stack(ids, dim=1).numpy()


def varied_decoder(cell, layers, X, start, steps):
    """(s2s, torch modules, torch's free-running greedy ids) of the first seed whose greedy
    output changes within every row (small random decoders often repeat one id)."""
    for seed in range(0, 80, 2):
        s2s, *modules = make(cell, layers, "cross_entropy", seed=seed, scale=3)
        free = torch_greedy(modules, X, SRC, start, steps, None)
        if all(len(np.unique(ids)) > 1 for ids in free):
            return s2s, modules, free
    raise AssertionError("no seed gives a varied greedy output")


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_greedy_generation_matches_torch(cell, layers):
    X = data("cross_entropy")[0]
    steps, start = 8, 0
    s2s, modules, free = varied_decoder(cell, layers, X, start, steps)
    np.testing.assert_array_equal(s2s.generate(X, SRC, start=start, steps=steps, beam=1),
                                  free)
    # a stop id: the first id of row 0 that differs from its first
    stop_id = int(free[0][free[0] != free[0, 0]][0])
    expected = torch_greedy(modules, X, SRC, start, steps, stop_id)
    assert (expected == stop_id).any() and (expected != stop_id).any()
    got = s2s.generate(X, SRC, start=start, steps=steps, stop_id=stop_id, beam=1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("cell", CELLS)
def test_forecasting_matches_torch(cell):
    """mse generate: each step's input is the previous output, the first `start`."""
    s2s, enc_rnn, dec_rnn, head = make(cell, 2, "mse")
    X = data("mse")[0]
    start = np.random.default_rng(1).standard_normal(J)
    with torch.no_grad():
        state = torch_encode(enc_rnn, X, SRC)
        x = torch.from_numpy(np.tile(start, (B, 1)))
        outputs = []
        for _ in range(5):
            out, state = dec_rnn(x[:, None], state)
            x = head(out[:, 0])
            outputs.append(x)
    expected = torch.stack(outputs, dim=1).numpy()
    assert_close(s2s.generate(X, SRC, start=start, steps=5), expected, "forecast")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_adam_steps_with_joint_clipping_match_torch(cell, layers, loss):
    """Two steps of Adam, the gradient clipped by the norm of both halves together: the same
    losses and weights as torch.optim.Adam after clip_grad_norm_ over both modules."""
    clip = 0.05
    s2s, *modules = make(cell, layers, loss, optimizer=cbptt.Adam(lr=0.01), clip_norm=clip)
    enc_rnn, dec_rnn, head = modules
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    X, Y_in, Y_out = data(loss)
    for _ in range(2):
        ours = s2s.step(X, Y_in, Y_out, SRC, TGT)
        opt.zero_grad()
        theirs = torch_loss(modules, loss, X, Y_in, Y_out, SRC, TGT)
        theirs.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        assert norm > 2 * clip                      # the clipping acts
        opt.step()
        assert ours == pytest.approx(theirs.item(), rel=TOL, abs=TOL)
    expected = {"encoder." + k: v for k, v in enc_rnn.state_dict().items()}
    expected.update({"decoder." + k: v for k, v in dec_rnn.state_dict().items()})
    expected.update({"decoder.head." + k: v for k, v in head.state_dict().items()})
    got = {"encoder." + k: v for k, v in s2s.encoder.state_dict().items()}
    got.update({"decoder." + k: v for k, v in s2s.decoder.state_dict().items()})
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert_close(got[name], value.numpy(), name)


@pytest.mark.parametrize("inputs", ["one_hot_ids", "embedding"])
@pytest.mark.parametrize("cell", CELLS)
def test_token_id_inputs_match_torch(cell, inputs):
    """X and Y_in as token ids: read as one-hot rows (torch: F.one_hot), or through each
    half's embedding table (torch: nn.Embedding, padding_idx 0, whose row gets no
    gradient); the loss and every gradient, the tables' included, with ragged lengths."""
    V, E = 5, 3
    rng = np.random.default_rng(2)
    X = rng.integers(0, V, (B, T))
    Y_in = rng.integers(0, V, (B, U))
    Y_out = rng.integers(0, O, (B, U))
    if inputs == "embedding":
        enc = cbptt.RNN(E, H, None, cell=cell, num_layers=2, seed=0, vocab_size=V,
                        padding_idx=0)
        dec = cbptt.RNN(E, H, O, cell=cell, num_layers=2, seed=1, vocab_size=V,
                        padding_idx=0)
    else:
        enc = cbptt.RNN(V, H, None, cell=cell, num_layers=2, seed=0)
        dec = cbptt.RNN(V, H, O, cell=cell, num_layers=2, seed=1)
    s2s = cbptt.Seq2Seq(enc, dec, loss="cross_entropy")
    enc_torch, dec_torch = enc.to_torch(), dec.to_torch()
    enc_rnn, dec_rnn, head = enc_torch[0], dec_torch[0], dec_torch[1]
    if inputs == "embedding":
        enc_table, dec_table = enc_torch[2], dec_torch[2]
    else:
        enc_table = dec_table = lambda ids: F.one_hot(ids, V).to(torch.float64)
    ours, grads = s2s.loss_and_grad(X, Y_in, Y_out, SRC, TGT)
    total = 0.0
    for b in range(B):
        state = enc_rnn(enc_table(torch.from_numpy(X[b:b + 1, :SRC[b]])))[1]
        y = dec_table(torch.from_numpy(Y_in[b:b + 1, :TGT[b]]))
        out = head(dec_rnn(y, state)[0])[0]
        total = total + F.cross_entropy(out, torch.from_numpy(Y_out[b, :TGT[b]]),
                                        reduction="sum")
    theirs = total / TGT.sum()
    theirs.backward()
    assert ours == pytest.approx(theirs.item(), rel=TOL, abs=TOL)
    expected = torch_grads((enc_rnn, dec_rnn, head))
    if inputs == "embedding":
        expected["encoder.embedding.weight"] = enc_table.weight.grad.numpy()
        expected["decoder.embedding.weight"] = dec_table.weight.grad.numpy()
        assert np.abs(expected["encoder.embedding.weight"][1:]).max() > 1e-5
    assert sorted(grads) == sorted(expected)
    for name in expected:
        assert_close(grads[name], expected[name], name)
