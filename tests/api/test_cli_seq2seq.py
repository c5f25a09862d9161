"""cbptt train --mode seq2seq and cbptt translate, driven through ``cli.main`` as the command
runs them (one subprocess checks the command itself): a tiny encoder-decoder of date pairs,
its run folder, an exact resume, translations that are the model's own greedy and beam
outputs, and a user's mistakes (one line, exit 2). Every run is tiny; nothing is timed."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import cbptt
from cbptt import checkpoint, cli, dates, pairs

from helpers import ok, run_main

TRAIN = ["--cell", "gru", "--hidden", 12, "--batch", 16, "--lr", 1e-2, "--no-progress",
         "--log-every", 2, "--checkpoint-every", 5]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    """120 date pairs (12 held out with --val 0.1) and a malformed file."""
    root = tmp_path_factory.mktemp("pairs")
    lines = [f"{s}\t{t}\n" for s, t in dates.date_pairs(120, seed=3)]
    (root / "dates.tsv").write_text("".join(lines))
    (root / "bad.tsv").write_text("".join(lines[:3]) + "3/3/98 1998-03-03\n")
    return root


def one_error_line(capsys, args, *fragments):
    code, out, err = run_main(capsys, *args)
    assert code == 2, (args, out, err)
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def arrays(run):
    with np.load(run / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k != "__run__"}


@pytest.fixture(scope="module")
def run(tsv, tmp_path_factory):
    """A run of 3 epochs (7 batches each)."""
    folder = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main([str(a) for a in ["train", tsv / "dates.tsv", "--mode", "seq2seq",
                                      "--epochs", 3, "--out", folder, *TRAIN]]) == 0
    return folder


def test_a_run_folder_of_an_encoder_decoder(run, tsv):
    config = json.loads((run / "config.json").read_text())
    all_pairs = pairs.read_pairs(tsv / "dates.tsv")
    assert config["task"] == "seq2seq" and config["mode"] == "seq2seq"
    assert config["target_vocab"] == "-0123456789"
    assert config["source_vocab"] == pairs.Vocabulary.of_texts(s for s, _ in all_pairs).chars
    assert config["max_target"] == 10
    for name in ("window", "k1", "horizon", "columns"):
        assert name not in config
    rows = metrics(run)
    assert list(rows[0]) == ["step", "epoch", "train_loss", "val_loss", "val_exact_match"]
    epochs = [r for r in rows if r["val_loss"]]
    assert [int(r["step"]) for r in epochs] == [7, 14, 21]
    assert float(epochs[-1]["val_loss"]) < float(epochs[0]["val_loss"])
    s2s = cbptt.load(run / "checkpoint.npz")          # the checkpoint is the Seq2Seq
    assert isinstance(s2s, cbptt.Seq2Seq) and s2s.encoder.cell == "gru"
    assert s2s.encoder.input_size == len(config["source_vocab"]) + 3
    assert s2s.decoder.output_size == 14
    # the metrics: per-character loss of the held-out tail and exact match of greedy outputs
    task = cli.make_task(dict(config))
    assert [s for s, _ in task.val] == [s for s, _ in all_pairs[108:]]
    loss, exact = task.evaluate(s2s)
    assert loss == pytest.approx(float(epochs[-1]["val_loss"]), rel=1e-5)
    X, src_lengths = pairs.encode_sources([s for s, _ in task.val], task.source_vocab)
    Y_in, Y_out, tgt_lengths = pairs.encode_targets([t for _, t in task.val],
                                                    task.target_vocab)
    expected = s2s.loss_and_grad(X, Y_in, Y_out, src_lengths, tgt_lengths)[0]
    assert loss == pytest.approx(expected, rel=1e-5)
    outputs = pairs.decode(s2s.generate(X, src_lengths, start=pairs.START, steps=11,
                                        stop_id=pairs.STOP), task.target_vocab)
    assert exact == np.mean([o == t for o, (_, t) in zip(outputs, task.val)])


def test_resumed_run_equals_uninterrupted_one(run, tsv, tmp_path, capsys):
    common = ["train", tsv / "dates.tsv", "--mode", "seq2seq", *TRAIN]
    ok(capsys, *common, "--epochs", 3, "--out", tmp_path / "mid", "--max-steps", 9)
    assert checkpoint.load_checkpoint(tmp_path / "mid").run["progress"]["step"] == 9
    out = ok(capsys, "train", "--resume", tmp_path / "mid", "--no-progress")
    assert "resuming" in out and "epoch 2/3, step 9" in out
    assert "next: cbptt translate" in out
    straight, resumed = arrays(run), arrays(tmp_path / "mid")
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("param:encoder.") for k in straight)
    assert {"optim:exp_avg", "optim:exp_avg_sq"} <= straight.keys()
    for name, value in straight.items():       # both halves' weights, Adam's moments
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    assert metrics(tmp_path / "mid") == metrics(run)


def test_translate_prints_the_models_greedy_and_beam_outputs(run, tsv, tmp_path, capsys):
    config = json.loads((run / "config.json").read_text())
    source, target = (pairs.Vocabulary(config["source_vocab"]),
                      pairs.Vocabulary(config["target_vocab"]))
    s2s = cbptt.load(run / "checkpoint.npz")
    texts = ["Tue 3 Mar 98", "3/3/98", "1.12.2001"]
    X, lengths = pairs.encode_sources(texts, source)
    for beam in (1, 3):
        ids = s2s.generate(X, lengths, start=pairs.START, steps=11, stop_id=pairs.STOP,
                           beam=beam)
        expected = pairs.decode(ids, target)
        args = ["translate", run, *texts] + (["--beam", beam] if beam > 1 else [])
        assert ok(capsys, *args).split("\n") == expected + [""]
    # sources after an option, and from a file (one output line per line; a TSV's sources)
    assert ok(capsys, "translate", run, texts[0], "--beam", 1, *texts[1:]).split("\n")[:3] == \
        pairs.decode(s2s.generate(X, lengths, start=pairs.START, steps=11,
                                  stop_id=pairs.STOP), target)
    (tmp_path / "in.txt").write_text("3/3/98\r\n\nTue 3 Mar 98\tignored\n")
    lines = ok(capsys, "translate", run, "--input", tmp_path / "in.txt").split("\n")
    assert lines[:3] == pairs.translate(s2s, ["3/3/98", "", "Tue 3 Mar 98"], source, target,
                                        11) and lines[3:] == [""]


def test_the_command_in_a_subprocess(run):
    size = len(json.loads((run / "config.json").read_text())["source_vocab"])
    result = subprocess.run([sys.executable, "-m", "cbptt", "translate", str(run), "3/3/98",
                             "3/3/9\u00e9"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"cbptt translate: TEXT '3/3/9\u00e9': the source holds "
                             f"'\u00e9', which is not in the vocabulary of {size} characters\n")


def test_mistakes_give_one_line_and_exit_2(run, tsv, tmp_path, capsys):
    data_file = tsv / "dates.tsv"
    seq = ["train", data_file, "--mode", "seq2seq", "--no-progress"]
    one_error_line(capsys, ["train", tsv / "bad.tsv", "--mode", "seq2seq"],
                   "bad.tsv, line 4: expected source<TAB>target, got 0 tabs")
    one_error_line(capsys, seq + ["--window", 8], "--window is not for --mode seq2seq")
    one_error_line(capsys, seq + ["--k1", 8], "--k1 is not for --mode seq2seq")
    one_error_line(capsys, seq + ["--format", "text"], "--format is for text and series")
    one_error_line(capsys, seq + ["--val", 0.999], "no pairs left to train on")
    one_error_line(capsys, ["train", "--resume", run, "--hidden", 20, "--epochs", 5],
                   "--hidden 20 differs from the run's 12")
    one_error_line(capsys, ["train", "--resume", run, "--window", 4, "--epochs", 5],
                   "--window does not apply to this run (an encoder-decoder)")
    one_error_line(capsys, ["translate", run], "give source strings (TEXT ...) or --input")
    one_error_line(capsys, ["translate", run, "a", "--input", data_file], "one of the two")
    one_error_line(capsys, ["translate", run, "3/3/98#"],
                   "TEXT '3/3/98#': the source holds '#'")
    (tmp_path / "in.txt").write_text("3/3/98\n3/3/98#\n")
    one_error_line(capsys, ["translate", run, "--input", tmp_path / "in.txt"],
                   "in.txt, line 2: the source holds '#'")
    one_error_line(capsys, ["translate", run, "--input", tmp_path / "none.txt"],
                   "none.txt: no such file")
    one_error_line(capsys, ["translate", run, "3/3/98", "--beam", 0], "--beam", "must be >= 1")
    one_error_line(capsys, ["translate", run, "3/3/98", "--bogus"], "unrecognized arguments")
    one_error_line(capsys, ["translate", tmp_path / "nowhere", "x"], "no such run folder")
    one_error_line(capsys, ["sample", run], "not a character model", "use cbptt translate")
    one_error_line(capsys, ["predict", run, data_file], "not a forecasting model")


def test_a_run_within_a_memory_limit(run, tsv, tmp_path, capsys):
    """--memory-limit on seq2seq pairs: below the minimum, one line naming it; at it, the
    run trains both halves by bounded BPTT, equals the unbounded run to rounding, and
    resumes bit for bit."""
    common = ["train", tsv / "dates.tsv", "--mode", "seq2seq", *TRAIN, "--epochs", 3]
    one_error_line(capsys, [*common, "--memory-limit", "1KiB"],
                   "cbptt train: --memory-limit: 1.0 KiB is below the minimum of")
    code, _, err = run_main(capsys, *common, "--memory-limit", "1KiB")
    minimum = int(err.split("(")[1].split(" bytes")[0].replace(",", ""))
    bounded = [*common, "--memory-limit", minimum]
    ok(capsys, *bounded, "--out", tmp_path / "straight")
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["memory_limit"] == minimum
    straight, unbounded = arrays(tmp_path / "straight"), arrays(run)
    for name, value in unbounded.items():
        if name.startswith("param:"):
            np.testing.assert_allclose(straight[name], value, rtol=2e-3, atol=2e-4,
                                       err_msg=name)
    assert any(not np.array_equal(straight[name], value) for name, value in unbounded.items())
    ok(capsys, *bounded, "--out", tmp_path / "mid", "--max-steps", 9)
    ok(capsys, "train", "--resume", tmp_path / "mid", "--no-progress")
    for name, value in straight.items():
        np.testing.assert_array_equal(arrays(tmp_path / "mid")[name], value, err_msg=name)
