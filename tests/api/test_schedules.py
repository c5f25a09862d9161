"""Learning-rate schedules (cbptt.schedules): closed forms, torch.optim.lr_scheduler's twins
epoch by epoch, ReduceOnPlateau against torch's, state round trips, and the optimiser's lr
following a schedule inside fit, per epoch and per step."""
import json
import math

import numpy as np
import pytest

import cbptt
from cbptt import schedules

LR = 0.1


def rates(schedule, epochs, lr=LR, metrics=None, monitor="val_loss"):
    """The rate of every epoch: lr_at(e) at each epoch's start (and the epoch's metric given
    at its end, for ReduceOnPlateau)."""
    schedule.start(cbptt.SGD(lr=lr))
    out = []
    for epoch in range(epochs):
        out.append(schedule.lr_at(epoch))
        if metrics is not None:
            schedule.epoch_end(epoch, {monitor: metrics[epoch]})
    return np.array(out)


def torch_rates(make, epochs, lr=LR, metrics=None):
    """torch's rates: read at each epoch's start, the scheduler stepped at its end."""
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make(torch.optim.lr_scheduler, optimizer)
    out = []
    for epoch in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[epoch])
    return np.array(out)


# -- closed forms (no torch needed) ---------------------------------------------------------
def test_step_and_exponential_closed_forms():
    np.testing.assert_allclose(rates(schedules.StepLR(3, gamma=0.5), 10),
                               LR * 0.5 ** (np.arange(10) // 3), rtol=1e-15)
    np.testing.assert_allclose(rates(schedules.ExponentialLR(0.9), 10),
                               LR * 0.9 ** np.arange(10), rtol=1e-15)


def test_cosine_once_then_min_lr():
    got = rates(schedules.Cosine(total_epochs=8, min_lr=0.01), 12)
    t = np.arange(12)
    want = 0.01 + (LR - 0.01) * (1 + np.cos(np.pi * np.minimum(t, 8) / 8)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert got[8:].tolist() == [0.01] * 4


def test_cosine_warm_restarts_closed_form():
    got = rates(schedules.Cosine(restart_epochs=3, restart_mult=2, min_lr=0.0), 22)
    # periods 3, 6, 12: the cycles start at epochs 0, 3, 9, 21
    starts, periods = [0, 3, 9, 21], [3, 6, 12, 24]
    want = []
    for epoch in range(22):
        k = max(i for i, s in enumerate(starts) if s <= epoch)
        want.append(LR * (1 + math.cos(math.pi * (epoch - starts[k]) / periods[k])) / 2)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    got = rates(schedules.Cosine(restart_epochs=4), 9)
    np.testing.assert_allclose(got[[0, 4, 8]], LR, rtol=1e-15)


def test_warmup_then_cosine_closed_form():
    warm, total = 3, 10
    got = rates(schedules.Cosine(total_epochs=total, warmup_epochs=warm, start_factor=0.25), 12)
    want = [LR * (0.25 + 0.75 * e / warm) for e in range(warm)]
    want += [LR * (1 + math.cos(math.pi * (e - warm) / (total - warm))) / 2
             for e in range(warm, total)]
    want += [0.0, 0.0]
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-18)
    composed = rates(schedules.Warmup(warm, then=schedules.Cosine(total - warm),
                                      start_factor=0.25), 10)
    np.testing.assert_allclose(composed, want[:10], rtol=1e-14, atol=1e-18)


def test_warmup_alone_and_before_step():
    np.testing.assert_allclose(rates(schedules.Warmup(4), 6),
                               LR * np.array([1 / 3, 1 / 2, 2 / 3, 5 / 6, 1, 1]), rtol=1e-14)
    got = rates(schedules.Warmup(2, then=schedules.StepLR(2, gamma=0.1), start_factor=0.5), 7)
    np.testing.assert_allclose(got, LR * np.array([0.5, 0.75, 1, 1, 0.1, 0.1, 0.01]),
                               rtol=1e-14)


def test_reduce_on_plateau_closed_form():
    # patience 1: the rate drops after the second epoch in a row without improvement
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.5, 0.6, 0.6, 0.6, 0.6]
    got = rates(schedules.ReduceOnPlateau(factor=0.5, patience=1, min_lr=0.02), 10,
                metrics=losses)
    np.testing.assert_allclose(got, [LR] * 4 + [LR / 2] * 4 + [0.025, 0.025], rtol=1e-15)
    # the min_lr floor, and max mode for an accuracy
    got = rates(schedules.ReduceOnPlateau("val_accuracy", factor=0.5, patience=0), 4,
                metrics=[0.5, 0.4, 0.6, 0.6], monitor="val_accuracy")
    np.testing.assert_allclose(got, [LR, LR, LR / 2, LR / 2], rtol=1e-15)


# -- torch's twins --------------------------------------------------------------------------
TWINS = [
    (lambda: schedules.StepLR(3, gamma=0.5), lambda s, o: s.StepLR(o, 3, gamma=0.5)),
    (lambda: schedules.StepLR(1), lambda s, o: s.StepLR(o, 1)),
    (lambda: schedules.ExponentialLR(0.93), lambda s, o: s.ExponentialLR(o, 0.93)),
    (lambda: schedules.Cosine(total_epochs=20, min_lr=0.003),
     lambda s, o: s.CosineAnnealingLR(o, T_max=20, eta_min=0.003)),
    (lambda: schedules.Cosine(restart_epochs=4, min_lr=0.01),
     lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=4, eta_min=0.01)),
    (lambda: schedules.Cosine(restart_epochs=3, restart_mult=2),
     lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2)),
    (lambda: schedules.Warmup(5), lambda s, o: s.LinearLR(o, start_factor=1 / 3,
                                                          total_iters=5)),
    (lambda: schedules.Cosine(total_epochs=20, warmup_epochs=4, start_factor=0.1),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.1, total_iters=4),
                                     s.CosineAnnealingLR(o, T_max=16)], milestones=[4])),
    (lambda: schedules.Warmup(3, then=schedules.ExponentialLR(0.8), start_factor=0.5),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.5, total_iters=3),
                                     s.ExponentialLR(o, 0.8)], milestones=[3])),
]


@pytest.mark.parametrize("index", range(len(TWINS)))
def test_rates_equal_torch_lr_scheduler(index):
    ours, theirs = TWINS[index]
    epochs = 20
    np.testing.assert_allclose(rates(ours(), epochs), torch_rates(theirs, epochs),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode, threshold_mode, cooldown", [
    ("min", "rel", 0), ("min", "abs", 2), ("max", "rel", 1), ("max", "abs", 0)])
def test_reduce_on_plateau_equals_torch(mode, threshold_mode, cooldown):
    values = np.random.default_rng(3).uniform(0.5, 1.0, 40)
    values[5:9] = values[4]         # a flat stretch
    kwargs = dict(factor=0.5, patience=2, threshold=0.01, threshold_mode=threshold_mode,
                  cooldown=cooldown, min_lr=0.004)
    ours = rates(schedules.ReduceOnPlateau("val_loss", mode=mode, **kwargs), 40,
                 metrics=values)
    theirs = torch_rates(lambda s, o: s.ReduceLROnPlateau(o, mode=mode, **kwargs), 40,
                         metrics=values)
    np.testing.assert_allclose(ours, theirs, rtol=1e-15)
    assert ours[-1] < LR        # it did reduce


# -- state ----------------------------------------------------------------------------------
def test_state_round_trip_continues_the_same_rates():
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.97, 0.99, 1.0, 1.0]
    make = lambda: schedules.Warmup(2, then=schedules.ReduceOnPlateau(factor=0.5,  # noqa
                                                                      patience=1))
    whole = rates(make(), 10, metrics=values)
    first = make()
    rates(first, 5, metrics=values)
    state = json.loads(json.dumps(first.state_dict()))         # plain numbers
    second = make()
    second.load_state_dict(state)
    second.start(cbptt.SGD(lr=5.0))         # a restored base rate is kept
    rest = []
    for epoch in range(5, 10):
        rest.append(second.lr_at(epoch))
        second.epoch_end(epoch, {"val_loss": values[epoch]})
    np.testing.assert_array_equal(rest, whole[5:])
    assert whole[-1] < LR
    with pytest.raises(ValueError, match="state of a StepLR"):
        schedules.StepLR(2).load_state_dict(state)


@pytest.mark.parametrize("make, match", [
    (lambda: schedules.StepLR(0), "step_size"),
    (lambda: schedules.StepLR(2, gamma=-1), "gamma"),
    (lambda: schedules.ExponentialLR(float("nan")), "gamma"),
    (lambda: schedules.Cosine(), "one of the two"),
    (lambda: schedules.Cosine(10, restart_epochs=3), "one of the two"),
    (lambda: schedules.Cosine(5, warmup_epochs=5), "more than warmup_epochs"),
    (lambda: schedules.Cosine(restart_epochs=3, restart_mult=0), "restart_mult"),
    (lambda: schedules.Warmup(0), "warmup_epochs"),
    (lambda: schedules.Warmup(2, start_factor=0), "start_factor"),
    (lambda: schedules.ReduceOnPlateau(factor=1.0), "factor"),
    (lambda: schedules.ReduceOnPlateau(patience=-1), "patience"),
    (lambda: schedules.ReduceOnPlateau(mode="up"), "mode"),
    (lambda: schedules.ReduceOnPlateau(threshold_mode="x"), "threshold_mode"),
    (lambda: schedules.StepLR(2, every="batch"), "every"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- inside fit -----------------------------------------------------------------------------
def small_trainer(seed=0, lr=LR):
    model = cbptt.RNN(2, 4, 1, dtype="float64", seed=seed)
    return cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=lr))


def small_data(count=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 5, 2)), rng.standard_normal((count, 5, 1))


def test_fit_sets_the_optimiser_rate_each_epoch():
    trainer = small_trainer()
    seen = []
    record = cbptt.callbacks.LambdaCallback(
        on_batch_end=lambda batch, logs: seen.append(trainer.optimizer.lr))
    schedule = schedules.Cosine(total_epochs=6, warmup_epochs=2)
    history = trainer.fit(*small_data(), epochs=6, batch_size=4, schedule=schedule,
                          callbacks=[record], progress=False)
    want = [schedule.lr_at(e) for e in range(6)]
    assert history.history["lr"] == want
    assert seen == [rate for rate in want for _ in range(3)]        # 3 steps an epoch


def test_fit_sets_the_optimiser_rate_each_step():
    trainer = small_trainer()
    seen = []
    record = cbptt.callbacks.LambdaCallback(
        on_batch_end=lambda batch, logs: seen.append(logs["lr"]))
    schedule = schedules.Warmup(2, then=schedules.ExponentialLR(0.5), every="step")
    trainer.fit(*small_data(), epochs=3, batch_size=4, schedule=schedule, callbacks=[record],
                progress=False)
    positions = [e + j / 3 for e in range(3) for j in range(3)]
    want = [LR * (1 / 3 + (2 / 3) * p / 2) if p < 2 else LR * 0.5 ** (p - 2)
            for p in positions]
    np.testing.assert_allclose(seen, want, rtol=1e-14)


def test_reduce_on_plateau_in_fit_reads_the_logs():
    trainer = small_trainer(lr=1e-4)        # a rate too small to halve the loss
    schedule = schedules.ReduceOnPlateau("loss", factor=0.5, patience=0, threshold=0.5)
    history = trainer.fit(*small_data(), epochs=4, batch_size=5, schedule=schedule,
                          shuffle=False, progress=False)
    np.testing.assert_allclose(history.history["lr"], 1e-4 * 0.5 ** np.array([0, 0, 1, 2]),
                               rtol=1e-15)


def test_schedule_errors_come_before_any_update():
    trainer = small_trainer()
    other = small_trainer(seed=1)
    schedule = schedules.StepLR(2)
    other.fit(*small_data(), epochs=1, schedule=schedule, progress=False)
    before = trainer.model.params.copy()
    with pytest.raises(ValueError, match="another optimiser"):
        trainer.fit(*small_data(), epochs=1, schedule=schedule, progress=False)
    with pytest.raises(ValueError, match="unknown monitor 'val_loss'"):
        trainer.fit(*small_data(), epochs=1, schedule=schedules.ReduceOnPlateau(),
                    progress=False)
    with pytest.raises(TypeError, match="schedule"):
        trainer.fit(*small_data(), epochs=1, schedule="cosine", progress=False)
    np.testing.assert_array_equal(trainer.model.params, before)
    assert trainer.optimizer.steps == 0
