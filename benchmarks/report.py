"""Markdown for the step benchmark: a header, one line per row (printed as soon as the row is timed), and the
notes under the table."""
from .facts import machine_line
from .grid import LOSS, LR, NUM_LAYERS, SHAPES, TRUNCATED_K

FAR_NS = 300            # core-to-core round trip above which the 2-thread rows ran on far-apart cores
NOISY = 0.25            # flag a timing whose interquartile range exceeds this fraction of its median
COMPILED = ("jax",)     # contenders that compile ahead of the warm-up; their compile time gets its own column
BUSY = 0.2              # flag a row during which other processes used more than this many CPUs on average


def _pinning_note(rows):
    """Which thread counts ran with the whole process pinned to fewer CPUs (facts.cores)."""
    pinned = {}
    for row in rows:
        if row.get("pinned_cpus"):
            pinned.setdefault(row["threads"], tuple(row["pinned_cpus"]))
    if not pinned:
        return ""
    return ("Pinned: " + "; ".join(
        f"the {threads}-thread rows ran with every thread of the process (every contender's, XLA's pool "
        f"included) on CPU{'s' if len(cpus) > 1 else ''} {', '.join(map(str, cpus))} (sched_setaffinity)"
        for threads, cpus in sorted(pinned.items())) + ".")


def _round_trip_note(rows):
    """What the core-to-core round trips measured at the 2-thread rows' start and end say."""
    trips = [(row, ns) for row in rows for ns in (row.get("core_round_trip_ns") or []) if ns is not None]
    if not trips:
        return ""
    values = [ns for _, ns in trips]
    far = sorted({f"{row['shape']} {row['trainer']} {row['cell']} ({row['threads']} thr)"
                  for row, ns in trips if ns > FAR_NS}, key=str)
    line = (f"Core-to-core round trip of cbptt's two threads (a cache line passed back and forth, at each "
            f"2-thread row's start and end): {min(values):.0f}-{max(values):.0f} ns.")
    if far:
        line += (f" FAR-APART CORES (over {FAR_NS} ns: the host ran the two vCPUs on distant cores, where "
                 f"2-thread steps of every contender can take up to twice as long; compare ratios, not times) at "
                 + _listing(far))
    return line


def _listing(items, limit=10):
    """'a; b; c.' with at most `limit` items, then how many more."""
    more = len(items) - limit
    return "; ".join(items[:limit]) + (f"; and {more} more." if more > 0 else ".")


def targets_cell(row, wanted):
    """'≥1.5× torch: no · ≥2× jax: yes' for the peers timed in the row; wanted: {peer: the
    ratio asked for}."""
    res, base = row["contenders"], row["contenders"].get("cbptt")
    parts = []
    for peer, want in wanted.items():
        if peer in res and base:
            ratio = res[peer]["median_ms"] / base["median_ms"]
            parts.append(f"≥{want:g}× {peer}: {'yes' if ratio >= want else 'no'}")
    return " · ".join(parts) or "-"


def ms(x):
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


class StepTable:
    kind = "step"          # the rows' "table" in the JSON

    def __init__(self, names):
        self.names = names                 # contender names, the baseline first
        self.base, self.peers = names[0], names[1:]
        self.compiled = [n for n in names if n in COMPILED]   # also get a compile-time column

    def header(self):
        head = (["threads", "shape (B, T, I, H, O)", "trainer", "cell"] + [f"{n} ms" for n in self.names]
                + [f"{p} / {self.base}" for p in self.peers] + [f"{n} compile s" for n in self.compiled]
                + [f"{self.base} GFLOP/s", "GEMM GFLOP/s", f"{self.base} / GEMM",
                   "timed steps (" + " / ".join(self.names) + ")", "others' CPU"])
        return "\n".join(["| " + " | ".join(head) + " |",
                          "|" + "|".join("---" if 1 <= i <= 3 else "---:" for i in range(len(head))) + "|"])

    @staticmethod
    def time_of(row, n):
        """The time cell of contender n: its median ms, (!) when its check failed; or why it has none."""
        res, out = row["contenders"], row["left_out"]
        if n in res:
            bad = n in row["loss_check"] and not row["loss_check"][n]["ok"]
            return ms(res[n]["median_ms"]) + (" (!)" if bad else "")
        return ("skip" if out.get(n, "").startswith("skip") else
                "error" if n in out and not out[n].startswith("n/a") else "n/a")

    def line(self, row):
        shape = next(str(s) for s in SHAPES if s.name == row["shape"])
        res = row["contenders"]
        cells = [str(row["threads"]), shape, row["trainer"], row["cell"]] + [self.time_of(row, n) for n in self.names]
        base = res.get(self.base)
        cells += [f"{res[p]['median_ms'] / base['median_ms']:.2f}×" if p in res and base else "n/a"
                  for p in self.peers]
        cells += [f"{res[n]['compile_ms'] / 1e3:.2f}" if n in res and "compile_ms" in res[n] else "n/a"
                  for n in self.compiled]
        return "| " + " | ".join(cells + self.rate_cells(row, res, base)) + " |"

    def rate_cells(self, row, res, base):
        """The row's last cells: cbptt's GFLOP/s, the GEMM's, their ratio, the timed steps of
        each contender and the other processes' CPU."""
        gemm = row["gemm"]
        return [f"{base['gflops']:.1f}" if base else "n/a",
                f"{gemm['gflops']:.1f}" + ("*" if gemm["rough"] else ""),
                f"{base['gflops'] / gemm['gflops']:.0%}" if base else "n/a",
                " / ".join(str(res[n]["timed_steps"]) if n in res else "-" for n in self.names),
                "?" if row["others_cpu"] is None else f"{row['others_cpu']:.2f}"]

    def about(self, opts, settings, rough):
        """The notes' opening paragraphs: what a row times and how to read its columns. settings:
        contender -> the thread settings it ran with when not the threads column's (jax); rough: the rows
        whose GEMM figure is rough."""
        return [
            f"Median ms per training step, dtype {opts.dtype_name}: forward, BPTT and one SGD update (lr {LR}, no "
            f"momentum) per sequence batch; loss {LOSS}; {NUM_LAYERS} layer. Truncated: cbptt.Truncated(k1=k2="
            f"{TRUNCATED_K}) over the T-step stream, i.e. T/{TRUNCATED_K} windows and updates per step (torch: windows "
            f"of {TRUNCATED_K} steps, state detached between them), the stream continuing across steps. "
            f"Warm-up: {opts.warmup} steps per contender, then at least {opts.repeats} timed steps in {opts.rounds} "
            f"alternating blocks, each after a {opts.settle:g} s pause and {opts.lead_in:g} s (at least one step) of "
            f"untimed steps. threads: BLAS threads (threadpoolctl) for cbptt, the GEMM and the reference, "
            f"torch.set_num_threads for torch"
            + "".join(f"; {n} ignores the threads column: {' / '.join(sorted(v))}" for n, v in settings.items())
            + ".",
            ("jax: the same step (forward by lax.scan, jax.value_and_grad, SGD) in one jax.jit function, compiled "
             "ahead of the warm-up; 'jax compile s' is that tracing + XLA compile (first call), not in 'jax ms'; "
             "n/a on truncated rows.") if "jax" in self.names else "",
            "Ratios > 1: cbptt is faster. GFLOP/s by the model of docs/MATHS.md: forward = 2·B·T·(I + H)·G·H + "
            "2·B·T_out·H·O (T_out = T many-to-many, 1 many-to-one; truncated counts the forward of every window), "
            "a training step = 3 × forward. others' CPU: CPUs kept busy on average by other processes (and the "
            "hypervisor's steal) during the row. GEMM GFLOP/s: scipy.linalg.blas ?gemm of the recurrent shape "
            "(B × H) @ (H × G·H), the same BLAS and thread limit as cbptt, the Python call overhead subtracted"
            + (f" (* rough: the call overhead is most of the call, at {', '.join(sorted(set(rough)))})" if rough
               else "") + "."
        ]

    def notes(self, rows, facts, opts, skipped_contenders, machine=True):
        """The notes under the table; machine: end with the machine's line (once per run)."""
        short, bad, noisy, left, rough, busy = [], [], [], [], [], []
        for row in rows:
            where = f"{row['shape']} {row['trainer']} {row['cell']} ({row['threads']} thr)"
            for name, r in row["contenders"].items():
                if r["q3_ms"] - r["q1_ms"] > NOISY * r["median_ms"]:
                    noisy.append(f"{name} at {where} (quartiles {ms(r['q1_ms'])}–{ms(r['q3_ms'])} ms)")
                if r["timed_steps"] < opts.repeats:
                    short.append(f"{name} at {where}: {r['timed_steps']} steps")
            bad += [f"{where}: {name}'s ids differ from {self.base}'s at {chk['max_rel_diff']:.1%} of the positions"
                    if chk.get("what") == "ids" else
                    f"{where}: {name} differs from {self.base} by {chk['max_rel_diff']:.1e} (tol {chk['tol']:.0e})"
                    for name, chk in row["loss_check"].items() if not chk["ok"]]
            left += [f"{name} at {where}: {why}" for name, why in row["left_out"].items() if why != "n/a"]
            if row["others_cpu"] is not None and row["others_cpu"] > BUSY:
                busy.append(where)
            if row["gemm"]["rough"]:
                rough.append(f"{row['shape']} {row['cell']}")
        checked = sorted({n for row in rows for n in row["loss_check"]})
        settings = {}                       # contender -> its own thread setting (jax: fixed by XLA_FLAGS at import)
        for row in rows:
            for name, r in row["contenders"].items():
                if "thread_setting" in r:
                    settings.setdefault(name, set()).add(r["thread_setting"])
        used = {}                           # cbptt's own threads (Engine.last_parts) -> rows
        for row in rows:
            r = row["contenders"].get("cbptt", {})
            if "threads_used" in r:
                used.setdefault(r["threads_used"], []).append(
                    f"{row['shape']} {row['trainer']} {row['cell']} ({row['threads']} thr)")
        notes = self.about(opts, settings, rough) + [
            ("Fewer timed steps than asked: " + "; ".join(short) + ".") if short else
            f"Every contender timed {opts.repeats} or more steps in every row.",
            ("LOSS MISMATCH during warm-up (marked (!)): " + "; ".join(bad) + ".") if bad else
            (f"Warm-up losses of {', '.join(checked)} agree with {self.base}'s in every row (relative tolerance "
             f"{'1e-4' if opts.dtype_name == 'float32' else '1e-9'})." if checked else ""),
            ("cbptt's own threads (Engine.last_parts, see 'The team of threads'): " + "; ".join(
                f"{n} at {len(where)} row(s)" + (f" ({', '.join(where)})" if len(used) > 1 and n > 1 else "")
                for n, where in sorted(used.items())) + ".") if used else "",
            _pinning_note(rows),
            ("Left out: " + "; ".join(left) + ".") if left else "",
            ("Not run: " + "; ".join(f"{n} ({why})" for n, why in skipped_contenders.items()) + ".")
            if skipped_contenders else "",
            (f"BUSY MACHINE: other processes kept more than {BUSY:g} CPU busy on average while these rows ran, "
             f"so their times are not representative ({len(busy)} of {len(rows)} rows; see the others' CPU column): "
             + _listing(busy)) if busy else
            f"Other processes kept under {BUSY:g} CPU busy on average during every row (others' CPU column).",
            _round_trip_note(rows),
            (f"Noisy (interquartile range over {NOISY:.0%} of the median; {len(noisy)} timings, all quartiles in the "
             f"JSON): " + _listing(noisy))
            if noisy else
            f"No timing has an interquartile range over {NOISY:.0%} of its median.",
        ]
        notes = [""] + [n for n in notes if n] + (["", machine_line(facts)] if machine else [])
        if opts.quick:
            notes.append("QUICK RUN (--quick): too few steps for reporting.")
        return "\n".join(notes) + "\n"
