"""Markdown for the seq2seq rows: their own table (the shape has more sizes, decoding rows count
sequences per second, and each row states issue 18's targets and whether they are met), with the
step table's notes under it."""
from .grid import LR
from .report import StepTable, targets_cell
from .seq2seq_grid import BEAM, LOSS, SEQ2SEQ_SHAPES, START

# Issue 18's targets: how many times faster than the peer cbptt should be, by row kind and cell.
TARGETS = {("seq2seq", "lstm"): {"torch": 1.5, "jax": 2.0}, ("seq2seq", "gru"): {"torch": 3.0, "jax": 2.0},
           ("greedy", None): {"torch": 3.0}, (f"beam-{BEAM}", None): {"torch": 3.0}}


def targets_of(row):
    """{peer: the ratio asked for} of a row (training: by cell; decoding: any cell)."""
    return TARGETS.get((row["trainer"], row["cell"])) or TARGETS.get((row["trainer"], None), {})


def target_cell(row):
    """'≥1.5× torch: no · ≥2× jax: yes' for the peers timed in the row."""
    return targets_cell(row, targets_of(row))


class Seq2SeqTable(StepTable):
    kind = "seq2seq"

    def header(self):
        head = (["threads", "shape (B, T, U, I, J, O, H)", "row", "cell"] + [f"{n} ms" for n in self.names]
                + [f"{p} / {self.base}" for p in self.peers] + ["targets (issue 18)"]
                + [f"{n} compile s" for n in self.compiled] + [f"{n} seq/s" for n in self.names]
                + [f"{self.base} GFLOP/s", "GEMM GFLOP/s", f"{self.base} / GEMM",
                   "timed steps (" + " / ".join(self.names) + ")", "others' CPU"])
        return "\n".join(["| " + " | ".join(head) + " |",
                          "|" + "|".join("---" if 1 <= i <= 3 else "---:" for i in range(len(head))) + "|"])

    def line(self, row):
        shape = next(str(s) for s in SEQ2SEQ_SHAPES if s.name == row["shape"])
        res = row["contenders"]
        base = res.get(self.base)
        cells = [str(row["threads"]), shape, row["trainer"], row["cell"]] + [self.time_of(row, n) for n in self.names]
        cells += [f"{res[p]['median_ms'] / base['median_ms']:.2f}×" if p in res and base else "n/a"
                  for p in self.peers]
        cells.append(target_cell(row))
        cells += [f"{res[n]['compile_ms'] / 1e3:.2f}" if n in res and "compile_ms" in res[n] else "n/a"
                  for n in self.compiled]
        cells += [f"{row['B'] / res[n]['median_ms'] * 1e3:.0f}" if n in res else "n/a" for n in self.names]
        return "| " + " | ".join(cells + self.rate_cells(row, res, base)) + " |"

    def about(self, opts, settings, rough):
        return [
            f"Encoder-decoder (cbptt.Seq2Seq), dtype {opts.dtype_name}, 1 layer: an encoder RNN(I, H) without a "
            f"head whose state after the last of the T source steps starts a decoder RNN(J, H, O) with a linear "
            f"head; one-hot float inputs. seq2seq rows: median ms of one training step (teacher forced, {LOSS} "
            f"mean over the B·U targets, every length full, one SGD update lr {LR} without momentum); greedy and "
            f"beam-{BEAM} rows: median ms of one generate call of B sequences, N = U ids each from start id "
            f"{START} (beam-{BEAM}: the best of {BEAM} hypotheses per sequence by total log-probability); seq/s: "
            f"B over that time. Warm-up: {opts.warmup} steps or calls per contender, then at least {opts.repeats} "
            f"timed in {opts.rounds} alternating blocks, each after a {opts.settle:g} s pause and "
            f"{opts.lead_in:g} s of untimed ones. threads: BLAS threads (threadpoolctl) for cbptt and the GEMM, "
            f"torch.set_num_threads for torch"
            + "".join(f"; {n} ignores the threads column: {' / '.join(sorted(v))}" for n, v in settings.items())
            + ".",
            "torch: to_torch() of the same halves (nn.LSTM/nn.GRU, the encoder's final state handed to the "
            "decoder, nn.Linear, F.cross_entropy, backward, optim.SGD); decoding under no_grad, one decoder call "
            "per step on (B·k, 1, J) with the state carried, the next input the one-hot of the chosen ids; beam "
            "search batched over B·k rows, topk over the k·O candidates of each sequence."
            + (" jax: encoder and decoder by lax.scan, value_and_grad and the SGD update in one jax.jit "
               "function compiled ahead of the warm-up ('jax compile s', not in 'jax ms'); training rows only."
               if "jax" in self.names else ""),
            "Ratios > 1: cbptt is faster; targets: issue 18's (a training step ≥ 1.5× torch on LSTM, ≥ 3× on "
            "GRU, ≥ 2× JAX; decoding ≥ 3× torch). Warm-up checks: the training rows' losses agree with cbptt's "
            "as in the step table; the decoding rows' ids equal cbptt's (a mismatch marks the time (!)). "
            "GFLOP/s by the model of docs/MATHS.md with the one-hot inputs counted as dense products: training "
            "3 × (2·B·T·(I + H)·G·H + 2·B·U·((J + H)·G·H + H·O)); decoding 2·B·T·(I + H)·G·H + "
            "2·B·k·N·((J + H)·G·H + H·O). GEMM GFLOP/s: ?gemm of (B·k × H) @ (H × G·H), the recurrent "
            "product of the decoder's batch (k = 1 for training)"
            + (f" (* rough: the call overhead is most of the call, at {', '.join(sorted(set(rough)))})" if rough
               else "") + ".",
        ]
