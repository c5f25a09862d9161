"""The benchmark suite's rows of issue 19 (benchmarks/classify_*.py) at tiny shapes: they run from
``python -m benchmarks``, and every contender computes what cbptt computes (the warm-up losses
and the gradient of every parameter, the embedding's included), so the suite never times two
different things. Not a timing test: nothing here depends on how fast anything is."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if not (ROOT / "benchmarks" / "classify_grid.py").is_file():
    pytest.skip("the benchmarks folder of a source checkout is not here", allow_module_level=True)
sys.path.insert(0, str(ROOT))

from benchmarks import classify_contenders, classify_grid, classify_report, cli, grid, timing  # noqa: E402

TINY = {s.kind: s for s in classify_grid.CLASSIFY_SHAPES if s.name.endswith("-tiny")}
FAST = ["--repeats", "2", "--warmup", "2", "--rounds", "1", "--settle", "0", "--lead-in", "0",
        "--threads", "1", "--no-save"]
OPTS = SimpleNamespace(settle=0.0, lead_in=0.0, warmup=2, repeats=2, rounds=1, max_step=2.0, budget=30.0)
ROWS = [(kind, cell) for kind, (_, _, cells) in classify_grid.KINDS.items() for cell in cells]


def contender(name):
    c = next(c for c in classify_contenders.CLASSIFY_CONTENDERS if c.name == name)
    assert c.available() == (True, "")
    c.set_threads(1)
    return c


def gradients_of(name, case):
    """The contender's gradient at the row's starting parameters, before any step."""
    c = contender(name)
    c.setup(case, case.problem())
    try:
        return c.gradients()
    finally:
        c.teardown()


def assert_same_gradients(ours, theirs, rtol):
    assert set(theirs) == set(ours)
    for key, g in ours.items():
        scale = max(np.abs(g).max(), 1e-30)
        assert np.abs(theirs[key] - g).max() <= rtol * scale, key
        assert np.abs(g).max() > 0, key       # every parameter takes part


def test_the_problems():
    bidir = classify_grid.ClassifyCase(TINY["bidirectional"], "gru", np.float32)
    params, X, Y = bidir.problem()
    s = bidir.shape
    assert X.shape == (s.B, s.T, s.I) and X.dtype == np.float32 and Y.shape == (s.B, s.O)
    assert params["head.weight"].shape == (s.O, 2 * s.H) and "weight_hh_l0_reverse" in params
    embed = classify_grid.ClassifyCase(TINY["embedding"], "lstm", np.float32)
    params, X, Y = embed.problem()
    s = embed.shape
    assert X.shape == Y.shape == (s.B, s.T) and X.dtype == Y.dtype == np.int64
    assert 0 <= X.min() and X.max() < s.V and 0 <= Y.min() and Y.max() < s.O
    assert params["embedding.weight"].shape == (s.V, s.I)
    ids = classify_grid.ClassifyCase(TINY["ids"], "lstm", np.float32)
    _, X, _ = ids.problem()
    hot = classify_grid.one_hot(X, ids)
    assert hot.shape == X.shape + (ids.shape.V,) and (hot.argmax(axis=2) == X).all() and (hot.sum(axis=2) == 1).all()


def test_the_full_rows_are_the_issues_shapes():
    shapes = {s.name: s for s in classify_grid.CLASSIFY_SHAPES}
    embed, ids = shapes["embed"], shapes["ids"]
    assert (embed.V, embed.I, embed.H, embed.B, embed.T) == (10_000, 128, 256, 32, 50)
    assert (ids.V, ids.I, ids.O, ids.H, ids.B, ids.T) == (96, 96, 96, 128, 32, 64)
    one_way = {s.name: s for s in grid.SHAPES}
    for size in ("medium", "long"):
        b, g = shapes[f"bidir-{size}"], one_way[size]
        assert (b.B, b.T, b.I, b.H, b.O) == (g.B, g.T, g.I, g.H, g.O)
    # two directions, each the one-way row's work, and a head twice as wide
    medium = grid.Case(one_way["medium"], "gru", "many-to-one", np.float32)
    assert classify_grid.ClassifyCase(shapes["bidir-medium"], "gru", np.float32).flops() == 2 * medium.flops()


@pytest.mark.parametrize("kind,cell", [row for row in ROWS if row[0] != "ids"])     # ids: cbptt against itself
def test_torch_computes_cbptts_gradients(kind, cell):
    pytest.importorskip("torch")
    case = classify_grid.ClassifyCase(TINY[kind], cell, np.float64)
    assert_same_gradients(gradients_of("cbptt", case), gradients_of("torch", case), 1e-10)


def test_one_hot_computes_the_ids_gradients():
    case = classify_grid.ClassifyCase(TINY["ids"], "lstm", np.float64)
    assert_same_gradients(gradients_of("cbptt", case), gradients_of("one-hot", case), 1e-12)


@pytest.mark.parametrize("kind,cell", [("bidirectional", "lstm"), ("embedding", "gru")])
def test_jax_computes_cbptts_gradients_and_steps(kind, cell, monkeypatch):
    """The gradient at the start, then two training steps (the compiled update): the same
    losses as cbptt's."""
    pytest.importorskip("jax")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    case = classify_grid.ClassifyCase(TINY[kind], cell, np.float32)
    ours, jax = contender("cbptt"), contender("jax")
    problem = case.problem()
    try:
        for c in (ours, jax):
            c.setup(case, problem)
        assert_same_gradients(ours.gradients(), jax.gradients(), 1e-4)
        losses = [(ours.step(), jax.step()) for _ in range(2)]
    finally:
        ours.teardown()
        jax.teardown()
    np.testing.assert_allclose(*zip(*losses), rtol=1e-5)
    assert losses[1][0] < losses[0][0]


def test_the_rows_run_and_their_losses_agree():
    """Every kind and cell, with cbptt, one-hot and torch: the warm-up losses (two SGD steps)
    agree with cbptt's, and the second is below the first."""
    pytest.importorskip("torch")
    chosen = [contender(n) for n in ("cbptt", "one-hot", "torch")]
    rows = [timing.run_case(case, chosen, OPTS, 1) for case in
            classify_grid.cases(TINY.values(), classify_grid.KINDS["bidirectional"][2],
                                ["many-to-one", "many-to-many"], np.float32)]
    assert [(row["kind"], row["cell"]) for row in rows] == ROWS
    for row in rows:
        peer = "one-hot" if row["kind"] == "ids" else "torch"
        assert set(row["contenders"]) == {"cbptt", peer}, row["left_out"]
        assert row["loss_check"][peer]["ok"], row["loss_check"]
        losses = row["contenders"]["cbptt"]["warmup_losses"]
        assert losses[1] < losses[0]


def test_targets_say_whether_a_row_meets_them():
    def row(kind, cell, **ms):
        return {"kind": kind, "cell": cell, "contenders": {n: {"median_ms": t} for n, t in ms.items()}}
    assert classify_report.target_cell(row("bidirectional", "lstm", cbptt=1.0, torch=1.3, jax=1.9)) == \
        "≥1.2× torch: yes · ≥2× jax: no"
    assert classify_report.target_cell(row("embedding", "gru", cbptt=1.0, torch=2.9)) == "≥3× torch: no"
    assert classify_report.target_cell(row("ids", "lstm", cbptt=2.0, **{"one-hot": 3.0})) == "≥1.5× one-hot: yes"


def test_python_m_benchmarks_prints_the_table(capsys):
    cli.main(["--shapes", "bidir-tiny,embed-tiny,ids-tiny", "--cells", "lstm",
              "--contenders", "cbptt,one-hot"] + FAST)
    out = capsys.readouterr().out
    lines = [line.split(" | ") for line in out.splitlines() if line.startswith("| 1 | ")]
    assert [line[2] for line in lines] == ["bidirectional many-to-one", "embedding many-to-many",
                                           "ids many-to-many"]
    assert all(float(line[4]) > 0 for line in lines)                         # cbptt ms
    assert [line[5] == "n/a" for line in lines] == [True, True, False]      # one-hot: the ids row only
    assert "shape (B, T, I, H, O[, V])" in out and "Issue 19's rows" in out


def test_shape_names():
    opts = cli.parse_args(["--shapes", "bidir,ids"])
    assert opts.shapes == ["bidir-medium", "bidir-long", "ids"]
    assert {"bidir-medium", "bidir-long", "embed", "ids"} <= set(cli.parse_args([]).shapes)
    with pytest.raises(SystemExit, match="no rows"):
        cli.main(["--shapes", "ids", "--cells", "tanh"] + FAST)        # the ids rows are lstm only
