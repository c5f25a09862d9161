"""What ends a command early: a user's mistake (one line on stderr, exit code 2) and the
exit codes."""

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
PLOT_HINT = 'pip install "cbptt[plot]"'


class UsageError(Exception):
    """A user's mistake: shown as one line on stderr, exit code 2."""


class MissingExtra(UsageError):
    """An optional dependency that this command needs is not installed."""
