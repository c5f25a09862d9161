"""Time one full training step (forward, BPTT, SGD update) of cbptt against the NumPy reference, torch and JAX,
over a grid of shapes x cells x trainers x BLAS threads, then an encoder-decoder's training step and decoding
(the seq2seq rows), then issue 19's rows (bidirectional many-to-one, an embedding's input, token ids against
one-hot input); or, with --memory, measure the memory one step adds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks [--quick] [--dtype float64]
        [--threads 1 2] [--shapes small,medium,large,long,s2s,bidir,embed,ids] [--cells tanh,lstm,gru]
        [--trainers many-to-many,many-to-one,truncated,seq2seq,greedy,beam-5]
        [--contenders cbptt,reference,torch,jax,one-hot] [--memory]

The Markdown tables (the step grid's, the seq2seq rows', issue 19's rows') go to stdout, a line per row as soon
as it is timed; progress to stderr; the tables and every sample to benchmarks/results/. See benchmarks/README.md.
"""
import argparse
import json
import sys
import time

import numpy as np

from . import memory
from .classify_contenders import CLASSIFY_CONTENDERS
from .classify_grid import CLASSIFY_SHAPES, SHAPE_GROUPS
from .classify_grid import cases as classify_cases
from .classify_report import ClassifyTable
from .contenders import CONTENDERS
from .facts import RESULTS_DIR, ROOT, blas_threads, cores, loadavg, machine_facts, machine_line, result_stem, \
    threadpoolctl, warn_forced_env
from .grid import CELLS, SHAPES, TRAINERS, cases
from .report import StepTable
from .seq2seq_contenders import SEQ2SEQ_CONTENDERS
from .seq2seq_grid import KINDS, SEQ2SEQ_CELLS, SEQ2SEQ_SHAPES
from .seq2seq_grid import cases as seq2seq_cases
from .seq2seq_report import Seq2SeqTable
from .timing import run_case

SHAPE_NAMES = ([s.name for s in SHAPES] + [s.name for s in SEQ2SEQ_SHAPES] + [s.name for s in CLASSIFY_SHAPES]
               + list(SHAPE_GROUPS))
TRAINER_NAMES = list(TRAINERS) + list(KINDS)          # the grid's trainers, then the seq2seq rows' kinds
CONTENDER_NAMES = list(dict.fromkeys(c.name for c in CONTENDERS + CLASSIFY_CONTENDERS))
FULL = dict(shapes=[s.name for s in SHAPES] + ["s2s", "bidir", "embed", "ids"], cells=CELLS,
            trainers=TRAINER_NAMES, threads=[1, 2], repeats=20, warmup=3, rounds=5)
QUICK = dict(shapes=["small", "medium", "s2s-tiny", "bidir-tiny", "embed-tiny", "ids-tiny"], cells=["tanh", "lstm"],
             trainers=["many-to-many", "many-to-one"] + list(KINDS), threads=[2], repeats=5, warmup=1, rounds=2)


def _names(text, known, what):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown {what} {unknown}; choose from {list(known)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small+medium, tanh+lstm, many-to-many, the seq2seq rows at a tiny shape, 2 threads, 5 "
                        "timed steps: checks the suite runs (under a minute); options given explicitly override "
                        "the preset")
    p.add_argument("--memory", action="store_true", help="measure the peak memory of one step (cbptt, torch), "
                   "each in a fresh process, instead of timing")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, nargs="+", help="BLAS / torch thread counts, one group of rows each "
                   "(default: 1 2)")
    p.add_argument("--shapes", help="comma-separated subset of: " + ", ".join(SHAPE_NAMES)
                   + " (s2s and s2s-tiny: the seq2seq rows' shapes; bidir (bidir-medium and bidir-long), embed, "
                     "ids and their -tiny forms: issue 19's rows)")
    p.add_argument("--cells", help="comma-separated subset of: " + ", ".join(CELLS))
    p.add_argument("--trainers", help="comma-separated subset of: " + ", ".join(TRAINER_NAMES)
                   + " (truncated runs on the long shape only; seq2seq, greedy and beam-5 are the seq2seq rows: "
                     "a training step and decoding, on the s2s shapes, lstm and gru)")
    p.add_argument("--contenders", default=",".join(CONTENDER_NAMES),
                   help="comma-separated subset of: " + ", ".join(CONTENDER_NAMES)
                        + " (cbptt, the baseline, is always run; one-hot: cbptt on one-hot floats, the ids rows)")
    p.add_argument("--repeats", type=int, help="timed steps per contender (default 20; --quick 5)")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps (default 3; --quick 1)")
    p.add_argument("--rounds", type=int, help="alternating blocks per contender (default 5; --quick 2)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="seconds of timed steps a slow contender (the reference) may use per row (default 30)")
    p.add_argument("--max-step", type=float, default=2.0,
                   help="leave the reference out of a row when one of its warm-up steps takes longer (default 2 s)")
    p.add_argument("--settle", type=float, default=0.25, help="pause in seconds before each block (default 0.25)")
    p.add_argument("--lead-in", type=float, default=0.02,
                   help="seconds of untimed steps (at least one) at the start of each block (default 0.02)")
    p.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    opts = p.parse_args(argv)
    preset = QUICK if opts.quick else FULL
    for name, value in preset.items():
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    for name, known in (("shapes", SHAPE_NAMES), ("cells", CELLS), ("trainers", TRAINER_NAMES),
                        ("contenders", CONTENDER_NAMES)):
        if isinstance(getattr(opts, name), str):
            setattr(opts, name, _names(getattr(opts, name), known, name))
    opts.shapes = [n for name in opts.shapes for n in SHAPE_GROUPS.get(name, [name])]
    opts.dtype_name = opts.dtype
    opts.dtype = np.float32 if opts.dtype == "float32" else np.float64
    return opts


def _time_grid(opts, sections):
    """Time every row of each section (a table, its rows and contenders), thread count by thread count;
    print each table line as soon as it is ready, and a section's notes when it ends (the last section's
    with the machine's line, after the run)."""
    rows, text, done = [], "", []
    for table, rows_of, contenders, not_run in sections:
        print(table.header(), flush=True)
        lines, section_rows = [], []
        for threads in opts.threads:
            with blas_threads(threads), cores(threads) as pinned:
                for c in contenders:
                    c.set_threads(threads)
                for case in rows_of:
                    row = run_case(case, contenders, opts, threads)
                    row["pinned_cpus"] = pinned
                    row["table"] = table.kind
                    section_rows.append(row)
                    lines.append(table.line(row))
                    print(lines[-1], flush=True)
                    print(f"{threads} thr {case.shape.name} {case.trainer} {case.cell}: " + ", ".join(
                        f"{n} {r['median_ms']:.3f} ms" for n, r in row["contenders"].items()), file=sys.stderr)
        rows += section_rows
        done.append((table, section_rows, not_run, table.header() + "\n" + "\n".join(lines) + "\n"))
        if len(done) < len(sections):
            notes = table.notes(section_rows, None, opts, not_run, machine=False)
            print(notes, flush=True)
            text += done[-1][3] + notes + "\n"

    def notes(facts):
        table, section_rows, not_run, _ = done[-1]
        return table.notes(section_rows, facts, opts, not_run)
    return rows, text + done[-1][3], notes


def _measure_memory(opts, sections):
    """--memory: one fresh worker process per row and contender (see memory.py); the step grid only."""
    _, rows_of, contenders, _ = sections[0]
    rows = memory.run(opts, rows_of, [c.name for c in contenders])
    text = memory.HEADER + "\n" + "\n".join(memory.table_line(r) for r in rows) + "\n"

    def notes(facts):
        return memory.notes(rows, opts) + "\n" + machine_line(facts) + "\n"
    return rows, text, notes


def main(argv=None):
    opts = parse_args(argv)
    warn_forced_env("-m benchmarks")
    rows_of = cases([s for s in SHAPES if s.name in opts.shapes], opts.cells,
                    [t for t in opts.trainers if t in TRAINERS], opts.dtype)
    seq2seq_rows = [] if opts.memory else seq2seq_cases(
        [s for s in SEQ2SEQ_SHAPES if s.name in opts.shapes], [c for c in SEQ2SEQ_CELLS if c in opts.cells],
        [k for k in opts.trainers if k in KINDS], opts.dtype)
    classify_rows = [] if opts.memory else classify_cases(
        [s for s in CLASSIFY_SHAPES if s.name in opts.shapes], opts.cells, opts.trainers, opts.dtype)
    if not rows_of and not seq2seq_rows and not classify_rows:
        sys.exit("no rows: truncated runs on the long shape only; the seq2seq rows (seq2seq, greedy, beam-5) on "
                 "the s2s shapes, lstm and gru only; issue 19's rows: bidir many-to-one (every cell), embed "
                 "many-to-many (lstm, gru), ids many-to-many (lstm)" + (" and not with --memory" if opts.memory else ""))

    sections = []
    for table, section_rows, candidates in ((StepTable, rows_of, CONTENDERS),
                                            (Seq2SeqTable, seq2seq_rows, SEQ2SEQ_CONTENDERS),
                                            (ClassifyTable, classify_rows, CLASSIFY_CONTENDERS)):
        if not section_rows:
            continue
        wanted = [c for c in candidates if c.name == candidates[0].name or c.name in opts.contenders]
        if opts.memory:
            wanted = [c for c in wanted if c.name in memory.CONTENDERS]
        contenders, not_run = [], {}
        for c in wanted:
            ok, why = c.available()
            if ok:
                contenders.append(c)
            else:
                not_run[c.name] = why
                print(f"skipping contender {c.name}: {why}", file=sys.stderr)
        sections.append((table([c.name for c in contenders]), section_rows, contenders, not_run))
    if threadpoolctl is None:
        print("threadpoolctl is not installed: --threads is NOT applied to the BLAS libraries", file=sys.stderr)

    facts = machine_facts()
    facts.update(dtype=opts.dtype_name, threads=opts.threads, threads_applied=threadpoolctl is not None)
    t_start = time.perf_counter()
    run = _measure_memory if opts.memory else _time_grid
    rows, text, make_notes = run(opts, sections)
    wall = time.perf_counter() - t_start
    facts["loadavg_end"] = loadavg()
    notes = make_notes(facts) + f"\nWall time {wall:.0f} s.\n"
    print(notes, flush=True)

    if not opts.no_save:
        kind = "bench_memory" if opts.memory else "bench_step"
        RESULTS_DIR.mkdir(exist_ok=True)
        stem = result_stem(kind, opts.dtype_name, "_quick" if opts.quick else "")
        settings = {k: v for k, v in vars(opts).items() if k != "dtype"}
        names = {type(table).__name__: [c.name for c in contenders] for table, _, contenders, _ in sections}
        settings.update(contenders=names.get("StepTable", []), seq2seq_contenders=names.get("Seq2SeqTable", []),
                        classify_contenders=names.get("ClassifyTable", []),
                        not_run={n: why for *_, not_run in sections for n, why in not_run.items()},
                        wall_time_s=round(wall, 1))
        (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(
            {"benchmark": kind, "facts": facts, "settings": settings, "rows": rows}, indent=1) + "\n")
        (RESULTS_DIR / f"{stem}.md").write_text(f"# {kind}, {opts.dtype_name}\n\n{text}{notes}")
        print(f"saved {RESULTS_DIR.relative_to(ROOT)}/{stem}.json and .md", file=sys.stderr)
