"""Data-parallel training over MPI (cbptt.distributed): 2 ranks against one process.

Two launches of ``mpiexec -n 2 python tests/mpi_worker.py`` cover everything: one runs every
trainer x cell x (even, uneven) shard configuration and the collective failures, caught on
every rank; the other lets a rank's bad input go uncaught, and must end both processes with
the message instead of hanging. Skipped where mpi4py or mpiexec are missing
(pip install -e ".[mpi]" brings both).
"""
import json
import os
import subprocess
import sys

import pytest

from cbptt.distributed import _import_mpi, shard

from helpers import CELLS, find_mpiexec, needs_mpi

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(TESTS, "mpi_worker.py")
RANKS = 2
TOLERANCE = 1e-12
KINDS = ("many_to_many", "many_to_one", "truncated", "truncated_many_to_one", "seq2seq",
         "embedding", "dropout", "bounded", "bounded_seq2seq")
CONFIGS = [f"{kind}/{cell}/B={b}" for kind in KINDS for cell in CELLS for b in (4, 3)]


def launch(mode, folder, timeout):
    out = os.path.join(folder, f"{mode}.json")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    proc = subprocess.run([find_mpiexec(), "-n", str(RANKS), sys.executable, WORKER, mode, out],
                          check=False, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("mpi"))
    proc, out = launch("equivalence", folder, timeout=180)
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"
    with open(out) as handle:
        data = json.load(handle)
    assert data["size"] == RANKS
    for rank, result in enumerate(data["ranks"]):
        assert "error" not in result, f"rank {rank}:\n{result['error']}"
    return data["ranks"]


@needs_mpi
@pytest.mark.parametrize("config", CONFIGS)
def test_two_ranks_match_one_process(results, config):
    """Same losses (every step), same weights after 4 steps, same carried stream state and
    fit_stream losses (Truncated), same loss_and_grad (loss, every gradient, the rank's rows
    of dL/dh0, the gradient flow), on both ranks, in float64."""
    for rank, result in enumerate(results):
        errors = dict(result["equivalence"][config])
        updates = errors.pop("updates")
        assert updates >= 4
        worst = max(errors, key=errors.get)
        assert errors[worst] <= TOLERANCE, (rank, config, errors)


@needs_mpi
def test_every_configuration_was_run(results):
    assert sorted(results[0]["equivalence"]) == sorted(CONFIGS)


def failure(results, name):
    return [result["failures"][name] for result in results]


@needs_mpi
def test_bad_input_on_one_rank_stops_every_rank_with_its_message(results):
    rank0, rank1 = failure(results, "bad_input")
    assert rank1 == {"type": "ValueError", "message": "X contains NaN or Inf"}
    assert rank0["type"] == "RuntimeError"
    assert "rank 1 failed: ValueError: X contains NaN or Inf" in rank0["message"]


@needs_mpi
def test_bad_input_mid_stream_stops_every_rank(results):
    rank0, rank1 = failure(results, "bad_input_truncated")
    assert rank1["type"] == "ValueError" and "streams" in rank1["message"]
    assert rank0["type"] == "RuntimeError" and "rank 1 failed: ValueError" in rank0["message"]


@needs_mpi
def test_non_finite_gradients_on_one_rank_raise_on_every_rank_naming_it(results):
    for outcome in failure(results, "non_finite"):
        assert outcome["type"] == "FloatingPointError"
        assert "rank(s) [1]" in outcome["message"]


@needs_mpi
def test_non_finite_with_skip_skips_on_every_rank(results):
    for outcome in failure(results, "non_finite_skip"):
        assert outcome["type"] is None
        assert any("rank(s) [1]" in w for w in outcome["warnings"])


@needs_mpi
def test_streams_of_different_lengths_are_refused_on_every_rank(results):
    for outcome in failure(results, "different_lengths"):
        assert outcome["type"] == "ValueError" and "disagree" in outcome["message"]


@needs_mpi
def test_drifted_weights_are_detected_on_every_rank(results):
    for outcome in failure(results, "drift"):
        assert outcome["type"] == "RuntimeError" and "drifted apart" in outcome["message"]


@needs_mpi
def test_different_models_are_refused_at_construction(results):
    for outcome in failure(results, "different_models"):
        assert outcome["type"] == "ValueError" and "rank(s) [1]" in outcome["message"]


@needs_mpi
def test_rank_0_weights_and_optimiser_state_are_broadcast(results):
    for outcome in failure(results, "optimizer_state_broadcast"):
        assert outcome["type"] is None


@needs_mpi
def test_uncaught_failure_ends_every_process_without_hanging(tmp_path):
    proc, _ = launch("crash", str(tmp_path), timeout=60)   # a hang fails as TimeoutExpired
    assert proc.returncode != 0
    assert "ValueError: X contains NaN or Inf" in proc.stderr
    assert "RuntimeError: DataParallel: rank 1 failed: ValueError: X contains NaN or Inf" \
        in proc.stderr


# -- no MPI needed ------------------------------------------------------------------------------
@pytest.mark.parametrize("total,size", [(3, 2), (4, 2), (10, 4), (2, 3), (7, 7), (0, 2)])
def test_shards_cover_the_batch_once_the_first_ranks_taking_one_more(total, size):
    parts = [shard(total, rank, size) for rank in range(size)]
    rows = [i for part in parts for i in range(total)[part]]
    assert rows == list(range(total))
    lengths = [len(range(total)[part]) for part in parts]
    assert lengths == sorted(lengths, reverse=True) and max(lengths) - min(lengths) <= 1


def test_shard_refuses_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        shard(4, 2, 2)
    with pytest.raises(TypeError):
        shard(4.0, 0, 2)


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # import mpi4py fails
    with pytest.raises(ImportError, match=r"cbptt\[mpi\]"):
        _import_mpi()
