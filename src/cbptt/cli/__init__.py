"""The ``cbptt`` command: a thin layer over the Python API.

    cbptt demo [--quick]                          an LSTM on the adding problem, a character
                                                  model of Python's docstrings, then dates to
                                                  ISO form (encoder-decoder; about a minute)
    cbptt train DATA [options]                    train on a text file (character model), a
                                                  CSV/.npy time series (forecasting) or, with
                                                  --mode seq2seq, source<TAB>target lines
                                                  (encoder-decoder) into a run folder;
                                                  --resume RUN continues one
    cbptt sample RUN [--prime TEXT] [-n N]        generate text from a character model
    cbptt predict RUN DATA [--output FILE]        forecasts of a forecasting model, as CSV
    cbptt translate RUN TEXT... | --input FILE    outputs of an encoder-decoder (--mode seq2seq)
    cbptt plot RUN [--output PNG]                 loss curves (and gradient flow) of a run
    cbptt bench [ARGS...]                         the benchmark suite (from a source checkout)

Everything the command does can be done from Python: the run is
``train_run(config, run_dir)``, which trains through ``trainer.fit`` (the library's one
loop), data handling is in ``cbptt.data`` and run folders in ``cbptt.checkpoint``. A user's
mistake (missing or malformed data, an unknown option value, a run that does not fit in
memory) ends with one line on stderr and exit code 2.

The modules: ``commands`` (``main``: dispatch, exit codes), ``parser`` (options, defaults,
checks of their values), ``fit_options`` (--schedule, --warmup, --early-stopping), ``train``
(the train command), ``run`` (``train_run``: the run's trainer and its fit), ``run_folder``
(the callback writing metrics and checkpoints), ``tasks`` (text and series: data,
evaluation), ``seq2seq_task`` (source<TAB>target pairs), ``world`` (the ranks of an MPI
launch), ``runs`` (sample, predict, translate), ``demo``, ``plots``, ``bench``, ``errors``.
"""
from .commands import main
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, MissingExtra, UsageError
from .parser import build_parser, resume_config, train_config
from .plots import plot_run
from .run import RunResult, run_memory, train_run
from .runs import predict_run, sample_run, translate_run
from .tasks import CharTask, ForecastTask, make_task
from .world import mpi_world

__all__ = ["main", "train_run", "RunResult", "run_memory", "make_task", "CharTask",
           "ForecastTask", "plot_run", "sample_run", "predict_run",
           "translate_run",
           "build_parser", "train_config", "resume_config", "mpi_world", "UsageError",
           "MissingExtra", "EXIT_USAGE", "EXIT_INTERRUPTED"]
