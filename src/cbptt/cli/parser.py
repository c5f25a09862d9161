"""The command line: argparse for every subcommand, the option defaults, and the checks of
option values (``train_config`` for a new run, ``resume_config`` for a resumed one)."""
import argparse
import math
import os

from .. import __version__, data
from ..names import CELLS, DTYPES, OPTIMIZERS
from .errors import UsageError
from .fit_options import SCHEDULES, check_resumed_epochs, complete_fit_options


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _memory_limit(text):
    """--memory-limit: bytes, or a size such as 64MiB (bounded.parse_limit)."""
    from ..bounded import parse_limit
    try:
        return parse_limit(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 64MiB, got {text!r}") \
            from None


def _int(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _float(low, high=None, low_open=False, high_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if (not math.isfinite(value) or value < low or (low_open and value == low)
                or (high is not None and (value > high or (high_open and value == high)))):
            left = "(" if low_open else "["
            right = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
            span = f"{left}{low}, {right}"
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return value
    return parse


# Options a resumed run keeps (the value in the run wins; giving another one is an error).
FIXED_ON_RESUME = ("cell", "hidden", "layers", "embedding", "dtype", "optimizer", "lr",
                   "momentum", "clip", "batch", "seed", "val", "window", "k1", "k2", "mode",
                   "horizon", "columns", "target", "format", "dropout", "recurrent_dropout",
                   "bidirectional", "schedule", "schedule_gamma", "step_size",
                   "schedule_patience", "warmup", "early_stopping", "memory_limit")
DEFAULTS = dict(cell="lstm", hidden=64, layers=1, dtype="float32", optimizer="adam",
                momentum=0.0, clip=1.0, epochs=10, batch=32, seed=0, val=0.1, horizon=1,
                mode="many-to-many", checkpoint_every=500, log_every=10, format="auto",
                dropout=0.0, recurrent_dropout=0.0, bidirectional=False)
DEFAULT_LR = {"adam": 2e-3, "sgd": 0.05}
DEFAULT_WINDOW = {"char": 64, "forecast": 32}
TASK_NAMES = {"char": "a character model", "forecast": "a forecasting model",
              "seq2seq": "an encoder-decoder"}


def build_parser():
    """The parser of the ``cbptt`` command and its subcommands."""
    p = _Parser(prog="cbptt", description="Exact, fast BPTT for recurrent networks on the CPU.",
                epilog="Run 'cbptt COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"cbptt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_demo(sub)
    _add_train(sub)
    _add_using(sub)
    return p


def _add_demo(sub):
    d = sub.add_parser("demo", help="train three small models and show what they learnt "
                                    "(about a minute)")
    d.add_argument("--quick", action="store_true", help="a reduced demo (a few seconds)")
    d.add_argument("--plot", default="cbptt-demo.png", metavar="PNG",
                   help="where to draw the loss curves (default %(default)s; needs matplotlib)")
    d.add_argument("--no-plot", action="store_true", help="draw no PNG")
    d.add_argument("--seed", type=_int(0), default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_train(sub):
    t = sub.add_parser("train", help="train a model on a text file, a CSV/.npy series or "
                                     "source<TAB>target pairs",
                       description="Train on DATA: a text file gives a character model (windows, "
                       "or truncated BPTT with --k1/--k2); a .csv/.tsv/.npy series gives a "
                       "forecasting model; with --mode seq2seq, a file of source<TAB>target "
                       "lines gives a character-level encoder-decoder. Writes a run folder "
                       "(--out) with checkpoints, config.json and metrics.csv; --resume RUN "
                       "continues a run exactly.")
    t.add_argument("data", nargs="?", metavar="DATA", help="text file, .csv/.tsv/.npy series, "
                   "or source<TAB>target lines with --mode seq2seq (optional with --resume: "
                   "the run's own data file)")
    t.add_argument("--format", choices=["auto", "text", "csv", "npy"],
                   help="how to read DATA (default: by its extension; .csv .tsv .npy are "
                        "series, anything else text)")
    g = t.add_argument_group("run folder")
    g.add_argument("--out", metavar="RUN", help="run folder to create (default: a new one "
                   "under runs/)")
    g.add_argument("--resume", metavar="RUN", help="continue the run in RUN where its last "
                   "checkpoint left it; --epochs gives the new total")
    g.add_argument("--checkpoint-every", type=_int(0), metavar="N",
                   help="save a checkpoint every N steps (default 500; 0: at epoch ends only)")
    g.add_argument("--log-every", type=_int(1), metavar="N",
                   help="write the mean training loss to metrics.csv every N steps (default 10)")
    g.add_argument("--max-steps", type=_int(1), metavar="N",
                   help="stop (with a checkpoint) once the run has made N steps in all")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_training_options(t)


def _add_training_options(t):
    """cbptt train's options of the model, the training and the two kinds of data."""
    g = t.add_argument_group("model")
    g.add_argument("--cell", choices=CELLS, help="default lstm")
    g.add_argument("--hidden", type=_int(1), help="hidden units per layer (default 64)")
    g.add_argument("--layers", type=_int(1), help="default 1")
    g.add_argument("--embedding", type=_int(1), metavar="E",
                   help="text: read the characters through an embedding table of E columns "
                        "(as torch.nn.Embedding) rather than as their one-hot rows")
    g.add_argument("--bidirectional", action="store_true", default=None,
                   help="series, --mode many-to-one: each layer reads the window both ways "
                        "(the other tasks are causal: a reverse direction would read the "
                        "answer)")
    g.add_argument("--dropout", type=_float(0, 1), metavar="P",
                   help="dropout on each layer's outputs but the top one's, in training "
                        "(as torch's; default 0)")
    g.add_argument("--recurrent-dropout", type=_float(0, 1), metavar="Q",
                   help="dropout on h(t-1) entering each layer's recurrent product, one mask "
                        "per sequence (Keras's; default 0)")
    g.add_argument("--dtype", choices=DTYPES, help="default float32")
    g.add_argument("--seed", type=_int(0), help="initialisation and shuffling (default 0)")
    g = t.add_argument_group("training")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam")
    g.add_argument("--lr", type=_float(0, low_open=True),
                   help="learning rate (default 2e-3 for adam, 0.05 for sgd)")
    g.add_argument("--momentum", type=_float(0, 1), help="SGD momentum (default 0)")
    g.add_argument("--clip", type=_float(0), help="clip the gradient norm to this (default 1.0; "
                                                  "0: no clipping)")
    g.add_argument("--memory-limit", type=_memory_limit, metavar="SIZE",
                   help="exact BPTT of each window within SIZE of workspace (e.g. 64MiB): "
                        "states kept at checkpoints, the rest recomputed (not with --k1, "
                        "--mode seq2seq, --dropout or --embedding)")
    g.add_argument("--epochs", type=_int(1), help="total epochs (default 10)")
    g.add_argument("--batch", type=_int(1), help="windows per batch, parallel streams with "
                                                 "--k1, or pairs with --mode seq2seq "
                                                 "(default 32)")
    g.add_argument("--val", type=_float(0, 1), help="fraction held out for validation, taken "
                   "from the end of the data (default 0.1; 0: none)")
    g.add_argument("--window", type=_int(1), help="steps per training window (default 64 for "
                   "text, 32 for series)")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="the learning rate: cosine anneals it to 0 over the epochs, step by "
                        "step; step multiplies it by --schedule-gamma every --step-size "
                        "epochs; plateau multiplies it by --schedule-gamma when the validation "
                        "loss has not improved for --schedule-patience epochs (default: "
                        "constant)")
    g.add_argument("--schedule-gamma", type=_float(0, 1, low_open=True), metavar="G",
                   help="--schedule step or plateau: the factor of a decay (default 0.1)")
    g.add_argument("--step-size", type=_int(1), metavar="N",
                   help="--schedule step: epochs between decays (default a third of --epochs)")
    g.add_argument("--schedule-patience", type=_int(0), metavar="N",
                   help="--schedule plateau: epochs without improvement before a decay "
                        "(default 2)")
    g.add_argument("--warmup", type=_float(0, low_open=True), metavar="EPOCHS",
                   help="raise the learning rate linearly from a third of --lr to --lr over "
                        "the first EPOCHS epochs, step by step, then follow --schedule")
    g.add_argument("--early-stopping", type=_int(1), metavar="PATIENCE",
                   help="stop when the validation loss has not improved for PATIENCE epochs; "
                        "the best epoch's weights are kept in RUN/best.npz (which sample, "
                        "predict and translate use)")
    g = t.add_argument_group("text (character model)")
    g.add_argument("--k1", type=_int(1), help="truncated BPTT: update every k1 characters of "
                   "--batch parallel streams carrying their state")
    g.add_argument("--k2", type=_int(1), help="truncated BPTT: back-propagate k2 >= k1 steps "
                   "(default k1)")
    g = t.add_argument_group("series (forecasting), or pairs (--mode seq2seq)")
    g.add_argument("--mode", choices=["many-to-many", "many-to-one", "seq2seq"],
                   help="a series: a forecast at every step of a window, or at its last step "
                        "only (default many-to-many); seq2seq: DATA holds source<TAB>target "
                        "lines, an encoder-decoder learns to write each target from its "
                        "source (character level; held-out exact match of greedy outputs)")
    g.add_argument("--horizon", type=_int(1), help="forecast this many rows ahead (default 1)")
    g.add_argument("--columns", help="input columns, by name or index, comma-separated "
                   "(default all)")
    g.add_argument("--target", help="columns to forecast, by name or index (default the "
                   "input columns)")


def _add_using(sub):
    """The subcommands that use a run (sample, predict, translate, plot), and bench."""
    s = sub.add_parser("sample", help="generate text from a character model")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--prime", help="text to start from (default a newline)")
    s.add_argument("-n", type=_int(0), default=500, help="characters to generate (default 500)")
    s.add_argument("--temperature", type=_float(0), default=0.8,
                   help="softmax temperature (default 0.8; 0: always the likeliest)")
    s.add_argument("--seed", type=_int(0), help="seed of the sampling")

    r = sub.add_parser("predict", help="forecast a series with a forecasting model")
    r.add_argument("run", metavar="RUN")
    r.add_argument("data", metavar="DATA")
    r.add_argument("--format", choices=["auto", "csv", "npy"], default="auto")
    r.add_argument("--output", "-o", metavar="CSV", help="write here instead of stdout")

    tr = sub.add_parser("translate", help="outputs of an encoder-decoder (--mode seq2seq) for "
                                          "source strings, one line each")
    tr.add_argument("run", metavar="RUN")
    tr.add_argument("texts", nargs="*", metavar="TEXT", help="source strings")
    tr.add_argument("--input", metavar="FILE", help="read sources from FILE, one a line (of "
                    "source<TAB>target lines, the source)")
    tr.add_argument("--beam", type=_int(1), default=1, metavar="K",
                    help="beam search over K hypotheses (default 1: greedy)")

    pl = sub.add_parser("plot", help="loss curves (and gradient flow) of a run, as PNG")
    pl.add_argument("run", metavar="RUN")
    pl.add_argument("--output", "-o", metavar="PNG", help="default RUN/curves.png")

    sub.add_parser("info", help="what cbptt runs on here: its version, the instruction set "
                                "compiled and in use, SciPy's BLAS and its threads, and the "
                                "thread policy in force and why")

    b = sub.add_parser("bench", help="run the benchmark suite (python -m benchmarks) of a "
                                     "source checkout", add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)


def train_config(args):
    """The run configuration from parsed ``cbptt train`` options (defaults filled in)."""
    if args.data is None:
        raise UsageError("cbptt train: DATA is required (or --resume RUN)")
    if args.mode == "seq2seq":
        if (args.format or "auto") != "auto":
            raise UsageError(f"cbptt train: --format is for text and series; with --mode "
                             f"seq2seq {args.data} is read as source<TAB>target lines")
        fmt, task = "pairs", "seq2seq"
    else:
        fmt = data.detect_format(args.data, args.format or "auto")
        task = "char" if fmt == data.TEXT else "forecast"
    given = {k: getattr(args, k) for k in FIXED_ON_RESUME + ("epochs", "checkpoint_every",
                                                             "log_every")}
    c = {k: (v if v is not None else DEFAULTS.get(k)) for k, v in given.items()}
    c.update(task=task, data=os.path.abspath(args.data), format=fmt)
    if c["lr"] is None:
        c["lr"] = DEFAULT_LR[c["optimizer"]]
    if c["momentum"] and c["optimizer"] != "sgd":
        raise UsageError("cbptt train: --momentum is for --optimizer sgd")
    if c["bidirectional"] and not (task == "forecast" and c["mode"] == "many-to-one"):
        raise UsageError("cbptt train: --bidirectional is for series with --mode many-to-one "
                         "(one target read after the window): next-character models, "
                         "forecasts at every step and seq2seq decoders are causal, and a "
                         "reverse direction would read the answer")
    if c["memory_limit"] is not None and (c["k1"] is not None or c["embedding"] or
                                          c["bidirectional"]):
        raise UsageError("cbptt train: --memory-limit bounds full-sequence BPTT of text, "
                         "series or seq2seq pairs (no embedding or reverse direction); not "
                         "--k1, --embedding or --bidirectional")
    if task == "char":
        _text_options(c, args)
    elif task == "seq2seq":
        _pairs_options(c, args)
    else:
        _series_options(c, args)
    complete_fit_options(c)
    return c


def _pairs_options(c, args):
    """Check the options of an encoder-decoder in c (from train_config)."""
    for name in ("window", "k1", "k2", "horizon", "columns", "target", "embedding"):
        if getattr(args, name) is not None:
            raise UsageError(f"cbptt train: --{name} is not for --mode seq2seq (each batch "
                             f"holds --batch whole pairs)")
        c.pop(name)


def _text_options(c, args):
    """Check and complete the options of a character model in c (from train_config)."""
    for name in ("mode", "horizon", "columns", "target"):
        if getattr(args, name) is not None:
            raise UsageError(f"cbptt train: --{name} is for time series (.csv/.npy), and "
                             f"{args.data} is read as text")
    for name in ("mode", "horizon", "columns", "target"):
        c.pop(name)
    if c["k2"] is not None and c["k1"] is None:
        raise UsageError("cbptt train: --k2 needs --k1")
    if c["k1"] is not None:
        if args.window is not None:
            raise UsageError("cbptt train: --window is for window training; with --k1 the "
                             "text is read as --batch streams")
        c["k2"] = c["k2"] or c["k1"]
        if c["k2"] < c["k1"]:
            raise UsageError(f"cbptt train: --k2 must be >= --k1 (got k1={c['k1']}, "
                             f"k2={c['k2']})")
        c["window"] = None
    else:
        c["window"] = c["window"] or DEFAULT_WINDOW["char"]


def _series_options(c, args):
    """Check and complete the options of a forecasting model in c (from train_config)."""
    if args.embedding is not None:
        raise UsageError(f"cbptt train: --embedding is for text files (characters are ids); "
                         f"{args.data} is read as a series of numbers")
    c.pop("embedding")
    if args.k1 is not None or args.k2 is not None:
        raise UsageError("cbptt train: --k1/--k2 are for text files; a series trains on "
                         "windows (--window)")
    c.pop("k1")
    c.pop("k2")
    c["window"] = c["window"] or DEFAULT_WINDOW["forecast"]


def resume_config(args, stored):
    """The stored configuration of a run being resumed, with the options that may change."""
    c = dict(stored)
    for name in FIXED_ON_RESUME:
        value = getattr(args, name, None)
        if value is None or (name == "format" and value == "auto"):
            continue
        if name not in c:
            raise UsageError(f"cbptt train: --{name} does not apply to this run "
                             f"({TASK_NAMES[c['task']]})")
        if value != c[name]:
            flag = "--" + name.replace("_", "-")
            theirs = "none" if c[name] is None else c[name]
            raise UsageError(f"cbptt train: {flag} {value} differs from the run's "
                             f"{theirs}; a resumed run keeps its settings (only --epochs, "
                             f"--checkpoint-every, --log-every and --max-steps may change)")
    if args.epochs is not None:
        check_resumed_epochs(c, args.epochs)
    for name in ("epochs", "checkpoint_every", "log_every"):
        if getattr(args, name) is not None:
            c[name] = getattr(args, name)
    if args.data is not None:
        c["data"] = os.path.abspath(args.data)
    if not os.path.exists(c["data"]):
        raise UsageError(f"cbptt train: the run's data file {c['data']} is gone; pass it as "
                         f"DATA")
    digest = data.file_digest(c["data"])
    if digest != stored.get("data_sha256"):
        raise UsageError(f"cbptt train: {c['data']} is not the file the run was trained on "
                         f"(its content differs); a resumed run needs the same data")
    return c
