"""Run under ``mpiexec -n K python tests/mpi_worker.py MODE OUT`` by tests/api/test_distributed.py.

MODE "equivalence": for every trainer and cell, K ranks under DataParallel against one
process on the whole batch (every rank also runs the single-process reference locally);
then the collective failures, caught on every rank so that one launch covers them all.
Rank 0 writes what every rank saw to OUT as JSON.

MODE "crash": rank 1 gets bad input and nobody catches anything: every process must exit
with an error (the test checks the exit status, stderr and that nothing hangs).
"""
import json
import sys
import traceback
import warnings

import numpy as np
from mpi4py import MPI

import cbptt
from cbptt.distributed import DataParallel, shard

from helpers import CELLS

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
I, H, O = 3, 5, 2


def make(kind, cell, seed=0, hidden=H):
    """The same trainer, made as every rank would make it (weights seeded differently per
    rank for the wrapped one, to show the broadcast puts rank 0's everywhere)."""
    model = cbptt.RNN(I, hidden, O, cell=cell, num_layers=2 if cell in ("tanh", "gru") else 1,
                      dtype=np.float64, seed=seed)
    if kind == "many_to_many":
        return cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.Adam(lr=0.05),
                                clip_norm=0.5)
    if kind == "many_to_one":
        return cbptt.ManyToOne(model, loss="cross_entropy",
                               optimizer=cbptt.SGD(lr=0.3, momentum=0.9, nesterov=True))
    if kind == "truncated":
        return cbptt.Truncated(model, k1=3, k2=5, loss="mse",
                               optimizer=cbptt.SGD(lr=0.2, momentum=0.5), clip_norm=1.0)
    if kind == "embedding":     # token ids in [0, 6) through a table of 6 rows
        model = cbptt.RNN(I, hidden, O, cell=cell, num_layers=model.num_layers,
                          dtype=np.float64, seed=seed, vocab_size=6, padding_idx=1)
        return cbptt.ManyToMany(model, loss="cross_entropy", optimizer=cbptt.Adam(lr=0.05))
    if kind == "dropout":       # masks of the global rows: each rank draws its rows' masks
        model = cbptt.RNN(I, hidden, O, cell=cell, num_layers=2, dtype=np.float64, seed=seed,
                          dropout=0.3, recurrent_dropout=0.25)
        return cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.Adam(lr=0.05), seed=11)
    if kind == "bounded":       # each rank's step within a limit it needs checkpoints for
        limit = cbptt.plan_memory(model, 4, 7, "1GiB").minimum_bytes
        return cbptt.ManyToMany(model, loss="mse", optimizer=cbptt.Adam(lr=0.05),
                                memory_limit=limit)
    if kind in ("seq2seq", "bounded_seq2seq"):
        encoder = cbptt.RNN(I, hidden, None, cell=cell, num_layers=model.num_layers,
                            dtype=np.float64, seed=seed + 1)
        limit = None        # bounded: the encoder's 40 steps by checkpoints (see batch)
        if kind == "bounded_seq2seq":
            limit = cbptt.plan_memory((encoder, model), 4, (40, 4), "1TiB",
                                      trainer="seq2seq").minimum_bytes
        return cbptt.Seq2Seq(encoder, model, loss="cross_entropy",
                             optimizer=cbptt.Adam(lr=0.05), clip_norm=0.5, memory_limit=limit)
    if kind == "truncated_many_to_one":
        return cbptt.Truncated(model, k1=2, k2=4, loss="cross_entropy", many_to_one=True,
                               optimizer=cbptt.Adam(lr=0.02))
    raise ValueError(kind)


def batch(kind, rng, B, T):
    """Global data of one call: (X, Y, extras) with extras keyed as step() takes them."""
    X = rng.normal(size=(B, T, I))
    if kind in ("many_to_many", "truncated", "dropout", "bounded"):
        Y = rng.normal(size=(B, T, O))
        mask = (rng.random((B, T)) < 0.75).astype(float)
        mask[:, 0] = 1                                  # no fully masked block by accident
        return X, Y, {"mask": mask}
    if kind == "embedding":
        return rng.integers(0, 6, size=(B, T)), rng.integers(0, O, size=(B, T)), {}
    if kind in ("seq2seq", "bounded_seq2seq"):  # Y: the decoder's inputs; 4 outputs
        return X, rng.normal(size=(B, 4, I)), {
            "Y_out": rng.integers(0, O, size=(B, 4)),
            "src_lengths": rng.integers(1, T + 1, size=B),
            "tgt_lengths": rng.integers(1, 5, size=B)}
    y = rng.integers(0, O, size=B)
    if kind == "many_to_one":
        return X, y, {"lengths": rng.integers(1, T + 1, size=B)}
    return X, y, {}


def rel_err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / (1e-300 + np.maximum(1.0, np.abs(b)))))


def equivalence():
    out = {}
    for kind in ("many_to_many", "many_to_one", "truncated", "truncated_many_to_one",
                 "seq2seq", "embedding", "dropout", "bounded", "bounded_seq2seq"):
        for cell in CELLS:
            for B in (4, 3):                     # even shards, and 3 sequences on 2 ranks
                name = f"{kind}/{cell}/B={B}"
                reference = make(kind, cell, seed=0)
                dp = DataParallel(make(kind, cell, seed=0 if rank == 0 else 100 + rank),
                                  check_every=2)
                part = dp.shard(B)
                rng = np.random.default_rng(7)
                worst = {"loss": 0.0, "weights": 0.0}
                # truncated: blocks 3 + 3 + 2; bounded_seq2seq: sources to checkpoint
                T = {"truncated": 8, "bounded_seq2seq": 40}.get(kind, 7)
                for _ in range(4):
                    X, Y, extras = batch(kind, rng, B, T)
                    local = {k: v[part] for k, v in extras.items()}
                    got = dp.step(X[part], Y[part], **local)
                    want = reference.step(X, Y, **extras)
                    worst["loss"] = max(worst["loss"], rel_err(got, want))
                worst["weights"] = rel_err(dp.model.params, reference.model.params)
                if kind == "truncated":              # the carried stream state, this rank's
                    mine, whole = dp.state, reference.state
                    if cell == "lstm":
                        worst["state"] = max(rel_err(mine[0], whole[0][:, part]),
                                             rel_err(mine[1], whole[1][:, part]))
                    else:
                        worst["state"] = rel_err(mine, whole[:, part])
                    X, Y, extras = batch(kind, rng, B, 12)
                    got = dp.fit_stream(X[part], Y[part], mask=extras["mask"][part],
                                        chunk_steps=6)
                    want = reference.fit_stream(X, Y, mask=extras["mask"], chunk_steps=6)
                    worst["fit_stream"] = rel_err(got, want)
                    worst["weights_after_fit_stream"] = rel_err(dp.model.params,
                                                                reference.model.params)
                if kind in ("many_to_many", "many_to_one", "seq2seq", "embedding", "dropout",
                            "bounded", "bounded_seq2seq"):
                    X, Y, extras = batch(kind, rng, B, T)
                    local = {k: v[part] for k, v in extras.items()}
                    want_flow = {"return_flow": True} if kind in ("many_to_many",
                                                                  "many_to_one") else {}
                    loss, grads, *flow = dp.loss_and_grad(X[part], Y[part], **want_flow,
                                                          **local)
                    rloss, rgrads, *rflow = reference.loss_and_grad(X, Y, **want_flow, **extras)
                    worst["loss_and_grad"] = max(
                        [rel_err(loss, rloss)] + [rel_err(a, b) for a, b in zip(flow, rflow)]
                        + [rel_err(grads[k], rgrads[k][:, part] if k in ("h0", "c0")
                                   else rgrads[k]) for k in rgrads])
                worst["updates"] = dp.updates
                out[name] = worst
    return out


def outcome(function):
    """What a collective failure did on this rank: (exception type, message) or None."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            function()
    except Exception as exc:                     # noqa: BLE001 - recorded for the test
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": None, "warnings": [str(w.message) for w in caught]}


def failures():
    out = {}
    rng = np.random.default_rng(3)
    X, Y, _ = batch("many_to_many", rng, 4, 6)
    part = shard(4, rank, size)

    def bad_input():
        dp = DataParallel(make("many_to_many", "lstm"))
        dp.step(X[part], Y[part])                           # a good step first
        Xr = X[part].copy()
        if rank == 1:
            Xr[0, 2, 1] = np.nan
        dp.step(Xr, Y[part])
    out["bad_input"] = outcome(bad_input)

    def bad_input_truncated_mid_stream():
        dp = DataParallel(make("truncated", "gru"))
        dp.step(X[part], Y[part])
        dp.step(X[part][:1] if rank == 1 else X[part], Y[part])    # wrong number of streams
    out["bad_input_truncated"] = outcome(bad_input_truncated_mid_stream)

    def non_finite():
        dp = DataParallel(make("many_to_many", "tanh"))
        Yr = Y[part].copy()
        if rank == 1:
            Yr[0, 0, 0] = 1e200                                # finite, but its square is not
        dp.step(X[part], Yr)
    out["non_finite"] = outcome(non_finite)

    def non_finite_skip():
        trainer = make("many_to_many", "relu")
        trainer.on_nonfinite = "skip"
        dp = DataParallel(trainer)
        before = dp.model.params.copy()
        Yr = Y[part].copy()
        if rank == 1:
            Yr[0, 0, 0] = 1e200
        dp.step(X[part], Yr)
        assert np.array_equal(before, dp.model.params), "weights moved on a skipped update"
        assert trainer.skipped_updates == 1
    out["non_finite_skip"] = outcome(non_finite_skip)

    def streams_of_different_lengths():
        dp = DataParallel(make("truncated", "tanh"))
        steps = 6 if rank == 0 else 3            # two blocks of k1 = 3 steps, or one
        dp.step(X[part][:, :steps], Y[part][:, :steps])
    out["different_lengths"] = outcome(streams_of_different_lengths)

    def drift():
        dp = DataParallel(make("many_to_many", "gru"), check_every=1)
        dp.step(X[part], Y[part])
        if rank == 1:
            dp.model.params[0] += 1e-6
        dp.step(X[part], Y[part])
    out["drift"] = outcome(drift)

    def different_models():
        DataParallel(make("many_to_many", "tanh", hidden=H + rank))
    out["different_models"] = outcome(different_models)

    def optimizer_state_broadcast():
        trainer = make("many_to_many", "lstm", seed=rank)
        if rank == 0:                                  # rank 0 has trained: Adam has moments
            trainer.step(X[:2], Y[:2])
        dp = DataParallel(trainer)
        opt = dp.optimizer
        state = np.concatenate([dp.model.params, opt.exp_avg, opt.exp_avg_sq, [opt.steps]])
        everyone = comm.allgather(state)
        assert all(np.array_equal(s, everyone[0]) for s in everyone), "state differs"
    out["optimizer_state_broadcast"] = outcome(optimizer_state_broadcast)
    return out


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "crash":
        dp = DataParallel(make("many_to_one", "tanh"))
        rng = np.random.default_rng(0)
        X, y, _ = batch("many_to_one", rng, 4, 5)
        part = dp.shard(4)
        dp.step(X[part], y[part])
        Xr = X[part].copy()
        if rank == 1:
            Xr[:] = np.inf
        dp.step(Xr, y[part])                   # rank 1: ValueError; rank 0: RuntimeError
        return
    try:
        result = {"equivalence": equivalence(), "failures": failures()}
    except Exception:                         # noqa: BLE001 - reported, then every rank stops
        result = {"error": traceback.format_exc()}
    everyone = comm.gather(result, root=0)
    if rank == 0:
        with open(path, "w") as handle:
            json.dump({"size": size, "ranks": everyone}, handle, indent=1)


if __name__ == "__main__":
    main()
