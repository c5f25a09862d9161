"""The benchmark suite's seq2seq rows (benchmarks/seq2seq_*.py) at a tiny shape: they run from
``python -m benchmarks``, and their contenders compute what cbptt computes (the first losses of a
training step, the ids of greedy and beam decoding), so the suite never times two different things.
Not a timing test: nothing here depends on how fast anything is."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if not (ROOT / "benchmarks" / "seq2seq_grid.py").is_file():
    pytest.skip("the benchmarks folder of a source checkout is not here", allow_module_level=True)
sys.path.insert(0, str(ROOT))

from benchmarks import cli, contenders, seq2seq_contenders, seq2seq_grid, timing  # noqa: E402

TINY = next(s for s in seq2seq_grid.SEQ2SEQ_SHAPES if s.name == "s2s-tiny")
FAST = ["--repeats", "2", "--warmup", "2", "--rounds", "1", "--settle", "0", "--lead-in", "0",
        "--threads", "1", "--no-save"]
OPTS = SimpleNamespace(settle=0.0, lead_in=0.0, warmup=2, repeats=2, rounds=1, max_step=2.0, budget=30.0)


def rows_of(cell, names):
    """Every kind of row (training, greedy, beam) of the tiny shape, run by the named contenders."""
    chosen = [c for c in seq2seq_contenders.SEQ2SEQ_CONTENDERS if c.name in names]
    for c in chosen:
        assert c.available() == (True, "")
        c.set_threads(1)
    return [timing.run_case(case, chosen, OPTS, 1)
            for case in seq2seq_grid.cases([TINY], [cell], list(seq2seq_grid.KINDS), np.float32)]


def test_the_problem_is_one_hot_teacher_forcing():
    case = seq2seq_grid.Seq2SeqCase(TINY, "lstm", "seq2seq", np.float32)
    params, X, Y_in, Y_out = case.problem()
    assert X.shape == (TINY.B, TINY.T, TINY.I) and X.dtype == np.float32
    assert (X.sum(axis=2) == 1).all() and (Y_in.sum(axis=2) == 1).all()
    # Y_in: the start id, then the targets shifted right
    assert (Y_in[:, 0].argmax(axis=1) == seq2seq_grid.START).all()
    np.testing.assert_array_equal(Y_in[:, 1:].argmax(axis=2), Y_out[:, :-1])
    assert "head.weight" not in params["encoder"] and params["decoder"]["head.weight"].shape == (TINY.O, TINY.H)


@pytest.mark.parametrize("cell", seq2seq_grid.SEQ2SEQ_CELLS)
def test_torch_trains_and_decodes_as_cbptt(cell):
    pytest.importorskip("torch")
    rows = rows_of(cell, ("cbptt", "torch"))
    assert [row["trainer"] for row in rows] == ["seq2seq", "greedy", "beam-5"]
    for row in rows:
        check = row["loss_check"]["torch"]
        assert check["ok"], (row["trainer"], check)
        assert set(row["contenders"]) == {"cbptt", "torch"}
    losses = rows[0]["contenders"]["cbptt"]["warmup_losses"]
    assert abs(losses[0] - np.log(TINY.O)) < 0.1 * np.log(TINY.O)   # a fresh model: near uniform
    assert losses[1] < losses[0]                                      # the SGD step lowered it
    assert rows[1]["loss_check"]["torch"]["what"] == "ids"


def test_beam_ids_that_differ_are_caught():
    a = np.arange(12).reshape(3, 4)
    b = a.copy()
    b[1, 2] += 1
    assert contenders.same_outputs(a, a)["ok"]
    check = contenders.same_outputs(a, b)
    assert not check["ok"] and check["max_rel_diff"] == pytest.approx(1 / 12)


def test_jax_trains_as_cbptt(monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    train, greedy, beam = rows_of("gru", ("cbptt", "jax"))
    assert train["loss_check"]["jax"]["ok"], train["loss_check"]
    assert train["contenders"]["jax"]["compile_ms"] > 0
    assert greedy["left_out"]["jax"] == beam["left_out"]["jax"] == "n/a"       # decoding: training rows only


def test_python_m_benchmarks_prints_the_seq2seq_table(capsys):
    cli.main(["--shapes", "s2s-tiny", "--cells", "lstm", "--trainers", "seq2seq,greedy,beam-5",
              "--contenders", "cbptt"] + FAST)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| 1 | s2s-tiny")]
    assert [line.split(" | ")[2] for line in lines] == ["seq2seq", "greedy", "beam-5"]
    assert all(float(line.split(" | ")[4]) > 0 for line in lines)       # cbptt ms
    assert "shape (B, T, U, I, J, O, H)" in out and "Encoder-decoder (cbptt.Seq2Seq)" in out


def test_a_seq2seq_kind_on_a_grid_shape_only_is_no_rows():
    with pytest.raises(SystemExit, match="no rows"):
        cli.main(["--shapes", "small", "--trainers", "greedy"] + FAST)
