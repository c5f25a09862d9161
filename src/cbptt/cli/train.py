"""``cbptt train``: check the options, the data and the memory a run needs, make or find the
run folder, and call ``train_run`` on one process or on every rank of an MPI launch."""
import os
import sys
import traceback

from .. import data, memory, thread_policy
from .._engine import param_count
from ..checkpoint import CheckpointError, has_checkpoint, load_checkpoint, new_run_dir
from ..data import DataError
from . import tasks
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .fit_options import BEST
from .parser import resume_config, train_config
from .run import run_memory, train_run
from .world import World, mpi_world

# Errors that every rank raises together; rank 0 alone says them.
_USER_ERRORS = (UsageError, DataError, CheckpointError, memory.InsufficientMemory)


def cmd_train(args):
    """The ``cbptt train`` command on this process (one of the ranks under MPI); returns the
    exit code."""
    comm = mpi_world()
    if comm is None:
        return _train_command(args, World())
    world = World(comm)
    # one BLAS thread per rank unless the user chose (thread_policy.py): one line on rank 0
    thread_policy.one_thread_per_rank(world.size, say=thread_policy.say_on_stderr
                                      if world.root else None)
    try:
        return _train_command(args, world)
    except _USER_ERRORS:
        if world.root:          # raised on every rank; rank 0 alone says it
            raise
        return EXIT_USAGE
    except KeyboardInterrupt:   # a second Ctrl-C: the ranks may be anywhere, end them all
        if world.root:
            print("cbptt train: aborted; the run folder keeps its last checkpoint",
                  file=sys.stderr, flush=True)
        comm.Abort(EXIT_INTERRUPTED)
    except BaseException:       # noqa: BLE001 -- not a user's mistake: other ranks may wait
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    return 1


# -- rank 0: what to train --------------------------------------------------------------------
def _prepare_train(args, say):
    """The run to train: (config, run folder, Checkpoint or None, task), after checking the
    options, the data, the checkpoint and the memory the run needs; or None when the run is
    already done. Makes the run folder last, when everything else is known to be right."""
    if args.resume is not None:
        resumed = _resumed_run(args, say)
        if resumed is None:
            return None
        config, run_dir, ckpt = resumed
    else:
        config, run_dir, ckpt = train_config(args), _new_run_folder(args), None
    task = tasks.make_task(config)     # reads and checks the data before any folder is made
    ranks = getattr(args, "processes", 1)
    tasks.check_shards(task, config, ranks)
    check_memory(config, task, ranks)
    if ckpt is None:
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)
        else:
            stem = os.path.splitext(os.path.basename(config["data"]))[0]
            run_dir = new_run_dir("runs", stem)
        config["data_sha256"] = data.file_digest(config["data"])
    return config, run_dir, ckpt, task


def _resumed_run(args, say):
    """(config, run folder, Checkpoint) of --resume RUN, or None when it is done."""
    if args.out is not None:
        raise UsageError("cbptt train: give --resume RUN or --out RUN, not both")
    ckpt = load_checkpoint(args.resume)
    if "config" not in ckpt.run or "progress" not in ckpt.run:
        raise CheckpointError(f"{ckpt.path}: not a checkpoint of cbptt train")
    config = resume_config(args, ckpt.run["config"])
    run_dir = os.path.dirname(ckpt.path) or "."
    progress = ckpt.run["progress"]
    if progress.get("stopped_early"):
        say(f"{run_dir}: stopped early after epoch {progress['epoch']} (the val loss had not "
            f"improved for {config['early_stopping']} epochs); its best weights are in "
            f"{os.path.join(run_dir, BEST)}")
        return None
    if progress["epoch"] >= config["epochs"]:
        say(f"{run_dir}: already trained for {config['epochs']} epochs ({progress['step']} "
            f"steps); pass a larger --epochs to train on")
        return None
    say(f"resuming {run_dir} at epoch {progress['epoch'] + 1}/{config['epochs']}, step "
        f"{progress['step']}")
    return config, run_dir, ckpt


def _new_run_folder(args):
    """--out RUN, checked to be free (None: a new folder under runs/, made later)."""
    run_dir = args.out
    if run_dir is not None:
        if os.path.exists(run_dir) and not os.path.isdir(run_dir):
            raise UsageError(f"cbptt train: --out {run_dir} is a file, not a folder")
        if has_checkpoint(run_dir) or os.path.exists(os.path.join(run_dir, "metrics.csv")):
            raise UsageError(f"cbptt train: {run_dir} already holds a run; continue it "
                             f"with --resume {run_dir} or choose another --out")
    return run_dir


def check_memory(config, task, ranks=1):
    """UsageError when the run cannot fit in the memory available (``run_memory``; no check
    where the memory available is unknown)."""
    parts = run_memory(config, task, ranks)
    needed = sum(parts.values())
    available = memory.available_bytes()
    if available is None or needed <= available:
        return
    per = " on each of the processes" if ranks > 1 else ""
    raise UsageError(f"cbptt train: this run needs {memory.describe_bytes(needed)} of memory"
                     f"{per} ({_memory_parts(parts)}), more than the "
                     f"{memory.describe_bytes(available)} available; use a smaller --hidden, "
                     f"--layers, --batch or {'--k2' if task.truncated else '--window'}")


def _memory_parts(parts):
    return (f"parameters {memory.describe_bytes(parts['parameters'])}, gradients and "
            f"optimiser state {memory.describe_bytes(parts['training'])}, a step's workspace "
            f"{memory.describe_bytes(parts['step'])}")


# -- every rank: train ------------------------------------------------------------------------
def _train_command(args, world):
    say = print if world.root else _quiet
    args.processes = world.size
    # rank 0 checks the options, reads the checkpoint and the data and makes the folder; the
    # others then read the same data (and checkpoint) into the configuration it completed
    prepared = world.on_root(_prepare_train, args, say)
    if world.size > 1:
        prepared = _share(world, prepared)
    if prepared is None:
        return 0
    config, run_dir, ckpt, task = prepared
    if world.size > 1:
        say(f"data-parallel over {world.size} processes (MPI)")
    _describe(config, run_dir, task, world.size, say)
    try:
        result = train_run(config, run_dir, resume=ckpt, max_steps=args.max_steps,
                           progress=not args.no_progress, log=say, task=task, comm=world.comm)
    except FloatingPointError as exc:     # raised on every rank under DataParallel
        if world.root:
            print(f"cbptt train: training diverged: {exc}; {run_dir} keeps the last "
                  f"checkpoint", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if world.size > 1:
            raise
        print(f"cbptt train: aborted; {run_dir} keeps its last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _finish(result, config, run_dir, world, say)


def _share(world, prepared):
    """Rank 0's (config, run folder, Checkpoint, task) on every rank: the others read the
    data and the checkpoint themselves. None on every rank when there is nothing to do."""
    shared = None if prepared is None else (prepared[0], prepared[1],
                                            prepared[2] and prepared[2].path)
    shared = world.bcast(shared if world.root else None)
    if shared is None:
        return None
    config, run_dir, path = shared
    read = {}

    def load():              # collective: every rank learns whether any failed
        if not world.root:
            read["task"] = tasks.make_task(config)
            read["ckpt"] = None if path is None else load_checkpoint(path)
    world.agree(load)
    return prepared if world.root else (config, run_dir, read["ckpt"], read["task"])


def _describe(config, run_dir, task, ranks, say):
    """The run folder, the data, the model and the memory it needs, in three lines."""
    m = config
    params = sum(param_count(*shape) for shape in task.model_shapes(config))
    parts = run_memory(config, task, ranks)
    say(f"run folder: {run_dir}")
    say(f"data: {config['data']}: {task.describe()}")
    what = "encoder and decoder: " if task.kind == "seq2seq" else ""
    say(f"model: {what}{m['cell']} x{m['layers']}, {m['hidden']} hidden, {params:,} parameters, "
        f"{m['dtype']}; {m['optimizer']} lr {m['lr']:g}, clip {m['clip']:g}, batch "
        f"{m['batch']}, {m['epochs']} epochs")
    say(f"memory: {memory.describe_bytes(sum(parts.values()))} ({_memory_parts(parts)})")


def _finish(result, config, run_dir, world, say):
    """What the run did, and the exit code."""
    if result.status == "interrupted":
        if world.root:
            print(f"cbptt train: interrupted at step {result.step}; checkpoint saved; continue "
                  f"with: cbptt train --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.status == "max_steps":
        say(f"stopped at step {result.step} (--max-steps); continue with: cbptt train "
            f"--resume {run_dir}")
        return 0
    next_cmd = {"char": f"cbptt sample {run_dir}", "forecast": f"cbptt predict {run_dir} DATA",
                "seq2seq": f"cbptt translate {run_dir} TEXT"}[config["task"]]
    best = (f", best weights {os.path.join(run_dir, BEST)}" if config.get("early_stopping")
            else "")
    how = "stopped early" if result.status == "stopped_early" else "done"
    say(f"{how}: {result.step} steps; checkpoint {os.path.join(run_dir, 'checkpoint.npz')}"
        f"{best}; next: {next_cmd}, cbptt plot {run_dir}")
    return 0


def _quiet(*args, **kwargs):
    pass
