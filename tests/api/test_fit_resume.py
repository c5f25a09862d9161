"""fit stopped anywhere and resumed: a snapshot taken in a callback at any step (weights,
optimiser, carried streams, dropout masks' count, schedule, early stopping and fit's
``params["position"]``) resumes with ``initial_epoch``/``initial_batch``/``initial_sums`` bit
for bit as the uninterrupted fit; ``max_steps`` stops mid-epoch; a ``Validation`` of one's
own; bad resume arguments; and fit under DataParallel on 2 MPI ranks against one process."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cbptt
from cbptt import callbacks, schedules
from cbptt.callbacks import LambdaCallback
from cbptt.evaluation import Validation

from helpers import find_mpiexec, needs_mpi

EPOCHS = 4


def shuffled_dropout(dtype="float64"):
    """A shuffled ManyToMany with dropout, a per-step schedule, validation and early
    stopping: (trainer, data, fit options, schedule, early stopping)."""
    rng = np.random.default_rng(0)
    model = cbptt.RNN(3, 6, 2, cell="lstm", num_layers=2, dropout=0.3, recurrent_dropout=0.2,
                      dtype=dtype, seed=1)
    trainer = cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.Adam(lr=0.02), seed=5)
    X, Y = rng.standard_normal((29, 7, 3)), rng.standard_normal((29, 7, 2))
    schedule = schedules.Warmup(1.5, then=schedules.ReduceOnPlateau("val_loss", 0.5, 0),
                                every="step")
    early = callbacks.EarlyStopping(patience=2)
    options = dict(batch_size=6, seed=3, validation_split=0.2)
    return trainer, (X, Y), options, schedule, early


def streams(dtype="float64"):
    """A Truncated trainer over 3 streams with a cosine schedule."""
    rng = np.random.default_rng(1)
    model = cbptt.RNN(2, 5, 2, cell="gru", dtype=dtype, seed=2)
    trainer = cbptt.Truncated(model, k1=4, k2=6, optimizer=cbptt.SGD(lr=0.1, momentum=0.9))
    X, Y = rng.standard_normal((3, 45, 2)), rng.standard_normal((3, 45, 2))
    schedule = schedules.Cosine(total_epochs=EPOCHS, warmup_epochs=1, every="step")
    return trainer, (X, Y), dict(batch_size=8, validation_split=0.2), schedule, None


MAKERS = {"shuffled-dropout": shuffled_dropout, "streams": streams}


def snapshot(trainer, schedule, early, position):
    """Everything a resumed fit needs, copied."""
    state = {"params": trainer.model.params.copy(),
             "optimizer": {k: np.copy(v) for k, v in trainer.optimizer.state_dict().items()},
             "dropout_calls": trainer.dropout_calls, "position": dict(position),
             "schedule": json.loads(json.dumps(schedule.state_dict()))}
    if early is not None:
        state["early"] = json.loads(json.dumps(early.state_dict()))
    if hasattr(trainer, "stream_state"):
        state["stream"] = {k: np.copy(v) for k, v in trainer.stream_state().items()}
    return state


def restore(trainer, schedule, early, state):
    trainer.model.params[...] = state["params"]
    trainer.optimizer.load_state_dict(state["optimizer"], trainer.model.params)
    trainer.dropout_calls = state["dropout_calls"]
    schedule.load_state_dict(state["schedule"])
    if early is not None:
        early.load_state_dict(state["early"])
    if "stream" in state:
        trainer.load_stream_state(state["stream"])
    p = state["position"]
    return dict(initial_epoch=p["epoch"], initial_batch=p["batch"],
                initial_sums=(p["loss_sum"], p["size_sum"]) if p["batch"] else None)


@pytest.mark.parametrize("at", [3, 5, 9, 12])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_fit_resumed_at_any_step_is_the_uninterrupted_fit(kind, at):
    """Snapshots after step ``at`` (mid-epoch, or an epoch's last step, before its end)."""
    trainer, data, options, schedule, early = MAKERS[kind]()
    taken = {}

    def take(batch, logs):
        position = straight.params["position"]
        if position["step"] == at:
            taken.update(snapshot(trainer, schedule, early, position))
    straight = LambdaCallback(on_batch_end=take)
    history = trainer.fit(*data, epochs=EPOCHS, callbacks=[c for c in (early, straight) if c],
                          schedule=schedule, progress=False, **options)
    assert taken["position"]["step"] == at

    again, data, options, schedule2, early2 = MAKERS[kind]()
    resumed = again.fit(*data, epochs=EPOCHS, callbacks=[c for c in (early2,) if c],
                        schedule=schedule2, progress=False,
                        **restore(again, schedule2, early2, taken), **options)
    np.testing.assert_array_equal(again.model.params, trainer.model.params)
    first = taken["position"]["epoch"]    # the first epoch the resumed fit ends
    for name, values in history.history.items():
        assert resumed.history[name] == values[first:], name
    assert resumed.stopped_early == history.stopped_early
    if early is not None:
        assert early2.state_dict() == early.state_dict()
    assert schedule2.state_dict() == schedule.state_dict()


def test_max_steps_stops_mid_epoch_and_the_fit_goes_on_from_there():
    trainer, data, options, schedule, early = shuffled_dropout()
    seen = []
    history = trainer.fit(*data, epochs=EPOCHS, callbacks=[early, LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append(e))], schedule=schedule, max_steps=7,
        progress=False, **options)
    assert history.reached_max_steps and not history.interrupted
    assert trainer.optimizer.steps == 7 and seen == [0]       # 4 steps an epoch: no end of 1
    position = history.params["position"]
    assert (position["epoch"], position["batch"], position["step"]) == (1, 3, 7)
    state = snapshot(trainer, schedule, early, position)
    rest = trainer.fit(*data, epochs=EPOCHS, callbacks=[early], schedule=schedule,
                       progress=False, **restore(trainer, schedule, early, state), **options)
    whole, data, options, schedule, early = shuffled_dropout()
    full = whole.fit(*data, epochs=EPOCHS, callbacks=[early], schedule=schedule,
                     progress=False, **options)
    np.testing.assert_array_equal(trainer.model.params, whole.model.params)
    assert rest.history["loss"] == full.history["loss"][1:]
    again = trainer.fit(*data, epochs=EPOCHS, max_steps=7, progress=False, initial_epoch=1,
                        initial_batch=3, initial_sums=(1.0, 18), **options)
    assert again.reached_max_steps and again.epoch == []      # at max_steps already


def test_a_validation_of_ones_own_feeds_the_logs_and_the_monitors():
    trainer, (X, Y), _, _, _ = shuffled_dropout()
    calls = []

    def score():
        calls.append(trainer.optimizer.steps)
        return {"val_loss": 1.0 / len(calls), "val_score": float(len(calls))}
    early = callbacks.EarlyStopping("val_score", patience=1, mode="min")
    history = trainer.fit(X, Y, epochs=5, batch_size=10, validation=Validation(
        score, ["val_loss", "val_score"]), callbacks=[early], progress=False)
    assert calls == [3, 6]                # the score rises: stopped after the second epoch
    assert history.history["val_score"] == [1.0, 2.0] and history.stopped_early
    assert history.params["logs"] == ["loss", "val_loss", "val_score", "lr"]
    before = trainer.model.params.copy()
    with pytest.raises(ValueError, match="must return a dict of val_loss"):
        trainer.fit(X, Y, epochs=1, validation=Validation(lambda: {"val_x": 1.0}, "val_loss"),
                    progress=False)
    with pytest.raises(ValueError, match="starting with 'val_'"):
        Validation(score, ["loss"])
    with pytest.raises(ValueError, match="not both"):
        trainer.fit(X, Y, validation=Validation(score, "val_loss"), validation_split=0.1)
    with pytest.raises(ValueError, match="unknown monitor 'val_rmse'"):
        trainer.fit(X, Y, validation=Validation(score, ["val_loss", "val_score"]),
                    callbacks=[callbacks.EarlyStopping("val_rmse")])
    assert trainer.optimizer.steps == 7   # the failing fit made its first step only
    assert not np.array_equal(trainer.model.params, before)


@pytest.mark.parametrize("options,message", [
    (dict(initial_batch=6), "initial_batch must be in [0, 5]"),
    (dict(initial_batch=2), "initial_sums: a fit resumed mid-epoch"),
    (dict(initial_batch=2, initial_sums=(1.0, 0)), "sum of sizes > 0 exactly when"),
    (dict(initial_sums=(1.0, 5)), "sum of sizes > 0 exactly when"),
    (dict(initial_batch=1, initial_sums="ab"), "two numbers"),
    (dict(initial_epoch=3, initial_batch=1, initial_sums=(1.0, 5)), "before epochs=3"),
    (dict(max_steps=0), "max_steps"),
    (dict(progress="yes"), "progress must be"),
])
def test_bad_resume_arguments_are_refused_before_any_update(options, message):
    trainer, (X, Y), _, _, _ = shuffled_dropout()
    before = trainer.model.params.copy()
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[")):
        trainer.fit(X, Y, epochs=3, batch_size=6, **options)
    np.testing.assert_array_equal(trainer.model.params, before)
    assert trainer.optimizer.steps == 0


def test_the_bar_alone_writes_no_epoch_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr("cbptt.fit_progress.interactive", lambda stream=None: True)
    trainer, (X, Y), _, _, _ = shuffled_dropout()
    trainer.fit(X, Y, epochs=2, batch_size=10, progress="bar")
    captured = capsys.readouterr()
    assert captured.out == "" and "\repoch 2/2  step 3/3  loss " in captured.err


# -- DataParallel ---------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cbptt
    from cbptt import callbacks, schedules
    from mpi4py import MPI

    def run(kind, comm):
        rng = np.random.default_rng(0)
        if kind == "streams":
            model = cbptt.RNN(2, 5, 2, cell="gru", dtype="float64", seed=2)
            trainer = cbptt.Truncated(model, k1=4, optimizer=cbptt.SGD(lr=0.1, momentum=0.9))
            data = rng.standard_normal((4, 40, 2)), rng.standard_normal((4, 40, 2))
            options = dict(batch_size=8)
        else:
            model = cbptt.RNN(3, 6, 2, cell="lstm", dropout=0.3, dtype="float64", seed=1)
            trainer = cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.Adam(lr=0.02),
                                       seed=5)
            data = rng.standard_normal((29, 7, 3)), rng.standard_normal((29, 7, 2))
            options = dict(batch_size=6, seed=3)
        if comm is not None:
            trainer = cbptt.DataParallel(trainer, comm)
        early = callbacks.EarlyStopping(patience=1)
        schedule = schedules.ReduceOnPlateau("val_loss", 0.5, 0)
        history = trainer.fit(*data, epochs=6, validation_split=0.25, callbacks=[early],
                              schedule=schedule, progress=False, **options)
        return {"params": trainer.model.params.tolist(), "history": history.history,
                "stopped_early": history.stopped_early}

    comm = MPI.COMM_WORLD
    out = {kind: run(kind, comm if comm.Get_size() > 1 else None)
           for kind in ("sequences", "streams")}
    try:                                  # 2 rows a batch on 3 ranks: refused on every rank
        model = cbptt.RNN(3, 4, 2, seed=0)
        cbptt.DataParallel(cbptt.ManyToMany(model), comm).fit(
            np.zeros((7, 3, 3)), np.zeros((7, 3, 2)), batch_size=3, progress=False)
    except ValueError as exc:
        out["error"] = str(exc)
    with open(sys.argv[1] + str(comm.Get_rank()), "w") as f:
        json.dump(out, f)
""")


@needs_mpi
def test_fit_on_two_ranks_is_the_one_process_fit(tmp_path):
    script = tmp_path / "fit_worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    for launch, name in (([], "one"), ([find_mpiexec(), "-n", "2"], "two")):
        result = subprocess.run(launch + [sys.executable, str(script), str(tmp_path / name)],
                                env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
    one = json.loads((tmp_path / "one0").read_text())
    ranks = [json.loads((tmp_path / f"two{r}").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]               # every rank: the same weights and logs
    for kind in ("sequences", "streams"):
        got, want = ranks[0][kind], one[kind]
        np.testing.assert_allclose(got["params"], want["params"], rtol=1e-10, atol=1e-12)
        assert got["history"].keys() == want["history"].keys()
        for name, values in want["history"].items():
            np.testing.assert_allclose(got["history"][name], values, rtol=1e-10)
        assert got["stopped_early"] == want["stopped_early"]
    assert "error" not in one
    assert "needs at least 2 sequences in every batch; the last batch has 1" in \
        ranks[0]["error"]
