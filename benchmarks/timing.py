"""Timing one row: warm up every contender, check they compute the same losses, then time them in alternating
blocks over the same time window, and measure the row's GEMM limit.

Why blocks with pauses: cbptt calls the OpenBLAS inside SciPy's wheel, the reference the one inside NumPy's
wheel, torch its own MKL/OpenMP pool. Their idle workers keep spinning for a while after each call; a
contender started right after another runs on cores still busy with the other pool's spinning threads.
"""
import dataclasses
import gc
import math
import statistics
import time

from .contenders import same_losses, same_outputs
from .facts import core_round_trip_ns, cpu_sample, others_cpu
from .gemm import recurrent_gemm


def _timed_steps(contender, n):
    """n steps back to back; returns (seconds per step, losses)."""
    times, losses = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        loss = contender.step()
        times.append((time.perf_counter_ns() - t0) * 1e-9)
        losses.append(float(loss))
    return times, losses


def _warm_up(contender, case, problem, opts):
    """Set up and run the warm-up steps. Returns (times, losses) or a reason to leave it out of the row."""
    contender.setup(case, problem)
    time.sleep(opts.settle)
    times, losses = [], []
    for _ in range(opts.warmup):
        t, l = _timed_steps(contender, 1)
        times += t
        losses += l
        if contender.min_repeats is not None and t[0] > opts.max_step:   # only a contender allowed to be slow
            return f"skipped: one step took {t[0]:.1f} s (> --max-step {opts.max_step:g} s)"
    return times, losses


def _summary(samples, flops):
    t = sorted(samples)
    q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
    med = statistics.median(t)
    return {"median_ms": med * 1e3, "min_ms": t[0] * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3,
            "timed_steps": len(t), "gflops": flops / med * 1e-9, "samples_ms": [x * 1e3 for x in samples]}


def run_case(case, contenders, opts, threads):
    """One row (a grid.Case or a seq2seq_grid.Seq2SeqCase). `contenders` are the available ones; the
    first is the baseline (cbptt)."""
    problem = case.problem()
    gc.collect()
    round_trip_start = core_round_trip_ns() if threads >= 2 else None
    cpu_start = cpu_sample()
    left_out, warm, info, output = {}, {}, {}, {}   # name -> why not timed; (times, losses); row_info(); output()
    for c in contenders:
        ok = c.supports(case)
        if ok is not True:
            left_out[c.name] = "n/a" if not ok else f"n/a: {ok}"
            continue
        try:
            result = _warm_up(c, case, problem, opts)
        except Exception as exc:               # one broken contender (e.g. src/ mid-edit) should not lose the row
            result = f"error: {exc!r}"
        if isinstance(result, str):
            left_out[c.name] = result
            c.teardown()
        else:
            warm[c.name] = result
            info[c.name] = c.row_info()
            output[c.name] = c.output()
    active = [c for c in contenders if c.name in warm]

    # Same parameters, data and SGD steps: the warm-up losses must agree with cbptt's (a cheap guard
    # against timing two different computations); on decoding rows, the ids of the last warm-up call.
    base = contenders[0].name
    loss_check = {c.name: same_losses(warm[base][1], warm[c.name][1], case.dtype)
                  if output[c.name] is None or output[base] is None else
                  same_outputs(output[base], output[c.name])
                  for c in active if c.name != base and base in warm}

    # --repeats timed steps each, except that a contender with min_repeats may time fewer (down to
    # min_repeats) when --repeats of its warm-up step time would exceed --budget seconds.
    wanted = {}
    for c in active:
        n = opts.repeats
        if c.min_repeats is not None:
            n = max(min(c.min_repeats, opts.repeats), min(opts.repeats, int(opts.budget / min(warm[c.name][0]))))
        wanted[c.name] = n
    rounds = max(1, min([opts.rounds] + list(wanted.values())))
    block = {name: math.ceil(n / rounds) for name, n in wanted.items()}

    samples = {c.name: [] for c in active}
    gc.disable()
    try:
        for r in range(rounds):
            for c in (active if r % 2 == 0 else active[::-1]):
                if c.name in left_out:
                    continue
                time.sleep(opts.settle)                   # let the other pools' spinning workers go idle
                try:
                    lead_end = time.perf_counter() + opts.lead_in
                    c.step()                              # untimed steps (at least one) for --lead-in seconds:
                    while time.perf_counter() < lead_end:  # caches refilled, the core back at speed
                        c.step()
                    samples[c.name] += _timed_steps(c, block[c.name])[0]
                except Exception as exc:
                    left_out[c.name] = f"error: {exc!r}"
    finally:
        gc.enable()
        for c in active:
            c.teardown()

    time.sleep(opts.settle)
    s = case.shape
    gemm = recurrent_gemm(case.recurrent_rows(), s.H, case.gates, case.dtype, threads)

    flops = case.flops()
    sizes = {k: v for k, v in dataclasses.asdict(s).items() if k != "name"}     # B, T, I, H, O, ...
    out = {"threads": threads, "shape": s.name, **sizes, "cell": case.cell, "trainer": case.trainer,
           "flops_per_step": flops, "rounds": rounds,
           "others_cpu": others_cpu(cpu_start, cpu_sample()),
           "core_round_trip_ns": None if round_trip_start is None else [round_trip_start, core_round_trip_ns()],
           "loss_check": loss_check, "left_out": left_out, "gemm": gemm, "contenders": {}}
    for c in active:
        if c.name in left_out:
            continue
        out["contenders"][c.name] = dict(_summary(samples[c.name], flops), wanted_steps=wanted[c.name],
                                         warmup_ms=[x * 1e3 for x in warm[c.name][0]],
                                         warmup_losses=warm[c.name][1], **info[c.name])
    return out
