"""cbptt where it shares the machine (issue 22): per-step times at the default thread count against
one thread each, in the situations users run it in.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.contention            # ~5 min
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.contention --quick    # ~1-2 min
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.contention \\
        --scenarios procs,threads --shapes medium --cells tanh --other OLD/src            # two builds

Rows: the grid's medium and long shapes (benchmarks/grid.py), every cell, ManyToMany, float32.
Configurations: ``default`` sets no thread count (what a user gets); ``one`` sets
``OPENBLAS_NUM_THREADS=1`` and ``cbptt.set_settings(team=1)`` (torch: ``set_num_threads(1)``).

- ``procs``: two processes training at once, both in one configuration; the ratio
  default / one of the time per step from their throughput (``throughput_ms``).
- ``torch``: one process at the default threads (2 on a 2-core machine), cbptt alone, torch
  alone, then torch and cbptt steps alternating; cbptt's lead over torch (torch / cbptt)
  alone and alternating.
- ``threads``: one process, two trainers, each stepping in a Python thread of its own; the ratio
  default / one, as for ``procs``.
- ``mpi``: ``mpiexec -n 2``, ``cbptt.distributed.DataParallel`` over the row's batch on each rank
  (needs mpi4py and mpiexec; skipped without them); the ratio default / one.

Every process is a worker (benchmarks/contention_worker.py) that stays up for the run. A
configuration's processes time the same wall-clock window of ``--seconds``; the configurations
(and the builds, with ``--other``: a second cbptt source tree, built in place, first on its
workers' PYTHONPATH) take turns, the order reversed every round, so that they see the same
machine over the same minutes. Results: benchmarks/results/contention.json (every step time)
and contention.md (the tables, also printed).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from .facts import RESULTS_DIR, ROOT, loadavg, machine_facts, machine_line, warn_forced_env

SCENARIOS = ("procs", "torch", "threads", "mpi")
CONFIGS = ("default", "one")
FULL = dict(seconds=2.0, rounds=3, warmup=3)
QUICK = dict(seconds=0.5, rounds=2, warmup=1)


def config_env(config, pythonpath, spin=None):
    """The environment of a worker of one configuration and build."""
    env = dict(os.environ, CONTENTION_CONFIG=config)
    env.pop("CONTENTION_SPIN", None)
    if spin:
        env["CONTENTION_SPIN"] = spin
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    if config == "one":
        env["OPENBLAS_NUM_THREADS"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    return env


class Worker:
    """One process of benchmarks/contention_worker.py, driven over stdin/stdout."""

    def __init__(self, config, pythonpath, spin=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.contention_worker"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=config_env(config, pythonpath, spin))
        self.where = self.read()["cbptt"]

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a contention worker ended")
        return json.loads(line)

    def send(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def ask(self, **msg):
        self.send(**msg)
        return self.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class Pool:
    """Workers by (build, configuration, index), started on first use."""

    def __init__(self, builds, spin=None):
        self.builds = builds            # name -> PYTHONPATH to put first (None: this Python's cbptt)
        self.spin = spin
        self.workers = {}

    def get(self, build, config, index):
        key = (build, config, index)
        if key not in self.workers:
            self.workers[key] = Worker(config, self.builds[build], self.spin)
        return self.workers[key]

    def close(self):
        for w in self.workers.values():
            w.close()


def median(samples):
    return statistics.median(samples) if samples else float("nan")


def turns(keys, rounds):
    """(round, key) in the order they run: the keys in turn, reversed every other round."""
    for r in range(rounds):
        for key in (keys if r % 2 == 0 else list(reversed(keys))):
            yield r, key


def windows(groups, opts):
    """Time each group of workers (build, config) -> [workers] over its own windows, taking turns.
    Returns (build, config) -> {"ms": [[per process or trainer]...], "threads_used"}."""
    out = {key: {"ms": [], "threads_used": []} for key in groups}
    for _, key in turns(list(groups), opts.rounds):
        time.sleep(opts.settle)
        start = time.time() + 0.05
        for w in groups[key]:
            w.send(op="window", start=start, seconds=opts.seconds)
        for w in groups[key]:
            reply = w.read()
            out[key]["ms"] += reply["ms"]
            out[key]["threads_used"].append(reply["threads_used"])
    return out


def throughput_ms(lists):
    """ms per step of the trainers that ran at once, from their throughput: the harmonic mean of
    each trainer's mean step in each window (a trainer that got the cores for itself while the
    other waited does not make the pair look fast, as a median over the pooled steps would)."""
    rates = [len(ms) / sum(ms) for ms in lists if ms]
    return len(rates) / sum(rates) if rates else float("nan")


def ratio_rows(kind, shape, cell, timed, builds):
    """Per build: ms per step at the default and at one thread (throughput_ms), their ratio."""
    rows = []
    for build in builds:
        per = {c: throughput_ms(timed[(build, c)]["ms"]) for c in CONFIGS}
        med = {c: median([x for ms in timed[(build, c)]["ms"] for x in ms]) for c in CONFIGS}
        rows.append(dict(scenario=kind, shape=shape, cell=cell, build=build,
                         default_ms=per["default"], one_ms=per["one"],
                         ratio=per["default"] / per["one"],
                         median_ms={c: med[c] for c in CONFIGS},
                         threads_used=max(timed[(build, "default")]["threads_used"]),
                         steps={c: [len(ms) for ms in timed[(build, c)]["ms"]] for c in CONFIGS},
                         samples_ms={c: timed[(build, c)]["ms"] for c in CONFIGS}))
    return rows


def run_procs(pool, shape, cell, opts):
    """Two processes at once, per configuration and build."""
    groups = {}
    for build in pool.builds:
        for config in CONFIGS:
            group = [pool.get(build, config, i) for i in range(2)]
            for w in group:
                w.ask(op="setup", shape=shape, cell=cell, trainers=1, torch=False, warmup=opts.warmup)
            groups[(build, config)] = group
    return ratio_rows("procs", shape, cell, windows(groups, opts), pool.builds)


def run_threads(pool, shape, cell, opts):
    """Two trainers in two Python threads of one process, per configuration and build."""
    groups = {}
    for build in pool.builds:
        for config in CONFIGS:
            w = pool.get(build, config, 0)
            w.ask(op="setup", shape=shape, cell=cell, trainers=2, torch=False, warmup=opts.warmup)
            groups[(build, config)] = [w]
    return ratio_rows("threads", shape, cell, windows(groups, opts), pool.builds)


def run_torch(pool, shape, cell, opts):
    """cbptt's lead over torch alone and alternating, one process at the default threads, per build."""
    rows = []
    blocks = {}
    for build in pool.builds:
        w = pool.get(build, "default", 0)
        if not w.ask(op="setup", shape=shape, cell=cell, trainers=1, torch=True, warmup=opts.warmup)["torch"]:
            return []
    for _, build in turns(list(pool.builds), opts.rounds):
        time.sleep(opts.settle)
        reply = pool.get(build, "default", 0).ask(op="alternate", seconds=opts.seconds / 2)
        for name, ms in reply.items():
            blocks.setdefault(build, {}).setdefault(name, []).extend(ms)
    for build, b in blocks.items():
        med = {name: median(ms) for name, ms in b.items()}
        rows.append(dict(scenario="torch", shape=shape, cell=cell, build=build,
                         cbptt_alone_ms=med["cbptt_alone"], torch_alone_ms=med["torch_alone"],
                         cbptt_alternating_ms=med["cbptt_alternating"],
                         torch_alternating_ms=med["torch_alternating"],
                         lead_alone=med["torch_alone"] / med["cbptt_alone"],
                         lead_alternating=med["torch_alternating"] / med["cbptt_alternating"],
                         samples_ms=b))
    return rows


def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


def mpi_available():
    if mpiexec() is None:
        return "mpiexec not found"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not installed"
    return None


def run_mpi(pool, shape, cell, opts):
    """``mpiexec -n 2`` of DataParallel, one launch per configuration, build and round."""
    timed = {(b, c): {"ms": [], "threads_used": []} for b in pool.builds for c in CONFIGS}
    for _, (build, config) in turns(list(timed), opts.rounds):
        time.sleep(opts.settle)
        args = [mpiexec(), "-n", "2", sys.executable, "-m", "benchmarks.contention_worker", "--mpi",
                shape, cell, str(opts.seconds), str(opts.warmup)]
        done = subprocess.run(args, cwd=ROOT, env=config_env(config, pool.builds[build], pool.spin),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"mpiexec failed: {done.stderr.strip()[-500:]}")
        ranks = json.loads(done.stdout.strip().splitlines()[-1])["ranks"]
        timed[(build, config)]["ms"] += [r["ms"] for r in ranks]
        timed[(build, config)]["threads_used"] += [r["threads_used"] for r in ranks]
    return ratio_rows("mpi", shape, cell, timed, pool.builds)


RUNNERS = {"procs": run_procs, "torch": run_torch, "threads": run_threads, "mpi": run_mpi}
TITLES = {
    "procs": "Two processes at once: default threads against one thread each",
    "torch": "One process at the default threads: torch and cbptt alternating against alone",
    "threads": "Two trainers in two Python threads of one process: default threads against one thread each",
    "mpi": "`mpiexec -n 2`, DataParallel: default threads against one thread each",
}


def table(kind, rows):
    """The Markdown table of one scenario."""
    if kind == "torch":
        lines = ["| shape | cell | build | cbptt alone ms | torch alone ms | lead alone | cbptt alternating ms "
                 "| torch alternating ms | lead alternating |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['shape']} | {r['cell']} | {r['build']} | {r['cbptt_alone_ms']:.2f} | "
                  f"{r['torch_alone_ms']:.2f} | {r['lead_alone']:.2f}x | {r['cbptt_alternating_ms']:.2f} | "
                  f"{r['torch_alternating_ms']:.2f} | {r['lead_alternating']:.2f}x |" for r in rows]
    else:
        lines = ["| shape | cell | build | default ms | one thread ms | default / one | team threads |",
                 "|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['shape']} | {r['cell']} | {r['build']} | {r['default_ms']:.2f} | {r['one_ms']:.2f} | "
                  f"{r['ratio']:.2f}x | {r['threads_used']} |" for r in rows]
    return f"### {TITLES[kind]}\n\n" + "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"shorter windows and fewer rounds ({QUICK})")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of "
                   + ", ".join(SCENARIOS))
    p.add_argument("--shapes", default="medium,long", help="grid shapes (default medium,long)")
    p.add_argument("--cells", default="tanh,lstm,gru")
    p.add_argument("--seconds", type=float, help=f"each timed window (default {FULL['seconds']})")
    p.add_argument("--rounds", type=int, help=f"windows per configuration (default {FULL['rounds']})")
    p.add_argument("--warmup", type=int, help=f"untimed steps per trainer (default {FULL['warmup']})")
    p.add_argument("--settle", type=float, default=0.1, help="pause before each window, s")
    p.add_argument("--other", help="src/ of a second cbptt build (B), built in place")
    p.add_argument("--spin", help="BARRIER,JOB: the team's spins in ns in every worker "
                   "(cbptt._engine.team_spin_ns; either may be empty), to measure the wait design")
    p.add_argument("--out", default=str(RESULTS_DIR / "contention.json"))
    p.add_argument("--no-save", action="store_true")
    opts = p.parse_args(argv)
    for key, value in (QUICK if opts.quick else FULL).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.scenarios = [s for s in opts.scenarios.split(",") if s]
    unknown = [s for s in opts.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    return opts


def main(argv=None):
    opts = parse_args(argv)
    warn_forced_env("-m benchmarks.contention")
    from .grid import CELLS, SHAPES
    shapes, cells = opts.shapes.split(","), opts.cells.split(",")
    for name, known in (("shape", [s.name for s in SHAPES]), ("cell", CELLS)):
        bad = [x for x in (shapes if name == "shape" else cells) if x not in known]
        if bad:
            sys.exit(f"unknown {name} {bad}; choose from {known}")
    builds = {"A": None}
    if opts.other:
        builds["B"] = os.path.abspath(opts.other)
    facts = machine_facts()
    skipped = {}
    if "mpi" in opts.scenarios and mpi_available():
        skipped["mpi"] = mpi_available()
    pool = Pool(builds, opts.spin)
    rows = []
    try:
        wheres = {b: pool.get(b, "default", 0).where for b in builds}
        if opts.other and wheres["A"] == wheres["B"]:
            sys.exit(f"both builds import cbptt from {wheres['A']}: is --other built?")
        for b, where in wheres.items():
            print(f"build {b}: cbptt from {os.path.relpath(where, ROOT)}", file=sys.stderr)
        for kind in opts.scenarios:
            if kind in skipped:
                continue
            for shape in shapes:
                for cell in cells:
                    load = loadavg()
                    got = RUNNERS[kind](pool, shape, cell, opts)
                    if not got:
                        skipped[kind] = "torch not importable"
                        break
                    for r in got:
                        r["loadavg"] = [load, loadavg()]
                        summary = (f"lead {r['lead_alone']:.2f}x alone, {r['lead_alternating']:.2f}x alternating"
                                   if kind == "torch" else
                                   f"{r['default_ms']:.2f} / {r['one_ms']:.2f} ms = {r['ratio']:.2f}x")
                        print(f"{kind:>7} {shape:>6} {cell:>4} {r['build']}: {summary}  (load {load[0]})",
                              file=sys.stderr, flush=True)
                    rows += got
    finally:
        pool.close()
    facts["loadavg_end"] = loadavg()
    text = "\n".join(table(k, [r for r in rows if r["scenario"] == k]) for k in opts.scenarios
                     if any(r["scenario"] == k for r in rows))
    notes = [f"{k}: skipped ({why})" for k, why in skipped.items()]
    if opts.other:
        notes.insert(0, "Builds: A is the cbptt this Python imports, B the one in --other ("
                     + os.path.relpath(builds["B"], ROOT) + ").")
    text = machine_line(facts) + "\n\n" + text + ("\n" + "\n".join(notes) + "\n" if notes else "")
    print(text)
    if not opts.no_save:
        os.makedirs(os.path.dirname(opts.out), exist_ok=True)
        with open(opts.out, "w") as f:
            json.dump({"facts": facts, "options": vars(opts), "builds": builds, "skipped": skipped,
                       "rows": rows}, f, indent=1)
        with open(os.path.splitext(opts.out)[0] + ".md", "w") as f:
            f.write(text)
        print(f"saved {opts.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
