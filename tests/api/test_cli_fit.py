"""cbptt train's --schedule, --warmup and --early-stopping (driven through ``cli.main``, as the
command runs them): the learning rates in metrics.csv are the schedule's closed form (or, for
plateau, ReduceOnPlateau replayed on the run's validation losses), early stopping stops after
PATIENCE epochs without improvement and keeps the best epoch's weights in RUN/best.npz,
a run resumed mid-epoch with a schedule and early stopping equals the uninterrupted one bit for
bit, and mistakes in these options are one line and exit 2. Every run is tiny."""
import csv
import math

import numpy as np
import pytest

import cbptt
from cbptt import archive, checkpoint, cli, dates, schedules

from helpers import ok, run_main

LR = 0.05


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A CSV series, a small text and date pairs."""
    root = tmp_path_factory.mktemp("fit_data")
    rng = np.random.default_rng(0)
    t = np.arange(300)
    a = np.sin(0.2 * t) + 0.05 * rng.normal(size=t.size)
    with open(root / "series.csv", "w") as f:
        f.write("a,b\n")
        f.writelines(f"{a[i]:.6f},{np.cos(0.13 * i):.6f}\n" for i in t)
    words = ["the", "state", "carries", "what", "came", "before", "each", "step"]
    (root / "text.txt").write_text(" ".join(rng.choice(words, size=300)) + ".\n")
    (root / "dates.tsv").write_text("".join(f"{s}\t{d}\n"
                                            for s, d in dates.date_pairs(80, seed=1)))
    return root


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def series(files, *options):
    return ["train", files / "series.csv", "--columns", "a,b", "--target", "a", "--window",
            12, "--hidden", 8, "--batch", 16, "--lr", LR, "--no-progress", *options]


def cosine_with_warmup(t, total, warmup):
    if t < warmup:
        return LR * (1 / 3 + (2 / 3) * t / warmup)
    return LR * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2


# -- the learning rates ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cosine-warmup", "step", "plateau-warmup", "warmup"])
def test_the_learning_rates_are_the_schedules(files, tmp_path, capsys, name):
    options = {"cosine-warmup": ["--schedule", "cosine", "--warmup", 1.5],
               "step": ["--schedule", "step", "--step-size", 2, "--schedule-gamma", 0.5],
               "plateau-warmup": ["--schedule", "plateau", "--schedule-patience", 0,
                                  "--schedule-gamma", 0.5, "--warmup", 1],
               "warmup": ["--warmup", 2]}[name]
    run = tmp_path / "run"
    ok(capsys, *series(files, *options, "--epochs", 8, "--log-every", 1, "--out", run))
    table = rows(run)
    epoch_rows = [r for r in table if r["val_loss"]]
    steps = int(epoch_rows[0]["step"])                   # steps an epoch
    assert [int(r["step"]) for r in epoch_rows] == [steps * e for e in range(1, 9)]
    val_losses = [float(r["val_loss"]) for r in epoch_rows]
    if name.startswith("plateau"):       # ReduceOnPlateau replayed on the run's val losses
        plateau = schedules.ReduceOnPlateau("val_loss", factor=0.5, patience=0)
        plateau.start(cbptt.Adam(lr=LR))
        epoch_rates = []
        for epoch, loss in enumerate(val_losses):
            epoch_rates.append(plateau.lr)
            if epoch >= 1:                  # after the warmup epoch
                plateau.epoch_end(epoch - 1, {"val_loss": loss})
        assert min(epoch_rates) < LR        # it decayed
    for row in table:
        step, epoch = int(row["step"]), int(row["epoch"]) - 1
        t = epoch + ((step - 1) % steps) / steps         # the position of the step's rate
        expected = {"cosine-warmup": lambda: cosine_with_warmup(t, 8, 1.5),
                    "step": lambda: LR * 0.5 ** (epoch // 2),
                    "plateau-warmup": lambda: (LR * (1 / 3 + 2 / 3 * t) if t < 1
                                               else epoch_rates[epoch]),
                    "warmup": lambda: LR * (1 / 3 + 2 / 3 * t / 2) if t < 2 else LR}[name]()
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-5, abs=1e-12), row
    state = checkpoint.load_checkpoint(run).run["progress"]["schedule"]
    assert state["base_lr"] == LR


# -- early stopping -------------------------------------------------------------------------
def test_early_stopping_stops_and_keeps_the_best_weights(files, tmp_path, capsys):
    run = tmp_path / "stopped"
    out = ok(capsys, *series(files, "--early-stopping", 2, "--epochs", 30, "--out", run))
    losses = [float(r["val_loss"]) for r in rows(run) if r["val_loss"]]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 2 < 30            # two epochs without improvement
    assert f"the best, {losses[best]:.4f} after epoch {best + 1}, is in" in out
    assert "stopped early:" in out and "best weights" in out
    best_model = cbptt.load(run / "best.npz")
    last = checkpoint.load_checkpoint(run)
    assert last.run["progress"]["stopped_early"]
    assert not np.array_equal(best_model.params, last.model.params)
    # the best epoch's weights: a run of best + 1 epochs ends with them, bit for bit
    short = tmp_path / "short"
    ok(capsys, *series(files, "--early-stopping", 2, "--epochs", best + 1, "--out", short))
    np.testing.assert_array_equal(best_model.params, cbptt.load(short / "checkpoint.npz").params)
    np.testing.assert_array_equal(best_model.params, cbptt.load(short / "best.npz").params)
    # the run's users read the best weights; a resume says the run is over
    assert np.array_equal(cli.runs.load_run(run)[0].model.params, best_model.params)
    again = ok(capsys, "train", "--resume", run, "--epochs", 40, "--no-progress")
    assert f"stopped early after epoch {best + 3}" in again and "resuming" not in again


# -- resume ---------------------------------------------------------------------------------
RESUMES = {
    "csv-plateau-warmup-early-stopping": (
        lambda files: series(files, "--schedule", "plateau", "--schedule-patience", 0,
                             "--warmup", 1, "--early-stopping", 2, "--dropout", 0.2,
                             "--layers", 2, "--epochs", 12),
        (23, 95)),              # 17 steps an epoch; the best after epoch 5, the stop after 7
    "text-truncated-cosine": (
        lambda files: ["train", files / "text.txt", "--k1", 8, "--k2", 12, "--batch", 4,
                       "--hidden", 8, "--schedule", "cosine", "--warmup", 0.5,
                       "--recurrent-dropout", 0.1, "--epochs", 3, "--no-progress"],
        (13, 30)),
    "seq2seq-step": (
        lambda files: ["train", files / "dates.tsv", "--mode", "seq2seq", "--cell", "gru",
                       "--hidden", 8, "--batch", 8, "--schedule", "step", "--step-size", 1,
                       "--schedule-gamma", 0.5, "--epochs", 3, "--no-progress"],
        (5, 12)),
}


def arrays(run, name="checkpoint.npz"):
    with np.load(run / name) as z:
        return {k: z[k] for k in z.files if k != "__run__"}


@pytest.mark.parametrize("setup", sorted(RESUMES))
def test_a_run_resumed_mid_epoch_equals_the_uninterrupted_one(files, tmp_path, capsys, setup):
    """Stopped twice mid-epoch (--max-steps), then resumed to the end."""
    make, stops = RESUMES[setup]
    common = make(files) + ["--checkpoint-every", 4, "--log-every", 3]
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    ok(capsys, *common, "--out", straight)
    ok(capsys, *common, "--out", parts, "--max-steps", stops[0])
    ok(capsys, "train", "--resume", parts, "--max-steps", stops[1], "--no-progress")
    progress = checkpoint.load_checkpoint(parts).run["progress"]
    assert progress["step"] == stops[1] and progress["batch_index"] > 0    # mid-epoch
    ok(capsys, "train", "--resume", parts, "--no-progress")
    names = ["checkpoint.npz"] + (["best.npz"] if "early" in setup else [])
    for name in names:
        want, got = arrays(straight, name), arrays(parts, name)
        assert want.keys() == got.keys()
        for key, value in want.items():         # weights, optimiser state, streams
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")

    def without_seconds(run):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows(run)]
    assert without_seconds(parts) == without_seconds(straight)
    saved = [checkpoint.load_checkpoint(run).run["progress"] for run in (straight, parts)]
    for key in ("schedule", "early_stopping", "stopped_early", "step"):
        assert saved[0][key] == saved[1][key], key
    if "early" in setup:
        assert saved[0]["best_checkpoint"]["best"] == saved[1]["best_checkpoint"]["best"]
        assert saved[1]["early_stopping"]["best"] == saved[1]["best_checkpoint"]["best"]
        assert saved[1]["stopped_early"] and saved[1]["step"] < 12 * 17
    if "plateau" in setup:
        assert saved[1]["schedule"]["then"]["lr"] < 0.05        # it decayed


# -- mistakes -------------------------------------------------------------------------------
MISTAKES = {
    "step size without step": (["--step-size", 3], "--step-size is for --schedule step"),
    "gamma with cosine": (["--schedule", "cosine", "--schedule-gamma", 0.5],
                          "--schedule-gamma is for --schedule step or plateau"),
    "plateau without validation": (["--schedule", "plateau", "--val", 0],
                                   "--schedule plateau watch the validation loss"),
    "early stopping without validation": (["--early-stopping", 2, "--val", 0],
                                          "--early-stopping watch the validation loss"),
    "warmup longer than the cosine": (["--schedule", "cosine", "--warmup", 5, "--epochs", 5],
                                      "--warmup 5 leaves no epoch of the 5"),
    "unknown schedule": (["--schedule", "linear"], "invalid choice: 'linear'"),
    "patience 0": (["--early-stopping", 0], "--early-stopping", "must be >= 1"),
    "negative warmup": (["--warmup", -1], "--warmup"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_mistakes_are_one_line_and_exit_2(files, tmp_path, capsys, case):
    options, *fragments = MISTAKES[case]
    code, _, err = run_main(capsys, *series(files, *options, "--out", tmp_path / "run"))
    assert code == 2 and "\n" not in err.strip() and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_keeps_its_schedule(files, tmp_path, capsys):
    run = tmp_path / "run"
    ok(capsys, *series(files, "--schedule", "cosine", "--epochs", 2, "--out", run))
    for args, fragment in ((["--epochs", 4], "anneals over the 2 epochs it started with"),
                           (["--schedule", "step"], "--schedule step differs from the run's "
                                                    "cosine"),
                           (["--early-stopping", 2], "--early-stopping 2 differs from the "
                                                     "run's none")):
        code, _, err = run_main(capsys, "train", "--resume", run, *args)
        assert code == 2 and fragment in err and "\n" not in err.strip(), err


def test_a_mid_epoch_checkpoint_of_an_earlier_cbptt_is_refused(files, tmp_path, capsys):
    """Its batches were drawn another way: resuming it exactly is impossible, so it is one
    line and exit 2 (at an epoch's end it resumes: the next epochs are fit's)."""
    run = tmp_path / "run"
    ok(capsys, *series(files, "--epochs", 2, "--max-steps", 5, "--out", run))
    entries = archive.read_archive(run / "checkpoint.npz")
    saved = archive.read_json_entry(entries, checkpoint.RUN_ENTRY)
    progress = saved["progress"]
    for key in ("format", "loss_sum", "size_sum"):
        del progress[key]
    entries[checkpoint.RUN_ENTRY] = archive.json_entry(saved)
    archive.write_archive(run / "checkpoint.npz", entries)
    code, _, err = run_main(capsys, "train", "--resume", run, "--no-progress")
    assert code == 2 and "saved in the middle of an epoch by an earlier cbptt" in err, err
    progress["batch_index"], progress["epoch"], progress["step"] = 0, 1, 17
    entries[checkpoint.RUN_ENTRY] = archive.json_entry(saved)
    archive.write_archive(run / "checkpoint.npz", entries)
    assert "resuming" in ok(capsys, "train", "--resume", run, "--no-progress")
    assert checkpoint.load_checkpoint(run).run["progress"]["step"] == 34
