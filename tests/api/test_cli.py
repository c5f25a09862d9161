"""The cbptt command, driven as a user drives it: `python -m cbptt ...` in a subprocess, on small
files made in tmp_path. Plus the importable pieces behind it (cbptt.data, cbptt.checkpoint).

Every run here is tiny (a few hundred characters or rows, hidden sizes of 8-24) so the file
stays well under a minute; nothing is timed."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cbptt
from cbptt import archive, checkpoint, cli, data, datasets


# -- helpers ----------------------------------------------------------------------------------
def cbptt_cmd(*args, cwd, env=None, timeout=240):
    """Run `python -m cbptt ARGS` in cwd; returns the CompletedProcess (text)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "cbptt", *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def ok(*args, cwd, **kw):
    result = cbptt_cmd(*args, cwd=cwd, **kw)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def one_error_line(result, *fragments):
    """A user's mistake: exit 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def read_metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def val_losses(run):
    return [float(r["val_loss"]) for r in read_metrics(run) if r["val_loss"]]


def checkpoint_arrays(run):
    with np.load(run / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k != "__run__"}


WORDS = ("the model reads the stream and the state carries the past so the next step "
         "sees what came before it").split()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small text with structure, a CSV series with a header, the same as .npy, and some
    bad files."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(160):
        start = rng.integers(0, len(WORDS) - 6)
        sentences.append(" ".join(WORDS[start:start + rng.integers(3, 7)]).capitalize() + ".")
    (root / "text.txt").write_text("\n".join(sentences) + "\n")
    t = np.arange(300)
    a = np.sin(0.2 * t) + 0.05 * rng.normal(size=t.size)
    b = np.cos(0.13 * t)
    with open(root / "series.csv", "w") as f:
        f.write("time,a,b\n")
        f.writelines(f"{i},{a[i]:.6f},{b[i]:.6f}\n" for i in t)
    np.save(root / "series.npy", a)
    (root / "empty.txt").write_text("")
    (root / "words.csv").write_text("a,b\n1,2\n3,oops\n")
    (root / "ragged.csv").write_text("a,b\n1,2\n3\n")
    return root


# -- the command as a whole -------------------------------------------------------------------
def test_help_lists_every_command(tmp_path):
    result = ok("--help", cwd=tmp_path)
    for command in ("demo", "train", "sample", "predict", "translate", "plot", "bench"):
        assert command in result.stdout
    assert ok("--version", cwd=tmp_path).stdout.strip() == f"cbptt {cbptt.__version__}"


def test_quick_demo_learns_the_three_tasks(tmp_path):
    result = ok("demo", "--quick", "--plot", tmp_path / "demo.png", cwd=tmp_path)
    out = result.stdout
    mse_line = next(line for line in out.splitlines() if "for always guessing the mean" in line)
    mse, guess = _two_numbers(mse_line)
    assert mse < 0.05 < guess                          # clearly better than the mean
    bpc_line = next(line for line in out.splitlines() if "for the unigram frequencies" in line)
    bpc, unigram = _two_numbers(bpc_line)
    assert bpc < unigram - 0.5                         # context helps
    assert "sample (temperature 0.7):" in out and "| Return the" in out
    exact_line = next(line for line in out.splitlines() if "held-out exact match" in line
                      and "dates" in line)
    assert float(exact_line.split("match ")[1].split("%")[0]) > 20     # chance: ~0
    examples = [line for line in out.splitlines() if " -> " in line and "| " in line]
    assert len(examples) == 6
    if _has("matplotlib"):
        assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert 'pip install "cbptt[plot]"' in out
        assert not (tmp_path / "demo.png").exists()


def _two_numbers(line):
    numbers = []
    for word in line.replace("(", " ").replace(")", " ").split():
        try:
            numbers.append(float(word))
        except ValueError:
            pass
    return numbers[0], numbers[1]


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


def test_train_text_windows_writes_a_run_and_samples(files, tmp_path):
    result = ok("train", files / "text.txt", "--hidden", 24, "--window", 24, "--batch", 8,
                "--epochs", 3, "--lr", 1e-2, "--no-progress", cwd=tmp_path)
    runs = list((tmp_path / "runs").iterdir())          # the default: a new folder under runs/
    assert len(runs) == 1 and runs[0].name.endswith("-text")
    run = runs[0]
    assert {"checkpoint.npz", "config.json", "metrics.csv", "flow.csv"} <= {
        p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert "epoch 3/3" in result.stdout and "bpc" in result.stdout
    losses = val_losses(run)
    assert len(losses) == 3 and losses[-1] < losses[0]
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "char" and config["window"] == 24
    model = cbptt.load(run / "checkpoint.npz")        # the checkpoint is a model file too
    assert model.input_size == model.output_size == len(config["vocab"])

    text = ok("sample", run, "--prime", "The ", "-n", 60, "--seed", 3, cwd=tmp_path).stdout
    assert text.startswith("The ") and len(text.rstrip("\n")) >= 60
    assert set(text) - {"\n"} <= set(config["vocab"])
    again = ok("sample", run, "--prime", "The ", "-n", 60, "--seed", 3, cwd=tmp_path).stdout
    assert again == text
    greedy = ok("sample", run, "-n", 20, "--temperature", 0, cwd=tmp_path).stdout
    assert len(greedy.strip("\n")) > 0


RESUME_SETUPS = {
    "text-truncated-adam": ["text.txt", "--k1", 8, "--k2", 16, "--batch", 4],
    "csv-many-to-one-sgd": ["series.csv", "--columns", "a,b", "--target", "a", "--window", 12,
                            "--mode", "many-to-one", "--optimizer", "sgd", "--momentum", 0.9,
                            "--batch", 16],
    # the masks of a resumed run go on from its call count: the same run, bit for bit
    "text-truncated-dropout": ["text.txt", "--k1", 8, "--k2", 16, "--batch", 4, "--layers", 2,
                               "--dropout", 0.2, "--recurrent-dropout", 0.1],
    "csv-bidirectional-dropout": ["series.csv", "--columns", "a,b", "--target", "a",
                                  "--window", 12, "--mode", "many-to-one", "--bidirectional",
                                  "--layers", 2, "--dropout", 0.3, "--recurrent-dropout", 0.2,
                                  "--optimizer", "sgd", "--momentum", 0.9, "--batch", 16],
    # exact BPTT of each window within a workspace too small for the whole window, dropout's
    # masks keyed at each unit's steps
    "csv-memory-limit": ["series.csv", "--columns", "a,b", "--target", "a", "--window", 40,
                         "--optimizer", "sgd", "--momentum", 0.9, "--batch", 16,
                         "--val", 0.2, "--memory-limit", "160KiB", "--layers", 2,
                         "--dropout", 0.2, "--recurrent-dropout", 0.1],
}


@pytest.mark.parametrize("setup", sorted(RESUME_SETUPS))
def test_resumed_run_equals_uninterrupted_one(files, tmp_path, setup):
    data_file, *options = RESUME_SETUPS[setup]
    common = ["train", files / data_file, *options, "--hidden", 12, "--no-progress",
              "--checkpoint-every", 5, "--log-every", 3]
    ok(*common, "--epochs", 2, "--out", "straight", cwd=tmp_path)
    ok(*common, "--epochs", 1, "--out", "split", cwd=tmp_path)         # 1 epoch ...
    resumed = ok("train", "--resume", "split", "--epochs", 2, "--no-progress", cwd=tmp_path)
    assert "resuming split at epoch 2/2" in resumed.stdout              # ... + 1 more
    ok(*common, "--epochs", 2, "--out", "mid", "--max-steps", 7, cwd=tmp_path)   # mid-epoch
    assert checkpoint.load_checkpoint(tmp_path / "mid").run["progress"]["step"] == 7
    ok("train", "--resume", "mid", "--no-progress", cwd=tmp_path)

    straight = checkpoint_arrays(tmp_path / "straight")
    for other in ("split", "mid"):
        arrays = checkpoint_arrays(tmp_path / other)
        assert arrays.keys() == straight.keys()
        for name, value in straight.items():      # weights, optimiser state, stream state
            np.testing.assert_array_equal(arrays[name], value, err_msg=f"{other}: {name}")
        rows = [{k: v for k, v in r.items() if k != "seconds"}
                for r in read_metrics(tmp_path / other)]
        assert rows == [{k: v for k, v in r.items() if k != "seconds"}
                        for r in read_metrics(tmp_path / "straight")]
    if setup.startswith("text"):
        assert any(k.startswith("stream:ring") for k in straight)
    else:
        assert "optim:buffer" in straight
    done = ok("train", "--resume", "straight", "--no-progress", cwd=tmp_path)
    assert "already trained for 2 epochs" in done.stdout


def test_forecast_csv_train_and_predict(files, tmp_path):
    ok("train", files / "series.csv", "--columns", "a,b", "--target", "a", "--window", 16,
       "--hidden", 16, "--epochs", 6, "--lr", 1e-2, "--out", "run", "--no-progress",
       cwd=tmp_path)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["input_columns"] == ["a", "b"] and config["target_columns"] == ["a"]
    assert len(config["input_mean"]) == 2 and len(config["target_std"]) == 1
    losses = val_losses(tmp_path / "run")
    assert losses[-1] < losses[0]

    result = ok("predict", "run", files / "series.csv", "--output", "pred.csv", cwd=tmp_path)
    assert "forecasts written to pred.csv" in result.stderr
    with open(tmp_path / "pred.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["row", "a"]
    body = np.array(rows[1:], dtype=float)
    assert len(body) == 300 - 16 + 1
    np.testing.assert_array_equal(body[:, 0], np.arange(16, 16 + len(body)))  # row t+horizon
    with open(files / "series.csv", newline="") as f:
        actual = np.array([float(r["a"]) for r in csv.DictReader(f)])
    known = body[:-1]                               # the last forecast is beyond the data
    errors = known[:, 1] - actual[known[:, 0].astype(int)]
    assert np.sqrt(np.mean(errors ** 2)) < 0.5 * actual.std()    # in the data's units
    stdout = ok("predict", "run", files / "series.csv", cwd=tmp_path).stdout
    assert stdout == (tmp_path / "pred.csv").read_text()


def test_forecast_npy_many_to_many(files, tmp_path):
    result = ok("train", files / "series.npy", "--window", 20, "--horizon", 2, "--hidden", 8,
                "--epochs", 2, "--val", 0.2, "--out", "run", "--no-progress", cwd=tmp_path)
    assert "rmse" in result.stdout
    lines = ok("predict", "run", files / "series.npy", cwd=tmp_path).stdout.splitlines()
    assert lines[0] == "row,0" and lines[1].startswith("21,")          # 20 - 1 + 2
    assert len(lines) == 1 + 300 - 20 + 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(files, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbptt", "train", str(files / "text.txt"), "--k1", "8",
         "--batch", "4", "--hidden", "8", "--epochs", "100000", "--checkpoint-every", "1000000",
         "--out", "run", "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        metrics = tmp_path / "run" / "metrics.csv"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "checkpoint saved; continue with: cbptt train --resume run" in err
    assert "Traceback" not in err
    step = checkpoint.load_checkpoint(tmp_path / "run").run["progress"]["step"]
    assert step > 0 and f"interrupted at step {step}" in err
    result = ok("train", "--resume", "run", "--max-steps", step + 3, "--no-progress",
                cwd=tmp_path)
    assert f"stopped at step {step + 3}" in result.stdout


def test_plot_without_matplotlib_says_how_to_get_it(files, tmp_path):
    ok("train", files / "series.npy", "--window", 10, "--hidden", 4, "--epochs", 1,
       "--out", "run", "--no-progress", cwd=tmp_path)
    blocker = tmp_path / "no_matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('blocked')\n")
    result = cbptt_cmd("plot", "run", cwd=tmp_path, env={"PYTHONPATH": str(blocker)})
    one_error_line(result, 'pip install "cbptt[plot]"')
    demo = cbptt_cmd("demo", "--quick", "--no-progress", cwd=tmp_path,
                     env={"PYTHONPATH": str(blocker)})
    assert demo.returncode == 0 and 'not drawn (matplotlib is not installed: pip install ' \
        '"cbptt[plot]")' in demo.stdout


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib (the plot extra) not installed")
def test_plot_draws_loss_curves_and_gradient_flow(files, tmp_path):
    ok("train", files / "series.npy", "--window", 10, "--hidden", 4, "--epochs", 2,
       "--out", "run", "--no-progress", cwd=tmp_path)
    result = ok("plot", "run", "-o", "curves.png", cwd=tmp_path)
    assert "wrote curves.png" in result.stdout
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_runs_the_suite_of_a_source_checkout(tmp_path):
    # a stand-in checkout: benchmarks/__main__.py records the arguments it was given
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("")
    (tmp_path / "benchmarks" / "__main__.py").write_text(
        "import sys\nprint('suite got', sys.argv[1:])\n")
    result = ok("bench", "--quick", "--threads", 1, cwd=tmp_path)
    assert "suite got ['--quick', '--threads', '1']" in result.stdout


def test_bench_outside_a_checkout_says_so(monkeypatch, capsys):
    monkeypatch.setattr("cbptt.cli.bench._benchmarks_root", lambda: None)
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "source checkout" in err


# -- a user's mistakes: one line, exit 2 ------------------------------------------------------
BAD = {
    "missing file": (["train", "{data}/nope.txt"], ["nope.txt: no such file"]),
    "empty file": (["train", "{data}/empty.txt"], ["empty.txt: the file is empty"]),
    "non-numeric cell": (["train", "{data}/words.csv"], ["line 3, column 'b'",
                                                          "'oops' is not a number"]),
    "ragged rows": (["train", "{data}/ragged.csv"], ["ragged.csv line 3", "ragged"]),
    "window longer than the series": (["train", "{data}/series.npy", "--window", "400"],
                                      ["window (400 rows)", "longer than"]),
    "unknown column": (["train", "{data}/series.csv", "--columns", "a,zz"],
                       ["no column 'zz'"]),
    "unknown cell": (["train", "{data}/text.txt", "--cell", "lstn"],
                     ["--cell", "invalid choice: 'lstn'"]),
    "unknown optimizer": (["train", "{data}/text.txt", "--optimizer", "rmsprop"],
                          ["--optimizer", "rmsprop"]),
    "bad number": (["train", "{data}/text.txt", "--lr", "-1"], ["--lr", "-1"]),
    "series option on text": (["train", "{data}/text.txt", "--horizon", "2"],
                              ["--horizon is for time series"]),
    "bidirectional text": (["train", "{data}/text.txt", "--bidirectional"],
                           ["--bidirectional is for series with --mode many-to-one"]),
    "dropout of 1": (["train", "{data}/text.txt", "--dropout", "1"], ["--dropout", "[0, 1)"]),
    "memory limit below the minimum": (["train", "{data}/series.csv", "--val", "0.2",
                                        "--memory-limit", "1KiB"],
                                       ["--memory-limit: 1.0 KiB is below the minimum"]),
    "memory limit with k1": (["train", "{data}/text.txt", "--k1", "8", "--memory-limit",
                              "1MiB"], ["--memory-limit bounds full-sequence BPTT"]),
    "no such run": (["sample", "nowhere"], ["nowhere: no such run folder"]),
    "unknown command": (["frobnicate"], ["invalid choice: 'frobnicate'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_line_and_exit_2(files, tmp_path, case):
    args, fragments = BAD[case]
    result = cbptt_cmd(*[a.format(data=files) for a in args], cwd=tmp_path)
    one_error_line(result, *fragments)
    assert not (tmp_path / "runs").exists()           # no run folder for data that failed


@pytest.mark.skipif(cbptt.memory.available_bytes() is None,
                    reason="the memory available is unknown here (MemAvailable is Linux's)")
def test_a_run_too_large_for_memory_is_refused_before_allocating(files, tmp_path):
    result = cbptt_cmd("train", files / "text.txt", "--hidden", 10 ** 7, cwd=tmp_path)
    err = one_error_line(result, "cbptt train: this run needs", "GiB of memory",
                         "a step's workspace", "available; use a smaller --hidden")
    needed = float(err.split("needs ")[1].split(" GiB")[0].replace(",", ""))
    params = cbptt.param_count("lstm", 1, 40, 10 ** 7, 40) * 4 / 2 ** 30
    assert needed > 5 * params > 5 * 1.4e6            # parameters, gradients, Adam's state
    assert not (tmp_path / "runs").exists()
    fits = ok("train", files / "text.txt", "--hidden", 8, "--epochs", 1, "--out", "run",
              "--no-progress", cwd=tmp_path)
    line = next(x for x in fits.stdout.splitlines() if x.startswith("memory: "))
    vocab = len(json.loads((tmp_path / "run" / "config.json").read_text())["vocab"])
    params = cbptt.param_count("lstm", 1, vocab, 8, vocab) * 4
    assert f"parameters {cbptt.memory.describe_bytes(params)}" in line


def test_mismatched_runs_give_one_line_and_exit_2(files, tmp_path):
    ok("train", files / "series.csv", "--columns", "a,b", "--window", 10, "--hidden", 8,
       "--epochs", 1, "--out", "run", "--no-progress", cwd=tmp_path)
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    # another shape: a series without the model's columns, another hidden size on resume
    one_error_line(cbptt_cmd("predict", "run", files / "series.npy", cwd=tmp_path),
                   "has no column 'a'")
    one_error_line(cbptt_cmd("train", "--resume", "run", "--hidden", 16, "--epochs", 2,
                             cwd=tmp_path), "--hidden 16 differs from the run's 8")
    one_error_line(cbptt_cmd("train", files / "series.csv", "--out", "run", cwd=tmp_path),
                   "already holds a run")
    one_error_line(cbptt_cmd("sample", "run", cwd=tmp_path), "not a character model")
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    # a damaged checkpoint, and a plain model file where a run is expected
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "checkpoint.npz").write_bytes(before[:len(before) // 2])
    one_error_line(cbptt_cmd("train", "--resume", "damaged", cwd=tmp_path), "damaged")
    (tmp_path / "model").mkdir()
    cbptt.RNN(2, 4, 1).save(tmp_path / "model" / "checkpoint.npz")
    one_error_line(cbptt_cmd("predict", "model", files / "series.csv", cwd=tmp_path),
                   "not a cbptt training checkpoint")


# -- the importable pieces --------------------------------------------------------------------
def test_read_csv_header_and_headerless(tmp_path):
    (tmp_path / "h.csv").write_text("x,y\n1,2\n3,4.5\n")
    (tmp_path / "n.csv").write_text("1,2\n3,4.5\n\n")
    values, names = data.read_csv(tmp_path / "h.csv")
    assert names == ["x", "y"] and values.tolist() == [[1, 2], [3, 4.5]]
    values, names = data.read_csv(tmp_path / "n.csv")
    assert names == ["0", "1"] and values.shape == (2, 2)
    assert data.select_columns(["x", "y", "z"], "z,0") == [2, 0]
    assert data.select_columns(["x", "y"], None) == [0, 1]
    with pytest.raises(data.DataError, match="out of range"):
        data.select_columns(["x", "y"], "5")
    (tmp_path / "nan.csv").write_text("a\n1\nnan\n")
    with pytest.raises(data.DataError, match="NaN"):
        data.read_csv(tmp_path / "nan.csv")


def test_windows_and_standardisation():
    series = np.arange(10.0)[:, None]
    X, Y = data.forecast_windows(series, series * 10, window=4, horizon=2, mode="many-to-one")
    assert X.shape == (5, 4, 1) and Y.shape == (5, 1)
    assert X[1, :, 0].tolist() == [1, 2, 3, 4] and Y[1, 0] == 60      # row 1 + 4 - 1 + 2
    X, Y = data.forecast_windows(series, series, window=4, horizon=1)
    assert Y.shape == (6, 4, 1) and Y[0, :, 0].tolist() == [1, 2, 3, 4]
    with pytest.raises(data.DataError, match="longer than the series"):
        data.forecast_windows(series, series, window=10, horizon=1)
    mean, std = data.fit_standardisation(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert mean.tolist() == [2, 5] and std.tolist() == [1, 1]          # constant column: 1
    z = data.standardise([[3.0, 7.0]], mean, std)
    np.testing.assert_allclose(data.unstandardise(z, mean, std), [[3.0, 7.0]])
    assert data.holdout_start(100, 0.1) == 90 and data.holdout_start(100, 0) == 100
    np.testing.assert_array_equal(data.last_windows(series, 9)[:, :, 0],
                                  [np.arange(9), np.arange(1, 10)])


def test_char_helpers():
    vocab = data.build_vocab("abcab")
    ids = data.encode("abcab", vocab)
    assert vocab == "abc" and ids.tolist() == [0, 1, 2, 0, 1]
    assert data.decode(ids, vocab) == "abcab"
    with pytest.raises(data.DataError, match="'z'"):
        data.encode("az", vocab)
    assert data.one_hot([[2, 0]], 3).tolist() == [[[0, 0, 1], [1, 0, 0]]]
    np.testing.assert_array_equal(data.char_windows(np.arange(9), 4),
                                  [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]])
    np.testing.assert_array_equal(data.char_streams(np.arange(9), 2),
                                  [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]])
    assert data.unigram_bits(np.array([0, 1, 0, 1]), 3) == pytest.approx(1.0)
    corpus = datasets.stdlib_docstrings(5000)
    assert len(corpus) == 5000 and corpus == datasets.stdlib_docstrings(5000)   # deterministic
    model = cbptt.RNN(3, 8, 3, cell="gru", seed=0)
    text = data.sample_chars(model, vocab, "ab", 25, temperature=0.5, rng=0)
    assert len(text) == 25 and set(text) <= set(vocab)
    assert text == data.sample_chars(model, vocab, "ab", 25, temperature=0.5, rng=0)
    loss = data.char_loss(model, data.encode("abcabcabcabc" * 4, vocab), window=None,
                          streams=2, chunk=5)
    assert 0 < loss < 2 * np.log(3)


@pytest.mark.parametrize("make", [lambda: cbptt.Adam(lr=1e-2),
                                  lambda: cbptt.SGD(lr=1e-2, momentum=0.9)],
                         ids=["adam", "sgd-momentum"])
def test_optimizer_state_round_trip(make):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=5) for _ in range(6)]
    params, opt = np.ones(5), make()
    for g in grads[:3]:
        opt.step(params, g.copy())
    saved, saved_params = checkpoint.optimizer_arrays(opt), params.copy()
    for g in grads[3:]:
        opt.step(params, g.copy())
    restored_params, restored = saved_params.copy(), make()
    checkpoint.restore_optimizer(restored, saved, restored_params)
    assert restored.steps == 3
    for g in grads[3:]:
        restored.step(restored_params, g.copy())
    np.testing.assert_array_equal(restored_params, params)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    archive.atomic_write(path, lambda f: f.write(b"old"))

    def fails(f):
        f.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        archive.atomic_write(path, fails)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]        # no temp file left


def test_truncated_stream_state_round_trip():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(2, 30, 3)), rng.normal(size=(2, 30, 1))

    def trainer():
        return cbptt.Truncated(cbptt.RNN(3, 5, 1, cell="lstm", seed=0), k1=4, k2=7,
                               optimizer=cbptt.Adam(lr=1e-2))
    a = trainer()
    a.step(X[:, :13], Y[:, :13])
    b = trainer()
    b.model.params[...] = a.model.params
    checkpoint.restore_optimizer(b.optimizer, checkpoint.optimizer_arrays(a.optimizer),
                                 b.model.params)
    checkpoint.restore_stream(b, checkpoint.stream_arrays(a))
    assert a.step(X[:, 13:], Y[:, 13:]) == b.step(X[:, 13:], Y[:, 13:])
    np.testing.assert_array_equal(a.model.params, b.model.params)


def test_progress_without_tqdm_prints_steps_and_rate(monkeypatch):
    import io
    monkeypatch.setattr("cbptt.fit_progress._tqdm", lambda: None)
    stream = io.StringIO()
    bar = cbptt.fit_progress.StepBar(3, "epoch 1/1", stream=stream)
    for loss in (3.0, 2.0, 1.0):
        bar.update(1, loss)
    bar.close()
    assert "epoch 1/1  step 3/3  loss 1.0000" in stream.getvalue()
    assert "steps/s" in stream.getvalue()


def test_info_says_what_runs_here(tmp_path):
    from cbptt import _isa
    out = ok("info", cwd=tmp_path).stdout
    assert f"isa_in_use: {_isa.isa_in_use()}" in out and "isa_compiled:" in out
    assert "library:" in out and "threads:" in out and "team_available:" in out
    capped = ok("info", cwd=tmp_path, env={"CBPTT_ISA": "baseline"}).stdout
    assert "isa_in_use: baseline" in capped and "panels: False" in capped


def test_an_unknown_instruction_set_is_one_line(tmp_path):
    one_error_line(cbptt_cmd("info", cwd=tmp_path, env={"CBPTT_ISA": "avx9000"}),
                   "CBPTT_ISA", "baseline, avx2, avx512")


def test_train_text_through_an_embedding_resumes_and_samples(files, tmp_path):
    """--embedding E: the characters go through a table of E columns (vocab_size = the
    text's vocabulary); the run resumes as any other, samples, and its checkpoint loads as
    the model; --embedding on a series, or a different one on resume, is one line, exit 2."""
    run = tmp_path / "emb"
    ok("train", str(files / "text.txt"), "--embedding", "6", "--hidden", "16", "--k1", "8",
       "--epochs", "1", "--no-progress", "--out", str(run), cwd=tmp_path)
    model = cbptt.load(run / "checkpoint.npz")
    assert model.input_size == 6 and model.vocab_size == model.output_size
    assert np.abs(model.state_dict()["embedding.weight"]).max() > 0
    ok("train", "--resume", str(run), "--epochs", "2", "--no-progress", cwd=tmp_path)
    assert len(val_losses(run)) == 2
    assert ok("sample", str(run), cwd=tmp_path).stdout.strip()
    one_error_line(cbptt_cmd("train", "--resume", str(run), "--embedding", "7",
                             cwd=tmp_path), "--embedding 7 differs")
    one_error_line(cbptt_cmd("train", str(files / "series.csv"), "--embedding", "4",
                             cwd=tmp_path), "--embedding is for text files")
