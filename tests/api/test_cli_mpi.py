"""`cbptt train` under `mpiexec -n 2`: the same run as one process (same global batches, float64
weights to rounding), one writer of the run folder, an exact 2-rank resume, and a user's
mistake on any rank ending every rank with one line and exit code 2. Skipped like the other
MPI tests where mpi4py or mpiexec are missing (never with CBPTT_REQUIRE_MPI=1)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cbptt
from cbptt import dates

from helpers import find_mpiexec, needs_mpi

RANKS = 2
# no launcher variables in the one-process runs (pytest itself might run under a launcher)
LAUNCHER = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
            "SLURM_STEP_NUM_TASKS")
ENV = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
ENV.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
CSV_ARGS = ("--hidden", 8, "--epochs", 2, "--batch", 7, "--window", 6, "--val", 0.2,
            "--log-every", 3, "--checkpoint-every", 10, "--dtype", "float64", "--no-progress")
TXT_ARGS = ("--k1", 8, "--k2", 8, "--batch", 5, "--hidden", 8, "--epochs", 3, "--cell", "gru",
            "--log-every", 2, "--checkpoint-every", 3, "--dtype", "float64", "--no-progress")


def run(*args, cwd, ranks=1, script=None):
    """`[mpiexec -n RANKS] python -m cbptt train ARGS` (or SCRIPT train ARGS) in cwd."""
    command = ([sys.executable] + ([script] if script else ["-m", "cbptt"]) + ["train"]
               + list(map(str, args)))
    if ranks > 1:
        command = [find_mpiexec(), "-n", str(ranks)] + command
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120, check=False)


def ok(*args, **kw):
    result = run(*args, **kw)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def weights(folder):
    return cbptt.load(os.path.join(folder, "checkpoint.npz")).params


def metrics(folder, name="metrics.csv"):
    """The rows without the seconds column."""
    with open(os.path.join(folder, name)) as f:
        rows = [line.rstrip("\n").split(",") for line in f]
    return [row[:-1] if name == "metrics.csv" else row for row in rows]


def same_losses(a, b):
    assert len(a) == len(b) and a[0] == b[0]
    for ra, rb in zip(a[1:], b[1:]):
        assert ra[:2] == rb[:2]
        got = [float(x) if x else np.nan for x in ra[2:]]
        want = [float(x) if x else np.nan for x in rb[2:]]
        np.testing.assert_allclose(got, want, rtol=2e-5)     # written with 6 digits


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_mpi")
    rng = np.random.default_rng(0)
    t = np.arange(240)
    with open(path / "small.csv", "w") as f:
        f.write("a,b\n")
        f.writelines(f"{np.sin(i / 5) + 0.1 * rng.normal():.5f},{np.cos(i / 7):.5f}\n"
                     for i in t)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "cat"]
    text = " ".join(rng.choice(words, size=160)) + ".\n"
    (path / "small.txt").write_text(text)
    (path / "small.tsv").write_text("".join(f"{s}\t{t}\n"
                                            for s, t in dates.date_pairs(60, seed=0)))
    return str(path)


@needs_mpi
@pytest.mark.parametrize("kind,args", [("csv", CSV_ARGS), ("txt", TXT_ARGS)])
def test_two_ranks_equal_one_process_with_one_writer(folder, kind, args):
    one, two = os.path.join(folder, f"one_{kind}"), os.path.join(folder, f"two_{kind}")
    single = ok(f"small.{kind}", *args, "--out", one, cwd=folder)
    double = ok(f"small.{kind}", *args, "--out", two, cwd=folder, ranks=RANKS)
    np.testing.assert_allclose(weights(two), weights(one), rtol=1e-10, atol=1e-13)
    same_losses(metrics(two), metrics(one))        # a second writer would double the rows
    assert metrics(two, "flow.csv") == metrics(one, "flow.csv")
    assert double.stdout.count("run folder:") == 1 and double.stdout.count("done:") == 1
    assert "data-parallel over 2 processes" in double.stdout
    assert double.stderr.strip() == single.stderr.strip() == ""
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))   # no stray temporary files


@needs_mpi
def test_two_ranks_train_an_encoder_decoder_as_one_process(folder):
    """--mode seq2seq: each rank pads its own rows of a batch; the update is the global
    batch's (the loss's mean over every rank's target characters)."""
    args = ("--mode", "seq2seq", "--cell", "gru", "--hidden", 8, "--epochs", 2, "--batch", 6,
            "--val", 0.2, "--log-every", 3, "--checkpoint-every", 5, "--dtype", "float64",
            "--no-progress")
    one, two = os.path.join(folder, "one_tsv"), os.path.join(folder, "two_tsv")
    ok("small.tsv", *args, "--out", one, cwd=folder)
    double = ok("small.tsv", *args, "--out", two, cwd=folder, ranks=RANKS)
    np.testing.assert_allclose(weights(two), weights(one), rtol=1e-10, atol=1e-13)
    same_losses(metrics(two), metrics(one))
    assert double.stdout.count("done:") == 1
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))


@needs_mpi
def test_two_rank_resume_equals_an_uninterrupted_two_rank_run(folder):
    """Stopped mid-epoch (between checkpoints of the carried streams), then resumed."""
    ok("small.txt", *TXT_ARGS, "--out", "full", cwd=folder, ranks=RANKS)
    ok("small.txt", *TXT_ARGS, "--out", "parts", "--max-steps", 17, cwd=folder, ranks=RANKS)
    resumed = ok("--resume", "parts", "--no-progress", cwd=folder, ranks=RANKS)
    assert resumed.stdout.count("resuming parts") == 1
    np.testing.assert_allclose(weights(os.path.join(folder, "parts")),
                               weights(os.path.join(folder, "full")), rtol=1e-12, atol=1e-15)
    same_losses(metrics(os.path.join(folder, "parts")), metrics(os.path.join(folder, "full")))
    # the checkpoint holds the whole stream: one process continues it as well
    ok("small.txt", *TXT_ARGS, "--out", "mixed", "--max-steps", 17, cwd=folder, ranks=RANKS)
    ok("--resume", "mixed", "--no-progress", cwd=folder)
    np.testing.assert_allclose(weights(os.path.join(folder, "mixed")),
                               weights(os.path.join(folder, "full")), rtol=1e-10, atol=1e-13)


def one_line_exit_2(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@needs_mpi
def test_user_errors_end_every_rank_with_one_line(folder):
    one_line_exit_2(run("missing.txt", cwd=folder, ranks=RANKS), "missing.txt")
    one_line_exit_2(run("small.txt", "--k1", 8, "--batch", 1, cwd=folder, ranks=RANKS),
                    "--batch 1 streams cannot be split over 2 processes")


@needs_mpi
def test_an_error_on_rank_1_only_ends_every_rank(folder, tmp_path):
    script = tmp_path / "rank1_fails.py"
    script.write_text(
        "import sys\n"
        "from mpi4py import MPI\n"
        "from cbptt import cli, data\n"
        "from cbptt.cli import tasks\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    def make_task(config):\n"
        "        raise data.DataError(config['data'] + ': unreadable here')\n"
        "    tasks.make_task = make_task\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    result = run("small.txt", "--out", "never", cwd=folder, ranks=RANKS, script=str(script))
    one_line_exit_2(result, "cbptt train: rank 1: ", "small.txt: unreadable here")


def test_one_process_does_not_import_mpi4py(tmp_path):
    (tmp_path / "s.txt").write_text("abcab " * 100)
    code = ("import sys\nfrom cbptt import cli\n"
            "assert cli.main(['train', 's.txt', '--k1', '4', '--batch', '2', '--hidden', '4',"
            " '--epochs', '1', '--out', 'r', '--no-progress']) == 0\n"
            "assert 'mpi4py' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
