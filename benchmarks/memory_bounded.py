"""Memory-bounded BPTT: time and memory of a step within ``memory_limit`` against the
unbounded step, and against PyTorch with ``torch.utils.checkpoint`` over segments.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.memory_bounded
    python -m benchmarks.memory_bounded --cells lstm --steps 10000,100000 --million

Rows: LSTM and GRU, H=128, B=8, I=16, O=4, float32, many-to-many mse, an SGD step, one thread
(``--threads``); T from ``--steps``; limits as fractions of the unbounded step's workspace
(``memory.step_bytes``). Each row: the plan (leaf steps, units, checkpoints, recompute
factor), the step's median time against the unbounded step's (same process, alternating
blocks), and the bytes the step allocated (tracemalloc: the workspaces are made by the first
step). Where T is too long for the unbounded step to fit, its time is left out. ``--torch``
adds torch's LSTM/GRU with ``torch.utils.checkpoint`` over segments of the plan's leaf length
(its memory is then about the same: one segment's activations and a state a segment).
``--million``: one LSTM step of 1,000,000 steps within 256 MiB. ``--plot PNG`` draws the
time-memory trade-off (needs matplotlib). ``--seq2seq``: encoder-decoder rows instead (sources
of T steps, targets of T / 10, the limit shared by the two halves). ``--sqrt``: Chen et al.'s
sqrt(T) segments against the plan at the same limit and at half of it.
"""
import argparse
import json
import statistics
import time
import tracemalloc

import numpy as np

import cbptt

B, I, H, O = 8, 16, 128, 4


def problem(cell, steps, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, steps, I)).astype(np.float32)
    Y = rng.standard_normal((B, steps, O)).astype(np.float32)
    model = cbptt.RNN(I, H, O, cell=cell, dtype=np.float32, seed=seed)
    return model, X, Y


def timed(trainer, X, Y, repeats, base=None):
    """(median seconds a step, bytes the first step allocated, median / base's median or
    None): with base (another trainer) the two step in turn, so that a load that comes and
    goes weighs on both alike."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    trainer.step(X, Y)
    first = time.perf_counter() - t0
    allocated = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    if repeats == 0:           # the first step alone (workspaces made, tracemalloc on)
        return first, allocated, None
    times, base_times = [], []
    for _ in range(repeats):
        for who, into in ((trainer, times),) + (() if base is None else ((base, base_times),)):
            t0 = time.perf_counter()
            who.step(X, Y)
            into.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return median, allocated, None if base is None else median / statistics.median(base_times)


def torch_segments(cell, model, X, Y, segment, repeats):
    """torch's step with torch.utils.checkpoint over segments of `segment` steps."""
    import torch
    from torch.utils.checkpoint import checkpoint
    rnn, head = model.to_torch()
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-5)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)

    def run(xs, *state):
        out, final = rnn(xs, state if cell == "lstm" else state[0])
        final = final if cell == "lstm" else (final,)
        return (head(out),) + tuple(final)

    def step():
        optimizer.zero_grad()
        state = (torch.zeros(1, B, H),) * (2 if cell == "lstm" else 1)
        outs = []
        for a in range(0, x.shape[1], segment):
            result = checkpoint(run, x[:, a:a + segment], *state, use_reentrant=False)
            outs.append(result[0])
            state = result[1:]
        loss = torch.nn.functional.mse_loss(torch.cat(outs, 1), y)
        loss.backward()
        optimizer.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rows(cells, steps_list, fractions, repeats, with_torch):
    out = []
    for cell in cells:
        for steps in steps_list:
            model, X, Y = problem(cell, steps)
            unbounded = cbptt.memory.step_bytes(model, B, steps)
            fits = unbounded < 0.5 * (cbptt.memory.available_bytes() or 0)
            base = base_trainer = None
            if fits:
                base_trainer = cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=1e-5))
                base, base_bytes, _ = timed(base_trainer, X, Y, repeats)
                print(f"{cell} T={steps}: unbounded {base * 1e3:.0f} ms, "
                      f"{base_bytes / 2 ** 20:.1f} MiB allocated", flush=True)
            for fraction in fractions:
                limit = int(unbounded * fraction)
                try:
                    plan = cbptt.plan_memory(model, B, steps, limit)
                except ValueError as exc:
                    print(f"  {fraction:6.1%}: {exc}")
                    continue
                trainer = cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=1e-5),
                                           memory_limit=limit)
                seconds, allocated, factor = timed(trainer, X, Y, repeats, base_trainer)
                row = dict(cell=cell, steps=steps, fraction=fraction, limit=limit,
                           leaf_steps=plan.leaf_steps, units=plan.units,
                           checkpoints=plan.checkpoints,
                           recompute_factor=plan.recompute_factor, ms=seconds * 1e3,
                           allocated=allocated, unbounded_bytes=unbounded,
                           time_factor=factor)
                if with_torch:
                    row["torch_ms"] = torch_segments(cell, model, X, Y, plan.leaf_steps,
                                                     repeats) * 1e3
                out.append(row)
                print(f"  {fraction:6.1%} of {unbounded / 2 ** 20:8.1f} MiB: leaf "
                      f"{plan.leaf_steps:5d} x {plan.units:4d} units, {plan.checkpoints:3d} "
                      f"checkpoints, recompute {plan.recompute_factor:.2f}; "
                      f"{seconds * 1e3:8.0f} ms"
                      + ("" if base is None else f" = {factor:.2f}x unbounded")
                      + f", {allocated / 2 ** 20:.1f} MiB allocated (limit "
                      f"{limit / 2 ** 20:.1f})"
                      + (f"; torch checkpoint {row['torch_ms']:.0f} ms "
                         f"({row['torch_ms'] / row['ms']:.2f}x)" if with_torch else ""),
                      flush=True)
    return out


def seq2seq_rows(cells, steps_list, fractions, repeats):
    """Encoder-decoder rows (multi-step forecasting): sources of T steps, targets of T / 10,
    the limit a fraction of both halves' unbounded need, shared by the two."""
    out = []
    for cell in cells:
        for steps in steps_list:
            target_steps = max(1, steps // 10)
            rng = np.random.default_rng(1)
            X = rng.standard_normal((B, steps, I)).astype(np.float32)
            Y_in = rng.standard_normal((B, target_steps, O)).astype(np.float32)
            Y_out = rng.standard_normal((B, target_steps, O)).astype(np.float32)
            pair = (cbptt.RNN(I, H, None, cell=cell, dtype=np.float32, seed=0),
                    cbptt.RNN(O, H, O, cell=cell, dtype=np.float32, seed=1))
            whole = cbptt.plan_memory(pair, B, (steps, target_steps), "1TiB",
                                      trainer="seq2seq").unbounded_bytes
            base_trainer = _Seq2SeqStep(cbptt.Seq2Seq(*pair, optimizer=cbptt.SGD(lr=1e-5)),
                                        Y_out)
            base, _, _ = timed(base_trainer, X, Y_in, repeats)
            print(f"seq2seq {cell} T={steps} U={target_steps}: unbounded {base * 1e3:.0f} ms",
                  flush=True)
            for fraction in fractions:
                limit = int(whole * fraction)
                try:
                    plan = cbptt.plan_memory(pair, B, (steps, target_steps), limit,
                                             trainer="seq2seq")
                except ValueError as exc:
                    print(f"  {fraction:6.1%}: {exc}")
                    continue
                trainer = cbptt.Seq2Seq(*pair, optimizer=cbptt.SGD(lr=1e-5),
                                        memory_limit=limit)
                seconds, allocated, factor = timed(_Seq2SeqStep(trainer, Y_out), X, Y_in,
                                                   repeats, base_trainer)
                out.append(dict(cell=cell, steps=steps, target_steps=target_steps,
                                fraction=fraction, limit=limit,
                                encoder_units=plan.encoder.units,
                                decoder_units=plan.decoder.units,
                                recompute_factor=plan.recompute_factor, ms=seconds * 1e3,
                                allocated=allocated, unbounded_bytes=whole,
                                time_factor=factor))
                print(f"  {fraction:6.1%} of {whole / 2 ** 20:8.1f} MiB: encoder "
                      f"{plan.encoder.units} units, decoder {plan.decoder.units}, recompute "
                      f"{plan.recompute_factor:.2f}; {seconds * 1e3:8.0f} ms = "
                      f"{factor:.2f}x unbounded, {allocated / 2 ** 20:.1f} MiB "
                      f"allocated (limit {limit / 2 ** 20:.1f})", flush=True)
    return out


def sqrt_rows(cells, steps_list, repeats):
    """Chen et al.'s sqrt(T) schedule (segments of sqrt(T) steps, every segment's start kept)
    against the plan's at the same limit (the least that sqrt(T) needs) and at half of it,
    where sqrt(T) does not fit: each step's time against the unbounded one's, where it fits."""
    from cbptt import bounded
    out = []
    for cell in cells:
        for steps in steps_list:
            model, X, Y = problem(cell, steps)
            leaf = round(steps ** 0.5)
            units = -(-steps // leaf)
            need = (bounded.fixed_bytes(model, B, leaf, parts=1) + bounded._table_bytes(units, 0)
                    + (units - 1) * bounded._state_bytes(model, B, objects=True))
            fits = cbptt.memory.step_bytes(model, B, steps) < 0.5 * (
                cbptt.memory.available_bytes() or 0)
            base = (cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=1e-5)) if fits else None)
            if base is not None:
                timed(base, X, Y, 1)            # its workspace made
            for name, limit, leaf_steps in (("sqrt(T)", need, leaf), ("plan", need, None),
                                            ("plan at half", need // 2, None)):
                plan = cbptt.plan_memory(model, B, steps, limit, leaf_steps=leaf_steps)
                trainer = cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=1e-5),
                                           memory_limit=limit)
                # the trainer's runner of this shape, on this plan
                trainer._engines[("bounded", B, steps, False)] = bounded.BoundedBPTT(
                    model, B, steps, limit, "mse", False, False, plan=plan)
                seconds, allocated, factor = timed(trainer, X, Y, repeats, base)
                row = dict(cell=cell, steps=steps, schedule=name, limit=limit,
                           leaf_steps=plan.leaf_steps, checkpoints=plan.checkpoints,
                           recompute_factor=plan.recompute_factor, ms=seconds * 1e3,
                           allocated=allocated,
                           time_factor=factor)
                out.append(row)
                print(f"{cell} T={steps:,} {name:12s} limit {limit / 2 ** 20:6.1f} MiB: leaf "
                      f"{plan.leaf_steps:5d}, {plan.checkpoints:5d} checkpoints, recompute "
                      f"{plan.recompute_factor:.2f}; {seconds * 1e3:8.0f} ms"
                      + ("" if base is None else f" = {factor:.2f}x unbounded")
                      + f", {allocated / 2 ** 20:.1f} MiB allocated", flush=True)
    return out


class _Seq2SeqStep:
    """A Seq2Seq trainer seen as timed() sees a trainer: step(X, Y_in)."""

    def __init__(self, trainer, Y_out):
        self.trainer, self.Y_out = trainer, Y_out

    def step(self, X, Y_in):
        return self.trainer.step(X, Y_in, self.Y_out)


def million():
    model, X, Y = problem("lstm", 1_000_000)
    trainer = cbptt.ManyToMany(model, optimizer=cbptt.SGD(lr=1e-5), memory_limit="256MiB")
    plan = cbptt.plan_memory(model, B, 1_000_000, "256MiB")
    seconds, allocated, _ = timed(trainer, X, Y, 0)
    print(f"LSTM, 1,000,000 steps within 256 MiB: the first step {seconds:.1f} s, "
          f"{allocated / 2 ** 20:.1f} MiB allocated; plan: leaf {plan.leaf_steps}, "
          f"{plan.units} units, {plan.checkpoints} checkpoints, recompute "
          f"{plan.recompute_factor:.2f}; the unbounded step would add "
          f"{cbptt.memory.step_bytes(model, B, 1_000_000) / 2 ** 30:.1f} GiB", flush=True)
    return dict(steps=1_000_000, seconds=seconds, allocated=allocated)


def plot(rows_, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["cell"], r["steps"]) for r in rows_ if r["time_factor"]}):
        points = sorted((r["allocated"] / r["unbounded_bytes"], r["time_factor"])
                        for r in rows_ if (r["cell"], r["steps"]) == key and r["time_factor"])
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-",
                label=f"{key[0].upper()}, T={key[1]:,}")
    ax.set_xscale("log")
    ax.set_xlabel("memory the step allocates / the unbounded step's")
    ax.set_ylabel("step time / the unbounded step's")
    ax.set_title("cbptt memory_limit: B=8, H=128, float32, 1 thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--steps", default="10000,100000")
    parser.add_argument("--fractions", default="1,0.5,0.1,0.03,0.01")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--seq2seq", action="store_true",
                        help="encoder-decoder rows (targets of T / 10 steps) instead")
    parser.add_argument("--sqrt", action="store_true",
                        help="Chen et al.'s sqrt(T) schedule against the plan's instead")
    parser.add_argument("--out", help="JSON file for the rows")
    parser.add_argument("--plot", help="PNG of the time-memory trade-off")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads):
        if args.torch:
            import torch
            torch.set_num_threads(args.threads)
        shapes = (args.cells.split(","), [int(s) for s in args.steps.split(",")],
                  [float(f) for f in args.fractions.split(",")], args.repeats)
        result = (seq2seq_rows(*shapes) if args.seq2seq else
                  sqrt_rows(shapes[0], shapes[1], args.repeats) if args.sqrt else
                  rows(*shapes, args.torch))
        extra = million() if args.million else None
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "rows": result, "million": extra}, f, indent=1)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
