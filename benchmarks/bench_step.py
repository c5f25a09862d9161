"""Time one full training step (forward, BPTT, SGD update) of cbptt against the NumPy reference.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py [--quick]
        [--dtype float32|float64] [--threads N] [--shapes small,medium,large]

Every row of the table is one case: a shape (B, T, I, H, O), a cell and a trainer. Every column group is one
contender: an object with ``setup(case)`` (build the model, copy the shared initial parameters and data) and
``step()`` (one full training step, returning the loss). To add a row, extend SHAPES / CELLS / TRAINERS; to add a
peer (e.g. torch), write a Contender subclass and append it to CONTENDERS. See benchmarks/README.md.

Timing: the contenders of a case run in the same process, in alternating blocks (round r: cbptt block, reference
block; round r+1: reference block, cbptt block; ...). Before each block the script sleeps ``--settle`` seconds and
runs untimed steps for ``--lead-in`` seconds (at least one): cbptt calls SciPy's OpenBLAS and the reference calls NumPy's, two separate thread pools whose
idle workers spin for a while after each call and would otherwise steal the cores from the other contender.
"""
import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy

import cbptt  # imported before threadpoolctl is used, so that SciPy's BLAS is loaded and gets limited too

try:
    import threadpoolctl
except ImportError:  # optional: only needed for --threads and for naming the BLAS libraries
    threadpoolctl = None

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import reference  # noqa: E402  (tests/reference.py: the readable NumPy BPTT)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------------------- what is timed
@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    T: int
    I: int
    H: int
    O: int

    def __str__(self):
        return f"{self.name} ({self.B}, {self.T}, {self.I}, {self.H}, {self.O})"


SHAPES = [
    Shape("small", 1, 100, 8, 32, 1),
    Shape("medium", 16, 100, 32, 128, 8),
    Shape("large", 64, 50, 128, 512, 32),
]
CELLS = ["tanh"]                                        # later: "relu", "lstm", "gru"
TRAINERS = {"ManyToMany": "many_to_many", "ManyToOne": "many_to_one"}   # cbptt class name -> reference mode
LOSS = "mse"
LR = 0.01
NUM_LAYERS = 1
NOISY = 0.25            # flag a timing whose interquartile range exceeds this fraction of its median


@dataclass(frozen=True)
class Case:
    shape: Shape
    cell: str
    trainer: str            # a key of TRAINERS
    dtype: type
    seed: int = 0

    @property
    def mode(self):
        return TRAINERS[self.trainer]

    def flops(self):
        """FLOPs of one training step, by the model of /work/shared/engine-notes.md:
        forward = 2*B*T*(I + H)*G*H (per layer; layers above the first read H inputs) + 2*B*T_out*H*O,
        a training step = 3 x forward."""
        s, G = self.shape, reference.GATES[self.cell]
        t_out = s.T if self.mode == "many_to_many" else 1
        forward = sum(2 * s.B * s.T * ((s.I if l == 0 else s.H) + s.H) * G * s.H for l in range(NUM_LAYERS))
        forward += 2 * s.B * t_out * s.H * s.O
        return 3 * forward


def make_problem(case):
    """The initial parameters (torch state_dict keys) and data every contender of a case starts from."""
    s = case.shape
    rng = np.random.default_rng(case.seed)
    params = reference.init_params(case.cell, s.I, s.H, s.O, NUM_LAYERS, rng, dtype=case.dtype)
    X = rng.normal(size=(s.B, s.T, s.I)).astype(case.dtype)
    y_shape = (s.B, s.T, s.O) if case.mode == "many_to_many" else (s.B, s.O)
    Y = rng.normal(size=y_shape).astype(case.dtype)
    return params, X, Y


# ----------------------------------------------------------------------------------------------- contenders
class Contender:
    """One implementation being timed. ``setup(case, problem)`` builds everything outside the timed region
    (and starts from ``problem``'s parameters); ``step()`` is one full training step and returns the loss."""
    name = "?"
    min_repeats = None      # None: always time --repeats steps; else may go down to this many if steps are slow

    def available(self):
        """(True, "") or (False, why not): a missing optional peer is reported, not fatal."""
        return True, ""

    def supports(self, case):
        return True

    def setup(self, case, problem):
        raise NotImplementedError

    def step(self):
        raise NotImplementedError


class Cbptt(Contender):
    name = "cbptt"

    def supports(self, case):
        return case.cell in cbptt.model.CELLS

    def setup(self, case, problem):
        params, X, Y = problem
        s = case.shape
        model = cbptt.RNN(s.I, s.H, s.O, cell=case.cell, num_layers=NUM_LAYERS, dtype=case.dtype, seed=case.seed)
        model.load_state_dict(params)
        trainer_cls = getattr(cbptt, case.trainer)
        self.trainer = trainer_cls(model, loss=LOSS, optimizer=cbptt.SGD(lr=LR))
        self.X, self.Y = X.copy(), Y.copy()

    def step(self):
        return self.trainer.step(self.X, self.Y)


class Reference(Contender):
    """tests/reference.loss_and_grad (a Python loop over steps, small GEMMs) plus plain SGD in NumPy."""
    name = "reference"
    min_repeats = 5

    def setup(self, case, problem):
        params, X, Y = problem
        self.params = {k: v.copy() for k, v in params.items()}
        self.X, self.Y = X.copy(), Y.copy()
        self.kw = dict(cell=case.cell, num_layers=NUM_LAYERS, mode=case.mode, loss=LOSS)

    def step(self):
        loss, grads = reference.loss_and_grad(self.params, self.X, self.Y, **self.kw)
        for k, p in self.params.items():            # SGD, no momentum: p <- p - lr * g (in the params' dtype)
            p -= LR * grads[k]
        return loss


CONTENDERS = [Cbptt(), Reference()]   # the first is the baseline: ratios are other / baseline


# ----------------------------------------------------------------------------------------------- timing
def _timed_steps(contender, n):
    """n steps of one contender, back to back; returns (seconds per step list, losses)."""
    times, losses = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        loss = contender.step()
        times.append((time.perf_counter_ns() - t0) * 1e-9)
        losses.append(float(loss))
    return times, losses


def run_case(case, contenders, opts):
    """Warm up every contender, decide its repeat count, then time it in alternating blocks."""
    problem = make_problem(case)
    gc.collect()
    warm = {}
    for c in contenders:
        c.setup(case, problem)
        time.sleep(opts.settle)
        warm[c.name] = _timed_steps(c, opts.warmup)

    # The contenders start from the same parameters and data and take the same SGD steps, so their warm-up
    # losses must agree: a cheap guard against timing two different computations.
    base = warm[contenders[0].name][1]
    tol = 1e-4 if case.dtype == np.float32 else 1e-9
    loss_check = {}
    for c in contenders[1:]:
        other = warm[c.name][1]
        rel = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(base, other))
        loss_check[c.name] = {"max_rel_diff": rel, "tol": tol, "ok": rel <= tol}

    # Repeats: --repeats for every contender, except that one with min_repeats may time fewer (down to
    # min_repeats) when --repeats of its warm-up step time would exceed --budget seconds.
    wanted = {}
    for c in contenders:
        n = opts.repeats
        if c.min_repeats is not None:
            per_step = min(warm[c.name][0])
            n = max(min(c.min_repeats, opts.repeats), min(opts.repeats, int(opts.budget / per_step)))
        wanted[c.name] = n
    rounds = max(1, min(opts.rounds, min(wanted.values())))
    block = {name: math.ceil(n / rounds) for name, n in wanted.items()}

    samples = {c.name: [] for c in contenders}
    gc.disable()
    try:
        for r in range(rounds):
            for c in (contenders if r % 2 == 0 else contenders[::-1]):
                time.sleep(opts.settle)                   # let the other BLAS pool's spinning workers go idle
                lead_end = time.perf_counter() + opts.lead_in
                c.step()                                  # untimed steps (at least one) for --lead-in seconds:
                while time.perf_counter() < lead_end:     # caches refilled, the core back at speed after the pause
                    c.step()
                samples[c.name] += _timed_steps(c, block[c.name])[0]
    finally:
        gc.enable()

    flops = case.flops()
    out = {
        "shape": case.shape.name, "B": case.shape.B, "T": case.shape.T, "I": case.shape.I, "H": case.shape.H,
        "O": case.shape.O, "cell": case.cell, "trainer": case.trainer, "mode": case.mode,
        "flops_per_step": flops, "rounds": rounds, "loss_check": loss_check, "contenders": {},
    }
    for c in contenders:
        t = sorted(samples[c.name])
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        med = statistics.median(t)
        out["contenders"][c.name] = {
            "median_ms": med * 1e3, "min_ms": t[0] * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3,
            "timed_steps": len(t), "wanted_steps": wanted[c.name], "gflops": flops / med * 1e-9,
            "samples_ms": [x * 1e3 for x in samples[c.name]],
            "warmup_ms": [x * 1e3 for x in warm[c.name][0]], "warmup_losses": warm[c.name][1],
        }
    return out


# ----------------------------------------------------------------------------------------------- machine facts
def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip("\n")
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_facts(opts):
    if threadpoolctl is not None:
        blas = [{k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                          "threading_layer", "filepath")}
                for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"]
    else:
        blas = "unknown (threadpoolctl not installed)"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "cbptt": cbptt.__version__,
        "threadpoolctl": getattr(threadpoolctl, "__version__", None),
        "git_commit": _git("rev-parse", "--short", "HEAD").strip(),
        "git_dirty_files": [l[3:] for l in _git("status", "--porcelain", "--", "src", "tests").splitlines()],
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "dtype": np.dtype(opts.dtype).name,
        "threads": opts.threads if opts.threads is not None else "default (not limited)",
        "blas": blas,
        "loadavg_start": _loadavg(),   # other processes on the machine make every figure noisier: see README
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                                    "OMP_NUM_THREADS") if k in os.environ},
    }


# ----------------------------------------------------------------------------------------------- report
def markdown(rows, contenders, facts, opts):
    base = contenders[0].name
    peers = [c.name for c in contenders[1:]]
    head = (["shape (B, T, I, H, O)", "trainer", "cell"] + [f"{c.name} ms/step" for c in contenders]
            + [f"{p} / {base}" for p in peers] + [f"{base} GFLOP/s", "timed steps (" + " / ".join(
                c.name for c in contenders) + ")"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|"]
    short, bad, noisy = [], [], []
    for row in rows:
        shape = next(str(s) for s in SHAPES if s.name == row["shape"])
        cells = [shape, row["trainer"], row["cell"]]
        if "error" in row:
            lines.append("| " + " | ".join(cells + [f"error: {row['error']}"] + [""] * (len(head) - 4)) + " |")
            continue
        res = row["contenders"]
        cells += [_ms(res[c.name]["median_ms"]) if c.name in res else "n/a" for c in contenders]
        cells += [f"{res[p]['median_ms'] / res[base]['median_ms']:.2f}×" if p in res else "n/a" for p in peers]
        cells += [f"{res[base]['gflops']:.2f}", " / ".join(str(res[c.name]["timed_steps"]) if c.name in res else "-"
                                                          for c in contenders)]
        lines.append("| " + " | ".join(cells) + " |")
        for name, r in res.items():
            if r["q3_ms"] - r["q1_ms"] > NOISY * r["median_ms"]:
                noisy.append(f"{name} at {shape} {row['trainer']} (quartiles {_ms(r['q1_ms'])}–{_ms(r['q3_ms'])} ms)")
            if r["timed_steps"] < opts.repeats:
                short.append(f"{name} at {shape} {row['trainer']}: {r['timed_steps']} steps")
        bad += [f"{shape} {row['trainer']}: {name} differs from {base} by {chk['max_rel_diff']:.1e} (tol {chk['tol']:.0e})"
                for name, chk in row["loss_check"].items() if not chk["ok"]]

    blas = facts["blas"] if isinstance(facts["blas"], str) else "; ".join(
        f"{Path(b['filepath']).name} {b['version']} {b['architecture']} ({b['num_threads']} threads)" for b in facts["blas"])
    notes = [
        "",
        f"Median ms per training step (forward, full BPTT, SGD lr {LR} update; loss {LOSS}; {NUM_LAYERS} layer), "
        f"dtype {facts['dtype']}. Warm-up steps per contender: {opts.warmup}, then at least {opts.repeats} timed steps "
        f"(the reference may time fewer, at least {Reference.min_repeats}, when {opts.repeats} of its steps would "
        f"take over {opts.budget:g} s), contenders alternated in blocks over the same time window, each block after "
        f"a {opts.settle:g} s pause and {opts.lead_in:g} s (at least one step) of untimed steps.",
        "Ratio > 1: cbptt is faster. GFLOP/s by the model of engine-notes.md: forward = 2·B·T·(I + H)·G·H + "
        "2·B·T_out·H·O (T_out = T many-to-many, 1 many-to-one), a training step = 3 × forward.",
        ("Fewer timed steps than asked: " + "; ".join(short) + ".") if short else
        f"Every contender timed {opts.repeats} or more steps in every row.",
        ("LOSS MISMATCH during warm-up: " + "; ".join(bad) + ".") if bad else
        "Warm-up losses of all contenders agree (same parameters, data and SGD steps).",
        (f"Noisy (interquartile range over {NOISY:.0%} of the median): " + "; ".join(noisy) + ".") if noisy else
        f"No timing has an interquartile range over {NOISY:.0%} of its median.",
        "",
        f"Machine: {facts['cpu']}, {facts['cpu_count']} CPUs; Python {facts['python']}, NumPy {facts['numpy']}, "
        f"SciPy {facts['scipy']}, cbptt {facts['cbptt']} (git {facts['git_commit']}"
        + (", modified: " + ", ".join(facts["git_dirty_files"]) if facts["git_dirty_files"] else "") + "); "
        f"BLAS threads: {facts['threads']}; BLAS: {blas}; {facts['date']}; load average (1, 5, 15 min) "
        f"{facts['loadavg_start']} at the start, {facts.get('loadavg_end')} at the end.",
    ]
    if facts["openblas_env"]:
        notes.append("WARNING: run with " + ", ".join(f"{k}={v}" for k, v in facts["openblas_env"].items())
                     + " set (see benchmarks/README.md).")
    if opts.quick:
        notes.append("QUICK RUN (--quick): too few steps for reporting.")
    return "\n".join(lines + notes) + "\n"


def _ms(x):
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps, for checking the script works (not for reporting)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=None, help="limit BLAS threads (both libraries) via threadpoolctl")
    p.add_argument("--shapes", default=",".join(s.name for s in SHAPES), help="comma-separated subset of: "
                   + ", ".join(s.name for s in SHAPES))
    p.add_argument("--repeats", type=int, default=None, help="timed steps per contender (default 20; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 3; --quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="alternating blocks per contender (default 5; --quick 2)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="seconds of timed steps a slow contender (the reference) may use per row (default 30)")
    p.add_argument("--settle", type=float, default=0.25, help="pause in seconds before each block (default 0.25)")
    p.add_argument("--lead-in", type=float, default=0.02,
                   help="seconds of untimed steps (at least one) at the start of each block (default 0.02)")
    p.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    opts = p.parse_args(argv)
    for name, full, quick in (("repeats", 20, 5), ("warmup", 3, 1), ("rounds", 5, 2)):
        if getattr(opts, name) is None:
            setattr(opts, name, quick if opts.quick else full)
    opts.dtype = np.float32 if opts.dtype == "float32" else np.float64
    return opts


def main(argv=None):
    opts = parse_args(argv)
    names = [s.strip() for s in opts.shapes.split(",") if s.strip()]
    unknown = set(names) - {s.name for s in SHAPES}
    if unknown:
        sys.exit(f"unknown shape(s) {sorted(unknown)}; choose from {[s.name for s in SHAPES]}")
    shapes = [s for s in SHAPES if s.name in names]

    contenders = []
    for c in CONTENDERS:
        ok, why = c.available()
        if ok:
            contenders.append(c)
        else:
            print(f"skipping contender {c.name}: {why}", file=sys.stderr)

    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if env:
        print("warning: " + ", ".join(f"{k}={v}" for k, v in env.items()) + " set in the environment; benchmarks are meant to run "
              "as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py`", file=sys.stderr)

    limits = None
    if threadpoolctl is None:
        print("threadpoolctl is not installed: BLAS libraries cannot be named" +
              (", and --threads is ignored" if opts.threads is not None else ""), file=sys.stderr)
        opts.threads = None if opts.threads is None else f"{opts.threads} requested, NOT applied (no threadpoolctl)"
    elif opts.threads is not None:
        limits = threadpoolctl.threadpool_limits(limits=opts.threads, user_api="blas")

    t_start = time.perf_counter()
    rows = []
    try:
        facts = machine_facts(opts)   # inside the limits, so num_threads shows what is used
        for shape in shapes:
            for cell in CELLS:
                for trainer in TRAINERS:
                    case = Case(shape, cell, trainer, opts.dtype)
                    here = [c for c in contenders if c.supports(case)]
                    try:
                        row = run_case(case, here, opts)
                    except Exception as exc:   # one broken row (e.g. src/ mid-edit) should not lose the rest
                        row = {"shape": shape.name, "cell": cell, "trainer": trainer, "error": repr(exc)}
                        print(f"{shape} {trainer} {cell}: ERROR {exc!r}", file=sys.stderr)
                    else:
                        print(f"{shape} {trainer} {cell}: " + ", ".join(
                            f"{n} {r['median_ms']:.3f} ms ({r['timed_steps']} steps)"
                            for n, r in row["contenders"].items()), file=sys.stderr)
                    rows.append(row)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    wall = time.perf_counter() - t_start
    facts["loadavg_end"] = _loadavg()

    md = markdown(rows, contenders, facts, opts)
    print(md)
    print(f"wall time {wall:.1f} s", file=sys.stderr)
    if not opts.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        stem = "bench_step_{}_{}{}".format(datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), facts["dtype"],
                                           "_quick" if opts.quick else "")
        settings = {k: (np.dtype(v).name if k == "dtype" else v) for k, v in vars(opts).items()}
        settings.update(loss=LOSS, lr=LR, num_layers=NUM_LAYERS, cells=CELLS, trainers=list(TRAINERS),
                        contenders=[c.name for c in contenders], wall_time_s=round(wall, 1))
        (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(
            {"benchmark": "bench_step", "facts": facts, "settings": settings, "rows": rows}, indent=1) + "\n")
        (RESULTS_DIR / f"{stem}.md").write_text(f"# bench_step, {facts['dtype']}\n\n" + md
                                                 + f"\nWall time {wall:.1f} s.\n")
        print(f"saved {RESULTS_DIR.relative_to(ROOT)}/{stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
