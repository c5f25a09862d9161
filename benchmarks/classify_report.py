"""Markdown for the rows of issue 19 (classify_grid.py): their own table (the shape may have a
vocabulary, each row names its kind and states issue 19's targets and whether they are met), with
the step table's notes under it."""
from .classify_grid import CLASSIFY_SHAPES, ROW_NAMES, TAGS
from .grid import LR
from .report import StepTable, targets_cell

# Issue 19's targets: how many times faster than the peer cbptt should be, by row kind and cell
# (None: any cell): the unidirectional rows' leads, and the ids ≥ 1.5× one-hot input.
TARGETS = {("bidirectional", "lstm"): {"torch": 1.2, "jax": 2.0},
           ("bidirectional", None): {"torch": 3.0, "jax": 2.0},
           ("embedding", "lstm"): {"torch": 1.2, "jax": 2.0},
           ("embedding", None): {"torch": 3.0, "jax": 2.0},
           ("ids", None): {"one-hot": 1.5}}


def targets_of(row):
    """{peer: the ratio asked for} of a row."""
    return TARGETS.get((row["kind"], row["cell"])) or TARGETS.get((row["kind"], None), {})


def target_cell(row):
    """'≥1.2× torch: yes · ≥2× jax: no' for the peers timed in the row."""
    return targets_cell(row, targets_of(row))


class ClassifyTable(StepTable):
    kind = "classify"

    def header(self):
        head = (["threads", "shape (B, T, I, H, O[, V])", "row", "cell"] + [f"{n} ms" for n in self.names]
                + [f"{p} / {self.base}" for p in self.peers] + ["targets (issue 19)"]
                + [f"{n} compile s" for n in self.compiled]
                + [f"{self.base} GFLOP/s", "GEMM GFLOP/s", f"{self.base} / GEMM",
                   "timed steps (" + " / ".join(self.names) + ")", "others' CPU"])
        return "\n".join(["| " + " | ".join(head) + " |",
                          "|" + "|".join("---" if 1 <= i <= 3 else "---:" for i in range(len(head))) + "|"])

    def line(self, row):
        shape = next(str(s) for s in CLASSIFY_SHAPES if s.name == row["shape"])
        res = row["contenders"]
        base = res.get(self.base)
        cells = ([str(row["threads"]), shape, ROW_NAMES[row["kind"]], row["cell"]]
                 + [self.time_of(row, n) for n in self.names])
        cells += [f"{res[p]['median_ms'] / base['median_ms']:.2f}×" if p in res and base else "n/a"
                  for p in self.peers]
        cells.append(target_cell(row))
        cells += [f"{res[n]['compile_ms'] / 1e3:.2f}" if n in res and "compile_ms" in res[n] else "n/a"
                  for n in self.compiled]
        return "| " + " | ".join(cells + self.rate_cells(row, res, base)) + " |"

    def about(self, opts, settings, rough):
        return [
            f"Issue 19's rows, dtype {opts.dtype_name}, 1 layer, median ms of one training step (forward, BPTT, "
            f"one SGD update lr {LR} without momentum). bidirectional many-to-one: cbptt.ManyToOne of "
            f"RNN(..., bidirectional=True), every sequence full length, the head on [the forward state after the "
            f"last step, the reverse state after step 0], mse on (B, O) targets. embedding many-to-many: "
            f"RNN(E, H, O, vocab_size=V) on token ids (B, T), cross-entropy over O = {TAGS} tags per step (the "
            f"mean over B·T). ids many-to-many: the character model, next-character cross-entropy over V = O; "
            f"cbptt reads token ids (B, T), one-hot is the same cbptt trainer on the one-hot floats (B, T, V). "
            f"Warm-up: {opts.warmup} steps per contender, then at least {opts.repeats} timed in {opts.rounds} "
            f"alternating blocks, each after a {opts.settle:g} s pause and {opts.lead_in:g} s of untimed ones. "
            f"threads: BLAS threads (threadpoolctl) for cbptt and the GEMM, torch.set_num_threads for torch"
            + "".join(f"; {n} ignores the threads column: {' / '.join(sorted(v))}" for n, v in settings.items())
            + ".",
            "torch: to_torch() of the same model: nn.RNN/LSTM/GRU(bidirectional=True, batch_first=True) and "
            "nn.Linear on cat(h_n[-2], h_n[-1]); nn.Embedding (dense gradient), the rnn and nn.Linear on every "
            "step, F.cross_entropy; backward, optim.SGD. ids rows: n/a."
            + (" jax: one lax.scan a direction (the reverse one with reverse=True) over the hoisted input "
               "projection, or over the table's rows picked by id; value_and_grad and the SGD update in one "
               "jax.jit function compiled ahead of the warm-up ('jax compile s', not in 'jax ms'); ids rows: n/a."
               if "jax" in self.names else ""),
            "Ratios > 1: cbptt is faster; targets: issue 19's (the unidirectional rows' leads: ≥ 3× torch on "
            "tanh and GRU, ≥ 1.2× on LSTM, ≥ 2× JAX; token ids ≥ 1.5× the one-hot input). GFLOP/s by the model "
            "of docs/MATHS.md: a step = 3 × forward, forward = D·2·B·T·(I + H)·G·H + 2·B·T_out·D·H·O (D = 2 "
            "directions on bidirectional rows, else 1; T_out = 1 many-to-one); the embedding's lookup counts "
            "nothing, the ids rows count the one-hot product (I = V) for both contenders. GEMM GFLOP/s: ?gemm of "
            "the recurrent shape (B × H) @ (H × G·H)"
            + (f" (* rough: the call overhead is most of the call, at {', '.join(sorted(set(rough)))})" if rough
               else "") + ".",
        ]
