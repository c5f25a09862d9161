"""trainer.fit: bit for bit a loop of trainer.step (in order, the last partial batch
included; shuffled, the same loop over the seed's permutation), the epoch's loss as the
size-weighted mean of its steps', val_loss as the trainer's own loss on the validation data,
metrics against NumPy, bad input refused before any update, Ctrl-C, a memmapped X read a batch
at a time, and the progress display."""
import os
import signal
import sys
import tracemalloc
import types

import numpy as np
import pytest

import cbptt
from cbptt.callbacks import LambdaCallback

DTYPES = ["float32", "float64"]


# -- the trainers and their data ------------------------------------------------------------
def many_to_many(dtype, seed=0, count=23, loss="mse", lr=0.05):
    rng = np.random.default_rng(seed)
    out = 3 if loss == "mse" else 4
    model = cbptt.RNN(2, 5, out, cell="gru", dtype=dtype, seed=seed)
    trainer = cbptt.ManyToMany(model, loss=loss, optimizer=cbptt.Adam(lr=lr))
    X = rng.standard_normal((count, 6, 2))
    Y = (rng.standard_normal((count, 6, 3)) if loss == "mse" else
         rng.integers(0, 4, (count, 6)))
    mask = (rng.random((count, 6)) < 0.8).astype(float)
    return trainer, (X, Y), {"mask": mask}


def many_to_one(dtype, seed=0, count=23, loss="cross_entropy", lr=0.05):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(2, 5, 4 if loss == "cross_entropy" else 2, cell="lstm", dtype=dtype,
                      seed=seed)
    trainer = cbptt.ManyToOne(model, loss=loss, optimizer=cbptt.SGD(lr=lr, momentum=0.5))
    X = rng.standard_normal((count, 7, 2))
    y = rng.integers(0, 4, count) if loss == "cross_entropy" else rng.standard_normal((count, 2))
    return trainer, (X, y), {"lengths": rng.integers(1, 8, count)}


def seq2seq(dtype, seed=0, count=23, lr=0.05):
    rng = np.random.default_rng(seed)
    encoder = cbptt.RNN(3, 5, None, cell="lstm", dtype=dtype, seed=seed)
    decoder = cbptt.RNN(4, 5, 4, cell="lstm", dtype=dtype, seed=seed + 1)
    trainer = cbptt.Seq2Seq(encoder, decoder, loss="cross_entropy",
                            optimizer=cbptt.Adam(lr=lr), clip_norm=1.0)
    X = rng.standard_normal((count, 6, 3))
    Y_in, Y_out = rng.integers(0, 4, (count, 5)), rng.integers(0, 4, (count, 5))
    return trainer, (X, Y_in, Y_out), {"src_lengths": rng.integers(1, 7, count),
                                       "tgt_lengths": rng.integers(1, 6, count)}


def truncated(dtype, seed=0, streams=3, steps=37, lr=0.05):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(2, 5, 2, cell="tanh", dtype=dtype, seed=seed)
    trainer = cbptt.Truncated(model, k1=4, k2=6, optimizer=cbptt.Adam(lr=lr))
    X = rng.standard_normal((streams, steps, 2))
    Y = rng.standard_normal((streams, steps, 2))
    return trainer, (X, Y), {"mask": (rng.random((streams, steps)) < 0.9).astype(float)}


def truncated_many_to_one(dtype, seed=0, count=23, lr=0.05):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(2, 5, 2, cell="gru", dtype=dtype, seed=seed)
    trainer = cbptt.Truncated(model, k1=3, many_to_one=True, optimizer=cbptt.SGD(lr=lr))
    return trainer, (rng.standard_normal((count, 8, 2)), rng.standard_normal((count, 2))), {}


SEQUENCE_KINDS = {"many_to_many": many_to_many, "many_to_one": many_to_one,
                  "seq2seq": seq2seq, "truncated_many_to_one": truncated_many_to_one}


def rows(arrays, named, index):
    """The batch of sequences ``index`` (a slice or indices) as a hand loop takes it."""
    return [a[index] for a in arrays], {k: v[index] for k, v in named.items()}


def recorder():
    """A callback keeping every step's loss and size, and each epoch's logs."""
    steps, epochs = [], []
    callback = LambdaCallback(on_batch_end=lambda b, logs: steps.append(dict(logs)),
                              on_epoch_end=lambda e, logs: epochs.append(dict(logs)))
    return callback, steps, epochs


# -- fit is the hand loop -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(SEQUENCE_KINDS))
def test_in_order_fit_is_the_hand_loop_bit_for_bit(kind, dtype):
    make = SEQUENCE_KINDS[kind]
    trainer, arrays, named = make(dtype)
    callback, steps, _ = recorder()
    history = trainer.fit(*arrays, **named, epochs=3, batch_size=5, shuffle=False,
                          callbacks=[callback], progress=False)
    hand, _, _ = make(dtype)
    losses = []
    for epoch in range(3):
        if hasattr(hand, "reset_state"):
            hand.reset_state()
        for start in range(0, 23, 5):        # 5 batches, the last of 3
            args, kwargs = rows(arrays, named, slice(start, start + 5))
            losses.append(hand.step(*args, **kwargs))
    np.testing.assert_array_equal(trainer.model.params, hand.model.params)
    assert [s["loss"] for s in steps] == losses
    assert [s["size"] for s in steps] == [5, 5, 5, 5, 3] * 3
    for epoch in range(3):
        mine = losses[5 * epoch:5 * epoch + 5]
        assert history.history["loss"][epoch] == pytest.approx(
            np.dot(mine, [5, 5, 5, 5, 3]) / 23, rel=1e-15)
    assert history.epoch == [0, 1, 2]


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_fit_is_the_hand_loop_over_stream_blocks(dtype):
    trainer, (X, Y), named = truncated(dtype)
    history = trainer.fit(X, Y, **named, epochs=2, batch_size=8, progress=False)
    hand, _, _ = truncated(dtype)
    losses = []
    for epoch in range(2):
        hand.reset_state()           # every epoch starts the streams again
        for start in range(0, 37, 8):        # blocks of 8 steps, the last of 5
            block = slice(start, start + 8)
            losses.append(hand.step(X[:, block], Y[:, block], named["mask"][:, block]))
    np.testing.assert_array_equal(trainer.model.params, hand.model.params)
    sizes = [8, 8, 8, 8, 5]
    assert history.history["loss"] == pytest.approx(
        [np.dot(losses[5 * e:5 * e + 5], sizes) / 37 for e in range(2)], rel=1e-15)
    assert trainer.position == 37


def test_truncated_fit_takes_one_stream():
    trainer, (X, Y), _ = truncated("float64", streams=1)
    one, _, _ = truncated("float64", streams=1)
    trainer.fit(X[0], Y[0], epochs=2, batch_size=12, progress=False)
    one.fit(X, Y, epochs=2, batch_size=12, progress=False)
    np.testing.assert_array_equal(trainer.model.params, one.model.params)


@pytest.mark.parametrize("kind", ["many_to_many", "seq2seq"])
def test_shuffled_fit_is_the_hand_loop_over_the_seeds_permutation(kind):
    make = SEQUENCE_KINDS[kind]
    trainer, arrays, named = make("float64")
    trainer.fit(*arrays, **named, epochs=2, batch_size=5, seed=7, progress=False)
    hand, _, _ = make("float64")
    for epoch in range(2):
        order = np.random.default_rng([7, epoch]).permutation(23)
        for start in range(0, 23, 5):
            args, kwargs = rows(arrays, named, order[start:start + 5])
            hand.step(*args, **kwargs)
    np.testing.assert_array_equal(trainer.model.params, hand.model.params)
    again, _, _ = make("float64")
    again.fit(*arrays, **named, epochs=2, batch_size=5, seed=7, progress=False)
    np.testing.assert_array_equal(again.model.params, trainer.model.params)
    other, _, _ = make("float64")
    other.fit(*arrays, **named, epochs=2, batch_size=5, seed=8, progress=False)
    assert not np.array_equal(other.model.params, trainer.model.params)


def test_token_ids_and_class_ids_are_gathered_as_integers():
    rng = np.random.default_rng(1)
    model = cbptt.RNN(6, 5, 6, dtype="float32", seed=1)
    trainer = cbptt.ManyToMany(model, loss="cross_entropy", optimizer=cbptt.SGD(lr=0.1))
    ids = rng.integers(0, 6, (20, 9)).astype(np.int32)
    X, Y = ids[:, :-1], ids[:, 1:]
    trainer.fit(X, Y, epochs=2, batch_size=6, seed=0, progress=False)
    hand = cbptt.ManyToMany(cbptt.RNN(6, 5, 6, dtype="float32", seed=1), loss="cross_entropy",
                            optimizer=cbptt.SGD(lr=0.1))
    for epoch in range(2):
        order = np.random.default_rng([0, epoch]).permutation(20)
        for start in range(0, 20, 6):
            hand.step(X[order[start:start + 6]], Y[order[start:start + 6]])
    np.testing.assert_array_equal(trainer.model.params, hand.model.params)



def test_an_embedding_and_a_bidirectional_model():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 7, (15, 6))
    labels = rng.integers(0, 3, (15, 6))
    lengths = rng.integers(2, 7, 15)

    def make():
        embedded = cbptt.RNN(4, 5, 3, vocab_size=7, dtype="float64", seed=2)
        both = cbptt.RNN(2, 4, 3, bidirectional=True, dtype="float64", seed=2)
        return (cbptt.ManyToMany(embedded, loss="cross_entropy"),
                cbptt.ManyToMany(both, loss="cross_entropy"))
    embedded, both = make()
    X = rng.standard_normal((15, 6, 2))
    h1 = embedded.fit(ids, labels, epochs=2, batch_size=4, shuffle=False, progress=False,
                      validation=(ids[:5], labels[:5]))
    h2 = both.fit(X, labels, lengths=lengths, epochs=2, batch_size=4, shuffle=False,
                  progress=False, validation=(X[:5], labels[:5], {"lengths": lengths[:5]}))
    hand_embedded, hand_both = make()
    for epoch in range(2):
        for start in range(0, 15, 4):
            part = slice(start, start + 4)
            hand_embedded.step(ids[part], labels[part])
            hand_both.step(X[part], labels[part], lengths=lengths[part])
    np.testing.assert_array_equal(embedded.model.params, hand_embedded.model.params)
    np.testing.assert_array_equal(both.model.params, hand_both.model.params)
    assert h1.history["val_loss"][-1] == pytest.approx(
        embedded.loss_and_grad(ids[:5], labels[:5])[0], rel=1e-12)
    assert h2.history["val_loss"][-1] == pytest.approx(
        both.loss_and_grad(X[:5], labels[:5], lengths=lengths[:5])[0], rel=1e-12)
    with pytest.raises(ValueError, match="token ids of the embedding"):
        embedded.fit(X, labels, progress=False)

# -- validation and metrics -----------------------------------------------------------------
def validation_set(make, dtype, count=7):
    _, arrays, named = make(dtype, seed=5, count=count)
    return arrays, named


@pytest.mark.parametrize("kind", ["many_to_many", "many_to_one", "seq2seq"])
def test_val_loss_is_the_trainers_loss_after_the_epoch(kind):
    make = SEQUENCE_KINDS[kind]
    trainer, arrays, named = make("float64")
    val_arrays, val_named = validation_set(make, "float64")
    expected = []
    check = LambdaCallback(on_epoch_end=lambda e, logs: expected.append(
        trainer.loss_and_grad(*val_arrays, **val_named)[0]))
    history = trainer.fit(*arrays, **named, epochs=3, batch_size=5, seed=0,
                          validation=tuple(val_arrays) + (val_named,),
                          validation_batch_size=3, callbacks=[check], progress=False)
    np.testing.assert_allclose(history.history["val_loss"], expected, rtol=1e-12)


def test_truncated_val_loss_runs_the_held_out_streams_from_zero():
    trainer, (X, Y), named = truncated("float64")
    _, (Xv, Yv), val_named = truncated("float64", seed=3, streams=2, steps=29)
    whole = cbptt.ManyToMany(trainer.model)      # the whole held-out stream in one call
    expected = []
    check = LambdaCallback(on_epoch_end=lambda e, logs: expected.append(
        whole.loss_and_grad(Xv, Yv, mask=val_named["mask"])[0]))
    history = trainer.fit(X, Y, **named, epochs=2, batch_size=8,
                          validation=(Xv, Yv, val_named), validation_batch_size=12,
                          callbacks=[check], progress=False)
    np.testing.assert_allclose(history.history["val_loss"], expected, rtol=1e-12)
    mse = np.sqrt(expected[-1])
    assert history.history["val_rmse"][-1] == pytest.approx(mse, rel=1e-12)


def test_accuracy_against_numpy():
    trainer, arrays, named = many_to_many("float64", loss="cross_entropy")
    _, (Xv, Yv), val_named = many_to_many("float64", seed=4, count=9, loss="cross_entropy")
    history = trainer.fit(*arrays, **named, epochs=2, batch_size=5, seed=0,
                          validation=(Xv, Yv, val_named), validation_batch_size=4,
                          progress=False)
    predicted = trainer.model.predict(Xv).argmax(axis=-1)
    weight = val_named["mask"]
    accuracy = ((predicted == Yv) * weight).sum() / weight.sum()
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy, rel=1e-14)
    out = trainer.model.predict(Xv)
    logp = out - np.log(np.exp(out).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(logp, Yv[..., None], -1)[..., 0]
    assert history.history["val_loss"][-1] == pytest.approx(
        (nll * weight).sum() / weight.sum(), rel=1e-12)
    assert sorted(history.history) == ["loss", "lr", "val_accuracy", "val_loss"]


def test_mae_and_rmse_against_numpy():
    trainer, arrays, named = many_to_one("float64", loss="mse")
    _, (Xv, yv), val_named = many_to_one("float64", seed=4, count=9, loss="mse")
    history = trainer.fit(*arrays, **named, epochs=2, batch_size=5, seed=0,
                          validation=(Xv, yv, val_named), progress=False)
    out = trainer.model.predict(Xv)[np.arange(9), val_named["lengths"] - 1]
    error = out - yv
    assert history.history["val_mae"][-1] == pytest.approx(np.abs(error).mean(), rel=1e-13)
    assert history.history["val_rmse"][-1] == pytest.approx(np.sqrt((error ** 2).mean()),
                                                             rel=1e-13)
    only = trainer.fit(*arrays, **named, epochs=1, validation=(Xv, yv, val_named),
                       metrics=["rmse"], progress=False)
    assert sorted(only.history) == ["loss", "lr", "val_loss", "val_rmse"]


def test_validation_split_holds_out_the_end():
    trainer, arrays, named = many_to_many("float64")
    split = trainer.fit(*arrays, **named, epochs=2, batch_size=5, seed=1,
                        validation_split=0.3, progress=False)
    other, _, _ = many_to_many("float64")
    cut = 23 - round(23 * 0.3)
    head, head_named = rows(arrays, named, slice(0, cut))
    tail, tail_named = rows(arrays, named, slice(cut, 23))
    given = other.fit(*head, **head_named, epochs=2, batch_size=5, seed=1,
                      validation=tuple(tail) + (tail_named,), progress=False)
    assert split.history == given.history
    np.testing.assert_array_equal(trainer.model.params, other.model.params)


# -- bad input ------------------------------------------------------------------------------
def bad_calls():
    """(make, arguments changer, error, message) of calls fit must refuse up front."""
    def val(arrays, named, replace=None):
        return dict(validation=tuple(arrays if replace is None else replace) + (named,))
    return [
        (many_to_many, lambda a, n: dict(validation=(a[0][:4], a[1][:4, :, :2])),
         ValueError, r"validation: Y must have shape \(4, 6, 3\)"),
        (many_to_many, lambda a, n: dict(validation=(a[0][:4, :, :1], a[1][:4])),
         ValueError, r"validation: X must have shape \(4, 6, 2\)"),
        (many_to_many, lambda a, n: dict(validation=(a[0],)), ValueError,
         r"validation must be \(X, Y\)"),
        (many_to_many, lambda a, n: dict(validation=a[0]), TypeError, "validation must be"),
        (many_to_many, lambda a, n: val(a, {"mask": -n["mask"]}), ValueError,
         "validation: mask must hold non-negative"),
        (many_to_many, lambda a, n: dict(batch_size=0), ValueError, "batch_size"),
        (many_to_many, lambda a, n: dict(epochs=0), ValueError, "epochs"),
        (many_to_many, lambda a, n: dict(epochs=2.0), TypeError, "epochs"),
        (many_to_many, lambda a, n: dict(initial_epoch=4, epochs=3), ValueError,
         "initial_epoch"),
        (many_to_many, lambda a, n: dict(callbacks=[cbptt.callbacks.EarlyStopping("val_los")],
                                         validation_split=0.2),
         ValueError, "unknown monitor 'val_los'"),
        (many_to_many, lambda a, n: dict(callbacks=[cbptt.callbacks.EarlyStopping()]),
         ValueError, "needs? validation|val_ names need validation"),
        (many_to_many, lambda a, n: dict(callbacks=[print]), TypeError, "callbacks"),
        (many_to_many, lambda a, n: dict(metrics=["accuracy"], validation_split=0.2),
         ValueError, "not a metric of the mse loss"),
        (many_to_many, lambda a, n: dict(metrics=["f1"]), ValueError, "unknown metric"),
        (many_to_many, lambda a, n: dict(lengths=np.full(23, 6)), ValueError,
         "does not take lengths"),
        (many_to_many, lambda a, n: dict(validation_split=0.2,
                                         validation=(a[0][:3], a[1][:3])),
         ValueError, "not both"),
        (many_to_many, lambda a, n: dict(validation_split=1.0), ValueError,
         "validation_split"),
        (many_to_many, lambda a, n: dict(validation_split=0.01), ValueError,
         "holds out 0"),
        (many_to_many, lambda a, n: dict(seed=-1), ValueError, "seed"),
        (many_to_many, lambda a, n: dict(progress="yes"), ValueError, "progress"),
        (many_to_one, lambda a, n: dict(mask=np.ones((23, 7))), ValueError,
         "does not take mask"),
        (many_to_one, lambda a, n: dict(lengths=np.full(23, 8)), ValueError,
         r"lengths: lengths must be in \[1, 8\)"),
        (many_to_one, lambda a, n: val(a, n, replace=(a[0], np.full(23, 4))), ValueError,
         r"validation: y: class ids must be in \[0, 4\)"),
        (seq2seq, lambda a, n: val(a, n, replace=(a[0], a[1][:20], a[2])), ValueError,
         "validation: Y_in must have shape"),
        (seq2seq, lambda a, n: dict(tgt_lengths=np.full(22, 2)), ValueError,
         r"tgt_lengths must have shape \(23,\)"),
        (truncated, lambda a, n: dict(shuffle=True), ValueError, "in order"),
        (truncated, lambda a, n: dict(batch_size=6), ValueError, "multiple of k1=4"),
        (truncated, lambda a, n: dict(validation=(a[0][:, :, :1], a[1])), ValueError,
         r"validation: X must have shape \(3, 37, 2\)"),
    ]


@pytest.mark.parametrize("case", range(len(bad_calls())))
def test_bad_input_is_refused_before_any_update(case):
    make, change, error, match = bad_calls()[case]
    trainer, arrays, named = make("float64")
    before = trainer.model.params.copy()
    kwargs = dict(named, epochs=3, progress=False)
    kwargs.update(change(arrays, named))
    with pytest.raises(error, match=match):
        trainer.fit(*arrays, **kwargs)
    np.testing.assert_array_equal(trainer.model.params, before)
    assert trainer.optimizer.steps == 0


def test_a_bad_value_in_the_last_batch_is_found_before_the_first_update():
    trainer, (X, y), named = many_to_one("float64")
    y = y.copy()
    y[-1] = 9
    with pytest.raises(ValueError, match=r"y: class ids must be in \[0, 4\)"):
        trainer.fit(X, y, **named, progress=False)
    assert trainer.optimizer.steps == 0


# -- Ctrl-C ---------------------------------------------------------------------------------
def test_ctrl_c_ends_the_current_step_and_returns_the_history():
    trainer, arrays, named = many_to_many("float64")
    ended = []

    def press(batch, logs):
        if len(ended) == 0 and trainer.optimizer.steps == 7:
            os.kill(os.getpid(), signal.SIGINT)

    callback = LambdaCallback(on_batch_end=press,
                              on_train_end=lambda logs: ended.append(True))
    history = trainer.fit(*arrays, **named, epochs=4, batch_size=5, callbacks=[callback],
                          progress=False)
    assert history.interrupted and ended == [True]
    assert trainer.optimizer.steps == 7         # 5 steps of epoch 0, 2 of epoch 1
    assert history.epoch == [0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- a memmapped X --------------------------------------------------------------------------
def test_a_memmapped_x_is_read_a_batch_at_a_time(tmp_path):
    rng = np.random.default_rng(2)
    count, steps, inputs = 2000, 50, 10          # X: 8 MB of float64
    path = tmp_path / "X.dat"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64,
                                  shape=(count, steps, inputs))
    X[:] = rng.standard_normal(X.shape)
    X.flush()
    X = np.load(path, mmap_mode="r")
    y = rng.integers(0, 3, count)

    def make():
        return cbptt.ManyToOne(cbptt.RNN(inputs, 4, 3, dtype="float32", seed=0),
                               loss="cross_entropy")
    trainer = make()
    held = []           # the bytes NumPy and Python hold at each epoch's end
    watch = LambdaCallback(on_epoch_end=lambda e, logs: held.append(
        tracemalloc.get_traced_memory()[0]))
    tracemalloc.start()
    try:
        trainer.fit(X, y, epochs=5, batch_size=100, seed=0, validation_split=0.1,
                    callbacks=[watch], progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 4, f"peak {peak} bytes for an X of {X.nbytes}"
    assert max(held[1:]) - min(held[1:]) < 16384, held      # flat across epochs
    in_memory = make()
    in_memory.fit(np.array(X), y, epochs=5, batch_size=100, seed=0, validation_split=0.1,
                  progress=False)
    np.testing.assert_array_equal(trainer.model.params, in_memory.model.params)


# -- progress -------------------------------------------------------------------------------
def test_progress_lines(capsys):
    trainer, arrays, named = many_to_many("float64")
    trainer.fit(*arrays, **named, epochs=2, progress=False, validation_split=0.2)
    assert capsys.readouterr() == ("", "")
    trainer.fit(*arrays, **named, epochs=2, validation_split=0.2)    # None: not a terminal
    assert capsys.readouterr() == ("", "")
    history = trainer.fit(*arrays, **named, epochs=2, progress=True, validation_split=0.2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2 - ")
    assert f"val_loss {history.history['val_loss'][1]:.4f}" in lines[1]
    assert " - val_rmse " in lines[1] and " - lr 0.05" in lines[1]


def test_progress_bar_uses_tqdm_auto_when_interactive(monkeypatch, capsys):
    made = []

    class FakeBar:
        def __init__(self, total, desc, **kwargs):
            self.total, self.desc, self.updates = total, desc, 0
            made.append(self)

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

        def update(self, n):
            self.updates += n

        def close(self):
            self.closed = True

    module = types.ModuleType("tqdm.auto")
    module.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", module)
    monkeypatch.setattr("cbptt.fit_progress.interactive", lambda stream=None: True)
    trainer, arrays, named = many_to_many("float64")
    trainer.fit(*arrays, **named, epochs=2, batch_size=5)
    assert [(bar.desc, bar.total, bar.updates, bar.closed) for bar in made] == [
        ("epoch 1/2", 5, 5, True), ("epoch 2/2", 5, 5, True)]
    assert made[0].postfix.startswith("loss ")
    assert capsys.readouterr().out.count("\n") == 2       # a summary line an epoch


def test_progress_line_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)      # import fails
    monkeypatch.setattr("cbptt.fit_progress.interactive", lambda stream=None: True)
    trainer, arrays, named = many_to_many("float64")
    trainer.fit(*arrays, **named, epochs=1, batch_size=5)
    captured = capsys.readouterr()
    assert "\repoch 1/1  step 5/5  loss " in captured.err
    assert captured.out.startswith("epoch 1/1 - ")
