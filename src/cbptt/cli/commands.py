"""``main``: the ``cbptt`` command's dispatch to its subcommands, and how their errors end (a
user's mistake: one line on stderr, exit code 2; Ctrl-C: exit code 130)."""
import contextlib
import os
import sys

from ..archive import atomic_write_text
from ..checkpoint import CheckpointError
from ..data import DataError
from ..memory import InsufficientMemory
from .bench import run_bench
from .demo import demo
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .parser import build_parser
from .plots import plot_run
from .runs import csv_text, predict_run, sample_run, translate_run
from .train import cmd_train


def main(argv=None):
    """The ``cbptt`` command; returns its exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        if argv and argv[0] == "bench":      # everything after "bench" is the suite's
            return run_bench(argv[1:])
        args, extra = parser.parse_known_args(argv)
        if extra:
            if args.command != "translate" or any(e.startswith("-") for e in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.texts += extra          # sources after an option: translate RUN --beam 3 TEXT
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return _COMMANDS[args.command](args)
    except (UsageError, DataError, CheckpointError, MemoryError) as exc:
        print(_one_line(exc, args), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cbptt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:           # e.g. cbptt sample ... | head
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0


def _one_line(exc, args):
    """The error as one line starting with "cbptt COMMAND: "."""
    message = str(exc)
    if isinstance(exc, MemoryError) and not isinstance(exc, InsufficientMemory):
        message = f"out of memory: {message}" if message else "out of memory"
    if not message.startswith("cbptt"):
        message = f"cbptt {getattr(args, 'command', '') or ''}: {message}".replace("  ", " ")
    return message.replace("\n", " ")


def _demo(args):
    demo(quick=args.quick, plot=None if args.no_plot else args.plot, seed=args.seed,
         progress=not args.no_progress)
    return 0


def _sample(args):
    print(sample_run(args.run, args.prime, args.n, args.temperature, args.seed))
    return 0


def _predict(args):
    header, rows = predict_run(args.run, args.data, args.format)
    text = csv_text(header, rows)
    if args.output:
        atomic_write_text(args.output, text)
        print(f"{len(rows)} forecasts written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _translate(args):
    for line in translate_run(args.run, args.texts, args.input, args.beam):
        print(line)
    return 0


def _plot(args):
    print(f"wrote {plot_run(args.run, args.output)}")
    return 0


def _info(args):
    from ..sysinfo import show_config
    show_config()
    return 0


_COMMANDS = {"demo": _demo, "train": cmd_train, "sample": _sample, "predict": _predict,
             "translate": _translate, "plot": _plot, "info": _info}
