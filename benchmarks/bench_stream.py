"""Truncated BPTT over a long stream on disk: speed and memory as the stream goes by.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_stream.py [--steps 10000000]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.bench_stream [--steps 1000000]

Writes a stream of --steps steps (input 2, target 1, float32) to a temporary file, chunk by chunk with plain
file writes (so generating it takes no more memory at 10M steps than at 10k), opens it as np.memmap and trains
cbptt.Truncated (tanh, hidden 8, k1 = k2 = 50, B = 1, Adam) over it with trainer.fit_stream(source, targets,
chunk_steps=...), one portion of --every steps at a time. After each portion it prints the steps so far, the
portion's steps/s and mean loss, the peak RSS so far (ru_maxrss) and the current RSS split into anonymous
memory (what the process allocated) and file-backed pages (the memmap pages it has read).

A mapped file's pages count in RSS as long as they stay mapped, so reading a 120 MB memmap end to end would
raise RSS by 120 MB of page cache that the kernel can drop at any time, and hide whether the trainer itself
grows. After each portion the script therefore tells the kernel it is done with the pages read so far
(madvise(MADV_DONTNEED) on the mapping: the data stays in the file and the page cache, the process just
stops holding it). --no-release skips this, to show the file-backed growth.

The target is y_t = 0.5 x_{t-1,0} - 0.5 x_{t-3,1} + 0.1 noise, x uniform in [-1, 1]: learnable by a small RNN
with a few steps of memory, so the loss column shows training is happening.
"""
import argparse
import json
import mmap
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):          # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbptt  # noqa: E402
from benchmarks.facts import (RESULTS_DIR, blas_threads, loadavg, machine_facts, machine_line,  # noqa: E402
                              result_stem, rss_status, ru_maxrss_bytes, warn_forced_env)

INPUT, HIDDEN, OUTPUT, K = 2, 8, 1, 50
DTYPE = np.float32
LAG = 3                                  # the target reads inputs up to LAG steps back
MIB = 2 ** 20


def write_stream(directory, steps, chunk=100_000, seed=0):
    """X (steps, INPUT) and Y (steps, OUTPUT) as raw float32 files, written chunk by chunk. Returns the paths."""
    rng = np.random.default_rng(seed)
    x_path, y_path = Path(directory) / "x.f32", Path(directory) / "y.f32"
    tail = np.zeros((LAG, INPUT), DTYPE)                 # the last LAG inputs of the previous chunk
    with open(x_path, "wb") as fx, open(y_path, "wb") as fy:
        for start in range(0, steps, chunk):
            n = min(chunk, steps - start)
            x = rng.uniform(-1, 1, size=(n, INPUT)).astype(DTYPE)
            past = np.concatenate([tail, x])                # past[t + LAG] = x[t]
            y = (0.5 * past[LAG - 1:-1, 0] - 0.5 * past[:-LAG, 1]
                 + 0.1 * rng.standard_normal(n)).astype(DTYPE)[:, None]
            fx.write(x.tobytes())
            fy.write(y.tobytes())
            tail = past[-LAG:]
    return x_path, y_path


def release(array):
    """Drop this process's mapping of the pages of a memmap read so far (they stay in the file and page cache)."""
    mm = getattr(array, "_mmap", None)
    if mm is not None:
        mm.madvise(mmap.MADV_DONTNEED)


def lines_generated(records):
    r = records[0]
    return (f"Wrote the stream, {r['steps']:,} steps ({r['file_bytes'] / MIB:.0f} MiB), in {r['seconds']:.1f} s; "
            f"peak RSS after writing it {r['ru_maxrss'] / MIB:.1f} MiB.")


def run(opts):
    directory = tempfile.mkdtemp(prefix="cbptt_stream_", dir=opts.tmpdir)
    t0 = time.perf_counter()
    x_path, y_path = write_stream(directory, opts.steps)
    generated = time.perf_counter() - t0
    records = [{"stage": "generated", "steps": opts.steps, "seconds": generated, "ru_maxrss": ru_maxrss_bytes(),
                "file_bytes": x_path.stat().st_size + y_path.stat().st_size, **rss_status()}]
    print(lines_generated(records), flush=True)
    try:
        X = np.memmap(x_path, dtype=DTYPE, mode="r", shape=(opts.steps, INPUT))
        Y = np.memmap(y_path, dtype=DTYPE, mode="r", shape=(opts.steps, OUTPUT))
        model = cbptt.RNN(INPUT, HIDDEN, OUTPUT, cell="tanh", dtype=DTYPE, seed=0)
        trainer = cbptt.Truncated(model, k1=K, k2=K, loss="mse", optimizer=cbptt.Adam(lr=1e-3), clip_norm=1.0)

        lines = ["| steps | steps/s (this portion) | mean loss (this portion) | peak RSS, ru_maxrss (MiB) | "
                 "RSS now: anonymous + file-backed (MiB) |", "|---:|---:|---:|---:|---:|"]
        print("\n".join(lines), flush=True)
        with blas_threads(opts.threads):
            start_all = time.perf_counter()
            for start in range(0, opts.steps, opts.every):
                stop = min(start + opts.every, opts.steps)
                t = time.perf_counter()
                losses = trainer.fit_stream(X[start:stop], Y[start:stop], chunk_steps=opts.chunk_steps)
                seconds = time.perf_counter() - t
                if not opts.no_release:
                    release(X)
                    release(Y)
                rss = rss_status()
                rec = {"stage": "trained", "steps": stop, "seconds": seconds, "steps_per_s": (stop - start) / seconds,
                       "mean_loss": float(np.mean(losses)), "ru_maxrss": ru_maxrss_bytes(), **rss}
                records.append(rec)
                lines.append(f"| {stop:,} | {rec['steps_per_s']:,.0f} | {rec['mean_loss']:.4f} | "
                             f"{rec['ru_maxrss'] / MIB:.1f} | {rss.get('RssAnon', 0) / MIB:.1f} + "
                             f"{rss.get('RssFile', 0) / MIB:.1f} |")
                print(lines[-1], flush=True)
            total = time.perf_counter() - start_all
    finally:
        for path in (x_path, y_path):
            path.unlink(missing_ok=True)
        os.rmdir(directory)
    return records, lines, total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10_000_000, help="stream length (default 10,000,000)")
    p.add_argument("--every", type=int, help="steps per portion, one table line each (default steps / 10)")
    p.add_argument("--chunk-steps", type=int, default=10_000,
                   help="fit_stream's chunk_steps, a multiple of k1 = 50 (default 10,000)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--tmpdir", help="where to write the stream (default: the system's temporary directory)")
    p.add_argument("--no-release", action="store_true",
                   help="keep the memmap pages mapped after each portion (shows the file-backed RSS growth)")
    p.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    opts = p.parse_args(argv)
    opts.every = opts.every or max(K, opts.steps // 10)
    warn_forced_env("benchmarks/bench_stream.py")

    facts = machine_facts()
    records, lines, total = run(opts)
    facts["loadavg_end"] = loadavg()
    trained = records[-1]["steps"]
    summary = (f"\n{trained:,} steps in {total:.1f} s ({trained / total:,.0f} steps/s): cbptt.Truncated(tanh, "
               f"I={INPUT}, H={HIDDEN}, O={OUTPUT}, k1=k2={K}, float32, B=1, Adam lr 1e-3, clip 1.0), fit_stream "
               f"chunk_steps={opts.chunk_steps:,} over np.memmap files, {opts.threads} BLAS thread(s); memmap pages "
               + ("kept mapped (--no-release)." if opts.no_release else "released after each portion (MADV_DONTNEED)."))
    notes = summary + "\n\n" + machine_line(facts) + "\n"
    print(notes)
    if not opts.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        stem = result_stem("bench_stream", "float32")
        (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(
            {"benchmark": "bench_stream", "facts": facts, "settings": vars(opts), "total_seconds": total,
             "records": records}, indent=1) + "\n")
        (RESULTS_DIR / f"{stem}.md").write_text(f"# bench_stream\n\n{lines_generated(records)}\n\n" + "\n".join(lines)
                                                + "\n" + notes)
        print(f"saved {RESULTS_DIR.name}/{stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
