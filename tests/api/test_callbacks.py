"""Callbacks of fit (cbptt.callbacks): the order of the calls, stopping, EarlyStopping's
patience and restored weights, ModelCheckpoint's files (and its training state: a fit resumed
from one follows the uninterrupted fit bit for bit), CSVLogger's rows."""
import csv
import os

import numpy as np
import pytest

import cbptt
from cbptt import callbacks, schedules


def trainer_and_data(dtype="float64", seed=0, count=20, lr=0.05):
    rng = np.random.default_rng(seed)
    model = cbptt.RNN(2, 5, 2, cell="lstm", dtype=dtype, seed=seed)
    trainer = cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=lr))
    X, Y = rng.standard_normal((count, 6, 2)), rng.standard_normal((count, 6, 2))
    return trainer, X, Y


class Scripted(callbacks.Callback):
    """Replaces the monitored value of each epoch's logs by a scripted one (the callbacks
    after it see it) and keeps the weights at each epoch's end."""

    def __init__(self, values, monitor="val_loss"):
        super().__init__()
        self.values, self.monitor, self.weights = values, monitor, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.monitor] = self.values[epoch]
        self.weights.append(self.trainer.model.params.copy())


def test_the_order_of_the_calls():
    trainer, X, Y = trainer_and_data()
    calls = []
    seen = callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append("begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch {epoch}"),
        on_batch_end=lambda batch, logs: calls.append(f"batch {batch} {logs['size']}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"end {epoch} {sorted(logs)}"),
        on_train_end=lambda logs: calls.append(f"done {sorted(logs)}"))
    trainer.fit(X, Y, epochs=2, batch_size=8, callbacks=[seen], validation_split=0.2,
                progress=False)
    logs = "['loss', 'lr', 'val_loss', 'val_mae', 'val_rmse']"
    assert calls == ["begin", "epoch 0", "batch 0 8", "batch 1 8", f"end 0 {logs}",
                     "epoch 1", "batch 0 8", "batch 1 8", f"end 1 {logs}", f"done {logs}"]
    with pytest.raises(TypeError, match="on_epoch_end must be callable"):
        callbacks.LambdaCallback(on_epoch_end=3)


def test_a_callback_sees_the_trainer_and_the_fits_params():
    trainer, X, Y = trainer_and_data()
    schedule = schedules.StepLR(1)

    class Look(callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = (self.trainer, dict(self.params))
    look = Look()
    trainer.fit(X, Y, epochs=2, batch_size=6, seed=4, callbacks=look, schedule=schedule,
                progress=False)
    assert look.seen[0] is trainer
    assert look.seen[1] == {"epochs": 2, "steps": 4, "batch_size": 6, "seed": 4,
                            "logs": ["loss", "lr"], "schedule": schedule}


def test_stop_training_in_on_batch_end_ends_the_epoch_there():
    trainer, X, Y = trainer_and_data()
    losses = []

    def stop(batch, logs):
        losses.append((logs["loss"], logs["size"]))
        if batch == 1:
            stopper.stop_training = True
    stopper = callbacks.LambdaCallback(on_batch_end=stop)
    history = trainer.fit(X, Y, epochs=5, batch_size=8, callbacks=[stopper], progress=False)
    assert history.epoch == [0] and history.stopped_early and trainer.optimizer.steps == 2
    assert history.history["loss"][0] == pytest.approx(
        (losses[0][0] * 8 + losses[1][0] * 8) / 16, rel=1e-15)


def test_early_stopping_stops_and_restores_the_best_weights():
    trainer, X, Y = trainer_and_data()
    script = Scripted([3.0, 2.0, 2.5, 1.5, 1.6, 1.7, 1.8, 1.9])
    early = callbacks.EarlyStopping(patience=2, restore_best=True)
    history = trainer.fit(X, Y, epochs=8, batch_size=8, validation_split=0.2,
                          callbacks=[script, early], progress=False)
    assert history.epoch == [0, 1, 2, 3, 4, 5] and history.stopped_early
    assert (early.stopped_epoch, early.best_epoch, early.best) == (5, 3, 1.5)
    np.testing.assert_array_equal(trainer.model.params, script.weights[3])
    assert not np.array_equal(script.weights[5], script.weights[3])


def test_early_stopping_min_delta_and_max_mode():
    trainer, X, Y = trainer_and_data()
    # improvements smaller than min_delta do not count: stop after epoch 2
    early = callbacks.EarlyStopping(patience=2, min_delta=0.1)
    history = trainer.fit(X, Y, epochs=6, validation_split=0.2, progress=False,
                          callbacks=[Scripted([1.0, 0.95, 0.91, 0.5, 0.4, 0.3]), early])
    assert history.epoch == [0, 1, 2] and early.stopped_epoch == 2
    # an accuracy is better higher; without restore_best the last weights stay
    early = callbacks.EarlyStopping("val_accuracy", patience=0)
    script = Scripted([0.5, 0.6, 0.6, 0.7], monitor="val_accuracy")
    model = cbptt.RNN(2, 5, 3, seed=1, dtype="float64")
    classes = cbptt.ManyToMany(model, loss="cross_entropy")
    labels = np.random.default_rng(0).integers(0, 3, (20, 6))
    history = classes.fit(X, labels, epochs=4, validation_split=0.2, progress=False,
                          callbacks=[script, early])
    assert history.epoch == [0, 1, 2] and early.best_epoch == 1
    np.testing.assert_array_equal(classes.model.params, script.weights[2])


def test_early_stopping_on_the_real_val_loss_restores_its_minimum():
    trainer, X, Y = trainer_and_data(lr=0.3)     # a rate high enough to bounce
    rng = np.random.default_rng(9)
    Xv, Yv = rng.standard_normal((6, 6, 2)), rng.standard_normal((6, 6, 2))
    early = callbacks.EarlyStopping(patience=3, restore_best=True)
    history = trainer.fit(X, Y, epochs=12, batch_size=4, seed=1, validation=(Xv, Yv),
                          callbacks=[early], progress=False)
    best = int(np.argmin(history.history["val_loss"]))
    assert early.best_epoch == history.epoch[best]
    assert trainer.loss_and_grad(Xv, Yv)[0] == pytest.approx(
        history.history["val_loss"][best], rel=1e-12)


def test_model_checkpoint_files(tmp_path):
    trainer, X, Y = trainer_and_data()
    script = Scripted([2.0, 1.0, 1.5, 0.5])
    every = callbacks.ModelCheckpoint(tmp_path / "m-{epoch:02d}")
    best = callbacks.ModelCheckpoint(tmp_path / "best-{val_loss:.1f}.npz", save_best_only=True)
    trainer.fit(X, Y, epochs=4, validation_split=0.2, callbacks=[script, every, best],
                progress=False)
    assert sorted(os.listdir(tmp_path)) == ["best-0.5.npz", "best-1.0.npz", "best-2.0.npz",
                                            "m-01.npz", "m-02.npz", "m-03.npz", "m-04.npz"]
    for epoch in range(4):
        saved = cbptt.load(tmp_path / f"m-{epoch + 1:02d}.npz")
        np.testing.assert_array_equal(saved.params, script.weights[epoch])
    np.testing.assert_array_equal(cbptt.load(tmp_path / "best-1.0.npz").params,
                                  script.weights[1])
    assert best.last_path == os.fspath(tmp_path / "best-0.5.npz")


def test_model_checkpoint_of_a_seq2seq(tmp_path):
    rng = np.random.default_rng(0)
    trainer = cbptt.Seq2Seq(cbptt.RNN(2, 4, None, seed=0), cbptt.RNN(3, 4, 3, seed=1),
                            loss="cross_entropy")
    X, Y_in, Y_out = (rng.standard_normal((10, 5, 2)), rng.integers(0, 3, (10, 4)),
                      rng.integers(0, 3, (10, 4)))
    trainer.fit(X, Y_in, Y_out, epochs=2, progress=False,
                callbacks=[callbacks.ModelCheckpoint(tmp_path / "s2s.npz")])
    saved = cbptt.load(tmp_path / "s2s.npz")
    assert isinstance(saved, cbptt.Seq2Seq)
    np.testing.assert_array_equal(saved.params, trainer.params)


# -- resuming from a checkpoint's training state ----------------------------------------------
def make_many_to_many(seed):
    model = cbptt.RNN(2, 5, 2, cell="gru", num_layers=2, dtype="float64", seed=seed,
                      dropout=0.2, recurrent_dropout=0.1)
    return cbptt.ManyToMany(model, optimizer=cbptt.Adam(lr=0.02), clip_norm=0.5, seed=seed)


def make_seq2seq(seed):
    return cbptt.Seq2Seq(cbptt.RNN(2, 4, None, cell="lstm", dtype="float64", seed=seed),
                         cbptt.RNN(3, 4, 3, cell="lstm", dtype="float64", seed=seed + 1),
                         loss="cross_entropy", optimizer=cbptt.SGD(lr=0.1, momentum=0.9))


def make_truncated(seed):
    model = cbptt.RNN(2, 5, 2, dtype="float64", seed=seed)
    return cbptt.Truncated(model, k1=3, k2=5, optimizer=cbptt.Adam(lr=0.02))


def resume_data(kind):
    rng = np.random.default_rng(1)
    if kind == "seq2seq":
        return (rng.standard_normal((21, 5, 2)), rng.integers(0, 3, (21, 4)),
                rng.integers(0, 3, (21, 4))), dict(tgt_lengths=rng.integers(1, 5, 21))
    if kind == "truncated":
        return (rng.standard_normal((2, 40, 2)), rng.standard_normal((2, 40, 2))), {}
    return (rng.standard_normal((21, 6, 2)), rng.standard_normal((21, 6, 2))), {}


RESUMABLE = {"many_to_many": make_many_to_many, "seq2seq": make_seq2seq,
             "truncated": make_truncated}


def make_schedule():
    return schedules.Warmup(1.5, then=schedules.ReduceOnPlateau(factor=0.5, patience=0),
                            every="step")


@pytest.mark.parametrize("kind", sorted(RESUMABLE))
def test_a_fit_resumed_from_a_checkpoint_equals_the_uninterrupted_fit(kind, tmp_path):
    make = RESUMABLE[kind]
    arrays, named = resume_data(kind)
    options = dict(batch_size=6, validation_split=0.25, progress=False)
    if kind != "truncated":
        options["seed"] = 5
    whole = make(0)
    whole_history = whole.fit(*arrays, **named, epochs=6, schedule=make_schedule(), **options)
    assert min(whole_history.history["lr"]) < whole_history.history["lr"][2]   # it reduced

    first = make(0)
    path = tmp_path / "state.npz"
    first.fit(*arrays, **named, epochs=3, schedule=make_schedule(), **options,
              callbacks=[callbacks.ModelCheckpoint(path, training_state=True)])
    assert isinstance(cbptt.load(path), type(first.model) if kind != "seq2seq"
                      else cbptt.Seq2Seq)
    resumed = make(7)                           # other weights, overwritten by the restore
    schedule = make_schedule()
    start = callbacks.restore_checkpoint(path, resumed, schedule)
    assert start == 3
    history = resumed.fit(*arrays, **named, epochs=6, initial_epoch=start, schedule=schedule,
                          **options)
    np.testing.assert_array_equal(resumed.model.params, whole.model.params)
    assert history.epoch == [3, 4, 5]
    for name, values in history.history.items():
        assert values == whole_history.history[name][3:], name


def test_restore_checkpoint_refuses_what_does_not_fit(tmp_path):
    trainer, X, Y = trainer_and_data()
    trainer.fit(X, Y, epochs=1, progress=False,
                callbacks=[callbacks.ModelCheckpoint(tmp_path / "plain.npz"),
                           callbacks.ModelCheckpoint(tmp_path / "state.npz",
                                                     training_state=True)])
    other = cbptt.ManyToMany(cbptt.RNN(2, 6, 2, cell="lstm", dtype="float64"))
    before = other.model.params.copy()
    with pytest.raises(ValueError, match="not a checkpoint of fit's training state"):
        callbacks.restore_checkpoint(tmp_path / "plain.npz", other)
    with pytest.raises(ValueError, match="is not this trainer's"):
        callbacks.restore_checkpoint(tmp_path / "state.npz", other)
    fresh, _, _ = trainer_and_data(seed=3)
    with pytest.raises(ValueError, match="no schedule state"):
        callbacks.restore_checkpoint(tmp_path / "state.npz", fresh, schedules.StepLR(2))
    np.testing.assert_array_equal(other.model.params, before)
    assert callbacks.restore_checkpoint(tmp_path / "state.npz", fresh) == 1
    np.testing.assert_array_equal(fresh.model.params, trainer.model.params)
    assert fresh.optimizer.steps == trainer.optimizer.steps


# -- CSVLogger ------------------------------------------------------------------------------
def test_csv_logger_rows_are_the_history(tmp_path):
    trainer, X, Y = trainer_and_data()
    path = tmp_path / "log.csv"
    history = trainer.fit(X, Y, epochs=3, validation_split=0.2, progress=False,
                          callbacks=[callbacks.CSVLogger(path)])
    history_more = trainer.fit(X, Y, epochs=2, validation_split=0.2, progress=False,
                               callbacks=[callbacks.CSVLogger(path, append=True)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    names = ["loss", "val_loss", "val_mae", "val_rmse", "lr"]
    assert rows[0] == ["epoch"] + names and len(rows) == 6
    for row, (epoch, source) in zip(rows[1:], [(e, history) for e in range(3)] +
                                    [(e, history_more) for e in range(2)]):
        assert int(row[0]) == epoch
        assert [float(v) for v in row[1:]] == [source.history[n][epoch] for n in names]
