"""cbptt.Seq2Seq: gradients of both halves against finite differences (float64), the state
handoff at each sequence's own last step, the loss's reduction over the valid targets, the
update of both halves, save/load, and what it refuses. (Against torch:
test_seq2seq_torch.py; decoding: test_decoding.py.)"""
import numpy as np
import pytest

import cbptt

from helpers import CELLS

B, T, U, I, J, O, H = 3, 5, 4, 2, 3, 3, 4
SRC = np.array([5, 2, 3])
TGT = np.array([4, 1, 3])


def make(cell="lstm", layers=1, loss="mse", dtype=np.float64, seed=0, **kwargs):
    enc = cbptt.RNN(I, H, None, cell=cell, num_layers=layers, seed=seed, dtype=dtype)
    dec = cbptt.RNN(J, H, O, cell=cell, num_layers=layers, seed=seed + 1, dtype=dtype)
    return cbptt.Seq2Seq(enc, dec, loss=loss, **kwargs)


def data(loss, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed + 11)
    X = rng.standard_normal((B, T, I)).astype(dtype)
    Y_in = rng.standard_normal((B, U, J)).astype(dtype)
    Y_out = (rng.standard_normal((B, U, O)).astype(dtype) if loss == "mse" else
             rng.integers(0, O, (B, U)))
    return X, Y_in, Y_out


def flat(s2s, grads):
    return np.concatenate([grads[name].ravel() for name, _, _ in s2s.model._layout])


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_of_both_halves_are_finite_differences(cell, layers, loss):
    s2s = make(cell, layers, loss)
    X, Y_in, Y_out = data(loss)
    _, grads = s2s.loss_and_grad(X, Y_in, Y_out, SRC, TGT)
    assert sorted(grads) == sorted(["encoder." + k for k in s2s.encoder.state_dict()] +
                                   ["decoder." + k for k in s2s.decoder.state_dict()])
    got = flat(s2s, grads)
    start = s2s.params.copy()

    def loss_at(params):
        s2s.params[:] = params
        return s2s.loss_and_grad(X, Y_in, Y_out, SRC, TGT)[0]

    numeric = np.empty_like(got)
    for i in range(got.size):
        p = start.copy()
        p[i] += 1e-6
        up = loss_at(p)
        p[i] -= 2e-6
        numeric[i] = (up - loss_at(p)) / 2e-6
    s2s.params[:] = start
    assert np.abs(got[:s2s.model.split]).max() > 1e-3      # the encoder learns too
    np.testing.assert_allclose(got, numeric, atol=3e-9, rtol=1e-6)


def reference_loss(s2s, X, Y_in, Y_out, src, tgt):
    """The documented loss, from the models' own predict: each sequence encoded alone to its
    length, the decoder run from that state, the mean over the valid outputs."""
    total, terms = 0.0, 0
    for b in range(B):
        h, c = encode_alone(s2s, X[b:b + 1, :src[b]])
        out = s2s.decoder.predict(Y_in[b:b + 1, :tgt[b]], h0=h, c0=c)[0]
        if s2s.loss == "mse":
            total += ((out - Y_out[b, :tgt[b]]) ** 2).sum()
            terms += tgt[b] * O
        else:
            z = out - out.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            total -= logp[np.arange(tgt[b]), Y_out[b, :tgt[b]]].sum()
            terms += tgt[b]
    return total / terms


def encode_alone(s2s, X):
    """The encoder's final state of one sequence, through a headed twin's predict."""
    enc = s2s.encoder
    twin = cbptt.RNN(enc.input_size, H, 1, cell=enc.cell, num_layers=enc.num_layers,
                     dtype=enc.dtype)
    state = twin.state_dict()
    state.update(enc.state_dict())
    twin.load_state_dict(state)
    _, final = twin.predict(X, return_state=True)
    return final if isinstance(final, tuple) else (final, None)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_loss_is_the_mean_over_valid_outputs_from_each_sequences_own_state(cell, loss):
    s2s = make(cell, 2, loss)
    X, Y_in, Y_out = data(loss)
    got = s2s.loss_and_grad(X, Y_in, Y_out, SRC, TGT)[0]
    assert got == pytest.approx(reference_loss(s2s, X, Y_in, Y_out, SRC, TGT), rel=1e-12)
    h, c = s2s.encode(X, SRC) if cell == "lstm" else (s2s.encode(X, SRC), None)
    for b in range(B):
        h_alone, c_alone = encode_alone(s2s, X[b:b + 1, :SRC[b]])
        np.testing.assert_allclose(h[:, b], h_alone[:, 0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_after_the_lengths_changes_nothing(cell):
    s2s = make(cell, 2, "cross_entropy")
    X, Y_in, Y_out = data("cross_entropy")
    loss, grads = s2s.loss_and_grad(X, Y_in, Y_out, SRC, TGT)
    X2, Y_in2, Y_out2 = X.copy(), Y_in.copy(), Y_out.copy()
    for b in range(B):
        X2[b, SRC[b]:] = 7.0
        Y_in2[b, TGT[b]:] = -3.0
        Y_out2[b, TGT[b]:] = 0
    loss2, grads2 = s2s.loss_and_grad(X2, Y_in2, Y_out2, SRC, TGT)
    assert loss2 == loss
    for name in grads:
        np.testing.assert_array_equal(grads2[name], grads[name])


def test_full_lengths_are_no_lengths():
    s2s = make("gru", 1, "mse")
    X, Y_in, Y_out = data("mse")
    loss, grads = s2s.loss_and_grad(X, Y_in, Y_out)
    loss2, grads2 = s2s.loss_and_grad(X, Y_in, Y_out, np.full(B, T), np.full(B, U))
    assert loss2 == loss
    np.testing.assert_array_equal(flat(s2s, grads2), flat(s2s, grads))
    assert s2s.last_calls == 3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_step_updates_both_halves_by_the_clipped_joint_gradient(dtype):
    s2s = make("lstm", 2, "cross_entropy", dtype, optimizer=cbptt.SGD(lr=0.5), clip_norm=0.1)
    X, Y_in, Y_out = data("cross_entropy", dtype=dtype)
    before = s2s.params.copy()
    enc_before, dec_before = s2s.encoder.params.copy(), s2s.decoder.params.copy()
    loss, grads = s2s.loss_and_grad(X, Y_in, Y_out, SRC, TGT)
    g = flat(s2s, grads).astype(np.float64)
    norm = np.sqrt((g ** 2).sum())
    assert norm > 0.1
    assert s2s.step(X, Y_in, Y_out, SRC, TGT) == loss
    expected = before - 0.5 * g * (0.1 / (norm + 1e-6))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(s2s.params, expected, rtol=0, atol=tol)
    # the models' own buffers are the two slices
    assert not np.array_equal(s2s.encoder.params, enc_before)
    assert not np.array_equal(s2s.decoder.params, dec_before)
    np.testing.assert_array_equal(s2s.encoder.params, s2s.params[:s2s.model.split])
    np.testing.assert_array_equal(s2s.decoder.state_dict()["head.bias"],
                                  s2s.params[-O:])


def test_teacher_forced_prediction_is_the_decoders_from_the_encoders_state():
    s2s = make("lstm", 2, "mse")
    X, Y_in, _ = data("mse")
    out = s2s.predict(X, Y_in, SRC)
    h, c = s2s.encode(X, SRC)
    np.testing.assert_array_equal(out, s2s.decoder.predict(Y_in, h0=h, c0=c))


def test_save_and_load_round_trip(tmp_path):
    s2s = make("gru", 2, "cross_entropy", np.float32,
               optimizer=cbptt.Adam(lr=3e-3, betas=(0.8, 0.9)), clip_norm=2.0)
    path = tmp_path / "s2s"
    s2s.save(path)
    back = cbptt.load(path)
    assert isinstance(back, cbptt.Seq2Seq)
    assert back.encoder.config() == s2s.encoder.config()
    assert back.decoder.config() == s2s.decoder.config()
    assert (back.loss, back.clip_norm, back.optimizer.lr, back.optimizer.betas) == \
        ("cross_entropy", 2.0, 3e-3, (0.8, 0.9))
    np.testing.assert_array_equal(back.params, s2s.params)
    X, Y_in, Y_out = data("cross_entropy", dtype=np.float32)
    assert back.loss_and_grad(X, Y_in, Y_out)[0] == s2s.loss_and_grad(X, Y_in, Y_out)[0]
    with pytest.raises(ValueError, match="not a cbptt model file"):
        (tmp_path / "bad.npz").write_bytes(b"junk")
        cbptt.load(tmp_path / "bad.npz")


def test_what_it_refuses_leaves_the_weights_untouched():
    enc = cbptt.RNN(I, H, None, cell="lstm", seed=0)
    dec = cbptt.RNN(J, H, O, cell="lstm", seed=1)
    with pytest.raises(ValueError, match="share cell"):
        cbptt.Seq2Seq(enc, cbptt.RNN(J, H, O, cell="gru"))
    with pytest.raises(ValueError, match="share hidden_size"):
        cbptt.Seq2Seq(enc, cbptt.RNN(J, H + 1, O, cell="lstm"))
    with pytest.raises(ValueError, match="share num_layers"):
        cbptt.Seq2Seq(enc, cbptt.RNN(J, H, O, cell="lstm", num_layers=2))
    with pytest.raises(ValueError, match="share dtype"):
        cbptt.Seq2Seq(enc, cbptt.RNN(J, H, O, cell="lstm", dtype=np.float32))
    with pytest.raises(ValueError, match="has no head"):
        cbptt.Seq2Seq(enc, cbptt.RNN(J, H, None, cell="lstm"))
    with pytest.raises(ValueError, match="has a head"):
        cbptt.Seq2Seq(cbptt.RNN(I, H, 2, cell="lstm"), dec)
    with pytest.raises(TypeError, match="encoder must be a cbptt.RNN"):
        cbptt.Seq2Seq("lstm", dec)
    s2s = cbptt.Seq2Seq(enc, dec, loss="cross_entropy")
    X, Y_in, Y_out = data("cross_entropy")
    before = s2s.params.copy()
    bad = [
        (dict(X=X[:2]), ValueError, "batch size of X"),
        (dict(Y_out=Y_out[:2]), ValueError, "Y_out"),
        (dict(Y_in=Y_in[..., :2]), ValueError, "Y_in"),
        (dict(src_lengths=[5, 0, 3]), ValueError, r"src_lengths must be in \[1, 5\]"),
        (dict(src_lengths=[5, 6, 3]), ValueError, "src_lengths"),
        (dict(src_lengths=[5, 3]), ValueError, r"src_lengths must have shape \(3,\)"),
        (dict(tgt_lengths=[4, 5, 1]), ValueError, r"tgt_lengths must be in \[1, 4\]"),
        (dict(tgt_lengths=[1.5, 2, 1]), TypeError, "tgt_lengths must hold integers"),
        (dict(Y_out=np.full((B, U), O)), ValueError, "Y_out"),
    ]
    for change, kind, message in bad:
        args = dict(X=X, Y_in=Y_in, Y_out=Y_out, src_lengths=None, tgt_lengths=None)
        args.update(change)
        with pytest.raises(kind, match=message):
            s2s.step(**args)
    np.testing.assert_array_equal(s2s.params, before)
    assert s2s.optimizer.steps == 0
